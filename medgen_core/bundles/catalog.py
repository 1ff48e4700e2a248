"""Finding bundles: the ones shipped in the repository's ``monai_bundles/`` and the user's bundle directory.

A user bundle never replaces a built-in one by name: the built-in bundles are MedGen's default models
(``medgen upscale`` without ``--bundle``), so a user bundle whose metadata name equals a built-in's is
left out of the name lookup, with one warning line on stderr that says how to run it (by its folder).
``medgen bundle install`` refuses such a name unless asked explicitly (:mod:`medgen_core.bundles.sharing`).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medgen_core.errors import BundleError

__all__ = ["BundleInfo", "builtin_bundle_dir", "builtin_bundle_names", "user_bundle_dir", "discover_bundles", "get_bundle", "read_metadata"]

_WARNED: set[str] = set()


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
        meta = json.loads(path.read_text(encoding="utf-8"))
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


def builtin_bundle_names() -> set[str]:
    """Names (from their metadata) of the bundles shipped with MedGen."""
    return set(_scan(builtin_bundle_dir(), "builtin"))


def discover_bundles() -> dict[str, BundleInfo]:
    """All bundles by name. A built-in bundle wins over a user bundle of the same name (which is then
    reachable by its folder only); each such user bundle is reported once per process on stderr."""
    bundles = _scan(builtin_bundle_dir(), "builtin")
    for name, info in _scan(user_bundle_dir(), "user").items():
        if name not in bundles:
            bundles[name] = info
        elif str(info.path) not in _WARNED:
            _WARNED.add(str(info.path))
            sys.stderr.write(f"medgen: warning: the user bundle {info.path} has the name of the built-in bundle {name!r} and does not "
                             f"replace it; {name!r} is the built-in one (run yours with its folder, --bundle {info.path})\n")
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
