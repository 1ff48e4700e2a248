"""Input-size rules of the translation generators, written so that ``torch.jit.script`` compiles them."""

from __future__ import annotations

import torch

__all__ = ["spatial_sizes_fit"]


def spatial_sizes_fit(x: torch.Tensor, spatial_dims: int, multiple: int, minimum: int) -> bool:
    """Whether ``x`` is ``(B, C, *S)`` with ``spatial_dims`` sizes, each a multiple of ``multiple`` and ``>= minimum``.

    Written with a plain loop so that ``torch.jit.script`` compiles it (a generator expression over
    ``x.shape`` is not scriptable).
    """
    if x.dim() != spatial_dims + 2:
        return False
    for size in x.shape[2:]:
        if size % multiple != 0 or size < minimum:
            return False
    return True
