"""Check a file against its signed provenance record: intact, modified, unsigned, forged or missing.

Order of the checks (the first that applies decides):

1. **missing**: no sidecar and nothing embedded.
2. **forged**: a record carries a signature that does not verify (its content was changed after signing,
   e.g. pixels edited and the hashes in the record recomputed, or the key id does not belong to the key).
3. **modified**: the content no longer matches the record: pixel sha256 (or file sha256), shape, the full
   affine (origin, direction, spacing; tolerance :data:`AFFINE_TOLERANCE_MM`), the NRRD space directions and
   origin; or sidecar and embedded records disagree, or a record is malformed.
4. **unsigned**: the content matches a record that has no signature (schema 1.0 files, or a record written
   by hand): anyone can write such a record, so it proves nothing about the origin.
5. **intact**: the content matches a validly signed record; ``trusted`` says whether the signing key is this
   installation's or on the trust list (:mod:`~medgen_core.provenance.trust`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from medgen_core.errors import ImageReadError, ProvenanceError
from medgen_core.io import format_of, read_volume
from medgen_core.provenance.record import GenerationMetadata, pixel_sha256, sha256_file
from medgen_core.provenance.signing import check_signature
from medgen_core.provenance.stamp import nrrd_space, read_provenance, sidecar_path
from medgen_core.provenance.trust import is_trusted

__all__ = ["AFFINE_TOLERANCE_MM", "STATUSES", "VerificationResult", "verify_provenance"]

logger = logging.getLogger(__name__)

#: Largest difference (mm) between recorded and actual affine entries (and spacing) still counted as equal.
AFFINE_TOLERANCE_MM = 1e-4
STATUSES = ("intact", "modified", "unsigned", "forged", "missing")


@dataclass
class VerificationResult:
    """Outcome of :func:`verify_provenance`.

    Args:
        status: One of :data:`STATUSES` (see the module docstring).
        message: One line for people.
        details: Hashes and geometry compared, where the records were found, signature checks.
        key_id: Id of the key that signed the record (``None`` if unsigned or missing).
        trusted: For a valid signature, whether its key is trusted; else ``None``.
    """

    status: Literal["intact", "modified", "unsigned", "forged", "missing"]
    message: str
    details: dict[str, Any] = field(default_factory=dict)
    key_id: str | None = None
    trusted: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {"status": self.status, "message": self.message, "details": self.details,
                "key_id": self.key_id, "trusted": self.trusted}


def verify_provenance(path: str | Path) -> VerificationResult:
    """Check that a file still matches its provenance record, and who signed it.

    Images (NIfTI, NRRD, MetaImage, DICOM) are read with :func:`~medgen_core.io.read_volume`; their pixel
    sha256 and affine are compared with the record's ``output``. Other files are compared by file sha256.
    A changed header with unchanged pixels and geometry stays intact, with a note.

    Raises:
        ProvenanceError: If ``path`` is empty or does not exist.
    """
    if not str(path).strip():
        raise ProvenanceError("empty file name; expected the path of a generated file")
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
    records = {name: rec for name, rec in (("embedded", embedded), ("sidecar", side_record)) if rec is not None}
    checks = {name: check_signature(rec) for name, rec in records.items()}
    details["signatures"] = {name: {"state": c.state, "key_id": c.key.key_id if c.key else None, "reason": c.reason}
                             for name, c in checks.items()}
    forged = [f"{name} record: {c.reason}" for name, c in checks.items() if c.state == "invalid"]
    if forged:
        return VerificationResult("forged", "signature invalid: " + "; ".join(forged), details)

    if embedded is not None and side_record is not None and embedded != side_record:
        differing = sorted(k for k in set(embedded) | set(side_record) if embedded.get(k) != side_record.get(k))
        problems.append(f"sidecar and embedded records disagree ({', '.join(differing)})")
    if sidecar is not None and side_record is not None:
        problems += _summary_problems(sidecar, side_record)
    record = embedded if embedded is not None else side_record
    if record is not None:
        try:
            GenerationMetadata.from_dict(record)
        except ProvenanceError as err:
            problems.append(f"record invalid: {err}")
        output = record.get("output") if isinstance(record.get("output"), dict) else {}
        details["expected_sha256"] = output.get("sha256")
        if path.is_dir() or format_of(path) is not None:
            _compare_image(path, output, details, problems, notes)
        else:
            actual_file = details["file_sha256"] = sha256_file(path)
            if actual_file != output.get("sha256"):
                problems.append("file sha256 differs from the record")
        if output.get("path") not in (None, path.name):
            notes.append(f"file was renamed from {output.get('path')}")

    if sidecar is not None and "file_sha256" in sidecar and not path.is_dir():
        details.setdefault("file_sha256", sha256_file(path))
        details["file_sha256_matches_sidecar"] = details["file_sha256"] == sidecar["file_sha256"]
        if not details["file_sha256_matches_sidecar"] and not problems:
            notes.append("file bytes changed since writing (header rewritten) but pixels and geometry are unchanged")
    if embedded is None:
        notes.append("no embedded record (sidecar only)")
    elif sidecar is None:
        notes.append("no sidecar (embedded record only)")
    details["notes"] = notes
    suffix = ("; " + "; ".join(notes)) if notes else ""

    check = checks[next(iter(records))] if records else None
    key = check.key if check is not None and check.state == "valid" else None
    if problems:
        return VerificationResult("modified", "; ".join(problems), details, key.key_id if key else None)
    if key is None:
        return VerificationResult(
            "unsigned",
            f"content matches a record without a signature (found in: {', '.join(sources)}); anyone can write "
            f"such a record, so its origin is not proven{suffix}",
            details,
        )
    trusted = is_trusted(key)
    word = "trusted key" if trusted else "UNTRUSTED key (add it with `medgen provenance trust add KEY.pub`)"
    return VerificationResult(
        "intact",
        f"signed by {key.key_id} ({word}); content matches the record (found in: {', '.join(sources)}){suffix}",
        details, key.key_id, trusted,
    )


def _summary_problems(sidecar: dict[str, Any], record: dict[str, Any]) -> list[str]:
    """The sidecar's unsigned summary fields must repeat its (signed) record."""
    expected = {"generated_at": record.get("generated_at"), "disclosure": record.get("disclosure"),
                "generator": f"{record.get('generator_name')}:{record.get('generator_version')}", "ai_generated": True}
    wrong = sorted(k for k, v in expected.items() if k in sidecar and sidecar[k] != v)
    return [f"sidecar summary field(s) {', '.join(wrong)} disagree with its record"] if wrong else []


