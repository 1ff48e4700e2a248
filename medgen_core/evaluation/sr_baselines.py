"""Super-resolution baselines and the held-out evaluation protocol.

* **bicubic**: ``F.interpolate(mode="bicubic", align_corners=False)``, on the same centred grid as the
  degradations.
* **fitted linear filter**: the best fixed ``k x k`` kernel applied after bicubic, fitted in closed
  form by least squares (bicubic patches -> high-resolution pixel) on the training slices. It is the
  best any linear, shift-invariant post-filter can do, so a learned model must beat it to show that it
  learned more than deblurring.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from medgen_core.evaluation.metrics import masked_psnr, masked_ssim
from medgen_core.transforms.degradation import crop_to_multiple, degrade

__all__ = ["bicubic", "fit_linear_filter", "apply_linear_filter", "evaluate_sr"]


def bicubic(lr: torch.Tensor, scale: int) -> torch.Tensor:
    """Bicubic upscaling of ``(N, C, h, w)`` by ``scale``."""
    return F.interpolate(lr, scale_factor=float(scale), mode="bicubic", align_corners=False)


def fit_linear_filter(
    hr_slices: torch.Tensor, scale: int, degradation: str, kernel_size: int = 7, max_pixels: int = 400_000, seed: int = 0
) -> torch.Tensor:
    """Least-squares ``kernel_size x kernel_size`` kernel (plus bias) mapping bicubic output to the truth.

    Args:
        hr_slices: training slices ``(N, 1, H, W)`` in [0, 1].
        scale, degradation: the degradation the filter is fitted for.
        kernel_size: filter side (7 by default).
        max_pixels: random pixels (with some foreground signal) used in the fit.

    Returns:
        ``(kernel_size * kernel_size + 1,)`` weights: kernel (row-major) then bias.
    """
    hr = crop_to_multiple(hr_slices.float(), scale, (-2, -1))
    up = bicubic(degrade(hr, scale, degradation), scale)
    pad = kernel_size // 2
    cols = F.unfold(F.pad(up, (pad,) * 4, mode="replicate"), kernel_size)  # (N, k*k, H*W)
    x = cols.permute(0, 2, 1).reshape(-1, kernel_size * kernel_size)
    y = hr.reshape(-1)
    keep = torch.nonzero(x[:, kernel_size * kernel_size // 2] > 0.02).squeeze(1)
    g = torch.Generator().manual_seed(seed)
    keep = keep[torch.randperm(len(keep), generator=g)[:max_pixels]]
    a = torch.cat([x[keep], torch.ones(len(keep), 1)], dim=1).double()
    return torch.linalg.lstsq(a, y[keep].double().unsqueeze(1)).solution.squeeze(1).float()


def apply_linear_filter(up: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Apply fitted weights (see :func:`fit_linear_filter`) to bicubic output ``(N, 1, H, W)``."""
    k = int(round((weights.numel() - 1) ** 0.5))
    kernel = weights[:-1].reshape(1, 1, k, k).to(up)
    return F.conv2d(F.pad(up, (k // 2,) * 4, mode="replicate"), kernel) + weights[-1].to(up)


def evaluate_sr(
    hr_slices: torch.Tensor,
    mask: torch.Tensor,
    scale: int,
    degradation: str,
    model: Callable[[torch.Tensor], torch.Tensor] | None,
    linear_weights: torch.Tensor | None = None,
) -> dict[str, dict[str, float]]:
    """PSNR/SSIM (foreground) of bicubic, the fitted linear filter and ``model`` on degraded ``hr_slices``.

    Args:
        hr_slices: ``(N, 1, H, W)`` ground truth in [0, 1] (data range 1).
        mask: ``(N, 1, H, W)`` boolean foreground.
        model: maps low-resolution ``(N, 1, h, w)`` to ``(N, 1, H, W)``; None skips it.
        linear_weights: output of :func:`fit_linear_filter`; None skips that baseline.
    """
    hr = crop_to_multiple(hr_slices.float(), scale, (-2, -1))
    m = crop_to_multiple(mask.bool(), scale, (-2, -1))
    lr = degrade(hr, scale, degradation)
    outputs = {"bicubic": bicubic(lr, scale)}
    if linear_weights is not None:
        outputs["linear_filter"] = apply_linear_filter(outputs["bicubic"], linear_weights)
    if model is not None:
        with torch.no_grad():
            outputs["model"] = model(lr).float()
    return {
        name: {"psnr": masked_psnr(out.clamp(0, hr.max()), hr, m), "ssim": masked_ssim(out.clamp(0, hr.max()), hr, m)}
        for name, out in outputs.items()
    }
