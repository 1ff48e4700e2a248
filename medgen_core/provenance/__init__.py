"""Provenance of generated outputs: who/what/when/from-what, signed, embedded in files and in sidecars.

Every generated image is written through :func:`write_generated_volume`, which marks it as
AI-generated in the file header and in a ``<file>.generated.json`` sidecar, with a record signed by the
installation's Ed25519 key and bound to the pixels and the full affine; :func:`verify_provenance`
checks later that content and record still match and who signed it (intact, modified, unsigned, forged,
missing). Image and sidecar are committed as a crash-safe pair.
"""

from medgen_core.provenance.record import (
    ALGORITHMICALLY_ENHANCED,
    DIGITAL_SOURCE_TYPE,
    DISCLOSURE,
    SCHEMA,
    GenerationMetadata,
    collect_software_versions,
    digital_source_type_for,
    pixel_sha256,
    sha256_file,
)
from medgen_core.provenance.files import write_generated_file
from medgen_core.provenance.signing import KEY_DIR_ENV, PublicKey, check_signature, installation_key, key_dir, sign_record
from medgen_core.provenance.stamp import (
    read_provenance,
    sidecar_path,
    write_generated_volume,
    write_sidecar,
)
from medgen_core.provenance.trust import is_trusted, trust_add, trust_remove, trusted_keys
from medgen_core.provenance.verify import STATUSES, VerificationResult, verify_provenance

__all__ = [
    "ALGORITHMICALLY_ENHANCED",
    "DIGITAL_SOURCE_TYPE",
    "DISCLOSURE",
    "KEY_DIR_ENV",
    "SCHEMA",
    "STATUSES",
    "GenerationMetadata",
    "PublicKey",
    "VerificationResult",
    "check_signature",
    "collect_software_versions",
    "digital_source_type_for",
    "installation_key",
    "is_trusted",
    "key_dir",
    "pixel_sha256",
    "read_provenance",
    "sha256_file",
    "sidecar_path",
    "sign_record",
    "trust_add",
    "trust_remove",
    "trusted_keys",
    "verify_provenance",
    "write_generated_file",
    "write_generated_volume",
    "write_sidecar",
]
