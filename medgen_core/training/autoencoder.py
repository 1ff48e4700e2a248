"""Training of the latent-space lab's image networks on 2D slices, on MONAI's engines: the conditional autoencoder
(:func:`train_autoencoder`, the bundle's ``configs/train.json``) and, with the same engine, the restoration network
(:func:`~medgen_core.training.restoration.train_restoration`).

One step is :class:`~medgen_core.training.engines.SupervisedIteration` in a :class:`~monai.engines.SupervisedTrainer`:
``network(image, class_label)`` (MONAI's :class:`~monai.engines.PrepareBatchExtraInput` passes the class) against the
target with MSE or L1; Adam with a linear warm-up and cosine decay to 5%
(:class:`~medgen_core.training.engines.WarmupCosineSchedule`); random left-right flips (axis ``H`` of
``(N, 1, H, W)``; the MNI152 2009 template is symmetric); checkpoints, resume, CSV/TensorBoard log, loss curve and
``model.pt`` from :func:`~medgen_core.training.engines.standard_handlers`; under ``torchrun`` disjoint slice shards.

The autoencoder is trained for reconstruction with class dropout: with probability ``p_uncond`` a label is replaced
by the null class ``K``, so the network also learns to reconstruct without knowing the class.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from medgen_core.training.base import unwrap
from medgen_core.training.distributed import rank_and_world_size, shard_indices
from medgen_core.training.engines import RandomBatches, SupervisedIteration, WarmupCosineSchedule, standard_handlers

__all__ = ["SliceBatches", "SliceTrainingConfig", "check_slices", "fit_slices", "train_autoencoder"]


@dataclass
class SliceTrainingConfig:
    """Settings of one slice-network training run.

    Args:
        iterations: optimiser steps.
        batch_size: slices per step (per process in distributed mode).
        lr: Adam learning rate: linear warm-up over ``warmup`` steps, then cosine decay to 5%.
        warmup: warm-up steps.
        p_uncond: autoencoder only: probability of training a slice with the null class.
        flip: random left-right flips.
        loss: ``"mse"`` or ``"l1"``.
        log_every: iterations between log rows.
        checkpoint_every: iterations between resumable checkpoints (one engine epoch).
        seed: random seed (batches, flips, dropping, corruption).
    """

    iterations: int = 400
    batch_size: int = 16
    lr: float = 2e-3
    warmup: int = 20
    p_uncond: float = 0.1
    flip: bool = True
    loss: str = "mse"
    log_every: int = 10
    checkpoint_every: int = 100
    seed: int = 0

    def __post_init__(self) -> None:
        if self.iterations < 0 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError(f"SliceTrainingConfig: iterations >= 0, batch_size >= 1 and lr > 0 needed, got {self.iterations}, {self.batch_size}, {self.lr}.")
        if not 0.0 <= self.p_uncond < 1.0:
            raise ValueError(f"SliceTrainingConfig: p_uncond must be in [0, 1), got {self.p_uncond}.")
        if self.loss not in ("mse", "l1"):
            raise ValueError(f"SliceTrainingConfig: loss must be 'mse' or 'l1', got {self.loss!r}.")
        if self.log_every < 1 or self.checkpoint_every < 1:
            raise ValueError("SliceTrainingConfig: log_every and checkpoint_every must be >= 1.")

    @property
    def epoch_length(self) -> int:
        """Iterations per engine epoch: ``checkpoint_every`` (at most ``iterations``)."""
        return max(min(self.checkpoint_every, self.iterations), 1)

    @property
    def max_epochs(self) -> int:
        """Engine epochs: ``iterations`` rounded up to whole epochs."""
        return max(math.ceil(self.iterations / self.epoch_length), 1)


def check_slices(owner: str, images: torch.Tensor) -> torch.Tensor:
    """``images`` as float ``(N, 1, H, W)`` in [0, 1], or a ValueError naming ``owner`` and what was found."""
    images = torch.as_tensor(images)
    if images.dim() != 4 or images.shape[1] != 1 or images.shape[0] < 1:
        raise ValueError(f"{owner}: images must be (N, 1, H, W) with N >= 1, got {tuple(images.shape)}.")
    if not torch.isfinite(images).all() or float(images.min()) < 0.0 or float(images.max()) > 1.0:
        raise ValueError(f"{owner}: images must be finite and in [0, 1].")
    return images.float().contiguous()


class SliceBatches(RandomBatches):
    """``num_batches`` random batches ``{"image": x, "label": x, "class_label": c}`` of ``images`` (with replacement,
    flipped left-right at random): the autoencoder's input and target are the same slices; ``class_label`` holds the
    slices' classes, each dropped to the null class ``num_classes`` with probability ``p_uncond`` (absent without
    ``class_labels``). Subclasses change :meth:`pair` (e.g. a corrupted input). Under a process group each rank draws
    from its own shard.

    Args:
        images: ``(N, 1, H, W)`` in [0, 1].
        class_labels: int ``(N,)`` in ``[0, num_classes)``, or None.
        num_classes: ``K`` (the null class id); required with ``class_labels``.
        batch_size, num_batches, p_uncond, flip, seed: as named.
        shard_record: where rank 0 records the shards (``data_shards.json``) in distributed mode.
    """

    def __init__(self, images: torch.Tensor, class_labels: torch.Tensor | None = None, num_classes: int | None = None, batch_size: int = 16,
                 num_batches: int = 1, p_uncond: float = 0.0, flip: bool = True, seed: int = 0, shard_record: str | Path | None = None) -> None:
        rank, world = rank_and_world_size()
        super().__init__(num_batches, seed + rank)
        owner = type(self).__name__
        images = check_slices(owner, images)
        if class_labels is not None:
            labels = torch.as_tensor(class_labels)
            n, k = images.shape[0], num_classes
            if k is None or labels.shape != (n,) or labels.dtype not in (torch.int32, torch.int64) or int(labels.min()) < 0 or int(labels.max()) >= k:
                raise ValueError(f"{owner}: class_labels must be integer (N,) = ({n},) in [0, {k}), got {tuple(labels.shape)} {labels.dtype}"
                                 + (f" in [{int(labels.min())}, {int(labels.max())}]" if labels.numel() else "") + ".")
            class_labels = labels.long()
        if not 0.0 <= p_uncond < 1.0 or batch_size < 1:
            raise ValueError(f"{owner}: batch_size >= 1 and p_uncond in [0, 1) needed, got {batch_size} and {p_uncond}.")
        if world > 1:
            record = Path(shard_record) if shard_record and rank == 0 else None
            if record is not None:
                record.parent.mkdir(parents=True, exist_ok=True)
            idx = shard_indices(images.shape[0], seed, record, owner)
            images = images[idx]
            class_labels = class_labels[idx] if class_labels is not None else None
        self.images, self.class_labels, self.num_classes = images, class_labels, num_classes
        self.batch_size, self.p_uncond, self.flip = int(batch_size), float(p_uncond), bool(flip)

    def clean(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(indices (B,), slices (B, 1, H, W))`` of a random batch, flipped at random."""
        idx = torch.randint(self.images.shape[0], (self.batch_size,), generator=self.g)
        x = self.images[idx]
        if self.flip:
            flip = torch.rand(self.batch_size, generator=self.g) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-2), x)
        return idx, x

    def pair(self, clean: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(input, target)`` for clean slices; the autoencoder reconstructs its input."""
        return clean, clean

    def sample(self) -> dict[str, torch.Tensor]:
        idx, x = self.clean()
        inputs, target = self.pair(x)
        batch = {"image": inputs, "label": target}
        if self.class_labels is not None:
            labels = self.class_labels[idx]
            drop = torch.rand(labels.shape[0], generator=self.g) < self.p_uncond
            batch["class_label"] = torch.where(drop, torch.full_like(labels, int(self.num_classes)), labels)
        return batch


def fit_slices(network: nn.Module, batches: SliceBatches, config: SliceTrainingConfig, output_dir: str | Path,
               device: str | torch.device = "cpu", resume: bool = True, title: str = "slices") -> Path:
    """Train ``network`` on ``batches`` with MONAI's :class:`~monai.engines.SupervisedTrainer` and the standard handlers
    (the same engine as the bundle's train.json; the class label, when the batches carry one, is the network's second
    input). Writes ``model.pt`` (CPU ``state_dict``), ``checkpoint_epoch=N.pt``, ``train_log.csv`` and
    ``loss_curve.png`` to ``output_dir`` and returns ``model.pt``'s path; a run with checkpoints there resumes."""
    from monai.engines import PrepareBatchExtraInput, SupervisedTrainer
    from monai.engines.utils import default_prepare_batch
    from monai.inferers import SimpleInferer

    device = torch.device(device)
    network = network.to(device)
    optimizer = torch.optim.Adam(network.parameters(), lr=config.lr)
    scheduler = WarmupCosineSchedule(optimizer, max(config.iterations, 1), warmup_steps=config.warmup, floor=0.05)
    extra = ["class_label"] if batches.class_labels is not None else []
    loader = torch.utils.data.DataLoader(batches, batch_size=None, num_workers=0)
    output_dir = Path(output_dir)
    handlers = standard_handlers(output_dir, {"network": network, "optimizer": optimizer, "lr_scheduler": scheduler}, {"model.pt": network},
                                 lr_scheduler=scheduler, seed=config.seed, dataset=batches, log_every=config.log_every, resume=resume,
                                 title=f"{title} training loss")
    trainer = SupervisedTrainer(device=device, max_epochs=config.max_epochs, epoch_length=config.epoch_length, train_data_loader=loader,
                                network=network, optimizer=optimizer, loss_function=nn.MSELoss() if config.loss == "mse" else nn.L1Loss(),
                                inferer=SimpleInferer(), prepare_batch=PrepareBatchExtraInput(extra) if extra else default_prepare_batch,
                                iteration_update=SupervisedIteration(), train_handlers=handlers, decollate=False)
    trainer.run()
    unwrap(network).eval()
    return output_dir / "model.pt"


def train_autoencoder(network: nn.Module, images: torch.Tensor, class_labels: torch.Tensor, config: SliceTrainingConfig, output_dir: str | Path,
                      device: str | torch.device = "cpu", resume: bool = True) -> Path:
    """Train a :class:`~medgen_core.networks.conditional_autoencoder.ConditionalAutoencoder` (``forward(image, class_labels)``,
    ``num_classes`` and ``image_size`` attributes) to reconstruct ``images`` ``(N, 1, S, S)`` in [0, 1] with classes
    ``class_labels`` ``(N,)`` in ``[0, K)`` (:func:`fit_slices`); returns ``model.pt``'s path."""
    k = int(getattr(unwrap(network), "num_classes"))
    size = getattr(unwrap(network), "image_size", None)
    if size is not None and tuple(torch.as_tensor(images).shape[-2:]) != (size, size):
        raise ValueError(f"train_autoencoder: images are {tuple(torch.as_tensor(images).shape[-2:])} but the network expects {size}x{size}.")
    batches = SliceBatches(images, class_labels, k, config.batch_size, config.epoch_length, config.p_uncond, config.flip, config.seed,
                           Path(output_dir) / "data_shards.json")
    return fit_slices(network, batches, config, output_dir, device, resume, title="autoencoder")
