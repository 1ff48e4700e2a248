"""CycleGAN ResNet generator (``resnet_9blocks``), for 2D or 3D.

Reference: Zhu et al., "Unpaired Image-to-Image Translation using Cycle-Consistent Adversarial
Networks", ICCV 2017 (arXiv 1703.10593), after Johnson et al. 2016: reflection-padded 7x7 conv, two
stride-2 down-samplings, ``n_res`` residual blocks (reflection padding, 3x3 conv, InstanceNorm), two
transposed-conv up-samplings, 7x7 conv and ``tanh``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from monai.networks.layers.factories import Conv, Norm

from medgen_core.networks.gan.shapes import spatial_sizes_fit

__all__ = ["ResnetGenerator", "ResnetBlock"]

# MONAI's Pad factory has no reflection padding
_REFLECTION_PAD = {2: nn.ReflectionPad2d, 3: nn.ReflectionPad3d}


class ResnetBlock(nn.Module):
    """``x + (reflect-pad, conv3, norm, ReLU, [dropout], reflect-pad, conv3, norm)(x)``."""

    def __init__(self, spatial_dims: int, channels: int, dropout: float = 0.0) -> None:
        super().__init__()
        conv, norm, pad = Conv[Conv.CONV, spatial_dims], Norm[Norm.INSTANCE, spatial_dims], _REFLECTION_PAD[spatial_dims]
        layers = [pad(1), conv(channels, channels, 3, bias=True), norm(channels), nn.ReLU(True)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers += [pad(1), conv(channels, channels, 3, bias=True), norm(channels)]
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class ResnetGenerator(nn.Module):
    """CycleGAN generator.

    Args:
        spatial_dims: 2 or 3.
        in_channels, out_channels: image channels.
        features: channels of the first convolution (ngf, 64 in the paper).
        n_res: residual blocks (9 in the paper for 256x256 images, 6 for 128x128).
        n_down: stride-2 down-samplings (2 in the paper); sizes must be divisible by ``2**n_down`` and at least
            ``max(4, 2 * 2**n_down)`` (8 for ``n_down=2``): the bottleneck needs 2 or more values per axis.
        dropout: dropout inside residual blocks (paper: none).

    Shapes:
        ``(B, in_channels, *S)`` -> ``(B, out_channels, *S)`` in [-1, 1].

    Example::

        ResnetGenerator(2, 1, 1, features=16, n_res=3)(torch.rand(1, 1, 64, 64)).shape   # (1, 1, 64, 64)
        ResnetGenerator(3, 1, 1, features=8, n_res=2)(torch.rand(1, 1, 16, 16, 16)).shape
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, features: int = 64,
                 n_res: int = 9, n_down: int = 2, dropout: float = 0.0) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"ResnetGenerator: spatial_dims must be 2 or 3, got {spatial_dims}.")
        if n_res < 0 or n_down < 0:
            raise ValueError(f"ResnetGenerator: n_res and n_down must be >= 0, got {n_res}, {n_down}.")
        conv, tconv = Conv[Conv.CONV, spatial_dims], Conv[Conv.CONVTRANS, spatial_dims]
        norm, pad = Norm[Norm.INSTANCE, spatial_dims], _REFLECTION_PAD[spatial_dims]
        layers: list[nn.Module] = [pad(3), conv(in_channels, features, 7, bias=True), norm(features), nn.ReLU(True)]
        ch = features
        for _ in range(n_down):
            layers += [conv(ch, ch * 2, 3, stride=2, padding=1, bias=True), norm(ch * 2), nn.ReLU(True)]
            ch *= 2
        layers += [ResnetBlock(spatial_dims, ch, dropout) for _ in range(n_res)]
        for _ in range(n_down):
            layers += [tconv(ch, ch // 2, 3, stride=2, padding=1, output_padding=1, bias=True), norm(ch // 2), nn.ReLU(True)]
            ch //= 2
        layers += [pad(3), conv(ch, out_channels, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)
        self.spatial_dims, self.n_down = spatial_dims, n_down
        # InstanceNorm needs more than one value per channel and the residual blocks' reflection padding of 1
        # needs 2 or more at the bottleneck; the 7x7 reflection padding of 3 needs 4 or more at full size
        self.size_multiple = 2**n_down
        self.min_size = max(4, 2 * 2**n_down)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Translate ``x`` ``(B, C_in, *S)``: every size a multiple of ``2**n_down`` and at least :attr:`min_size`."""
        if not spatial_sizes_fit(x, self.spatial_dims, self.size_multiple, self.min_size):
            raise ValueError(f"ResnetGenerator: expects (B, C, *S) with S divisible by {self.size_multiple} and at least {self.min_size}, "
                             f"got {list(x.shape)}.")
        return self.model(x)
