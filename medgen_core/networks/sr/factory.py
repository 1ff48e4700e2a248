"""Build an SR network from a plain, JSON-safe spec (as a bundle's metadata may list per weight variant).

``{"architecture": "fast", "num_feat": 48, "num_block": 4}`` -> :class:`~medgen_core.networks.sr.fast.FastSRNet`;
``None`` or ``{"architecture": "rrdb", ...}`` -> :class:`~medgen_core.networks.sr.rrdb.RRDBNet` (no spec: the
shipped RRDB's sizes). Only the registered architectures and their keyword arguments can be named, so a spec
cannot run code.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch.nn as nn

from medgen_core.networks.sr.fast import FastSRNet
from medgen_core.networks.sr.rrdb import RRDBNet

__all__ = ["SR_ARCHITECTURES", "DEFAULT_RRDB_SPEC", "sr_network"]

#: Architecture names a spec may use.
SR_ARCHITECTURES: dict[str, type[nn.Module]] = {"rrdb": RRDBNet, "fast": FastSRNet}
#: Sizes of the shipped RRDB variants (x2_mixed, x2_gaussian, ...), used when a variant lists no network.
DEFAULT_RRDB_SPEC = {"architecture": "rrdb", "num_feat": 32, "num_block": 3, "num_grow": 16}
_NOT_IN_SPEC = ("spatial_dims", "scale", "in_channels", "out_channels")


def sr_network(spec: Mapping[str, Any] | None, scale: int, spatial_dims: int = 2, in_channels: int = 1, out_channels: int = 1) -> nn.Module:
    """The network of ``spec`` (see the module docstring) for ``scale``; unknown names raise ``ValueError``."""
    spec = dict(DEFAULT_RRDB_SPEC if spec is None else spec)
    name = spec.pop("architecture", "rrdb")
    if name not in SR_ARCHITECTURES:
        raise ValueError(f"sr_network: unknown architecture {name!r}; known: {sorted(SR_ARCHITECTURES)}.")
    clash = [k for k in spec if k in _NOT_IN_SPEC]
    if clash:
        raise ValueError(f"sr_network: {clash} are set by the caller, not by the spec.")
    return SR_ARCHITECTURES[name](spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels, scale=int(scale), **spec)
