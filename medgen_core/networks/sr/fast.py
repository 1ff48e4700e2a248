"""A CPU-fast super-resolution network: plain 3x3 residual blocks at low resolution, pixel shuffle at the end.

Design (the efficient-SR family: EDSR-baseline without batch norm, RLFN's plain-conv blocks, SPAN's
"everything at LR, sub-pixel upsampling last"): every convolution runs on the low-resolution grid, so the
cost per output voxel falls with ``scale**2``; the only high-resolution work is the pixel shuffle and the
bicubic skip. Plain 3x3 convolutions with ReLU are the operation oneDNN runs closest to its matrix-multiply
peak (no dense concatenations, no attention, no 1x1 bottlenecks), which is why RRDB-class dense blocks are
avoided. Built from MONAI's :class:`~monai.networks.blocks.Convolution` and
:class:`~monai.networks.blocks.SubpixelUpsample`; only the residual block is written here.

Cost: :func:`FastSRNet.macs_per_lr_pixel` (multiply-adds per low-resolution pixel, bicubic skip excluded).
Defaults (``num_feat=48, num_block=4``): 0.19 M MAC per LR pixel at x2 and x4, 3.3x (x2) and 4.6x (x4) fewer than the shipped
RRDB (``num_feat=32, num_block=3, num_grow=16``: 0.62 M / 0.89 M), within the 0.25 M budget of a 60 s whole-MNI x2 run.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.blocks import Convolution, SubpixelUpsample

__all__ = ["FastSRNet", "PlainResidualBlock"]

_INTERP_MODE = {2: "bicubic", 3: "trilinear"}


def _conv(spatial_dims: int, cin: int, cout: int, act: str | None) -> Convolution:
    return Convolution(spatial_dims, cin, cout, kernel_size=3, act=act, norm=None, conv_only=act is None, bias=True)


class PlainResidualBlock(nn.Module):
    """``x + residual_scale * conv(relu(conv(x)))``, both 3x3, ``(B, C, *S) -> (B, C, *S)``."""

    def __init__(self, spatial_dims: int, num_feat: int, residual_scale: float = 1.0) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv(spatial_dims, num_feat, num_feat, "relu"), _conv(spatial_dims, num_feat, num_feat, None))
        self.residual_scale = residual_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.residual_scale * self.body(x)


class FastSRNet(nn.Module):
    """``head 3x3 -> PlainResidualBlock x num_block -> 3x3 (+ head skip) -> SubpixelUpsample(scale) [+ bicubic(x)]``.

    Args:
        spatial_dims: 2 (slices) or 3 (volumes).
        in_channels / out_channels: 1 each by default.
        scale: upsampling factor, 2, 3 or 4 (one pixel shuffle of ``scale``).
        num_feat: trunk width. Defaults to 48.
        num_block: residual blocks (2 convolutions each). Defaults to 4.
        residual_scale: multiplier of each block's residual (EDSR uses 0.1 for wide nets). Defaults to 1.
        interp_residual: add the bicubic (2D) / trilinear (3D) upsampling of the input to the output and
            start the last convolution at zero, so an untrained net is plain interpolation. Defaults to True.
        channels_last: keep weights and features channels-last (NHWC / NDHWC), the layout oneDNN's
            convolutions run fastest in on CPUs (about 1.4x here); the output is returned contiguous.

    Shapes:
        input ``(B, in_channels, *S)`` -> output ``(B, out_channels, *(scale * S))``.

    Example::

        net = FastSRNet(spatial_dims=2, scale=2)
        net(torch.rand(1, 1, 32, 40)).shape  # (1, 1, 64, 80)
    """

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, out_channels: int = 1, scale: int = 2, num_feat: int = 48,
                 num_block: int = 4, residual_scale: float = 1.0, interp_residual: bool = True,
                 channels_last: bool = True) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"FastSRNet: spatial_dims must be 2 or 3, got {spatial_dims}.")
        if scale not in (1, 2, 3, 4):
            raise ValueError(f"FastSRNet: scale must be 1, 2, 3 or 4, got {scale}.")
        if num_feat < 1 or num_block < 0:
            raise ValueError(f"FastSRNet: num_feat must be >= 1 and num_block >= 0, got {num_feat}, {num_block}.")
        if interp_residual and in_channels != out_channels:
            raise ValueError(f"FastSRNet: interp_residual needs in_channels == out_channels, got {in_channels} and {out_channels}.")
        self.spatial_dims, self.scale, self.interp_residual = spatial_dims, scale, interp_residual
        self.in_channels, self.out_channels, self.num_feat, self.num_block = in_channels, out_channels, num_feat, num_block
        self.interp_mode = _INTERP_MODE[spatial_dims]
        self.head = _conv(spatial_dims, in_channels, num_feat, None)
        self.body = nn.Sequential(*[PlainResidualBlock(spatial_dims, num_feat, residual_scale) for _ in range(num_block)])
        self.body_tail = _conv(spatial_dims, num_feat, num_feat, None)
        # conv 3x3 to out_channels * scale**dims, then pixel shuffle (ICNR-initialised by MONAI; zeroed below)
        self.upsample = SubpixelUpsample(spatial_dims, num_feat, out_channels, scale_factor=scale, apply_pad_pool=False)
        if interp_residual:
            last = self.upsample.conv_block
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        # 2 / 3: run channels-last (2D / 3D layout); 0: contiguous. An int, so that TorchScript can export the network.
        self.channels_last_dims: int = spatial_dims if channels_last else 0
        if channels_last:
            self.to(memory_format=torch.channels_last if spatial_dims == 2 else torch.channels_last_3d)

    def macs_per_lr_pixel(self) -> int:
        """Multiply-adds per low-resolution pixel of every convolution (the bicubic skip and pixel shuffle excluded)."""
        k = 3**self.spatial_dims
        c = self.num_feat
        return k * (self.in_channels * c + (2 * self.num_block + 1) * c * c + c * self.out_channels * self.scale**self.spatial_dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Upsample ``x`` ``(B, C_in, *S)`` to ``(B, C_out, *(scale * S))``."""
        if x.dim() != self.spatial_dims + 2:
            raise ValueError("FastSRNet expects a " + str(self.spatial_dims + 2) + "D tensor (B, C, *S), got a " + str(x.dim()) + "D tensor.")
        if self.channels_last_dims == 2:
            x = x.contiguous(memory_format=torch.channels_last)
        elif self.channels_last_dims == 3:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        feat = self.head(x)
        out = self.upsample(feat + self.body_tail(self.body(feat))).contiguous()
        if not self.interp_residual:
            return out
        base = x.float()  # the interpolation skip carries most of the signal: float32 even under bf16 autocast
        if self.scale > 1:
            base = F.interpolate(base, scale_factor=float(self.scale), mode=self.interp_mode, align_corners=False)
        return out.float() + base

