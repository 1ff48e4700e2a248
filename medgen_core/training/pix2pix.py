"""Pix2Pix training (Isola et al. 2017) on MONAI's :class:`~monai.engines.GanTrainer`: conditional GAN + lambda_L1 * L1.

Symbols: G = generator (x -> y_hat), D = conditional PatchGAN on ``cat(x, y)``.
``L_G = GAN(D(x, G(x)), real) + lambda_L1 |y - G(x)|_1`` (paper eq. 4);
``L_D = 0.5 [GAN(D(x, y), real) + GAN(D(x, G(x)), fake)]``. Vanilla (BCE) GAN loss, no image pool.

:class:`Pix2PixIteration` is the ``iteration_update`` of a ``GanTrainer`` whose ``g_network``/``d_network`` are G and D,
``g_loss_function`` the L1 loss and ``d_loss_function`` MONAI's :class:`~monai.losses.PatchAdversarialLoss` (the
bundle's ``configs/train.json``). Adam(2e-4, beta1 0.5); the learning rate is constant for ``epochs`` and decays
linearly to zero over ``epochs_decay`` (:class:`~medgen_core.training.engines.WarmupCosineSchedule` with
``hold_steps=epochs, shape="linear"``, stepped per epoch). Real and fake pairs pass D as one batch (one DDP forward);
with an instance-normalised D (the bundle's choice, equal to the paper's BatchNorm at batch size 1) that equals two
separate calls. A frozen D inside the generator update is called unwrapped (DDP must not wait for its gradients).

Batches are dicts with ``"image"`` (x) and ``"target"`` (y), both in [-1, 1].
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn as nn

from medgen_core.training.base import unwrap
from medgen_core.training.engines import to_device

__all__ = ["Pix2PixIteration", "pix2pix_columns"]


class Pix2PixIteration:
    """One Pix2Pix update on ``engine`` (a :class:`~monai.engines.GanTrainer`): D on real/fake pairs, then G.

    Args:
        lambda_l1: weight of the L1 term (paper: 100).
        generator_params: optional subset of G's parameters the G step updates (gradients flow to these only; e.g.
            the weights of a searchable generator, not its architecture logits). Default: all of them.

    Logged terms: ``g_gan``, ``g_l1``, ``d_real``, ``d_fake``.
    """

    def __init__(self, lambda_l1: float = 100.0, generator_params: Sequence[torch.Tensor] | None = None) -> None:
        self.lambda_l1 = float(lambda_l1)
        self.generator_params = list(generator_params) if generator_params is not None else None

    def __call__(self, engine: Any, batch: Mapping[str, Any]) -> dict[str, Any]:
        x, y = to_device(batch, engine.state.device, ("image", "target"))
        g, d, adv, l1 = engine.g_network, engine.d_network, engine.d_loss_function, engine.g_loss_function
        g.train()
        d.train()
        fake = g(x)
        # 1. discriminator: real pairs -> 1, fake pairs -> 0 (fakes detached); one call on both halves
        unwrap(d).requires_grad_(True)
        logits = d(torch.cat([torch.cat([x, y], 1), torch.cat([x, fake.detach()], 1)], 0))[-1]
        real_logits, fake_logits = logits.chunk(2, dim=0)
        d_real = adv(real_logits, target_is_real=True, for_discriminator=True)
        d_fake = adv(fake_logits, target_is_real=False, for_discriminator=True)
        engine.d_optimizer.zero_grad(set_to_none=True)
        (0.5 * (d_real + d_fake)).backward()
        engine.d_optimizer.step()
        # 2. generator: fool D (frozen, called unwrapped) and stay close to y in L1
        unwrap(d).requires_grad_(False)
        g_gan = adv(unwrap(d)(torch.cat([x, fake], 1))[-1], target_is_real=True, for_discriminator=False)
        g_l1 = l1(fake, y)
        engine.g_optimizer.zero_grad(set_to_none=True)
        (g_gan + self.lambda_l1 * g_l1).backward(inputs=self.generator_params)
        engine.g_optimizer.step()
        unwrap(d).requires_grad_(True)
        terms = {"g_gan": float(g_gan.detach()), "g_l1": float(g_l1.detach()), "d_real": float(d_real.detach()), "d_fake": float(d_fake.detach())}
        return {"image": x, "target": y, "pred": fake.detach(), "loss": (g_gan + self.lambda_l1 * g_l1).detach(), "terms": terms}


def pix2pix_columns(generator: nn.Module):
    """``batch -> [("input", ...), ("output", ...), ("target", ...)]`` for :class:`~medgen_core.training.engines.SampleMontage`:
    the first sample's (middle) slice in [0, 1]; a one-hot input is shown as its class index."""

    def columns(batch: Mapping[str, torch.Tensor]) -> list[tuple[str, torch.Tensor]]:
        x, y = batch["image"][:1], batch["target"][:1]
        fake = unwrap(generator)(x)
        mid = lambda t: t[0, 0] if t.dim() == 4 else t[0, 0, ..., t.shape[-1] // 2]  # noqa: E731
        shown_x = x.argmax(1, keepdim=True).float() / max(x.shape[1] - 1, 1) if x.shape[1] > 1 else (x + 1) / 2
        return [("input", mid(shown_x)), ("output", mid((fake + 1) / 2)), ("target", mid((y + 1) / 2))]

    return columns
