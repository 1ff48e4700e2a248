"""Provenance of generated outputs: who/what/when/from-what, embedded in files and in sidecars.

Every generated image is written through :func:`write_generated_volume`, which marks it as
AI-generated in the file header and in a ``<file>.generated.json`` sidecar; :func:`verify_provenance`
checks later that the pixels still match the record.
"""

from medgen_core.provenance.record import (
    DIGITAL_SOURCE_TYPE,
    DISCLOSURE,
    SCHEMA,
    GenerationMetadata,
    collect_software_versions,
    pixel_sha256,
    sha256_file,
)
from medgen_core.provenance.files import write_generated_file
from medgen_core.provenance.stamp import (
    VerificationResult,
    read_provenance,
    sidecar_path,
    verify_provenance,
    write_generated_volume,
    write_sidecar,
)

__all__ = [
    "DIGITAL_SOURCE_TYPE",
    "DISCLOSURE",
    "SCHEMA",
    "GenerationMetadata",
    "VerificationResult",
    "collect_software_versions",
    "pixel_sha256",
    "read_provenance",
    "sha256_file",
    "sidecar_path",
    "verify_provenance",
    "write_generated_file",
    "write_generated_volume",
    "write_sidecar",
]
