"""Write generated outputs together with their signed provenance, and read it back.

:func:`write_generated_volume` is the one function that writes generated pixels: it embeds the
record in the image header (NIfTI ``descrip`` + ecode-6 comment extension; NRRD ``content`` and
``key:=value`` fields) and writes a ``<file>.generated.json`` sidecar next to it, so no export path
can skip the marking. Many tools drop header extensions when they rewrite a file, so the sidecar is
the authoritative copy; the embedded copy travels with the file. Image and sidecar are committed as a
pair (:mod:`medgen_core.provenance.pairs`): a crash leaves the old pair or the new one.

The record is a C2PA-style claim, adapted to medical volumes:

* **claim**: the record (:class:`~medgen_core.provenance.record.GenerationMetadata`), signed with the
  installation's Ed25519 key (:mod:`~medgen_core.provenance.signing`; C2PA signs a COSE structure
  with an X.509 certificate chain, here a raw key checked against a local trust list
  (:mod:`~medgen_core.provenance.trust`), since there is no certificate authority for medgen installations);
* **assertions**: ``c2pa.actions`` (``c2pa.created``, or ``c2pa.edited`` for super-resolution, with the
  IPTC ``digitalSourceType``), plus the record's own generation fields (generator, weights, inputs);
* **hard binding**: ``output.sha256`` (sha256 of the decoded voxel values) and ``output.affine`` (origin,
  direction, spacing). C2PA's ``c2pa.hash.data`` hashes byte ranges of the file; medical files are
  rewritten by every tool (gzip level, header order), so the binding is over the decoded pixels and the
  geometry instead, and a header rewrite with unchanged content still verifies.

C2PA embeds its manifest in JUMBF boxes, and its libraries support JPEG, PNG, TIFF, MP4 and others but not
NIfTI, NRRD or DICOM: here the same signed record goes into the NIfTI extension, the NRRD
``medgen_provenance`` field and the sidecar.
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from medgen_core.errors import ImageWriteError, ProvenanceError
from medgen_core.io import SUPPORTED_WRITE_SUFFIXES, Volume, atomic_path, check_output_path, format_of, ras_to_lps, write_volume
from medgen_core.provenance.pairs import recover_pair, staged_pair
from medgen_core.provenance.record import DERIVED_LABEL_DISCLOSURE, GenerationMetadata, c2pa_actions, pixel_sha256, sha256_file
from medgen_core.provenance.signing import canonical_json, sign_record
from medgen_core.provenance.watermark_stamp import mark_generated_volume

__all__ = [
    "NIFTI_PROVENANCE_ECODE",
    "NRRD_PROVENANCE_FIELD",
    "SIDECAR_SUFFIX",
    "image_output",
    "read_provenance",
    "refuse_inputs",
    "sidecar_document",
    "sidecar_path",
    "stamp_record",
    "write_generated_volume",
    "write_sidecar",
    "write_sidecar_json",
]

logger = logging.getLogger(__name__)

SIDECAR_SUFFIX = ".generated.json"
#: NIfTI header extension code "comment" (``nibabel.nifti1.extension_codes``), holding the record JSON.
NIFTI_PROVENANCE_ECODE = 6
#: NRRD ``key:=value`` field holding the compact record JSON.
NRRD_PROVENANCE_FIELD = "medgen_provenance"
#: NRRD ``space`` written by :func:`~medgen_core.io.write_volume`.
NRRD_SPACE = "left-posterior-superior"


def sidecar_path(path: str | Path) -> Path:
    """The sidecar of ``path``: ``<path>.generated.json`` (e.g. ``sr.nii.gz.generated.json``)."""
    path = Path(path)
    return path.with_name(path.name + SIDECAR_SUFFIX)


def _derived(metadata: GenerationMetadata) -> bool:
    return metadata.disclosure == DERIVED_LABEL_DISCLOSURE


def _header_flag(metadata: GenerationMetadata) -> str:
    """The short header mark: ``SYNTHETIC AI`` for generated images, ``AI-DERIVED`` for AI-derived label maps."""
    return "AI-DERIVED" if _derived(metadata) else "SYNTHETIC AI"


def image_output(volume: Volume, name: str, suffix: str) -> dict[str, Any]:
    """The record's ``output`` for an image: pixel sha256, shape, spacing and the full affine (NRRD: LPS space too)."""
    output: dict[str, Any] = {
        "path": name,
        "sha256": pixel_sha256(volume.array),
        "format": suffix.lstrip("."),
        "shape": list(volume.shape),
        "spacing": list(volume.spacing),
        "affine": np.asarray(volume.affine, dtype=np.float64).tolist(),
    }
    if suffix in (".nrrd", ".nhdr"):
        lps = ras_to_lps(volume.affine)
        output.update(space=NRRD_SPACE, space_directions=lps[:3, :3].T.tolist(), space_origin=lps[:3, 3].tolist())
    return output


