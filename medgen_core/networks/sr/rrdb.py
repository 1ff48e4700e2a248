"""ESRGAN's residual-in-residual dense block network (RRDBNet), for 2D slices or 3D volumes.

Reference: Wang et al., "ESRGAN: Enhanced Super-Resolution Generative Adversarial Networks",
ECCV Workshops 2018 (arXiv 1809.00219). Paper symbols: RRDB = residual-in-residual dense block,
beta = residual scaling (0.2). MONAI has no RRDB, so it is written here with MONAI's layer factories.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.layers.factories import Conv

__all__ = ["ResidualDenseBlock", "RRDB", "RRDBNet"]

_INTERP_MODE = {2: "bicubic", 3: "trilinear"}


def _scaled_kaiming_(module: nn.Module, scale: float) -> None:
    """Kaiming init multiplied by ``scale``: ESRGAN's "smaller initialisation" that keeps deep residual stacks stable."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d)):
            nn.init.kaiming_normal_(m.weight, a=0.0, mode="fan_in")
            m.weight.data.mul_(scale)
            if m.bias is not None:
                m.bias.data.zero_()


class ResidualDenseBlock(nn.Module):
    """Five densely connected 3x3 convolutions; output ``x + residual_scale * conv5(...)``.

    Args:
        spatial_dims: 2 or 3.
        num_feat: channels in and out.
        num_grow: channels added by each of the first four convolutions.
        residual_scale: beta in the paper (0.2).
    """

    def __init__(self, spatial_dims: int, num_feat: int = 32, num_grow: int = 16, residual_scale: float = 0.2) -> None:
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        self.convs = nn.ModuleList(
            [conv(num_feat + i * num_grow, num_grow if i < 4 else num_feat, 3, padding=1) for i in range(5)]
        )
        self.act = nn.LeakyReLU(0.2, inplace=True)
        self.residual_scale = residual_scale
        _scaled_kaiming_(self, 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for i, conv in enumerate(self.convs):
            out = conv(torch.cat(features, dim=1))
            if i < 4:
                features.append(self.act(out))
        return x + self.residual_scale * out


class RRDB(nn.Module):
    """Residual-in-residual dense block: three dense blocks and an outer residual scaled by ``residual_scale``."""

    def __init__(self, spatial_dims: int, num_feat: int = 32, num_grow: int = 16, residual_scale: float = 0.2) -> None:
        super().__init__()
        self.blocks = nn.Sequential(
            *[ResidualDenseBlock(spatial_dims, num_feat, num_grow, residual_scale) for _ in range(3)]
        )
        self.residual_scale = residual_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.residual_scale * self.blocks(x)


class RRDBNet(nn.Module):
    """RRDBNet generator: ``conv_first -> RRDB x num_block -> conv_body (+skip) -> (nearest x2 + conv) x log2(scale) -> conv_hr -> conv_last``.

    The network runs at the low resolution and upsamples at the end (nearest-neighbour + convolution,
    as in ESRGAN, which avoids the checkerboard of transposed convolutions). With
    ``interp_residual=True`` the output is added to a bicubic (2D) or trilinear (3D) upsampling of the
    input, so the network learns only the detail that interpolation misses; this converges much faster
    on small data and CPUs.

    Args:
        spatial_dims: 2 (slices) or 3 (volumes).
        in_channels: input channels. Defaults to 1.
        out_channels: output channels. Defaults to 1.
        scale: upsampling factor, a power of two (1, 2, 4, 8). Defaults to 2.
        num_feat: trunk width (ESRGAN: 64). Defaults to 32 to keep shipped weights small.
        num_block: number of RRDBs (ESRGAN: 23). Defaults to 4.
        num_grow: growth channels of each dense block (ESRGAN: 32). Defaults to 16.
        residual_scale: beta, the residual scaling (ESRGAN: 0.2).
        interp_residual: add the interpolated input to the output. Defaults to True.

    Shapes:
        input ``(B, in_channels, *S)``, output ``(B, out_channels, *(scale * S))``.

    Example::

        net = RRDBNet(spatial_dims=2, scale=2)
        net(torch.rand(1, 1, 32, 40)).shape  # (1, 1, 64, 80)
        net3d = RRDBNet(spatial_dims=3, scale=2, num_feat=8, num_block=1, num_grow=4)
        net3d(torch.rand(1, 1, 8, 8, 8)).shape  # (1, 1, 16, 16, 16)
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int = 1,
        out_channels: int = 1,
        scale: int = 2,
        num_feat: int = 32,
        num_block: int = 4,
        num_grow: int = 16,
        residual_scale: float = 0.2,
        interp_residual: bool = True,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"RRDBNet: spatial_dims must be 2 or 3, got {spatial_dims}.")
        if scale < 1 or 2 ** round(math.log2(scale)) != scale:
            raise ValueError(f"RRDBNet: scale must be a power of two (1, 2, 4, 8), got {scale}.")
        if interp_residual and in_channels != out_channels:
            raise ValueError(
                f"RRDBNet: interp_residual needs in_channels == out_channels, got {in_channels} and {out_channels}."
            )
        if num_block < 1 or num_feat < 1 or num_grow < 1:
            raise ValueError(f"RRDBNet: num_block, num_feat, num_grow must be >= 1, got {num_block}, {num_feat}, {num_grow}.")
        conv = Conv[Conv.CONV, spatial_dims]
        self.spatial_dims = spatial_dims
        self.scale = scale
        self.interp_residual = interp_residual
        self.interp_mode = _INTERP_MODE[spatial_dims]
        self.conv_first = conv(in_channels, num_feat, 3, padding=1)
        self.body = nn.Sequential(*[RRDB(spatial_dims, num_feat, num_grow, residual_scale) for _ in range(num_block)])
        self.conv_body = conv(num_feat, num_feat, 3, padding=1)
        self.upconvs = nn.ModuleList([conv(num_feat, num_feat, 3, padding=1) for _ in range(int(math.log2(scale)))])
        self.conv_hr = conv(num_feat, num_feat, 3, padding=1)
        self.conv_last = conv(num_feat, out_channels, 3, padding=1)
        self.act = nn.LeakyReLU(0.2, inplace=True)
        if interp_residual:
            # start as plain interpolation: the learned detail begins at zero
            nn.init.zeros_(self.conv_last.weight)
            nn.init.zeros_(self.conv_last.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Upsample ``x`` of shape ``(B, C_in, *S)`` to ``(B, C_out, *(scale * S))``."""
        if x.dim() != self.spatial_dims + 2:
            # plain concatenation keeps forward scriptable (TorchScript rejects f-strings over tuples)
            raise ValueError("RRDBNet expects a " + str(self.spatial_dims + 2) + "D tensor (B, C, *S), got a " + str(x.dim()) + "D tensor.")
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        for upconv in self.upconvs:
            feat = self.act(upconv(F.interpolate(feat, scale_factor=2.0, mode="nearest")))
        out = self.conv_last(self.act(self.conv_hr(feat)))
        if not self.interp_residual:
            return out
        # the interpolation skip carries most of the signal: keep it in float32 (interpolation is not
        # on autocast's lower-precision list, so a float32 input stays float32 under bf16 autocast)
        base = x.float()
        if self.scale > 1:
            base = F.interpolate(base, scale_factor=float(self.scale), mode=self.interp_mode, align_corners=False)
        return out.float() + base
