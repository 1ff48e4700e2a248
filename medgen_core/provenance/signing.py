"""Ed25519 signatures of provenance records: the installation's key pair, signing and checking.

Each installation has one key pair, created on first use in :func:`key_dir` (``~/.medgen/keys``, or
``$MEDGEN_KEY_DIR``): ``medgen_ed25519.pem`` (private key, unencrypted PKCS#8 PEM, mode 0600, created
atomically so two processes never end up with different keys) and ``medgen_ed25519.pub`` (public key,
SubjectPublicKeyInfo PEM, the file to give to others for ``medgen provenance trust add``). The key id is
the first 16 hex digits of the sha256 of the raw 32-byte public key.

A signed record carries ``record["signature"] = {"alg": "Ed25519", "key_id", "public_key", "value"}``
(public key and signature base64). The signature covers :func:`canonical_json` of the record *without*
its ``signature`` member: sorted keys, compact separators, ASCII. Any Ed25519 library can check it.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import logging
import os
import secrets
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from medgen_core.errors import ProvenanceError

__all__ = [
    "KEY_DIR_ENV",
    "SIGNATURE_ALGORITHM",
    "PublicKey",
    "SignatureCheck",
    "SigningKey",
    "canonical_json",
    "check_signature",
    "installation_key",
    "installation_public_key",
    "key_dir",
    "parse_public_key",
    "sign_record",
]

logger = logging.getLogger(__name__)

#: Environment variable naming the folder of the key pair and trust list (tests point it at a temporary folder).
KEY_DIR_ENV = "MEDGEN_KEY_DIR"
SIGNATURE_ALGORITHM = "Ed25519"
PRIVATE_KEY_FILE = "medgen_ed25519.pem"
PUBLIC_KEY_FILE = "medgen_ed25519.pub"
_KEY_ID_HEX = 16


def key_dir() -> Path:
    """Folder holding the installation's key pair and trust list: ``$MEDGEN_KEY_DIR`` or ``~/.medgen/keys``."""
    override = os.environ.get(KEY_DIR_ENV)
    return Path(override).expanduser() if override else Path.home() / ".medgen" / "keys"


def canonical_json(value: Any) -> bytes:
    """The signed byte form of a JSON value: sorted keys, ``,``/``:`` separators, ASCII, no NaN."""
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode("ascii")
    except (TypeError, ValueError) as err:
        raise ProvenanceError(f"provenance record is not canonical JSON ({err})") from err


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise ValueError(f"{what} must be a base64 string")
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as err:
        raise ValueError(f"{what} is not valid base64") from err


@dataclass(frozen=True)
class PublicKey:
    """An Ed25519 public key (raw 32 bytes) and its short id."""

    raw: bytes

    @property
    def key_id(self) -> str:
        """First 16 hex digits of sha256(raw public key)."""
        return hashlib.sha256(self.raw).hexdigest()[:_KEY_ID_HEX]

    @property
    def b64(self) -> str:
        """The raw key in base64 (the form stored in records and in the trust list)."""
        return _b64(self.raw)

    def pem(self) -> bytes:
        """SubjectPublicKeyInfo PEM (the ``.pub`` file format)."""
        return Ed25519PublicKey.from_public_bytes(self.raw).public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def verify(self, signature: bytes, data: bytes) -> bool:
        """``True`` if ``signature`` is this key's Ed25519 signature of ``data``."""
        try:
            Ed25519PublicKey.from_public_bytes(self.raw).verify(signature, data)
        except (InvalidSignature, ValueError):
            return False
        return True


def parse_public_key(data: bytes, source: str) -> PublicKey:
    """Read an Ed25519 public key: PEM, OpenSSH (``ssh-ed25519 AAAA...``) or the record's raw base64.

    Raises:
        ProvenanceError: ``data`` is none of these, or a key of another type.
    """
    text = data.strip()
    loaders = []
    if text.startswith(b"-----BEGIN"):
        loaders.append(serialization.load_pem_public_key)
    elif text.startswith(b"ssh-"):
        loaders.append(serialization.load_ssh_public_key)
    for load in loaders:
        try:
            key = load(text)
        except (ValueError, UnsupportedAlgorithm) as err:
            raise ProvenanceError(f"{source}: not a readable public key ({err})") from err
        if not isinstance(key, Ed25519PublicKey):
            raise ProvenanceError(f"{source}: is a {type(key).__name__}, expected an Ed25519 public key")
        return PublicKey(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))
    try:
        raw = _unb64(text.decode("ascii"), "key")
    except (ValueError, UnicodeDecodeError):
        raw = b""
    if len(raw) != 32:
        raise ProvenanceError(
            f"{source}: not an Ed25519 public key; expected a PEM or OpenSSH public key file or 44 base64 characters"
        )
    return PublicKey(raw)


