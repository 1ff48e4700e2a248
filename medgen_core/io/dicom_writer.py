"""Write a :class:`~medgen_core.io.volume.Volume` as a DICOM series marked as synthetic (pydicom).

One single-frame file per slice along the volume's third index axis, written atomically: into a
hidden temporary sibling folder, then renamed into place; nothing is left behind on failure. This
module knows geometry and DICOM attributes, not provenance records (see
:mod:`medgen_core.provenance.dicom_output`, which uses the ``before_commit`` hook to embed them).

**Pixels.** Voxel ``array[i, j, k]`` is pixel (row ``j``, column ``i``) of file ``k``: Rows = Y,
Columns = X, as SimpleITK / GDCM read it back (``GetArrayFromImage`` gives ``(Z, Y, X)``). Values are
stored as signed 16-bit integers with one RescaleSlope ``s`` / RescaleIntercept ``b`` per series:
integer volumes inside ``[-32768, 32767]`` are stored exactly (``s = 1, b = 0``); otherwise
``s = (max - min) / 65533`` and ``b`` = the mid value (both as the DICOM decimal string, at most 16
characters, that readers parse), ``q = round((v - b) / s)``. A reader gets back
``float32(q * s + b)`` (float64 arithmetic, as GDCM and pydicom do): the quantisation error is at
most ``s / 2`` (1/131066 of the value range, e.g. 7.6e-6 for a [0, 1] image) plus half a float32
ulp of the value. :func:`dicom_representation` returns those values exactly.

**Geometry.** The Volume's RAS affine is converted to LPS. ImageOrientationPatient holds the unit
row cosine (voxel axis 0) and column cosine (axis 1, Gram-Schmidt-orthogonalised), oblique
included; PixelSpacing is ``[row spacing, column spacing] = [spacing_y, spacing_x]``; slice ``k``
sits at ImagePositionPatient ``origin + k * dz * normal`` with ``normal = row x column``;
SliceThickness = SpacingBetweenSlices = ``dz``. Every reader stacks slices along ``row x column``,
so a left-handed grid (determinant < 0, e.g. a NIfTI in LAS) is stored with its slice order
reversed: the same physical image, read back with axis 2 reversed (see ``WrittenDicomSeries.volume``).
An affine that classic DICOM image planes cannot hold within 1e-4 mm (slice axis not
perpendicular to the plane, i.e. sheared, or non-orthogonal in-plane axes) is refused.

**Attributes written** (every file):

=====================================  =====================================================================
Attribute                              Value
=====================================  =====================================================================
SOP Class UID                          MR Image Storage if the source was MR DICOM, else Secondary Capture
                                       Image Storage (single frame; both read by SimpleITK's
                                       ImageSeriesReader and pydicom as one series, geometry included;
                                       multi-frame Enhanced objects are not read as a series by ITK)
Study / Series / SOP Instance UID      new (``pydicom.uid.generate_uid``), never the source's
Frame of Reference UID                 the source's when the input was DICOM (same patient space), else new
Modality                               the source's, else ``modality`` (default ``OT``)
Image Type                             ``DERIVED\\SECONDARY``
Synthetic Data (0008,001C)             ``YES``
Contributing Equipment Sequence        one item: Manufacturer ``MedGen``, Manufacturer's Model Name =
(0018,A001)                            generator, Software Versions = medgen version, Contribution
                                       DateTime / Description, Purpose of Reference Code Sequence
                                       (109100, DCM, "Synthesizing Equipment")
Manufacturer / Model / Software        ``MedGen`` / generator / medgen version (General Equipment)
Conversion Type (Secondary Capture)    ``SYN`` (Synthetic Image), SC device manufacturer/model/software
Derivation Description (0008,2111)     given text; Derivation Code Sequence (0008,9215) with the given
                                       codes (e.g. 113085 DCM "Spatial resampling" for super-resolution)
Source Image Sequence (0008,2112)      source DICOM: SOP Class/Instance UIDs of the source slices this slice
                                       overlaps (all of them if the planes differ), purpose 121322 DCM
Burned In Annotation                   ``NO``
Series Description                     ``AI-generated: <series_description>``; Image Comments: given text
Patient / study identifiers            anonymous (Patient Name ``ANONYMOUS``, a random Patient ID, empty
                                       birth date, sex, accession number, study ID), unless
                                       ``keep_patient=True`` copies them from the DICOM source
MR Image module (MR only)              Scanning Sequence ``RM`` (research mode), Sequence Variant ``NONE``,
                                       timing attributes present but empty (a generated image has none)
Pixel module                           MONOCHROME2, 16 bits signed, Rescale Slope / Intercept / Type ``US``,
                                       Window Center / Width over the value range
=====================================  =====================================================================

Not de-identification in the PS3.15 sense: Source Image Sequence and the Frame of Reference UID
still link the series to the source instances (that is its provenance).
"""

