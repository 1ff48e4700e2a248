"""Through-plane SR (``medgen upscale --axes through``): grid and geometry for non-integer factors and oblique
affines, consistency with the slice profile, per-scan adaptation, the record, and bad input.

Real NIfTI/NRRD files written to tmp_path; thick slices made from the MNI T1 that nilearn ships with the
project's own slice-profile operator.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import nrrd
import numpy as np
import pytest
import torch

from medgen_core.cli.main import main
from medgen_core.data.samples import load_mni152_brain_mask, load_mni152_t1
from medgen_core.errors import SuperResolutionError
from medgen_core.inference import ThroughPlaneSuperResolver, plan_through_plane, upscaled_affine, voxel_corners_world
from medgen_core.inference.sr_gate import ConsistencyProjector, axis_matrix
from medgen_core.inference.through_plane import bspline_matrix
from medgen_core.io import Volume, read_volume
from medgen_core.provenance import sidecar_path, verify_provenance
from medgen_core.transforms.resolution_sim import AxisDegradation, apply_axis_degradation, interpolate_to_hr


def oblique(spacing: tuple[float, float, float]) -> np.ndarray:
    """Rotations about z (25 deg) and y (-12 deg), the given spacing, a non-zero origin."""
    a, b = np.deg2rad(25), np.deg2rad(-12)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    affine = np.eye(4)
    affine[:3, :3] = rz @ ry @ np.diag(spacing)
    affine[:3, 3] = [-31.5, 12.25, 40.0]
    return affine


def blobs(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """A smooth positive volume (a few Gaussian blobs on a background)."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*(np.linspace(0, 1, n) for n in shape), indexing="ij")
    out = np.full(shape, 20.0)
    for _ in range(6):
        c, w = rng.random(3), 0.1 + 0.2 * rng.random()
        out += 200 * rng.random() * np.exp(-sum((g - ci) ** 2 for g, ci in zip(grids, c)) / (2 * w * w))
    return out.astype(np.float32)


