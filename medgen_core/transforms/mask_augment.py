"""Random spatial augmentation of integer label maps (GenSeg's "augmented real masks").

Seeded random affine (rotation, scale, translation) and optional elastic deformation, nearest-neighbour
resampling with ``torch.nn.functional.grid_sample``; 2D ``(N, 1, H, W)`` and 3D ``(N, 1, D, H, W)``.
Labels stay integers in their range; borders fill with 0 (background).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["MaskAugmentParams", "mask_augment"]


@dataclass
class MaskAugmentParams:
    """Random-deformation ranges of :func:`mask_augment`.

    Args:
        rotation_deg: maximal absolute rotation in degrees (3D: about each of the three axes).
        scale: ``(low, high)`` of the isotropic zoom factor.
        translation: maximal absolute shift as a fraction of the image size, per axis.
        elastic_magnitude: maximal displacement of the smooth elastic field as a fraction of the image size
            (0 switches it off).
        elastic_grid: control points per axis of the elastic field (smoothness: fewer is smoother).
    """

    rotation_deg: float = 15.0
    scale: tuple[float, float] = (0.9, 1.1)
    translation: float = 0.1
    elastic_magnitude: float = 0.0
    elastic_grid: int = 4

    def __post_init__(self) -> None:
        lo, hi = self.scale
        if not 0 < lo <= hi:
            raise ValueError(f"MaskAugmentParams: scale must be (low, high) with 0 < low <= high, got {self.scale}.")
        if self.rotation_deg < 0 or self.translation < 0 or self.elastic_magnitude < 0:
            raise ValueError("MaskAugmentParams: rotation_deg, translation and elastic_magnitude must be >= 0.")
        if self.elastic_grid < 2:
            raise ValueError(f"MaskAugmentParams: elastic_grid must be >= 2, got {self.elastic_grid}.")


def _rotation_matrices(angles: torch.Tensor) -> torch.Tensor:
    """``(N, 1)`` angles -> ``(N, 2, 2)``; ``(N, 3)`` Euler angles -> ``(N, 3, 3)`` (``Rz Ry Rx``)."""
    c, s = angles.cos(), angles.sin()
    if angles.shape[1] == 1:
        return torch.stack([torch.cat([c, -s], 1), torch.cat([s, c], 1)], 1)
    one, zero = torch.ones_like(c[:, 0]), torch.zeros_like(c[:, 0])
    def rot(i: int, a: int, b: int) -> torch.Tensor:  # rotation by angle i in the (a, b) plane
        m = [[one, zero, zero], [zero, one, zero], [zero, zero, one]]
        m[a][a], m[a][b], m[b][a], m[b][b] = c[:, i], -s[:, i], s[:, i], c[:, i]
        return torch.stack([torch.stack(row, -1) for row in m], 1)
    return rot(2, 0, 1) @ rot(1, 0, 2) @ rot(0, 1, 2)


def mask_augment(labels: torch.Tensor, generator: torch.Generator | int, params: MaskAugmentParams | None = None) -> torch.Tensor:
    """Randomly rotate, zoom, shift and (optionally) elastically deform integer label maps.

    Nearest-neighbour resampling, so every output value is an input value or 0 (background fills the borders).
    All random numbers come from ``generator`` (on the CPU), so a seed fixes the result on any device. Not
    differentiable: it only makes new masks.

    Args:
        labels: ``(N, 1, H, W)`` or ``(N, 1, D, H, W)`` integer class indices.
        generator: a CPU ``torch.Generator`` (advanced in place) or an int seed.
        params: deformation ranges; :class:`MaskAugmentParams` defaults when omitted.

    Returns:
        ``(N, 1, *S)`` labels of the same dtype and device.
    """
    p = MaskAugmentParams() if params is None else params
    if labels.dim() not in (4, 5) or labels.shape[1] != 1:
        raise ValueError(f"mask_augment: labels must be (N, 1, H, W) or (N, 1, D, H, W), got {tuple(labels.shape)}.")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"mask_augment: labels must have an integer dtype, got {labels.dtype}.")
    if isinstance(generator, int):
        generator = torch.Generator().manual_seed(generator)
    n, nd, spatial = labels.shape[0], labels.dim() - 2, tuple(labels.shape[2:])
    def uniform(*shape: int) -> torch.Tensor:  # U(-1, 1)
        return 2 * torch.rand(*shape, generator=generator, dtype=torch.float64) - 1

    # affine_grid maps output to input coordinates, normalised to [-1, 1] in the order (W, H[, D]); rotating in
    # voxel units keeps angles true for non-square images: A = H^-1 R H / s with H = diag(size / 2)
    half = torch.tensor(spatial[::-1], dtype=torch.float64) / 2
    rot = _rotation_matrices(uniform(n, 1 if nd == 2 else 3) * math.radians(p.rotation_deg))
    lo, hi = p.scale
    zoom = lo + (hi - lo) * (uniform(n) + 1) / 2
    mat = (rot * half[None, None, :] / half[None, :, None]) / zoom[:, None, None]
    shift = uniform(n, nd) * 2 * p.translation
    theta = torch.cat([mat, shift[..., None]], dim=2).float()
    grid = F.affine_grid(theta, [n, 1, *spatial], align_corners=False)
    if p.elastic_magnitude > 0:
        coarse = uniform(n, nd, *([p.elastic_grid] * nd)).float() * 2 * p.elastic_magnitude
        mode = "bilinear" if nd == 2 else "trilinear"
        grid = grid + F.interpolate(coarse, size=spatial, mode=mode, align_corners=True).movedim(1, -1)
    out = F.grid_sample(labels.float(), grid.to(labels.device), mode="nearest", padding_mode="zeros", align_corners=False)
    return out.round().to(labels.dtype)
