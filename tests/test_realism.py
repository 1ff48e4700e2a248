"""Realism suite (medgen_core.evaluation.realism, ``medgen evaluate realism``) on real MNI152 slices.

Real data: axial slices of the nilearn MNI152 T1 at 4 mm in-plane (48 x 56), z = 30..149; the two "real
halves" are the even and odd slices, exchangeable by construction, with blocks of 10 neighbouring slices
kept in one fold (so no held-out slice has a trained-on neighbour of the other class).
"""

from __future__ import annotations

import json
import math

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medgen_core.cli.main import main
from medgen_core.data.samples import load_mni152_t1, load_mni152_tissue_probabilities, mni152_tissue_labels
from medgen_core.data.slices import MNI152_1MM_AFFINE, block_average_2mm
from medgen_core.data.tissue_maps import mni_tissue_labels_on_grid
from medgen_core.data.translation import fit_to_size
from medgen_core.evaluation import realism as R

STEPS = 100  # enough for 48 x 56 slices (about 3 s per test on one thread)
Z = np.arange(30, 150)


@pytest.fixture(scope="module")
def mni_4mm() -> torch.Tensor:
    """``(120, 1, 48, 56)`` MNI152 T1 axial slices z = 30..149 at 4 mm in-plane, in [0, 1]."""
    t1 = load_mni152_t1().array
    t1 = np.clip(t1 / np.percentile(t1, 99.9), 0, 1)
    x = torch.from_numpy(np.moveaxis(block_average_2mm(t1[:, :, Z]), 2, 0).copy()).float()[:, None]
    return fit_to_size(F.avg_pool2d(x, 2), (48, 56))


def _halves(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]:
    return x[0::2], x[1::2], Z[0::2] // 10, Z[1::2] // 10


def _corrupt(kind: str, x: torch.Tensor) -> torch.Tensor:
    from monai.networks.layers import GaussianFilter

    g = torch.Generator().manual_seed(1)
    if kind == "noise":
        return x + 0.05 * torch.randn(x.shape, generator=g)
    if kind == "blur":
        return GaussianFilter(spatial_dims=2, sigma=1.0)(x)
    if kind == "speckle":  # multiplicative noise
        return x * (1 + 0.3 * torch.randn(x.shape, generator=g))
    raise ValueError(kind)


def test_two_halves_of_the_real_data_are_not_separated(mni_4mm) -> None:
    a, b, ga, gb = _halves(mni_4mm)
    res = R.classifier_two_sample_test(a, b, steps=STEPS, groups_real=ga, groups_fake=gb)
    assert abs(res.accuracy - 0.5) <= 0.1, res
    assert res.ci_low < 0.5 < res.ci_high and res.p_value > 0.05
    assert res.n_test == 2 * len(a)
    freqs, pa = R.radial_power_spectrum(a)
    _, pb = R.radial_power_spectrum(b)
    assert R.log_spectral_distance(pa, pb) < 0.5  # dB


@pytest.mark.parametrize("kind", ["noise", "blur", "speckle"])
def test_clearly_fake_slices_are_separated(mni_4mm, kind: str) -> None:
    a, b, ga, gb = _halves(mni_4mm)
    fake = _corrupt(kind, b)
    res = R.classifier_two_sample_test(a, fake, steps=STEPS, groups_real=ga, groups_fake=gb)
    assert res.accuracy >= 0.9 and res.ci_low > 0.8 and res.p_value < 1e-6, res
    freqs, p_real = R.radial_power_spectrum(a)
    _, p_fake = R.radial_power_spectrum(fake)
    _, p_b = R.radial_power_spectrum(b)
    floor = R.log_spectral_distance(p_real, p_b)
    assert R.log_spectral_distance(p_real, p_fake) > max(5 * floor, 1.0)
    excess = R.high_frequency_excess_db(freqs, p_real, p_fake)
    assert (excess < -3) if kind == "blur" else (excess > 1)


