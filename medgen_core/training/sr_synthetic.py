"""Training batches for contrast- and resolution-agnostic SR: synthetic pairs mixed with real MNI T1 slices.

Each batch of ``batch_size`` in-plane pairs ``(lr (B, 1, p/s, p/s), hr (B, 1, p, p))`` holds

* ``batch_size - n_real`` draws of :class:`~medgen_core.data.synthetic_sr.SyntheticSRPairs` (random anatomy
  deformation, random per-tissue contrast or the deformed real T1, bias field, gamma, random HR bandwidth,
  a random Gaussian / block / k-space degradation, Rician or Gaussian noise; never the held-out MNI slab), and
* ``n_real = round(real_fraction * batch_size)`` patches of real MNI T1 training slices (axial, outside the
  held-out slab and its margin, flips and 90-degree rotations), degraded by the same
  :class:`~medgen_core.transforms.resolution_sim.RandResolutionDegraded` operators, with milder noise
  (``real_noise_prob``, ``real_noise_std_range``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from medgen_core.transforms.resolution_sim import RandMRNoised, RandResolutionDegraded

__all__ = ["SyntheticMixBatches"]


class SyntheticMixBatches:
    """Callable ``n -> (lr, hr)`` mixing synthetic and real pairs (see the module docstring); reproducible per ``seed``.

    Args:
        scale: in-plane factor.
        patch_size: HR patch side (a multiple of ``scale``).
        real_sampler: :class:`~medgen_core.training.super_resolution.PatchSampler` of real HR slices (None: no real patches).
        real_fraction: share of each batch taken from ``real_sampler``.
        kind_weights: probabilities of ``("gaussian", "block", "kspace")`` for both parts.
        seed: seed of the synthetic stream and the real-patch degradations.
        real_noise_prob / real_noise_std_range: noise on the real patches' LR.
        synthetic_kwargs: more :class:`~medgen_core.data.synthetic_sr.SyntheticSRPairs` arguments.
    """

    KINDS = ("gaussian", "block", "kspace")

    def __init__(self, scale: int, patch_size: int, real_sampler: Any = None, real_fraction: float = 0.3,
                 kind_weights: Sequence[float] = (1.0, 1.0, 1.0), seed: int = 0, real_noise_prob: float = 0.5,
                 real_noise_std_range: tuple[float, float] = (0.0, 0.02), **synthetic_kwargs: Any) -> None:
        if not 0.0 <= real_fraction <= 1.0:
            raise ValueError(f"SyntheticMixBatches: real_fraction must be in [0, 1], got {real_fraction}.")
        if real_fraction > 0 and real_sampler is None:
            raise ValueError("SyntheticMixBatches: real_fraction > 0 needs a real_sampler.")
        self.scale, self.patch_size, self.real_sampler, self.real_fraction = int(scale), int(patch_size), real_sampler, real_fraction
        self.kind_weights = tuple(float(w) for w in kind_weights)
        self.real_degrade = RandResolutionDegraded("hr", "lr", "inplane", factors=(self.scale,), kinds=self.KINDS, kind_weights=self.kind_weights)
        self.real_noise = RandMRNoised("lr", prob=real_noise_prob, std_range=real_noise_std_range)
        self.synthetic_kwargs = synthetic_kwargs
        self._synthetic = None
        self.reseed(seed)

    def reseed(self, seed: int) -> None:
        """Restart every stream from ``seed`` (after a resume: a fresh but reproducible stream)."""
        from medgen_core.data.synthetic_sr import SyntheticSRPairs

        self.seed = int(seed)
        self._synthetic = SyntheticSRPairs((self.patch_size, self.patch_size), "inplane", (self.scale,), seed=self.seed,
                                           kinds=self.KINDS, kind_weights=self.kind_weights, **self.synthetic_kwargs)
        self.real_degrade.set_random_state(seed=self.seed + 1)
        self.real_noise.set_random_state(seed=self.seed + 2)

    def _real(self, hr: torch.Tensor) -> torch.Tensor:
        out = self.real_noise(self.real_degrade({"hr": hr}))
        return out["lr"]

    def __call__(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        n_real = int(round(self.real_fraction * batch_size)) if self.real_sampler is not None else 0
        lrs, hrs = [], []
        for _ in range(batch_size - n_real):
            d = self._synthetic.sample()
            lrs.append(d["lr"])
            hrs.append(d["hr"])
        if n_real:
            for hr in self.real_sampler.sample(n_real):
                lrs.append(self._real(hr))
                hrs.append(hr)
        return torch.stack(lrs), torch.stack(hrs)
