"""Helpers for multi-process (``torch.distributed``) training, launched with ``torchrun``.

Generic: nothing here knows about bundles or a particular trainer. ``torchrun`` sets ``RANK``,
``LOCAL_RANK`` and ``WORLD_SIZE`` for every process; these helpers read them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import torch
import torch.distributed as dist

__all__ = [
    "average_buffers",
    "average_gradients",
    "barrier",
    "broadcast_module",
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


def average_gradients(params: Iterable[torch.nn.Parameter]) -> None:
    """All-reduce and average the ``.grad`` of ``params`` over the process group (no-op without one).

    The explicit form of what DDP does inside ``backward``; used by trainers whose steps freeze and
    unfreeze networks or call one network several times per update (GANs), where DDP's reducer would
    wait for gradients that never come. Parameters without a gradient are skipped on every rank alike
    (they are frozen on every rank).
    """
    rank, world = rank_and_world_size()
    if world == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def broadcast_module(module: torch.nn.Module, src: int = 0) -> None:
    """Copy ``src``'s parameters and buffers to every rank (identical start; no-op without a process group)."""
    if rank_and_world_size()[1] == 1:
        return
    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            dist.broadcast(t.data, src)


def average_buffers(module: torch.nn.Module) -> None:
    """Average floating-point buffers (BatchNorm running statistics) over ranks; no-op without a group."""
    rank, world = rank_and_world_size()
    if world == 1:
        return
    with torch.no_grad():
        for b in module.buffers():
            if b.is_floating_point():
                dist.all_reduce(b.data)
                b.data /= world


def barrier() -> None:
    """``torch.distributed.barrier()`` when a process group is initialised."""
    if rank_and_world_size()[1] > 1:
        dist.barrier()
