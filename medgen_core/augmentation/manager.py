"""Loads generators on demand and keeps at most ``max_models`` of them in memory (LRU).

Generators are directories ``base_dir/{modality}_{class}`` (or ``base_dir/{modality}`` for one
class-conditional generator serving every class); a :class:`BackendLoader` recognises each
kind (diffusers pipelines here; MONAI bundles through :func:`medgen_core.bundles.generators.bundle_loaders`).
Every synthetic batch comes back with one provenance record per sample.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from medgen_core.augmentation.backends import BackendLoader, DiffusersLoader, GeneratorBackend, free_memory
from medgen_core.augmentation.config import AugmentationConfig
from medgen_core.errors import AugmentationError
from medgen_core.provenance import GenerationMetadata

__all__ = ["CacheStats", "GenerativeAugmentationManager", "SyntheticBatch"]

logger = logging.getLogger(__name__)


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0


@dataclass
class SyntheticBatch:
    """``images`` ``(N, 1, H, W)`` in [0, 1] and one provenance record (dict) per image."""

    images: torch.Tensor
    records: list[dict[str, Any]]


class GenerativeAugmentationManager:
    """On-demand generator cache for generative augmentation.

    Args:
        base_dir: folder holding one generator directory per ``{modality}_{class}``.
        config: the :class:`AugmentationConfig` (its ``max_models`` bounds the cache).
        device: torch device for the generators (default: CUDA if available, else CPU).
        loaders: recognisers/loaders of generator directories, tried in order (default: diffusers).

    Not for data-loader worker processes: each worker would load its own copy of every generator.
    Calls from a worker raise :class:`AugmentationError`; apply generative augmentation to collated
    batches in the main process (:class:`~medgen_core.augmentation.transform.RandGenerativeAugmentd` does).
    """

    def __init__(self, base_dir: str | Path, config: AugmentationConfig, device: str | torch.device | None = None,
                 loaders: Sequence[BackendLoader] | None = None) -> None:
        self.base_dir = Path(base_dir)
        if not self.base_dir.is_dir():
            raise AugmentationError(f"{self.base_dir}: generator base directory not found (expected {{modality}}_{{class}} folders in it)")
        self.config = config
        self.device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.loaders = list(loaders) if loaders is not None else [DiffusersLoader()]
        self._cache: OrderedDict[str, GeneratorBackend] = OrderedDict()
        self.stats = CacheStats()

    # -- cache ------------------------------------------------------------------------------------
    def model_dir(self, class_name: str, modality: str | None = None) -> Path:
        """``base_dir/{modality}_{class}``, or ``base_dir/{modality}`` (one class-conditional generator
        serving every class) when only that exists."""
        modality = modality or self.config.modality
        specific, shared = self.base_dir / f"{modality}_{class_name}", self.base_dir / modality
        return shared if not specific.is_dir() and shared.is_dir() else specific

    @property
    def cached(self) -> list[str]:
        """Keys of the generators in memory, least recently used first."""
        return list(self._cache)

    def get(self, class_name: str, modality: str | None = None) -> GeneratorBackend:
        """The generator for ``(modality, class_name)``, loaded if needed (may evict the least recently used)."""
        info = torch.utils.data.get_worker_info()
        if info is not None:
            raise AugmentationError(
                f"GenerativeAugmentationManager.get called in data-loader worker {info.id}: generators must not be loaded "
                "in worker processes (one copy each). Apply generative augmentation to collated batches in the main process."
            )
        path = self.model_dir(class_name, modality)
        key = path.name
        if key in self._cache:
            self.stats.hits += 1
            self._cache.move_to_end(key)
            return self._cache[key]
        self.stats.misses += 1
        if not path.is_dir():
            known = sorted(p.name for p in self.base_dir.iterdir() if p.is_dir())
            raise AugmentationError(f"{path}: no generator for modality/class {key!r} (found: {known or 'none'})")
        loader = next((ld for ld in self.loaders if ld.can_load(path)), None)
        if loader is None:
            kinds = [ld.kind for ld in self.loaders]
            raise AugmentationError(f"{path}: not a generator directory any loader recognises (tried: {kinds}); "
                                    "expected a diffusers pipeline (model_index.json) or a MONAI bundle (configs/metadata.json)")
        while len(self._cache) >= self.config.max_models:
            self.evict()
        backend = loader.load(path, self.device)
        self._cache[key] = backend
        logger.info("loaded generator %s (%s) from %s", key, loader.kind, path)
        return backend

    def evict(self, key: str | None = None) -> str | None:
        """Drop one generator (default: the least recently used) and free its memory."""
        if not self._cache:
            return None
        key = key if key is not None else next(iter(self._cache))
        backend = self._cache.pop(key)
        backend.release()
        del backend
        free_memory()
        self.stats.evictions += 1
        return key

    def clear(self) -> None:
        while self._cache:
            self.evict()

    def memory_bytes(self) -> int:
        """Parameter bytes of the generators in memory."""
        return sum(b.parameter_bytes() for b in self._cache.values())

    # -- generation -------------------------------------------------------------------------------
    def generate(self, class_name: str, n: int = 1, *, images: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                 generator: torch.Generator | None = None, size: tuple[int, int] | None = None, seed: int | None = None,
                 source: str | None = None) -> SyntheticBatch:
        """``n`` synthetic images of ``class_name`` with provenance.

        ``source`` (default: the class's config) picks the path: ``"sample"`` from noise, ``"vary"``
        image-to-image from ``images`` ``(n, 1, H, W)``, ``"labels"`` from label maps ``(n, 1, H, W)``.
        """
        cfg = self.config.for_class(class_name)
        source = source or cfg.source
        backend = self.get(class_name)
        if generator is None:
            seed = cfg.seed if seed is None else seed
            generator = torch.Generator().manual_seed(seed)
        params: dict[str, Any] = {"source": source, "class_name": class_name, "modality": cfg.modality, "steps": cfg.inference_steps,
                                  "guidance_scale": cfg.guidance_scale}
        if source == "sample":
            prompt = cfg.prompt(class_name)
            out = backend.sample(n, class_name=class_name, prompt=prompt, steps=cfg.inference_steps, guidance_scale=cfg.guidance_scale,
                                 generator=generator, size=size)
            params["prompt"] = prompt
        elif source == "vary":
            if images is None:
                raise AugmentationError("generate(source='vary') needs the source images")
            prompt = cfg.prompt(class_name)
            out = backend.vary(images, strength=cfg.strength, class_name=class_name, prompt=prompt, steps=cfg.inference_steps,
                               guidance_scale=cfg.guidance_scale, generator=generator)
            params.update(prompt=prompt, strength=cfg.strength)
        elif source == "labels":
            if labels is None:
                raise AugmentationError("generate(source='labels') needs label maps")
            out = backend.from_labels(labels, generator=generator)
        else:
            raise AugmentationError(f"unknown source {source!r}; use 'sample', 'vary' or 'labels'")
        ident = backend.identity
        records = []
        for i in range(out.shape[0]):
            meta = GenerationMetadata(generator_name=ident.name, generator_version=ident.version, task=f"augment_{source}",
                                      bundle_id=ident.extra.get("bundle_id"), weights_sha256=ident.weights_sha256,
                                      parameters={**params, "index_in_batch": i, "generator_kind": ident.kind, "generator_source": ident.source},
                                      seed=seed)
            records.append(meta.to_dict())
        return SyntheticBatch(out.float().cpu(), records)
