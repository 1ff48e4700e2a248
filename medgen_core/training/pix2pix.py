"""Pix2Pix training (Isola et al. 2017): conditional GAN + lambda_L1 * L1, lambda_L1 = 100.

Symbols: G = generator (x -> y_hat), D = conditional PatchGAN on ``cat(x, y)``.
``L_G = GAN(D(x, G(x)), real) + lambda_L1 |y - G(x)|_1`` (paper eq. 4);
``L_D = 0.5 [GAN(D(x, y), real) + GAN(D(x, G(x)), fake)]``. Vanilla (BCE) GAN loss, no image pool.
Real and fake pairs pass D as one batch (one DDP forward); with an instance-normalised D (the bundle's
choice, equal to the paper's BatchNorm at batch size 1) that equals two separate calls.
Batches are dicts with ``"image"`` (x) and ``"target"`` (y), both in [-1, 1].
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
from monai.losses import PatchAdversarialLoss

from medgen_core.training.gan_base import GANSchedule, GANTrainerBase, set_requires_grad

__all__ = ["Pix2PixTrainer"]


class Pix2PixTrainer(GANTrainerBase):
    """Trains ``generator`` and ``discriminator`` (input channels = image + target channels).

    Args:
        generator: x ``(B, C_in, *S)`` -> y ``(B, C_out, *S)``.
        discriminator: MONAI ``PatchDiscriminator`` (returns a list; the last item is the logit map).
        schedule: learning-rate schedule and Adam settings.
        output_dir: checkpoints, ``train_log.csv``, ``samples/epoch_*.png``, ``loss_curve.png``.
        lambda_l1: weight of the L1 term (paper: 100).
        gan_mode: ``"bce"`` (paper) or ``"least_squares"``.
        device: torch device.
        distributed: multi-process training (see :mod:`medgen_core.training.gan_base`); ``None`` means
            "if a process group is initialised".
    """

    loss_names = ("g_gan", "g_l1", "d_real", "d_fake")

    def __init__(self, generator: nn.Module, discriminator: nn.Module, schedule: GANSchedule, output_dir: str | Path,
                 lambda_l1: float = 100.0, gan_mode: str = "bce", device: str | torch.device = "cpu",
                 distributed: bool | None = None) -> None:
        super().__init__({"G": generator, "D": discriminator}, {"G": ["G"], "D": ["D"]}, schedule, output_dir, device, distributed)
        self.lambda_l1 = lambda_l1
        self.adv = PatchAdversarialLoss(criterion=gan_mode, reduction="mean")
        self.wrap("G", self.nets["G"])
        self.wrap("D", self.nets["D"])

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        x, y = batch["image"], batch["target"]
        fake = self.ddp["G"](x)                                               # forward: y_hat = G(x)
        # 1. discriminator: real pairs -> 1, fake pairs -> 0 (fakes detached); one call on both halves
        set_requires_grad([self.nets["D"]], True)
        logits = self.ddp["D"](torch.cat([torch.cat([x, y], 1), torch.cat([x, fake.detach()], 1)], 0))[-1]
        real_logits, fake_logits = logits.chunk(2, dim=0)
        d_real = self.adv(real_logits, target_is_real=True, for_discriminator=True)
        d_fake = self.adv(fake_logits, target_is_real=False, for_discriminator=True)
        self.optimizers["D"].zero_grad(set_to_none=True)
        (0.5 * (d_real + d_fake)).backward()
        self.optimizers["D"].step()
        # 2. generator: fool D (frozen, called unwrapped) and stay close to y in L1
        set_requires_grad([self.nets["D"]], False)
        g_gan = self.adv(self.nets["D"](torch.cat([x, fake], 1))[-1], target_is_real=True, for_discriminator=False)
        g_l1 = (fake - y).abs().mean()
        self.optimizers["G"].zero_grad(set_to_none=True)
        (g_gan + self.lambda_l1 * g_l1).backward()
        self.optimizers["G"].step()
        return {"g_gan": float(g_gan.detach()), "g_l1": float(g_l1.detach()), "d_real": float(d_real.detach()), "d_fake": float(d_fake.detach())}

    def sample_columns(self, batch: dict[str, torch.Tensor]) -> list[tuple[str, torch.Tensor]]:
        x, y = batch["image"][:1], batch["target"][:1]
        fake = self.nets["G"](x)
        mid = lambda t: t[0, 0] if t.dim() == 4 else t[0, 0, ..., t.shape[-1] // 2]  # noqa: E731
        shown_x = x.argmax(1, keepdim=True).float() / max(x.shape[1] - 1, 1) if x.shape[1] > 1 else (x + 1) / 2
        return [("input", mid(shown_x)), ("output", mid((fake + 1) / 2)), ("target", mid((y + 1) / 2))]
