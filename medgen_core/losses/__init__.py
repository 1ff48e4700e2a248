"""Losses that MONAI does not provide."""

from medgen_core.losses.adversarial import relativistic_discriminator_loss, relativistic_generator_loss

__all__ = ["relativistic_discriminator_loss", "relativistic_generator_loss"]
