"""Which generated outputs get the voxel watermark, and what their provenance record says about it.

The writers of generated pixels (:func:`~medgen_core.provenance.stamp.write_generated_volume`,
:func:`~medgen_core.provenance.dicom_output.write_generated_dicom_series`) call
:func:`mark_generated_volume` before hashing the pixels, so the record's pixel sha256 is that of the
marked image. Marked: synthetic images with non-integer voxels. Not marked: AI-derived label maps
(their values are class indices, which a mark would corrupt), any integer-valued volume, and volumes
with fewer than :data:`~medgen_core.provenance.watermark.MIN_VOXELS` voxels (too few to detect a mark in).
The record says what was embedded in ``parameters["watermark"]`` (no schema change); a record
that already says so belongs to pixels that already carry the mark (e.g. a bundle's staged output
re-written as DICOM), which are not marked a second time.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from medgen_core.io import Volume
from medgen_core.provenance.record import DERIVED_LABEL_DISCLOSURE, GenerationMetadata
from medgen_core.provenance.watermark import (
    DEFAULT_MAX_MODULATION,
    DEFAULT_STRENGTH,
    MIN_VOXELS,
    SCHEME,
    SCHEME_VERSION,
    TILE_PERIOD,
    embed_watermark,
)

__all__ = ["WATERMARK_PARAMETER", "mark_generated_volume", "watermark_parameters"]

#: Key of ``GenerationMetadata.parameters`` that records the embedded mark.
WATERMARK_PARAMETER = "watermark"


def _chunks(array: np.ndarray, voxels: int = 1 << 22):
    """Leading-axis slabs of ``array`` (views) of about ``voxels`` voxels, float64 where needed: reductions over a
    large volume without a full-size temporary."""
    a = np.asarray(array)
    if a.ndim == 0:
        yield a.astype(np.float64)
        return
    step = max(1, voxels // max(1, a[0].size))
    for i in range(0, a.shape[0], step):
        yield a[i : i + step].astype(np.float64, copy=False)


def watermark_parameters(
    original: np.ndarray, marked: np.ndarray, strength: float = DEFAULT_STRENGTH
) -> dict[str, Any]:
    """The record of an embedded mark: scheme, version, strength, measured PSNR and how to detect it."""
    sq = sum(float(np.sum((np.asarray(m, dtype=np.float64) - o) ** 2)) for o, m in zip(_chunks(original), _chunks(marked)))
    rms = float(np.sqrt(sq / max(1, original.size)))
    data_range = float(np.ptp(original))
    return {
        "scheme": SCHEME,
        "version": SCHEME_VERSION,
        "strength": float(strength),
        "max_modulation": DEFAULT_MAX_MODULATION,
        "psnr_db": round(20.0 * float(np.log10(data_range / rms)), 2) if rms > 0 else None,
        "tile_period": TILE_PERIOD,
        "key": "public",
        "detect": "medgen provenance detect FILE",
    }


def mark_generated_volume(volume: Volume, metadata: GenerationMetadata, strength: float = DEFAULT_STRENGTH) -> Volume:
    """The volume a writer of generated pixels stores: marked if it is a synthetic image, else unchanged.

    Args:
        volume: The generated volume, float32 ``(X, Y, Z)``.
        metadata: Its record; ``parameters["watermark"]`` is set when a mark is embedded.
        strength: See :func:`~medgen_core.provenance.watermark.embed_watermark`.

    Returns:
        A marked copy of ``volume`` (same affine, path and type), or ``volume`` itself when it is an
        AI-derived label map, integer-valued, constant, smaller than ``MIN_VOXELS``, or its record
        already lists a mark.
    """
    recorded = metadata.parameters.get(WATERMARK_PARAMETER)
    if isinstance(recorded, dict) and recorded.get("scheme") == SCHEME:
        return volume
    array = volume.array
    if array.size < MIN_VOXELS or metadata.disclosure == DERIVED_LABEL_DISCLOSURE:
        return volume
    if all(np.array_equal(a, np.round(a)) for a in _chunks(array)):  # integer-valued: a label map or already quantised
        return volume
    marked = embed_watermark(array, strength=strength)
    if all(np.array_equal(m, a) for m, a in zip(_chunks(marked), _chunks(array))):
        return volume
    metadata.parameters[WATERMARK_PARAMETER] = watermark_parameters(array, marked, strength)
    return dataclasses.replace(volume, array=marked)  # same affine, path, format (and subclass fields)