@pytest.fixture(scope="module")
def mni_thick() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(truth, thick, brain)``: an MNI T1 crop at 1 mm, the same with 5 mm box slices along axis 2 (20 slices), the brain mask."""
    t1 = load_mni152_t1().array[45:141, 55:167, 40:140]
    brain = load_mni152_brain_mask()[45:141, 55:167, 40:140]
    thick = apply_axis_degradation(torch.from_numpy(t1), AxisDegradation(2, 5.0, "block", 5.0), dim=2).numpy()
    return t1, thick, brain


def test_plan_keeps_the_extent_for_non_integer_factors() -> None:
    five = plan_through_plane(Volume(np.zeros((8, 9, 12)), np.diag([1.0, 1.0, 5.0, 1.0])))
    assert (five.slice_axis, five.n_in, five.n_out, five.factor, five.spacing_out) == (2, 12, 60, 5.0, 1.0)
    three = plan_through_plane(Volume(np.zeros((10, 40, 9)), oblique((0.9, 3.0, 0.9))))
    assert (three.slice_axis, three.n_in, three.n_out) == (1, 40, 133)  # 120 mm / 0.9 mm = 133.3 -> 133 voxels
    assert three.spacing_out == pytest.approx(120 / 133) and three.n_out * three.spacing_out == pytest.approx(40 * 3.0)
    gap = plan_through_plane(Volume(np.zeros((8, 9, 12)), np.diag([1.0, 1.0, 5.0, 1.0])), slice_thickness=3.0, target_spacing=2.5)
    assert (gap.n_out, gap.thickness, gap.profile().kind, gap.profile().width) == (24, 3.0, "slice_box", pytest.approx(1.2))


def test_bspline_matrix_is_the_interpolation_baseline() -> None:
    x = np.random.default_rng(0).random((5, 17)).astype(np.float32)
    expected = interpolate_to_hr(torch.from_numpy(x), (51 / 17,)).numpy()
    np.testing.assert_allclose(x @ bspline_matrix(17, 51).T, expected, atol=1e-5)


@pytest.mark.parametrize("spacing, target, n_in, n_out", [((1.0, 1.0, 5.0), None, 12, 60), ((0.9, 0.9, 3.0), 0.9, 40, 133)],
                         ids=["5mm_to_1mm", "3mm_to_0.9mm"])
def test_output_voxel_centres_and_box_on_an_oblique_grid(spacing, target, n_in, n_out) -> None:
    affine = oblique(spacing)
    volume = Volume(blobs((20, 22, n_in)), affine)
    out = ThroughPlaneSuperResolver(target_spacing=target, adapt_seconds=0, progress=False)(volume)
    assert out.shape == (20, 22, n_out)
    f = n_out / n_in
    np.testing.assert_allclose(out.affine, upscaled_affine(affine, (1, 1, f)), atol=1e-9)
    # every output voxel centre lies where the centred grid puts it in the input's index space
    rng = np.random.default_rng(3)
    idx = np.c_[rng.integers(0, 20, 50), rng.integers(0, 22, 50), rng.integers(0, n_out, 50)].astype(np.float64)
    expected = (affine @ np.c_[idx[:, 0], idx[:, 1], (idx[:, 2] + 0.5) / f - 0.5, np.ones(50)].T).T[:, :3]
    np.testing.assert_allclose((out.affine @ np.c_[idx, np.ones(50)].T).T[:, :3], expected, atol=1e-9)
    np.testing.assert_allclose(voxel_corners_world(out.affine, out.shape, centres=False),
                               voxel_corners_world(affine, volume.shape, centres=False), atol=1e-9)
    spacing_out = np.linalg.norm(out.affine[:3, :3], axis=0)
    np.testing.assert_allclose(spacing_out, [spacing[0], spacing[1], spacing[2] * n_in / n_out], rtol=1e-9)
    assert out.generation_parameters["gate"]["decision"] == "interpolation"  # no adaptation: consistent B-spline


@pytest.mark.parametrize("thickness", [None, 3.0], ids=["contiguous", "gaps"])
def test_output_reproduces_the_input_under_the_slice_profile(thickness) -> None:
    volume = Volume(blobs((20, 22, 12), seed=1), np.diag([1.0, 1.0, 5.0, 1.0]))
    resolver = ThroughPlaneSuperResolver(slice_thickness=thickness, adapt_seconds=30, adapt_steps=10, progress=False)
    out = resolver(volume)
    plan = resolver.last_plan
    proj = ConsistencyProjector({2: axis_matrix(plan.n_out, plan.profile())})
    assert proj.residual(out.array, volume.array) < 1e-5
    gate = out.generation_parameters["gate"]
    assert gate["consistency_after"] < 1e-5 < gate["consistency_before"]
    assert gate["degradation"]["width"] == pytest.approx(5.0 if thickness is None else 3.0)
    bspline = volume.array @ bspline_matrix(12, 60).T.astype(np.float32)
    assert proj.residual(bspline, volume.array) > 1e-3  # plain interpolation is not consistent


def test_adaptation_beats_the_bspline_on_a_thick_slice_mni_volume(mni_thick) -> None:
    truth, thick, brain = mni_thick
    volume = Volume(thick, np.diag([1.0, 1.0, 5.0, 1.0]))
    out = ThroughPlaneSuperResolver(adapt_seconds=600, adapt_steps=300, progress=False, seed=0)(volume)
    bspline = np.clip(thick @ bspline_matrix(20, 100).T.astype(np.float32), thick.min(), thick.max())
    norm = float(np.percentile(truth, 99.9))
    psnr = lambda a: 10 * np.log10(norm**2 / np.mean((a[brain] - truth[brain]) ** 2))  # noqa: E731
    params = out.generation_parameters
    assert params["adaptation"]["steps"] == 300 and params["gate"]["decision"] in ("model", "blend")
    assert params["gate"]["psnr_gated"] > params["gate"]["psnr_baseline"]
    assert psnr(out.array) > psnr(bspline) + 0.4


def test_the_bundle_refiner_beats_the_bspline_without_adaptation(tmp_path, capsys, mni_thick) -> None:
    """The shipped start point (pretrained on synthetic pairs), through the CLI and the bundle, --adapt-seconds 0."""
    truth, thick, brain = mni_thick
    src = _nifti(tmp_path / "thick.nii.gz", thick, np.diag([1.0, 1.0, 5.0, 1.0]))
    assert run(["upscale", str(src), str(tmp_path / "iso.nii.gz"), "--axes", "through", "--adapt-seconds", "0"]) == 0
    assert "gate: model kept" in capsys.readouterr().out
    out = read_volume(tmp_path / "iso.nii.gz").array
    bspline = np.clip(thick @ bspline_matrix(20, 100).T.astype(np.float32), thick.min(), thick.max())
    norm = float(np.percentile(truth, 99.9))
    psnr = lambda a: 10 * np.log10(norm**2 / np.mean((a[brain] - truth[brain]) ** 2))  # noqa: E731
    assert psnr(out) > psnr(bspline) + 0.4
    record = json.loads(sidecar_path(tmp_path / "iso.nii.gz").read_text(encoding="utf-8"))["record"]
    shipped = json.loads((Path(__file__).resolve().parents[1] / "monai_bundles" / "brain_mri_super_resolution" / "configs" / "metadata.json")
                         .read_text(encoding="utf-8"))["medgen"]["through_plane"]
    assert record["weights_sha256"] == shipped["sha256"] and record["parameters"]["adaptation"]["steps"] == 0


def run(argv: list[str]) -> int:
    """``medgen ARGV`` in-process; argparse's refusals exit (code 2) like the console script."""
    try:
        return main(argv)
    except SystemExit as stop:
        return int(stop.code)


