"""CycleGAN training (Zhu et al. 2017): LSGAN + cycle consistency + identity, with image pools.

Code names map to the paper: ``G_A`` = G (A -> B), ``G_B`` = F (B -> A), ``D_A`` = D_Y (judges B),
``D_B`` = D_X (judges A).
``L_G = LSGAN(D_A(G_A(a))) + LSGAN(D_B(G_B(b))) + lambda [|G_B(G_A(a)) - a|_1 + |G_A(G_B(b)) - b|_1]
      + lambda_idt lambda [|G_A(b) - b|_1 + |G_B(a) - a|_1]`` with lambda = 10, lambda_idt = 0.5 (eq. 3 + identity);
each discriminator: ``0.5 [LSGAN(D(real), 1) + LSGAN(D(pool(fake)), 0)]``.
Batches are dicts with ``"A"`` and ``"B"`` (unpaired), both in [-1, 1].
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
from monai.losses import PatchAdversarialLoss

from medgen_core.training.gan_base import GANSchedule, GANTrainerBase, set_requires_grad
from medgen_core.training.image_pool import ImagePool

__all__ = ["CycleGANTrainer", "CycleGenerators", "PairedDiscriminators", "cycle_losses"]


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


class CycleGANTrainer(GANTrainerBase):
    """Trains ``G_A``, ``G_B``, ``D_A``, ``D_B``; one optimiser for both generators, one for both discriminators.

    Each rank keeps its own image pools (seeded ``seed + 2 * rank``) in distributed mode."""

    loss_names = ("g_a", "g_b", "cycle_a", "cycle_b", "idt_a", "idt_b", "d_a", "d_b")

    def __init__(self, g_a: nn.Module, g_b: nn.Module, d_a: nn.Module, d_b: nn.Module, schedule: GANSchedule, output_dir: str | Path,
                 lambda_cycle: float = 10.0, lambda_identity: float = 0.5, pool_size: int = 50, seed: int = 0,
                 device: str | torch.device = "cpu", distributed: bool | None = None) -> None:
        super().__init__({"G_A": g_a, "G_B": g_b, "D_A": d_a, "D_B": d_b}, {"G": ["G_A", "G_B"], "D": ["D_A", "D_B"]}, schedule, output_dir,
                         device, distributed)
        self.lambda_cycle, self.lambda_identity = lambda_cycle, lambda_identity
        self.adv = PatchAdversarialLoss(criterion="least_squares", reduction="mean")
        seed = seed + 2 * self.rank
        self.pool_a = ImagePool(pool_size, torch.Generator().manual_seed(seed))  # fakes in domain A (from G_B)
        self.pool_b = ImagePool(pool_size, torch.Generator().manual_seed(seed + 1))  # fakes in domain B (from G_A)
        self.wrap("G", CycleGenerators(self.nets["G_A"], self.nets["G_B"], lambda_cycle, lambda_identity))
        self.wrap("D", PairedDiscriminators(self.nets["D_A"], self.nets["D_B"]))

    def _d_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        return 0.5 * (self.adv(real_logits, target_is_real=True, for_discriminator=True)
                      + self.adv(fake_logits, target_is_real=False, for_discriminator=True))

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        real_a, real_b = batch["A"], batch["B"]
        n = self.nets
        # 1. generators, discriminators frozen
        set_requires_grad([n["D_A"], n["D_B"]], False)
        fake_b, fake_a, cyc_a, cyc_b, idt_a, idt_b = self.ddp["G"](real_a, real_b)
        g_a = self.adv(n["D_A"](fake_b)[-1], target_is_real=True, for_discriminator=False)
        g_b = self.adv(n["D_B"](fake_a)[-1], target_is_real=True, for_discriminator=False)
        self.optimizers["G"].zero_grad(set_to_none=True)
        (g_a + g_b + cyc_a + cyc_b + idt_a + idt_b).backward()
        self.optimizers["G"].step()
        # 2. discriminators on real images and on fakes drawn from the history pools
        set_requires_grad([n["D_A"], n["D_B"]], True)
        ra, fa, rb, fb = self.ddp["D"](real_b, self.pool_b.query(fake_b.detach()), real_a, self.pool_a.query(fake_a.detach()))
        d_a, d_b = self._d_loss(ra, fa), self._d_loss(rb, fb)
        self.optimizers["D"].zero_grad(set_to_none=True)
        (d_a + d_b).backward()
        self.optimizers["D"].step()
        values = (g_a, g_b, cyc_a, cyc_b, idt_a, idt_b, d_a, d_b)
        return {k: float(v.detach()) for k, v in zip(self.loss_names, values)}

    def sample_columns(self, batch: dict[str, torch.Tensor]) -> list[tuple[str, torch.Tensor]]:
        a, b = batch["A"][:1], batch["B"][:1]
        fb = self.nets["G_A"](a)
        rec = self.nets["G_B"](fb)
        fa = self.nets["G_B"](b)
        mid = lambda t: ((t[0, 0] if t.dim() == 4 else t[0, 0, ..., t.shape[-1] // 2]) + 1) / 2  # noqa: E731
        return [("real A", mid(a)), ("G_A(A)", mid(fb)), ("G_B(G_A(A))", mid(rec)), ("real B", mid(b)), ("G_B(B)", mid(fa))]