def test_two_sample_test_is_deterministic_per_seed_and_keeps_pairs_together(mni_4mm) -> None:
    a, b = mni_4mm[:16], _corrupt("noise", mni_4mm[:16])
    r1 = R.classifier_two_sample_test(a, b, steps=10, seed=3)
    r2 = R.classifier_two_sample_test(a, b, steps=10, seed=3)
    assert r1 == r2
    state = torch.get_rng_state()
    R.classifier_two_sample_test(a, b, steps=2, seed=4)
    assert torch.equal(state, torch.get_rng_state())  # the global RNG is left alone
    rng = np.random.default_rng(0)
    groups = np.arange(16)
    fold = R._folds(np.concatenate([groups, groups]), 2, rng)
    assert np.array_equal(fold[:16], fold[16:])  # real i and fake i share a fold
    with pytest.raises(ValueError, match="one size"):
        R.classifier_two_sample_test(a, b[..., :-1], steps=1)
    with pytest.raises(ValueError, match="NaN"):
        R.classifier_two_sample_test(a, b * float("nan"), steps=1)


def test_spectrum_of_white_noise_is_flat_at_its_variance() -> None:
    g = torch.Generator().manual_seed(0)
    freqs, p = R.radial_power_spectrum(0.1 * torch.randn(64, 1, 32, 40, generator=g))
    assert freqs[0] == pytest.approx(1 / 32) and freqs[-1] == pytest.approx(0.5) and len(p) == 16
    assert np.all(np.abs(p[2:] / 0.01 - 1) < 0.15)  # E|FFT(w x)|^2 / sum(w^2) = sigma^2 at every frequency


def test_mni_labels_on_a_grid_match_the_template_labels() -> None:
    z = 90
    shift = np.eye(4)
    shift[2, 3] = z
    labels = mni_tissue_labels_on_grid(MNI152_1MM_AFFINE @ shift, (197, 233))
    assert np.array_equal(labels, mni152_tissue_labels()[:, :, z])


