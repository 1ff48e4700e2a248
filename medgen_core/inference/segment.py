"""Whole-volume segmentation with a 2D segmenter, slice by slice (the GenSeg brain tissue model).

The array is permuted/flipped to RAS+ (no resampling, as in :mod:`.translate`), intensities are scaled like the
training slices (``/ 99.9th percentile`` of the volume, clipped to [0, 1], then to [-1, 1]), and each axial slice
is resampled in-plane to the training pixel size (``target_spacing_mm``; bilinear, anti-aliased when shrinking),
padded to a multiple of ``size_multiple``, segmented, and its class probabilities are resampled back to the
input grid before the arg-max. The output is a label map on the input's grid (same shape and affine).

Example::

    segmenter = VolumeSegmenter(build_segmenter("unet", 4))
    labels = segmenter(read_volume("t1.nii.gz"))   # 0 background, 1 CSF, 2 grey matter, 3 white matter
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform

from medgen_core.io import Volume
from medgen_core.utils.progress import progress

__all__ = ["VolumeSegmenter"]


class VolumeSegmenter:
    """Label a 3D :class:`~medgen_core.io.Volume` with a 2D segmenter ``(B, 1, H, W) -> (B, C, H, W)`` logits.

    Args:
        network: the segmenter (inputs in [-1, 1]).
        slice_axis: axis (after reorientation to RAS) along which slices are taken (2 = axial).
        batch_size: slices per forward pass.
        target_spacing_mm: in-plane pixel size the network was trained at (None: use the input grid as is).
        size_multiple: every slice is padded to a multiple of this (``2**`` the segmenter's down-samplings).
        device: torch device.
        progress: show a progress bar.
    """

    def __init__(self, network: nn.Module, slice_axis: int = 2, batch_size: int = 16, target_spacing_mm: float | None = 2.0,
                 size_multiple: int = 8, device: str | torch.device = "cpu", progress: bool = True) -> None:
        if slice_axis not in (0, 1, 2):
            raise ValueError(f"VolumeSegmenter: slice_axis must be 0, 1 or 2, got {slice_axis}.")
        if target_spacing_mm is not None and target_spacing_mm <= 0:
            raise ValueError(f"VolumeSegmenter: target_spacing_mm must be > 0, got {target_spacing_mm}.")
        self.device = torch.device(device)
        self.network = network.to(self.device).eval()
        self.slice_axis, self.batch_size, self.multiple = slice_axis, int(batch_size), int(size_multiple)
        self.target_spacing, self.progress = target_spacing_mm, progress

    def _plane_size(self, shape: tuple[int, int], spacing: tuple[float, float]) -> tuple[int, int]:
        if self.target_spacing is None:
            return shape
        return tuple(max(1, int(round(n * s / self.target_spacing))) for n, s in zip(shape, spacing))

    @torch.no_grad()
    def segment_array(self, array: np.ndarray, spacing: tuple[float, float, float] = (2.0, 2.0, 2.0)) -> np.ndarray:
        """Label ``array`` ``(X, Y, Z)`` (RAS order) with voxel ``spacing`` in mm; returns uint8 labels ``(X, Y, Z)``."""
        array = np.asarray(array, dtype=np.float32)
        p999 = float(np.percentile(array, 99.9))
        scaled = np.clip(array / (p999 if p999 > 0 else max(float(array.max()), 1e-8)), 0.0, 1.0) * 2.0 - 1.0
        stack = np.moveaxis(scaled, self.slice_axis, 0)
        plane_spacing = tuple(s for i, s in enumerate(spacing) if i != self.slice_axis)
        shape = tuple(stack.shape[1:])
        size = self._plane_size(shape, plane_spacing)
        padded = tuple(-(-n // self.multiple) * self.multiple for n in size)
        before = [(p - n) // 2 for p, n in zip(padded, size)]
        out = []
        for start in progress(range(0, stack.shape[0], self.batch_size), desc="segment slices", unit="batch", disable=not self.progress):
            x = torch.from_numpy(np.ascontiguousarray(stack[start:start + self.batch_size]))[:, None].to(self.device)
            if size != shape:
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
            x = F.pad(x, (before[1], padded[1] - size[1] - before[1], before[0], padded[0] - size[0] - before[0]), value=-1.0)
            prob = self.network(x).float().softmax(1)[:, :, before[0]:before[0] + size[0], before[1]:before[1] + size[1]]
            if size != shape:
                prob = F.interpolate(prob, size=shape, mode="bilinear", align_corners=False)
            out.append(prob.argmax(1).to(torch.uint8).cpu().numpy())
        return np.moveaxis(np.concatenate(out, axis=0), 0, self.slice_axis)

    def __call__(self, volume: Volume) -> Volume:
        """Label map of ``volume`` on the same grid (float32 array holding the integer labels)."""
        array, spacing = volume.array, tuple(float(s) for s in volume.spacing)
        stored, wanted = io_orientation(volume.affine), axcodes2ornt(("R", "A", "S"))
        to_ras = ornt_transform(stored, wanted)
        array = apply_orientation(array, to_ras)
        spacing = tuple(spacing[int(axis)] for axis in to_ras[:, 0].argsort())  # spacing of the RAS-ordered axes
        labels = self.segment_array(array, spacing)
        labels = apply_orientation(labels, ornt_transform(wanted, stored))
        return Volume(array=labels.astype(np.float32), affine=volume.affine.copy(), path=None, format=volume.format)
