"""Axial MNI152 T1 slices at 2 mm in-plane, with a coarse slice-position class, for 2D diffusion training.

The slices come from the template shipped inside nilearn (no download), resampled from 1 mm to 2 mm
in-plane by 2x2 block averaging (exact: each 2 mm pixel is the mean of four 1 mm voxels) and
zero-padded (or centre-cropped) to ``size x size``. The held-out evaluation slab
(:data:`~medgen_core.data.samples.MNI_HELDOUT_AXIAL` plus its margin) is never returned for training,
and slices with almost no brain are dropped.

Every slice gets one of :data:`SLICE_POSITION_CLASSES`: which quarter of the brain's z-extent
(:data:`MNI_BRAIN_Z_EXTENT`) it lies in.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from medgen_core.data.samples import load_mni152_brain_mask, load_mni152_t1, mni_training_axial_indices

__all__ = [
    "MNI152_1MM_AFFINE",
    "MNI152_1MM_SHAPE",
    "MNI_BRAIN_Z_EXTENT",
    "SLICE_POSITION_CLASSES",
    "block_average_2mm",
    "fit_to_square",
    "mni_axial_slices_2mm",
    "mni_heldout_axial_slices_2mm",
    "mni_slice_affine_2mm",
    "slice_position_affine_2mm",
    "slice_position_centre_z",
    "slice_position_class",
]

#: Names of the 4 slice-position classes, inferior to superior (quarters of the brain's z-extent).
SLICE_POSITION_CLASSES = ("inferior", "lower_middle", "upper_middle", "superior")
#: Axial index range ``[lo, hi)`` of the MNI152 (1 mm, 189 slices) brain mask: slices z=0..154 hold brain.
MNI_BRAIN_Z_EXTENT = (0, 155)
#: Grid of the MNI152 2009 T1 template shipped with nilearn (1 mm, RAS), so that generated slices can be
#: placed in MNI space without loading the template.
MNI152_1MM_SHAPE = (197, 233, 189)
MNI152_1MM_AFFINE = np.array([[1.0, 0, 0, -98.0], [0, 1.0, 0, -134.0], [0, 0, 1.0, -72.0], [0, 0, 0, 1.0]])
_MNI_DEPTH = MNI152_1MM_SHAPE[2]


def slice_position_class(z: int | Sequence[int] | np.ndarray | torch.Tensor, n_classes: int = 4) -> int | np.ndarray:
    """Coarse position class of MNI axial index ``z``: ``floor(n_classes * (z - lo) / (hi - lo))`` over
    :data:`MNI_BRAIN_Z_EXTENT`, so 0 = most inferior, ``n_classes - 1`` = most superior (indices above the
    brain count as the top class). With ``n_classes=4`` the names are :data:`SLICE_POSITION_CLASSES`.

    Args:
        z: one index (returns ``int``) or several (returns an ``int64`` array), each in ``[0, 189)``.
        n_classes: number of equal parts of the z-extent (>= 1).
    """
    if int(n_classes) < 1:
        raise ValueError(f"slice_position_class: n_classes must be >= 1, got {n_classes}.")
    scalar = np.ndim(z) == 0
    zz = np.asarray(z.cpu() if isinstance(z, torch.Tensor) else z)
    if zz.size and (not np.issubdtype(zz.dtype, np.integer) or zz.min() < 0 or zz.max() >= _MNI_DEPTH):
        raise ValueError(f"slice_position_class: z must be integer MNI axial indices in [0, {_MNI_DEPTH}), got {zz.tolist()}.")
    lo, hi = MNI_BRAIN_Z_EXTENT
    cls = np.clip((zz.astype(np.int64) - lo) * int(n_classes) // (hi - lo), 0, int(n_classes) - 1)
    return int(cls) if scalar else cls.astype(np.int64)


def block_average_2mm(plane: np.ndarray) -> np.ndarray:
    """``(X, Y, ...)`` at 1 mm -> ``(X // 2, Y // 2, ...)`` at 2 mm by 2x2 averaging (a trailing odd row/column is dropped)."""
    x, y = plane.shape[0] // 2 * 2, plane.shape[1] // 2 * 2
    return plane[:x, :y].reshape(x // 2, 2, y // 2, 2, *plane.shape[2:]).mean(axis=(1, 3))


def _offsets(shape: tuple[int, int], size: int) -> tuple[int, int]:
    """Index offset (padded = original + offset) of the centred pad/crop of a 2D grid to ``size x size``."""
    return (size - shape[0]) // 2, (size - shape[1]) // 2


def fit_to_square(plane: np.ndarray, size: int) -> np.ndarray:
    """Centre-pad with zeros or centre-crop the first two axes to ``size`` (same offsets as :func:`_offsets`)."""
    out = np.zeros((size, size, *plane.shape[2:]), dtype=plane.dtype)
    ox, oy = _offsets(plane.shape[:2], size)
    sx, sy = max(-ox, 0), max(-oy, 0)  # source start (crop)
    dx, dy = max(ox, 0), max(oy, 0)  # destination start (pad)
    nx, ny = min(plane.shape[0] - sx, size - dx), min(plane.shape[1] - sy, size - dy)
    out[dx : dx + nx, dy : dy + ny] = plane[sx : sx + nx, sy : sy + ny]
    return out


def mni_slice_affine_2mm(z: float, size: int = 128) -> np.ndarray:
    """4x4 RAS affine of a ``(size, size, 1)`` 2 mm slice volume made by :func:`mni_axial_slices_2mm`
    from MNI axial index ``z`` (2 mm along every axis, centred on the 1 mm slice ``z``)."""
    ox, oy = _offsets((MNI152_1MM_SHAPE[0] // 2, MNI152_1MM_SHAPE[1] // 2), size)
    # 2 mm pixel i covers 1 mm voxels 2i, 2i+1 (centre 2i + 0.5); padded index = i + offset
    to_1mm = np.array([[2.0, 0, 0, 0.5 - 2.0 * ox], [0, 2.0, 0, 0.5 - 2.0 * oy], [0, 0, 2.0, float(z)], [0, 0, 0, 1]])
    return MNI152_1MM_AFFINE @ to_1mm


def slice_position_centre_z(class_id: int | None, n_classes: int = 4) -> float:
    """MNI axial index at the centre of slice-position class ``class_id`` (the brain's centre when None)."""
    lo, hi = MNI_BRAIN_Z_EXTENT
    if class_id is None:
        return (lo + hi - 1) / 2.0
    if not 0 <= int(class_id) < int(n_classes):
        raise ValueError(f"slice_position_centre_z: class_id must be in [0, {n_classes}), got {class_id}.")
    part = (hi - lo) / int(n_classes)
    return lo + (int(class_id) + 0.5) * part - 0.5


def slice_position_affine_2mm(class_name: str | None, size: int = 128, class_names: Sequence[str] = SLICE_POSITION_CLASSES) -> np.ndarray:
    """Affine (:func:`mni_slice_affine_2mm`) of a generated slice of class ``class_name``, placed at the
    centre of its class's z-range (at the brain's centre for None or ``""``, unconditional samples)."""
    names = [str(c) for c in class_names]
    if class_name not in (None, "") and class_name not in names:
        raise ValueError(f"slice_position_affine_2mm: unknown class_name {class_name!r}; expected one of {names}.")
    class_id = names.index(class_name) if class_name else None
    return mni_slice_affine_2mm(slice_position_centre_z(class_id, len(names)), size)


def mni_axial_slices_2mm(size: int = 128, min_brain_fraction: float = 0.02, indices: Sequence[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Training slices of the MNI152 T1 template at 2 mm in-plane.

    Intensities are divided by the volume's 99.9th percentile and clipped to [0, 1]. Slices whose brain
    mask covers less than ``min_brain_fraction`` of the ``size x size`` field are dropped.

    Args:
        size: output side in pixels (128 px = 256 mm covers the 197 x 233 mm template).
        min_brain_fraction: minimum brain area as a fraction of the field.
        indices: MNI axial indices to consider; default
            :func:`~medgen_core.data.samples.mni_training_axial_indices` (the held-out slab and its margin
            excluded). Indices inside the held-out slab are refused.

    Returns:
        ``(images, z_indices)``: float32 ``(N, 1, size, size)`` in [0, 1] (axes x = R-L, y = P-A, as in
        the NIfTI array) and int64 ``(N,)`` MNI axial indices.
    """
    if size < 8:
        raise ValueError(f"mni_axial_slices_2mm: size must be >= 8 pixels, got {size}.")
    allowed = set(mni_training_axial_indices())
    idx = sorted(allowed) if indices is None else [int(z) for z in indices]
    bad = [z for z in idx if z not in allowed]
    if bad:
        raise ValueError(f"mni_axial_slices_2mm: indices {bad} are in the held-out evaluation slab (or its margin) or outside "
                         f"[0, {_MNI_DEPTH}); use medgen_core.data.samples.mni_training_axial_indices().")
    return _slices_2mm(idx, size, min_brain_fraction)


def mni_heldout_axial_slices_2mm(size: int = 128, min_brain_fraction: float = 0.02) -> tuple[torch.Tensor, torch.Tensor]:
    """The held-out evaluation slab and its margin (MNI z = 76..103), prepared like :func:`mni_axial_slices_2mm`.

    No shipped generator was trained on these slices, so they test downstream models on anatomy the
    generators never saw (at the cost of covering only the ``lower_middle`` / ``upper_middle`` classes).
    Returns ``(images (N, 1, size, size), z_indices (N,))``.
    """
    if size < 8:
        raise ValueError(f"mni_heldout_axial_slices_2mm: size must be >= 8 pixels, got {size}.")
    training = set(mni_training_axial_indices())
    return _slices_2mm([z for z in range(_MNI_DEPTH) if z not in training], size, min_brain_fraction)


def _slices_2mm(idx: list[int], size: int, min_brain_fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    t1 = load_mni152_t1().array
    t1 = np.clip(t1 / max(float(np.percentile(t1, 99.9)), 1e-8), 0.0, 1.0)
    mask = load_mni152_brain_mask().astype(np.float32)
    img = fit_to_square(block_average_2mm(t1[:, :, idx]), size)  # (size, size, N)
    brain = fit_to_square(block_average_2mm(mask[:, :, idx]), size) >= 0.5
    keep = brain.mean(axis=(0, 1)) >= min_brain_fraction
    images = torch.from_numpy(np.ascontiguousarray(np.moveaxis(img[:, :, keep], 2, 0), dtype=np.float32))[:, None]
    z_indices = torch.tensor([z for z, k in zip(idx, keep) if k], dtype=torch.int64)
    return images, z_indices
