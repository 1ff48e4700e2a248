"""Conventions of the class-conditional, space-to-depth diffusion UNets (MONAI ``DiffusionModelUNet``), shared by training and sampling.

* ``in_channels = out_channels = f*f``: the network works on ``pixel_unshuffle(x, f)`` of a single-channel image
  ``(N, 1, H, W)``, i.e. on ``(N, f*f, H/f, W/f)`` (``f = 1`` is the plain layout).
* ``num_class_embeds = K + 1``: classes ``0..K-1`` plus a "null" class ``K`` for classifier-free guidance.
"""

from __future__ import annotations

import math

import torch.nn as nn

__all__ = ["PREDICTION_TYPES", "null_class_id", "space_to_depth_factor"]

#: Regression targets supported by MONAI's DDPM/DDIM schedulers.
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def space_to_depth_factor(network: nn.Module) -> int:
    """The space-to-depth factor ``f`` of a single-channel-image diffusion UNet: ``in_channels = out_channels = f*f``."""
    cin, cout = int(getattr(network, "in_channels", 1)), int(getattr(network, "out_channels", 1))
    f = math.isqrt(cin)
    if f * f != cin or cout != cin:
        raise ValueError(
            f"the diffusion network has in_channels={cin}, out_channels={cout}; single-channel images need "
            "in_channels = out_channels = f*f (1 for the plain layout, 4 for 2x2 space-to-depth)."
        )
    return f


def null_class_id(network: nn.Module) -> int | None:
    """The "null" (unconditional) class id ``K`` of a network with ``num_class_embeds = K + 1``; None without class embedding."""
    k = getattr(network, "num_class_embeds", None)
    if k is None:
        return None
    if int(k) < 2:
        raise ValueError(f"the diffusion network has num_class_embeds={k}; classifier-free guidance needs K + 1 >= 2 (K classes plus the null class).")
    return int(k) - 1
