"""The provenance record attached to every generated output, and the hashes it relies on.

A :class:`GenerationMetadata` says *what* produced an output (generator name/version, bundle,
weights hash, software versions), *how* (task, parameters, seed, run id), *from what* (input files
and their sha256) and *what came out* (output name, pixel sha256, format, shape, spacing and the full
voxel-to-world affine). It also carries the fixed disclosure that the image is synthetic (EU AI Act
Art. 50 style marking) and its IPTC digital source type: ``algorithmicallyEnhanced`` for
super-resolution, ``trainedAlgorithmicMedia`` for everything else (synthesis, translation, segmentation).

Schema ``medgen-provenance/1.1`` adds ``assertions`` (a C2PA-style ``c2pa.actions`` assertion) and
``signature`` (see :mod:`medgen_core.provenance.signing`); records of schema ``1.0`` (no affine, no
signature) are still read.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import platform
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from medgen_core.errors import ProvenanceError

__all__ = [
    "ALGORITHMICALLY_ENHANCED",
    "ALGORITHMIC_MEDIA",
    "DERIVED_LABEL_DISCLOSURE",
    "DIGITAL_SOURCE_TYPE",
    "KNOWN_SCHEMAS",
    "DISCLOSURE",
    "SCHEMA",
    "GenerationMetadata",
    "c2pa_actions",
    "collect_software_versions",
    "digital_source_type_for",
    "pixel_sha256",
    "sha256_file",
    "utc_now",
]

DISCLOSURE = "AI-generated synthetic image. Not acquired from a patient. Not for diagnostic use."
#: Disclosure of a label map computed from a real image by a trained model (e.g. a segmentation).
DERIVED_LABEL_DISCLOSURE = ("AI-derived label map: an automatic segmentation by a trained model, not a manual delineation. "
                            "Not for diagnostic use.")
SCHEMA = "medgen-provenance/1.1"
LEGACY_SCHEMA = "medgen-provenance/1.0"
#: Schemas this version reads (1.0: before the affine, assertions and signature were added).
KNOWN_SCHEMAS = (LEGACY_SCHEMA, SCHEMA)
#: IPTC digital source type of content made by a trained model (synthesis, translation, segmentation).
DIGITAL_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
#: IPTC digital source type of an acquired image enhanced by an algorithm (super-resolution).
ALGORITHMICALLY_ENHANCED = "http://cv.iptc.org/newscodes/digitalsourcetype/algorithmicallyEnhanced"
#: IPTC digital source type of content made by an algorithm without training data (the ABR simulator).
ALGORITHMIC_MEDIA = "http://cv.iptc.org/newscodes/digitalsourcetype/algorithmicMedia"
#: Fields added by schema 1.1 (absent from 1.0 records).
_NEW_IN_1_1 = frozenset({"assertions", "signature"})
# Tasks that enhance an existing image rather than make a new one: "sr", "sr_x4", "super_resolution", "upscale_x2".
_ENHANCEMENT_TASK = re.compile(r"(^|[_\-])(sr|super[_\-]?resolution|upscal\w*)([_\-]|x?\d|$)", re.IGNORECASE)

_CHUNK = 1 << 20
# Distribution names whose versions are recorded, keyed by the name used in the record.
_SOFTWARE_DISTRIBUTIONS = {"monai": "monai", "torch": "torch", "numpy": "numpy", "nibabel": "nibabel"}


def utc_now() -> str:
    """Current UTC time as ISO 8601 with a ``Z`` suffix, e.g. ``2026-01-01T12:00:00Z``."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def collect_software_versions() -> dict[str, str | None]:
    """Versions of Python, medgen and the main libraries (``None`` where not installed).

    Uses package metadata, so it does not import torch or monai.
    """
    from medgen_core import __version__

    versions: dict[str, str | None] = {"python": platform.python_version(), "medgen": __version__}
    for key, dist in _SOFTWARE_DISTRIBUTIONS.items():
        try:
            versions[key] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[key] = None
    return versions


def digital_source_type_for(task: str) -> str:
    """IPTC digital source type for a task: :data:`ALGORITHMICALLY_ENHANCED` for super-resolution,
    :data:`ALGORITHMIC_MEDIA` for simulations, else :data:`DIGITAL_SOURCE_TYPE` (trainedAlgorithmicMedia)."""
    if _ENHANCEMENT_TASK.search(task):
        return ALGORITHMICALLY_ENHANCED
    return ALGORITHMIC_MEDIA if "simulation" in task.lower() else DIGITAL_SOURCE_TYPE


