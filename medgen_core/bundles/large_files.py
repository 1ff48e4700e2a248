"""``large_files.yml``: the files a bundle's configs need, with hashes, as the Model Zoo lists them.

The zoo's CI and MONAI's ``python -m monai.bundle download_large_files`` read ``large_files`` entries
``{path, url, hash_val, hash_type}`` and call ``monai.apps.utils.download_url(**entry)``: a file that is
already at ``path`` with the right hash is kept and nothing is downloaded. MedGen's bundles ship their
weights, so every entry has ``url: ""`` (no URL, never a download) and a sha256; the file must be present.

    python scripts/write_large_files.py monai_bundles/brain_tissue_genseg     # (re)write it from models/
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from medgen_core.errors import BundleError
from medgen_core.provenance import sha256_file

__all__ = ["LARGE_FILE_NAMES", "check_large_files", "find_large_files", "large_file_entries", "read_large_files", "write_large_files"]

# the names the zoo's ci/verify_bundle.py looks for, in its order: when several exist, the last one wins
LARGE_FILE_NAMES = ("large_files.json", "large_files.yaml", "large_files.yml")
_HEADER = (
    "# Files this bundle needs, with their hashes (the MONAI Model Zoo's large_files format).\n"
    "# url is empty: every file ships inside the bundle and nothing is downloaded; MONAI's download_large_files\n"
    "# and the zoo's CI find each file present with a matching hash and skip it.\n"
    "# Rewrite after changing weights: python scripts/write_large_files.py <bundle folder>\n"
)


_HASHES = ("md5", "sha1", "sha256", "sha512")  # what MONAI's check_hash supports


def _digest(path: Path, hash_type: str) -> str:
    import hashlib

    h = hashlib.new(hash_type.lower())
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def find_large_files(bundle_root: str | Path) -> Path | None:
    """The bundle's ``large_files.{json,yaml,yml}`` as the zoo picks it (the last of those names present), or None."""
    found = None
    for name in LARGE_FILE_NAMES:
        if (Path(bundle_root) / name).is_file():
            found = Path(bundle_root) / name
    return found


def read_large_files(path: str | Path) -> list[Any]:
    """The ``large_files`` list of a JSON/YAML file (parsed as data: nothing in it is evaluated)."""
    import json

    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as err:
        raise BundleError(f"{path.name}: cannot be read as {'JSON' if path.suffix == '.json' else 'YAML'}: {err}") from err
    if not isinstance(data, dict) or not isinstance(data.get("large_files"), list):
        raise BundleError(f"{path.name}: expected a mapping with a 'large_files' list, got {type(data).__name__}")
    return data["large_files"]


def _inside(root: Path, rel: Any) -> Path | None:
    if not isinstance(rel, str) or not rel or os.path.isabs(rel):
        return None
    target = (root / rel).resolve()
    return target if target.is_relative_to(root.resolve()) else None


def check_large_files(bundle_root: str | Path, require_listed: tuple[Path, ...] = ()) -> list[str]:
    """Problems of the bundle's large-files list (empty = fine).

    Every entry needs ``path`` (inside the bundle), ``url`` (the zoo's ``download_url(**entry)`` needs the
    key; ``""`` for a shipped file), and a hash that the present file matches; an http URL is refused (the
    zoo expects a stable https host). Files in ``require_listed`` (e.g. every weight file) must be listed.
    """
    root = Path(bundle_root)
    path = find_large_files(root)
    if path is None:
        return [f"large_files.yml is missing (list every file in models/ with path, url: \"\", hash_val and hash_type: "
                f"python scripts/write_large_files.py {root})"]
    try:
        entries = read_large_files(path)
    except BundleError as err:
        return [str(err)]
    problems, listed = [], set()
    for i, entry in enumerate(entries):
        where = f"{path.name} entry {i}"
        if not isinstance(entry, dict):
            problems.append(f"{where}: expected a mapping with path, url, hash_val, hash_type, got {type(entry).__name__}")
            continue
        target = _inside(root, entry.get("path"))
        if target is None:
            problems.append(f"{where}: path {entry.get('path')!r} must be a relative path inside the bundle")
            continue
        where = f"{path.name} entry {entry['path']!r}"
        listed.add(target)
        url = entry.get("url")
        if not isinstance(url, str):
            problems.append(f"{where}: has no url key (the zoo calls download_url(**entry), which needs one; use url: \"\" for a file that ships in the bundle)")
        elif url and not url.startswith("https://"):
            problems.append(f"{where}: url {url!r} is not an https URL")
        hash_val, hash_type = entry.get("hash_val") or None, entry.get("hash_type") or "sha256"
        if hash_val is None:
            problems.append(f"{where}: no hash_val, so the file cannot be verified")
        if not target.is_file():
            problems.append(f"{where}: the file is missing" + (f" (it would be downloaded from {url})" if url else " and there is no url to fetch it from"))
        elif hash_type.lower() not in _HASHES:
            problems.append(f"{where}: hash_type {hash_type!r} is not one of {sorted(_HASHES)}")
        elif hash_val is not None and _digest(target, hash_type) != str(hash_val).lower():
            problems.append(f"{where}: the file does not match its {hash_type} {hash_val} (rewrite the list: python scripts/write_large_files.py {root})")
    for need in require_listed:
        if Path(need).resolve() not in listed:
            problems.append(f"{path.name}: {Path(need).resolve().relative_to(root.resolve()).as_posix()} is not listed")
    return problems


def large_file_entries(bundle_root: str | Path) -> list[dict[str, str]]:
    """One ``{path, url: "", hash_val: sha256, hash_type: "sha256"}`` entry per weight file in ``models/``."""
    from medgen_core.bundles.weights import weight_files

    root = Path(bundle_root)
    return [{"path": p.relative_to(root).as_posix(), "url": "", "hash_val": sha256_file(p), "hash_type": "sha256"} for p in weight_files(root)]


def write_large_files(bundle_root: str | Path) -> Path:
    """(Re)write ``large_files.yml`` from the bundle's weight files (temporary file, then rename)."""
    root = Path(bundle_root)
    entries = large_file_entries(root)
    if not entries:
        raise BundleError(f"bundle {root}: models/ has no weight files to list in large_files.yml")
    lines = [_HEADER + "large_files:"]
    for e in entries:
        lines += [f'  - path: "{e["path"]}"', '    url: ""', f'    hash_val: "{e["hash_val"]}"', f'    hash_type: "{e["hash_type"]}"']
    out, tmp = root / "large_files.yml", root / ".tmp-large_files.yml"
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(tmp, out)
    return out
