"""Super-resolution training: L1 pre-training, then an optional relativistic GAN fine-tune (ESRGAN recipe).

Data are 2D high-resolution slices ``(N, 1, H, W)`` in [0, 1]; low-resolution inputs are made on the
fly with :mod:`medgen_core.transforms.degradation`, either one fixed degradation or the randomised mix
(:class:`~medgen_core.transforms.degradation.RandomDegradation`) that the default model uses so that it
copes with the unknown degradation of a real scan.

With ``data="synthetic"`` the pairs come from the synthetic generator instead, mixed with real MNI T1
patches (:class:`~medgen_core.training.sr_synthetic.SyntheticMixBatches`): random anatomy, contrast,
HR bandwidth, degradation and noise, for a default model that is not tied to one template and contrast.

Multi-process training (``torchrun``, one process per GPU or several on a CPU) is supported: each rank
trains a :class:`~torch.nn.parallel.DistributedDataParallel` copy of the generator on its own shard of
the slices, and rank 0 alone writes the outputs.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from monai.networks.nets import PatchDiscriminator
from tqdm import tqdm

from medgen_core.losses import relativistic_discriminator_loss, relativistic_generator_loss
from medgen_core.training.base import CSVLogger, atomic_torch_save, load_checkpoint, plot_curves
from medgen_core.training.distributed import mean_over_ranks, resolve_distributed, shard_indices, wrap_ddp
from medgen_core.training.sr_synthetic import SyntheticMixBatches
from medgen_core.transforms.degradation import DEGRADATIONS, RandomDegradation, degrade
from medgen_core.transforms.intensity_augment import RandomContrastAugment

__all__ = ["SRTrainingConfig", "SuperResolutionTrainer", "PatchSampler", "axial_slices", "load_training_slices"]

logger = logging.getLogger(__name__)


@dataclass
class SRTrainingConfig:
    """Settings of one super-resolution training run.

    Args:
        scale: upsampling factor.
        degradation: ``"mixed"`` (randomised mix with noise) or one of ``gaussian``/``block``/``kspace``.
        patch_size: high-resolution patch side (a multiple of ``scale``).
        batch_size: patches per step.
        iterations: L1 pre-training steps.
        lr: Adam learning rate (ESRGAN: 2e-4), cosine-decayed to 1% over ``iterations``.
        gan_iterations: relativistic GAN fine-tuning steps after pre-training (0 = none).
        gan_lr: learning rate of generator and discriminator during the GAN stage (ESRGAN: 1e-4).
        gan_weight: weight of the adversarial term (ESRGAN: 5e-3); L1 keeps weight 1 here because no
            perceptual (VGG) network can be downloaded offline.
        min_foreground: minimum fraction of patch voxels above 0.05 (skips empty background).
        log_every: iterations between CSV rows.
        checkpoint_every: iterations between resumable checkpoints.
        seed: random seed.
        contrast_augment: randomise the contrast of high-resolution patches (foreground inversion,
            gamma, gain, noise on the target) with
            :class:`~medgen_core.transforms.intensity_augment.RandomContrastAugment`, so a model trained
            on one T1 template transfers to other contrasts and noisy scans. Used by the default model.
        bf16: run forward/backward under bfloat16 autocast (about 2x faster on CPUs with AVX512-BF16
            and on GPUs; the interpolation skip and the loss stay in float32).
        data: ``"mni"`` (patches of ``train_slices`` degraded by ``degradation``) or ``"synthetic"``
            (:class:`~medgen_core.training.sr_synthetic.SyntheticMixBatches`; ``degradation`` is then ignored).
        real_fraction: synthetic mode: share of each batch taken from ``train_slices`` (real MNI T1).
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
    iterations: int = 2000
    lr: float = 2e-4
    gan_iterations: int = 0
    gan_lr: float = 1e-4
    gan_weight: float = 5e-3
    min_foreground: float = 0.2
    log_every: int = 25
    checkpoint_every: int = 250
    seed: int = 0
    bf16: bool = True
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
            raise ValueError(f"SRTrainingConfig: degradation must be 'mixed' or one of {DEGRADATIONS}, got {self.degradation!r}.")
        if self.patch_size % self.scale:
            raise ValueError(f"SRTrainingConfig: patch_size {self.patch_size} must be a multiple of scale {self.scale}.")
        if self.data not in ("mni", "synthetic"):
            raise ValueError(f"SRTrainingConfig: data must be 'mni' or 'synthetic', got {self.data!r}.")
        self.kind_weights = tuple(float(w) for w in self.kind_weights)
        if self.noise_on not in ("hr", "lr"):
            raise ValueError(f"SRTrainingConfig: noise_on must be 'hr' or 'lr', got {self.noise_on!r}.")
        if len(self.kind_weights) != 3 or min(self.kind_weights) < 0 or sum(self.kind_weights) <= 0:
            raise ValueError(f"SRTrainingConfig: kind_weights must be 3 non-negative numbers (gaussian, block, kspace), got {self.kind_weights}.")

    @property
    def label(self) -> str:
        """``"synthetic"`` or the degradation: the run's name in logs and plots."""
        return "synthetic" if self.data == "synthetic" else self.degradation


