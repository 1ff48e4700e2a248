"""Tests for medgen_core.transforms.degradation: the grid-centred convention, with real numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter

from medgen_core.transforms.degradation import (
    DEGRADATIONS,
    RandomDegradation,
    crop_to_multiple,
    degradation_matrix,
    degrade,
)



def _centre(k: np.ndarray | int, scale: int) -> np.ndarray | float:
    return k * scale + (scale - 1) / 2.0


@pytest.mark.parametrize("scale", [2, 4])
@pytest.mark.parametrize("kind", ["gaussian", "block"])
def test_linear_ramp_lands_on_centred_positions(scale: int, kind: str) -> None:
    n = 64
    ramp = torch.arange(n, dtype=torch.float64)
    lr = degrade(ramp, scale, kind, axes=(0,))
    assert lr.shape == (n // scale,)
    k = np.arange(n // scale)
    # the Gaussian kernel reaches 4 sigma + 0.5 = 2 * scale + 0.5 voxels: stay that far from the borders
    margin = 2 * scale + 0.5
    interior = (_centre(k, scale) - margin >= 0) & (_centre(k, scale) + margin <= n - 1)
    assert interior.sum() >= 4
    np.testing.assert_allclose(lr.numpy()[interior], _centre(k[interior], scale), atol=1e-9)
    if kind == "block":  # block averaging has no border effect at all
        np.testing.assert_allclose(lr.numpy(), _centre(k, scale), atol=1e-9)
    else:  # at the borders the renormalised kernel is one-sided, so the value is pulled inwards
        assert lr[0].item() > _centre(0, scale)
        assert lr[-1].item() < _centre(n // scale - 1, scale)


@pytest.mark.parametrize("scale", [2, 4])
def test_ramp_along_each_axis_of_a_batch(scale: int) -> None:
    """The default axes (-2, -1) of a (B, C, H, W) tensor both follow the convention; float32 kept."""
    h, w = 32, 48
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    hr = torch.stack([yy, 10.0 * xx])[None]  # (1, 2, H, W)
    lr = degrade(hr, scale, "block")
    assert lr.shape == (1, 2, h // scale, w // scale) and lr.dtype == torch.float32
    ky = torch.arange(h // scale, dtype=torch.float32)[:, None].expand(-1, w // scale)
    kx = torch.arange(w // scale, dtype=torch.float32)[None, :].expand(h // scale, -1)
    torch.testing.assert_close(lr[0, 0], ky * scale + (scale - 1) / 2, atol=1e-5, rtol=0)
    torch.testing.assert_close(lr[0, 1], 10.0 * (kx * scale + (scale - 1) / 2), atol=1e-4, rtol=0)


@pytest.mark.parametrize("scale", [2, 4])
@pytest.mark.parametrize("freq", [1, 3])
def test_kspace_truncation_of_low_frequency_cosine(scale: int, freq: int) -> None:
    n = 64
    i = torch.arange(n, dtype=torch.float64)
    signal = torch.cos(2 * math.pi * freq * i / n + 0.3)
    lr = degrade(signal, scale, "kspace", axes=(0,))
    k = np.arange(n // scale)
    expected = np.cos(2 * np.pi * freq * _centre(k, scale) / n + 0.3)
    np.testing.assert_allclose(lr.numpy(), expected, atol=1e-6)
    # the naive (uncentred) sampling k * scale is clearly different for scale > 1
    naive = np.cos(2 * np.pi * freq * (k * scale) / n + 0.3)
    assert np.max(np.abs(lr.numpy() - naive)) > 1e-2


def test_kspace_removes_frequencies_above_the_lr_nyquist() -> None:
    n, scale = 64, 4
    i = torch.arange(n, dtype=torch.float64)
    low = torch.cos(2 * math.pi * 2 * i / n)
    high = 0.7 * torch.cos(2 * math.pi * 12 * i / n)  # 12 > n_lr / 2 = 8: must vanish
    lr = degrade(low + high, scale, "kspace", axes=(0,))
    expected = np.cos(2 * np.pi * 2 * _centre(np.arange(n // scale), scale) / n)
    np.testing.assert_allclose(lr.numpy(), expected, atol=1e-6)


def _smooth_image(n: int, seed: int, sigma: float = 2.5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = gaussian_filter(rng.normal(size=(n, n)), sigma, mode="wrap")
    return (img - img.min()) / (img.max() - img.min())


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((a - b) ** 2)))


def test_centring_matters_for_bicubic() -> None:
    """Bicubic (align_corners=False) assumes the centred grid: a half-voxel shift costs PSNR."""
    n, scale, crop = 64, 2, 8
    hr = _smooth_image(n, seed=1)
    hr_t = torch.from_numpy(hr)[None, None]
    centred = degrade(hr_t, scale, "gaussian")
    # the same blur, decimated at k * scale: the LR grid shifted by half an HR voxel ((scale - 1) / 2)
    shifted = torch.from_numpy(gaussian_filter(hr, 0.5 * scale, mode="nearest", truncate=4.0)[::scale, ::scale].copy())[None, None]
    assert shifted.shape == centred.shape

    def up(lr: torch.Tensor) -> np.ndarray:
        return F.interpolate(lr, scale_factor=float(scale), mode="bicubic", align_corners=False)[0, 0].numpy()

    inner = (slice(crop, n - crop),) * 2
    psnr_centred = _psnr(up(centred)[inner], hr[inner])
    psnr_shifted = _psnr(up(shifted)[inner], hr[inner])
    assert psnr_centred > psnr_shifted + 3.0, (psnr_centred, psnr_shifted)
    # and the centred LR itself equals the shifted construction evaluated half a voxel later
    half_shift = gaussian_filter(
        np.fft.ifft2(np.fft.fft2(hr) * np.exp(2j * np.pi * 0.5 * (np.fft.fftfreq(n)[:, None] + np.fft.fftfreq(n)[None, :]))).real,
        0.5 * scale,
        mode="wrap",
        truncate=4.0,
    )[::scale, ::scale]
    np.testing.assert_allclose(centred[0, 0].numpy()[4:-4, 4:-4], half_shift[4:-4, 4:-4], atol=2e-3)


@pytest.mark.parametrize("scale", [2, 4])
def test_mean_preserved(scale: int) -> None:
    hr = torch.from_numpy(_smooth_image(64, seed=2))
    mean = hr.mean().item()
    assert degrade(hr, scale, "block").mean().item() == pytest.approx(mean, abs=1e-12)
    assert degrade(hr, scale, "kspace").mean().item() == pytest.approx(mean, abs=1e-12)
    # Gaussian: interior weights sum to one, borders are renormalised: the mean moves only slightly
    assert degrade(hr, scale, "gaussian").mean().item() == pytest.approx(mean, abs=5e-3)
    # a constant image stays exactly constant for every kind (borders keep their brightness)
    const = torch.full((32, 32), 0.37, dtype=torch.float64)
    for kind in DEGRADATIONS:
        torch.testing.assert_close(degrade(const, scale, kind), torch.full((32 // scale, 32 // scale), 0.37, dtype=torch.float64))


def test_degradation_matrix_rows_sum_to_one_and_are_centred() -> None:
    for kind in ("gaussian", "block"):
        d = degradation_matrix(24, 4, kind)
        assert d.shape == (6, 24)
        np.testing.assert_allclose(d.sum(axis=1), 1.0, atol=1e-12)
        # centre of mass of interior rows is k * scale + 1.5
        com = d @ np.arange(24.0)
        np.testing.assert_allclose(com[2:4], [9.5, 13.5], atol=1e-12)


def test_errors() -> None:
    x = torch.zeros(1, 1, 30, 32)
    with pytest.raises(ValueError, match="not a multiple of scale 4"):
        degrade(x, 4, "gaussian")  # 30 % 4 != 0
    with pytest.raises(ValueError, match="not a multiple"):
        degrade(x, 4, "kspace")
    with pytest.raises(ValueError, match="kind must be one of"):
        degrade(torch.zeros(8, 8), 2, "bicubic")
    with pytest.raises(ValueError, match="scale must be >= 1"):
        degrade(torch.zeros(8, 8), 0, "block")
    with pytest.raises(ValueError, match="not a multiple"):
        degradation_matrix(10, 4, "block")
    with pytest.raises(ValueError, match="kind must be"):
        degradation_matrix(8, 2, "lanczos")
    with pytest.raises(ValueError, match="sigma must be > 0"):
        degradation_matrix(8, 2, "gaussian", sigma=0.0)
    # crop_to_multiple makes it work
    cropped = crop_to_multiple(x, 4, axes=(-2, -1))
    assert cropped.shape == (1, 1, 28, 32)
    assert degrade(cropped, 4, "gaussian").shape == (1, 1, 7, 8)


def test_random_degradation_is_deterministic_for_a_seeded_generator() -> None:
    hr = torch.from_numpy(_smooth_image(32, seed=4)).float()[None]  # (1, 32, 32)

    def draws(seed: int) -> list[torch.Tensor]:
        rd = RandomDegradation(2, noise_prob=0.5, generator=torch.Generator().manual_seed(seed))
        return [rd(hr) for _ in range(12)]

    a, b, c = draws(7), draws(7), draws(8)
    for x, y in zip(a, b):
        assert x.shape == (1, 16, 16)
        torch.testing.assert_close(x, y, rtol=0, atol=0)
    assert any(not torch.equal(x, y) for x, y in zip(a, c))
    # the draws differ among themselves (several kinds / noise levels are used)
    assert len({round(float(x.sum()), 4) for x in a}) > 3


def test_random_degradation_single_kind_without_noise_matches_degrade() -> None:
    hr = torch.from_numpy(_smooth_image(32, seed=5)).float()[None]
    rd = RandomDegradation(4, kinds=("block",), weights=(1.0,), noise_prob=0.0, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(rd(hr), degrade(hr, 4, "block"))


def test_random_degradation_validates_kinds() -> None:
    with pytest.raises(ValueError, match="unknown kind 'bicubic'"):
        RandomDegradation(2, kinds=("gaussian", "bicubic"), weights=(0.5, 0.5))
    with pytest.raises(ValueError, match="2 kinds but 3 weights"):
        RandomDegradation(2, kinds=("gaussian", "block"))
