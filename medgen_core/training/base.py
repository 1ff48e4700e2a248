"""Shared training helpers: atomic checkpoints (loaded with ``weights_only=True``), CSV logs, loss-curve PNGs."""

from __future__ import annotations

import csv
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch

__all__ = ["atomic_torch_save", "load_checkpoint", "CSVLogger", "plot_curves", "seed_everything"]


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
