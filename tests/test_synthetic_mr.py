"""Tests for the synthetic MR generator: exact resolution operators, determinism, contrast diversity,
ranges, geometry and the held-out slab, on the real MNI152 maps that nilearn ships."""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
import pytest
import torch

from medgen_core.data.synthetic_sr import (
    SyntheticSRPairs,
    collate_pairs,
    compatible_patch_size,
    mni_synthetic_source,
    synthetic_sr_pairs,
)
from medgen_core.transforms.degradation import degradation_matrix, degrade
from medgen_core.transforms.resolution_sim import (
    FWHM_PER_SIGMA,
    AxisDegradation,
    RandResolutionDegraded,
    _box_matrix,
    _gaussian_matrix,
    _kspace_general,
    apply_axis_degradation,
    axis_operator,
    bandlimit,
    exact_lengths,
    interpolate_to_hr,
    lr_centres,
)
from medgen_core.transforms.synthetic_mr import SYNTH_CLASSES, RandSpatialDeformd, SyntheticSRPaird

FACTORS = (1.5, 2.0, 2.5, 3.0, 4.0, 5.0)
GM, WM = SYNTH_CLASSES.index("grey_matter"), SYNTH_CLASSES.index("white_matter")


# -- exact operators (no data needed) -----------------------------------------------------------------------


def test_exact_lengths_and_centres() -> None:
    assert exact_lengths(96, 2.5) == (95, 38)
    assert exact_lengths(100, 2.5) == (100, 40)
    assert exact_lengths(96, 2) == (96, 48)
    assert exact_lengths(10, 1.5) == (9, 6)
    np.testing.assert_allclose(lr_centres(4, 2.5), [0.75, 3.25, 5.75, 8.25])
    np.testing.assert_allclose(lr_centres(3, 4), [1.5, 5.5, 9.5])  # k * s + (s - 1) / 2, degradation.py's convention
    with pytest.raises(ValueError, match="factor must be >= 1"):
        exact_lengths(10, 0.5)
    with pytest.raises(ValueError, match="not a whole multiple"):
        axis_operator(96, 2.5, "box")


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_general_operators_equal_degradation_module_for_integer_factors(scale: int) -> None:
    n = 12 * scale
    np.testing.assert_allclose(_gaussian_matrix(n, float(scale), 0.6 * scale), degradation_matrix(n, scale, "gaussian", 0.6 * scale), atol=1e-12)
    np.testing.assert_allclose(_box_matrix(n, float(scale), float(scale)), degradation_matrix(n, scale, "block"), atol=1e-12)
    x = torch.randn(3, n, dtype=torch.float64, generator=torch.Generator().manual_seed(scale))
    torch.testing.assert_close(_kspace_general(x, float(scale), 1), degrade(x, scale, "kspace", axes=(1,)), atol=1e-10, rtol=0)


@pytest.mark.parametrize("factor", FACTORS)
@pytest.mark.parametrize("kind", ["gaussian", "block", "kspace", "slice_box", "slice_gaussian"])
def test_constant_stays_constant(factor: float, kind: str) -> None:
    n_hr, n_lr = exact_lengths(60, factor)
    width = {"gaussian": 0.6 * factor, "block": factor, "kspace": None, "slice_box": 0.7 * factor, "slice_gaussian": 1.3 * factor / FWHM_PER_SIGMA}[kind]
    lr = apply_axis_degradation(torch.full((2, n_hr), 0.37, dtype=torch.float64), AxisDegradation(0, factor, kind, width), 1)
    assert lr.shape == (2, n_lr)
    torch.testing.assert_close(lr, torch.full_like(lr, 0.37), atol=1e-12, rtol=0)


