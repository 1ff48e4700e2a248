"""Super-resolution training on MONAI engines: L1 pre-training, then an optional relativistic GAN fine-tune (ESRGAN).

Data are 2D high-resolution slices ``(N, 1, H, W)`` in [0, 1]; :class:`SRPairBatches` (a dataset of random batches,
loaded with ``DataLoader(batch_size=None)``) makes the low-resolution inputs on the fly with
:mod:`medgen_core.transforms.degradation`, either one fixed degradation or the randomised mix
(:class:`~medgen_core.transforms.degradation.RandomDegradation`) so that the model copes with the unknown
degradation of a real scan. With ``data="synthetic"`` the pairs come from the synthetic generator instead, mixed
with real patches (:class:`~medgen_core.training.sr_synthetic.SyntheticMixBatches`).

The step is :class:`SRIteration` inside a :class:`monai.engines.SupervisedTrainer` (the bundle's
``configs/train.json``; handlers, schedule and checkpoints from :mod:`medgen_core.training.engines`). Under
``torchrun`` each rank samples from its own shard of the slices (``data_shards.json``) and the generator is
DDP-wrapped (``configs/multi_gpu_train.json``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from medgen_core.losses import relativistic_discriminator_loss, relativistic_generator_loss
from medgen_core.training.distributed import rank_and_world_size, shard_indices
from medgen_core.training.engines import RandomBatches, SupervisedIteration, unwrap
from medgen_core.training.sr_synthetic import SyntheticMixBatches
from medgen_core.transforms.degradation import DEGRADATIONS, RandomDegradation, degrade
from medgen_core.transforms.intensity_augment import RandomContrastAugment

__all__ = ["PatchSampler", "SRIteration", "SRPairBatches", "SRDataConfig", "axial_slices", "load_training_slices"]


@dataclass
class SRDataConfig:
    """How the training pairs of a super-resolution run are made (:class:`SRPairBatches`).

    Args:
        scale: upsampling factor.
        degradation: ``"mixed"`` (randomised mix with noise) or one of ``gaussian``/``block``/``kspace``.
        patch_size: high-resolution patch side (a multiple of ``scale``).
        batch_size: patches per step.
        min_foreground: minimum fraction of patch voxels above 0.05 (skips empty background).
        contrast_augment: randomise the contrast of high-resolution patches (foreground inversion,
            gamma, gain, noise on the target) with
            :class:`~medgen_core.transforms.intensity_augment.RandomContrastAugment`, so a model trained
            on one T1 template transfers to other contrasts and noisy scans.
        data: ``"mni"`` (patches of the training slices degraded by ``degradation``) or ``"synthetic"``
            (:class:`~medgen_core.training.sr_synthetic.SyntheticMixBatches`; ``degradation`` is then ignored).
        real_fraction: synthetic mode: share of each batch taken from the training slices (real T1).
        kind_weights: synthetic mode: probabilities of Gaussian, block and k-space degradations.
        noise_prob / noise_std_max: synthetic mode: chance and largest std of Rician / Gaussian noise on the
            synthetic LR inputs; ``real_noise_prob``: the same chance for the real patches (std up to 0.02).
        noise_on: synthetic mode: ``"hr"`` (noise on the target before the degradation: the net keeps noise) or
            ``"lr"`` (on the input only: the net learns to denoise); see :mod:`~medgen_core.training.sr_synthetic`.
        deform_scale_range: synthetic mode: anatomy scaling ``1 +- deform_scale_range`` (SynthSeg 0.2), so that
            structures of other sizes per voxel (coarser or finer scans) are seen.
    """

    scale: int = 2
    degradation: str = "mixed"
    patch_size: int = 96
    batch_size: int = 12
    min_foreground: float = 0.2
    contrast_augment: bool = False
    data: str = "mni"
    real_fraction: float = 0.3
    kind_weights: tuple[float, float, float] = (1.0, 1.0, 1.0)
    noise_prob: float = 0.9
    noise_std_max: float = 0.05
    real_noise_prob: float = 0.5
    noise_on: str = "hr"
    deform_scale_range: float = 0.2

    def __post_init__(self) -> None:
        if self.degradation != "mixed" and self.degradation not in DEGRADATIONS:
            raise ValueError(f"SRDataConfig: degradation must be 'mixed' or one of {DEGRADATIONS}, got {self.degradation!r}.")
        if self.patch_size % self.scale:
            raise ValueError(f"SRDataConfig: patch_size {self.patch_size} must be a multiple of scale {self.scale}.")
        if self.data not in ("mni", "synthetic"):
            raise ValueError(f"SRDataConfig: data must be 'mni' or 'synthetic', got {self.data!r}.")
        self.kind_weights = tuple(float(w) for w in self.kind_weights)
        if self.noise_on not in ("hr", "lr"):
            raise ValueError(f"SRDataConfig: noise_on must be 'hr' or 'lr', got {self.noise_on!r}.")
        if len(self.kind_weights) != 3 or min(self.kind_weights) < 0 or sum(self.kind_weights) <= 0:
            raise ValueError(f"SRDataConfig: kind_weights must be 3 non-negative numbers (gaussian, block, kspace), got {self.kind_weights}.")

    @property
    def label(self) -> str:
        """``"synthetic"`` or the degradation: the run's name in logs and plots."""
        return "synthetic" if self.data == "synthetic" else self.degradation


