"""Helpers for the training tests: tiny NIfTI data folders and a bundle's train.json run through MONAI's ConfigWorkflow."""

from __future__ import annotations

import csv
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from scipy.ndimage import gaussian_filter

from bundle_testing import REPO

BUNDLE_ROOT = REPO / "monai_bundles"


def smooth_volume(shape: Sequence[int], seed: int = 0, scale: float = 100.0, sigma: float = 2.0) -> np.ndarray:
    """A smooth random positive volume (float32) in ``[0, scale]``."""
    rng = np.random.default_rng(seed)
    vol = gaussian_filter(rng.normal(size=tuple(shape)), sigma, mode="wrap")
    return ((vol - vol.min()) / (vol.max() - vol.min()) * scale).astype(np.float32)


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data), np.eye(4) if affine is None else affine), str(path))
    return path


def volume_folder(folder: Path, n: int = 2, shape: Sequence[int] = (40, 40, 4), seed: int = 0) -> Path:
    """``folder/vol_<i>.nii.gz``: ``n`` smooth volumes (the one-domain layout of the training data)."""
    for i in range(n):
        write_nifti(folder / f"vol_{i}.nii.gz", smooth_volume(shape, seed + i))
    return folder


def workflow(bundle: str, overrides: Mapping[str, Any], config: str | Sequence[str] = "train.json") -> Any:
    """``ConfigWorkflow`` of ``bundle``'s training config(s) with ``overrides`` (ids -> values, literals), initialised."""
    from monai.bundle import ConfigWorkflow

    root = BUNDLE_ROOT / bundle
    configs = [config] if isinstance(config, str) else list(config)
    values = {"bundle_root": str(root), **dict(overrides)}
    w = ConfigWorkflow(config_file=[str(root / "configs" / c) for c in configs], meta_file=str(root / "configs" / "metadata.json"),
                       workflow_type="train", **values)
    w.initialize()
    return w


def train(bundle: str, overrides: Mapping[str, Any], config: str | Sequence[str] = "train.json",
          before_run: Callable[[Any], None] | None = None) -> Any:
    """Run a bundle's training config through ConfigWorkflow (initialize, check_properties, run, finalize); returns the workflow."""
    w = workflow(bundle, overrides, config)
    assert w.check_properties() == [], w.check_properties()
    if before_run is not None:
        before_run(w)
    try:
        w.run()
    finally:
        w.finalize()
    return w


def log_rows(path: Path) -> dict[str, list[tuple[int, float]]]:
    """``{tag: [(step, value)]}`` of a ``train_log.csv``."""
    out: dict[str, list[tuple[int, float]]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            out.setdefault(row["tag"], []).append((int(row["step"]), float(row["value"])))
    return out
