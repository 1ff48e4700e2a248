"""Generative augmentation: per-modality settings, an LRU cache of generators, and backends.

The training-time transform is :class:`medgen_core.augmentation.transform.RandGenerativeAugmentd`;
MONAI bundles become backends through :mod:`medgen_core.bundles.generators`.
"""

from medgen_core.augmentation.backends import (
    BackendLoader,
    DiffusersBackend,
    DiffusersLoader,
    GeneratorBackend,
    GeneratorIdentity,
    directory_sha256,
)
from medgen_core.augmentation.config import AugmentationConfig
from medgen_core.augmentation.manager import CacheStats, GenerativeAugmentationManager, SyntheticBatch

__all__ = [
    "AugmentationConfig",
    "BackendLoader",
    "CacheStats",
    "DiffusersBackend",
    "DiffusersLoader",
    "GenerativeAugmentationManager",
    "GeneratorBackend",
    "GeneratorIdentity",
    "SyntheticBatch",
    "directory_sha256",
]
