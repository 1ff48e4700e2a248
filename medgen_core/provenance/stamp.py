"""Write generated outputs together with their provenance, and check it later.

:func:`write_generated_volume` is the one function that writes generated pixels: it embeds the
record in the image header (NIfTI ``descrip`` + ecode-6 comment extension; NRRD ``content`` and
``key:=value`` fields) and writes a ``<file>.generated.json`` sidecar next to it, so no export path
can skip the marking. Many tools drop header extensions when they rewrite a file, so the sidecar is
the authoritative copy; the embedded copy travels with the file.

Both copies bind to the content through ``output.sha256``, the hash of the voxel values
(:func:`~medgen_core.provenance.record.pixel_sha256`), which :func:`verify_provenance` recomputes.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from medgen_core.errors import ImageReadError, ImageWriteError, ProvenanceError
from medgen_core.io import SUPPORTED_WRITE_SUFFIXES, Volume, atomic_path, format_of, read_volume, write_volume
from medgen_core.provenance.record import DERIVED_LABEL_DISCLOSURE, SCHEMA, GenerationMetadata, pixel_sha256, sha256_file

__all__ = [
    "NIFTI_PROVENANCE_ECODE",
    "NRRD_PROVENANCE_FIELD",
    "SIDECAR_SUFFIX",
    "VerificationResult",
    "read_provenance",
    "sidecar_path",
    "verify_provenance",
    "write_generated_volume",
    "write_sidecar",
]

logger = logging.getLogger(__name__)

SIDECAR_SUFFIX = ".generated.json"
#: NIfTI header extension code "comment" (``nibabel.nifti1.extension_codes``), holding the record JSON.
NIFTI_PROVENANCE_ECODE = 6
#: NRRD ``key:=value`` field holding the compact record JSON.
NRRD_PROVENANCE_FIELD = "medgen_provenance"
_SPACING_TOLERANCE_MM = 1e-4


def sidecar_path(path: str | Path) -> Path:
    """The sidecar of ``path``: ``<path>.generated.json`` (e.g. ``sr.nii.gz.generated.json``)."""
    path = Path(path)
    return path.with_name(path.name + SIDECAR_SUFFIX)


def _derived(metadata: GenerationMetadata) -> bool:
    return metadata.disclosure == DERIVED_LABEL_DISCLOSURE


def _header_flag(metadata: GenerationMetadata) -> str:
    """The short header mark: ``SYNTHETIC AI`` for generated images, ``AI-DERIVED`` for AI-derived label maps."""
    return "AI-DERIVED" if _derived(metadata) else "SYNTHETIC AI"


def write_generated_volume(volume: Volume, path: str | Path, metadata: GenerationMetadata) -> Path:
    """Write a generated volume with its provenance embedded and in a sidecar.

    Fills ``metadata.output`` (file name, pixel sha256, format, shape, spacing), writes the image
    atomically (never over one of ``metadata.inputs``), then writes the sidecar atomically. If the
    sidecar cannot be written, the new image is removed too, so nothing is left half-marked.

    Args:
        volume: The generated volume.
        path: Destination ``.nii``, ``.nii.gz`` or ``.nrrd`` file.
        metadata: The run's record; its ``output`` field is overwritten.

    Returns:
        The image path.

    Raises:
        ImageWriteError: Unsupported extension, destination is an input, or the write failed.
        ProvenanceError: The record is not serialisable, or the sidecar could not be written.

    Example:
        >>> meta = GenerationMetadata.create(generator_name="rrdb", generator_version="1.0.0",
        ...                                  task="sr_x4", input_paths=["lr.nii.gz"])  # doctest: +SKIP
        >>> write_generated_volume(sr_volume, "sr.nii.gz", meta)  # doctest: +SKIP
    """
    path = Path(path)
    known = format_of(path)
    if known is None or known[1] not in SUPPORTED_WRITE_SUFFIXES:
        raise ImageWriteError(
            f"{path}: unsupported output extension for a generated image; expected one of "
            f"{', '.join(SUPPORTED_WRITE_SUFFIXES)}"
        )
    fmt, suffix = known
    metadata.output = {
        "path": path.name,
        "sha256": pixel_sha256(volume.array),
        "format": suffix.lstrip("."),
        "shape": list(volume.shape),
        "spacing": list(volume.spacing),
    }
    record = metadata.to_dict()
    compact = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    inputs = [item["path"] for item in metadata.inputs]
    if fmt == "nifti":
        from nibabel.nifti1 import Nifti1Extension

        write_volume(
            volume,
            path,
            inputs=inputs,
            nifti_descrip=f"{_header_flag(metadata)} {metadata.generator}",
            nifti_extensions=[Nifti1Extension(NIFTI_PROVENANCE_ECODE, compact.encode("ascii"))],
        )
    else:
        fields = {
            "content": "AI-DERIVED label map" if _derived(metadata) else "SYNTHETIC AI-generated",  # standard NRRD field "content: ..."
            "medgen_ai_generated": "true",
            "medgen_generator": metadata.generator,
            "medgen_disclosure": metadata.disclosure,
            "medgen_pixel_sha256": metadata.output["sha256"],
            NRRD_PROVENANCE_FIELD: compact,
        }
        write_volume(volume, path, inputs=inputs, extra_nrrd_fields=fields)
    try:
        _write_sidecar_file(path, record)
    except BaseException as err:
        with contextlib.suppress(OSError):
            path.unlink()
        if isinstance(err, Exception):
            raise ProvenanceError(f"{path}: writing the provenance sidecar failed ({err}); image removed") from err
        raise
    logger.info("wrote generated image %s (%s) with provenance sidecar", path, metadata.generator)
    return path


def write_sidecar(path: str | Path, metadata: GenerationMetadata) -> Path:
    """Write the provenance sidecar of an existing non-image output (e.g. NPZ, CSV, PNG).

    ``metadata.output["sha256"]`` is the sha256 of the file's bytes.

    Returns:
        The sidecar path.

    Raises:
        ProvenanceError: If ``path`` does not exist or the sidecar could not be written.
    """
    path = Path(path)
    if not path.is_file():
        raise ProvenanceError(f"{path}: cannot write a provenance sidecar, output file not found")
    suffix = "".join(path.suffixes).lstrip(".")
    metadata.output = {"path": path.name, "sha256": sha256_file(path), "format": suffix, "shape": None, "spacing": None}
    try:
        return _write_sidecar_file(path, metadata.to_dict())
    except ProvenanceError:
        raise
    except Exception as err:
        raise ProvenanceError(f"{path}: writing the provenance sidecar failed ({err})") from err


def _write_sidecar_file(path: Path, record: dict[str, Any]) -> Path:
    """Atomically write ``<path>.generated.json`` binding ``record`` to the file's current bytes."""
    sidecar = {
        "generated_at": record["generated_at"],
        "generator": f"{record['generator_name']}:{record['generator_version']}",
        "disclosure": record["disclosure"],
        "ai_generated": True,
        "file_sha256": sha256_file(path),
        "record": record,
    }
    target = sidecar_path(path)
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(sidecar, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return target


def read_provenance(path: str | Path) -> dict[str, dict[str, Any] | None] | None:
    """Read the provenance of a file from its sidecar and from its header.

    Args:
        path: An output file (image or not).

    Returns:
        ``{"sidecar": dict | None, "embedded": dict | None}`` (the sidecar is the whole sidecar
        JSON; ``embedded`` is the record found in a NIfTI ecode-6 extension or the NRRD
        ``medgen_provenance`` field), or ``None`` if neither exists.

    Raises:
        ProvenanceError: The file does not exist, or a record exists but is not valid JSON.
    """
    path = Path(path)
    if not path.exists():
        raise ProvenanceError(f"{path}: file not found")
    sidecar = None
    side = sidecar_path(path)
    if side.is_file():
        try:
            sidecar = json.loads(side.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise ProvenanceError(f"{side}: provenance sidecar is not valid JSON ({err})") from err
        if not isinstance(sidecar, dict):
            raise ProvenanceError(f"{side}: provenance sidecar must hold a JSON object")
    embedded = _read_embedded(path)
    if sidecar is None and embedded is None:
        return None
    return {"sidecar": sidecar, "embedded": embedded}


def _read_embedded(path: Path) -> dict[str, Any] | None:
    """The record embedded in a NIfTI/NRRD header, or ``None``."""
    known = format_of(path)
    if known is None or path.is_dir() or known[0] not in ("nifti", "nrrd"):
        return None
    try:
        if known[0] == "nifti":
            import nibabel as nib

            texts = [
                ext.content.rstrip(b"\x00").decode("utf-8")
                for ext in nib.load(str(path)).header.extensions
                if ext.get_code() == NIFTI_PROVENANCE_ECODE
            ]
        else:
            import nrrd

            value = nrrd.read_header(str(path)).get(NRRD_PROVENANCE_FIELD)
            texts = [value] if isinstance(value, str) else []
    except Exception as err:
        raise ProvenanceError(f"{path}: cannot read the image header ({type(err).__name__}: {err})") from err
    for text in texts:
        try:
            record = json.loads(text)
        except ValueError:
            continue  # another tool's comment extension
        if isinstance(record, dict) and str(record.get("schema", "")).startswith(SCHEMA.split("/")[0]):
            return record
    return None


@dataclass
class VerificationResult:
    """Outcome of :func:`verify_provenance`.

    Args:
        status: ``"intact"`` (content matches the record), ``"modified"`` (it does not, or the
            records are inconsistent) or ``"missing"`` (no record at all).
        message: One line for people.
        details: Hashes compared and where the records were found.
    """

    status: Literal["intact", "modified", "missing"]
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {"status": self.status, "message": self.message, "details": self.details}


def verify_provenance(path: str | Path) -> VerificationResult:
    """Check that a file still matches its provenance record.

    Images (NIfTI, NRRD, MetaImage, DICOM) are read with :func:`~medgen_core.io.read_volume` and
    their pixel sha256 is compared with the record's ``output.sha256`` (embedded record first,
    else the sidecar's); voxel spacing is compared too. Other files are compared by file sha256.
    A sidecar that disagrees with the embedded record also counts as modified. A changed header
    with unchanged pixels stays intact, with a note.

    Raises:
        ProvenanceError: If ``path`` does not exist.
    """
    path = Path(path)
    try:
        found = read_provenance(path)
    except ProvenanceError as err:
        if not path.exists():
            raise
        return VerificationResult("modified", f"provenance record unreadable: {err}", {"path": str(path)})
    if found is None:
        return VerificationResult(
            "missing",
            f"no provenance record for {path.name} (no {sidecar_path(path).name} sidecar, nothing embedded)",
            {"path": str(path), "sources": []},
        )
    sidecar, embedded = found["sidecar"], found["embedded"]
    sources = [name for name, value in (("embedded", embedded), ("sidecar", sidecar)) if value is not None]
    details: dict[str, Any] = {"path": str(path), "sources": sources}
    problems: list[str] = []
    notes: list[str] = []

    side_record = sidecar.get("record") if sidecar is not None else None
    if sidecar is not None and not isinstance(side_record, dict):
        problems.append("sidecar has no 'record' object")
        side_record = None
    if embedded is not None and side_record is not None and embedded != side_record:
        differing = sorted(k for k in set(embedded) | set(side_record) if embedded.get(k) != side_record.get(k))
        problems.append(f"sidecar and embedded records disagree ({', '.join(differing)})")
    record = embedded if embedded is not None else side_record
    if record is not None:
        try:
            GenerationMetadata.from_dict(record)
        except ProvenanceError as err:
            problems.append(f"record invalid: {err}")
        output = record.get("output") or {}
        expected = output.get("sha256")
        details["expected_sha256"] = expected
        known = format_of(path)
        if path.is_dir() or (known is not None):
            _compare_pixels(path, output, details, problems)
        else:
            actual_file = details["file_sha256"] = sha256_file(path)
            if actual_file != expected:
                problems.append("file sha256 differs from the record")
        if output.get("path") not in (None, path.name):
            notes.append(f"file was renamed from {output.get('path')}")

    if sidecar is not None and "file_sha256" in sidecar and not path.is_dir():
        details.setdefault("file_sha256", sha256_file(path))
        details["file_sha256_matches_sidecar"] = details["file_sha256"] == sidecar["file_sha256"]
        if not details["file_sha256_matches_sidecar"] and not problems:
            notes.append("file bytes changed since writing (header rewritten) but pixels are unchanged")
    if embedded is None:
        notes.append("no embedded record (sidecar only)")
    elif sidecar is None:
        notes.append("no sidecar (embedded record only)")
    details["notes"] = notes

    if problems:
        return VerificationResult("modified", "; ".join(problems), details)
    message = f"content matches the provenance record (found in: {', '.join(sources)})"
    if notes:
        message += "; " + "; ".join(notes)
    return VerificationResult("intact", message, details)


def _compare_pixels(path: Path, output: dict[str, Any], details: dict[str, Any], problems: list[str]) -> None:
    """Recompute the pixel hash (and spacing) of an image and compare with ``output``."""
    try:
        volume = read_volume(path, strict=False)
    except ImageReadError as err:
        problems.append(f"pixel data unreadable: {err}")
        return
    actual = details["pixel_sha256"] = pixel_sha256(volume.array)
    if actual != output.get("sha256"):
        problems.append("pixel sha256 differs from the record (voxel values or shape changed)")
    spacing = output.get("spacing")
    if spacing is not None and not np.allclose(volume.spacing, spacing, rtol=0, atol=_SPACING_TOLERANCE_MM):
        problems.append(f"voxel spacing {list(volume.spacing)} differs from the recorded {spacing}")
