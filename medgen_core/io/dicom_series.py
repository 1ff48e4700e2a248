"""DICOM input: which files of a folder form the series, and whether their slices make a regular grid.

SimpleITK's series reader takes the slice spacing from the positions as if they were evenly spaced,
so a missing slice silently stretches the volume. Before any pixel is read, every file of the folder
is parsed with pydicom (``stop_before_pixels``, large values deferred) and:

* files that are not DICOM are ignored; DICOM objects that are not images (structured reports, RT
  structure sets, presentation states, segmentations, RT dose ...; decided by the SOP Class, or by the
  presence of Rows/Columns for unknown classes) are skipped with a logged note; a folder with no image
  file is an error;
* of several series (Series Instance UID) the one with the most image files is read, as before; a tie
  for the most files is refused as ambiguous; a file that says ``DICM`` but cannot be parsed is refused;
* inside that series every file must have the same Rows/Columns, Pixel Spacing and Image Orientation
  (Patient) (within :data:`ORIENTATION_TOLERANCE`), one frame and one sample per pixel, and an Image
  Position (Patient);
* positions are sorted along the slice normal (row x column cosines); duplicate positions, steps that
  differ from the median step by more than ``max(POSITION_TOLERANCE_MM, SLICE_SPACING_TOLERANCE * step)``
  (a missing or extra slice), and positions off the normal line (gantry tilt) are refused, with the
  positions, the expected step and the gap in the message.

The sorted file list is then read by SimpleITK. A Deflated-transfer-syntax file is first inflated
without keeping the output and refused past ``2 * max_voxels() + MAX_HEADER_BYTES`` bytes (16-bit
pixels at the voxel limit plus the header), so a deflate bomb cannot exhaust memory during parsing.
"""

from __future__ import annotations

import logging
import struct
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medgen_core.errors import ImageReadError
from medgen_core.io.limits import MAX_HEADER_BYTES, check_declared_size, max_voxels, measure_decompressed
from medgen_core.io.validation import check_spacing, one_line

__all__ = [
    "ORIENTATION_TOLERANCE",
    "POSITION_TOLERANCE_MM",
    "SLICE_SPACING_TOLERANCE",
    "check_dicom_file",
    "dicom_files",
    "series_files",
]

logger = logging.getLogger(__name__)

#: Allowed relative deviation of a slice step from the median step (1%).
SLICE_SPACING_TOLERANCE = 0.01
#: Absolute floor of the position tolerance, for rounding in the DS strings (mm).
POSITION_TOLERANCE_MM = 1e-3
#: Largest difference allowed between direction cosines of files of one series.
ORIENTATION_TOLERANCE = 1e-4
_DEFLATED = "1.2.840.10008.1.2.1.99"
_DEFER = 1 << 20


@dataclass
class _Slice:
    path: Path
    series: str
    rows: int
    columns: int
    position: np.ndarray | None
    orientation: np.ndarray | None
    pixel_spacing: np.ndarray | None
    samples: int
    frames: int


