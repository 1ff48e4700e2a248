"""The latent-space lab's user-facing error."""

from __future__ import annotations

from medgen_core.errors import MedGenError

__all__ = ["LabError"]


class LabError(MedGenError, ValueError):
    """A lab request that cannot be carried out: models that do not fit together, bad settings, bad images."""
