"""Write a generated volume as a DICOM series together with its provenance record.

:func:`write_generated_dicom_series` is the DICOM counterpart of
:func:`~medgen_core.provenance.stamp.write_generated_volume`:

1. the volume is quantised and its geometry fitted (:func:`~medgen_core.io.dicom_writer.dicom_representation`);
2. the slices are written into a temporary folder (:func:`~medgen_core.io.dicom_writer.write_dicom_series`,
   which sets Synthetic Data YES, Contributing Equipment 109100 and the other standard marks);
3. the folder is read back with :func:`~medgen_core.io.read_volume`; the values and geometry must be
   exactly the predicted ones, and ``output.sha256`` is the pixel hash of what was read back, so
   ``medgen provenance verify`` compares like with like;
4. the record (compact JSON) is embedded in every file, in the private block
   of :mod:`medgen_core.provenance.dicom_block` (group 0071, creator ``MEDGEN 1.0``: record, flag, pixel sha256)
   (a private block rather than a standard text attribute: no standard attribute is meant for a
   machine-readable record, and tools that do not know it keep it as opaque data or drop it);
5. the sidecar ``<out_dir>.generated.json`` is staged by the same function that writes the sidecar of
   NIfTI/NRRD outputs (``write_sidecar_json``; ``file_sha256`` hashes the files of the folder in name
   order), then the folder is renamed into place, then the sidecar. Killed at any moment, this leaves
   nothing new, or the new series whose every file carries the signed record (which verifies on its
   own), or the new series and its sidecar; never a series with a sidecar that disagrees.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from medgen_core.errors import ImageReadError, ImageWriteError, ProvenanceError
from medgen_core.io import Volume, read_volume
from medgen_core.io.dicom_writer import GEOMETRY_TOLERANCE_MM, WrittenDicomSeries, read_source_datasets, write_dicom_series
from medgen_core.provenance.record import GenerationMetadata, sha256_file
from medgen_core.provenance.dicom_block import embed_dicom_record
from medgen_core.provenance.stamp import image_output, sidecar_path, stamp_record, write_sidecar_json
from medgen_core.provenance.watermark_stamp import mark_generated_volume

__all__ = ["write_generated_dicom_series"]

logger = logging.getLogger(__name__)



def write_generated_dicom_series(
    volume: Volume,
    out_dir: str | Path,
    metadata: GenerationMetadata,
    source: str | Path | None = None,
    *,
    keep_patient: bool = False,
    series_description: str | None = None,
    derivation_codes: Iterable[tuple[str, str, str]] = (),
) -> Path:
    """Write a generated volume as a DICOM series folder with its provenance embedded and in a sidecar.

    Args:
        volume: The generated volume.
        out_dir: New (or empty) folder for the series.
        metadata: The run's record; its ``output`` is overwritten (``format`` ``"dicom"``, the pixel
            hash of the values as read back, their shape and spacing).
        source: The input image; when it is DICOM its headers give the Source Image Sequence, the
            Frame of Reference, the modality and (with ``keep_patient``) the patient/study identifiers.
        keep_patient: Copy patient and study identifiers from a DICOM source (default: anonymous).
        series_description: Series Description after ``AI-generated:`` (default: the task and generator).
        derivation_codes: ``(value, scheme, meaning)`` codes for Derivation Code Sequence.

    Returns:
        ``out_dir``.

    Raises:
        ImageWriteError: Bad destination, geometry DICOM cannot hold, or the write or read-back failed.
        ProvenanceError: The record is not serialisable or the sidecar could not be written (series removed).
    """
    out_dir = Path(out_dir)
    volume = mark_generated_volume(volume, metadata)  # synthetic images only; not again if the record says it is marked
    sources = read_source_datasets(source) if source is not None else []
    inputs = [item["path"] for item in metadata.inputs] + ([source] if source is not None else [])
    description = series_description or f"{metadata.task} by {metadata.generator}"
    side = sidecar_path(out_dir)
    if side.is_dir():
        raise ProvenanceError(f"{out_dir}: cannot write the provenance sidecar {side.name}: it is a directory; nothing written")
    staged_side = side.with_name(f".tmp-{secrets.token_hex(6)}-{side.name}")

    def embed(series: WrittenDicomSeries) -> None:
        back = _read_back(series)
        metadata.output = image_output(back, out_dir.name, "dicom")
        record = stamp_record(metadata)
        embed_dicom_record(series.files, record, metadata.generator)
        write_sidecar_json(staged_side, record, sha256_file(series.path))  # same file names and bytes as after the rename
        with open(staged_side, "rb+") as handle:
            os.fsync(handle.fileno())
        side.unlink(missing_ok=True)  # a stale sidecar of a folder that does not exist (or is empty)

    try:
        _write(volume, out_dir, metadata, sources, keep_patient, description, derivation_codes, inputs, embed)
        os.replace(staged_side, side)
    except BaseException as err:
        with contextlib.suppress(OSError):
            staged_side.unlink()
        if isinstance(err, OSError) and out_dir.is_dir() and not side.exists():
            shutil.rmtree(out_dir, ignore_errors=True)
            raise ProvenanceError(f"{out_dir}: writing the provenance sidecar failed ({err}); series removed") from err
        raise
    logger.info("wrote generated DICOM series %s (%s) with provenance sidecar", out_dir, metadata.generator)
    return out_dir


def _write(volume: Volume, out_dir: Path, metadata: GenerationMetadata, sources: list[Any], keep_patient: bool,
           description: str, derivation_codes: Iterable[tuple[str, str, str]], inputs: list[Any],
           embed: Callable[[WrittenDicomSeries], None]) -> None:
    write_dicom_series(
        volume,
        out_dir,
        series_description=description,
        source_datasets=sources,
        keep_patient=keep_patient,
        generator=metadata.generator,
        derivation_description=(f"{metadata.disclosure} Generated by {metadata.generator} (task {metadata.task}"
                                f"{', bundle ' + metadata.bundle_id if metadata.bundle_id else ''}); "
                                "provenance record in private block MEDGEN 1.0 and the .generated.json sidecar."),
        derivation_codes=derivation_codes,
        image_comments=metadata.disclosure,
        inputs=inputs,
        before_commit=embed,
    )


def _read_back(series: WrittenDicomSeries) -> Volume:
    """Read the temporary series as verify will, and insist it is exactly what was meant to be written."""
    expected = series.volume
    try:
        back = read_volume(series.path, strict=False)
    except ImageReadError as err:
        raise ImageWriteError(f"{series.path}: the written DICOM series does not read back ({err})") from err
    if back.shape != expected.shape or not np.array_equal(back.array, expected.array):
        raise ImageWriteError(f"{series.path}: the DICOM series reads back with other values or shape {back.shape} than written {expected.shape}")
    error = float(np.max(np.abs(back.affine - expected.affine)))
    if error > GEOMETRY_TOLERANCE_MM:
        raise ImageWriteError(f"{series.path}: the DICOM series reads back with another geometry (affine off by {error:.3g})")
    return back