def stamp_record(metadata: GenerationMetadata) -> dict[str, Any]:
    """Fill the record's assertions, sign it with the installation key, and return the signed dict.

    ``metadata.output`` must already be filled; ``metadata.assertions`` and ``metadata.signature`` are set, so
    ``metadata.to_dict()`` equals the returned record.

    Raises:
        ProvenanceError: The record is not serialisable, or the signing key cannot be created or read.
    """
    metadata.assertions = [c2pa_actions(metadata)]
    metadata.signature = None
    signed = sign_record(metadata.to_dict())
    metadata.signature = signed["signature"]
    return signed


def refuse_inputs(path: Path, metadata: GenerationMetadata, extra: tuple[str | Path | None, ...] = ()) -> None:
    """Refuse a destination that is (a file of) one of the run's inputs, a folder, or not writable.

    The writers stage to temporary names, so this runs on the final path before anything is written.
    """
    check_output_path([*extra, *(item["path"] for item in metadata.inputs)], path)


def write_generated_volume(volume: Volume, path: str | Path, metadata: GenerationMetadata, *, watermark: bool = True) -> Path:
    """Write a generated volume with its signed provenance embedded and in a sidecar, as one pair.

    Fills ``metadata.output`` (file name, pixel sha256, format, shape, spacing, affine), signs the
    record, writes image and sidecar to temporary files and commits both (never over one of
    ``metadata.inputs`` or ``volume.path``). Killed at any moment, the old pair or the new pair remains.

    Args:
        volume: The generated volume.
        path: Destination ``.nii``, ``.nii.gz`` or ``.nrrd`` file.
        metadata: The run's record; its ``output``, ``assertions`` and ``signature`` are overwritten.
        watermark: Embed the invisible voxel mark in synthetic images before hashing them
            (:func:`~medgen_core.provenance.watermark_stamp.mark_generated_volume`; label maps never get it).

    Returns:
        The image path.

    Raises:
        ImageWriteError: Unsupported extension, destination is an input, or the write failed.
        ProvenanceError: The record is not serialisable, the key is unusable, or the sidecar could not be written.

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
    refuse_inputs(path, metadata, (volume.path,))
    if watermark:
        volume = mark_generated_volume(volume, metadata)
    metadata.output = image_output(volume, path.name, suffix)
    record = stamp_record(metadata)
    compact = canonical_json(record).decode("ascii")
    inputs = [item["path"] for item in metadata.inputs]
    path.parent.mkdir(parents=True, exist_ok=True)
    with staged_pair(path) as (tmp_image, tmp_sidecar):
        if fmt == "nifti":
            from nibabel.nifti1 import Nifti1Extension

            write_volume(
                volume,
                tmp_image,
                inputs=inputs,
                nifti_descrip=f"{_header_flag(metadata)} {metadata.generator}",
                nifti_extensions=[Nifti1Extension(NIFTI_PROVENANCE_ECODE, compact.encode("ascii"))],
            )
        else:
            fields = {
                "content": "AI-DERIVED label map" if _derived(metadata) else "SYNTHETIC AI-generated",  # standard NRRD field
                "medgen_ai_generated": "true",
                "medgen_generator": metadata.generator,
                "medgen_disclosure": metadata.disclosure,
                "medgen_pixel_sha256": metadata.output["sha256"],
                NRRD_PROVENANCE_FIELD: compact,
            }
            write_volume(volume, tmp_image, inputs=inputs, extra_nrrd_fields=fields)
        write_sidecar_json(tmp_sidecar, record, sha256_file(tmp_image))
    logger.info("wrote generated image %s (%s) with signed provenance sidecar", path, metadata.generator)
    return path


def file_output(path: Path, file_sha256: str) -> dict[str, Any]:
    """The record's ``output`` for a non-image file (bound by its file sha256)."""
    suffix = "".join(path.suffixes).lstrip(".")
    return {"path": path.name, "sha256": file_sha256, "format": suffix, "shape": None, "spacing": None, "affine": None}


