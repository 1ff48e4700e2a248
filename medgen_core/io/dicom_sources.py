"""The DICOM source of a generated series: its headers, and which source slices a new slice derives from.

Used by :mod:`medgen_core.io.dicom_writer` for the Source Image Sequence (0008,2112), the Frame of
Reference, the modality and (on request) the patient and study identifiers of a derived series.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medgen_core.errors import ImageReadError
from medgen_core.io.volume import format_of

__all__ = ["SOURCE_IMAGE_PURPOSE", "code_item", "overlapping_sources", "read_source_datasets", "source_item"]

#: Purpose of Reference of a Source Image Sequence item (CID 7202).
SOURCE_IMAGE_PURPOSE = ("121322", "DCM", "Source image for image processing operation")


def read_source_datasets(path: str | Path) -> list[Any]:
    """Headers (no pixels) of the DICOM file ``path``, or of the largest series in the folder ``path``.

    Returns an empty list when ``path`` is not DICOM (NIfTI, NRRD, ...).

    Raises:
        ImageReadError: A ``.dcm`` file or a folder without any readable DICOM file.
    """
    import pydicom

    path = Path(path)
    if path.is_file():
        known = format_of(path)
        if known is None or known[0] != "dicom":
            return []
        files = [path]
    elif path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file())
    else:
        return []
    by_series: dict[str, list[Any]] = {}
    for file in files:
        try:
            ds = pydicom.dcmread(str(file), stop_before_pixels=True)
        except Exception:  # not DICOM: ignored, as the series reader does
            continue
        if "SOPInstanceUID" in ds and "Rows" in ds:  # image objects only (no reports, structure sets ...)
            by_series.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append(ds)
    if not by_series:
        raise ImageReadError(f"{path}: no readable DICOM file found (expected the DICOM source series)")
    return max(by_series.values(), key=len)


def code_item(code: tuple[str, str, str]) -> Any:
    """A code sequence item (Code Value, Coding Scheme Designator, Code Meaning)."""
    from pydicom.dataset import Dataset

    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = code
    return item


def source_item(src: Any) -> Any:
    """A Source Image Sequence item referencing the source instance ``src``."""
    from pydicom.dataset import Dataset

    item = Dataset()
    item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = src.SOPClassUID, src.SOPInstanceUID
    item.PurposeOfReferenceCodeSequence = [code_item(SOURCE_IMAGE_PURPOSE)]
    return item


def overlapping_sources(sources: Sequence[Any], position: np.ndarray, normal: np.ndarray, dz: float) -> list[Any]:
    """Source slices whose plane overlaps this slice (parallel planes), else every source slice."""
    usable = [s for s in sources if "SOPClassUID" in s and "SOPInstanceUID" in s]
    try:
        planes = [(np.asarray(s.ImageOrientationPatient, float), np.asarray(s.ImagePositionPatient, float)) for s in usable]
    except (AttributeError, ValueError, TypeError):
        return usable
    if not planes or any(iop.shape != (6,) or ipp.shape != (3,) for iop, ipp in planes):
        return usable
    if any(abs(abs(np.cross(iop[:3], iop[3:]) @ normal) - 1) > 1e-4 for iop, _ in planes):
        return usable
    offsets = np.array([(ipp - position) @ normal for _, ipp in planes])
    gaps = np.diff(np.sort(offsets))
    src_dz = float(np.median(gaps)) if gaps.size else float(usable[0].get("SliceThickness", dz) or dz)
    near = [s for s, d in zip(usable, offsets) if abs(d) < (src_dz + dz) / 2 - 1e-6]  # slabs overlap (touching is not)
    return near or [usable[int(np.argmin(np.abs(offsets)))]]