@pytest.mark.parametrize("factor", [1.5, 2.5, 3.0, 5.0])
def test_ramp_lands_on_the_documented_centres(factor: float) -> None:
    """LR voxel k is centred at (k + 1/2) s - 1/2: a Gaussian maps a ramp i -> i there (away from borders), and
    each box slab's first moment (weights x centres of the covered parts of HR voxels) is that centre."""
    n_hr, n_lr = exact_lengths(90, factor)
    ramp = torch.arange(n_hr, dtype=torch.float64)
    centres = lr_centres(n_lr, factor)
    lr = apply_axis_degradation(ramp, AxisDegradation(0, factor, "gaussian", 0.75 * factor), 0).numpy()
    interior = (centres > 4 * factor) & (centres < n_hr - 1 - 4 * factor)
    assert interior.sum() >= 3
    # off the half-integer grid the sampled, 4-sigma-truncated kernel is asymmetric by ~G(4 sigma): 3e-5 voxel
    np.testing.assert_allclose(lr[interior], centres[interior], atol=1e-4)
    i = np.arange(n_hr)[None, :]
    for thickness in (factor, 0.6 * factor, 1.4 * factor):
        d = axis_operator(n_hr, factor, "box", thickness)
        a, b = np.maximum(i - 0.5, centres[:, None] - thickness / 2), np.minimum(i + 0.5, centres[:, None] + thickness / 2)
        moment = (d * np.where(d > 0, (a + b) / 2, 0.0)).sum(axis=1)
        inside = (centres - thickness / 2 >= -0.5) & (centres + thickness / 2 <= n_hr - 0.5)
        np.testing.assert_allclose(moment[inside], centres[inside], atol=1e-9)
    if factor == int(factor):  # integer factors: block averaging of the ramp is exactly the centres, borders too
        block = apply_axis_degradation(ramp, AxisDegradation(0, factor, "block", factor), 0).numpy()
        np.testing.assert_allclose(block, centres, atol=1e-9)


@pytest.mark.parametrize("factor", [2.0, 2.5, 4.0])
@pytest.mark.parametrize("a", [0.42, 0.75])
def test_gaussian_response_at_lr_nyquist_matches_sigma(factor: float, a: float) -> None:
    """At nu = 1 / (2 s) cycles per HR voxel a Gaussian of sigma = a s passes exp(-2 pi^2 sigma^2 nu^2)."""
    sigma = a * factor
    n_hr, n_lr = exact_lengths(200, factor)
    d = axis_operator(n_hr, factor, "gaussian", sigma)
    k = n_lr // 2
    nu = 1.0 / (2.0 * factor)
    response = float(d[k] @ np.cos(2 * np.pi * nu * (np.arange(n_hr) - lr_centres(n_lr, factor)[k])))
    expected = math.exp(-2 * math.pi**2 * sigma**2 * nu**2)  # 0.419 for a = 0.42, 0.062 for a = 0.75
    assert response == pytest.approx(expected, abs=2e-3)


def test_box_slice_profile_integrates_to_one_with_exact_overlaps() -> None:
    factor, thickness = 2.5, 1.5  # thickness 0.6 x spacing: 1 mm gaps between slabs
    d = axis_operator(100, factor, "box", thickness)
    np.testing.assert_allclose(d.sum(axis=1), 1.0, atol=1e-12)
    # LR voxel 1 is centred at 3.25: slab [2.5, 4.0] covers half of voxel 2 ([1.5, 2.5] -> 0) ... voxel 3 fully
    row = d[1]
    np.testing.assert_allclose(row[[2, 3, 4]], [0.0, 1.0 / 1.5, 0.5 / 1.5], atol=1e-12)
    assert row[[0, 1, 5, 6]].max() == 0.0
    # the Gaussian slice profile's FWHM is the drawn thickness
    t = RandResolutionDegraded(axes_mode="through", factors=(3.0,), kinds=("slice_gaussian",)).set_random_state(seed=1)
    spec = t.draw(2)[0]
    assert spec.width * FWHM_PER_SIGMA == pytest.approx(spec.thickness_ratio * 3.0)


def test_kspace_truncation_keeps_low_and_removes_high_frequencies_at_non_integer_factor() -> None:
    n, factor = 100, 2.5  # 40 LR voxels: frequencies |m| < 20 survive
    i = torch.arange(n, dtype=torch.float64)
    low = torch.cos(2 * math.pi * 7 * i / n + 0.4)
    high = torch.cos(2 * math.pi * 25 * i / n)
    lr = _kspace_general(low + high, factor, 0).numpy()
    np.testing.assert_allclose(lr, np.cos(2 * np.pi * 7 * lr_centres(40, factor) / n + 0.4), atol=1e-10)