def axial_slices(volumes: list[np.ndarray] | np.ndarray, indices: list[int] | None = None, normalise: bool = True) -> torch.Tensor:
    """Stack axial slices ``(N, 1, X, Y)`` from volumes ``(X, Y, Z)`` (equal in-plane size).

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
        if normalise:
            vol = np.clip(vol / max(float(np.percentile(vol, 99.9)), 1e-8), 0.0, 1.2)
        idx = range(vol.shape[2]) if indices is None else indices
        out.extend(torch.from_numpy(np.ascontiguousarray(vol[:, :, z])) for z in idx)
    return torch.stack(out)[:, None]


def load_training_slices(files: list[str] | tuple[str, ...] = ()) -> torch.Tensor:
    """Training slices ``(N, 1, X, Y)``: axial slices of the given volume files (any format
    :func:`medgen_core.io.read_volume` reads, equal in-plane size), or, with no files, the MNI152 T1
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


class SuperResolutionTrainer:
    """Trains an SR generator (e.g. :class:`~medgen_core.networks.RRDBNet`) and writes to ``output_dir``:

    ``model.pt`` (generator ``state_dict``, CPU tensors), ``checkpoint.pt`` (resumable: generator,
    discriminator, optimisers, iteration), ``train_log.csv`` and ``loss_curve.png``.

    Distributed mode (an initialised ``torch.distributed`` process group, e.g. under ``torchrun``):
    the generator and discriminator are wrapped in :class:`~torch.nn.parallel.DistributedDataParallel`;
    the slices are split into disjoint shards with :class:`~torch.utils.data.DistributedSampler`
    (shuffled with ``config.seed``, tail dropped) and each rank samples patches from its shard with
    seed ``config.seed + rank``. Logged losses are averaged over ranks. Only rank 0 writes files, plus
    ``data_shards.json`` (the slice indices of every rank). Weights are saved without DDP's
    ``module.`` prefix, so ``model.pt`` and ``checkpoint.pt`` load the same as single-process ones.

    Args:
        network: generator mapping ``(B, 1, h, w)`` to ``(B, 1, scale*h, scale*w)``.
        train_slices: high-resolution training slices ``(N, 1, H, W)``, intensities in [0, 1].
        config: :class:`SRTrainingConfig`.
        output_dir: where outputs go.
        device: torch device. Defaults to CPU.
        distributed: train with DDP. ``None`` (default) means "if a process group is initialised".
    """

    def __init__(
        self,
        network: nn.Module,
        train_slices: torch.Tensor,
        config: SRTrainingConfig,
        output_dir: str | Path,
        device: str | torch.device = "cpu",
        distributed: bool | None = None,
    ) -> None:
        self.net = network.to(device)
        self.config = config
        self.device = torch.device(device)
        self.distributed, self.rank, self.world_size = resolve_distributed(distributed, "SuperResolutionTrainer")
        self.is_main = self.rank == 0
        self.output_dir = Path(output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self._seed = config.seed + self.rank  # each rank draws its own patch stream
        self.g = torch.Generator().manual_seed(self._seed)
        torch.manual_seed(config.seed)
        self.slice_indices: list[int] | None = self._shard(len(train_slices)) if self.distributed else None
        slices = train_slices if self.slice_indices is None else train_slices[self.slice_indices]
        self.sampler = PatchSampler(slices.float(), config.patch_size, config.min_foreground, self.g)
        self.random_degradation = RandomDegradation(config.scale, generator=self.g)
        self.contrast_augment = RandomContrastAugment(generator=self.g) if config.contrast_augment else None
        self.synthetic: SyntheticMixBatches | None = None
        if config.data == "synthetic":
            self.synthetic = SyntheticMixBatches(config.scale, config.patch_size, self.sampler, config.real_fraction,
                                                 config.kind_weights, seed=self._seed, real_noise_prob=config.real_noise_prob,
                                                 noise_prob=config.noise_prob, noise_std_range=(0.0, config.noise_std_max),
                                                 noise_on=config.noise_on, deform={"scale_range": config.deform_scale_range})
        self.opt = torch.optim.Adam(self.net.parameters(), lr=config.lr, betas=(0.9, 0.99))
        self.disc: nn.Module | None = None
        self.opt_d: torch.optim.Optimizer | None = None
        if config.gan_iterations > 0:
            self.disc = PatchDiscriminator(spatial_dims=2, num_layers_d=3, channels=32, in_channels=1, out_channels=1).to(device)
            self.opt_d = torch.optim.Adam(self.disc.parameters(), lr=config.gan_lr, betas=(0.9, 0.99))
        # forward passes that update weights go through these (DDP wrappers, or the modules themselves)
        self.model = self._wrap(self.net)
        self.disc_model = self._wrap(self.disc) if self.disc is not None else None
        self.iteration = 0
        self.log = CSVLogger(self.output_dir / "train_log.csv", ["iteration", "l1", "g_adv", "d_loss"]) if self.is_main else None

    # -- distributed ----------------------------------------------------------------------------
    def _wrap(self, module: nn.Module) -> nn.Module:
        return wrap_ddp(module, self.device) if self.distributed else module

    def _shard(self, num_slices: int) -> list[int]:
        """This rank's slice indices (disjoint across ranks); rank 0 records all shards in ``data_shards.json``."""
        return shard_indices(num_slices, self.config.seed, self.output_dir / "data_shards.json" if self.is_main else None, "SuperResolutionTrainer")

    def _mean_over_ranks(self, stats: dict[str, float]) -> dict[str, float]:
        return mean_over_ranks(stats, self.device) if self.distributed else stats

    # -- data -----------------------------------------------------------------------------------
    def make_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(lr, hr)``: a high-resolution batch and its degraded low-resolution version."""
        if self.synthetic is not None:
            lr, hr = self.synthetic(self.config.batch_size)
            return lr.to(self.device), hr.to(self.device)
        hr = self.sampler.sample(self.config.batch_size)
        if self.contrast_augment is not None:
            hr = self.contrast_augment(hr)
        if self.config.degradation == "mixed":
            lr = torch.stack([self.random_degradation(x) for x in hr])
        else:
            lr = degrade(hr, self.config.scale, self.config.degradation)
        return lr.to(self.device), hr.to(self.device)

    # -- checkpointing --------------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        state = {"iteration": self.iteration, "net": self.net.state_dict(), "opt": self.opt.state_dict(), "config": asdict(self.config)}
        if self.disc is not None:
            state["disc"], state["opt_d"] = self.disc.state_dict(), self.opt_d.state_dict()
        atomic_torch_save(state, self.output_dir / "checkpoint.pt")

    def initialise_from(self, path: str | Path) -> None:
        """Start from the network weights of another run (``checkpoint.pt`` or ``model.pt``), with a fresh optimiser and
        schedule. Tensors whose shape differs (e.g. the upsampling layer of another scale) keep their initialisation."""
        state = load_checkpoint(Path(path))
        state = state.get("net", state)
        own = self.net.state_dict()
        keep = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        skipped = sorted(set(own) - set(keep))
        self.net.load_state_dict({**own, **keep})
        logger.info("initialised the network from %s (%d tensors; kept their own initialisation: %s)", path, len(keep), skipped or "none")

    def resume(self) -> bool:
        """Resume from ``checkpoint.pt`` if present; returns whether it did."""
        path = self.output_dir / "checkpoint.pt"
        if not path.exists():
            return False
        state = load_checkpoint(path)
        self.net.load_state_dict(state["net"])
        self.opt.load_state_dict(state["opt"])
        if self.disc is not None and "disc" in state:
            self.disc.load_state_dict(state["disc"])
            self.opt_d.load_state_dict(state["opt_d"])
        self.iteration = int(state["iteration"])
        self.g.manual_seed(self._seed + self.iteration)  # a fresh but reproducible stream after resume
        if self.synthetic is not None:
            self.synthetic.reseed(self._seed + self.iteration)
        logger.info("resumed from %s at iteration %d", path, self.iteration)
        return True

    # -- steps ----------------------------------------------------------------------------------
    def _set_lr(self) -> None:
        c = self.config
        t = min(self.iteration, c.iterations) / max(c.iterations, 1)
        for group in self.opt.param_groups:
            group["lr"] = c.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t)))

    def l1_step(self) -> dict[str, float]:
        """One L1 pre-training step."""
        self._set_lr()
        lr, hr = self.make_batch()
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.config.bf16):
            sr = self.model(lr)
        loss = (sr.float() - hr).abs().mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return {"l1": float(loss.detach())}

    def gan_step(self) -> dict[str, float]:
        """One relativistic GAN step: generator (L1 + adversarial), then discriminator."""
        assert self.disc is not None and self.opt_d is not None and self.disc_model is not None
        for group in self.opt.param_groups:
            group["lr"] = self.config.gan_lr
        lr, hr = self.make_batch()
        fake = self.model(lr)
        # 1. generator: discriminator frozen (called unwrapped: DDP must not wait for its gradients)
        self.disc.requires_grad_(False)
        real_logits, fake_logits = self.disc(hr)[-1], self.disc(fake)[-1]
        l1 = (fake - hr).abs().mean()
        g_adv = relativistic_generator_loss(real_logits.detach(), fake_logits)
        self.opt.zero_grad(set_to_none=True)
        (l1 + self.config.gan_weight * g_adv).backward()
        self.opt.step()
        # 2. discriminator on detached fakes
        self.disc.requires_grad_(True)
        d_loss = relativistic_discriminator_loss(self.disc_model(hr)[-1], self.disc_model(fake.detach())[-1])
        self.opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        self.opt_d.step()
        return {"l1": float(l1), "g_adv": float(g_adv), "d_loss": float(d_loss)}

    def run(self, resume: bool = True) -> Path:
        """Train to ``iterations + gan_iterations`` steps (resuming if asked) and return ``model.pt``'s path.

        In distributed mode every rank returns the same path, after rank 0 has written the file.
        """
        if resume:
            self.resume()
        c = self.config
        total = c.iterations + c.gan_iterations
        self.net.train()
        with tqdm(total=total, initial=self.iteration, desc=f"SR x{c.scale} {c.label}", unit="it", disable=not self.is_main) as bar:
            while self.iteration < total:
                stats = self.l1_step() if self.iteration < c.iterations else self.gan_step()
                self.iteration += 1
                bar.update(1)
                bar.set_postfix({k: f"{v:.4f}" for k, v in stats.items()})
                if self.iteration % c.log_every == 0 or self.iteration == total:
                    stats = self._mean_over_ranks(stats)  # a collective: every rank takes part
                    if self.log is not None:
                        self.log.log({"iteration": self.iteration, **stats})
                if self.is_main and (self.iteration % c.checkpoint_every == 0 or self.iteration == total):
                    self.save_checkpoint()
        self.net.eval()
        model_path = self.output_dir / "model.pt"
        if self.is_main:
            atomic_torch_save({k: v.detach().cpu() for k, v in self.net.state_dict().items()}, model_path)
            plot_curves(self.log, self.output_dir / "loss_curve.png", title=f"SR x{c.scale} ({c.label})")
        if self.distributed:
            dist.barrier()
        return model_path
