"""Training of the latent-space lab's image networks on 2D slices: the conditional autoencoder
(:class:`AutoencoderTrainer`) and, sharing the loop, the restoration network
(:class:`~medgen_core.training.restoration.RestorationTrainer`).

The loop (:class:`SliceTrainer`) is the one of the other MedGen trainers: Adam with a short warm-up and
cosine decay, random left-right flips (axis ``H`` of ``(N, 1, H, W)``; the MNI152 2009 template is
symmetric), a resumable ``checkpoint.pt`` (read with ``weights_only=True``), ``train_log.csv``,
``loss_curve.png``, ``model.pt`` (CPU ``state_dict``), tqdm progress, and multi-process training under
``torchrun`` (DDP, disjoint slice shards in ``data_shards.json``, losses averaged over ranks, rank 0
alone writes).

The autoencoder is trained for reconstruction (mean squared error) with class dropout: with
probability ``p_uncond`` a label is replaced by the null class ``K``, so the network also learns to
reconstruct without knowing the class.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from medgen_core.training.base import CSVLogger, IterationLoop, cpu_state_dict
from medgen_core.training.distributed import resolve_distributed, shard_indices, wrap_ddp

__all__ = ["AutoencoderTrainer", "SliceTrainer", "SliceTrainingConfig", "check_slices"]

logger = logging.getLogger(__name__)


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
        log_every: iterations between CSV rows.
        checkpoint_every: iterations between resumable checkpoints.
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


def check_slices(owner: str, images: torch.Tensor) -> torch.Tensor:
    """``images`` as float ``(N, 1, H, W)`` in [0, 1], or a ValueError naming ``owner`` and what was found."""
    images = torch.as_tensor(images)
    if images.dim() != 4 or images.shape[1] != 1 or images.shape[0] < 1:
        raise ValueError(f"{owner}: images must be (N, 1, H, W) with N >= 1, got {tuple(images.shape)}.")
    if not torch.isfinite(images).all() or float(images.min()) < 0.0 or float(images.max()) > 1.0:
        raise ValueError(f"{owner}: images must be finite and in [0, 1].")
    return images.float().contiguous()


class SliceTrainer(IterationLoop):
    """The shared loop; subclasses implement :meth:`make_batch` and :meth:`predict`.

    Args:
        network: the network to train.
        images: training slices ``(N, 1, H, W)`` in [0, 1].
        config: :class:`SliceTrainingConfig`.
        output_dir: where ``model.pt``, ``checkpoint.pt``, ``train_log.csv`` and ``loss_curve.png`` go.
        device: torch device (default CPU).
        distributed: train with DDP; None = "if a process group is initialised".
        labels: optional per-slice integer tensor ``(N,)`` sharded together with the images.
    """

    name = "slices"

    @property
    def progress_name(self) -> str:  # type: ignore[override]
        return self.name

    def __init__(self, network: nn.Module, images: torch.Tensor, config: SliceTrainingConfig, output_dir: str | Path,
                 device: str | torch.device = "cpu", distributed: bool | None = None, labels: torch.Tensor | None = None) -> None:
        images = check_slices(type(self).__name__, images)
        self.config = config
        self.device = torch.device(device)
        self.net = network.to(self.device)
        self.distributed, self.rank, self.world_size = resolve_distributed(distributed, type(self).__name__)
        self.is_main = self.rank == 0
        self.output_dir = Path(output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self._seed = config.seed + self.rank
        self.g = torch.Generator().manual_seed(self._seed)
        torch.manual_seed(config.seed)
        if self.distributed:
            record = self.output_dir / "data_shards.json" if self.is_main else None
            idx = shard_indices(images.shape[0], config.seed, record, type(self).__name__)
            images = images[idx]
            labels = labels[idx] if labels is not None else None
        self.images, self.labels = images, labels
        self.opt = torch.optim.Adam(self.net.parameters(), lr=config.lr)
        self.model = wrap_ddp(self.net, self.device) if self.distributed else self.net
        self.iteration = 0
        self.log = CSVLogger(self.output_dir / "train_log.csv", ["iteration", "loss", "lr"]) if self.is_main else None

    # -- data -----------------------------------------------------------------------------------
    def sample_indices(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(indices (B,), clean slices (B, 1, H, W))`` of a random batch, flipped at random."""
        c = self.config
        idx = torch.randint(self.images.shape[0], (c.batch_size,), generator=self.g)
        x = self.images[idx]
        if c.flip:
            flip = torch.rand(c.batch_size, generator=self.g) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-2), x)
        return idx, x

    def make_batch(self) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """``(network inputs, target)`` on the device."""
        raise NotImplementedError

    # -- loop -----------------------------------------------------------------------------------
    def _set_lr(self) -> float:
        c = self.config
        if self.iteration < c.warmup:
            lr = c.lr * (self.iteration + 1) / c.warmup
        else:
            span = max(c.iterations - c.warmup, 1)
            t = min(self.iteration - c.warmup, span) / span
            lr = c.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t)))
        for group in self.opt.param_groups:
            group["lr"] = lr
        return lr

    def loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(pred, target) if self.config.loss == "mse" else F.l1_loss(pred, target)

    def train_step(self) -> dict[str, float]:
        """One optimiser step on a fresh batch."""
        lr = self._set_lr()
        inputs, target = self.make_batch()
        loss = self.loss(self.model(*inputs), target)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return {"loss": float(loss.detach()), "lr": lr}

    def export_state(self) -> dict[str, torch.Tensor]:
        """The weights to ship: contiguous CPU tensors."""
        return cpu_state_dict(self.net)


class AutoencoderTrainer(SliceTrainer):
    """Trains a :class:`~medgen_core.networks.conditional_autoencoder.ConditionalAutoencoder` to reconstruct slices.

    Args:
        network: the autoencoder (``forward(image, class_labels)``, ``num_classes`` attribute).
        images: ``(N, 1, S, S)`` in [0, 1], ``S`` = the network's ``image_size``.
        class_labels: int ``(N,)`` in ``[0, K)``.
        config, output_dir, device, distributed: see :class:`SliceTrainer`.
    """

    name = "autoencoder"

    def __init__(self, network: nn.Module, images: torch.Tensor, class_labels: torch.Tensor, config: SliceTrainingConfig,
                 output_dir: str | Path, device: str | torch.device = "cpu", distributed: bool | None = None) -> None:
        k = int(getattr(network, "num_classes"))
        labels = torch.as_tensor(class_labels)
        n = torch.as_tensor(images).shape[0]
        if labels.shape != (n,) or labels.dtype not in (torch.int32, torch.int64) or (n and (int(labels.min()) < 0 or int(labels.max()) >= k)):
            raise ValueError(f"AutoencoderTrainer: class_labels must be integer (N,) = ({n},) in [0, {k}), got {tuple(labels.shape)} {labels.dtype}.")
        size = getattr(network, "image_size", None)
        if size is not None and tuple(torch.as_tensor(images).shape[-2:]) != (size, size):
            raise ValueError(f"AutoencoderTrainer: images are {tuple(torch.as_tensor(images).shape[-2:])} but the network expects {size}x{size}.")
        self.num_classes = k
        super().__init__(network, images, config, output_dir, device, distributed, labels=labels.long())

    def make_batch(self) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        idx, x = self.sample_indices()
        labels = self.labels[idx]
        drop = torch.rand(labels.shape[0], generator=self.g) < self.config.p_uncond
        labels = torch.where(drop, torch.full_like(labels, self.num_classes), labels)
        x = x.to(self.device)
        return (x, labels.to(self.device)), x
