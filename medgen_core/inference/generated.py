"""A generated volume that carries the run-time figures its provenance record should hold."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from medgen_core.io import Volume

__all__ = ["GeneratedVolume"]


@dataclass
class GeneratedVolume(Volume):
    """:class:`~medgen_core.io.Volume` plus ``generation_parameters``: JSON-ready figures decided while generating
    (the gate's decision and self-check, the through-plane grid, the adaptation run), which
    :class:`~medgen_core.transforms.volume_io.SaveGeneratedVolumed` merges into the record's ``parameters``."""

    generation_parameters: dict[str, Any] = field(default_factory=dict)