def _compare_image(path: Path, output: dict[str, Any], details: dict[str, Any], problems: list[str], notes: list[str]) -> None:
    """Recompute the pixel hash and geometry of an image and compare with ``output``."""
    try:
        volume = read_volume(path, strict=False)
    except ImageReadError as err:
        problems.append(f"pixel data unreadable: {err}")
        return
    actual = details["pixel_sha256"] = pixel_sha256(volume.array)
    if actual != output.get("sha256"):
        problems.append("pixel sha256 differs from the record (voxel values or shape changed)")
    details["affine"] = volume.affine.tolist()
    affine = output.get("affine")
    if affine is not None:
        problems += _geometry_problems("affine", volume.affine, affine, (4, 4))
    else:
        notes.append("record holds no affine (schema 1.0): only spacing compared")
    spacing = output.get("spacing")
    if spacing is not None:
        problems += _geometry_problems("voxel spacing", volume.spacing, spacing, (3,))
    if output.get("space_directions") is not None:
        space = nrrd_space(path)
        if space is not None and "space_directions" in space:
            problems += _geometry_problems("NRRD space directions", space["space_directions"], output["space_directions"], (3, 3))
            problems += _geometry_problems("NRRD space origin", space["space_origin"], output["space_origin"], (3,))
        elif space is not None:
            notes.append(f"NRRD space {space['space']!r} not compared (the affine was)")


def _geometry_problems(name: str, actual: Any, recorded: Any, shape: tuple[int, ...]) -> list[str]:
    try:
        expected = np.asarray(recorded, dtype=np.float64)
    except (TypeError, ValueError):
        return [f"recorded {name} is not numeric"]
    actual = np.asarray(actual, dtype=np.float64)
    if expected.shape != shape or actual.shape != shape:
        return [f"{name} has shape {actual.shape}, the record {expected.shape}"]
    diff = float(np.max(np.abs(actual - expected)))
    if not np.isfinite(diff) or diff > AFFINE_TOLERANCE_MM:
        return [f"{name} differs from the record by up to {diff:.4g} mm (geometry changed: moved, flipped, permuted or rescaled)"]
    return []
