"""``RandGenerativeAugmentd``: mixes synthetic samples into training batches (a MONAI batch transform).

Applied to a collated batch dict in the main process (after the ``DataLoader``), because generators
must not live in loader workers. With probability ``prob`` a batch gets synthetic samples: a fraction
drawn from ``mix_ratio_range`` of the batch (at most ``batch_limit``) is replaced by (or extended with)
samples from the class's generator. Every sample is marked in the image's ``MetaTensor`` meta:
``meta["medgen_synthetic"]`` is a bool tensor ``(B,)`` and ``meta["medgen_provenance"]`` a list of
provenance records (``None`` for real samples), so synthetic samples can be filtered out of
validation and reported (:func:`synthetic_mask`).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.transforms import MapTransform, Randomizable

from medgen_core.augmentation.manager import GenerativeAugmentationManager
from medgen_core.errors import AugmentationError

__all__ = ["RandGenerativeAugmentd", "SYNTHETIC_KEY", "PROVENANCE_KEY", "synthetic_mask"]

SYNTHETIC_KEY = "medgen_synthetic"
PROVENANCE_KEY = "medgen_provenance"


def synthetic_mask(image: torch.Tensor) -> torch.Tensor:
    """Bool ``(B,)``: which samples of a batch are synthetic (all ``False`` for an unmarked batch)."""
    if isinstance(image, MetaTensor) and SYNTHETIC_KEY in image.meta:
        return torch.as_tensor(image.meta[SYNTHETIC_KEY], dtype=torch.bool)
    return torch.zeros(image.shape[0], dtype=torch.bool)


class RandGenerativeAugmentd(Randomizable, MapTransform):
    """Mix synthetic samples into a collated batch.

    Args:
        manager: the generator cache (its config gives prob, ratio, limit, steps, ...).
        image_key: batch key of the images ``(B, 1, H, W)``, intensities in [0, 1].
        class_key: batch key of per-sample class indices ``(B,)`` (into ``config.classes``); ``None``
            uses the first class for every sample. Added samples get their class index written here.
        label_key: batch key of label maps ``(B, 1, H, W)`` (for ``source="labels"``); replaced or
            extended alongside the images.
        training: apply only while ``True``; :meth:`train`/:meth:`eval` switch it, as for a module.
    """

    def __init__(self, manager: GenerativeAugmentationManager, image_key: str = "image", class_key: str | None = "label",
                 label_key: str | None = None, training: bool = True) -> None:
        MapTransform.__init__(self, [image_key], allow_missing_keys=False)
        self.manager = manager
        self.config = manager.config
        self.image_key, self.class_key, self.label_key = image_key, class_key, label_key
        self.training = training
        self.set_random_state(seed=self.config.seed)
        self.batches_seen = 0
        self.batches_augmented = 0
        self.synthetic_samples = 0

    def train(self, mode: bool = True) -> RandGenerativeAugmentd:
        self.training = mode
        return self

    def eval(self) -> RandGenerativeAugmentd:
        return self.train(False)

    def randomize(self, data: Any = None) -> None:  # decisions are drawn inside __call__
        pass

    def _classes(self, batch: Mapping[Hashable, Any], size: int) -> np.ndarray:
        if self.class_key is None or self.class_key not in batch:
            return np.zeros(size, dtype=np.int64)
        values = torch.as_tensor(batch[self.class_key]).reshape(size, -1)[:, 0]
        return values.cpu().numpy().astype(np.int64)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        batch = dict(data)
        image = batch[self.image_key]
        if image.dim() != 4:
            raise AugmentationError(f"RandGenerativeAugmentd: {self.image_key!r} must be a collated 2D batch (B, C, H, W), got {tuple(image.shape)}")
        size = image.shape[0]
        synthetic = torch.zeros(size, dtype=torch.bool)
        records: list[dict | None] = [None] * size
        self.batches_seen += 1
        cfg = self.config
        apply = self.training and cfg.enabled and self.R.rand() < cfg.prob
        if apply:
            ratio = self.R.uniform(*cfg.mix_ratio_range)
            count = min(cfg.batch_limit, int(math.floor(ratio * size + self.R.rand())))  # unbiased rounding: E[count] = ratio * B
            if count > 0:
                batch, synthetic, records = self._mix(batch, count, synthetic, records)
                self.batches_augmented += 1
                self.synthetic_samples += count
        out = batch[self.image_key]
        out = out if isinstance(out, MetaTensor) else MetaTensor(out)
        out.meta[SYNTHETIC_KEY] = synthetic
        out.meta[PROVENANCE_KEY] = records
        out.is_batch = True
        batch[self.image_key] = out
        return batch

    def _mix(self, batch: dict, count: int, synthetic: torch.Tensor, records: list) -> tuple[dict, torch.Tensor, list]:
        cfg = self.config
        image = batch[self.image_key]
        size, spatial = image.shape[0], tuple(image.shape[-2:])
        classes = self._classes(batch, size)
        if cfg.mix_mode == "replace":
            chosen = np.sort(self.R.choice(size, size=count, replace=False))
        else:
            chosen = self.R.choice(size, size=count, replace=True)  # sources of the added samples
        seed = int(self.R.randint(0, 2**31 - 1))
        new_images = torch.empty((count, *image.shape[1:]), dtype=image.dtype)
        new_records: list[dict] = [{}] * count
        for c in np.unique(classes[chosen]):
            slots = np.nonzero(classes[chosen] == c)[0]
            src = torch.as_tensor(chosen[slots])
            class_name = cfg.classes[int(c)]
            gen = torch.Generator().manual_seed(seed + int(c))
            kwargs: dict[str, Any] = {"generator": gen, "seed": seed + int(c), "size": spatial}
            source = cfg.for_class(class_name).source
            if source == "vary":
                kwargs["images"] = torch.as_tensor(image[src]).float()
            elif source == "labels":
                if self.label_key is None or self.label_key not in batch:
                    raise AugmentationError("RandGenerativeAugmentd: source='labels' needs label_key pointing at label maps in the batch")
                kwargs["labels"] = torch.as_tensor(batch[self.label_key][src])
            made = self.manager.generate(class_name, len(slots), **kwargs)
            pixels = made.images
            if tuple(pixels.shape[-2:]) != spatial:
                pixels = F.interpolate(pixels, size=spatial, mode="bilinear", align_corners=False)
            if pixels.shape[1] != image.shape[1]:
                pixels = pixels.expand(-1, image.shape[1], -1, -1)
            new_images[torch.as_tensor(slots)] = pixels.to(new_images.dtype)
            for j, slot in enumerate(slots):
                new_records[slot] = made.records[j]
        base = torch.as_tensor(image).clone() if cfg.mix_mode == "replace" else torch.as_tensor(image)
        if cfg.mix_mode == "replace":
            base[torch.as_tensor(chosen)] = new_images.to(base.device)
            synthetic[torch.as_tensor(chosen)] = True
            for j, i in enumerate(chosen):
                records[int(i)] = new_records[j]
            batch[self.image_key] = base
        else:
            batch[self.image_key] = torch.cat([base, new_images.to(base.device)], 0)
            synthetic = torch.cat([synthetic, torch.ones(count, dtype=torch.bool)])
            records = records + new_records
            for key in (k for k in (self.class_key, self.label_key) if k is not None and k in batch):
                values = torch.as_tensor(batch[key])
                batch[key] = torch.cat([values, values[torch.as_tensor(chosen)]], 0)
        return batch, synthetic, records

    def stats(self) -> dict[str, Any]:
        """Batches seen/augmented, synthetic samples made, and the manager's cache counters."""
        s = self.manager.stats
        return {"batches_seen": self.batches_seen, "batches_augmented": self.batches_augmented, "synthetic_samples": self.synthetic_samples,
                "cache_hits": s.hits, "cache_misses": s.misses, "cache_evictions": s.evictions}
