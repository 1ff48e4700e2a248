"""Finding bundles: the ones shipped in the repository's ``monai_bundles/`` and the user's bundle directory."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medgen_core.errors import BundleError

__all__ = ["BundleInfo", "builtin_bundle_dir", "user_bundle_dir", "discover_bundles", "get_bundle", "read_metadata"]


def builtin_bundle_dir() -> Path | None:
    """``monai_bundles/`` next to the ``medgen_core`` package (a source or editable install), if present.

    ``MEDGEN_BUILTIN_BUNDLES`` overrides it.
    """
    env = os.environ.get("MEDGEN_BUILTIN_BUNDLES")
    path = Path(env) if env else Path(__file__).resolve().parents[2] / "monai_bundles"
    return path if path.is_dir() else None


def user_bundle_dir() -> Path:
    """Where ``medgen bundle install`` puts bundles: ``$MEDGEN_BUNDLE_DIR`` or ``~/.medgen/bundles``."""
    return Path(os.environ.get("MEDGEN_BUNDLE_DIR", Path.home() / ".medgen" / "bundles"))


def read_metadata(bundle_root: str | Path) -> dict[str, Any]:
    """Parse ``configs/metadata.json`` of a bundle with a clear error when it is missing or invalid."""
    path = Path(bundle_root) / "configs" / "metadata.json"
    if not path.is_file():
        raise BundleError(f"bundle {bundle_root}: configs/metadata.json is missing (every MONAI bundle needs one).")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise BundleError(f"bundle {bundle_root}: configs/metadata.json is not valid JSON: {err}") from err
    if not isinstance(meta, dict):
        raise BundleError(f"bundle {bundle_root}: configs/metadata.json must hold a JSON object.")
    return meta


@dataclass
class BundleInfo:
    """A bundle on disk: its root folder, parsed metadata and where it came from (``builtin``/``user``/``path``)."""

    name: str
    path: Path
    metadata: dict[str, Any] = field(repr=False)
    source: str

    @property
    def version(self) -> str:
        return str(self.metadata.get("version", "?"))

    @property
    def task(self) -> str:
        return str(self.metadata.get("task", ""))

    @property
    def medgen_task(self) -> str:
        """MedGen's action for this bundle: ``upscale``, ``translate``, ``augment`` or ``segment``."""
        return str(self.metadata.get("medgen", {}).get("action", ""))

    @property
    def variants(self) -> dict[str, dict[str, Any]]:
        return dict(self.metadata.get("medgen", {}).get("variants", {}))

    @property
    def bundle_id(self) -> str:
        return f"{self.name}@{self.version}"

    def config(self, name: str) -> Path:
        """Path of ``configs/<name>.json``, with a clear error when the bundle lacks it."""
        path = self.path / "configs" / f"{name}.json"
        if not path.is_file():
            raise BundleError(f"bundle {self.name}: configs/{name}.json is missing.")
        return path


def _scan(root: Path | None, source: str) -> dict[str, BundleInfo]:
    found: dict[str, BundleInfo] = {}
    if root is None or not root.is_dir():
        return found
    for meta in sorted(root.glob("*/configs/metadata.json")):
        bundle_root = meta.parents[1]
        metadata = read_metadata(bundle_root)
        name = str(metadata.get("name", bundle_root.name))
        found[name] = BundleInfo(name=name, path=bundle_root, metadata=metadata, source=source)
    return found


def discover_bundles() -> dict[str, BundleInfo]:
    """All bundles by name; a user-installed bundle shadows a built-in one of the same name."""
    bundles = _scan(builtin_bundle_dir(), "builtin")
    bundles.update(_scan(user_bundle_dir(), "user"))
    return bundles


def get_bundle(name_or_path: str | Path) -> BundleInfo:
    """A bundle by name (see :func:`discover_bundles`) or by the path of its root folder."""
    path = Path(name_or_path)
    if (path / "configs" / "metadata.json").is_file():
        meta = read_metadata(path)
        return BundleInfo(name=str(meta.get("name", path.name)), path=path.resolve(), metadata=meta, source="path")
    bundles = discover_bundles()
    if str(name_or_path) not in bundles:
        known = ", ".join(sorted(bundles)) or "none"
        raise BundleError(f"no bundle named {name_or_path!r}; available: {known}.")
    return bundles[str(name_or_path)]
