"""A controllable degradation family for restoration experiments: blur, noise, downsampling, stripes.

Each kind takes a ``level`` in [0, 1]: level 0 is the identity and the damage grows with the level
(up to the ``max_*`` settings of :class:`CorruptionSettings` at level 1):

* ``"blur"``: Gaussian blur (MONAI :class:`~monai.transforms.GaussianSmooth`), ``sigma = level * max_blur_sigma`` pixels;
* ``"noise"``: additive Gaussian noise, ``std = level * max_noise_std``;
* ``"downsample"``: area down-sampling by ``1 + level * (max_downsample - 1)`` and bilinear up-sampling back;
* ``"stripes"``: additive sinusoidal stripes (random orientation and phase), amplitude ``level * max_stripe_amplitude``.

Randomness (noise, stripe phase/orientation) comes from a ``torch.Generator``, so a seed gives the same
corruption every time. :class:`Corrupt` is the array transform (one image ``(C, H, W)`` or a batch
``(B, C, H, W)``), :class:`Corruptd` its dictionary version (MONAI ``Randomizable``).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.transforms import GaussianSmooth, MapTransform, Randomizable, Transform

__all__ = ["CORRUPTION_KINDS", "Corrupt", "Corruptd", "CorruptionSettings", "corrupt"]

#: The degradation kinds, in the order figures show them.
CORRUPTION_KINDS = ("blur", "noise", "downsample", "stripes")


@dataclass(frozen=True)
class CorruptionSettings:
    """Strength of each kind at level 1 (images in [0, 1])."""

    max_blur_sigma: float = 2.5
    max_noise_std: float = 0.2
    max_downsample: float = 4.0
    max_stripe_amplitude: float = 0.25
    stripe_period: float = 6.0

    def __post_init__(self) -> None:
        if min(self.max_blur_sigma, self.max_noise_std, self.max_stripe_amplitude) < 0 or self.max_downsample < 1 or self.stripe_period <= 0:
            raise ValueError(f"CorruptionSettings: strengths must be >= 0, max_downsample >= 1 and stripe_period > 0, got {self}.")


def _check(kind: str, level: float) -> None:
    if kind not in CORRUPTION_KINDS:
        raise ValueError(f"corrupt: unknown kind {kind!r}; expected one of {CORRUPTION_KINDS}.")
    if not 0.0 <= float(level) <= 1.0:
        raise ValueError(f"corrupt: level must be in [0, 1], got {level}.")


def corrupt(images: torch.Tensor, kind: str, level: float, generator: torch.Generator | None = None,
            settings: CorruptionSettings = CorruptionSettings()) -> torch.Tensor:
    """Degrade ``images (B, C, H, W)`` (or one ``(C, H, W)``) by ``kind`` at ``level``; same shape, not clipped.

    Args:
        images: float images, nominally in [0, 1].
        kind: one of :data:`CORRUPTION_KINDS`.
        level: in [0, 1]; 0 returns an unchanged copy.
        generator: random source for ``noise`` and ``stripes`` (CPU generator; default: torch's global RNG).
        settings: strengths at level 1.
    """
    _check(kind, level)
    single = images.dim() == 3
    x = images[None] if single else images
    if x.dim() != 4:
        raise ValueError(f"corrupt: images must be (C, H, W) or (B, C, H, W), got {tuple(images.shape)}.")
    x = x.float()
    level = float(level)
    if level == 0.0:
        out = x.clone()
    elif kind == "blur":
        sigma = level * settings.max_blur_sigma
        smooth = GaussianSmooth(sigma=sigma)
        out = torch.stack([torch.as_tensor(smooth(img)) for img in x]).float()
    elif kind == "noise":
        noise = torch.randn(x.shape, generator=generator).to(x.device)
        out = x + level * settings.max_noise_std * noise
    elif kind == "downsample":
        factor = 1.0 + level * (settings.max_downsample - 1.0)
        small = [max(1, round(n / factor)) for n in x.shape[-2:]]
        out = F.interpolate(F.interpolate(x, size=small, mode="area"), size=x.shape[-2:], mode="bilinear", align_corners=False)
    else:  # stripes
        h, w = x.shape[-2:]
        angle = torch.rand(x.shape[0], generator=generator) * math.pi
        phase = torch.rand(x.shape[0], generator=generator) * 2 * math.pi
        yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
        proj = torch.cos(angle)[:, None, None] * yy + torch.sin(angle)[:, None, None] * xx
        pattern = torch.sin(2 * math.pi * proj / settings.stripe_period + phase[:, None, None])
        out = x + level * settings.max_stripe_amplitude * pattern[:, None].to(x.device)
    return out[0] if single else out


class Corrupt(Transform):
    """Array transform: ``corrupt(img, kind, level, generator)`` (see :func:`corrupt`).

    Args:
        kind: one of :data:`CORRUPTION_KINDS`.
        level: in [0, 1].
        seed: seed of the transform's own generator (the same corruption on every call with a fresh transform).
        settings: strengths at level 1.
    """

    def __init__(self, kind: str, level: float, seed: int = 0, settings: CorruptionSettings = CorruptionSettings()) -> None:
        _check(kind, level)
        self.kind, self.level, self.settings = kind, float(level), settings
        self.generator = torch.Generator().manual_seed(int(seed))

    def __call__(self, img: Any) -> torch.Tensor:
        return corrupt(torch.as_tensor(img), self.kind, self.level, self.generator, self.settings)


class Corruptd(Randomizable, MapTransform):
    """Dictionary transform: writes ``corrupt(d[key])`` to ``d[output_key]`` (default: in place).

    With ``level=None`` each call draws a level uniformly from ``level_range`` and a kind from
    ``kinds`` (MONAI's ``set_random_state`` seeds the draw and the noise).

    Args:
        keys: image keys.
        kinds: kinds to draw from (one kind = fixed kind).
        level: fixed level, or None to draw.
        level_range: ``(lo, hi)`` for drawn levels.
        output_key: where the corrupted image goes (one key only); None = replace the input.
        settings: strengths at level 1.
    """

    def __init__(self, keys: KeysCollection, kinds: tuple[str, ...] = CORRUPTION_KINDS, level: float | None = None,
                 level_range: tuple[float, float] = (0.0, 1.0), output_key: str | None = None,
                 settings: CorruptionSettings = CorruptionSettings()) -> None:
        MapTransform.__init__(self, keys)
        for k in kinds:
            _check(k, 0.0 if level is None else level)
        if output_key is not None and len(self.keys) != 1:
            raise ValueError(f"Corruptd: output_key needs exactly one key, got {self.keys}.")
        self.kinds, self.level, self.level_range, self.output_key, self.settings = tuple(kinds), level, level_range, output_key, settings
        self._kind, self._level = self.kinds[0], 0.0 if level is None else float(level)

    def randomize(self, data: Any = None) -> None:
        self._kind = self.kinds[int(self.R.randint(len(self.kinds)))]
        self._level = float(self.R.uniform(*self.level_range)) if self.level is None else float(self.level)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize()
        generator = torch.Generator().manual_seed(int(self.R.randint(2**31 - 1)))
        for key in self.key_iterator(d):
            d[self.output_key or key] = corrupt(torch.as_tensor(d[key]), self._kind, self._level, generator, self.settings)
        return d
