"""The local zoo index ``<user bundle dir>/model_info.json``: packed and installed bundles, shaped like the MONAI Model Zoo's ``model_info.json``.

Written by :mod:`medgen_core.bundles.sharing` (pack, install), read there and by
:func:`medgen_core.bundles.inspection.trusted_at_install` (the digest of configs installed with ``--trust``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medgen_core.bundles.catalog import user_bundle_dir
from medgen_core.errors import BundleError
from medgen_core.io import atomic_path

__all__ = ["INDEX_NAME", "read_zoo_index", "record_in_index"]

INDEX_NAME = "model_info.json"


def read_zoo_index(bundle_dir: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """The local zoo index ``{"<name>_v<version>": {"name", "version", "checksum", "source", ...}}``."""
    path = Path(bundle_dir or user_bundle_dir()) / INDEX_NAME
    if not path.is_file():
        return {}
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise BundleError(f"{path}: the local zoo index is not valid JSON ({err}); fix or delete it.") from err
    return index if isinstance(index, dict) else {}


def record_in_index(name: str, version: str, checksum: str | None, source: str, bundle_dir: str | Path | None = None, **extra: Any) -> Path:
    """Add or replace the entry ``<name>_v<version>`` in the local zoo index (atomic write)."""
    directory = Path(bundle_dir or user_bundle_dir())
    directory.mkdir(parents=True, exist_ok=True)
    index = read_zoo_index(directory)
    index[f"{name}_v{version}"] = {"name": name, "version": version, "checksum": checksum, "source": source, **extra}
    path = directory / INDEX_NAME
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(index, indent=4) + "\n", encoding="utf-8")
    return path