def write_sidecar(path: str | Path, metadata: GenerationMetadata) -> Path:
    """Write the signed provenance sidecar of an existing non-image output (e.g. NPZ, CSV, PNG).

    ``metadata.output["sha256"]`` is the sha256 of the file's bytes. Only the sidecar is replaced
    (atomically); to write a new file and its sidecar as one crash-safe pair use
    :func:`~medgen_core.provenance.files.write_generated_file`.

    Returns:
        The sidecar path.

    Raises:
        ProvenanceError: If ``path`` does not exist or the sidecar could not be written.
    """
    path = Path(path)
    recover_pair(path)
    if not path.is_file():
        raise ProvenanceError(f"{path}: cannot write a provenance sidecar, output file not found")
    file_sha = sha256_file(path)
    metadata.output = file_output(path, file_sha)
    record = stamp_record(metadata)
    target = sidecar_path(path)
    try:
        with atomic_path(target) as tmp:
            write_sidecar_json(tmp, record, file_sha)
    except Exception as err:
        raise ProvenanceError(f"{path}: writing the provenance sidecar failed ({err})") from err
    return target


def sidecar_document(record: dict[str, Any], file_sha256: str) -> dict[str, Any]:
    """The sidecar JSON: a short summary (generator, disclosure, time, file sha256) and the signed record."""
    return {
        "generated_at": record["generated_at"],
        "generator": f"{record['generator_name']}:{record['generator_version']}",
        "disclosure": record["disclosure"],
        "ai_generated": True,
        "file_sha256": file_sha256,
        "record": record,
    }


def write_sidecar_json(target: Path, record: dict[str, Any], file_sha256: str) -> None:
    """Write the sidecar JSON of ``record`` (see :func:`sidecar_document`) to ``target`` (not atomic: a temporary path)."""
    target.write_text(json.dumps(sidecar_document(record, file_sha256), indent=2, sort_keys=True) + "\n", encoding="utf-8")


def read_provenance(path: str | Path) -> dict[str, dict[str, Any] | None] | None:
    """Read the provenance of a file from its sidecar and from its header.

    An interrupted write of ``path`` is finished first (:func:`~medgen_core.provenance.pairs.recover_pair`).

    Args:
        path: An output file (image or not).

    Returns:
        ``{"sidecar": dict | None, "embedded": dict | None}`` (the sidecar is the whole sidecar
        JSON; ``embedded`` is the record found in a NIfTI ecode-6 extension or the NRRD
        ``medgen_provenance`` field), or ``None`` if neither exists.

    Raises:
        ProvenanceError: The file name is empty, the file does not exist, or a record exists but is not valid JSON.
    """
    if not str(path).strip():
        raise ProvenanceError("empty file name; expected the path of a generated file")
    path = Path(path)
    recover_pair(path)
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
    """The record embedded in a NIfTI/NRRD header or in a DICOM series' private block, or ``None``."""
    known = format_of(path)
    if path.is_dir() or (known is not None and known[0] == "dicom"):
        from medgen_core.provenance.dicom_block import read_embedded_dicom_record

        return read_embedded_dicom_record(path)
    if known is None or known[0] not in ("nifti", "nrrd"):
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
        if isinstance(record, dict) and str(record.get("schema", "")).startswith("medgen-provenance/"):
            return record
    return None


def nrrd_space(path: Path) -> dict[str, Any] | None:
    """``space``, ``space_directions`` and ``space_origin`` of a NRRD header, in LPS (``None`` if not NRRD)."""
    known = format_of(path)
    if known is None or known[0] != "nrrd" or path.is_dir():
        return None
    import nrrd

    with contextlib.suppress(Exception):
        header = nrrd.read_header(str(path))
        space = str(header.get("space", ""))
        flip = {"left-posterior-superior": (1, 1, 1), "right-anterior-superior": (-1, -1, 1),
                "left-anterior-superior": (1, -1, 1)}.get(space)
        if flip is None:
            return {"space": space}
        directions = np.asarray(header["space directions"], dtype=np.float64) * np.asarray(flip)
        origin = np.asarray(header["space origin"], dtype=np.float64) * np.asarray(flip)
        return {"space": NRRD_SPACE, "space_directions": directions.tolist(), "space_origin": origin.tolist()}
    return {"space": "unreadable"}
