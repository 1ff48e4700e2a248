"""Helpers for multi-process (``torch.distributed``) training, launched with ``torchrun``.

Generic: nothing here knows about bundles or a particular trainer. ``torchrun`` sets ``RANK``,
``LOCAL_RANK`` and ``WORLD_SIZE`` for every process; these helpers read them. The bundles' ``multi_gpu_train.json``
use :func:`local_device`, :func:`default_backend` and :func:`wrap_ddp`; the training datasets shard with
:func:`shard_indices`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.distributed as dist

__all__ = ["default_backend", "local_device", "local_rank", "rank_and_world_size", "shard_indices", "wrap_ddp"]


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


def wrap_ddp(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``DistributedDataParallel(module)`` on ``device`` (its CUDA index, or the CPU with gloo)."""
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)


def shard_indices(num_items: int, seed: int, record_path: Path | None = None, owner: str = "trainer") -> list[int]:
    """This rank's indices of ``num_items`` (shuffled with ``seed``, disjoint across ranks, tail dropped).

    A collective: every rank must call it. Rank 0 writes every rank's shard to ``record_path``
    (``data_shards.json``) when given.
    """
    from torch.utils.data import DistributedSampler

    rank, world = rank_and_world_size()
    if num_items < world:
        raise ValueError(f"{owner}: {num_items} training items cannot be shared by {world} processes.")
    sampler = DistributedSampler(range(num_items), num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=True)
    indices = [int(i) for i in sampler]
    shards: list[list[int] | None] = [None] * world
    dist.all_gather_object(shards, indices)
    if rank == 0 and record_path is not None:
        record = {"world_size": world, "seed": seed, "num_slices": num_items, "shards": {str(r): s for r, s in enumerate(shards)}}
        Path(record_path).write_text(json.dumps(record) + "\n", encoding="utf-8")
    return indices
