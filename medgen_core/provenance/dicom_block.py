"""MedGen's private DICOM block (group :data:`DICOM_PRIVATE_GROUP`, creator :data:`DICOM_PRIVATE_CREATOR`) holding a provenance record.

==============  ====  ========================================================
element         VR    content
==============  ====  ========================================================
(0071,xx01)     UT    the provenance record, compact JSON (ASCII)
(0071,xx02)     LO    ``SYNTHETIC AI <generator name:version>``
(0071,xx03)     LO    the record's pixel sha256 (hex)
==============  ====  ========================================================

Written by :func:`~medgen_core.provenance.dicom_output.write_generated_dicom_series`, read by
:func:`~medgen_core.provenance.stamp.read_provenance` (through :func:`read_embedded_dicom_record`).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from medgen_core.errors import ProvenanceError
from medgen_core.provenance.signing import canonical_json

__all__ = ["DICOM_PRIVATE_CREATOR", "DICOM_PRIVATE_GROUP", "embed_dicom_record", "read_embedded_dicom_record"]

DICOM_PRIVATE_GROUP = 0x0071
DICOM_PRIVATE_CREATOR = "MEDGEN 1.0"
_RECORD, _FLAG, _PIXEL_SHA = 0x01, 0x02, 0x03


def embed_dicom_record(files: list[Path], record: dict[str, Any], generator: str) -> None:
    """Add the private provenance block to every file of a series, in place: ``record`` as compact JSON, the
    ``SYNTHETIC AI <generator>`` flag and the record's pixel sha256."""
    import pydicom

    compact = canonical_json(record).decode("ascii")
    for file in files:
        ds = pydicom.dcmread(str(file))
        block = ds.private_block(DICOM_PRIVATE_GROUP, DICOM_PRIVATE_CREATOR, create=True)
        block.add_new(_RECORD, "UT", compact)
        block.add_new(_FLAG, "LO", f"SYNTHETIC AI {generator}"[:64])
        block.add_new(_PIXEL_SHA, "LO", str(record["output"]["sha256"]))
        ds.save_as(str(file), enforce_file_format=True)


def read_embedded_dicom_record(path: str | Path) -> dict[str, Any] | None:
    """The provenance record embedded in a DICOM series folder (or one ``.dcm`` file), or ``None``.

    Raises:
        ProvenanceError: The slices carry different records, or a record is not valid JSON.
    """
    import pydicom

    path = Path(path)
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    texts: set[str] = set()
    for file in files:
        with contextlib.suppress(Exception):  # not DICOM, or unreadable: the pixel check reports it
            ds = pydicom.dcmread(str(file), stop_before_pixels=True)
            with contextlib.suppress(KeyError):
                texts.add(str(ds.private_block(DICOM_PRIVATE_GROUP, DICOM_PRIVATE_CREATOR)[_RECORD].value).rstrip(" \x00"))
    if not texts:
        return None
    if len(texts) > 1:
        raise ProvenanceError(f"{path}: the slices carry {len(texts)} different provenance records")
    try:
        record = json.loads(texts.pop())
    except ValueError as err:
        raise ProvenanceError(f"{path}: embedded DICOM provenance record is not valid JSON ({err})") from err
    if not isinstance(record, dict) or not str(record.get("schema", "")).startswith("medgen-provenance/"):
        return None
    return record
