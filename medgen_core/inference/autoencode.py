"""Whole-volume reconstruction with a 2D class-conditional autoencoder, axial slice by slice.

The volume is permuted/flipped to RAS (no resampling), scaled by its 99.9th percentile to [0, 1], and
every axial slice is centre-padded (or cropped) to the training field of view (``field_mm``, e.g. 256 mm
for 64 pixels of 4 mm) at its own pixel spacing, resized to the network's ``image_size``, encoded and
decoded with its class, resized back and un-padded; the output lies on the input's grid in the input's
units. With ``field_mm=None`` the slice is padded to a square of its larger side instead. The class of each slice is either fixed (``class_name``) or, with ``class_name="auto"``, its
slice-position quarter within the volume (slice ``i`` of ``Z`` gets ``floor(K * i / Z)``; meaningful
when the volume covers the brain from bottom to top).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform

from medgen_core.errors import ImageReadError
from medgen_core.io import Volume
from medgen_core.utils.progress import progress

__all__ = ["VolumeAutoencoder"]


class VolumeAutoencoder:
    """Reconstruct a 3D :class:`~medgen_core.io.Volume` through a 2D conditional autoencoder.

    Args:
        network: ``forward(image (B, 1, S, S), class_labels (B,)) -> (B, 1, S, S)`` in [0, 1], with an
            ``image_size`` attribute (``S``).
        class_names: the model's class names.
        class_name: one of ``class_names``, ``"auto"`` (slice-position quarter) or ``""`` (null class).
        batch_size: slices per forward pass.
        device: torch device.
        progress: show a progress bar.
        field_mm: in-plane field of view of the training slices in mm (``image_size`` x pixel size), or None.
    """

    def __init__(self, network: nn.Module, class_names: Sequence[str], class_name: str = "auto", batch_size: int = 16,
                 device: str | torch.device = "cpu", progress: bool = True, field_mm: float | None = None) -> None:
        names = [str(c) for c in class_names]
        if class_name not in ("auto", "", *names):
            raise ValueError(f"VolumeAutoencoder: class_name must be 'auto', '' (null class) or one of {names}, got {class_name!r}.")
        self.device = torch.device(device)
        self.network = network.to(self.device).eval()
        self.size = int(getattr(network, "image_size"))
        self.class_names, self.class_name, self.batch_size, self.progress = names, class_name, int(batch_size), progress
        if field_mm is not None and not float(field_mm) > 0:
            raise ValueError(f"VolumeAutoencoder: field_mm must be > 0 or None, got {field_mm}.")
        self.field_mm = None if field_mm is None else float(field_mm)

    def slice_classes(self, depth: int) -> np.ndarray:
        """Class id per axial slice ``(depth,)`` (``K`` = null class for ``class_name=""``)."""
        k = len(self.class_names)
        if self.class_name == "auto":
            return np.minimum(np.arange(depth) * k // max(depth, 1), k - 1)
        return np.full(depth, self.class_names.index(self.class_name) if self.class_name else k)

    def _field(self, shape: tuple[int, int], spacing: tuple[float, float]) -> tuple[int, int]:
        """Pixels ``(FX, FY)`` of the padded/cropped field for a slice of ``shape`` at ``spacing`` (mm)."""
        if self.field_mm is None:
            side = max(shape)
            return side, side
        return max(1, round(self.field_mm / spacing[0])), max(1, round(self.field_mm / spacing[1]))

    @torch.no_grad()
    def reconstruct_array(self, array: np.ndarray, spacing: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
        """``(X, Y, Z)`` in RAS order with in-plane ``spacing`` (mm) -> reconstruction ``(X, Y, Z)`` float32 in the input's units."""
        array = np.asarray(array, dtype=np.float32)
        if not np.isfinite(array).all():
            raise ImageReadError("the input volume holds NaN or Inf values; the autoencoder needs finite intensities.")
        scale = float(np.percentile(array, 99.9))
        scale = scale if scale > 0 else max(float(array.max()), 1e-8)
        x, y, depth = array.shape
        fx, fy = self._field((x, y), spacing)
        ox, oy = (fx - x) // 2, (fy - y) // 2  # negative: the slice is cropped to the field
        sx, sy, dx, dy = max(-ox, 0), max(-oy, 0), max(ox, 0), max(oy, 0)
        nx, ny = min(x - sx, fx - dx), min(y - sy, fy - dy)
        field = np.zeros((depth, fx, fy), dtype=np.float32)
        field[:, dx : dx + nx, dy : dy + ny] = np.moveaxis(np.clip(array / scale, 0.0, 1.0), 2, 0)[:, sx : sx + nx, sy : sy + ny]
        classes = torch.from_numpy(self.slice_classes(depth)).long()
        out = np.zeros((depth, x, y), dtype=np.float32)  # pixels outside the field stay 0
        for start in progress(range(0, depth, self.batch_size), desc="autoencode slices", unit="batch", disable=not self.progress):
            batch = torch.from_numpy(field[start : start + self.batch_size])[:, None].to(self.device)
            small = F.interpolate(batch, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=max(fx, fy) > self.size)
            recon = self.network(small, classes[start : start + self.batch_size].to(self.device))
            big = F.interpolate(recon.float(), size=(fx, fy), mode="bilinear", align_corners=False)
            out[start : start + batch.shape[0], sx : sx + nx, sy : sy + ny] = big[:, 0, dx : dx + nx, dy : dy + ny].cpu().numpy()
        return (np.moveaxis(out, 0, 2) * scale).astype(np.float32)

    def __call__(self, volume: Volume) -> Volume:
        """Reconstructed copy of ``volume`` on the same grid (shape and affine)."""
        stored, wanted = io_orientation(volume.affine), axcodes2ornt(("R", "A", "S"))
        array = apply_orientation(volume.array, ornt_transform(stored, wanted))
        ras_spacing = [1.0, 1.0, 1.0]
        for axis, (ras_axis, _) in enumerate(stored):
            ras_spacing[int(ras_axis)] = float(volume.spacing[axis])
        out = apply_orientation(self.reconstruct_array(array, (ras_spacing[0], ras_spacing[1])), ornt_transform(wanted, stored))
        return Volume(array=np.ascontiguousarray(out), affine=volume.affine.copy(), path=None, format=volume.format)
