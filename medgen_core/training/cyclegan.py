"""CycleGAN training (Zhu et al. 2017): LSGAN + cycle consistency + identity, with image pools.

Code names map to the paper: ``G_A`` = G (A -> B), ``G_B`` = F (B -> A), ``D_A`` = D_Y (judges B),
``D_B`` = D_X (judges A).
``L_G = LSGAN(D_A(G_A(a))) + LSGAN(D_B(G_B(b))) + lambda [|G_B(G_A(a)) - a|_1 + |G_A(G_B(b)) - b|_1]
      + lambda_idt lambda [|G_A(b) - b|_1 + |G_B(a) - a|_1]`` with lambda = 10, lambda_idt = 0.5 (eq. 3 + identity);
each discriminator: ``0.5 [LSGAN(D(real), 1) + LSGAN(D(pool(fake)), 0)]``.
Batches are dicts with ``"A"`` and ``"B"`` (unpaired), both in [-1, 1]. The step is :class:`CycleGANIteration` in
MONAI's :class:`~monai.engines.GanTrainer` (the bundle's ``configs/train.json``): the two generators are one
``g_network`` (:class:`CycleGenerators`, one optimiser) and the two discriminators one ``d_network``
(:class:`PairedDiscriminators`), so the CycleGAN step fits MONAI's one-generator, one-discriminator engine. The
schedule (constant, then linear decay to zero) is :class:`~medgen_core.training.engines.WarmupCosineSchedule`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn as nn

from medgen_core.training.base import unwrap
from medgen_core.training.image_pool import ImagePool
from medgen_core.training.engines import to_device

__all__ = ["CycleGANIteration", "CycleGenerators", "PairedDiscriminators", "cycle_losses", "cyclegan_columns"]


def cycle_losses(real_a: torch.Tensor, real_b: torch.Tensor, g_a: nn.Module, g_b: nn.Module, lambda_cycle: float, lambda_identity: float):
    """Forward passes and the cycle/identity terms as defined above.

    Returns:
        ``(fake_b, fake_a, loss_cycle_a, loss_cycle_b, loss_idt_a, loss_idt_b)``; the loss terms are
        already weighted (``lambda_cycle`` and ``lambda_identity * lambda_cycle``).
    """
    fake_b, fake_a = g_a(real_a), g_b(real_b)
    cycle_a = (g_b(fake_b) - real_a).abs().mean() * lambda_cycle
    cycle_b = (g_a(fake_a) - real_b).abs().mean() * lambda_cycle
    if lambda_identity > 0:
        idt_a = (g_a(real_b) - real_b).abs().mean() * lambda_cycle * lambda_identity
        idt_b = (g_b(real_a) - real_a).abs().mean() * lambda_cycle * lambda_identity
    else:
        idt_a = idt_b = torch.zeros((), device=real_a.device)
    return fake_b, fake_a, cycle_a, cycle_b, idt_a, idt_b


class CycleGenerators(nn.Module):
    """Both generators behind one ``forward`` (one DDP forward per generator update): returns
    :func:`cycle_losses` of ``(real_a, real_b)``."""

    def __init__(self, g_a: nn.Module, g_b: nn.Module, lambda_cycle: float, lambda_identity: float) -> None:
        super().__init__()
        self.g_a, self.g_b = g_a, g_b
        self.lambda_cycle, self.lambda_identity = lambda_cycle, lambda_identity

    def forward(self, real_a: torch.Tensor, real_b: torch.Tensor):
        return cycle_losses(real_a, real_b, self.g_a, self.g_b, self.lambda_cycle, self.lambda_identity)


class PairedDiscriminators(nn.Module):
    """Both discriminators behind one ``forward``: each judges ``cat([real, fake])`` in one call.

    Returns ``(real_logits_a, fake_logits_a, real_logits_b, fake_logits_b)`` (the halves of each map).
    """

    def __init__(self, d_a: nn.Module, d_b: nn.Module) -> None:
        super().__init__()
        self.d_a, self.d_b = d_a, d_b

    def forward(self, real_b: torch.Tensor, fake_b: torch.Tensor, real_a: torch.Tensor, fake_a: torch.Tensor):
        la = self.d_a(torch.cat([real_b, fake_b], 0))[-1]
        lb = self.d_b(torch.cat([real_a, fake_a], 0))[-1]
        return (*la.split([real_b.shape[0], fake_b.shape[0]], 0), *lb.split([real_a.shape[0], fake_a.shape[0]], 0))


class CycleGANIteration:
    """One CycleGAN update on ``engine`` (a :class:`~monai.engines.GanTrainer` whose ``g_network`` is
    :class:`CycleGenerators` and ``d_network`` :class:`PairedDiscriminators`, both optionally DDP-wrapped;
    ``d_loss_function`` = LSGAN :class:`~monai.losses.PatchAdversarialLoss`): both generators with the
    discriminators frozen (called unwrapped), then both discriminators on real images and on fakes drawn from the
    history pools (:class:`~medgen_core.training.image_pool.ImagePool`, seeded ``seed + 2 * rank``).

    Logged terms: ``g_a``, ``g_b``, ``cycle_a``, ``cycle_b``, ``idt_a``, ``idt_b``, ``d_a``, ``d_b``.
    """

    TERMS = ("g_a", "g_b", "cycle_a", "cycle_b", "idt_a", "idt_b", "d_a", "d_b")

    def __init__(self, pool_size: int = 50, seed: int = 0) -> None:
        from medgen_core.training.distributed import rank_and_world_size

        seed = int(seed) + 2 * rank_and_world_size()[0]
        self.pool_a = ImagePool(pool_size, torch.Generator().manual_seed(seed))  # fakes in domain A (from G_B)
        self.pool_b = ImagePool(pool_size, torch.Generator().manual_seed(seed + 1))  # fakes in domain B (from G_A)

    def __call__(self, engine: Any, batch: Mapping[str, Any]) -> dict[str, Any]:
        real_a, real_b = to_device(batch, engine.state.device, ("A", "B"))
        gens, discs, adv = engine.g_network, engine.d_network, engine.d_loss_function
        plain = unwrap(discs)
        gens.train()
        discs.train()
        # 1. generators, discriminators frozen
        plain.requires_grad_(False)
        fake_b, fake_a, cyc_a, cyc_b, idt_a, idt_b = gens(real_a, real_b)
        g_a = adv(plain.d_a(fake_b)[-1], target_is_real=True, for_discriminator=False)
        g_b = adv(plain.d_b(fake_a)[-1], target_is_real=True, for_discriminator=False)
        g_total = g_a + g_b + cyc_a + cyc_b + idt_a + idt_b
        engine.g_optimizer.zero_grad(set_to_none=True)
        g_total.backward()
        engine.g_optimizer.step()
        # 2. discriminators on real images and on fakes drawn from the history pools
        plain.requires_grad_(True)
        ra, fa, rb, fb = discs(real_b, self.pool_b.query(fake_b.detach()), real_a, self.pool_a.query(fake_a.detach()))
        d_a = 0.5 * (adv(ra, target_is_real=True, for_discriminator=True) + adv(fa, target_is_real=False, for_discriminator=True))
        d_b = 0.5 * (adv(rb, target_is_real=True, for_discriminator=True) + adv(fb, target_is_real=False, for_discriminator=True))
        engine.d_optimizer.zero_grad(set_to_none=True)
        (d_a + d_b).backward()
        engine.d_optimizer.step()
        values = (g_a, g_b, cyc_a, cyc_b, idt_a, idt_b, d_a, d_b)
        return {"A": real_a, "B": real_b, "pred": fake_b.detach(), "loss": g_total.detach(),
                "terms": {k: float(v.detach()) for k, v in zip(self.TERMS, values)}}


def cyclegan_columns(generators: nn.Module):
    """``batch -> [real A, G_A(A), G_B(G_A(A)), real B, G_B(B)]`` (first sample, middle slice, in [0, 1]) for
    :class:`~medgen_core.training.engines.SampleMontage`; ``generators`` is :class:`CycleGenerators`."""

    def columns(batch: Mapping[str, torch.Tensor]) -> list[tuple[str, torch.Tensor]]:
        gens = unwrap(generators)
        a, b = batch["A"][:1], batch["B"][:1]
        fb = gens.g_a(a)
        rec = gens.g_b(fb)
        fa = gens.g_b(b)
        mid = lambda t: ((t[0, 0] if t.dim() == 4 else t[0, 0, ..., t.shape[-1] // 2]) + 1) / 2  # noqa: E731
        return [("real A", mid(a)), ("G_A(A)", mid(fb)), ("G_B(G_A(A))", mid(rec)), ("real B", mid(b)), ("G_B(B)", mid(fa))]

    return columns
