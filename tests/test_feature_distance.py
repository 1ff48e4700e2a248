"""Frechet distance on fixed random features: zero for identical sets, ordered by how different sets are."""

from __future__ import annotations

import pytest
import torch

from medgen_core.evaluation.feature_distance import RandomFeatures, feature_distance


def _blobs(n: int, seed: int, contrast: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 64), torch.linspace(-1, 1, 64), indexing="ij")
    centres = torch.rand(n, 2, generator=g) * 0.6 - 0.3
    r2 = (xx[None] - centres[:, 0, None, None]) ** 2 + (yy[None] - centres[:, 1, None, None]) ** 2
    return (contrast * torch.exp(-r2 / 0.2))[:, None] + 0.02 * torch.randn(n, 1, 64, 64, generator=g)


def test_features_are_fixed_by_the_seed_and_shaped_per_position() -> None:
    x = _blobs(3, 0)
    f1, f2, f3 = RandomFeatures(0)(x), RandomFeatures(0)(x), RandomFeatures(1)(x)
    assert f1.shape == (3 * 4 * 4, 64) and f1.dtype == torch.float64
    assert torch.equal(f1, f2) and not torch.allclose(f1, f3)


def test_distance_is_zero_for_identical_sets_and_grows_with_the_difference() -> None:
    real_a, real_b = _blobs(32, 1), _blobs(32, 2)
    assert feature_distance(real_a, real_a) == pytest.approx(0.0, abs=1e-6)
    same = feature_distance(real_b, real_a)
    dimmer = feature_distance(_blobs(32, 3, contrast=0.6), real_a)
    noise = feature_distance(torch.rand(32, 1, 64, 64, generator=torch.Generator().manual_seed(4)), real_a)
    assert 0 < same < dimmer < noise
