"""What Pix2Pix and CycleGAN training share: Adam(2e-4, beta1 0.5), constant-then-linear-decay learning
rate, N(0, 0.02) initialisation, checkpoint/resume, CSV loss logs and a sample montage PNG per epoch."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from medgen_core.training.base import CSVLogger, atomic_torch_save, load_checkpoint, plot_curves

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
                 output_dir: str | Path, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.nets = {k: v.to(self.device) for k, v in nets.items()}
        self.schedule = schedule
        self.optimizers = {
            name: torch.optim.Adam([p for n in members for p in self.nets[n].parameters()], lr=schedule.lr, betas=(schedule.beta1, 0.999))
            for name, members in optimizer_groups.items()
        }
        self.schedulers = {k: torch.optim.lr_scheduler.LambdaLR(o, schedule.factor) for k, o in self.optimizers.items()}
        self.output_dir = Path(output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.epoch = 0
        self.iteration = 0
        self.log = CSVLogger(self.output_dir / "train_log.csv", ["iteration", "epoch", *self.loss_names])

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
        return atomic_torch_save(self.state_dict(), self.output_dir / "checkpoint.pt")

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
        """Save one network's CPU ``state_dict`` (the file a bundle ships)."""
        return atomic_torch_save({k: v.detach().cpu() for k, v in self.nets[net_name].state_dict().items()}, self.output_dir / filename)

    # -- loop ---------------------------------------------------------------------------------
    def fit(self, loader, max_epochs: int | None = None, resume: bool = True, sample_batch: dict | None = None) -> None:
        """Train until ``schedule.epochs + schedule.epochs_decay`` epochs (or ``max_epochs``), resuming if asked."""
        from tqdm import tqdm

        from medgen_core.inference.preview import save_montage

        if resume:
            self.resume()
        total = self.schedule.epochs + self.schedule.epochs_decay if max_epochs is None else max_epochs
        while self.epoch < total:
            for net in self.nets.values():
                net.train()
            for batch in tqdm(loader, desc=f"epoch {self.epoch + 1}/{total}", leave=False):
                batch = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in batch.items()}
                stats = self.train_step(batch)
                self.iteration += 1
            self.log.log({"iteration": self.iteration, "epoch": self.epoch + 1, **stats})
            for s in self.schedulers.values():
                s.step()
            self.epoch += 1
            self.save_checkpoint()
            if sample_batch is not None:
                for net in self.nets.values():
                    net.eval()
                with torch.no_grad():
                    cols = self.sample_columns({k: v.to(self.device) if torch.is_tensor(v) else v for k, v in sample_batch.items()})
                save_montage([(n, t.float().cpu().numpy()) for n, t in cols], self.output_dir / "samples" / f"epoch_{self.epoch:04d}.png",
                             title=f"epoch {self.epoch}", vmax=1.0)
        plot_curves(self.log, self.output_dir / "loss_curve.png", title=type(self).__name__)