def _nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(np.asarray(data, dtype=np.float32), affine), str(path))
    return path


def test_cli_writes_the_exact_grid_with_a_signed_record_and_progress_lines(tmp_path, capsys) -> None:
    affine = oblique((0.9, 0.9, 3.0))
    src = _nifti(tmp_path / "thick.nii.gz", blobs((24, 20, 10), seed=2), affine)
    out = tmp_path / "iso.nrrd"
    code = main(["upscale", str(src), str(out), "--axes", "through", "--target-spacing", "0.9", "--adapt-seconds", "1", "--progress", "json"])
    stdout = capsys.readouterr().out
    assert code == 0
    assert any(line.startswith("MEDGEN_PROGRESS") and '"adapt to this scan"' in line for line in stdout.splitlines())
    assert sum(line.startswith("gate:") for line in stdout.splitlines()) == 1
    result = read_volume(out)
    assert result.shape == (24, 20, 33)  # 30 mm / 0.9 mm = 33.3 -> 33 voxels of 0.909 mm
    np.testing.assert_allclose(result.affine, upscaled_affine(affine, (1, 1, 3.3)), atol=1e-6)
    assert verify_provenance(out).status == "intact"
    params = json.loads(sidecar_path(out).read_text(encoding="utf-8"))["record"]["parameters"]
    assert params["axes"] == "through" and params["through_plane"]["n_out"] == 33 and params["adaptation"]["steps"] >= 1
    assert params["gate"]["enabled"] and params["gate"]["consistency_after"] < 1e-5


def test_slice_thickness_comes_from_an_nrrd_header(tmp_path) -> None:
    path = tmp_path / "gaps.nrrd"
    header = {"space": "right-anterior-superior", "space directions": np.diag([1.0, 1.0, 5.0]), "space origin": np.zeros(3),
              "thicknesses": [np.nan, np.nan, 2.5], "kinds": ["domain"] * 3}
    nrrd.write(str(path), blobs((16, 16, 8)), header)
    plan = plan_through_plane(read_volume(path))
    assert (plan.thickness, plan.thickness_source) == (2.5, "header")
    assert plan_through_plane(read_volume(path), slice_thickness=4.0).thickness_source == "given"


