"""Frechet distance between two sets of 2D slices on features of a fixed, seeded random conv net.

Why a random network: it is independent of the models under test (a trained discriminator was optimised
jointly with the generator it would judge), reproducible offline from code alone (no downloaded ImageNet
weights) and deterministic. It measures low-level intensity and texture statistics, not perceptual realism:
compare a model only against baselines computed the same way (real vs real, identity, other versions).
"""

from __future__ import annotations

import torch
import torch.nn as nn
from monai.metrics import FIDMetric

__all__ = ["RandomFeatures", "feature_distance"]


class RandomFeatures(nn.Module):
    """Fixed feature extractor: 4 stride-2 3x3 convs (1->16->32->64->64, LeakyReLU 0.2), default PyTorch
    init under ``torch.manual_seed(seed)``; ``(B, 1, H, W)`` -> ``(B * H/16 * W/16, 64)`` float64 (one row per
    output position; 64 rows per 128x128 slice)."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            chans = [1, 16, 32, 64, 64]
            layers: list[nn.Module] = []
            for i in range(4):
                layers += [nn.Conv2d(chans[i], chans[i + 1], 3, stride=2, padding=1), nn.LeakyReLU(0.2)]
            self.net = nn.Sequential(*layers).eval()

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.net(x)
        return f.permute(0, 2, 3, 1).reshape(-1, f.shape[1]).double()


def feature_distance(x: torch.Tensor, reference: torch.Tensor, features: RandomFeatures | None = None) -> float:
    """Frechet distance (``monai.metrics.FIDMetric``) between the features of ``x`` and of ``reference``
    ``(N, 1, H, W)``, both standardised by the reference's per-dimension mean and std, so the number is in
    units of real-feature spread and comparable across feature dimensions."""
    features = features or RandomFeatures(seed=0)
    fx, fy = features(x.float()), features(reference.float())
    mu, sd = fy.mean(0), fy.std(0) + 1e-8
    return float(FIDMetric()((fx - mu) / sd, (fy - mu) / sd))
