"""Shared training helpers: atomic checkpoints (loaded with ``weights_only=True``), CSV logs, loss-curve PNGs."""

from __future__ import annotations

import csv
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch

__all__ = ["IterationLoop", "atomic_torch_save", "cpu_state_dict", "load_checkpoint", "CSVLogger", "plot_curves", "seed_everything", "unwrap"]


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch's global RNG and return a generator seeded the same way."""
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a temporary file in the same folder, then rename: a crash never leaves half a checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".tmp-{path.name}-")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a training checkpoint safely (tensors, numbers, strings and containers only)."""
    return torch.load(Path(path), map_location="cpu", weights_only=True)


class CSVLogger:
    """Appends one row per logged step to ``path`` (header written once); survives resume."""

    def __init__(self, path: str | Path, fields: list[str]) -> None:
        self.path = Path(path)
        self.fields = fields
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            with self.path.open("w", newline="") as f:
                csv.writer(f).writerow(fields)

    def log(self, row: Mapping[str, float | int]) -> None:
        with self.path.open("a", newline="") as f:
            csv.writer(f).writerow([row.get(k, "") for k in self.fields])

    def read(self) -> dict[str, list[float]]:
        with self.path.open() as f:
            rows = list(csv.DictReader(f))
        return {k: [float(r[k]) for r in rows if r.get(k) not in (None, "")] for k in self.fields}


def plot_curves(log: CSVLogger, png_path: str | Path, x: str = "iteration", title: str = "training") -> Path:
    """Plot every logged column against ``x`` (log scale) into a PNG a person can glance at."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = log.read()
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    for key, values in data.items():
        if key == x or not values:
            continue
        ax.plot(data[x][: len(values)], values, label=key)
    ax.set_xlabel(x)
    ax.set_yscale("log")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    png_path = Path(png_path)
    fig.savefig(png_path)
    plt.close(fig)
    return png_path


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """``module`` without a ``DistributedDataParallel`` / ``DataParallel`` wrapper."""
    return module.module if isinstance(module, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)) else module


def cpu_state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``module.state_dict()`` (unwrapped) as detached, contiguous CPU tensors: what a bundle ships."""
    return {k: v.detach().cpu().contiguous() for k, v in unwrap(module).state_dict().items()}


class IterationLoop:
    """The optimiser-step loop shared by the iteration-based trainers (diffusion, autoencoder, restoration).

    A subclass provides ``config`` (a dataclass with ``iterations``, ``log_every``, ``checkpoint_every``),
    ``iteration``, ``net``, ``opt``, ``g`` (its batch ``torch.Generator``) and ``_seed``, ``device``, ``is_main``,
    ``distributed``, ``log`` (a :class:`CSVLogger` on rank 0, else None), ``output_dir``, and the methods
    ``train_step() -> dict`` and ``export_state() -> dict``; it may extend the checkpoint through
    :meth:`extra_checkpoint_state` / :meth:`load_extra_checkpoint_state`. :meth:`run` trains with a tqdm bar, logs rank-averaged stats every
    ``log_every`` steps (a collective: every rank takes part), checkpoints on rank 0, writes ``model.pt`` and
    ``loss_curve.png`` on rank 0, and returns ``model.pt``'s path on every rank (after a barrier).
    """

    progress_name = "train"

    def extra_checkpoint_state(self) -> dict[str, Any]:
        """More state to checkpoint (e.g. EMA weights); empty by default."""
        return {}

    def load_extra_checkpoint_state(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`extra_checkpoint_state` saved."""

    def save_checkpoint(self) -> None:
        """Write ``checkpoint.pt`` atomically: iteration, network, optimiser, config and the extra state."""
        from dataclasses import asdict

        state = {"iteration": self.iteration, "net": self.net.state_dict(), "opt": self.opt.state_dict(), "config": asdict(self.config),
                 **self.extra_checkpoint_state()}
        atomic_torch_save(state, Path(self.output_dir) / "checkpoint.pt")

    def resume(self) -> bool:
        """Resume from ``checkpoint.pt`` if present (read with ``weights_only=True``); returns whether it did.
        The batch generator is reseeded with ``_seed + iteration``: a fresh but reproducible stream."""
        import logging

        path = Path(self.output_dir) / "checkpoint.pt"
        if not path.exists():
            return False
        state = load_checkpoint(path)
        self.net.load_state_dict(state["net"])
        self.opt.load_state_dict(state["opt"])
        self.load_extra_checkpoint_state(state)
        self.iteration = int(state["iteration"])
        self.g.manual_seed(self._seed + self.iteration)
        logging.getLogger(type(self).__module__).info("resumed from %s at iteration %d", path, self.iteration)
        return True

    def curve_title(self) -> str:
        return f"{self.progress_name} training loss"

    def run(self, resume: bool = True) -> Path:
        """Train to ``config.iterations`` steps (resuming from ``checkpoint.pt`` if asked); returns ``model.pt``'s path."""
        import torch.distributed as dist
        from tqdm import tqdm

        from medgen_core.training.distributed import mean_over_ranks

        if resume:
            self.resume()
        c = self.config
        self.net.train()
        with tqdm(total=c.iterations, initial=min(self.iteration, c.iterations), desc=self.progress_name, unit="it",
                  disable=not self.is_main) as bar:
            while self.iteration < c.iterations:
                stats = self.train_step()
                self.iteration += 1
                bar.update(1)
                bar.set_postfix({"loss": f"{stats['loss']:.5f}"})
                if self.iteration % c.log_every == 0 or self.iteration == c.iterations:
                    stats = mean_over_ranks(stats, self.device) if self.distributed else stats
                    if self.log is not None:
                        self.log.log({"iteration": self.iteration, **stats})
                if self.is_main and (self.iteration % c.checkpoint_every == 0 or self.iteration == c.iterations):
                    self.save_checkpoint()
        self.net.eval()
        model_path = Path(self.output_dir) / "model.pt"
        if self.is_main:
            atomic_torch_save(self.export_state(), model_path)
            if self.log is not None and self.log.read()["iteration"]:
                plot_curves(self.log, Path(self.output_dir) / "loss_curve.png", title=self.curve_title())
        if self.distributed:
            dist.barrier()
        return model_path