from __future__ import annotations

import copy
import logging
import os
import secrets
import shutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from medgen_core.errors import ImageWriteError, MedGenError
from medgen_core.io.dicom_sources import code_item, overlapping_sources, read_source_datasets, source_item
from medgen_core.io.volume import Volume, lps_to_ras, ras_to_lps

__all__ = [
    "DicomRepresentation",
    "GEOMETRY_TOLERANCE_MM",
    "SYNTHESIZING_EQUIPMENT",
    "SPATIAL_RESAMPLING",
    "WrittenDicomSeries",
    "dicom_representation",
    "read_source_datasets",
    "write_dicom_series",
]

logger = logging.getLogger(__name__)

#: Largest world-position error (mm) accepted when fitting the affine into DICOM image planes.
GEOMETRY_TOLERANCE_MM = 1e-4
#: (code value, coding scheme, meaning) triples used here.
SYNTHESIZING_EQUIPMENT = ("109100", "DCM", "Synthesizing Equipment")
SPATIAL_RESAMPLING = ("113085", "DCM", "Spatial resampling")
_INT16 = (-32768, 32767)
_LEVELS = 65533  # two levels of margin below 65535 for the decimal-string rounding of slope/intercept
_MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
_SC_STORAGE = "1.2.840.10008.5.1.4.1.1.7"
_COPIED_PATIENT = ("PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex", "PatientAge")
_COPIED_STUDY = ("StudyID", "AccessionNumber", "StudyDate", "StudyTime", "StudyDescription", "ReferringPhysicianName")


@dataclass(frozen=True)
class DicomRepresentation:
    """A volume as it is stored in (and read back from) a DICOM series.

    Args:
        stored: int16 pixel values, shape ``(X, Y, Z)`` in DICOM slice order.
        slope: RescaleSlope as the decimal string written.
        intercept: RescaleIntercept as the decimal string written.
        volume: What a reader gets back: ``float32(stored * slope + intercept)`` and the affine of
            the series (equal to the input's, or with axis 2 reversed when ``flipped``).
        flipped: Whether the slice order was reversed (left-handed input grid).
        max_error: Largest ``|read-back - input|`` over the voxels.
    """

    stored: np.ndarray
    slope: str
    intercept: str
    volume: Volume
    flipped: bool
    max_error: float

    @property
    def step(self) -> float:
        """The quantisation step (the slope)."""
        return float(self.slope)


@dataclass
class WrittenDicomSeries:
    """What :func:`write_dicom_series` wrote.

    ``files`` and ``path`` name the temporary folder while ``before_commit`` runs, the final folder after.
    """

    path: Path
    files: list[Path]
    representation: DicomRepresentation
    study_instance_uid: str
    series_instance_uid: str
    frame_of_reference_uid: str
    sop_class_uid: str
    sop_instance_uids: list[str] = field(default_factory=list)

    @property
    def volume(self) -> Volume:
        """The volume a reader gets back (dequantised, DICOM slice order)."""
        return self.representation.volume


def dicom_representation(volume: Volume) -> DicomRepresentation:
    """Quantise ``volume`` to int16 + slope/intercept and fit its affine into DICOM image planes.

    Raises:
        ImageWriteError: Non-finite voxels, a singular affine, or one DICOM planes cannot hold (sheared).
    """
    from pydicom.valuerep import format_number_as_ds

    where = volume.path or "volume"
    values = np.asarray(volume.array, dtype=np.float64)
    if values.size == 0 or not np.all(np.isfinite(values)):
        raise ImageWriteError(f"{where}: volume is empty or has NaN/Inf voxels; cannot write DICOM")
    affine_lps, flipped = _dicom_affine(volume)
    if flipped:
        values = values[:, :, ::-1]
    vmin, vmax = float(values.min()), float(values.max())
    if np.all(values == np.round(values)) and vmin >= _INT16[0] and vmax <= _INT16[1]:
        slope, intercept = "1", "0"
    else:
        slope = format_number_as_ds((vmax - vmin) / _LEVELS or max(abs(vmax), 1.0) / _LEVELS)
        intercept = format_number_as_ds((vmin + vmax) / 2.0)
    s, b = float(slope), float(intercept)
    stored = np.clip(np.round((values - b) / s), *_INT16).astype(np.int16)
    read_back = (stored.astype(np.float64) * s + b).astype(np.float32)
    max_error = float(np.max(np.abs(read_back.astype(np.float64) - values)))
    if max_error > s / 2 * (1 + 1e-6) + float(np.spacing(np.float32(max(abs(vmin), abs(vmax))))):
        raise ImageWriteError(f"{where}: cannot quantise to 16 bits (error {max_error:g} > step/2 {s / 2:g})")
    return DicomRepresentation(stored, slope, intercept, Volume(read_back, lps_to_ras(affine_lps)), flipped, max_error)


