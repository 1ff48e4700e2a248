"""Helpers shared by the bundle tests: find every bundle, snapshot one consistently, make sample inputs."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from medgen_core.bundles.catalog import read_metadata
from medgen_core.bundles.weights import weights_status

REPO = Path(__file__).resolve().parents[1]
BUNDLES = sorted(meta.parents[1] for meta in (REPO / "monai_bundles").glob("*/configs/metadata.json"))
BUNDLE_IDS = [b.name for b in BUNDLES]


def snapshot_bundle(src: Path, dst: Path, attempts: int = 10) -> Path:
    """Copy a bundle (without eval/ and runs/), retrying while its weights and metadata disagree.

    A background job may be replacing weights and then recording their hashes; a copy taken between
    the two steps would fail for reasons that are not the bundle's.
    """
    for attempt in range(attempts):
        if dst.exists():
            shutil.rmtree(dst)
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns("eval", "runs", "__pycache__"))
        if weights_status(dst, read_metadata(dst))[0] == "OK" or attempt == attempts - 1:
            break
        time.sleep(3)
    return dst


def sample_volume(path: Path, shape: tuple[int, int, int] = (24, 32, 4)) -> Path:
    """A smooth positive volume, 1 x 1 x 3 mm, written as NIfTI."""
    x, y, z = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    vol = (100 * np.exp(-(x**2 + y**2 + 0.5 * z**2) * 2) + 10).astype(np.float32)
    nib.save(nib.Nifti1Image(vol, np.diag([1.0, 1.0, 3.0, 1.0])), str(path))
    return path
