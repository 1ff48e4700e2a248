"""Class-conditional denoising diffusion (DDPM) training of a MONAI ``DiffusionModelUNet`` on 2D slices.

The network predicts the noise added by MONAI's :class:`~monai.networks.schedulers.DDPMScheduler`
(linear beta schedule, ``num_train_timesteps`` steps) through :class:`~monai.inferers.DiffusionInferer`;
the loss is the mean squared error. Images ``(N, 1, H, W)`` in [0, 1] are scaled to [-1, 1] and flipped
left-right at random (axis ``H``, the x / R-L axis of an axial slice: the MNI152 2009 *symmetric*
template stays anatomically plausible under this flip).

Class conditioning uses the UNet's class embedding (``num_class_embeds = K + 1``): classes ``0..K-1``
plus a "null" class ``K``, to which each training label is dropped with probability ``p_uncond``, so the
same network is also unconditional and can be sampled with classifier-free guidance
(:class:`medgen_core.inference.diffusion_sampling.DiffusionSampler`).

Space-to-depth: a network with ``in_channels = out_channels = f*f`` (e.g. 4) works on
``pixel_unshuffle(x, f)``, i.e. on ``(f*f, H/f, W/f)`` tensors. Every level of the UNet then runs at
``1/f`` of the resolution, about ``f*f`` times faster, while each 2 mm pixel is still modelled (the
"patch size 2" of diffusion transformers). Gaussian noise is i.i.d. per pixel, so the diffusion process
is the same in both layouts. ``f = 1`` (``in_channels = 1``) is the plain layout.

Weights are tracked with an exponential moving average (EMA, the usual DDPM practice); ``model.pt``
holds the EMA weights when ``ema_decay > 0``.

Multi-process training (``torchrun``) mirrors
:class:`~medgen_core.training.super_resolution.SuperResolutionTrainer`: DDP-wrapped network, disjoint
slice shards (:class:`~torch.utils.data.DistributedSampler`, recorded in ``data_shards.json``), losses
averaged over ranks, rank 0 alone writes.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.inferers import DiffusionInferer
from monai.networks.schedulers import DDPMScheduler

from medgen_core.networks.diffusion import PREDICTION_TYPES, null_class_id, space_to_depth_factor
from medgen_core.training.base import CSVLogger, IterationLoop, cpu_state_dict
from medgen_core.training.distributed import resolve_distributed, shard_indices, wrap_ddp

__all__ = ["DiffusionTrainer", "DiffusionTrainingConfig"]

logger = logging.getLogger(__name__)


@dataclass
class DiffusionTrainingConfig:
    """Settings of one diffusion training run.

    Args:
        iterations: optimiser steps.
        batch_size: slices per step (per process in distributed mode).
        lr: AdamW learning rate: linear warm-up over ``warmup`` steps, then cosine decay to 1%.
        num_train_timesteps: diffusion steps ``T`` of the DDPM noise schedule (linear betas 1e-4..2e-2).
        p_uncond: probability of replacing a label by the null class (classifier-free guidance training).
        ema_decay: EMA decay of the saved weights (0 = save the raw weights); warmed up as
            ``min(ema_decay, (1 + i) / (10 + i))``.
        warmup: learning-rate warm-up steps.
        weight_decay: AdamW weight decay.
        flip: random left-right flips (axis ``H`` of ``(N, 1, H, W)``).
        log_every: iterations between CSV rows.
        checkpoint_every: iterations between resumable checkpoints.
        seed: random seed (batches, timesteps, noise, label dropping).
        bf16: run forward/backward under bfloat16 autocast (about 2x faster on CPUs with AVX512-BF16 / AMX
            and on GPUs); the loss stays in float32.
        prediction_type: what the network regresses: ``"epsilon"`` (the noise), ``"v_prediction"``
            (``v = sqrt(a_t) eps - sqrt(1 - a_t) x0``, Salimans and Ho 2022) or ``"sample"`` (``x0``). With few
            DDIM steps and little data, v-prediction learns the clean image at high noise levels, where an
            epsilon network's implied ``x0`` is unreliable (its error is amplified by ``1 / sqrt(a_t)``).
    """

    iterations: int = 3000
    batch_size: int = 16
    lr: float = 5e-4
    num_train_timesteps: int = 1000
    p_uncond: float = 0.1
    ema_decay: float = 0.999
    warmup: int = 50
    weight_decay: float = 0.0
    flip: bool = True
    log_every: int = 25
    checkpoint_every: int = 250
    seed: int = 0
    bf16: bool = True
    prediction_type: str = "epsilon"

    def __post_init__(self) -> None:
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"DiffusionTrainingConfig: prediction_type must be one of {PREDICTION_TYPES}, got {self.prediction_type!r}.")
        if self.iterations < 0 or self.batch_size < 1:
            raise ValueError(f"DiffusionTrainingConfig: iterations must be >= 0 and batch_size >= 1, got {self.iterations} and {self.batch_size}.")
        if self.num_train_timesteps < 2:
            raise ValueError(f"DiffusionTrainingConfig: num_train_timesteps must be >= 2, got {self.num_train_timesteps}.")
        if not 0.0 <= self.p_uncond < 1.0:
            raise ValueError(f"DiffusionTrainingConfig: p_uncond must be in [0, 1), got {self.p_uncond}.")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"DiffusionTrainingConfig: ema_decay must be in [0, 1), got {self.ema_decay}.")
        if self.log_every < 1 or self.checkpoint_every < 1:
            raise ValueError("DiffusionTrainingConfig: log_every and checkpoint_every must be >= 1.")


class DiffusionTrainer(IterationLoop):
    """Trains a MONAI ``DiffusionModelUNet`` as a (class-conditional) DDPM and writes to ``output_dir``:

    ``model.pt`` (EMA ``state_dict``, CPU tensors), ``checkpoint.pt`` (resumable: network, EMA, optimiser,
    iteration; read with ``weights_only=True``), ``train_log.csv`` (iteration, loss, lr) and
    ``loss_curve.png``. In distributed mode also ``data_shards.json``.

    Args:
        network: ``DiffusionModelUNet(spatial_dims=2, in_channels=f*f, out_channels=f*f, num_class_embeds=K+1, ...)``
            (``num_class_embeds=None`` for an unconditional model).
        images: training slices ``(N, 1, H, W)`` in [0, 1]; ``H`` and ``W`` divisible by ``f`` times the
            UNet's total down-sampling.
        class_labels: int64 ``(N,)`` in ``[0, K)``, or None (every slice trained as the null class, i.e.
            unconditionally).
        config: :class:`DiffusionTrainingConfig`.
        output_dir: where outputs go.
        device: torch device. Defaults to CPU.
        distributed: train with DDP. ``None`` (default) means "if a process group is initialised".
    """

    progress_name = "DDPM"

    def __init__(
        self,
        network: nn.Module,
        images: torch.Tensor,
        class_labels: torch.Tensor | None,
        config: DiffusionTrainingConfig,
        output_dir: str | Path,
        device: str | torch.device = "cpu",
        distributed: bool | None = None,
    ) -> None:
        images = torch.as_tensor(images)
        if images.dim() != 4 or images.shape[1] != 1 or images.shape[0] < 1:
            raise ValueError(f"DiffusionTrainer: images must be (N, 1, H, W) with N >= 1, got {tuple(images.shape)}.")
        if not torch.isfinite(images).all() or float(images.min()) < 0.0 or float(images.max()) > 1.0:
            raise ValueError("DiffusionTrainer: images must be finite and in [0, 1].")
        self.factor = space_to_depth_factor(network)
        if images.shape[-2] % self.factor or images.shape[-1] % self.factor:
            raise ValueError(f"DiffusionTrainer: image size {tuple(images.shape[-2:])} is not divisible by the space-to-depth factor {self.factor}.")
        self.null_class = null_class_id(network)
        if class_labels is not None:
            class_labels = torch.as_tensor(class_labels)
            if self.null_class is None:
                raise ValueError("DiffusionTrainer: class_labels were given but the network has no class embedding (num_class_embeds=None).")
            if class_labels.shape != (images.shape[0],) or class_labels.dtype not in (torch.int32, torch.int64):
                raise ValueError(f"DiffusionTrainer: class_labels must be integer (N,) = ({images.shape[0]},), "
                                 f"got {tuple(class_labels.shape)} {class_labels.dtype}.")
            if int(class_labels.min()) < 0 or int(class_labels.max()) >= self.null_class:
                raise ValueError(f"DiffusionTrainer: class_labels must be in [0, {self.null_class}) (id {self.null_class} is the null class of "
                                 f"num_class_embeds={self.null_class + 1}), got {int(class_labels.min())}..{int(class_labels.max())}.")
            class_labels = class_labels.long()
        self.config = config
        self.device = torch.device(device)
        self.net = network.to(self.device)
        self.distributed, self.rank, self.world_size = resolve_distributed(distributed, "DiffusionTrainer")
        self.is_main = self.rank == 0
        self.output_dir = Path(output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self._seed = config.seed + self.rank  # each rank draws its own batch stream
        self.g = torch.Generator().manual_seed(self._seed)
        torch.manual_seed(config.seed)
        self.slice_indices: list[int] | None = self._shard(images.shape[0]) if self.distributed else None
        if self.slice_indices is not None:
            images = images[self.slice_indices]
            class_labels = class_labels[self.slice_indices] if class_labels is not None else None
        self.images, self.class_labels = images.float().contiguous(), class_labels
        self.scheduler = DDPMScheduler(num_train_timesteps=config.num_train_timesteps, prediction_type=config.prediction_type)
        self.inferer = DiffusionInferer(self.scheduler)
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.ema = copy.deepcopy(self.net).eval().requires_grad_(False) if config.ema_decay > 0 else None
        self.model = self._wrap(self.net)  # forward passes that update weights go through this
        self.iteration = 0
        self.log = CSVLogger(self.output_dir / "train_log.csv", ["iteration", "loss", "lr"]) if self.is_main else None

    # -- distributed ----------------------------------------------------------------------------
    def _wrap(self, module: nn.Module) -> nn.Module:
        return wrap_ddp(module, self.device) if self.distributed else module

    def _shard(self, num_slices: int) -> list[int]:
        """This rank's slice indices (disjoint across ranks); rank 0 records all shards in ``data_shards.json``."""
        return shard_indices(num_slices, self.config.seed, self.output_dir / "data_shards.json" if self.is_main else None, "DiffusionTrainer")

    # -- data -----------------------------------------------------------------------------------
    def make_batch(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(x, labels)``: slices ``(B, f*f, H/f, W/f)`` in [-1, 1] (flipped, space-to-depth) and the
        class ids ``(B,)`` after label dropping (None for a network without class embedding)."""
        c = self.config
        idx = torch.randint(self.images.shape[0], (c.batch_size,), generator=self.g)
        x = self.images[idx] * 2.0 - 1.0
        if c.flip:
            flip = torch.rand(c.batch_size, generator=self.g) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-2), x)
        if self.factor > 1:
            x = F.pixel_unshuffle(x, self.factor)
        labels = None
        if self.null_class is not None:
            labels = self.class_labels[idx] if self.class_labels is not None else torch.full((c.batch_size,), self.null_class, dtype=torch.long)
            drop = torch.rand(c.batch_size, generator=self.g) < c.p_uncond
            labels = torch.where(drop, torch.full_like(labels, self.null_class), labels)
        return x.to(self.device), (labels.to(self.device) if labels is not None else None)

    # -- checkpointing --------------------------------------------------------------------------
    def extra_checkpoint_state(self) -> dict:
        return {"ema": self.ema.state_dict()} if self.ema is not None else {}

    def load_extra_checkpoint_state(self, state: dict) -> None:
        if self.ema is not None:
            self.ema.load_state_dict(state.get("ema", state["net"]))

    # -- steps ----------------------------------------------------------------------------------
    def _set_lr(self) -> float:
        c = self.config
        if self.iteration < c.warmup:
            lr = c.lr * (self.iteration + 1) / c.warmup
        else:
            t = min(self.iteration - c.warmup, max(c.iterations - c.warmup, 1)) / max(c.iterations - c.warmup, 1)
            lr = c.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t)))
        for group in self.opt.param_groups:
            group["lr"] = lr
        return lr

    @torch.no_grad()
    def _update_ema(self) -> None:
        if self.ema is None:
            return
        decay = min(self.config.ema_decay, (1 + self.iteration) / (10 + self.iteration))
        for e, p in zip(self.ema.parameters(), self.net.parameters()):
            e.lerp_(p.detach(), 1.0 - decay)
        for e, b in zip(self.ema.buffers(), self.net.buffers()):
            e.copy_(b)

    def train_step(self) -> dict[str, float]:
        """One DDPM step: noise a batch at random timesteps and regress the target (noise, v or x0; MSE)."""
        lr = self._set_lr()
        x, labels = self.make_batch()
        noise = torch.randn(x.shape, generator=self.g).to(self.device)
        timesteps = torch.randint(self.config.num_train_timesteps, (x.shape[0],), generator=self.g).to(self.device)
        model = partial(self.model, class_labels=labels) if labels is not None else self.model
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.config.bf16):
            pred = self.inferer(inputs=x, diffusion_model=model, noise=noise, timesteps=timesteps)
        if self.config.prediction_type == "v_prediction":
            target = self.scheduler.get_velocity(x, noise, timesteps)
        elif self.config.prediction_type == "sample":
            target = x
        else:
            target = noise
        loss = F.mse_loss(pred.float(), target.float())
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self._update_ema()
        return {"loss": float(loss.detach()), "lr": lr}

    def export_state(self) -> dict[str, torch.Tensor]:
        """The weights to ship: EMA (or raw) ``state_dict`` as contiguous CPU tensors."""
        source = self.ema if self.ema is not None else self.net
        return cpu_state_dict(source)

    def curve_title(self) -> str:
        return f"DDPM training MSE ({self.config.prediction_type} target)"
