"""Intensity augmentation that makes an MR model contrast-agnostic (T1-trained, used on T2/PD too).

:class:`RandomContrastAugment` acts on high-resolution training patches ``(B, 1, H, W)`` in [0, ~1.2]
before they are degraded, per sample: foreground contrast inversion (T1-like -> T2-like: CSF bright,
white matter dark), a random gamma, a random gain, and Gaussian noise on the *target* itself (real
high-resolution scans are noisy; a model trained only on clean targets learns to smooth noise away and
then loses PSNR against noisy references).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

__all__ = ["RandomContrastAugment"]


@dataclass
class RandomContrastAugment:
    """Per-sample random contrast changes; the background (values <= ``foreground_threshold``) stays 0.

    Args:
        invert_prob: chance to invert the foreground contrast (``max - x`` inside the foreground).
        gamma_range: range of the gamma exponent applied to ``x / max``.
        gain_range: range of a multiplicative gain.
        noise_prob: chance to add Gaussian noise to the patch (target included).
        noise_range: range of the noise standard deviation (relative to a [0, 1] image).
        foreground_threshold: intensity under which a voxel counts as background.
        generator: random generator (seed it for reproducibility).
    """

    invert_prob: float = 0.3
    gamma_range: tuple[float, float] = (0.7, 1.5)
    gain_range: tuple[float, float] = (0.8, 1.1)
    noise_prob: float = 0.3
    noise_range: tuple[float, float] = (0.0, 0.03)
    foreground_threshold: float = 0.05
    generator: torch.Generator = field(default_factory=torch.Generator)

    def _uniform(self, lo: float, hi: float) -> float:
        return lo + (hi - lo) * float(torch.rand((), generator=self.generator))

    def __call__(self, hr: torch.Tensor) -> torch.Tensor:
        """Augment ``hr`` ``(B, C, H, W)``; returns a new tensor."""
        out = []
        for x in hr:
            fg = x > self.foreground_threshold
            peak = float(x.max()) if float(x.max()) > 0 else 1.0
            y = x / peak
            if float(torch.rand((), generator=self.generator)) < self.invert_prob:
                y = torch.where(fg, (1.0 - y).clamp_min(0.0) + self.foreground_threshold, torch.zeros_like(y))
            y = y.clamp_min(0.0) ** self._uniform(*self.gamma_range)
            y = y * peak * self._uniform(*self.gain_range)
            if float(torch.rand((), generator=self.generator)) < self.noise_prob:
                y = y + self._uniform(*self.noise_range) * torch.randn(y.shape, generator=self.generator)
            out.append(y)
        return torch.stack(out)
