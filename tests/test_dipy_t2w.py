"""dipy's T2w on the MNI 2 mm grid (medgen_core.data.dipy_t2w): plane geometry, in-plane resampling, the
held-out check of the T1 planes, and (slow) the registration and the training script end to end."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from medgen_core.data.dipy_t2w import (DIPY_T2W_EVAL_SLICES, DIPY_T2W_TRAIN_SLICES, dipy_plane_affines, dipy_t2w_on_mni_grid, dipy_voxel_to_mni,
                                       mni_t1_on_planes)
from medgen_core.data.samples import MNI_HELDOUT_AXIAL, MNI_HELDOUT_MARGIN, load_dipy_t2
from medgen_core.data.slices import MNI152_1MM_AFFINE, mni_slice_affine_2mm

REPO = Path(__file__).resolve().parents[1]


def _tilted(z0: float) -> np.ndarray:
    """A dipy voxel -> MNI world map like the registration's: 2.1 mm pixels, a small rotation and tilt, slices 1.9 mm apart from MNI z index ``z0``."""
    c, s = np.cos(0.05), np.sin(0.05)
    m = np.array([[2.1 * c, -2.1 * s, 0.15, -130.0], [2.1 * s, 2.1 * c, 0.16, -146.0], [-0.08, -0.10, 1.9, 0.0], [0, 0, 0, 1.0]])
    m[2, 3] = (MNI152_1MM_AFFINE @ [0, 0, z0, 1])[2] - m[2, :3] @ [64, 64, 0]  # slice 0's centre at MNI z index z0
    return m


def test_plane_affines_keep_the_mni_grid_in_plane_and_stay_on_the_dipy_slice() -> None:
    m = _tilted(80.0)
    planes = dipy_plane_affines([0, 3], size=128, voxel_to_mni=m)
    uv = np.array([[0, 0, 0, 1], [127, 5, 0, 1], [40, 90, 0, 1]], dtype=float).T
    grid = mni_slice_affine_2mm(0.0, 128)
    for k, plane in zip((0, 3), planes):
        world = plane @ uv
        np.testing.assert_allclose(world[:2], (grid @ uv)[:2], atol=1e-9)  # the MNI 2 mm grid's x, y
        vox = np.linalg.inv(m) @ world
        np.testing.assert_allclose(vox[2], k, atol=1e-9)  # on dipy slice k (no through-plane mixing)
    assert not np.allclose(planes[0][2, :2], 0)  # tilted: z varies within the plane


def test_in_plane_resampling_matches_a_direct_spline_evaluation() -> None:
    from scipy.ndimage import map_coordinates

    m = _tilted(80.0)
    img, lab = dipy_t2w_on_mni_grid([2], size=64, brain_only=False, voxel_to_mni=m)
    assert img.shape == lab.shape == (1, 1, 64, 64) and img.dtype == torch.float32 and lab.dtype == torch.int64
    t2 = load_dipy_t2().array
    t2 = t2[..., 0] if t2.ndim == 4 else t2
    t2 = np.clip(t2 / np.percentile(t2, 99.9), 0, 1)
    plane = dipy_plane_affines([2], 64, m)[0]
    u, v = 20, 33
    i, j, k, _ = np.linalg.inv(m) @ plane @ [u, v, 0, 1]
    expected = np.clip(map_coordinates(t2[:, :, 2], [[i], [j]], order=3, mode="constant"), 0, 1)[0]
    assert float(img[0, 0, u, v]) == pytest.approx(expected, abs=1e-5)
    masked, lab2 = dipy_t2w_on_mni_grid([2], size=64, brain_only=True, voxel_to_mni=m)
    assert torch.equal(lab, lab2) and float(masked[lab2 == 0].abs().max()) == 0.0 and (lab2 > 0).any()


def test_t1_planes_refuse_training_slices_and_match_the_axial_slices_on_a_flat_plane() -> None:
    with pytest.raises(ValueError, match="training slices"):
        mni_t1_on_planes(dipy_plane_affines([0], 64, _tilted(60.0)), 64)
    # a flat plane at MNI z index 90 (held out) equals the 2x2 block-averaged axial slice there
    flat = mni_slice_affine_2mm(90.0, 64)
    img, lab = mni_t1_on_planes(flat[None], 64, brain_only=False)
    from medgen_core.data.slices import mni_heldout_axial_slices_2mm

    axial, z = mni_heldout_axial_slices_2mm(64)
    ref = axial[int((z == 90).nonzero()[0, 0])]
    inside = lab[0] > 0
    np.testing.assert_allclose(img[0][inside].numpy(), ref[inside].numpy(), atol=2e-3)
    lo, hi = MNI_HELDOUT_AXIAL
    assert lo - MNI_HELDOUT_MARGIN <= 90 < hi + MNI_HELDOUT_MARGIN


def test_bad_slice_indices_are_refused_in_one_line() -> None:
    with pytest.raises(ValueError, match=r"slice indices must be in \[0, 10\)"):
        dipy_plane_affines([10], 64, _tilted(80.0))


@pytest.mark.slow
def test_registration_puts_the_eval_slab_inside_the_mni_heldout_slab() -> None:
    m = dipy_voxel_to_mni()
    assert 1.7 < np.linalg.norm(m[:3, 2]) < 2.2 and 1.9 < np.linalg.norm(m[:3, 0]) < 2.4  # slice spacing, pixel size (mm)
    t2, lab = dipy_t2w_on_mni_grid(DIPY_T2W_EVAL_SLICES)
    t1, lab1 = mni_t1_on_planes(dipy_plane_affines(DIPY_T2W_EVAL_SLICES))  # raises if a plane reaches a training slice
    assert torch.equal(lab, lab1) and t2.shape == t1.shape == (5, 1, 128, 128)
    csf, wm = lab == 1, lab == 3
    assert t2[csf].mean() > 1.5 * t2[wm].mean() and t1[wm].mean() > 1.5 * t1[csf].mean()  # T2w and T1 contrast on the same labels
    with pytest.raises(ValueError, match="training slices"):
        mni_t1_on_planes(dipy_plane_affines(DIPY_T2W_TRAIN_SLICES[:1]))


@pytest.mark.slow
def test_train_script_runs_resumes_and_exports(tmp_path) -> None:
    sys.path.insert(0, str(REPO / "scripts"))
    import train_cyclegan

    out = tmp_path / "run"
    assert train_cyclegan.main(["--out", str(out), "--iterations", "2", "--checkpoint-every", "1", "--sample-every", "2"]) == 0
    assert train_cyclegan.main(["--out", str(out), "--iterations", "3", "--checkpoint-every", "1"]) == 0
    rows = (out / "train_log.csv").read_text(encoding="utf-8").splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3"]
    state = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert state["iteration"] == 3 and json.loads((out / "args.json").read_text(encoding="utf-8"))["iterations"] == 3
    net = train_cyclegan.generator()
    net.load_state_dict(torch.load(out / "generator_a2b.pt", map_location="cpu", weights_only=True))
    assert (out / "samples" / "it_00002.png").exists()