BAD = {
    "isotropic": ((16, 16, 8), (1.0, 1.0, 1.0), [], "nothing to do"),
    "2d_image": ((32, 32, 1), (1.0, 1.0, 5.0), [], "2D image"),
    "ambiguous_axis": ((16, 16, 8), (3.0, 3.0, 1.0), [], "cannot tell the slice axis"),
    "factor_above_8": ((16, 16, 8), (1.0, 1.0, 10.0), [], "above 8"),
    "target_above_slice_spacing": ((16, 16, 8), (1.0, 1.0, 5.0), ["--target-spacing", "6"], "larger than the slice spacing"),
    "target_zero": ((16, 16, 8), (1.0, 1.0, 5.0), ["--target-spacing", "0"], "must be a number > 0"),
    "target_negative": ((16, 16, 8), (1.0, 1.0, 5.0), ["--target-spacing", "-1"], "must be a number > 0"),
    "adapt_negative": ((16, 16, 8), (1.0, 1.0, 5.0), ["--adapt-seconds", "-1"], "must be a number >= 0"),
    "thickness_zero": ((16, 16, 8), (1.0, 1.0, 5.0), ["--slice-thickness", "0"], "must be a number > 0"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_through_plane_requests_are_one_line_exit_2(tmp_path, capsys, case: str) -> None:
    shape, spacing, extra, message = BAD[case]
    src = _nifti(tmp_path / "in.nii.gz", blobs(shape) if min(shape) > 1 else np.ones(shape), np.diag([*spacing, 1.0]))
    out = tmp_path / "out.nii.gz"
    code = run(["upscale", str(src), str(out), "--axes", "through", *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.nii.gz"]


def test_through_only_options_are_refused_for_inplane(tmp_path, capsys) -> None:
    src = _nifti(tmp_path / "in.nii.gz", blobs((16, 16, 4)), np.diag([1.0, 1.0, 3.0, 1.0]))
    code = main(["upscale", str(src), str(tmp_path / "out.nii.gz"), "--target-spacing", "1"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "apply to --axes through only" in err
    with pytest.raises(SuperResolutionError, match="--adapt-seconds"):
        ThroughPlaneSuperResolver(adapt_seconds=-1)



def test_a_single_sharp_axis_keeps_the_start_weights() -> None:
    """Spacing 1 x 4 x 5 mm: axis 1 is not sharp, so no slice-plane pairs look like the through-plane planes."""
    volume = Volume(blobs((20, 12, 10), seed=4), np.diag([1.0, 4.0, 5.0, 1.0]))
    out = ThroughPlaneSuperResolver(adapt_seconds=5, adapt_steps=3, progress=False)(volume)
    params = out.generation_parameters
    assert params["through_plane"]["sharp_axes"] == [0] and out.shape == (20, 12, 50)
    assert params["adaptation"]["steps"] == 0 and "only axis 0 is sharp" in params["adaptation"]["note"]


def test_adaptation_defaults_agree_in_the_cli_the_library_and_the_bundle() -> None:
    """At most 1500 Adam steps within 45 s, everywhere a user can start a through-plane run."""
    import inspect

    from medgen_core.cli._common import DEFAULT_ADAPT_SECONDS, DEFAULT_ADAPT_STEPS
    from medgen_core.inference import super_resolver
    from medgen_core.inference import through_plane as tp

    config = json.loads((Path(__file__).resolve().parents[1] / "monai_bundles" / "brain_mri_super_resolution" / "configs"
                          / "inference.json").read_text(encoding="utf-8"))
    library = inspect.signature(super_resolver).parameters
    resolver = inspect.signature(tp.ThroughPlaneSuperResolver).parameters
    for seconds, steps in ((tp.DEFAULT_ADAPT_SECONDS, tp.DEFAULT_ADAPT_STEPS), (config["adapt_seconds"], config["adapt_steps"]),
                           (library["adapt_seconds"].default, library["adapt_steps"].default),
                           (resolver["adapt_seconds"].default, resolver["adapt_steps"].default)):
        assert (float(seconds), int(steps)) == (DEFAULT_ADAPT_SECONDS, DEFAULT_ADAPT_STEPS)
    assert DEFAULT_ADAPT_SECONDS < 60
