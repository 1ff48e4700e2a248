"""Training of a restoration network that reverses :mod:`medgen_core.transforms.corruption`.

Each training slice is degraded by a kind drawn from ``kinds`` at a level drawn uniformly from ``level_range`` (level 0
included, so the network also learns to leave clean slices alone); the network (e.g. a MONAI ``UNet``) regresses the
clean slice. The engine is :func:`~medgen_core.training.autoencoder.fit_slices` (MONAI's SupervisedTrainer with the
shared handlers: checkpoints, resume, logs, loss curve, DDP shards).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from medgen_core.training.autoencoder import SliceBatches, SliceTrainingConfig, fit_slices
from medgen_core.transforms.corruption import CORRUPTION_KINDS, CorruptionSettings, corrupt

__all__ = ["CorruptedSliceBatches", "train_restoration"]


class CorruptedSliceBatches(SliceBatches):
    """:class:`~medgen_core.training.autoencoder.SliceBatches` whose input is the clean batch corrupted per slice by a
    random kind of ``kinds`` at a level uniform in ``level_range`` (``{"image": corrupted, "label": clean}``)."""

    def __init__(self, images: torch.Tensor, batch_size: int = 16, num_batches: int = 1, flip: bool = True, seed: int = 0,
                 kinds: tuple[str, ...] | list[str] = CORRUPTION_KINDS, level_range: tuple[float, float] | list[float] = (0.0, 1.0),
                 settings: CorruptionSettings = CorruptionSettings(), shard_record: str | Path | None = None) -> None:
        bad = [k for k in kinds if k not in CORRUPTION_KINDS]
        if not kinds or bad:
            raise ValueError(f"CorruptedSliceBatches: kinds must be a non-empty subset of {CORRUPTION_KINDS}, got {list(kinds)}.")
        lo, hi = (float(v) for v in level_range)
        if not 0.0 <= lo <= hi <= 1.0:
            raise ValueError(f"CorruptedSliceBatches: level_range must satisfy 0 <= lo <= hi <= 1, got {list(level_range)}.")
        super().__init__(images, None, None, batch_size, num_batches, 0.0, flip, seed, shard_record)
        self.kinds, self.level_range, self.settings = tuple(kinds), (lo, hi), settings

    def pair(self, clean: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lo, hi = self.level_range
        kinds = torch.randint(len(self.kinds), (clean.shape[0],), generator=self.g)
        levels = lo + (hi - lo) * torch.rand(clean.shape[0], generator=self.g)
        noisy = torch.cat([corrupt(clean[i : i + 1], self.kinds[int(kinds[i])], float(levels[i]), self.g, self.settings) for i in range(clean.shape[0])])
        return noisy, clean


def train_restoration(network: nn.Module, images: torch.Tensor, config: SliceTrainingConfig, output_dir: str | Path,
                      device: str | torch.device = "cpu", kinds: tuple[str, ...] | list[str] = CORRUPTION_KINDS,
                      level_range: tuple[float, float] | list[float] = (0.0, 1.0), settings: CorruptionSettings = CorruptionSettings(),
                      resume: bool = True) -> Path:
    """Train ``network (B, 1, H, W) -> (B, 1, H, W)`` to map corrupted slices of ``images`` back to the clean ones
    (``config.p_uncond`` unused); returns ``model.pt``'s path in ``output_dir``."""
    batches = CorruptedSliceBatches(images, config.batch_size, config.epoch_length, config.flip, config.seed, kinds, level_range, settings,
                                    Path(output_dir) / "data_shards.json")
    return fit_slices(network, batches, config, output_dir, device, resume, title="restoration")
