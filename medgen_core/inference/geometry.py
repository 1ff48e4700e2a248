"""Geometry of upscaled grids: the output covers the same physical box as the input.

Output voxel ``j`` along an axis upscaled by ``s`` sits at input index coordinate
``(j + 0.5) / s - 0.5`` (the ``align_corners=False`` convention of ``torch.nn.functional.interpolate``
and of :mod:`medgen_core.transforms.degradation`), so spacing is divided by ``s`` and the origin moves
by ``(1/s - 1) / 2`` input voxels towards the inside of the box.
"""

from __future__ import annotations

from itertools import product
from typing import Sequence

import numpy as np

__all__ = ["upscaled_affine", "voxel_corners_world"]


def upscaled_affine(affine: np.ndarray, factors: Sequence[float]) -> np.ndarray:
    """Affine of a grid upscaled by ``factors`` (one per axis) that covers the same physical box.

    Args:
        affine: 4x4 voxel-to-world matrix of the input (any orientation, oblique allowed).
        factors: upscaling factor per voxel axis, e.g. ``(2, 2, 1)`` for in-plane x2.

    Returns:
        4x4 affine of the output grid.
    """
    affine = np.asarray(affine, dtype=np.float64)
    f = np.asarray(factors, dtype=np.float64)
    if affine.shape != (4, 4) or f.shape != (3,) or np.any(f <= 0):
        raise ValueError(f"upscaled_affine: expected a 4x4 affine and 3 positive factors, got {affine.shape} and {tuple(f)}.")
    index_map = np.eye(4)
    index_map[:3, :3] = np.diag(1.0 / f)
    index_map[:3, 3] = 0.5 / f - 0.5
    return affine @ index_map


def voxel_corners_world(affine: np.ndarray, shape: Sequence[int], centres: bool = True) -> np.ndarray:
    """World coordinates (8, 3) of the grid's corner voxel centres (``centres=True``) or of its outer box corners."""
    lo = 0.0 if centres else -0.5
    pts = [[lo if c == 0 else n - 1 + (0.0 if centres else 0.5) for c, n in zip(corner, shape)] for corner in product((0, 1), repeat=3)]
    pts = np.c_[np.asarray(pts, dtype=np.float64), np.ones(8)]
    return (np.asarray(affine, dtype=np.float64) @ pts.T).T[:, :3]
