"""Global residual wrapper: ``y = x + network(x)`` (the network predicts a correction, not the image).

With a restoration network this makes the identity (no corruption) the easy default: a fresh network
with small outputs already returns its input, and the network only has to model what the corruption
changed (as in DnCNN's residual learning, Zhang et al., IEEE TIP 2017).
"""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["GlobalResidual"]


class GlobalResidual(nn.Module):
    """``forward(x) = x + network(x)`` for an image-to-image ``network`` with as many output as input channels.

    Args:
        network: e.g. ``monai.networks.nets.UNet(2, 1, 1, ...)``; ``(B, C, *S) -> (B, C, *S)``.
    """

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x (B, C, *S)`` -> ``x + network(x)``, same shape."""
        return x + self.network(x)