def _dicom_affine(volume: Volume) -> tuple[np.ndarray, bool]:
    """The LPS affine DICOM planes can represent (orthonormal in-plane, slice step along the normal)."""
    where = volume.path or "volume"
    lps = ras_to_lps(volume.affine)
    c0, c1, c2, origin = lps[:3, 0], lps[:3, 1], lps[:3, 2], lps[:3, 3].copy()
    sx, sy = float(np.linalg.norm(c0)), float(np.linalg.norm(c1))
    if min(sx, sy, float(np.linalg.norm(c2))) <= 0 or abs(np.linalg.det(lps[:3, :3])) < 1e-12:
        raise ImageWriteError(f"{where}: affine is singular (zero spacing or collinear axes); cannot write DICOM geometry")
    row = c0 / sx
    col = c1 - (c1 @ row) * row
    col /= np.linalg.norm(col)
    normal = np.cross(row, col)
    dz = float(c2 @ normal)
    flipped = dz < 0
    if flipped:  # readers stack slices along row x column: reverse the slice order instead
        origin = origin + (volume.shape[2] - 1) * c2
        c2, dz = -c2, -dz
    fitted = np.eye(4)
    fitted[:3, 0], fitted[:3, 1], fitted[:3, 2], fitted[:3, 3] = sx * row, sy * col, dz * normal, origin
    true = lps.copy()
    if flipped:
        true[:3, 2], true[:3, 3] = c2, origin
    corners = np.array([[i, j, k, 1.0] for i in (0, volume.shape[0] - 1) for j in (0, volume.shape[1] - 1) for k in (0, volume.shape[2] - 1)])
    error = float(np.max(np.linalg.norm((corners @ (true - fitted).T)[:, :3], axis=1)))
    if error > GEOMETRY_TOLERANCE_MM:
        raise ImageWriteError(
            f"{where}: affine is sheared or its in-plane axes are not orthogonal ({error:.3g} mm off at a corner); "
            "DICOM image planes need the slice axis perpendicular to the plane; resample first or write NIfTI/NRRD"
        )
    return fitted, flipped


