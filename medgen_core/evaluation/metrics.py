"""PSNR and SSIM restricted to a foreground mask (e.g. the brain), on 2D slices ``(N, 1, H, W)``.

SSIM uses MONAI's ``compute_ssim_and_cs`` (Gaussian window 11, sigma 1.5, k1=0.01, k2=0.03); its
per-pixel map (valid region) is averaged over the mask's pixels.
"""

from __future__ import annotations

import torch
from monai.metrics.regression import compute_ssim_and_cs

__all__ = ["masked_psnr", "masked_ssim"]


def masked_psnr(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None, data_range: float = 1.0) -> float:
    """``10 log10(data_range^2 / MSE)`` over the voxels where ``mask`` is true (all voxels when None)."""
    if pred.shape != target.shape:
        raise ValueError(f"masked_psnr: shapes differ, {tuple(pred.shape)} vs {tuple(target.shape)}.")
    diff = (pred.double() - target.double()) ** 2
    mse = diff[mask.bool()].mean() if mask is not None else diff.mean()
    return float(10.0 * torch.log10(torch.tensor(data_range**2, dtype=torch.float64) / mse.clamp_min(1e-20)))


def masked_ssim(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None, data_range: float = 1.0, kernel_size: int = 11) -> float:
    """Mean SSIM over mask pixels; inputs ``(N, 1, H, W)``, mask ``(N, 1, H, W)`` (cropped to the valid map)."""
    if pred.dim() != 4:
        raise ValueError(f"masked_ssim: expects (N, 1, H, W), got {tuple(pred.shape)}.")
    ssim_map, _ = compute_ssim_and_cs(
        pred.float(), target.float(), spatial_dims=2, kernel_size=[kernel_size] * 2, kernel_sigma=[1.5, 1.5], data_range=data_range
    )
    if mask is None:
        return float(ssim_map.mean())
    h = kernel_size // 2
    m = mask.bool()[..., h : h + ssim_map.shape[-2], h : h + ssim_map.shape[-1]]
    return float(ssim_map[m].mean())
