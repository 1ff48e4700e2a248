"""Pix2Pix U-Net generator with skip connections, for 2D or 3D.

Reference: Isola et al., "Image-to-Image Translation with Conditional Adversarial Networks", CVPR 2017
(arXiv 1611.07004), generator ``unet_256``: every level is a stride-2 4x4 convolution (LeakyReLU 0.2,
norm), the decoder mirrors it with stride-2 transposed convolutions (ReLU, norm, dropout 0.5 in the
innermost decoder levels), skips concatenate encoder features, and the output goes through ``tanh``.
MONAI's UNet uses residual units and no dropout schedule, so this one is written with MONAI's factories.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from monai.networks.layers.factories import Conv, Dropout, Norm

from medgen_core.networks.gan.shapes import spatial_sizes_fit

__all__ = ["Pix2PixUNet"]

_NORMS = {"batch": Norm.BATCH, "instance": Norm.INSTANCE}


class _Level(nn.Module):
    """One U-Net level: ``down -> inner -> up`` with the input concatenated to the output (skip)."""

    def __init__(self, spatial_dims: int, outer: int, inner: int, in_channels: int, sub: nn.Module | None,
                 norm: str, dropout: float, outermost: bool, out_channels: int | None = None) -> None:
        super().__init__()
        conv, tconv = Conv[Conv.CONV, spatial_dims], Conv[Conv.CONVTRANS, spatial_dims]
        norm_t = Norm[_NORMS[norm], spatial_dims]
        use_bias = norm == "instance"  # BatchNorm has its own affine shift
        down = conv(in_channels, inner, 4, stride=2, padding=1, bias=use_bias)
        innermost = sub is None
        up_in = inner if innermost else inner * 2
        if outermost:
            up = tconv(up_in, out_channels, 4, stride=2, padding=1)
            layers = [down, sub, nn.ReLU(True), up, nn.Tanh()]
        elif innermost:
            up = tconv(up_in, outer, 4, stride=2, padding=1, bias=use_bias)
            layers = [nn.LeakyReLU(0.2, True), down, nn.ReLU(True), up, norm_t(outer)]
        else:
            up = tconv(up_in, outer, 4, stride=2, padding=1, bias=use_bias)
            layers = [nn.LeakyReLU(0.2, True), down, norm_t(inner), sub, nn.ReLU(True), up, norm_t(outer)]
            if dropout > 0:
                layers.append(Dropout[Dropout.DROPOUT, spatial_dims](dropout))
        self.model = nn.Sequential(*layers)
        self.outermost = outermost

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.model(x)
        return y if self.outermost else torch.cat([x, y], dim=1)


class Pix2PixUNet(nn.Module):
    """U-Net generator of Pix2Pix.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels (e.g. one-hot tissue classes).
        out_channels: output channels.
        num_downs: number of down-samplings (``unet_256``: 8); input sizes must be divisible by ``2**num_downs``.
        features: channels after the first convolution (ngf, 64 in the paper); doubled per level up to 8x.
        norm: ``"batch"`` (paper) or ``"instance"``.
        dropout: dropout in the three innermost non-innermost decoder levels (paper: 0.5).

    Shapes:
        ``(B, in_channels, *S)`` -> ``(B, out_channels, *S)`` in [-1, 1] (tanh).

    Example::

        Pix2PixUNet(2, 4, 1, num_downs=5, features=32)(torch.rand(1, 4, 64, 64)).shape  # (1, 1, 64, 64)
        Pix2PixUNet(3, 1, 1, num_downs=3, features=8)(torch.rand(1, 1, 16, 16, 16)).shape
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, num_downs: int = 7,
                 features: int = 64, norm: str = "batch", dropout: float = 0.5) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"Pix2PixUNet: spatial_dims must be 2 or 3, got {spatial_dims}.")
        if norm not in _NORMS:
            raise ValueError(f"Pix2PixUNet: norm must be one of {sorted(_NORMS)}, got {norm!r}.")
        if num_downs < 2:
            raise ValueError(f"Pix2PixUNet: num_downs must be >= 2, got {num_downs}.")
        self.spatial_dims, self.num_downs = spatial_dims, num_downs
        self.size_multiple = 2**num_downs  # an int attribute: in TorchScript ``2**n`` is a float
        mult = [min(2**i, 8) for i in range(num_downs)]  # channel multipliers per level, outermost first
        block = None
        for level in range(num_downs - 1, 0, -1):  # innermost first
            outer, inner = features * mult[level - 1], features * mult[level]
            drop = dropout if (block is not None and level >= num_downs - 4 and mult[level] == 8) else 0.0
            block = _Level(spatial_dims, outer, inner, outer, block, norm, drop, outermost=False)
        self.model = _Level(spatial_dims, out_channels, features, in_channels, block, norm, 0.0, outermost=True, out_channels=out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Translate ``x`` ``(B, C_in, *S)``; every spatial size must be divisible by ``2**num_downs``."""
        if not spatial_sizes_fit(x, self.spatial_dims, self.size_multiple, self.size_multiple):
            raise ValueError(f"Pix2PixUNet: expects (B, C, *S) with S divisible by {self.size_multiple}, got {list(x.shape)}.")
        return self.model(x)
