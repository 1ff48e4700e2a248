"""Losses of the signal CVAE: signal MSE + weighted static MSE + beta * KL + weighted masked peak loss,
and the beta warm-up schedule.

All terms work on normalised tensors (see :class:`medgen_core.networks.cvae.SignalCVAE`). The peak loss
is an MSE over the *present* peaks only (``mask`` True) plus a binary cross-entropy on the presence
logits, so an absent peak (e.g. below the hearing threshold) never pulls a value towards a made-up
target, while the model still learns when a peak exists.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["BetaWarmup", "CVAELossWeights", "cvae_loss", "kl_divergence", "masked_mse"]


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``KL(N(mu, exp(logvar)) || N(0, I))`` summed over latent dims (B, D) and averaged over the batch."""
    return (-0.5 * (1.0 + logvar - mu.pow(2) - logvar.exp())).sum(dim=1).mean()


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over entries where ``mask`` is True ((B, P) each); 0 when nothing is present.

    Absent targets may hold NaN: they are replaced before the difference so no NaN reaches the gradient.
    """
    mask = mask.bool()
    safe_target = torch.where(mask, target, pred.detach())
    err = torch.where(mask, (pred - safe_target) ** 2, torch.zeros_like(pred))
    return err.sum() / mask.sum().clamp_min(1)


@dataclass
class CVAELossWeights:
    """Weights of the loss terms.

    Args:
        static: weight of the static-parameter MSE (joint mode; legacy mode does not predict them).
        peak: weight of the masked peak-value MSE.
        presence: weight of the peak-presence binary cross-entropy.
    """

    static: float = 1.0
    peak: float = 1.0
    presence: float = 0.1


def cvae_loss(outputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], mu: torch.Tensor, logvar: torch.Tensor,
              signal: torch.Tensor, static: torch.Tensor, peaks: torch.Tensor | None, peak_mask: torch.Tensor | None,
              beta: float, weights: CVAELossWeights, joint: bool = True) -> dict[str, torch.Tensor]:
    """The CVAE loss and its terms.

    Args:
        outputs: ``SignalCVAE.decode`` output (signal (B, L), static (B, S), peak values (B, P), presence logits (B, P)).
        mu, logvar: posterior (B, D).
        signal, static: normalised targets (B, L), (B, S).
        peaks, peak_mask: normalised peak targets (B, P) (NaN allowed where absent) and their mask; None skips the peak terms.
        beta: KL weight (from :class:`BetaWarmup`).
        weights: :class:`CVAELossWeights`.
        joint: include the static MSE (False in legacy mode, where static parameters are inputs).

    Returns:
        ``{"loss", "signal_mse", "static_mse", "kl", "peak_mse", "presence_bce"}`` (scalars; ``loss`` has the graph).
    """
    sig, stat, peak_values, peak_logits = outputs
    zero = sig.new_zeros(())
    signal_mse = F.mse_loss(sig, signal)
    static_mse = F.mse_loss(stat, static) if joint else zero
    kl = kl_divergence(mu, logvar)
    if peaks is not None and peak_mask is not None and peak_values.shape[1] > 0:
        peak_mse = masked_mse(peak_values, peaks, peak_mask)
        presence_bce = F.binary_cross_entropy_with_logits(peak_logits, peak_mask.float())
    else:
        peak_mse = presence_bce = zero
    loss = signal_mse + weights.static * static_mse + beta * kl + weights.peak * peak_mse + weights.presence * presence_bce
    return {"loss": loss, "signal_mse": signal_mse, "static_mse": static_mse, "kl": kl, "peak_mse": peak_mse, "presence_bce": presence_bce}


@dataclass
class BetaWarmup:
    """KL weight schedule: linear from ``start`` to ``max_beta`` over ``warmup_epochs`` epochs, then constant.

    ``BetaWarmup(1e-3, 10)(0) == 0``, ``(5) == 5e-4``, ``(10) == (50) == 1e-3``; ``warmup_epochs = 0`` is
    ``max_beta`` from the start.
    """

    max_beta: float = 1.0
    warmup_epochs: int = 10
    start: float = 0.0

    def __post_init__(self) -> None:
        if self.max_beta < 0 or self.start < 0 or self.warmup_epochs < 0:
            raise ValueError(f"BetaWarmup: max_beta, start and warmup_epochs must be >= 0, got {self.max_beta}, {self.start}, {self.warmup_epochs}")

    def __call__(self, epoch: float) -> float:
        if self.warmup_epochs == 0 or epoch >= self.warmup_epochs:
            return float(self.max_beta)
        return float(self.start + (self.max_beta - self.start) * max(epoch, 0.0) / self.warmup_epochs)
