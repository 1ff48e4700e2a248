"""Whole-volume image translation (Pix2Pix, CycleGAN) with a 2D generator slice by slice, or a 3D one.

The output lies on the input's grid (same shape and affine). The array is first permuted/flipped to the
closest RAS+ orientation (as MONAI's ``Orientationd(axcodes="RAS")`` does in training; no resampling), so
``slice_axis=2`` means axial slices whatever the file's storage order, and permuted back afterwards.
Intensities are mapped as in training:

* ``input_mode="intensity"``: ``[in_lo, in_hi]`` (default ``[0, 99.9th percentile of the input]``) ->
  [-1, 1], clipped; the generator's [-1, 1] output is mapped to ``out_range`` (default
  ``[0, 99.9th percentile of the input]``), so a translated scan keeps the input's units;
* ``input_mode="labels"``: integer labels ``0..num_classes-1`` -> one-hot channels; the output is
  mapped to ``out_range`` (default ``[0, 1]``).

Every slice (or the 3D volume) is padded to a multiple of ``size_multiple`` (``2**num_downs`` for
:class:`~medgen_core.networks.gan.Pix2PixUNet`, ``2**n_down`` for
:class:`~medgen_core.networks.gan.ResnetGenerator`) with background (label 0 / ``in_lo``), centred,
and cropped back afterwards. 3D generators run through MONAI's
:class:`~monai.inferers.SlidingWindowInferer` with Gaussian blending.

Example::

    translator = VolumeTranslator(Pix2PixUNet(2, 4, 1, num_downs=5, features=24), input_mode="labels", num_classes=4)
    t1 = translator(read_volume("tissue_labels.nii.gz"))   # same grid, values in [0, 1]
"""

from __future__ import annotations

import logging
from typing import Literal, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.inferers import SlidingWindowInferer
from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform

from medgen_core.errors import ImageReadError
from medgen_core.io import Volume
from medgen_core.utils.progress import progress

__all__ = ["VolumeTranslator", "network_size_multiple"]

logger = logging.getLogger(__name__)


def network_size_multiple(network: nn.Module) -> int:
    """The factor every spatial size must be divisible by: ``2**num_downs`` (Pix2Pix U-Net),
    ``2**n_down`` (ResNet generator), else 1."""
    for attr in ("num_downs", "n_down"):
        if isinstance(getattr(network, attr, None), int):
            return 2 ** int(getattr(network, attr))
    return 1