def axial_slices(volumes: list[np.ndarray] | np.ndarray, indices: list[int] | None = None, normalise: bool = True) -> torch.Tensor:
    """Stack axial slices ``(N, 1, X, Y)`` from volumes ``(X, Y, Z)``; volumes of different in-plane sizes are
    zero-padded (bottom/right) to the largest ``X`` and ``Y`` (padding is background, which patch sampling skips).

    Args:
        volumes: one volume or a list of volumes.
        indices: axial indices to take (same for every volume); all when None.
        normalise: divide each volume by its 99.9th percentile and clip to [0, 1.2], as inference does.
    """
    if isinstance(volumes, np.ndarray):
        volumes = [volumes]
    out = []
    for vol in volumes:
        vol = np.asarray(vol, dtype=np.float32)
        if vol.ndim == 2:
            vol = vol[:, :, None]
        if normalise:
            vol = np.clip(vol / max(float(np.percentile(vol, 99.9)), 1e-8), 0.0, 1.2)
        idx = range(vol.shape[2]) if indices is None else indices
        out.extend(torch.from_numpy(np.ascontiguousarray(vol[:, :, z])) for z in idx)
    h, w = max(t.shape[0] for t in out), max(t.shape[1] for t in out)
    out = [torch.nn.functional.pad(t, (0, w - t.shape[1], 0, h - t.shape[0])) for t in out]
    return torch.stack(out)[:, None]


def load_training_slices(files: list[str] | tuple[str, ...] = ()) -> torch.Tensor:
    """Training slices ``(N, 1, X, Y)``: axial slices of the given volume files (any format
    :func:`medgen_core.io.read_volume` reads; see :func:`axial_slices`), or, with no files, the MNI152 T1
    template without its held-out evaluation slab (:data:`medgen_core.data.samples.MNI_HELDOUT_AXIAL`).
    """
    from medgen_core.io import read_volume

    if files:
        return axial_slices([read_volume(f).array for f in files])
    from medgen_core.data.samples import load_mni152_t1, mni_training_axial_indices

    return axial_slices(load_mni152_t1().array, mni_training_axial_indices())


class PatchSampler:
    """Random square patches from a stack of slices ``(N, 1, H, W)``, with flips and 90-degree rotations."""

    def __init__(self, slices: torch.Tensor, patch_size: int, min_foreground: float, generator: torch.Generator) -> None:
        if slices.dim() != 4 or slices.shape[1] != 1:
            raise ValueError(f"PatchSampler: slices must be (N, 1, H, W), got {tuple(slices.shape)}.")
        if min(slices.shape[-2:]) < patch_size:
            raise ValueError(f"PatchSampler: slices {tuple(slices.shape[-2:])} are smaller than patch_size {patch_size}.")
        self.slices, self.patch_size, self.min_foreground, self.g = slices, patch_size, min_foreground, generator

    def _one(self) -> torch.Tensor:
        n, _, h, w = self.slices.shape
        p = self.patch_size
        for _ in range(20):
            i = int(torch.randint(n, (), generator=self.g))
            y = int(torch.randint(h - p + 1, (), generator=self.g))
            x = int(torch.randint(w - p + 1, (), generator=self.g))
            patch = self.slices[i, :, y : y + p, x : x + p]
            if (patch > 0.05).float().mean() >= self.min_foreground:
                break
        k = int(torch.randint(4, (), generator=self.g))
        patch = torch.rot90(patch, k, dims=(-2, -1))
        if bool(torch.randint(2, (), generator=self.g)):
            patch = torch.flip(patch, dims=(-1,))
        return patch

    def sample(self, batch_size: int) -> torch.Tensor:
        """A batch ``(batch_size, 1, patch_size, patch_size)``."""
        return torch.stack([self._one() for _ in range(batch_size)])