@dataclass(frozen=True)
class SigningKey:
    """The installation's private key, its public key and where it lives."""

    private: Ed25519PrivateKey
    public: PublicKey
    path: Path

    @property
    def public_path(self) -> Path:
        return self.path.with_name(PUBLIC_KEY_FILE)

    def sign(self, data: bytes) -> bytes:
        return self.private.sign(data)


def _load_private(path: Path) -> SigningKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError, UnsupportedAlgorithm) as err:
        raise ProvenanceError(f"{path}: cannot read the signing key ({err}); move it away to create a new one") from err
    if not isinstance(key, Ed25519PrivateKey):
        raise ProvenanceError(f"{path}: signing key is a {type(key).__name__}, expected Ed25519")
    with contextlib.suppress(OSError, AttributeError):
        if os.name == "posix" and stat.S_IMODE(path.stat().st_mode) & 0o077:
            logger.warning("%s: private key is readable by other users; run chmod 600 on it", path)
    public = PublicKey(key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))
    return SigningKey(key, public, path)


def _create_private(path: Path) -> None:
    """Write a new private key to ``path`` (mode 0600) unless one appears there first (atomic, no overwrite)."""
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    tmp = path.with_name(f".tmp-{secrets.token_hex(6)}-{path.name}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)  # fails if another process created the key meanwhile: keep theirs
        except FileExistsError:
            pass
        except OSError:  # file systems without hard links
            if not path.exists():
                os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def installation_key() -> SigningKey:
    """The installation's signing key, created on first use.

    Raises:
        ProvenanceError: The key folder cannot be created or the key file is unreadable.
    """
    folder = key_dir()
    path = folder / PRIVATE_KEY_FILE
    if not path.exists():
        try:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            _create_private(path)
        except OSError as err:
            raise ProvenanceError(
                f"{folder}: cannot create the provenance signing key ({err}); set {KEY_DIR_ENV} to a writable folder"
            ) from err
        logger.info("created the provenance signing key %s", path)
    key = _load_private(path)
    public_path = key.public_path
    with contextlib.suppress(OSError):
        if not public_path.is_file() or public_path.read_bytes() != key.public.pem():
            tmp = public_path.with_name(f".tmp-{secrets.token_hex(6)}-{public_path.name}")
            tmp.write_bytes(key.public.pem())
            os.replace(tmp, public_path)
    return key


def installation_public_key() -> PublicKey | None:
    """The installation's public key, or ``None`` if no key was created yet (never creates one)."""
    path = key_dir() / PRIVATE_KEY_FILE
    return _load_private(path).public if path.exists() else None


def _unsigned(record: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != "signature"}


def sign_record(record: Mapping[str, Any], key: SigningKey | None = None) -> dict[str, Any]:
    """A copy of ``record`` with ``signature`` set (any previous one replaced); default key: the installation's."""
    key = key or installation_key()
    body = _unsigned(record)
    value = key.sign(canonical_json(body))
    return {**body, "signature": {"alg": SIGNATURE_ALGORITHM, "key_id": key.public.key_id,
                                  "public_key": key.public.b64, "value": _b64(value)}}


@dataclass(frozen=True)
class SignatureCheck:
    """Outcome of :func:`check_signature`: ``valid``, ``invalid`` (forged or damaged) or ``absent``."""

    state: Literal["valid", "invalid", "absent"]
    key: PublicKey | None = None
    reason: str = ""


def check_signature(record: Mapping[str, Any]) -> SignatureCheck:
    """Check the record's own signature against the public key it names (trust is decided elsewhere)."""
    block = record.get("signature")
    if block is None:
        return SignatureCheck("absent", reason="the record carries no signature")
    if not isinstance(block, Mapping):
        return SignatureCheck("invalid", reason="signature is not an object")
    if block.get("alg") != SIGNATURE_ALGORITHM:
        return SignatureCheck("invalid", reason=f"unknown signature algorithm {block.get('alg')!r}")
    try:
        raw = _unb64(block.get("public_key"), "public_key")
        value = _unb64(block.get("value"), "signature value")
    except ValueError as err:
        return SignatureCheck("invalid", reason=str(err))
    if len(raw) != 32:
        return SignatureCheck("invalid", reason="public_key is not a 32-byte Ed25519 key")
    key = PublicKey(raw)
    if block.get("key_id") != key.key_id:
        return SignatureCheck("invalid", key, f"key_id {block.get('key_id')!r} is not the id of the public key ({key.key_id})")
    try:
        data = canonical_json(_unsigned(record))
    except ProvenanceError as err:
        return SignatureCheck("invalid", key, str(err))
    if not key.verify(value, data):
        return SignatureCheck("invalid", key, f"signature by {key.key_id} does not match the record's content")
    return SignatureCheck("valid", key)
