"""MNI152 axial slices for the latent-space lab: training slices and the held-out slab, with classes.

Training slices are :func:`~medgen_core.data.slices.mni_axial_slices_2mm` (the held-out slab and its
margin excluded); the evaluation slices are the held-out slab
(:data:`~medgen_core.data.samples.MNI_HELDOUT_AXIAL`, z = 80..99) prepared the same way. Both are
average-pooled from 128 to ``image_size`` pixels (64 = 4 mm pixels). Classes are the slice-position
classes (:func:`~medgen_core.data.slices.slice_position_class`). The held-out slab lies in one class
(``upper_middle``), so class-dependent results are reported on training slices of every class.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from medgen_core.data.samples import MNI_HELDOUT_AXIAL, load_mni152_t1
from medgen_core.data.slices import SLICE_POSITION_CLASSES, block_average_2mm, fit_to_square, mni_axial_slices_2mm, slice_position_class

__all__ = ["LabSlices", "heldout_axial_slices_2mm", "lab_slices"]

_FIELD = 128  # 2 mm slices, 256 mm field


@dataclass
class LabSlices:
    """Slices ``(N, 1, S, S)`` in [0, 1] with int64 classes ``(N,)`` and MNI axial indices ``(N,)``."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    train_z: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    test_z: torch.Tensor
    class_names: tuple[str, ...]


def heldout_axial_slices_2mm(size: int = _FIELD) -> tuple[torch.Tensor, torch.Tensor]:
    """The held-out slab z = 80..99 at 2 mm, prepared like :func:`mni_axial_slices_2mm` (never used for training).

    Returns:
        ``(images (20, 1, size, size) in [0, 1], z (20,))``.
    """
    lo, hi = MNI_HELDOUT_AXIAL
    z = list(range(lo, hi))
    t1 = load_mni152_t1().array
    t1 = np.clip(t1 / max(float(np.percentile(t1, 99.9)), 1e-8), 0.0, 1.0)
    img = fit_to_square(block_average_2mm(t1[:, :, z]), size)
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(img, 2, 0), dtype=np.float32))[:, None], torch.tensor(z, dtype=torch.int64)


def _resize(images: torch.Tensor, size: int) -> torch.Tensor:
    if images.shape[-1] == size:
        return images
    if _FIELD % size:
        raise ValueError(f"lab_slices: image_size must divide {_FIELD} (e.g. 32, 64, 128), got {size}.")
    return F.avg_pool2d(images, _FIELD // size)


def lab_slices(image_size: int = 64, class_names: tuple[str, ...] | list[str] = SLICE_POSITION_CLASSES) -> LabSlices:
    """Training slices and the held-out slab at ``image_size`` (a divisor of 128), with slice-position classes."""
    names = tuple(str(c) for c in class_names)
    train, train_z = mni_axial_slices_2mm(_FIELD)
    test, test_z = heldout_axial_slices_2mm(_FIELD)
    k = len(names)
    return LabSlices(
        train_images=_resize(train, image_size).clamp(0, 1),
        train_labels=torch.as_tensor(slice_position_class(train_z, k)),
        train_z=train_z,
        test_images=_resize(test, image_size).clamp(0, 1),
        test_labels=torch.as_tensor(slice_position_class(test_z, k)),
        test_z=test_z,
        class_names=names,
    )
