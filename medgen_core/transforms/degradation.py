"""Resolution degradations for super-resolution, on a grid-centred sampling.

Convention (the same as ``torch.nn.functional.interpolate(align_corners=False)`` and as
:func:`medgen_core.inference.geometry.upscaled_affine`): low-resolution voxel ``k`` is centred at
high-resolution index coordinate ``k * scale + (scale - 1) / 2``. A half-voxel error here costs
bicubic about 3 dB and makes every learned model look better than it is, so tests check it.

Three degradations, each separable along the chosen axes (high-resolution size must be a multiple of
``scale`` along them; use :func:`crop_to_multiple`):

* ``gaussian``: blur with sigma = ``0.5 * scale`` high-resolution voxels (unless given), then decimate.
* ``block``: average each ``scale``-voxel block (partial volume: a thicker acquisition voxel).
* ``kspace``: keep the central ``1/scale`` of the spectrum (how MR is acquired at lower resolution).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

__all__ = [
    "DEGRADATIONS",
    "crop_to_multiple",
    "degradation_matrix",
    "degrade",
    "RandomDegradation",
]

DEGRADATIONS = ("gaussian", "block", "kspace")


def crop_to_multiple(x: torch.Tensor, scale: int, axes: Sequence[int]) -> torch.Tensor:
    """Crop ``x`` at the end of each axis in ``axes`` so its size is a multiple of ``scale``."""
    slices = [slice(None)] * x.dim()
    for ax in axes:
        n = x.shape[ax]
        slices[ax] = slice(0, n - n % scale)
    return x[tuple(slices)]


def degradation_matrix(n_hr: int, scale: int, kind: str, sigma: float | None = None) -> np.ndarray:
    """Matrix ``D`` of shape ``(n_hr // scale, n_hr)`` with ``lr = D @ hr`` along one axis (gaussian or block).

    Gaussian weights are centred on ``k * scale + (scale - 1) / 2`` and renormalised where the kernel
    leaves the image, so borders keep their brightness.
    """
    if n_hr % scale:
        raise ValueError(f"degradation_matrix: size {n_hr} is not a multiple of scale {scale}.")
    n_lr = n_hr // scale
    d = np.zeros((n_lr, n_hr), dtype=np.float64)
    if kind == "block":
        for k in range(n_lr):
            d[k, k * scale : (k + 1) * scale] = 1.0 / scale
        return d
    if kind != "gaussian":
        raise ValueError(f"degradation_matrix: kind must be 'gaussian' or 'block', got {kind!r}.")
    sigma = 0.5 * scale if sigma is None else float(sigma)
    if sigma <= 0:
        raise ValueError(f"degradation_matrix: sigma must be > 0, got {sigma}.")
    idx = np.arange(n_hr, dtype=np.float64)
    for k in range(n_lr):
        centre = k * scale + (scale - 1) / 2.0
        w = np.exp(-0.5 * ((idx - centre) / sigma) ** 2)
        w[np.abs(idx - centre) > 4.0 * sigma + 0.5] = 0.0
        d[k] = w / w.sum()
    return d


def _kspace_truncate_axis(x: torch.Tensor, scale: int, axis: int) -> torch.Tensor:
    """Keep the central ``n / scale`` frequencies along ``axis``, sampled at centred positions."""
    n_hr = x.shape[axis]
    n_lr = n_hr // scale
    spectrum = torch.fft.fft(x.to(torch.float64), dim=axis)
    freqs = torch.round(torch.fft.fftfreq(n_hr, d=1.0, dtype=torch.float64) * n_hr)  # signed integer frequencies
    # shift by (scale-1)/2 high-resolution voxels so LR sample k lands on k*scale + (scale-1)/2
    delta = (scale - 1) / 2.0
    phase = torch.exp(2j * math.pi * freqs * delta / n_hr)
    shape = [1] * x.dim()
    shape[axis] = n_hr
    spectrum = spectrum * phase.reshape(shape)
    # the LR grid's integer frequencies in FFT order (0, 1, ..., -2, -1), as indices into the HR spectrum
    keep = torch.cat([torch.arange(0, (n_lr + 1) // 2), torch.arange(-(n_lr // 2), 0)])
    index = torch.remainder(keep, n_hr)
    truncated = torch.index_select(spectrum, axis, index.to(spectrum.device))
    lr = torch.fft.ifft(truncated, dim=axis).real * (n_lr / n_hr)
    return lr.to(x.dtype)


def degrade(
    hr: torch.Tensor, scale: int, kind: str, axes: Sequence[int] = (-2, -1), sigma: float | None = None
) -> torch.Tensor:
    """Degrade ``hr`` to low resolution along ``axes`` (each a multiple of ``scale`` long).

    Args:
        hr: tensor of any shape, e.g. ``(B, C, H, W)`` or ``(X, Y, Z)``.
        scale: integer factor >= 1.
        kind: ``"gaussian"``, ``"block"`` or ``"kspace"``.
        axes: axes to degrade. Defaults to the last two (in-plane for ``(B, C, H, W)``).
        sigma: Gaussian width in high-resolution voxels. Defaults to ``0.5 * scale``.

    Returns:
        Tensor with each axis in ``axes`` divided by ``scale``; same dtype.
    """
    if kind not in DEGRADATIONS:
        raise ValueError(f"degrade: kind must be one of {DEGRADATIONS}, got {kind!r}.")
    if scale < 1:
        raise ValueError(f"degrade: scale must be >= 1, got {scale}.")
    out = hr
    for ax in axes:
        ax = ax % hr.dim()
        if out.shape[ax] % scale:
            raise ValueError(f"degrade: size {out.shape[ax]} along axis {ax} is not a multiple of scale {scale}; crop first.")
        if scale == 1:
            continue
        if kind == "kspace":
            out = _kspace_truncate_axis(out, scale, ax)
            continue
        d = torch.as_tensor(degradation_matrix(out.shape[ax], scale, kind, sigma), dtype=out.dtype, device=out.device)
        out = torch.movedim(torch.tensordot(out, d, dims=([ax], [1])), -1, ax)
    return out


@dataclass
class RandomDegradation:
    """A randomised mix of degradations for training models that must cope with an unknown scanner.

    Each call picks a kind by ``weights``; Gaussian widths are drawn from ``sigma_range`` (times
    ``scale``); with probability ``noise_prob`` Gaussian noise of standard deviation drawn from
    ``noise_range`` (relative to a [0, 1] image) is added to the low-resolution image.
    """

    scale: int
    kinds: tuple[str, ...] = DEGRADATIONS
    weights: tuple[float, ...] = (0.4, 0.3, 0.3)
    sigma_range: tuple[float, float] = (0.35, 0.7)
    noise_prob: float = 0.5
    noise_range: tuple[float, float] = (0.0, 0.02)
    generator: torch.Generator = field(default_factory=torch.Generator)

    def __post_init__(self) -> None:
        if len(self.kinds) != len(self.weights):
            raise ValueError(f"RandomDegradation: {len(self.kinds)} kinds but {len(self.weights)} weights.")
        for k in self.kinds:
            if k not in DEGRADATIONS:
                raise ValueError(f"RandomDegradation: unknown kind {k!r}; expected one of {DEGRADATIONS}.")

    def __call__(self, hr: torch.Tensor, axes: Sequence[int] = (-2, -1)) -> torch.Tensor:
        """Degrade ``hr`` (``(C, H, W)`` or ``(B, C, H, W)``; one draw for the whole tensor)."""
        w = torch.tensor(self.weights, dtype=torch.float64)
        kind = self.kinds[int(torch.multinomial(w, 1, generator=self.generator))]
        u = float(torch.rand((), generator=self.generator))
        sigma = self.scale * (self.sigma_range[0] + u * (self.sigma_range[1] - self.sigma_range[0]))
        lr = degrade(hr, self.scale, kind, axes, sigma=sigma if kind == "gaussian" else None)
        if float(torch.rand((), generator=self.generator)) < self.noise_prob:
            u = float(torch.rand((), generator=self.generator))
            std = self.noise_range[0] + u * (self.noise_range[1] - self.noise_range[0])
            lr = lr + std * torch.randn(lr.shape, generator=self.generator, dtype=lr.dtype)
        return lr
