"""Synthetic data on disk: datasets of generated slices and variants of a volume, every file stamped.

- :func:`write_synthetic_dataset`: N generated 2D images as single-slice NIfTI files (provenance
  sidecar + embedded record each), a ``manifest.csv`` and a ``montage.png``.
- :func:`volume_variants`: K synthetic variants of a 3D volume, made slice by slice (image-to-image
  at a given strength, or from a label map through a label-to-image generator).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medgen_core.augmentation.manager import GenerativeAugmentationManager
from medgen_core.errors import AugmentationError
from medgen_core.io import Volume
from medgen_core.provenance import GenerationMetadata, sha256_file, write_generated_volume

__all__ = ["SyntheticDataset", "volume_variants", "write_synthetic_dataset"]

MANIFEST_FIELDS = ["file", "class_name", "index", "seed", "generator", "generator_kind", "weights_sha256", "pixel_sha256"]


@dataclass
class SyntheticDataset:
    files: list[Path]
    manifest: Path
    montage: Path


def _metadata(record: dict[str, Any], inputs: list[dict[str, Any]] | None = None) -> GenerationMetadata:
    meta = GenerationMetadata.from_dict(record)
    if inputs:
        meta.inputs = inputs
    return meta


def write_synthetic_dataset(manager: GenerativeAugmentationManager, n: int, out_dir: str | Path, classes: list[str] | None = None,
                            seed: int | None = None, spacing: tuple[float, float] = (1.0, 1.0), batch_size: int = 8,
                            progress: bool = True) -> SyntheticDataset:
    """Generate ``n`` images, round-robin over ``classes`` (default: all of the config's classes).

    Files are ``out_dir/synthetic_{i:05d}_{class}.nii.gz`` (shape ``(H, W, 1)``, ``spacing`` mm in-plane).
    """
    from tqdm import tqdm

    from medgen_core.utils.figures import save_montage

    if n < 1:
        raise AugmentationError(f"the number of images must be >= 1, got {n}")
    cfg = manager.config
    classes = list(classes or cfg.classes)
    unknown = sorted(set(classes) - set(cfg.classes))
    if unknown:
        raise AugmentationError(f"unknown class(es) {unknown}; the config's classes are {cfg.classes}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    seed = cfg.seed if seed is None else seed
    wanted = [classes[i % len(classes)] for i in range(n)]
    files: list[Path] = []
    rows: list[dict[str, Any]] = []
    shown: list[tuple[str, np.ndarray]] = []
    bar = tqdm(total=n, desc="synthetic images", disable=not progress)
    for class_name in classes:
        indices = [i for i, c in enumerate(wanted) if c == class_name]
        for start in range(0, len(indices), batch_size):
            chunk = indices[start : start + batch_size]
            chunk_seed = seed + chunk[0]
            made = manager.generate(class_name, len(chunk), seed=chunk_seed, source="sample")
            for j, i in enumerate(chunk):
                image = made.images[j, 0].numpy()
                path = out_dir / f"synthetic_{i:05d}_{class_name}.nii.gz"
                affine = np.diag([spacing[0], spacing[1], 1.0, 1.0])
                meta = _metadata(made.records[j])
                write_generated_volume(Volume(image[:, :, None], affine), path, meta)
                files.append(path)
                rows.append({"file": path.name, "class_name": class_name, "index": i, "seed": chunk_seed, "generator": meta.generator,
                             "generator_kind": meta.parameters.get("generator_kind"), "weights_sha256": meta.weights_sha256,
                             "pixel_sha256": meta.output.get("sha256")})
                if len(shown) < 8:
                    shown.append((f"{class_name} #{i}", image))
            bar.update(len(chunk))
    bar.close()
    rows.sort(key=lambda r: r["index"])
    manifest = out_dir / "manifest.csv"
    tmp = manifest.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, MANIFEST_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(manifest)
    montage = save_montage(shown, out_dir / "montage.png", title=f"AI-generated synthetic images ({manager.config.modality})", vmax=1.0)
    return SyntheticDataset(sorted(files), manifest, montage)


def volume_variants(manager: GenerativeAugmentationManager, volume: Volume, k: int, class_name: str, source: str = "vary",
                    seed: int | None = None, slice_axis: int = 2, batch_size: int = 8, progress: bool = True) -> list[tuple[Volume, GenerationMetadata]]:
    """``k`` synthetic variants of ``volume`` with their provenance records (not yet written).

    ``source="vary"``: image-to-image per slice at the config's ``strength``, intensities mapped to
    [0, 1] by the volume's 99.9th percentile and back. ``source="labels"``: ``volume`` is an integer
    label map; each variant is generated from it (variants differ only for stochastic generators), in
    [0, 1]. The input file (``volume.path``) is recorded with its sha256.
    """
    from tqdm import tqdm

    if k < 1:
        raise AugmentationError(f"the number of variants must be >= 1, got {k}")
    if source not in ("vary", "labels"):
        raise AugmentationError(f"volume variants are made with source 'vary' or 'labels', got {source!r}")
    cfg = manager.config.for_class(class_name)
    seed = cfg.seed if seed is None else seed
    array = np.moveaxis(volume.array, slice_axis, 0)  # (S, H, W)
    scale = 1.0
    if source == "vary":
        scale = float(np.percentile(array, 99.9)) or max(float(array.max()), 1e-8)
    inputs = [{"role": "input", "path": str(volume.path), "sha256": sha256_file(volume.path)}] if volume.path else []
    results = []
    bar = tqdm(total=k * array.shape[0], desc="variants", disable=not progress)
    for v in range(k):
        out = np.empty_like(array, dtype=np.float32)
        record = None
        for start in range(0, array.shape[0], batch_size):
            block = torch.from_numpy(np.ascontiguousarray(array[start : start + batch_size]))[:, None].float()
            gen_seed = seed + 100_003 * v + start
            if source == "vary":
                made = manager.generate(class_name, block.shape[0], images=(block / scale).clamp(0, 1), seed=gen_seed, source="vary")
                out[start : start + batch_size] = made.images[:, 0].numpy() * scale
            else:
                made = manager.generate(class_name, block.shape[0], labels=block.round(), seed=gen_seed, source="labels")
                out[start : start + batch_size] = made.images[:, 0].numpy()
            record = record or made.records[0]
            bar.update(block.shape[0])
        assert record is not None
        record = {**record, "parameters": {**record["parameters"], "variant": v, "seed_base": seed, "slice_axis": slice_axis,
                                           "intensity_scale": scale}}
        record["parameters"].pop("index_in_batch", None)
        meta = _metadata(record, inputs)
        meta.seed = seed
        results.append((Volume(np.moveaxis(out, 0, slice_axis), volume.affine), meta))
    bar.close()
    return results