def _dataset(path: Path) -> Any | None:
    """The header of ``path`` as a pydicom Dataset, or ``None`` if it is not DICOM.

    Files without the 128-byte preamble are accepted when they start with a group 0002/0008 tag and
    parse to a dataset with a SOP Class UID or Rows.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        with open(path, "rb") as handle:
            start = handle.read(132)
        force = start[128:132] != b"DICM"
        if force and start[:2] not in (b"\x02\x00", b"\x08\x00"):
            return None
        if not force:
            meta = pydicom.filereader.read_file_meta_info(path)
            if str(meta.get("TransferSyntaxUID", "")) == _DEFLATED:
                _check_deflated(path)
        ds = pydicom.dcmread(path, stop_before_pixels=True, defer_size=_DEFER, force=force)
    except ImageReadError:
        raise
    except (InvalidDicomError, OSError, EOFError, ValueError, KeyError, TypeError, AttributeError, struct.error) as err:
        if not force:  # it says DICM: a DICOM file that is broken, not some other file
            raise ImageReadError(f"{path}: DICOM file cannot be parsed ({type(err).__name__}: {one_line(err)}); "
                                 "the file may be truncated or corrupt") from err
        return None
    if "SOPClassUID" in ds or "Rows" in ds:
        return ds
    if not force:
        raise ImageReadError(f"{path}: DICOM file cannot be parsed (no SOP Class UID or image attributes); the file "
                             "may be truncated or corrupt")
    return None


def _check_deflated(path: Path) -> None:
    """Inflate a Deflated-transfer-syntax file without keeping it; refuse more than the voxel limit allows."""
    import pydicom

    with open(path, "rb") as raw:
        pydicom.filereader.read_preamble(raw, False)
        pydicom.filereader._read_file_meta_info(raw)
        cap = 2 * max_voxels() + MAX_HEADER_BYTES  # 16-bit pixels at the voxel limit, plus the header
        try:
            measure_decompressed(path, raw, "deflate", cap, exact=False)
        except ImageReadError as err:
            raise ImageReadError(f"{path}: deflated DICOM data inflates to more than {cap} bytes or is corrupt "
                                 "(a decompression bomb?); refusing to read it") from err


def _is_image(ds: Any) -> bool:
    from pydicom.uid import UID

    sop = str(ds.get("SOPClassUID", ""))
    name = UID(sop).name if sop else ""
    if "Image Storage" in name:
        return True
    if name and name != sop:  # a known SOP class that is not an image
        return False
    return "Rows" in ds and "Columns" in ds


def _floats(ds: Any, keyword: str) -> np.ndarray | None:
    from pydicom.multival import MultiValue

    value = ds.get(keyword)
    if value is None or value == "":
        return None
    try:
        return np.array([float(v) for v in (value if isinstance(value, (list, tuple, MultiValue)) else [value])],
                        dtype=np.float64)
    except (TypeError, ValueError):
        return None


def _slice(path: Path, ds: Any) -> _Slice:
    return _Slice(
        path=path,
        series=str(ds.get("SeriesInstanceUID", "")),
        rows=int(ds.get("Rows", 0) or 0),
        columns=int(ds.get("Columns", 0) or 0),
        position=_floats(ds, "ImagePositionPatient"),
        orientation=_floats(ds, "ImageOrientationPatient"),
        pixel_spacing=_floats(ds, "PixelSpacing"),
        samples=int(ds.get("SamplesPerPixel", 1) or 1),
        frames=int(ds.get("NumberOfFrames", 1) or 1),
    )


def _sop_name(ds: Any) -> str:
    from pydicom.uid import UID

    sop = str(ds.get("SOPClassUID", ""))
    return UID(sop).name if sop else "no SOP Class"


def _scan(folder: Path) -> tuple[list[_Slice], list[str], list[Path]]:
    """Image slices, notes on skipped non-image objects, and every DICOM file of ``folder``."""
    images, skipped, everything = [], [], []
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        ds = _dataset(path)
        if ds is None:
            continue
        everything.append(path)
        if _is_image(ds):
            images.append(_slice(path, ds))
        else:
            skipped.append(f"{path.name} ({_sop_name(ds)})")
    return images, skipped, everything


def dicom_files(folder: Path) -> list[Path]:
    """Every DICOM file directly in ``folder`` (images or not): the files a DICOM input consists of."""
    return _scan(folder)[2]


def check_dicom_file(path: Path) -> None:
    """Checks on a single DICOM file before SimpleITK reads it: an image, scalar, within the voxel limit."""
    ds = _dataset(path)
    if ds is None:
        return  # not parseable by pydicom; SimpleITK gives its own (one-line) error
    if not _is_image(ds):
        raise ImageReadError(f"{path}: DICOM object is a {_sop_name(ds)}, not an image; expected an image file")
    info = _slice(path, ds)
    _check_scalar(info)
    check_declared_size(path, (info.columns, info.rows, info.frames), 2)


def _check_scalar(info: _Slice) -> None:
    if info.samples != 1:
        raise ImageReadError(f"{info.path}: DICOM Samples per Pixel is {info.samples} (RGB/colour); expected one "
                             "value per pixel (MONOCHROME)")


def series_files(folder: Path) -> list[Path]:
    """The files of the series to read from ``folder``, sorted along the slice normal, after the checks above.

    Raises:
        ImageReadError: No image file, mixed sizes/orientations, missing positions, duplicate or unevenly
            spaced positions, a tilted stack, colour data, or more voxels than the limit.
    """
    images, skipped, _ = _scan(folder)
    if not images:  # the error names the skipped files itself: no separate warning line
        why = f" (skipped non-image DICOM files: {', '.join(skipped[:3])})" if skipped else ""
        raise ImageReadError(f"{folder}: directory contains no DICOM series of image files{why}; expected DICOM slice files")
    if skipped:
        logger.warning("%s: skipped %d non-image DICOM file(s): %s", folder, len(skipped), ", ".join(skipped[:5]))
    by_series: dict[str, list[_Slice]] = defaultdict(list)
    for info in images:
        by_series[info.series].append(info)
    counts = sorted((len(v) for v in by_series.values()), reverse=True)
    if len(counts) > 1 and counts[0] == counts[1]:
        raise ImageReadError(f"{folder}: holds {len(counts)} DICOM series, the largest two with {counts[0]} image files "
                             "each; ambiguous (expected one series per folder, or the largest one unique)")
    best = max(by_series, key=lambda s: len(by_series[s]))
    if len(by_series) > 1:
        logger.info("%s: %d DICOM series found; reading %s (%d files)", folder, len(by_series), best, len(by_series[best]))
    slices = by_series[best]
    for info in slices:
        _check_scalar(info)
    first = slices[0]
    check_declared_size(folder, (first.columns, first.rows, len(slices) * max(first.frames, 1)), 2)
    if len(slices) == 1:
        return [first.path]
    _check_same(slices)
    return _sorted_checked(folder, slices)


def _check_same(slices: list[_Slice]) -> None:
    """One size, one pixel spacing, one orientation, single-frame files, positions present."""
    first = slices[0]
    for info in slices:
        if info.frames != 1:
            raise ImageReadError(f"{info.path}: a multi-frame file ({info.frames} frames) inside a series of "
                                 f"{len(slices)} files; expected one slice per file")
        if (info.rows, info.columns) != (first.rows, first.columns):
            raise ImageReadError(f"{info.path}: slice is {info.rows}x{info.columns} but {first.path.name} is "
                                 f"{first.rows}x{first.columns}; expected one slice size per series")
        if info.orientation is None or info.orientation.size != 6 or info.position is None or info.position.size != 3:
            raise ImageReadError(f"{info.path}: slice has no valid Image Orientation/Position (Patient); cannot verify "
                                 "the slice geometry of the series")
        if np.abs(info.orientation - first.orientation).max() > ORIENTATION_TOLERANCE:
            raise ImageReadError(
                f"{info.path}: Image Orientation (Patient) {info.orientation.round(6).tolist()} differs from "
                f"{first.path.name} {first.orientation.round(6).tolist()}; expected one orientation per series"
            )
        if (info.pixel_spacing is None) != (first.pixel_spacing is None) or (
            info.pixel_spacing is not None and not np.allclose(info.pixel_spacing, first.pixel_spacing, rtol=1e-4, atol=1e-6)
        ):
            raise ImageReadError(f"{info.path}: Pixel Spacing differs from {first.path.name}; expected one pixel "
                                 "spacing per series")
    if first.pixel_spacing is not None:
        check_spacing(first.pixel_spacing, first.path, "DICOM Pixel Spacing")


def _sorted_checked(folder: Path, slices: list[_Slice]) -> list[Path]:
    """Sort along the normal; refuse duplicate, uneven or off-normal positions."""
    row, col = slices[0].orientation[:3], slices[0].orientation[3:]
    normal = np.cross(row, col)
    if not np.linalg.norm(normal) > 0.5:
        raise ImageReadError(f"{slices[0].path}: Image Orientation (Patient) cosines are not orthogonal unit vectors")
    normal /= np.linalg.norm(normal)
    positions = np.stack([s.position for s in slices])
    distance = positions @ normal
    order = np.argsort(distance, kind="stable")
    slices, positions, distance = [slices[i] for i in order], positions[order], distance[order]
    steps = np.diff(distance)
    expected = float(np.median(steps))
    tol = max(POSITION_TOLERANCE_MM, SLICE_SPACING_TOLERANCE * expected)
    shown = ", ".join(f"{d:.4g}" for d in distance[:12]) + (", ..." if len(distance) > 12 else "")
    for i, step in enumerate(steps):
        if step <= tol:
            raise ImageReadError(
                f"{folder}: {slices[i].path.name} and {slices[i + 1].path.name} are at the same slice position "
                f"({distance[i]:.4g} mm along the normal); duplicate slices are not allowed"
            )
    bad = np.flatnonzero(np.abs(steps - expected) > tol)
    if bad.size:
        i = int(bad[np.argmax(np.abs(steps[bad] - expected))])
        ratio = steps[i] / expected
        hint = f"; {round(ratio) - 1} slice(s) may be missing" if ratio > 1.5 and abs(ratio - round(ratio)) < 0.1 else ""
        raise ImageReadError(
            f"{folder}: slice positions are unevenly spaced along the normal: expected a step of {expected:.4g} mm, "
            f"found a gap of {steps[i]:.4g} mm between {distance[i]:.4g} and {distance[i + 1]:.4g} mm "
            f"({slices[i].path.name}, {slices[i + 1].path.name}){hint} (positions: {shown} mm)"
        )
    drift = np.diff(positions, axis=0) - steps[:, None] * normal
    worst = float(np.linalg.norm(drift, axis=1).max())
    if worst > tol:
        raise ImageReadError(
            f"{folder}: slice positions drift {worst:.3g} mm per slice off the slice normal (gantry tilt or a sheared "
            "stack); expected positions along the normal"
        )
    return [s.path for s in slices]