class SRPairBatches(RandomBatches):
    """``num_batches`` random training batches ``{"image": lr (B, 1, p/s, p/s), "label": hr (B, 1, p, p)}`` (CPU):
    patches of ``slices`` (random crop with at least ``min_foreground`` foreground, rotation by 90 degrees, flip),
    optionally contrast-augmented, degraded by ``config.degradation``; or synthetic pairs mixed with real patches
    (``config.data == "synthetic"``).

    Under an initialised process group each rank draws from its own shard of the slices (rank 0 writes every shard
    to ``shard_record``) with the seed ``seed + rank``. Load with ``DataLoader(batch_size=None)``.

    Args:
        slices: high-resolution slices ``(N, 1, H, W)`` in [0, 1], at least ``patch_size`` in-plane.
        config: :class:`SRDataConfig`.
        num_batches: batches per epoch.
        seed: seed of the batch stream.
        shard_record: where rank 0 records the shards (``data_shards.json``) in distributed mode.
    """

    def __init__(self, slices: torch.Tensor, config: SRDataConfig, num_batches: int, seed: int = 0,
                 shard_record: str | Path | None = None) -> None:
        rank, world = rank_and_world_size()
        super().__init__(num_batches, seed + rank)
        slices = torch.as_tensor(slices).float()
        if slices.dim() == 4 and min(slices.shape[-2:]) < config.patch_size:
            from medgen_core.errors import TrainingDataError

            raise TrainingDataError(f"the training slices are {slices.shape[-2]} x {slices.shape[-1]} pixels, smaller than patch_size "
                                    f"{config.patch_size}; use larger volumes or a smaller data_config#patch_size (a multiple of {config.scale}).")
        if world > 1:
            record = Path(shard_record) if shard_record and rank == 0 else None
            if record is not None:
                record.parent.mkdir(parents=True, exist_ok=True)
            slices = slices[shard_indices(len(slices), seed, record, "SRPairBatches")]
        self.config = config
        self.sampler = PatchSampler(slices, config.patch_size, config.min_foreground, self.g)
        self.random_degradation = RandomDegradation(config.scale, generator=self.g)
        self.contrast_augment = RandomContrastAugment(generator=self.g) if config.contrast_augment else None
        self.synthetic: SyntheticMixBatches | None = None
        if config.data == "synthetic":
            self.synthetic = SyntheticMixBatches(config.scale, config.patch_size, self.sampler, config.real_fraction,
                                                 config.kind_weights, seed=seed + rank, real_noise_prob=config.real_noise_prob,
                                                 noise_prob=config.noise_prob, noise_std_range=(0.0, config.noise_std_max),
                                                 noise_on=config.noise_on, deform={"scale_range": config.deform_scale_range})

    def reseed(self, seed: int) -> None:
        super().reseed(seed)
        if self.synthetic is not None:
            self.synthetic.reseed(seed)

    def sample(self) -> dict[str, torch.Tensor]:
        c = self.config
        if self.synthetic is not None:
            lr, hr = self.synthetic(c.batch_size)
            return {"image": lr, "label": hr}
        hr = self.sampler.sample(c.batch_size)
        if self.contrast_augment is not None:
            hr = self.contrast_augment(hr)
        lr = torch.stack([self.random_degradation(x) for x in hr]) if c.degradation == "mixed" else degrade(hr, c.scale, c.degradation)
        return {"image": lr, "label": hr}


class SRIteration(SupervisedIteration):
    """The super-resolution step: L1 (``engine.loss_function``) for the first ``gan_start`` iterations, then, when a
    ``discriminator`` is given, the relativistic GAN step of ESRGAN: the generator (L1 + ``gan_weight`` x adversarial,
    discriminator frozen and called unwrapped) at learning rate ``gan_lr``, then the discriminator on detached fakes.

    Logged terms: ``l1`` (and ``g_adv``, ``d_loss`` in the GAN stage).
    """

    def __init__(self, bf16: bool = False, discriminator: nn.Module | None = None, d_optimizer: torch.optim.Optimizer | None = None,
                 gan_start: int = 0, gan_lr: float = 1e-4, gan_weight: float = 5e-3) -> None:
        super().__init__(bf16, loss_name="l1")
        if (discriminator is None) != (d_optimizer is None):
            raise ValueError("SRIteration: give both discriminator and d_optimizer, or neither.")
        self.discriminator, self.d_optimizer = discriminator, d_optimizer
        self.gan_start, self.gan_lr, self.gan_weight = int(gan_start), float(gan_lr), float(gan_weight)

    def __call__(self, engine: Any, batch: Any) -> dict[str, Any]:
        if self.discriminator is None or engine.state.iteration <= self.gan_start:
            return super().__call__(engine, batch)
        device = engine.state.device
        lr, hr = engine.prepare_batch(batch, device, engine.non_blocking)[:2]
        for group in engine.optimizer.param_groups:
            group["lr"] = self.gan_lr
        engine.network.train()
        fake = engine.network(lr)
        # 1. generator: discriminator frozen (called unwrapped: DDP must not wait for its gradients)
        disc = unwrap(self.discriminator)
        disc.requires_grad_(False)
        real_logits, fake_logits = disc(hr)[-1], disc(fake)[-1]
        l1 = (fake - hr).abs().mean()
        g_adv = relativistic_generator_loss(real_logits.detach(), fake_logits)
        engine.optimizer.zero_grad(set_to_none=True)
        (l1 + self.gan_weight * g_adv).backward()
        engine.optimizer.step()
        # 2. discriminator on detached fakes
        disc.requires_grad_(True)
        d_loss = relativistic_discriminator_loss(self.discriminator(hr)[-1], self.discriminator(fake.detach())[-1])
        self.d_optimizer.zero_grad(set_to_none=True)
        d_loss.backward()
        self.d_optimizer.step()
        terms = {"l1": float(l1.detach()), "g_adv": float(g_adv.detach()), "d_loss": float(d_loss.detach())}
        return {"image": lr, "label": hr, "pred": fake.detach(), "loss": l1.detach(), "terms": terms}
