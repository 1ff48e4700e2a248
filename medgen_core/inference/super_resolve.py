"""Whole-volume super-resolution with a 2D network applied slice by slice.

Intensities are normalised per volume (divided by the 99.9th percentile, as in training) and mapped
back afterwards, so outputs keep the input's units. Each batch of slices goes through MONAI's
:class:`~monai.inferers.SlidingWindowInferer` (which handles outputs larger than inputs), so slices of
any size fit in memory.
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.inferers import SlidingWindowInferer

from medgen_core.inference.geometry import upscaled_affine
from medgen_core.io import Volume
from medgen_core.utils.progress import progress

__all__ = ["VolumeSuperResolver", "bicubic_upscale_volume", "pick_slice_axis"]

logger = logging.getLogger(__name__)


def pick_slice_axis(spacing: tuple[float, float, float]) -> int:
    """The through-plane axis: the odd one out when two spacings are equal (``(2, 2, 1)`` -> 2,
    ``(1, 3, 1)`` -> 1), the last axis when all are equal, else the one with the largest spacing."""
    sp = np.asarray(spacing, dtype=np.float64)
    same = [bool(np.isclose(sp[a], sp[b], rtol=1e-3)) for a, b in ((1, 2), (0, 2), (0, 1))]  # pair without axis i
    if all(same):
        return 2
    if sum(same) == 1:
        return int(same.index(True))
    return int(np.argmax(sp))


def _plane_axes(slice_axis: int) -> tuple[int, int]:
    a, b = (ax for ax in range(3) if ax != slice_axis)
    return a, b


def bicubic_upscale_volume(volume: Volume, scale: int, slice_axis: int | None = None) -> Volume:
    """Bicubic in-plane upscaling (the baseline), with the same geometry as :class:`VolumeSuperResolver`."""
    slice_axis = pick_slice_axis(volume.spacing) if slice_axis is None else slice_axis
    x = torch.from_numpy(np.moveaxis(volume.array, slice_axis, 0).copy())[:, None]
    up = F.interpolate(x, scale_factor=float(scale), mode="bicubic", align_corners=False)[:, 0].numpy()
    factors = [float(scale)] * 3
    factors[slice_axis] = 1.0
    return Volume(array=np.moveaxis(up, 0, slice_axis), affine=upscaled_affine(volume.affine, factors), path=None, format=volume.format)


class VolumeSuperResolver:
    """Upscale a 3D :class:`~medgen_core.io.Volume` with a 2D super-resolution network.

    Args:
        network: 2D network mapping ``(B, 1, h, w)`` to ``(B, 1, scale*h, scale*w)``.
        scale: the network's upscaling factor.
        axes: ``"inplane"`` upscales the two axes orthogonal to ``slice_axis``; ``"all"`` then also
            upscales the through-plane axis by running the network on orthogonal planes and
            block-averaging the doubly upscaled in-plane axis back.
        slice_axis: through-plane axis; None picks the axis with the largest spacing.
        batch_size: slices per forward pass.
        roi_size: sliding-window tile size (low-resolution voxels) for large slices.
        device: torch device.
        progress: show a tqdm progress bar.
        clamp: clip outputs to the input's intensity range (no new extremes).
    """

    def __init__(
        self,
        network: nn.Module,
        scale: int,
        axes: Literal["inplane", "all"] = "inplane",
        slice_axis: int | None = None,
        batch_size: int = 8,
        roi_size: int = 512,
        device: str | torch.device = "cpu",
        progress: bool = True,
        clamp: bool = True,
    ) -> None:
        if axes not in ("inplane", "all"):
            raise ValueError(f"VolumeSuperResolver: axes must be 'inplane' or 'all', got {axes!r}.")
        if slice_axis is not None and slice_axis not in (0, 1, 2):
            raise ValueError(f"VolumeSuperResolver: slice_axis must be 0, 1, 2 or None, got {slice_axis}.")
        self.network = network.to(device).eval()
        self.scale, self.axes, self.slice_axis = int(scale), axes, slice_axis
        self.batch_size, self.device, self.progress, self.clamp = batch_size, torch.device(device), progress, clamp
        self.inferer = SlidingWindowInferer(roi_size=(roi_size, roi_size), sw_batch_size=batch_size, overlap=0.25, mode="gaussian")

    @torch.no_grad()
    def _upscale_planes(self, array: np.ndarray, slice_axis: int, desc: str) -> np.ndarray:
        """Upscale every plane orthogonal to ``slice_axis`` of ``array`` (normalised intensities)."""
        stack = np.moveaxis(array, slice_axis, 0)
        out = []
        starts = range(0, stack.shape[0], self.batch_size)
        for start in progress(starts, desc=desc, unit="batch", disable=not self.progress):
            x = torch.from_numpy(np.ascontiguousarray(stack[start : start + self.batch_size]))[:, None].to(self.device)
            if max(x.shape[-2:]) <= self.inferer.roi_size[0]:
                y = self.network(x)
            else:
                y = self.inferer(x, self.network)
            out.append(y[:, 0].float().cpu().numpy())
        return np.moveaxis(np.concatenate(out, axis=0), 0, slice_axis)

    def upscale_array(self, array: np.ndarray, slice_axis: int) -> tuple[np.ndarray, tuple[float, float, float]]:
        """Upscale ``array`` ``(X, Y, Z)``; returns the result and the per-axis factors."""
        array = np.asarray(array, dtype=np.float32)
        lo, hi = float(array.min()), float(array.max())
        norm = float(np.percentile(array, 99.9))
        norm = norm if norm > 0 else max(hi, 1e-8)
        x = array / norm
        y = self._upscale_planes(x, slice_axis, f"upscale x{self.scale} in-plane")
        factors = [float(self.scale)] * 3
        factors[slice_axis] = 1.0
        if self.axes == "all":
            # through-plane: planes that contain the slice axis; the second in-plane axis is upscaled
            # twice by this pass, so block-average it back (the degradation model of a thick voxel)
            other = _plane_axes(slice_axis)[0]
            y = self._upscale_planes(y, other, f"upscale x{self.scale} through-plane")
            keep = _plane_axes(slice_axis)[1]
            shape = list(y.shape)
            shape[keep : keep + 1] = [shape[keep] // self.scale, self.scale]
            y = y.reshape(shape).mean(axis=keep + 1)
            factors[slice_axis] = float(self.scale)
        y = y * norm
        if self.clamp:
            y = np.clip(y, lo, hi)
        return y.astype(np.float32), tuple(factors)

    def __call__(self, volume: Volume) -> Volume:
        """Upscaled copy of ``volume``; the output covers the same physical box (see :mod:`.geometry`)."""
        slice_axis = pick_slice_axis(volume.spacing) if self.slice_axis is None else self.slice_axis
        array, factors = self.upscale_array(volume.array, slice_axis)
        return Volume(array=array, affine=upscaled_affine(volume.affine, factors), path=None, format=volume.format)
