"""What Pix2Pix and CycleGAN training share: Adam(2e-4, beta1 0.5), constant-then-linear-decay learning
rate, N(0, 0.02) initialisation, checkpoint/resume, CSV loss logs, a sample montage PNG per epoch, and
multi-process training under ``torchrun``.

Multi-process (``torch.distributed``, launched with ``torchrun``): the modules that an update's loss is
computed through are wrapped in ``DistributedDataParallel`` (``self.ddp[name]``; the plain modules
otherwise), each rank trains on its own shard of the data (a ``DistributedSampler`` in the loader; its
epoch is set here and the first epoch's shards are written to ``data_shards.json``), logged losses are
averaged over ranks and only rank 0 writes files. DDP needs exactly one forward per wrapped module and
backward, so subclasses build each update from one call of a wrapped module: real and fake samples go
through a discriminator as one concatenated batch (identical to two calls for instance-normalised
discriminators), and a frozen discriminator inside a generator update is called unwrapped
(``self.nets``). The effective batch is ``batch_size * world_size``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from medgen_core.training.base import CSVLogger, atomic_torch_save, load_checkpoint, plot_curves
from medgen_core.training.distributed import barrier, mean_over_ranks, resolve_distributed, wrap_ddp

__all__ = ["GANSchedule", "GANTrainerBase", "set_requires_grad"]

logger = logging.getLogger(__name__)


def set_requires_grad(nets: list[nn.Module], flag: bool) -> None:
    """Freeze (``False``) or unfreeze discriminators around the generator step."""
    for net in nets:
        for p in net.parameters():
            p.requires_grad_(flag)


@dataclass
class GANSchedule:
    """``epochs`` at the initial learning rate, then ``epochs_decay`` with linear decay to zero (paper: 100 + 100)."""

    epochs: int = 100
    epochs_decay: int = 100
    lr: float = 2e-4
    beta1: float = 0.5

    def factor(self, epoch: int) -> float:
        return 1.0 - max(0, epoch + 1 - self.epochs) / float(self.epochs_decay + 1)


class GANTrainerBase:
    """Owns optimisers, schedulers, logging and checkpoints; subclasses implement ``train_step(batch)``
    and ``sample_columns(batch)`` (titled 2D images for the per-epoch montage)."""

    loss_names: tuple[str, ...] = ()

    def __init__(self, nets: dict[str, nn.Module], optimizer_groups: dict[str, list[str]], schedule: GANSchedule,
                 output_dir: str | Path, device: str | torch.device = "cpu", distributed: bool | None = None) -> None:
        self.distributed, self.rank, self.world_size = resolve_distributed(distributed, type(self).__name__)
        self.is_main = self.rank == 0
        self.device = torch.device(device)
        self.nets = {k: v.to(self.device) for k, v in nets.items()}
        self.schedule = schedule
        self.optimizers = {
            name: torch.optim.Adam([p for n in members for p in self.nets[n].parameters()], lr=schedule.lr, betas=(schedule.beta1, 0.999))
            for name, members in optimizer_groups.items()
        }
        self.schedulers = {k: torch.optim.lr_scheduler.LambdaLR(o, schedule.factor) for k, o in self.optimizers.items()}
        self.output_dir = Path(output_dir)
        if self.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
        barrier() if self.distributed else None
        self.epoch = 0
        self.iteration = 0
        fields = ["iteration", "epoch", *self.loss_names]
        self.log = CSVLogger(self.output_dir / "train_log.csv", fields) if self.is_main else None

        self.ddp: dict[str, nn.Module] = {}

    def wrap(self, name: str, module: nn.Module) -> nn.Module:
        """Register ``module`` (made of networks in ``self.nets``) as ``self.ddp[name]``: DDP-wrapped in
        distributed mode (parameters broadcast from rank 0), the module itself otherwise."""
        if self.distributed:
            module = wrap_ddp(module, self.device)
        self.ddp[name] = module
        return module

    def _record_shards(self, sampler) -> None:
        """Rank 0 writes every rank's sample indices of this epoch to ``data_shards.json``."""
        import json

        import torch.distributed as dist

        shards: list[list[int] | None] = [None] * self.world_size
        dist.all_gather_object(shards, [int(i) for i in sampler])
        if self.is_main:
            record = {"world_size": self.world_size, "epoch": self.epoch, "shards": {str(r): s for r, s in enumerate(shards)}}
            (self.output_dir / "data_shards.json").write_text(json.dumps(record) + "\n", encoding="utf-8")

    # -- to implement -------------------------------------------------------------------------
    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        raise NotImplementedError

    def sample_columns(self, batch: dict[str, torch.Tensor]) -> list[tuple[str, torch.Tensor]]:
        raise NotImplementedError

    # -- checkpoints --------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "epoch": self.epoch,
            "iteration": self.iteration,
            "nets": {k: v.state_dict() for k, v in self.nets.items()},
            "optimizers": {k: v.state_dict() for k, v in self.optimizers.items()},
            "schedulers": {k: v.state_dict() for k, v in self.schedulers.items()},
        }

    def save_checkpoint(self) -> Path:
        """Rank 0 writes ``checkpoint.pt``; every rank waits for it in distributed mode."""
        path = self.output_dir / "checkpoint.pt"
        if self.is_main:
            atomic_torch_save(self.state_dict(), path)
        barrier() if self.distributed else None
        return path

    def resume(self) -> bool:
        """Restore nets, optimisers, schedulers and counters from ``checkpoint.pt`` if present."""
        path = self.output_dir / "checkpoint.pt"
        if not path.exists():
            return False
        state = load_checkpoint(path)
        for k, v in self.nets.items():
            v.load_state_dict(state["nets"][k])
        for k, v in self.optimizers.items():
            v.load_state_dict(state["optimizers"][k])
        for k, v in self.schedulers.items():
            v.load_state_dict(state["schedulers"][k])
        self.epoch, self.iteration = int(state["epoch"]), int(state["iteration"])
        logger.info("resumed from %s at epoch %d", path, self.epoch)
        return True

    def export(self, net_name: str, filename: str) -> Path:
        """Save one network's CPU ``state_dict`` (the file a bundle ships); rank 0 writes, every rank waits."""
        path = self.output_dir / filename
        if self.is_main:
            atomic_torch_save({k: v.detach().cpu() for k, v in self.nets[net_name].state_dict().items()}, path)
        barrier() if self.distributed else None
        return path

    # -- loop ---------------------------------------------------------------------------------
    def fit(self, loader, max_epochs: int | None = None, resume: bool = True, sample_batch: dict | None = None) -> None:
        """Train until ``schedule.epochs + schedule.epochs_decay`` epochs (or ``max_epochs``), resuming if asked."""
        from tqdm import tqdm

        from medgen_core.utils.figures import save_montage

        if resume:
            self.resume()
        total = self.schedule.epochs + self.schedule.epochs_decay if max_epochs is None else max_epochs
        recorded = False
        while self.epoch < total:
            for net in self.nets.values():
                net.train()
            sampler = getattr(loader, "sampler", None)
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(self.epoch)  # DistributedSampler: a new shuffle per epoch, same on every rank
                if self.distributed and not recorded:
                    self._record_shards(sampler)  # the first epoch of this run (a collective: every rank)
                    recorded = True
            sums: dict[str, float] = {}
            steps = 0
            for batch in tqdm(loader, desc=f"epoch {self.epoch + 1}/{total}", leave=False, disable=not self.is_main):
                batch = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in batch.items()}
                stats = self.train_step(batch)
                sums = {k: sums.get(k, 0.0) + v for k, v in stats.items()}
                steps += 1
                self.iteration += 1
            if steps == 0:
                raise ValueError(f"{type(self).__name__}: the data loader yielded no batch (empty dataset, or fewer samples than ranks).")
            stats = {k: v / steps for k, v in sums.items()}  # epoch means
            stats = mean_over_ranks(stats, self.device) if self.distributed else stats
            if self.is_main:
                self.log.log({"iteration": self.iteration, "epoch": self.epoch + 1, **stats})
            for s in self.schedulers.values():
                s.step()
            self.epoch += 1
            self.save_checkpoint()
            if sample_batch is not None and self.is_main:
                for net in self.nets.values():
                    net.eval()
                with torch.no_grad():
                    cols = self.sample_columns({k: v.to(self.device) if torch.is_tensor(v) else v for k, v in sample_batch.items()})
                save_montage([(n, t.float().cpu().numpy()) for n, t in cols], self.output_dir / "samples" / f"epoch_{self.epoch:04d}.png",
                             title=f"epoch {self.epoch}", vmax=1.0)
        if self.is_main:
            plot_curves(self.log, self.output_dir / "loss_curve.png", title=type(self).__name__)
