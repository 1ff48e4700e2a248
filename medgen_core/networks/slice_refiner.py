"""A small residual refiner for planes already interpolated to the target grid (through-plane SR).

``out = linear(x) + body(x)``: ``linear`` is one ``kh x kw`` convolution (replicate padding) that starts as
the identity, so an untrained refiner returns its input (the cubic B-spline interpolation) unchanged, and
that per-scan self-supervised adaptation can set in closed form (least squares); ``body`` is a few
3x3 convolutions (MONAI :class:`~monai.networks.blocks.Convolution` blocks, LeakyReLU) whose last layer
starts at zero. Operating on the interpolated grid makes any factor (integer or not) the same problem.
Cost: about ``2 * (9 * features * (2 + (num_layers - 2) * features) + kh * kw)`` FLOPs per output pixel
(16 features, 4 layers: 12 kFLOP).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
from monai.networks.blocks import Convolution

__all__ = ["SliceRefiner"]


class SliceRefiner(nn.Module):
    """Residual refiner ``(B, 1, H, W) -> (B, 1, H, W)``, the identity at initialisation.

    Args:
        features: channels of the hidden convolutions.
        num_layers: 3x3 convolutions in the nonlinear branch (>= 2).
        linear_kernel: ``(kh, kw)`` of the linear branch, odd sizes; ``kh`` along the axis that is refined
            (the slice axis, the first plane axis), ``kw`` along the sharp one.

    Example::

        net = SliceRefiner()
        x = torch.rand(2, 1, 40, 32)
        torch.equal(net(x), x)  # True: identity at initialisation
    """

    def __init__(self, features: int = 16, num_layers: int = 4, linear_kernel: Sequence[int] = (11, 3)) -> None:
        super().__init__()
        kh, kw = (int(k) for k in linear_kernel)
        if kh % 2 == 0 or kw % 2 == 0 or kh < 1 or kw < 1:
            raise ValueError(f"SliceRefiner: linear_kernel must be two odd sizes >= 1, got {tuple(linear_kernel)}.")
        if num_layers < 2 or features < 1:
            raise ValueError(f"SliceRefiner: num_layers must be >= 2 and features >= 1, got {num_layers} and {features}.")
        self.linear = nn.Conv2d(1, 1, (kh, kw), padding=(kh // 2, kw // 2), padding_mode="replicate")
        act = ("leakyrelu", {"negative_slope": 0.2, "inplace": True})
        chans = [1] + [features] * (num_layers - 1)
        layers: list[nn.Module] = [Convolution(2, c_in, c_out, kernel_size=3, act=act, norm=None) for c_in, c_out in zip(chans[:-1], chans[1:])]
        layers.append(Convolution(2, features, 1, kernel_size=3, conv_only=True))
        self.body = nn.Sequential(*layers)
        self.reset_identity()

    def reset_identity(self) -> None:
        """Make the refiner the identity again (centre tap 1, nonlinear branch output 0)."""
        with torch.no_grad():
            self.linear.weight.zero_()
            kh, kw = self.linear.kernel_size
            self.linear.weight[0, 0, kh // 2, kw // 2] = 1.0
            self.linear.bias.zero_()
            last = self.body[-1].conv
            last.weight.zero_()
            last.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Refine ``x`` ``(B, 1, H, W)``."""
        return self.linear(x) + self.body(x)
