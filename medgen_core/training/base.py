"""File helpers of the training layer: atomic ``torch.save``, safe checkpoint loading (``weights_only=True``), CPU
``state_dict`` copies without a DDP wrapper. The engines, handlers and schedule are in :mod:`medgen_core.training.engines`."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

__all__ = ["atomic_torch_save", "cpu_state_dict", "load_checkpoint", "unwrap"]


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
    """Load a training checkpoint safely (tensors, numbers, strings and containers only) onto the CPU."""
    return torch.load(Path(path), map_location="cpu", weights_only=True)


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """``module`` without a ``DistributedDataParallel`` / ``DataParallel`` wrapper."""
    return module.module if isinstance(module, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)) else module


def cpu_state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``module.state_dict()`` (unwrapped) as detached, contiguous CPU tensors: what a bundle ships."""
    return {k: v.detach().cpu().contiguous() for k, v in unwrap(module).state_dict().items()}