def write_dicom_series(
    volume: Volume,
    out_dir: str | Path,
    *,
    series_description: str,
    source_datasets: Sequence[Any] | None = None,
    keep_patient: bool = False,
    generator: str = "medgen",
    software_version: str | None = None,
    derivation_description: str | None = None,
    derivation_codes: Iterable[tuple[str, str, str]] = (),
    image_comments: str | None = None,
    modality: str | None = None,
    series_number: int = 1,
    inputs: Iterable[str | Path] = (),
    before_commit: Callable[[WrittenDicomSeries], None] | None = None,
) -> WrittenDicomSeries:
    """Write ``volume`` as a synthetic-marked DICOM series folder, atomically (see the module docs).

    Args:
        volume: The image to write.
        out_dir: Destination folder; must not exist, or be empty, and must not be an input folder.
        series_description: Shown after ``AI-generated:`` in Series Description.
        source_datasets: pydicom headers of the source series when the input was DICOM
            (:func:`read_source_datasets`): referenced in Source Image Sequence, Frame of Reference
            and Modality kept, patient/study identifiers copied only if ``keep_patient``.
        keep_patient: Copy patient name/ID/birth date/sex/age and study identifiers from the source.
        generator: Manufacturer's Model Name of the synthesizing equipment, e.g. ``"rrdb_sr:0.1.0"``.
        software_version: Software Versions (default: the medgen version).
        derivation_description: Derivation Description (ST, at most 1024 characters).
        derivation_codes: ``(value, scheme, meaning)`` codes for Derivation Code Sequence.
        image_comments: Image Comments text (e.g. the disclosure).
        modality: Modality when there is no DICOM source (default ``OT``).
        series_number: Series Number.
        inputs: Input paths; ``out_dir`` may not be one of them (nor ``volume.path``).
        before_commit: Called with the written series (in the temporary folder) before the rename;
            may rewrite the files; an exception aborts the write and removes everything.

    Returns:
        The written series (``path``/``files`` in their final place).

    Raises:
        ImageWriteError: Bad destination, geometry DICOM cannot hold, or the write failed.
    """
    from pydicom.uid import generate_uid

    from medgen_core import __version__

    out_dir = Path(out_dir)
    _check_destination(out_dir, [p for p in (volume.path, *inputs) if p is not None])
    rep = dicom_representation(volume)
    sources = list(source_datasets or [])
    first = sources[0] if sources else None
    source_modality = str(first.get("Modality", "")) if first is not None else ""
    sop_class = _MR_STORAGE if source_modality == "MR" else _SC_STORAGE
    frame_uid = str(first.FrameOfReferenceUID) if first is not None and "FrameOfReferenceUID" in first else generate_uid()
    series = WrittenDicomSeries(out_dir, [], rep, generate_uid(), generate_uid(), frame_uid, sop_class)
    base = _base_dataset(series, first, keep_patient, source_modality or modality or "OT", series_description,
                         generator, software_version or __version__, derivation_description, list(derivation_codes),
                         image_comments, series_number)
    tmp = out_dir.parent / f".tmp-{secrets.token_hex(6)}-{out_dir.name}"
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp.mkdir()
        series.path = tmp
        for k in range(rep.stored.shape[2]):
            ds = _slice_dataset(base, rep, k, sources)
            series.sop_instance_uids.append(str(ds.SOPInstanceUID))
            file = tmp / f"IM{k + 1:05d}.dcm"
            ds.save_as(str(file), enforce_file_format=True)
            series.files.append(file)
        if before_commit is not None:
            before_commit(series)
        for file in series.files:
            with open(file, "rb+") as handle:
                os.fsync(handle.fileno())
        if out_dir.is_dir():
            out_dir.rmdir()  # empty (checked above); fails cleanly if something appeared meanwhile
        os.rename(tmp, out_dir)
    except MedGenError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except Exception as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ImageWriteError(f"{out_dir}: writing the DICOM series failed ({type(err).__name__}: {err})") from err
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    series.path = out_dir
    series.files = [out_dir / f.name for f in series.files]
    logger.debug("wrote DICOM series %s: %d slices, slope %s", out_dir, len(series.files), rep.slope)
    return series


def _check_destination(out_dir: Path, inputs: Sequence[str | Path]) -> None:
    """Refuse a destination that exists and is not an empty folder, or that is an input (folder)."""
    target = out_dir.resolve()
    for item in inputs:
        item = Path(item)
        if item.resolve() == target or (item.is_file() and item.resolve().parent == target):
            raise ImageWriteError(f"{out_dir}: is the input folder {item}; refusing to write into an input (choose a new folder)")
    if out_dir.is_symlink() or (out_dir.exists() and not out_dir.is_dir()):
        raise ImageWriteError(f"{out_dir}: exists and is not a folder; expected a new (or empty) folder for the DICOM series")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        raise ImageWriteError(f"{out_dir}: folder exists and is not empty; expected a new (or empty) folder for the DICOM series")