def c2pa_actions(metadata: GenerationMetadata) -> dict[str, Any]:
    """The record's ``c2pa.actions`` assertion: ``c2pa.edited`` for an enhanced image, else ``c2pa.created``."""
    enhanced = metadata.digital_source_type == ALGORITHMICALLY_ENHANCED
    action = {
        "action": "c2pa.edited" if enhanced else "c2pa.created",
        "digitalSourceType": metadata.digital_source_type,
        "softwareAgent": {"name": metadata.generator_name, "version": metadata.generator_version},
        "when": metadata.generated_at,
        "description": metadata.disclosure,
        "parameters": {"medgen.task": metadata.task, "medgen.bundle_id": metadata.bundle_id,
                       "medgen.weights_sha256": metadata.weights_sha256,
                       "ingredients": [{"role": i["role"], "sha256": i["sha256"]} for i in metadata.inputs]},
    }
    return {"label": "c2pa.actions", "data": {"actions": [action]}}


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes.

    For a directory (a DICOM series), hashes the bytes of its regular files one after another, in
    sorted file-name order (not recursive).

    Raises:
        ProvenanceError: If ``path`` does not exist or cannot be read.
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file())
    elif path.is_file():
        files = [path]
    else:
        raise ProvenanceError(f"{path}: cannot hash, file not found")
    digest = hashlib.sha256()
    try:
        for file in files:
            with open(file, "rb") as handle:
                for chunk in iter(lambda: handle.read(_CHUNK), b""):
                    digest.update(chunk)
    except OSError as err:
        raise ProvenanceError(f"{path}: cannot hash ({err})") from err
    return digest.hexdigest()


def pixel_sha256(array: np.ndarray) -> str:
    """Hex sha256 of an image's voxel values, independent of the file container.

    Hashes the shape string (e.g. ``"(4, 5, 6)"``) followed by the values as float32
    little-endian bytes in C order, so the same pixels give the same hash whether they come from
    NIfTI or NRRD, compressed or not.
    """
    data = np.asarray(array)
    data = data.reshape(1) if data.ndim == 0 else data  # as np.ascontiguousarray did: a scalar hashes as shape (1,)
    digest = hashlib.sha256(str(tuple(int(s) for s in data.shape)).encode("ascii"))
    for i in range(data.shape[0]):  # C order, one leading-axis slice at a time: no copy of a large volume
        digest.update(np.ascontiguousarray(data[i], dtype="<f4"))
    return digest.hexdigest()


