"""Relativistic average GAN losses (ESRGAN, arXiv 1809.00219, eq. 1-2).

``D_Ra(x_r, x_f) = sigmoid(C(x_r) - E[C(x_f)])``: the discriminator judges whether a real image is
more realistic than the average fake, and the generator gets gradients from both real and fake logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["relativistic_discriminator_loss", "relativistic_generator_loss"]


def relativistic_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """``0.5 BCE(C(x_r) - E[C(x_f)], 1) + 0.5 BCE(C(x_f) - E[C(x_r)], 0)``; logits of any equal shape."""
    real_rel = real_logits - fake_logits.mean()
    fake_rel = fake_logits - real_logits.mean()
    return 0.5 * (
        F.binary_cross_entropy_with_logits(real_rel, torch.ones_like(real_rel))
        + F.binary_cross_entropy_with_logits(fake_rel, torch.zeros_like(fake_rel))
    )


def relativistic_generator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """``0.5 BCE(C(x_r) - E[C(x_f)], 0) + 0.5 BCE(C(x_f) - E[C(x_r)], 1)``: the roles swapped."""
    real_rel = real_logits - fake_logits.mean()
    fake_rel = fake_logits - real_logits.mean()
    return 0.5 * (
        F.binary_cross_entropy_with_logits(real_rel, torch.zeros_like(real_rel))
        + F.binary_cross_entropy_with_logits(fake_rel, torch.ones_like(fake_rel))
    )
