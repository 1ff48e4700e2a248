"""The 70x70 PatchGAN discriminator of Pix2Pix/CycleGAN, built from MONAI's ``PatchDiscriminator``.

MONAI's ``PatchDiscriminator(num_layers_d=3, kernel_size=4)`` is the paper's ``n_layers=3`` design
(4x4 convs, stride 2 except the last two, LeakyReLU 0.2): its receptive field is 70x70 in 2D.
"""

from __future__ import annotations

import torch.nn as nn
from monai.networks.nets import PatchDiscriminator

__all__ = ["build_patch_discriminator", "init_normal_"]


def build_patch_discriminator(spatial_dims: int, in_channels: int, features: int = 64, num_layers: int = 3, norm: str = "BATCH") -> PatchDiscriminator:
    """PatchGAN discriminator; ``forward`` returns a list of features whose last item is the logit map."""
    return PatchDiscriminator(spatial_dims=spatial_dims, num_layers_d=num_layers, channels=features, in_channels=in_channels,
                              out_channels=1, kernel_size=4, norm=norm, bias=False, padding=1)


def init_normal_(module: nn.Module, std: float = 0.02) -> nn.Module:
    """Pix2Pix/CycleGAN initialisation: conv weights N(0, 0.02), norm weights N(1, 0.02), biases 0."""
    for m in module.modules():
        name = type(m).__name__
        if "Conv" in name and hasattr(m, "weight") and m.weight is not None:
            nn.init.normal_(m.weight, 0.0, std)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif ("BatchNorm" in name or "InstanceNorm" in name) and getattr(m, "weight", None) is not None:
            nn.init.normal_(m.weight, 1.0, std)
            nn.init.zeros_(m.bias)
    return module
