"""Classic segmentation augmentation: joint spatial + intensity changes of image/label pairs.

:class:`ClassicSegAugment` is nnU-Net-style augmentation built from MONAI dictionary transforms, applied per
sample to a batch: random affine (rotation, zoom, shift; bilinear image, nearest label), then on the image only
gamma/contrast, brightness (scale), Gaussian smoothing and Gaussian noise. :func:`intensity_jitter` is the
differentiable counterpart used on generated images (GenSeg keeps the graph to the generator).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["ClassicSegAugment", "SegAugmentParams", "intensity_jitter"]


@dataclass
class SegAugmentParams:
    """Ranges of :class:`ClassicSegAugment` (probabilities per sample).

    Args:
        rotation_deg: maximal absolute rotation.
        zoom: ``(low, high)`` isotropic zoom.
        translation: maximal shift as a fraction of the image size.
        gamma: ``(low, high)`` gamma of the contrast change (prob ``p_intensity``).
        scale: maximal relative brightness change (prob ``p_intensity``).
        smooth_sigma: ``(low, high)`` Gaussian blur sigma in pixels (prob ``p_blur``).
        noise_std: maximal Gaussian-noise SD on the [0, 1] image (prob ``p_noise``).
        p_intensity: probability of the gamma and of the brightness change (each).
        p_blur: probability of the Gaussian blur.
        p_noise: probability of the Gaussian noise.
    """

    rotation_deg: float = 15.0
    zoom: tuple[float, float] = (0.9, 1.1)
    translation: float = 0.1
    gamma: tuple[float, float] = (0.7, 1.5)
    scale: float = 0.2
    smooth_sigma: tuple[float, float] = (0.5, 1.0)
    noise_std: float = 0.05
    p_intensity: float = 0.5
    p_blur: float = 0.2
    p_noise: float = 0.3


class ClassicSegAugment:
    """Per-sample joint spatial + intensity augmentation of a batch (MONAI transforms, seeded).

    Call with ``image`` ``(B, 1, H, W)`` in [0, 1] and ``label`` ``(B, 1, H, W)`` integers; returns new tensors
    (image clipped to [0, 1], label the same dtype).
    """

    def __init__(self, params: SegAugmentParams | None = None, seed: int = 0) -> None:
        self.params = SegAugmentParams() if params is None else params
        self.rng = np.random.RandomState(seed)
        self._transform, self._shape = None, None

    def _build(self, spatial: tuple[int, ...]):
        """The MONAI chain for images of size ``spatial`` (the shift range is in pixels), drawing from ``self.rng``."""
        import math

        from monai.transforms import (
            Compose,
            RandAdjustContrastd,
            RandAffined,
            RandGaussianNoised,
            RandGaussianSmoothd,
            RandScaleIntensityd,
        )

        p = self.params
        transform = Compose([
            RandAffined(keys=("image", "label"), prob=1.0, rotate_range=math.radians(p.rotation_deg),
                        scale_range=(p.zoom[0] - 1, p.zoom[1] - 1), translate_range=[p.translation * s for s in spatial],
                        mode=("bilinear", "nearest"), padding_mode="zeros"),
            RandAdjustContrastd(keys="image", prob=p.p_intensity, gamma=p.gamma),
            RandScaleIntensityd(keys="image", prob=p.p_intensity, factors=p.scale),
            RandGaussianSmoothd(keys="image", prob=p.p_blur, sigma_x=p.smooth_sigma, sigma_y=p.smooth_sigma),
            RandGaussianNoised(keys="image", prob=p.p_noise, std=p.noise_std),
        ])
        for t in transform.transforms:
            t.set_random_state(state=self.rng)
        return transform

    def __call__(self, image: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        spatial = tuple(image.shape[2:])
        if self._shape != spatial:
            self._transform, self._shape = self._build(spatial), spatial
        images, labels = [], []
        for x, m in zip(image, label):
            out = self._transform({"image": x.float(), "label": m.float()})
            images.append(_plain(out["image"]).reshape(x.shape).float())
            labels.append(_plain(out["label"]).reshape(m.shape).round().to(label.dtype))
        return torch.stack(images).clamp(0.0, 1.0), torch.stack(labels)


def _plain(x) -> torch.Tensor:
    """A plain tensor (MONAI returns MetaTensors)."""
    return x.as_tensor() if hasattr(x, "as_tensor") else torch.as_tensor(x)


def intensity_jitter(image: torch.Tensor, generator: torch.Generator, gamma: tuple[float, float] = (0.7, 1.5),
                     scale: float = 0.2, noise_std: float = 0.05) -> torch.Tensor:
    """Differentiable per-sample gamma, brightness and Gaussian noise on ``(B, 1, *S)`` images in [-1, 1].

    Same kinds of change as :class:`ClassicSegAugment`'s intensity part, written with torch operations so that
    gradients flow back to a generator. Random numbers come from ``generator`` (CPU). Returns [-1, 1] images.
    """
    b, nd = image.shape[0], image.dim() - 2
    shape = (b, 1, *[1] * nd)
    u = torch.rand(3, *shape, generator=generator)
    g = (gamma[0] + (gamma[1] - gamma[0]) * u[0]).to(image.device)
    s = (1.0 + scale * (2 * u[1] - 1)).to(image.device)
    sd = (noise_std * u[2]).to(image.device)
    noise = torch.randn(image.shape, generator=generator).to(image.device)
    x01 = ((image + 1) / 2).clamp_min(1e-6) ** g * s + sd * noise
    return x01.clamp(0.0, 1.0) * 2 - 1