@pytest.mark.parametrize(("n", "fraction", "kept"), [(64, 0.5, 33), (50, 0.73, 37), (64, 1.0, 64)])
def test_bandlimit_zeroes_exactly_the_frequencies_above_the_cut(n: int, fraction: float, kept: int) -> None:
    """Keep |m| / n <= fraction / 2 (64 voxels at half Nyquist: |m| <= 16, 33 bins), the rest exactly 0, same size."""
    x = torch.rand(3, n, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = bandlimit(x, (fraction,), dims=(1,))
    assert y.shape == x.shape
    fx, fy = torch.fft.fft(x, dim=1), torch.fft.fft(y, dim=1)
    keep = torch.fft.fftfreq(n, dtype=torch.float64).abs() <= fraction / 2
    assert int(keep.sum()) == kept
    torch.testing.assert_close(fy[:, keep], fx[:, keep], atol=1e-10, rtol=0)
    assert (~keep).sum() == 0 or float(fy[:, ~keep].abs().max()) < 1e-10
    # 2D: separable, one fraction per axis
    img = torch.rand(40, 30, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    out = torch.fft.fft2(bandlimit(img, (0.5, 0.8), dims=(0, 1)))
    f0, f1 = torch.fft.fftfreq(40, dtype=torch.float64).abs(), torch.fft.fftfreq(30, dtype=torch.float64).abs()
    outside = (f0[:, None] > 0.25) | (f1[None, :] > 0.4)
    assert float(out[outside].abs().max()) < 1e-10
    torch.testing.assert_close(out[~outside], torch.fft.fft2(img)[~outside], atol=1e-10, rtol=0)


def test_cubic_bspline_baseline_uses_the_same_grid() -> None:
    factor, n_lr = 2.5, 40
    lr = torch.from_numpy(lr_centres(n_lr, factor)).float()[None, None].repeat(1, 6, 1)  # (1, 6, 40): values = HR coordinate
    up = interpolate_to_hr(lr, (1.0, factor))
    assert up.shape == (1, 6, 100)
    np.testing.assert_allclose(up[0, 3, 20:80].numpy(), np.arange(20, 80), atol=1e-3)  # mirror borders bend the ends


@pytest.mark.parametrize(("mode", "shape", "factors", "expect_axes"), [
    ("inplane", (1, 96, 96), (4.0,), [0, 1]),
    ("through", (1, 96, 96), (2.5,), None),
    ("all", (1, 30, 30, 30), (1.5,), [0, 1, 2]),
])
def test_lr_hr_shapes_match_the_factor(mode, shape, factors, expect_axes) -> None:
    t = RandResolutionDegraded(axes_mode=mode, factors=factors).set_random_state(seed=0)
    out = t({"hr": torch.rand(shape)})
    specs = out["params"]["degradation"]
    assert expect_axes is None or [s["axis"] for s in specs] == expect_axes
    for s in specs:
        assert out["hr"].shape[s["axis"] + 1] == pytest.approx(out["lr"].shape[s["axis"] + 1] * s["factor"])
    if mode == "through":
        assert len(specs) == 1 and out["hr"].shape[specs[0]["axis"] + 1] == 95  # cropped to 38 x 2.5


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="kinds must be among"):
        RandResolutionDegraded(kinds=("bicubic",))
    with pytest.raises(ValueError, match="factors must be >= 1"):
        RandResolutionDegraded(factors=(0.5,))
    with pytest.raises(ValueError, match="axes_mode"):
        RandResolutionDegraded(axes_mode="sideways")
    with pytest.raises(ValueError, match="patch_size"):
        SyntheticSRPairs(patch_size=(4, 4))


# -- the generator on the real MNI maps ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def source():
    return mni_synthetic_source()


def _equal_draws(a: dict, b: dict) -> bool:
    return torch.equal(a["lr"], b["lr"]) and torch.equal(a["hr"], b["hr"]) and a["params"] == b["params"]


def test_determinism_per_seed(source) -> None:
    a = [SyntheticSRPairs(seed=3).sample() for _ in range(1)] + list(SyntheticSRPairs(seed=3, num_samples=4))
    b = list(SyntheticSRPairs(seed=3, num_samples=4))
    c = list(SyntheticSRPairs(seed=4, num_samples=4))
    assert all(_equal_draws(x, y) for x, y in zip(a[1:], b))
    assert _equal_draws(a[0], b[0])  # sample() and iteration start from the same seed
    assert not any(_equal_draws(x, y) for x, y in zip(b, c))
    # the chain alone, seeded through MONAI's set_random_state
    plane = {"tissue": source.tissue[:, :, :, 60], "t1": source.t1[:, :, :, 60], "centre": (98, 116)}
    one = SyntheticSRPaird((64, 64)).set_random_state(seed=7)(plane)
    two = SyntheticSRPaird((64, 64)).set_random_state(seed=7)(plane)
    assert torch.equal(one["hr"], two["hr"]) and torch.equal(one["lr"], two["lr"]) and one["params"] == two["params"]


def test_contrast_diversity_both_orderings_of_white_and_grey_matter(source) -> None:
    """Over 50 draws the mean WM intensity is above GM (T1-like) in some and below (T2-like) in others."""
    t1_like = t2_like = 0
    for item in SyntheticSRPairs((96, 96), seed=11, num_samples=50, plane_probs=(1, 0, 0), hr_bandwidth_prob=0.0):
        probs, hr = item["probs"][:, : item["hr"].shape[1], : item["hr"].shape[2]], item["hr"][0]
        gm, wm = probs[GM] > 0.9, probs[WM] > 0.9
        if gm.sum() < 20 or wm.sum() < 20:
            continue
        diff = float(hr[wm].mean() - hr[gm].mean())
        t1_like += diff > 0
        t2_like += diff < 0
    valid = t1_like + t2_like
    assert valid >= 30
    assert t1_like >= 0.2 * valid and t2_like >= 0.2 * valid, (t1_like, t2_like)


def test_draws_are_finite_in_range_and_probabilities_sum_to_one(source) -> None:
    seen_modes, seen_kinds = set(), set()
    for item in SyntheticSRPairs((64, 64), axes_mode="through", factors=FACTORS, seed=5, num_samples=40):
        for key in ("lr", "hr"):
            x = item[key]
            assert x.dtype == torch.float32 and torch.isfinite(x).all()
            assert float(x.min()) >= 0.0 and float(x.max()) <= 1.2
        p = item["probs"]
        assert p.shape[0] == len(SYNTH_CLASSES) and float(p.min()) >= -1e-6
        torch.testing.assert_close(p.sum(0), torch.ones(p.shape[1:]), atol=1e-5, rtol=0)
        params = item["params"]
        seen_modes.add(params["contrast"]["mode"])
        if params["contrast"]["mode"] == "gmm":
            means = params["contrast"]["means"]
            assert all(25 <= m <= 225 for m in means[1:]) and 0 <= means[0] <= 225
            assert all(5 <= s <= 25 for s in params["contrast"]["stds"][1:])
        spec = params["degradation"][0]
        seen_kinds.add(spec["kind"])
        if spec["kind"] == "gaussian":
            assert 0.42 <= spec["width"] / spec["factor"] <= 0.75
        if spec["thickness_ratio"] is not None:
            assert 0.5 <= spec["thickness_ratio"] <= 1.5
        assert params["hr_bandwidth"] is None or all(0.5 <= f <= 1.0 for f in params["hr_bandwidth"])
        assert params["gamma"] > 0 and abs(params["deform"]["rotation_deg"][0]) <= 15
    assert seen_modes == {"gmm", "real_t1"}
    assert len(seen_kinds) >= 4


def test_deformation_never_folds(source) -> None:
    """The Jacobian determinant of the sampled coordinates keeps one sign (negative only for a flip) at the
    largest elastic std (4 voxels)."""
    deform = RandSpatialDeformd(("tissue",), (96, 96), elastic_std=4.0).set_random_state(seed=2)
    plane = {"tissue": source.tissue[:, :, :, 60]}
    worst, flips = math.inf, 0
    for _ in range(30):
        sign = -1.0 if deform(plane)["params"]["deform"]["flip"] else 1.0
        flips += sign < 0
        x = deform.last_coordinates.double()
        dx0, dx1 = x[:, 1:, :-1] - x[:, :-1, :-1], x[:, :-1, 1:] - x[:, :-1, :-1]
        worst = min(worst, float((sign * (dx0[0] * dx1[1] - dx0[1] * dx1[0])).min()))
    assert 0 < flips < 30
    assert worst > 0.2  # scaling >= 0.8 per axis: undeformed |det| >= 0.64


def test_zoom_range_shows_the_anatomy_at_coarser_voxels_and_leaves_other_draws_unchanged(source) -> None:
    """``zoom_range`` multiplies the scaling by one log-uniform factor drawn after everything else: the same seed gives
    the same rotation, shear and elastic field, the scale grows by the factor, and a 2x zoom shows twice the extent."""
    plane = {"tissue": source.tissue[:, :, :, 60]}
    plain = RandSpatialDeformd(("tissue",), (64, 64)).set_random_state(seed=5)
    zoomed = RandSpatialDeformd(("tissue",), (64, 64), zoom_range=(2.0, 2.0)).set_random_state(seed=5)
    a, b = plain(plane)["params"]["deform"], zoomed(plane)["params"]["deform"]
    assert a["rotation_deg"] == b["rotation_deg"] and a["shear"] == b["shear"]
    assert np.allclose(np.asarray(b["scale"]), 2.0 * np.asarray(a["scale"]))
    extent = lambda t: float(t.last_coordinates[0].max() - t.last_coordinates[0].min())  # noqa: E731
    assert 1.8 < extent(zoomed) / extent(plain) < 2.2
    ranged = RandSpatialDeformd(("tissue",), (64, 64), scale_range=0.0, elastic_std=0.0, zoom_range=(0.8, 2.5)).set_random_state(seed=1)
    scales = [ranged(plane)["params"]["deform"]["scale"][0] for _ in range(40)]
    assert 0.8 <= min(scales) < 1.1 and 2.0 < max(scales) <= 2.5
    with pytest.raises(ValueError, match="zoom_range"):
        RandSpatialDeformd(("tissue",), (64, 64), zoom_range=(2.0, 1.0))


def test_patches_3d_and_the_held_out_slab_is_never_read(source) -> None:
    """A copy of the source whose held-out slab is NaN: no draw of any plane or 3D patch may see a NaN."""
    lo, hi = source.excluded_z
    assert (lo, hi) == (76, 104)
    t1 = source.t1.copy()
    t1[..., lo:hi] = np.nan
    poisoned = dataclasses.replace(source, t1=t1)
    planes = set()
    for patch in ((64, 64), (32, 32, 32)):
        for item in SyntheticSRPairs(patch, axes_mode="through", factors=(2, 4), seed=1, num_samples=25, source=poisoned,
                                     plane_probs=(1, 1, 1), real_t1_prob=1.0):
            planes.add(item["params"]["source"]["plane"])
            assert torch.isfinite(item["hr"]).all() and torch.isfinite(item["t1"]).all()
            assert item["params"]["source"]["centre_voxel"][2] not in range(lo, hi)
            if len(patch) == 3:
                spec = item["params"]["degradation"][0]
                assert item["hr"].shape[1 + spec["axis"]] == item["lr"].shape[1 + spec["axis"]] * spec["factor"]
    assert planes == {"axial", "coronal", "sagittal", "3d"}


def test_batches_and_interpolated_inputs_share_one_shape(source) -> None:
    size = compatible_patch_size(FACTORS, 96)
    assert size == 120 and compatible_patch_size((2, 4), 96) == 96
    items = list(SyntheticSRPairs((size, size), axes_mode="through", factors=FACTORS, seed=0, num_samples=6, interpolate=True))
    assert len({i["params"]["degradation"][0]["factor"] for i in items}) >= 3
    batch = collate_pairs([{k: v for k, v in i.items() if k != "lr"} for i in items])
    assert batch["hr"].shape == batch["lr_on_hr"].shape == (6, 1, size, size)
    assert len(batch["params"]) == 6
    with pytest.raises(ValueError, match="compatible_patch_size"):
        collate_pairs(items)  # LR sizes differ between factors


def test_two_hundred_2d_pairs_smoke(source) -> None:
    start = time.perf_counter()
    n = 0
    for lr, hr, params in synthetic_sr_pairs(200, patch_size=(96, 96), factors=(2, 4), seed=0):
        f = params["degradation"][0]["factor"]
        assert hr.shape == (1, 96, 96) and lr.shape == (1, int(96 / f), int(96 / f))
        n += 1
    assert n == 200
    print(f"200 synthetic 2D pairs (96 x 96, x2/x4) in {time.perf_counter() - start:.2f} s")


def test_preview_script_writes_a_png(tmp_path, source) -> None:
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "preview_synthetic_mr.py"
    spec = importlib.util.spec_from_file_location("preview_synthetic_mr", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "draws.png"
    assert module.main(["--n", "4", "--patch", "60", "--out", str(out)]) == 0
    from PIL import Image

    with Image.open(out) as img:
        assert img.format == "PNG" and img.mode == "L" and img.size[0] > 300
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