def _base_dataset(series: WrittenDicomSeries, first: Any, keep_patient: bool, modality: str, description: str,
                  generator: str, software: str, derivation: str | None, codes: list[tuple[str, str, str]],
                  comments: str | None, series_number: int) -> Any:
    """The attributes shared by every slice (see the module table)."""
    from pydicom.dataset import Dataset
    from pydicom.valuerep import format_number_as_ds

    now = datetime.now(timezone.utc)
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    rep = series.representation
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = series.sop_class_uid
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.SyntheticData = "YES"
    ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
    ds.TimezoneOffsetFromUTC = "+0000"
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = time
    ds.Modality = modality
    ds.Manufacturer = "MedGen"
    ds.ManufacturerModelName = generator[:64]
    ds.SoftwareVersions = software[:64]
    ds.PatientName, ds.PatientID = "ANONYMOUS", f"MEDGEN-{secrets.token_hex(5).upper()}"
    ds.PatientBirthDate = ds.PatientSex = ds.StudyID = ds.AccessionNumber = ds.ReferringPhysicianName = ""
    if keep_patient and first is not None:
        for keyword in (*_COPIED_PATIENT, *_COPIED_STUDY):
            if keyword in first:
                setattr(ds, keyword, first.get(keyword))
    ds.StudyInstanceUID, ds.SeriesInstanceUID = series.study_instance_uid, series.series_instance_uid
    ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = series.frame_of_reference_uid, ""
    ds.SeriesNumber = series_number
    ds.SeriesDescription = f"AI-generated: {description}"[:64]
    if comments:
        ds.ImageComments = comments[:10240]
    ds.BurnedInAnnotation = "NO"
    if derivation:
        ds.DerivationDescription = derivation[:1024]
    if codes:
        ds.DerivationCodeSequence = [code_item(c) for c in codes]
    equipment = Dataset()
    equipment.Manufacturer, equipment.ManufacturerModelName, equipment.SoftwareVersions = "MedGen", generator[:64], software[:64]
    equipment.ContributionDateTime = now.strftime("%Y%m%d%H%M%S+0000")
    equipment.ContributionDescription = (derivation or f"AI-generated by {generator}")[:1024]
    equipment.PurposeOfReferenceCodeSequence = [code_item(SYNTHESIZING_EQUIPMENT)]
    ds.ContributingEquipmentSequence = [equipment]
    if series.sop_class_uid == _SC_STORAGE:
        ds.ConversionType = "SYN"
        ds.SecondaryCaptureDeviceManufacturer = "MedGen"
        ds.SecondaryCaptureDeviceManufacturerModelName = generator[:64]
        ds.SecondaryCaptureDeviceSoftwareVersions = software[:64]
    else:
        ds.ScanningSequence, ds.SequenceVariant = "RM", "NONE"
        ds.ScanOptions = ds.MRAcquisitionType = ds.EchoTime = ds.RepetitionTime = ds.EchoTrainLength = ""
        ds.PatientPosition = first.get("PatientPosition", "") if first is not None else ""
    x, y, _ = rep.stored.shape
    affine = ras_to_lps(rep.volume.affine)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    row, col = affine[:3, 0] / spacing[0], affine[:3, 1] / spacing[1]
    ds.ImageOrientationPatient = [format_number_as_ds(float(v)) for v in (*row, *col)]
    ds.PatientOrientation = [_orientation_letters(row), _orientation_letters(col)]
    ds.PixelSpacing = [format_number_as_ds(float(spacing[1])), format_number_as_ds(float(spacing[0]))]
    ds.SliceThickness = ds.SpacingBetweenSlices = format_number_as_ds(float(spacing[2]))
    ds.Rows, ds.Columns = y, x
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = rep.slope, rep.intercept, "US"
    lo, hi = float(rep.volume.array.min()), float(rep.volume.array.max())
    ds.WindowCenter, ds.WindowWidth = format_number_as_ds((lo + hi) / 2), format_number_as_ds(max(hi - lo, rep.step))
    return ds


def _slice_dataset(base: Any, rep: DicomRepresentation, k: int, sources: Sequence[Any]) -> Any:
    """Slice ``k``: the base attributes plus position, instance UID, references and pixels."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid
    from pydicom.valuerep import format_number_as_ds

    ds = copy.deepcopy(base)
    affine = ras_to_lps(rep.volume.affine)
    position = affine[:3, 3] + k * affine[:3, 2]
    normal = affine[:3, 2] / np.linalg.norm(affine[:3, 2])
    ds.SOPInstanceUID = generate_uid()
    ds.InstanceNumber = k + 1
    ds.ImagePositionPatient = [format_number_as_ds(float(v)) for v in position]
    ds.SliceLocation = format_number_as_ds(float(position @ normal))
    refs = overlapping_sources(sources, position, normal, float(np.linalg.norm(affine[:3, 2])))
    if refs:
        ds.SourceImageSequence = [source_item(src) for src in refs]
    ds.PixelData = np.ascontiguousarray(rep.stored[:, :, k].T).astype("<i2").tobytes()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds


def _orientation_letters(vector: np.ndarray) -> str:
    """Patient Orientation letters of an LPS direction, major axis first (e.g. ``LP`` for an oblique row)."""
    letters = [("L", "R"), ("P", "A"), ("H", "F")]
    order = np.argsort(-np.abs(vector))
    out = "".join(letters[a][0 if vector[a] > 0 else 1] for a in order if abs(vector[a]) > 1e-3)
    return out[:3] or "L"