def _centred_pad(shape: Sequence[int], multiple: int, minimum: Sequence[int] | None = None) -> list[tuple[int, int]]:
    """``(before, after)`` per axis so that each size becomes a multiple of ``multiple`` (and >= ``minimum``)."""
    pads = []
    for i, n in enumerate(shape):
        target = max(n, minimum[i] if minimum is not None else 0)
        target = -(-target // multiple) * multiple
        before = (target - n) // 2
        pads.append((before, target - n - before))
    return pads


class VolumeTranslator:
    """Translate a 3D :class:`~medgen_core.io.Volume` with a 2D (slice by slice) or 3D generator.

    Args:
        network: generator ``(B, C_in, *S) -> (B, C_out=1, *S)`` with outputs in [-1, 1] (tanh).
        slice_axis: axis (after reorientation) the 2D generator's slices are taken along (2 = axial in RAS).
        batch_size: slices per forward pass (2D), windows per forward pass (3D).
        input_mode: ``"intensity"`` (one channel, scaled from ``in_range``) or ``"labels"`` (one-hot).
        num_classes: number of labels for ``input_mode="labels"`` (the network's input channels).
        in_range: input ``(lo, hi)`` mapped to [-1, 1]; None = ``(0, 99.9th percentile)``.
        out_range: ``(lo, hi)`` the [-1, 1] output is mapped to; None = ``(0, 99.9th percentile of
            the input)`` for intensities, ``(0, 1)`` for labels.
        size_multiple: spatial sizes are padded to a multiple of this; None = from the network.
        spatial_dims: 2 or 3; None = the network's ``spatial_dims`` attribute (default 2).
        roi_size: 3D sliding-window size (a multiple of ``size_multiple``).
        overlap: 3D sliding-window overlap.
        device: torch device.
        progress: show a progress bar (and JSON progress lines with ``MEDGEN_PROGRESS=json``).
        orientation: axis codes the array is permuted/flipped to before translation (training's
            orientation); None keeps the file's storage order.
    """

    def __init__(
        self,
        network: nn.Module,
        slice_axis: int = 2,
        batch_size: int = 8,
        input_mode: Literal["intensity", "labels"] = "intensity",
        num_classes: int = 1,
        in_range: Sequence[float] | None = None,
        out_range: Sequence[float] | None = None,
        size_multiple: int | None = None,
        spatial_dims: int | None = None,
        roi_size: int | Sequence[int] = 64,
        overlap: float = 0.25,
        device: str | torch.device = "cpu",
        progress: bool = True,
        orientation: str | None = "RAS",
    ) -> None:
        if input_mode not in ("intensity", "labels"):
            raise ValueError(f"VolumeTranslator: input_mode must be 'intensity' or 'labels', got {input_mode!r}.")
        if slice_axis not in (0, 1, 2):
            raise ValueError(f"VolumeTranslator: slice_axis must be 0, 1 or 2, got {slice_axis}.")
        if input_mode == "labels" and num_classes < 2:
            raise ValueError(f"VolumeTranslator: input_mode='labels' needs num_classes >= 2, got {num_classes}.")
        for name, rng in (("in_range", in_range), ("out_range", out_range)):
            if rng is not None and (len(rng) != 2 or not float(rng[1]) > float(rng[0])):
                raise ValueError(f"VolumeTranslator: {name} must be (lo, hi) with hi > lo, got {rng}.")
        self.spatial_dims = int(spatial_dims or getattr(network, "spatial_dims", 2))
        if self.spatial_dims not in (2, 3):
            raise ValueError(f"VolumeTranslator: spatial_dims must be 2 or 3, got {self.spatial_dims}.")
        self.multiple = int(size_multiple or network_size_multiple(network))
        roi = tuple(int(r) for r in (roi_size if isinstance(roi_size, Sequence) else [roi_size] * 3))
        if self.spatial_dims == 3 and any(r % self.multiple for r in roi):
            raise ValueError(f"VolumeTranslator: roi_size {roi} must be a multiple of {self.multiple} for this network.")
        self.device = torch.device(device)
        self.network = network.to(self.device).eval()
        self.slice_axis, self.batch_size, self.input_mode, self.num_classes = slice_axis, int(batch_size), input_mode, int(num_classes)
        self.in_range = None if in_range is None else (float(in_range[0]), float(in_range[1]))
        self.out_range = None if out_range is None else (float(out_range[0]), float(out_range[1]))
        self.progress, self.orientation = progress, orientation
        self.inferer = SlidingWindowInferer(roi_size=roi, sw_batch_size=self.batch_size, overlap=overlap, mode="gaussian")

    # -- intensity mapping ----------------------------------------------------------------------
    def _ranges(self, array: np.ndarray) -> tuple[tuple[float, float], tuple[float, float]]:
        """``(in_range, out_range)`` for this input, filling the documented defaults."""
        if self.input_mode == "labels":
            return (0.0, 1.0), self.out_range or (0.0, 1.0)  # in_range is unused for labels
        if self.in_range is not None and self.out_range is not None:
            return self.in_range, self.out_range
        p999 = float(np.percentile(array, 99.9))
        p999 = p999 if p999 > 0 else max(float(array.max()), 1e-8)
        return self.in_range or (0.0, p999), self.out_range or (0.0, p999)

    def _check_labels(self, array: np.ndarray) -> np.ndarray:
        """Integer label map ``0..num_classes-1`` or a clear error naming what was found."""
        labels = np.rint(array)
        if not np.allclose(labels, array, atol=1e-3) or labels.min() < 0 or labels.max() >= self.num_classes:
            found = np.unique(array)
            shown = ", ".join(f"{v:g}" for v in found[:8]) + (", ..." if found.size > 8 else "")
            raise ImageReadError(
                f"the input is not a label map: this model expects integer labels 0..{self.num_classes - 1}, "
                f"but found {found.size} distinct values ({shown})."
            )
        return labels.astype(np.int64)

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, *S)`` prepared values -> network input ``(B, C, *S)`` in [-1, 1] (intensity) or one-hot."""
        if self.input_mode == "labels":
            return F.one_hot(x.long(), self.num_classes).movedim(-1, 1).float()
        return x.unsqueeze(1)

    # -- forward --------------------------------------------------------------------------------
    @torch.no_grad()
    def _run_2d(self, prepared: np.ndarray, background: float) -> np.ndarray:
        stack = np.moveaxis(prepared, self.slice_axis, 0)
        pads = _centred_pad(stack.shape[1:], self.multiple)
        padded = np.pad(stack, [(0, 0), *pads], constant_values=background)
        (a0, a1), (b0, b1) = pads
        out = []
        starts = range(0, padded.shape[0], self.batch_size)
        for start in progress(starts, desc="translate slices", unit="batch", disable=not self.progress):
            x = torch.from_numpy(np.ascontiguousarray(padded[start : start + self.batch_size])).to(self.device)
            y = self.network(self._encode(x))[:, 0]
            out.append(y[:, a0 : y.shape[1] - a1, b0 : y.shape[2] - b1].float().cpu().numpy())
        return np.moveaxis(np.concatenate(out, axis=0), 0, self.slice_axis)

    @torch.no_grad()
    def _run_3d(self, prepared: np.ndarray, background: float) -> np.ndarray:
        pads = _centred_pad(prepared.shape, self.multiple, minimum=self.inferer.roi_size)
        padded = np.pad(prepared, pads, constant_values=background)
        x = self._encode(torch.from_numpy(np.ascontiguousarray(padded))[None].to(self.device))
        y = self.inferer(x, self.network)[0, 0].float().cpu().numpy()
        return y[tuple(slice(b, y.shape[i] - a) for i, (b, a) in enumerate(pads))]

    def translate_array(self, array: np.ndarray) -> np.ndarray:
        """Translate ``array`` ``(X, Y, Z)``; returns ``(X, Y, Z)`` float32 in ``out_range``."""
        array = np.asarray(array, dtype=np.float32)
        in_range, out_range = self._ranges(array)
        if self.input_mode == "labels":
            prepared, background = self._check_labels(array), 0
        else:
            lo, hi = in_range
            prepared, background = np.clip((array - lo) / (hi - lo), 0.0, 1.0) * 2.0 - 1.0, -1.0
        y = self._run_2d(prepared, background) if self.spatial_dims == 2 else self._run_3d(prepared, background)
        lo, hi = out_range
        return ((np.clip(y, -1.0, 1.0) + 1.0) / 2.0 * (hi - lo) + lo).astype(np.float32)

    def __call__(self, volume: Volume) -> Volume:
        """Translated copy of ``volume`` on the same grid (shape and affine)."""
        array = volume.array
        if self.orientation:
            stored, wanted = io_orientation(volume.affine), axcodes2ornt(tuple(self.orientation))
            array = apply_orientation(array, ornt_transform(stored, wanted))
        out = self.translate_array(array)
        if self.orientation:
            out = apply_orientation(out, ornt_transform(wanted, stored))
        return Volume(array=out, affine=volume.affine.copy(), path=None, format=volume.format)
