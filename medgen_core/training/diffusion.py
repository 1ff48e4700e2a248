"""Class-conditional denoising diffusion (DDPM) training of a MONAI ``DiffusionModelUNet`` on 2D slices, on MONAI's engines.

The network predicts the noise added by MONAI's :class:`~monai.networks.schedulers.DDPMScheduler` (linear beta
schedule, ``num_train_timesteps`` steps) through :class:`ClassConditionedDiffusionInferer` (MONAI's
:class:`~monai.inferers.DiffusionInferer` that passes the class labels); the target is made by
:class:`NoisePrepareBatch` (MONAI's :class:`~monai.engines.DiffusionPrepareBatch`: noise, ``v`` or ``x0``) and the
loss is the mean squared error: one :class:`~medgen_core.training.engines.SupervisedIteration` of a
:class:`~monai.engines.SupervisedTrainer` per step (the bundle's ``configs/train.json``). Images ``(N, 1, H, W)`` in
[0, 1] are scaled to [-1, 1] and flipped left-right at random (axis ``H``, the x / R-L axis of an axial slice: the
MNI152 2009 *symmetric* template stays anatomically plausible under this flip) by :class:`DiffusionBatches`.

Class conditioning uses the UNet's class embedding (``num_class_embeds = K + 1``): classes ``0..K-1`` plus a "null"
class ``K``, to which each training label is dropped with probability ``p_uncond``, so the same network is also
unconditional and can be sampled with classifier-free guidance
(:class:`medgen_core.inference.diffusion_sampling.DiffusionSampler`).

Space-to-depth: a network with ``in_channels = out_channels = f*f`` (e.g. 4) works on ``pixel_unshuffle(x, f)``, i.e.
on ``(f*f, H/f, W/f)`` tensors (:func:`~medgen_core.networks.diffusion.space_to_depth_factor`). Every level of the
UNet then runs at ``1/f`` of the resolution, about ``f*f`` times faster, while each 2 mm pixel is still modelled.
Gaussian noise is i.i.d. per pixel, so the diffusion process is the same in both layouts.

Weights are tracked with an exponential moving average (:class:`ExponentialMovingAverage`, a handler; the usual DDPM
practice); ``model.pt`` holds the EMA weights when ``ema_decay > 0``. Under ``torchrun`` each rank draws its batches
from its own shard of the slices (``data_shards.json``).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.engines import DiffusionPrepareBatch
from monai.inferers import DiffusionInferer

from medgen_core.networks.diffusion import PREDICTION_TYPES, null_class_id, space_to_depth_factor
from medgen_core.training.base import unwrap
from medgen_core.training.distributed import rank_and_world_size, shard_indices
from medgen_core.training.engines import Events, RandomBatches

__all__ = ["ClassConditionedDiffusionInferer", "DiffusionBatches", "ExponentialMovingAverage", "NoisePrepareBatch"]


class DiffusionBatches(RandomBatches):
    """``num_batches`` random batches ``{"image": (B, f*f, H/f, W/f) in [-1, 1], "class_label": (B,)}`` of ``images``:
    random slices (with replacement), flipped left-right with probability 0.5 (``flip``), space-to-depth by the
    network's factor ``f``, and class ids dropped to the null class ``K`` with probability ``p_uncond``. Without class
    embedding there is no ``"class_label"``. Under a process group each rank draws from its own shard.

    Args:
        images: training slices ``(N, 1, H, W)`` in [0, 1]; ``H`` and ``W`` divisible by ``f``.
        class_labels: int ``(N,)`` in ``[0, K)``, or None (every slice trained as the null class).
        network: the ``DiffusionModelUNet`` (its ``in_channels`` and ``num_class_embeds`` decide ``f`` and ``K``).
        batch_size, num_batches, p_uncond, flip, seed: as named.
        shard_record: where rank 0 records the shards (``data_shards.json``) in distributed mode.
    """

    def __init__(self, images: torch.Tensor, class_labels: torch.Tensor | None, network: nn.Module, batch_size: int, num_batches: int,
                 p_uncond: float = 0.1, flip: bool = True, seed: int = 0, shard_record: str | Path | None = None) -> None:
        rank, world = rank_and_world_size()
        super().__init__(num_batches, seed + rank)
        images = torch.as_tensor(images)
        if images.dim() != 4 or images.shape[1] != 1 or images.shape[0] < 1:
            raise ValueError(f"DiffusionBatches: images must be (N, 1, H, W) with N >= 1, got {tuple(images.shape)}.")
        if not torch.isfinite(images).all() or float(images.min()) < 0.0 or float(images.max()) > 1.0:
            raise ValueError("DiffusionBatches: images must be finite and in [0, 1].")
        if batch_size < 1 or not 0.0 <= p_uncond < 1.0:
            raise ValueError(f"DiffusionBatches: batch_size >= 1 and p_uncond in [0, 1) needed, got {batch_size} and {p_uncond}.")
        network = unwrap(network)
        self.factor = space_to_depth_factor(network)
        if images.shape[-2] % self.factor or images.shape[-1] % self.factor:
            raise ValueError(f"DiffusionBatches: image size {tuple(images.shape[-2:])} is not divisible by the space-to-depth factor {self.factor}.")
        self.null_class = null_class_id(network)
        if class_labels is not None:
            class_labels = torch.as_tensor(class_labels)
            if self.null_class is None:
                raise ValueError("DiffusionBatches: class_labels were given but the network has no class embedding (num_class_embeds=None).")
            if class_labels.shape != (images.shape[0],) or class_labels.dtype not in (torch.int32, torch.int64):
                raise ValueError(f"DiffusionBatches: class_labels must be integer (N,) = ({images.shape[0]},), "
                                 f"got {tuple(class_labels.shape)} {class_labels.dtype}.")
            if int(class_labels.min()) < 0 or int(class_labels.max()) >= self.null_class:
                raise ValueError(f"DiffusionBatches: class_labels must be in [0, {self.null_class}) (id {self.null_class} is the null class of "
                                 f"num_class_embeds={self.null_class + 1}), got {int(class_labels.min())}..{int(class_labels.max())}.")
            class_labels = class_labels.long()
        if world > 1:
            record = Path(shard_record) if shard_record and rank == 0 else None
            if record is not None:
                record.parent.mkdir(parents=True, exist_ok=True)
            idx = shard_indices(images.shape[0], seed, record, "DiffusionBatches")
            images = images[idx]
            class_labels = class_labels[idx] if class_labels is not None else None
        self.images, self.class_labels = images.float().contiguous(), class_labels
        self.batch_size, self.p_uncond, self.flip = int(batch_size), float(p_uncond), bool(flip)

    def sample(self) -> dict[str, torch.Tensor]:
        b = self.batch_size
        idx = torch.randint(self.images.shape[0], (b,), generator=self.g)
        x = self.images[idx] * 2.0 - 1.0
        if self.flip:
            flip = torch.rand(b, generator=self.g) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-2), x)
        if self.factor > 1:
            x = F.pixel_unshuffle(x, self.factor)
        batch = {"image": x}
        if self.null_class is not None:
            labels = self.class_labels[idx] if self.class_labels is not None else torch.full((b,), self.null_class, dtype=torch.long)
            drop = torch.rand(b, generator=self.g) < self.p_uncond
            batch["class_label"] = torch.where(drop, torch.full_like(labels, self.null_class), labels)
        return batch


class NoisePrepareBatch(DiffusionPrepareBatch):
    """MONAI's :class:`~monai.engines.DiffusionPrepareBatch` with the target of ``prediction_type``: the noise
    (``"epsilon"``), ``v = sqrt(a_t) eps - sqrt(1 - a_t) x0`` (``"v_prediction"``, Salimans and Ho 2022) or ``x0``
    (``"sample"``); the batch's ``"class_label"``, when present, becomes the inferer's ``condition``."""

    def __init__(self, scheduler: Any, prediction_type: str = "epsilon", condition_name: str = "class_label") -> None:
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"NoisePrepareBatch: prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}.")
        super().__init__(num_train_timesteps=int(scheduler.num_train_timesteps), condition_name=condition_name)
        self.scheduler, self.prediction_type, self.condition_key = scheduler, prediction_type, condition_name

    def get_target(self, images: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        if self.prediction_type == "v_prediction":
            return self.scheduler.get_velocity(images, noise, timesteps)
        return images if self.prediction_type == "sample" else noise

    def __call__(self, batchdata: Mapping[str, Any], device: Any = None, non_blocking: bool = False, **kwargs: Any) -> Any:
        # MONAI reads batchdata[condition_name] unconditionally; an unconditional batch has no class labels
        self.condition_name = self.condition_key if isinstance(batchdata, Mapping) and self.condition_key in batchdata else None
        return super().__call__(batchdata, device, non_blocking, **kwargs)


class ClassConditionedDiffusionInferer(DiffusionInferer):
    """MONAI's :class:`~monai.inferers.DiffusionInferer` whose ``condition`` is the UNet's ``class_labels`` (its class
    embedding), not cross-attention context."""

    def __call__(self, inputs: torch.Tensor, diffusion_model: Any, noise: torch.Tensor, timesteps: torch.Tensor,  # type: ignore[override]
                 condition: torch.Tensor | None = None, mode: str = "crossattn", seg: torch.Tensor | None = None) -> torch.Tensor:
        model = partial(diffusion_model, class_labels=condition) if condition is not None else diffusion_model
        return super().__call__(inputs=inputs, diffusion_model=model, noise=noise, timesteps=timesteps)


class ExponentialMovingAverage:
    """A handler keeping ``module``, an exponential moving average of ``network``'s weights, updated after every
    iteration with ``decay = min(decay, i / (9 + i))`` at iteration ``i`` (a warm-up; ``decay=0`` keeps the raw
    weights). Buffers are copied. ``state_dict``/``load_state_dict`` are the averaged module's (it is checkpointed)."""

    def __init__(self, network: nn.Module, decay: float = 0.999) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"ExponentialMovingAverage: decay must be in [0, 1), got {decay}.")
        self.network, self.decay = network, float(decay)
        self.module = copy.deepcopy(unwrap(network)).eval().requires_grad_(False)

    def attach(self, engine: Any) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    @torch.no_grad()
    def __call__(self, engine: Any) -> None:
        net = unwrap(self.network)
        if self.decay == 0.0:
            self.module.load_state_dict(net.state_dict())
            return
        i = int(engine.state.iteration)
        decay = min(self.decay, i / (9 + i))
        for e, p in zip(self.module.parameters(), net.parameters()):
            e.lerp_(p.detach(), 1.0 - decay)
        for e, b in zip(self.module.buffers(), net.buffers()):
            e.copy_(b)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state: Mapping[str, torch.Tensor], strict: bool = True) -> Any:
        return self.module.load_state_dict(state, strict=strict)