@dataclass
class GenerationMetadata:
    """Provenance record of one generated output (schema :data:`SCHEMA`).

    Args:
        generator_name: Model/pipeline name, e.g. ``"rrdb_sr_x4"``.
        generator_version: Its semantic version, e.g. ``"1.0.0"``.
        task: What was done, e.g. ``"sr_x4"``, ``"mri_t1_to_t2"``.
        bundle_id: MONAI bundle id (``name@version``) if the generator came from a bundle.
        weights_sha256: sha256 of the weight file used.
        parameters: Run parameters (JSON-serialisable), e.g. ``{"steps": 25}``.
        seed: Random seed, if any.
        inputs: One ``{"role", "path", "sha256"}`` dict per input file.
        output: Filled when the output is written: ``{"path", "sha256", "format", "shape", "spacing",
            "affine"}`` where ``sha256`` is the pixel hash (images) or file hash (other files) and
            ``affine`` the 4x4 voxel-to-RAS matrix (origin, direction and spacing; ``None`` for other
            files); NRRD outputs add ``space``, ``space_directions`` and ``space_origin`` (LPS). Together
            with the pixel hash this is the record's hard binding to the content.
        generated_at: UTC ISO 8601 time with ``Z``; defaults to now.
        software: Versions of python, medgen, monai, torch, numpy, nibabel; collected by default.
        disclosure: Human-readable synthetic-content notice.
        synthetic: Always ``True``.
        schema: Record schema id.
        digital_source_type: IPTC digital source type URI; by default chosen from ``task``
            (:func:`digital_source_type_for`).
        run_id: Unique id of this run (uuid4); defaults to a fresh one.
        assertions: C2PA-style assertions, filled when the output is written (``c2pa.actions``).
        signature: Ed25519 signature block, filled when the output is written
            (:func:`~medgen_core.provenance.signing.sign_record`); ``None`` in unsigned records.

    Example:
        >>> meta = GenerationMetadata.create(generator_name="rrdb", generator_version="1.0.0",
        ...                                  task="sr_x4", input_paths=["t1.nii.gz"])  # doctest: +SKIP
    """

    generator_name: str
    generator_version: str
    task: str
    bundle_id: str | None = None
    weights_sha256: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    inputs: list[dict[str, Any]] = field(default_factory=list)
    output: dict[str, Any] = field(default_factory=dict)
    generated_at: str = field(default_factory=utc_now)
    software: dict[str, str | None] = field(default_factory=collect_software_versions)
    disclosure: str = DISCLOSURE
    synthetic: bool = True
    schema: str = SCHEMA
    digital_source_type: str = ""
    run_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    assertions: list[dict[str, Any]] = field(default_factory=list)
    signature: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        for name in ("generator_name", "generator_version", "task"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ProvenanceError(f"GenerationMetadata: {name} must be a non-empty string, got {value!r}")
        if self.schema not in KNOWN_SCHEMAS:
            raise ProvenanceError(f"GenerationMetadata: unknown schema {self.schema!r}; expected {SCHEMA!r}")
        if not self.digital_source_type:
            self.digital_source_type = digital_source_type_for(self.task)
        if self.synthetic is not True:
            raise ProvenanceError("GenerationMetadata: synthetic must be True for generated outputs")
        for item in self.inputs:
            missing = {"role", "path", "sha256"} - set(item)
            if missing:
                raise ProvenanceError(f"GenerationMetadata: input entry {item!r} lacks {sorted(missing)}")

    @property
    def generator(self) -> str:
        """``"name:version"``, the short generator label used in file headers."""
        return f"{self.generator_name}:{self.generator_version}"

    @classmethod
    def create(
        cls,
        *,
        generator_name: str,
        generator_version: str,
        task: str,
        input_paths: Sequence[str | Path] | Mapping[str, str | Path] = (),
        bundle_id: str | None = None,
        weights_sha256: str | None = None,
        parameters: Mapping[str, Any] | None = None,
        seed: int | None = None,
        disclosure: str = DISCLOSURE,
        digital_source_type: str = "",
    ) -> GenerationMetadata:
        """Build a record, hashing the input files.

        Args:
            generator_name: See class docs.
            generator_version: See class docs.
            task: See class docs.
            input_paths: Input files (or DICOM directories). A single path or a sequence gives role ``"input"``
                (``"input_<i>"`` when there are several); a mapping gives ``{role: path}``.
            bundle_id: See class docs.
            weights_sha256: See class docs.
            parameters: See class docs.
            seed: See class docs.
            disclosure: See class docs (:data:`DERIVED_LABEL_DISCLOSURE` for AI-derived label maps).
            digital_source_type: See class docs (default: chosen from ``task``).

        Raises:
            ProvenanceError: If an input does not exist.
        """
        if isinstance(input_paths, (str, Path)):
            input_paths = [input_paths]
        if isinstance(input_paths, Mapping):
            pairs = [(str(role), Path(p)) for role, p in input_paths.items()]
        else:
            paths = [Path(p) for p in input_paths]
            pairs = [("input" if len(paths) == 1 else f"input_{i}", p) for i, p in enumerate(paths)]
        inputs = [{"role": role, "path": str(p), "sha256": sha256_file(p)} for role, p in pairs]
        return cls(
            generator_name=generator_name,
            generator_version=generator_version,
            task=task,
            bundle_id=bundle_id,
            weights_sha256=weights_sha256,
            parameters=dict(parameters or {}),
            seed=seed,
            inputs=inputs,
            disclosure=disclosure,
            digital_source_type=digital_source_type,
        )

    def to_dict(self) -> dict[str, Any]:
        """The record as a JSON-serialisable dict (a deep copy).

        Raises:
            ProvenanceError: If a field (typically ``parameters``) is not JSON-serialisable.
        """
        record = dataclasses.asdict(self)
        try:
            return json.loads(json.dumps(record, allow_nan=False))
        except (TypeError, ValueError) as err:
            raise ProvenanceError(f"provenance record is not JSON-serialisable ({err}); check parameters") from err

    def to_json(self, *, compact: bool = False) -> str:
        """The record as JSON text (sorted keys; ``compact`` gives one ASCII line without spaces)."""
        if compact:
            return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return json.dumps(self.to_dict(), sort_keys=True, indent=2)

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> GenerationMetadata:
        """Rebuild a record from :meth:`to_dict` output (also a schema 1.0 record, which lacks ``assertions``
        and ``signature``).

        Raises:
            ProvenanceError: Unknown schema, unknown keys, or missing keys (all fields are required).
        """
        if not isinstance(record, Mapping):
            raise ProvenanceError(f"provenance record must be a JSON object, got {type(record).__name__}")
        schema = record.get("schema")
        if schema not in KNOWN_SCHEMAS:
            raise ProvenanceError(f"unknown provenance schema {schema!r}; expected {SCHEMA!r}")
        names = {f.name for f in dataclasses.fields(cls)}
        if schema == LEGACY_SCHEMA:
            names -= _NEW_IN_1_1
        unknown = sorted(set(record) - names)
        if unknown:
            raise ProvenanceError(f"provenance record has unknown keys {unknown}; allowed: {sorted(names)}")
        # a stored record is complete (defaults would invent values); an absent signature means unsigned, like null
        missing = sorted(names - set(record) - {"signature"})
        if missing:
            raise ProvenanceError(f"provenance record lacks required keys {missing}")
        values = json.loads(json.dumps(dict(record)))
        if not isinstance(values.get("assertions", []), list) or not isinstance(values.get("signature"), (dict, type(None))):
            raise ProvenanceError("provenance record: assertions must be a list and signature an object or null")
        return cls(**values)
