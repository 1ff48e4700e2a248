"""dipy's T2-weighted b=0 volume on the MNI152 2 mm slice grid, and MNI152 T1 slices on the same planes.

dipy's ``S0_10`` (:func:`~medgen_core.data.samples.load_dipy_t2`) is one subject's 10 axial EPI slices at
2 mm in-plane, in scanner space, with a header whose slice spacing (53 mm) is not one. The MNI152 T1
template is affinely registered to it (:func:`~medgen_core.data.tissue_maps.register_mni_affine`, nominal
2 x 2 x 2.5 mm grid): the fit puts the 10 slices 1.9 mm apart at MNI z = 75..92 (1 mm indices), tilted by
about 3 degrees, with 2.14 MNI-mm per pixel.

Each dipy slice ``k`` is resampled **within its own plane** (cubic spline, no mixing of slices) onto the
``size x size`` 2 mm grid of :func:`~medgen_core.data.slices.mni_slice_affine_2mm`, so it has the field of
view, pixel size and brain position of the MNI training slices; :func:`dipy_plane_affines` gives, for every
output pixel, its MNI world position on that (tilted) plane. On the same planes
(:func:`mni_t1_on_planes`) the MNI T1 is sampled (2 x 2 mm in-plane box average, as
:func:`~medgen_core.data.slices.block_average_2mm`), giving T1 slices of matching anatomy; the tissue labels
of a plane are the MNI152 maps there (:func:`~medgen_core.data.tissue_maps.mni_tissue_labels_on_grid`), and
both images are set to 0 outside the brain (label 0).

Split: :data:`DIPY_T2W_TRAIN_SLICES` (0..4, MNI z = 70..88 over the tilted planes) may be trained on;
:data:`DIPY_T2W_EVAL_SLICES` (5..9, MNI z = 80..97) are for evaluation only, and their MNI planes lie inside
the MNI held-out slab (:data:`~medgen_core.data.samples.MNI_HELDOUT_AXIAL` and its margin), which
:func:`mni_t1_on_planes` checks.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import torch

from medgen_core.data.samples import load_dipy_t2, load_mni152_t1, mni_training_axial_indices
from medgen_core.data.slices import MNI152_1MM_AFFINE, mni_slice_affine_2mm
from medgen_core.data.tissue_maps import mni_tissue_labels_on_grid, register_mni_affine

__all__ = [
    "DIPY_T2W_EVAL_SLICES",
    "DIPY_T2W_NOMINAL_AFFINE",
    "DIPY_T2W_TRAIN_SLICES",
    "dipy_plane_affines",
    "dipy_t2w_on_mni_grid",
    "dipy_voxel_to_mni",
    "mni_t1_on_planes",
]

#: Nominal voxel-to-world affine used for the registration (2 mm in-plane; 2.5 mm slices, refined by the fit).
DIPY_T2W_NOMINAL_AFFINE = np.diag([2.0, 2.0, 2.5, 1.0])
#: dipy slices that training may use (MNI z = 70..88 on their planes).
DIPY_T2W_TRAIN_SLICES = (0, 1, 2, 3, 4)
#: dipy slices kept for evaluation (MNI z = 80..97 on their planes, inside the MNI held-out slab).
DIPY_T2W_EVAL_SLICES = (5, 6, 7, 8, 9)


@lru_cache(maxsize=1)
def _dipy_unit() -> np.ndarray:
    t2 = load_dipy_t2().array
    t2 = t2[..., 0] if t2.ndim == 4 else t2
    return np.clip(t2 / max(float(np.percentile(t2, 99.9)), 1e-8), 0.0, 1.0).astype(np.float32)


@lru_cache(maxsize=1)
def dipy_voxel_to_mni() -> np.ndarray:
    """4x4 map from dipy ``S0_10`` voxel indices ``(i, j, k, 1)`` to MNI152 world coordinates (mm), by affine
    registration (deterministic; about 15 s on one core, cached per process)."""
    return register_mni_affine(_dipy_unit(), DIPY_T2W_NOMINAL_AFFINE) @ DIPY_T2W_NOMINAL_AFFINE


def _check_slices(slices: Sequence[int]) -> list[int]:
    ks = [int(k) for k in slices]
    depth = _dipy_unit().shape[2]
    if not ks or any(k < 0 or k >= depth for k in ks):
        raise ValueError(f"dipy T2w: slice indices must be in [0, {depth}), got {list(slices)}.")
    return ks


def dipy_plane_affines(slices: Sequence[int], size: int = 128, voxel_to_mni: np.ndarray | None = None) -> np.ndarray:
    """``(N, 4, 4)``: for each dipy slice ``k``, the map from an output pixel ``(u, v, 0, 1)`` of the
    ``size x size`` 2 mm grid to its MNI world position on slice ``k``'s plane.

    The pixel's MNI ``x, y`` are those of :func:`~medgen_core.data.slices.mni_slice_affine_2mm` (same field of
    view as the MNI training slices); its dipy in-plane position solves the registration for slice ``k``, and
    its MNI ``z`` follows from the tilted plane. ``voxel_to_mni``: default :func:`dipy_voxel_to_mni`.
    """
    m = dipy_voxel_to_mni() if voxel_to_mni is None else np.asarray(voxel_to_mni, dtype=np.float64)
    grid = mni_slice_affine_2mm(0.0, size)
    inv2 = np.linalg.inv(m[:2, :2])
    out = []
    for k in _check_slices(slices):
        to_dipy = np.zeros((4, 4))  # (u, v, 0, 1) -> dipy voxel (i, j, k, 1)
        to_dipy[:2, :2] = inv2 @ grid[:2, :2]
        to_dipy[:2, 3] = inv2 @ (grid[:2, 3] - m[:2, 2] * k - m[:2, 3])
        to_dipy[2, 3], to_dipy[3, 3] = float(k), 1.0
        out.append(m @ to_dipy)
    return np.stack(out)


def _pixel_grid(size: int) -> np.ndarray:
    u, v = np.meshgrid(np.arange(size, dtype=np.float64), np.arange(size, dtype=np.float64), indexing="ij")
    return np.stack([u.ravel(), v.ravel(), np.zeros(size * size), np.ones(size * size)])


def _labels(planes: np.ndarray, size: int) -> np.ndarray:
    return np.stack([mni_tissue_labels_on_grid(p, (size, size)) for p in planes]).astype(np.int64)


def dipy_t2w_on_mni_grid(slices: Sequence[int] = DIPY_T2W_EVAL_SLICES, size: int = 128, brain_only: bool = True,
                         voxel_to_mni: np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """dipy T2w slices on the MNI 2 mm grid (see the module docstring).

    Intensities: the volume divided by its 99.9th percentile, clipped to [0, 1], resampled in-plane by a cubic
    spline (clipped to [0, 1] again); with ``brain_only`` set to 0 where the plane's MNI tissue label is 0.
    ``voxel_to_mni``: default :func:`dipy_voxel_to_mni` (the registration).

    Returns:
        ``(images (N, 1, size, size) float32 in [0, 1], labels (N, 1, size, size) int64)``, labels 0 background,
        1 CSF, 2 grey matter, 3 white matter of the registered MNI152 maps.
    """
    from scipy.ndimage import map_coordinates

    ks = _check_slices(slices)
    m = dipy_voxel_to_mni() if voxel_to_mni is None else np.asarray(voxel_to_mni, dtype=np.float64)
    planes = dipy_plane_affines(ks, size, m)
    m_inv = np.linalg.inv(m)
    t2 = _dipy_unit()
    grid = _pixel_grid(size)
    images = []
    for k, plane in zip(ks, planes):
        ij = (m_inv @ plane @ grid)[:2]
        images.append(np.clip(map_coordinates(t2[:, :, k], ij, order=3, mode="constant", cval=0.0), 0.0, 1.0).reshape(size, size))
    labels = _labels(planes, size)
    img = np.stack(images).astype(np.float32)
    if brain_only:
        img = img * (labels > 0)
    return torch.from_numpy(img)[:, None], torch.from_numpy(labels)[:, None]


@lru_cache(maxsize=1)
def _mni_t1_box2() -> np.ndarray:
    from scipy.ndimage import uniform_filter

    t1 = load_mni152_t1().array
    t1 = np.clip(t1 / max(float(np.percentile(t1, 99.9)), 1e-8), 0.0, 1.0)
    return uniform_filter(t1, size=(2, 2, 1), mode="constant").astype(np.float32)  # mean of [i-1, i] x [j-1, j]


def mni_t1_on_planes(planes: np.ndarray, size: int = 128, brain_only: bool = True, allow_training_slices: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """MNI152 T1 on the planes ``planes (N, 4, 4)`` (from :func:`dipy_plane_affines`): each pixel the mean of
    the 2 x 2 mm in-plane box of 1 mm voxels around its MNI position (trilinear through-plane), the template
    divided by its 99.9th percentile; 0 outside the brain with ``brain_only``.

    Raises ``ValueError`` if a brain pixel lies within 1 mm of a training slice
    (:func:`~medgen_core.data.samples.mni_training_axial_indices`) unless ``allow_training_slices``.

    Returns:
        ``(images (N, 1, size, size) float32 in [0, 1], labels (N, 1, size, size) int64)``.
    """
    from scipy.ndimage import map_coordinates

    planes = np.asarray(planes, dtype=np.float64).reshape(-1, 4, 4)
    vol = _mni_t1_box2()
    to_vox = np.linalg.inv(MNI152_1MM_AFFINE)
    grid = _pixel_grid(size)
    labels = _labels(planes, size)
    training = set(mni_training_axial_indices())
    images = []
    for n, plane in enumerate(planes):
        vox = (to_vox @ plane @ grid)[:3]
        z = vox[2][labels[n].ravel() > 0]
        if not allow_training_slices and z.size and set(range(int(np.floor(z.min())), int(np.ceil(z.max())) + 1)) & training:
            raise ValueError(f"mni_t1_on_planes: plane {n} reaches MNI z = {z.min():.1f}..{z.max():.1f}, which includes training slices; "
                             "expected planes inside the held-out slab (or allow_training_slices=True).")
        vox[:2] += 0.5  # centre of the 2 x 2 box
        images.append(map_coordinates(vol, vox, order=1, mode="constant", cval=0.0).reshape(size, size))
    img = np.clip(np.stack(images), 0.0, 1.0).astype(np.float32)
    if brain_only:
        img = img * (labels > 0)
    return torch.from_numpy(img)[:, None], torch.from_numpy(labels)[:, None]