def _slices_2mm_with_labels(z: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """T1 and a T2-like contrast (CSF bright, WM dark; from the tissue probabilities) at 2 mm, and the labels."""
    t1 = load_mni152_t1().array
    gm, wm = load_mni152_tissue_probabilities()
    csf = np.clip(1 - gm - wm, 0, 1) * (t1 > 0)
    t2 = 1.0 * csf + 0.6 * gm + 0.35 * wm
    t1s = np.stack([block_average_2mm(t1[:, :, k]) for k in z])
    t2s = np.stack([block_average_2mm(t2[:, :, k]) for k in z])
    # 2 mm pixel i covers 1 mm voxels 2i, 2i + 1 (centre 2i + 0.5), as block_average_2mm makes it
    labels = np.stack([mni_tissue_labels_on_grid(MNI152_1MM_AFFINE @ np.array([[2.0, 0, 0, 0.5], [0, 2.0, 0, 0.5], [0, 0, 1, k], [0, 0, 0, 1]]),
                                                 t1s.shape[1:]) for k in z])
    return t1s[:, None], t2s[:, None], labels[:, None]


def test_tissue_ordering_and_ratios_tell_t1_from_t2_like_contrast() -> None:
    t1, t2, labels = _slices_2mm_with_labels([70, 90])
    s1, s2 = R.tissue_intensity_stats(t1, labels), R.tissue_intensity_stats(t2, labels)
    assert s1["ordering"] == ["white_matter", "grey_matter", "csf"]
    assert s2["ordering"] == ["csf", "grey_matter", "white_matter"]
    assert s1["ratios"]["csf/grey_matter"] < 1 < s2["ratios"]["csf/grey_matter"]
    assert s1["ratios"]["grey_matter/white_matter"] < 1 < s2["ratios"]["grey_matter/white_matter"]
    assert all(s1["classes"][c]["n_pixels"] > 100 for c in ("csf", "grey_matter", "white_matter"))
    cmp_ = R.compare_tissue_stats(s1, s2)
    assert cmp_["ordering_matches"] is False and all(abs(e) > 0.2 for e in cmp_["ratio_relative_error"].values())
    rescaled = R.compare_tissue_stats(R.tissue_intensity_stats(3.0 * t2, labels), s2)  # ratios do not depend on units
    assert rescaled["ordering_matches"] and all(abs(e) < 1e-5 for e in rescaled["ratio_relative_error"].values())


def test_paired_fidelity_inside_the_brain() -> None:
    t1, _, labels = _slices_2mm_with_labels([80])
    truth = torch.from_numpy(t1 / t1.max()).float()
    brain = torch.from_numpy(labels > 0)
    noisy = truth + 0.02 * torch.randn(truth.shape, generator=torch.Generator().manual_seed(0))
    out = R.paired_fidelity(noisy, truth, brain)
    assert out["psnr"] == pytest.approx(-10 * math.log10(0.02**2), abs=0.3)
    assert 0 < out["ssim"] < 1 and out["n_pixels"] == int(brain.sum())
    assert R.paired_fidelity(truth, truth, brain)["ssim"] == pytest.approx(1.0)


# --------------------------------------------------------------------------------------------- CLI
def _write_volume(path, slices: np.ndarray, affine: np.ndarray) -> None:
    """``(N, X, Y)`` -> a 3D NIfTI ``(X, Y, N)``."""
    nib.save(nib.Nifti1Image(np.moveaxis(slices, 0, 2).astype(np.float32), affine), str(path))


def _write_pngs(folder, slices: np.ndarray) -> None:
    import SimpleITK as sitk

    folder.mkdir(parents=True, exist_ok=True)
    for i, s in enumerate(slices):
        sitk.WriteImage(sitk.GetImageFromArray(np.clip(s * 255, 0, 255).astype(np.uint8)), str(folder / f"slice_{i:03d}.png"))


def test_cli_volumes_with_mni_tissue_maps_and_pairs(tmp_path, capsys) -> None:
    t1 = load_mni152_t1().array
    z = list(range(60, 124, 3))  # 22 slices at 2 mm in-plane, 3 mm apart
    real = np.stack([block_average_2mm(t1[:, :, k]) for k in z]).astype(np.float32)
    real /= real.max()
    fake = real + 0.05 * np.random.default_rng(0).standard_normal(real.shape).astype(np.float32)
    affine = MNI152_1MM_AFFINE @ np.array([[2.0, 0, 0, 0.5], [0, 2.0, 0, 0.5], [0, 0, 3.0, z[0]], [0, 0, 0, 1]])
    _write_volume(tmp_path / "real.nii.gz", real, affine)
    _write_volume(tmp_path / "fake.nii.gz", fake, affine)
    out = tmp_path / "report"
    rc = main(["evaluate", "realism", str(tmp_path / "real.nii.gz"), str(tmp_path / "fake.nii.gz"), "--out", str(out),
               "--tissue-maps", "mni", "--real-tissue-maps", "mni", "--paired", "--steps", "40"])
    assert rc == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["realism.json", "realism.md", "realism_spectrum.png"]
    rep = json.loads((out / "realism.json").read_text())
    assert rep["n_real"] == rep["n_fake"] == len(z) and rep["image_size"] == [98, 116]
    t = rep["two_sample"]
    assert t["ci_low"] <= t["accuracy"] <= t["ci_high"] and t["n_test"] == 2 * len(z)
    assert rep["spectrum"]["high_frequency_excess_db"] > 1  # added noise
    assert rep["tissue"]["real"]["ordering"] == ["white_matter", "grey_matter", "csf"]
    assert rep["tissue"]["comparison"]["ordering_matches"]
    assert rep["paired"]["psnr"] == pytest.approx(-10 * math.log10(0.05**2), abs=1.0)
    md = (out / "realism.md").read_text()
    assert "two-sample accuracy" in md and "PSNR / SSIM inside the brain" in md
    assert (out / "realism_spectrum.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "two-sample accuracy" in capsys.readouterr().out


def test_cli_png_folders_into_an_existing_folder(tmp_path, mni_4mm) -> None:
    a, b, _, _ = _halves(mni_4mm)
    _write_pngs(tmp_path / "real", a[:20, 0].numpy())
    _write_pngs(tmp_path / "fake", _corrupt("blur", b[:20])[:, 0].numpy())
    out = tmp_path / "out"
    out.mkdir()
    (out / "realism.md").write_text("old")
    (out / "keep.txt").write_text("other")
    assert main(["evaluate", "realism", str(tmp_path / "real"), str(tmp_path / "fake"), "--out", str(out), "--steps", "20"]) == 0
    assert (out / "keep.txt").read_text() == "other" and (out / "realism.md").read_text() != "old"
    rep = json.loads((out / "realism.json").read_text())
    assert rep["image_size"] == [48, 56] and rep["spectrum"]["high_frequency_excess_db"] < -3
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left


def _bad_case(tmp_path, case: str) -> tuple[list[str], str]:
    rng = np.random.default_rng(0)
    img = rng.random((24, 16, 20)).astype(np.float32) + 0.1
    real, fake = tmp_path / "real.nii.gz", tmp_path / "fake.nii.gz"
    _write_volume(real, img, np.eye(4))
    _write_volume(fake, img[::-1].copy(), np.eye(4))
    extra: list[str] = []
    if case == "too_few":
        _write_volume(fake, img[:19], np.eye(4))
        expect = "19 images; expected at least 20"
    elif case == "sizes_differ_between_sides":
        _write_volume(fake, img[:, :, :18], np.eye(4))
        expect = "expected one size"
    elif case == "sizes_differ_in_a_folder":
        folder = tmp_path / "fakes"
        _write_pngs(folder, img)
        import SimpleITK as sitk

        sitk.WriteImage(sitk.GetImageFromArray(np.zeros((16, 18), np.uint8)), str(folder / "slice_999.png"))
        fake = folder
        _write_pngs(tmp_path / "reals", img)
        real = tmp_path / "reals"
        expect = "images have different sizes"
    elif case == "nan_in_volume":
        bad = img.copy()
        bad[3, 2, 2] = np.nan
        _write_volume(fake, bad, np.eye(4))
        expect = "NaN"
    elif case == "nan_in_a_slice_file":
        folder = tmp_path / "slices"
        folder.mkdir()
        for i, s in enumerate(img):
            s = s.copy()
            if i == 5:
                s[0, 0] = np.nan
            nib.save(nib.Nifti1Image(s[:, :, None], np.eye(4)), str(folder / f"s{i:02d}.nii.gz"))
        fake = folder
        expect = "s05.nii.gz contains 1 NaN/Inf pixels"
    elif case == "bad_tissue_labels":
        _write_volume(tmp_path / "labels.nii.gz", np.full_like(img, 7), np.eye(4))
        extra = ["--tissue-maps", str(tmp_path / "labels.nii.gz")]
        expect = "are not tissue labels"
    elif case == "png_with_mni":
        _write_pngs(tmp_path / "p_real", img)
        _write_pngs(tmp_path / "p_fake", img[::-1])
        real, fake = tmp_path / "p_real", tmp_path / "p_fake"
        extra = ["--tissue-maps", "mni"]
        expect = "PNGs carry no geometry"
    elif case == "paired_counts_differ":
        _write_volume(fake, img[:22], np.eye(4))
        extra = ["--paired"]
        expect = "expected one FAKE image per REAL image"
    elif case == "out_is_input_folder":
        _write_pngs(tmp_path / "q_real", img)
        _write_pngs(tmp_path / "q_fake", img[::-1])
        real, fake = tmp_path / "q_real", tmp_path / "q_fake"
        return ["evaluate", "realism", str(real), str(fake), "--out", str(real)], "input folder"
    elif case == "missing":
        real = tmp_path / "nothing_here"
        expect = "not found"
    else:
        raise ValueError(case)
    return ["evaluate", "realism", str(real), str(fake), "--out", str(tmp_path / "out"), *extra], expect


BAD = ["too_few", "sizes_differ_between_sides", "sizes_differ_in_a_folder", "nan_in_volume", "nan_in_a_slice_file",
       "bad_tissue_labels", "png_with_mni", "paired_counts_differ", "out_is_input_folder", "missing"]


@pytest.mark.parametrize("case", BAD)
def test_cli_bad_input_one_line_exit_2_nothing_written(tmp_path, capsys, case: str) -> None:
    argv, expect = _bad_case(tmp_path, case)
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("medgen: error:") and "\n" not in err and expect in err, err
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before  # nothing written, no temporary left
