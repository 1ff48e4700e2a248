"""Small helpers shared across layers (no torch/monai imports)."""

from medgen_core.utils.progress import PROGRESS_ENV, PROGRESS_PREFIX, progress, progress_mode

__all__ = ["PROGRESS_ENV", "PROGRESS_PREFIX", "progress", "progress_mode"]
