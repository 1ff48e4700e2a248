"""Helpers for multi-process (``torch.distributed``) training, launched with ``torchrun``.

Generic: nothing here knows about bundles or a particular trainer. ``torchrun`` sets ``RANK``,
``LOCAL_RANK`` and ``WORLD_SIZE`` for every process; these helpers read them.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

__all__ = [
    "barrier",
    "default_backend",
    "local_device",
    "local_rank",
    "rank_and_world_size",
]


def default_backend() -> str:
    """``"nccl"`` when CUDA is available, else ``"gloo"`` (the CPU backend)."""
    return "nccl" if torch.cuda.is_available() else "gloo"


def local_rank() -> int:
    """This process's rank on its machine (``LOCAL_RANK``, set by ``torchrun``); 0 when not set."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def local_device() -> torch.device:
    """``cuda:<LOCAL_RANK>`` when CUDA is available, else the CPU."""
    return torch.device("cuda", local_rank()) if torch.cuda.is_available() else torch.device("cpu")


def rank_and_world_size() -> tuple[int, int]:
    """``(rank, world_size)`` of the initialised process group, or ``(0, 1)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def barrier() -> None:
    """``torch.distributed.barrier()`` when a process group is initialised."""
    if rank_and_world_size()[1] > 1:
        dist.barrier()
