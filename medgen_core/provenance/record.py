"""The provenance record attached to every generated output, and the hashes it relies on.

A :class:`GenerationMetadata` says *what* produced an output (generator name/version, bundle,
weights hash, software versions), *how* (task, parameters, seed, run id), *from what* (input files
and their sha256) and *what came out* (output name, pixel sha256, format, shape, spacing). It also
carries the fixed disclosure that the image is synthetic (EU AI Act Art. 50 style marking, IPTC
``trainedAlgorithmicMedia`` digital source type).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import platform
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from medgen_core.errors import ProvenanceError

__all__ = [
    "DERIVED_LABEL_DISCLOSURE",
    "DIGITAL_SOURCE_TYPE",
    "DISCLOSURE",
    "SCHEMA",
    "GenerationMetadata",
    "collect_software_versions",
    "pixel_sha256",
    "sha256_file",
    "utc_now",
]

DISCLOSURE = "AI-generated synthetic image. Not acquired from a patient. Not for diagnostic use."
#: Disclosure of a label map computed from a real image by a trained model (e.g. a segmentation).
DERIVED_LABEL_DISCLOSURE = ("AI-derived label map: an automatic segmentation by a trained model, not a manual delineation. "
                            "Not for diagnostic use.")
SCHEMA = "medgen-provenance/1.0"
DIGITAL_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"

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
    data = np.ascontiguousarray(array, dtype="<f4")
    digest = hashlib.sha256(str(tuple(int(s) for s in data.shape)).encode("ascii"))
    digest.update(data.tobytes(order="C"))
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
        output: Filled when the output is written: ``{"path", "sha256", "format", "shape", "spacing"}``
            where ``sha256`` is the pixel hash (images) or file hash (other files).
        generated_at: UTC ISO 8601 time with ``Z``; defaults to now.
        software: Versions of python, medgen, monai, torch, numpy, nibabel; collected by default.
        disclosure: Human-readable synthetic-content notice.
        synthetic: Always ``True``.
        schema: Record schema id.
        digital_source_type: IPTC digital source type URI.
        run_id: Unique id of this run (uuid4); defaults to a fresh one.

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
    digital_source_type: str = DIGITAL_SOURCE_TYPE
    run_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def __post_init__(self) -> None:
        for name in ("generator_name", "generator_version", "task"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ProvenanceError(f"GenerationMetadata: {name} must be a non-empty string, got {value!r}")
        if self.schema != SCHEMA:
            raise ProvenanceError(f"GenerationMetadata: unknown schema {self.schema!r}; expected {SCHEMA!r}")
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
        """Rebuild a record from :meth:`to_dict` output.

        Raises:
            ProvenanceError: Unknown schema, unknown keys, or missing keys (all fields are required).
        """
        if not isinstance(record, Mapping):
            raise ProvenanceError(f"provenance record must be a JSON object, got {type(record).__name__}")
        schema = record.get("schema")
        if schema != SCHEMA:
            raise ProvenanceError(f"unknown provenance schema {schema!r}; expected {SCHEMA!r}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(record) - names)
        if unknown:
            raise ProvenanceError(f"provenance record has unknown keys {unknown}; allowed: {sorted(names)}")
        missing = sorted(names - set(record))  # a stored record is complete; defaults would invent values
        if missing:
            raise ProvenanceError(f"provenance record lacks required keys {missing}")
        return cls(**json.loads(json.dumps(dict(record))))
