"""Training batches for contrast- and resolution-agnostic SR: synthetic pairs mixed with real MNI T1 slices.

Each batch of ``batch_size`` in-plane pairs ``(lr (B, 1, p/s, p/s), hr (B, 1, p, p))`` holds

* ``batch_size - n_real`` draws of :class:`~medgen_core.data.synthetic_sr.SyntheticSRPairs` (random anatomy
  deformation, random per-tissue contrast or the deformed real T1, bias field, gamma, random HR bandwidth,
  a random Gaussian / block / k-space degradation, Rician or Gaussian noise; never the held-out MNI slab), and
* ``n_real = round(real_fraction * batch_size)`` patches of real MNI T1 training slices (axial, outside the
  held-out slab and its margin, flips and 90-degree rotations), degraded by the same
  :class:`~medgen_core.transforms.resolution_sim.RandResolutionDegraded` operators, with milder noise
  (``real_noise_prob``, ``real_noise_std_range``).

Noise goes on the high-resolution image before the degradation by default (``noise_on="hr"``): the target is
then the noisy HR image and the input its degraded version (``lr + D(hr_noisy - hr)``; every degradation is
linear), as when a real noisy scan is degraded. An L1-trained net cannot predict the HR noise, so it learns to
keep the noise it sees in the input rather than to remove it. ``noise_on="lr"`` adds the noise after the
degradation with a clean target (the net learns to denoise, which loses to bicubic on noisy real scans).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from medgen_core.transforms.resolution_sim import AxisDegradation, RandMRNoised, RandResolutionDegraded, apply_axis_degradation

__all__ = ["SyntheticMixBatches", "degrade_like"]


def degrade_like(x: torch.Tensor, specs: Sequence[dict]) -> torch.Tensor:
    """Apply the degradation recorded in ``params["degradation"]`` (one dict per axis) to ``x`` ``(C, *spatial)``."""
    for spec in specs:
        s = AxisDegradation(**{k: v for k, v in spec.items() if k != "operator"})
        x = apply_axis_degradation(x, s, s.axis + 1)
    return x


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
        noise_on: ``"hr"`` (default) or ``"lr"``, see the module docstring.
        noise_prob / noise_std_range: noise on the synthetic pairs.
        synthetic_kwargs: more :class:`~medgen_core.data.synthetic_sr.SyntheticSRPairs` arguments.
    """

    KINDS = ("gaussian", "block", "kspace")

    def __init__(self, scale: int, patch_size: int, real_sampler: Any = None, real_fraction: float = 0.3,
                 kind_weights: Sequence[float] = (1.0, 1.0, 1.0), seed: int = 0, real_noise_prob: float = 0.5,
                 real_noise_std_range: tuple[float, float] = (0.0, 0.02), noise_on: str = "hr", noise_prob: float = 0.9,
                 noise_std_range: tuple[float, float] = (0.0, 0.05), **synthetic_kwargs: Any) -> None:
        if not 0.0 <= real_fraction <= 1.0:
            raise ValueError(f"SyntheticMixBatches: real_fraction must be in [0, 1], got {real_fraction}.")
        if real_fraction > 0 and real_sampler is None:
            raise ValueError("SyntheticMixBatches: real_fraction > 0 needs a real_sampler.")
        if noise_on not in ("hr", "lr"):
            raise ValueError(f"SyntheticMixBatches: noise_on must be 'hr' or 'lr', got {noise_on!r}.")
        self.noise_on = noise_on
        self.scale, self.patch_size, self.real_sampler, self.real_fraction = int(scale), int(patch_size), real_sampler, real_fraction
        self.kind_weights = tuple(float(w) for w in kind_weights)
        self.real_degrade = RandResolutionDegraded("hr", "lr", "inplane", factors=(self.scale,), kinds=self.KINDS, kind_weights=self.kind_weights)
        noise_key = "hr" if noise_on == "hr" else "lr"
        self.real_noise = RandMRNoised(noise_key, prob=real_noise_prob, std_range=real_noise_std_range)
        self.synthetic_noise = RandMRNoised("hr", prob=noise_prob, std_range=noise_std_range) if noise_on == "hr" else None
        chain_noise = {"noise_prob": 0.0} if noise_on == "hr" else {"noise_prob": noise_prob, "noise_std_range": noise_std_range}
        self.synthetic_kwargs = {**chain_noise, **synthetic_kwargs}
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
        if self.synthetic_noise is not None:
            self.synthetic_noise.set_random_state(seed=self.seed + 3)

    @staticmethod
    def _hr_noise(noise: RandMRNoised, d: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Noise on ``d["hr"]``, carried into ``d["lr"]`` by the (linear) degradation: ``(lr, noisy hr)``."""
        out = noise({"hr": d["hr"]})
        if out["params"]["noise"]["kind"] == "none":
            return d["lr"], d["hr"]
        return (d["lr"] + degrade_like(out["hr"] - d["hr"], d["params"]["degradation"])).clamp_min(0.0), out["hr"]

    def _real(self, hr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        d = self.real_degrade({"hr": hr})
        if self.noise_on == "hr":
            return self._hr_noise(self.real_noise, d)
        return self.real_noise(d)["lr"], d["hr"]

    def __call__(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        n_real = int(round(self.real_fraction * batch_size)) if self.real_sampler is not None else 0
        lrs, hrs = [], []
        for _ in range(batch_size - n_real):
            d = self._synthetic.sample()
            lr, hr = self._hr_noise(self.synthetic_noise, d) if self.synthetic_noise is not None else (d["lr"], d["hr"])
            lrs.append(lr)
            hrs.append(hr)
        if n_real:
            for hr in self.real_sampler.sample(n_real):
                lr, hr = self._real(hr)
                lrs.append(lr)
                hrs.append(hr)
        return torch.stack(lrs), torch.stack(hrs)
