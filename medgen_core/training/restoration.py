"""Training of a restoration network that reverses :mod:`medgen_core.transforms.corruption`.

Each training slice is degraded by a kind drawn from ``kinds`` at a level drawn uniformly from
``level_range`` (level 0 included, so the network also learns to leave clean slices alone); the
network (e.g. a MONAI ``UNet``) regresses the clean slice. The loop is
:class:`~medgen_core.training.autoencoder.SliceTrainer` (checkpoints, CSV, PNG, DDP).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from medgen_core.training.autoencoder import SliceTrainer, SliceTrainingConfig
from medgen_core.transforms.corruption import CORRUPTION_KINDS, CorruptionSettings, corrupt

__all__ = ["RestorationTrainer"]


class RestorationTrainer(SliceTrainer):
    """Trains ``network (B, 1, H, W) -> (B, 1, H, W)`` to map corrupted slices back to clean ones.

    Args:
        network: image-to-image network.
        images: clean training slices ``(N, 1, H, W)`` in [0, 1].
        config: :class:`~medgen_core.training.autoencoder.SliceTrainingConfig` (``p_uncond`` unused).
        output_dir, device, distributed: see :class:`SliceTrainer`.
        kinds: corruption kinds to draw from.
        level_range: ``(lo, hi)`` within [0, 1].
        settings: corruption strengths at level 1.
    """

    name = "restoration"

    def __init__(self, network: nn.Module, images: torch.Tensor, config: SliceTrainingConfig, output_dir: str | Path,
                 device: str | torch.device = "cpu", distributed: bool | None = None, kinds: tuple[str, ...] | list[str] = CORRUPTION_KINDS,
                 level_range: tuple[float, float] | list[float] = (0.0, 1.0), settings: CorruptionSettings = CorruptionSettings()) -> None:
        bad = [k for k in kinds if k not in CORRUPTION_KINDS]
        if not kinds or bad:
            raise ValueError(f"RestorationTrainer: kinds must be a non-empty subset of {CORRUPTION_KINDS}, got {list(kinds)}.")
        lo, hi = (float(v) for v in level_range)
        if not 0.0 <= lo <= hi <= 1.0:
            raise ValueError(f"RestorationTrainer: level_range must satisfy 0 <= lo <= hi <= 1, got {list(level_range)}.")
        self.kinds, self.level_range, self.settings = tuple(kinds), (lo, hi), settings
        super().__init__(network, images, config, output_dir, device, distributed)

    def make_batch(self) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        _, clean = self.sample_indices()
        lo, hi = self.level_range
        kinds = torch.randint(len(self.kinds), (clean.shape[0],), generator=self.g)
        levels = lo + (hi - lo) * torch.rand(clean.shape[0], generator=self.g)
        noisy = torch.cat([corrupt(clean[i : i + 1], self.kinds[int(kinds[i])], float(levels[i]), self.g, self.settings) for i in range(clean.shape[0])])
        return (noisy.to(self.device),), clean.to(self.device)
