"""The trust list: which signing keys ``medgen provenance verify`` reports as trusted.

Kept as ``trusted_keys.json`` in :func:`~medgen_core.provenance.signing.key_dir`
(``{"version": 1, "keys": {key_id: {"public_key": base64, "name": str, "added_at": UTC time}}}``), written
atomically. The installation's own key is always trusted and is not stored in the file. A key counts as
trusted only if its full public key matches the stored one, not just its id.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medgen_core.errors import ProvenanceError
from medgen_core.io import atomic_path
from medgen_core.provenance.record import utc_now
from medgen_core.provenance.signing import PublicKey, installation_public_key, key_dir, parse_public_key

__all__ = ["TRUST_FILE", "TrustedKey", "is_trusted", "trust_add", "trust_file", "trust_remove", "trusted_keys"]

TRUST_FILE = "trusted_keys.json"


@dataclass(frozen=True)
class TrustedKey:
    """One trusted key: ``name`` is a label for people, ``own`` marks the installation's key."""

    key: PublicKey
    name: str
    added_at: str | None = None
    own: bool = False


def trust_file() -> Path:
    """``<key dir>/trusted_keys.json``."""
    return key_dir() / TRUST_FILE


def _read_entries() -> dict[str, dict[str, Any]]:
    path = trust_file()
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ProvenanceError(f"{path}: trust list is not valid JSON ({err})") from err
    keys = data.get("keys") if isinstance(data, dict) else None
    if not isinstance(keys, dict) or not all(isinstance(v, dict) for v in keys.values()):
        raise ProvenanceError(f"{path}: trust list must be {{\"version\": 1, \"keys\": {{key_id: {{...}}}}}}")
    return keys


def _write_entries(entries: dict[str, dict[str, Any]]) -> None:
    path = trust_file()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps({"version": 1, "keys": entries}, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def trusted_keys() -> dict[str, TrustedKey]:
    """Trusted keys by id: the installation's own key (if created) and the trust list's entries.

    Raises:
        ProvenanceError: The trust list is unreadable or holds a malformed key.
    """
    found: dict[str, TrustedKey] = {}
    for key_id, entry in _read_entries().items():
        key = parse_public_key(str(entry.get("public_key", "")).encode("ascii", "replace"), f"{trust_file()} entry {key_id}")
        if key.key_id != key_id:
            raise ProvenanceError(f"{trust_file()}: entry {key_id} holds the key {key.key_id}; remove it and add the key again")
        found[key_id] = TrustedKey(key, str(entry.get("name", "")), entry.get("added_at"))
    own = installation_public_key()
    if own is not None:
        found[own.key_id] = TrustedKey(own, "this installation", None, own=True)
    return found


def is_trusted(key: PublicKey) -> bool:
    """``True`` if ``key`` (its full public key) is the installation's own key or on the trust list."""
    entry = trusted_keys().get(key.key_id)
    return entry is not None and entry.key.raw == key.raw


def trust_add(path: str | Path, name: str | None = None) -> PublicKey:
    """Add the public key in file ``path`` (PEM, OpenSSH or raw base64) to the trust list.

    Raises:
        ProvenanceError: ``path`` is missing or not an Ed25519 public key.
    """
    path = Path(path)
    if not str(path).strip() or not path.is_file():
        raise ProvenanceError(f"{path}: key file not found (expected a public key file such as medgen_ed25519.pub)")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ProvenanceError(f"{path}: cannot read the key file ({err})") from err
    key = parse_public_key(data, str(path))
    entries = _read_entries()
    entries[key.key_id] = {"public_key": key.b64, "name": name or path.name, "added_at": utc_now()}
    _write_entries(entries)
    return key


def trust_remove(key_id: str) -> PublicKey:
    """Remove a key from the trust list by id.

    Raises:
        ProvenanceError: No such key on the list, or it is the installation's own key (always trusted).
    """
    own = installation_public_key()
    if own is not None and key_id == own.key_id:
        raise ProvenanceError(f"{key_id}: is this installation's own key, which is always trusted; nothing removed")
    entries = _read_entries()
    if key_id not in entries:
        listed = ", ".join(sorted(entries)) or "none"
        raise ProvenanceError(f"{key_id}: not on the trust list {trust_file()} (listed: {listed})")
    entry = entries.pop(key_id)
    _write_entries(entries)
    return parse_public_key(str(entry.get("public_key", "")).encode("ascii", "replace"), key_id)
