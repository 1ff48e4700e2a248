"""Finding bundles. A bundle is keyed by its **folder name**; the metadata ``name`` is a display label
(Model Zoo bundles use strings such as ``"MedNIST GAN"`` there).

Lookup order; the first place that holds a bundle of a given name wins, and later copies are *hidden*
(``medgen bundle list`` names them):

1. ``path``: an explicit folder (``--bundle FOLDER``; :func:`get_bundle` with a path);
2. ``env``: ``MEDGEN_BUNDLE_PATH``, folders separated by :data:`os.pathsep`, each a folder of bundles or one
   bundle folder; an entry that is not a folder is an error (one line);
3. ``user``: ``$MEDGEN_BUNDLE_DIR`` or ``~/.medgen/bundles`` (where ``medgen bundle install`` puts bundles);
4. ``package``: the installed package data: the repository's ``monai_bundles/`` installed as the package
   ``medgen_bundles`` (found through :mod:`importlib.resources`);
5. ``source``: ``monai_bundles/`` beside the ``medgen_core`` package (a clone). An editable install maps 4
   onto this same folder, which is then listed once, as ``source``.

Built-in bundles (4 and 5; ``MEDGEN_BUILTIN_BUNDLES`` replaces both with one folder) are MedGen's default
models (``medgen upscale`` without ``--bundle``), so an ``env`` or ``user`` bundle never replaces one by name:
it is hidden behind the built-in, with one warning line on stderr that says how to run it (by its folder),
and ``medgen bundle install`` refuses such a name unless asked explicitly (:mod:`medgen_core.bundles.sharing`).
A bundle folder whose ``configs/metadata.json`` is not valid JSON is left out with one line; the others
are still found.
"""

from __future__ import annotations

import importlib.resources
import json
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medgen_core.errors import BundleError

__all__ = ["BUILTIN_SOURCES", "SOURCES", "BundleInfo", "Catalog", "builtin_bundle_dir", "builtin_bundle_dirs", "builtin_bundle_names",
           "discover_bundles", "get_bundle", "package_bundle_dir", "read_metadata", "scan_catalog", "search_roots", "source_bundle_dir",
           "user_bundle_dir"]

SOURCES = ("path", "env", "user", "package", "source")
BUILTIN_SOURCES = ("package", "source")
PACKAGE = "medgen_bundles"  # import name of the installed monai_bundles/ (setup.py maps it)
_WARNED: set[str] = set()


def package_bundle_dir() -> Path | None:
    """The folder of the installed package :data:`PACKAGE` (the wheel's bundles), if it is importable from disk."""
    try:
        root = importlib.resources.files(PACKAGE)
    except (ImportError, TypeError, ValueError):
        return None
    return root if isinstance(root, Path) and root.is_dir() else None  # a zip import or a namespace package: not usable


def source_bundle_dir() -> Path | None:
    """``monai_bundles/`` next to the ``medgen_core`` package (a clone or an editable install), if present."""
    path = Path(__file__).resolve().parents[2] / "monai_bundles"
    return path if path.is_dir() else None


def builtin_bundle_dirs() -> list[tuple[str, Path]]:
    """``[(source, folder)]`` of the built-in bundles, in lookup order: ``package`` then ``source`` (one entry
    when they are the same folder). ``MEDGEN_BUILTIN_BUNDLES`` replaces both (trusted configuration, like ``PYTHONPATH``)."""
    env = os.environ.get("MEDGEN_BUILTIN_BUNDLES")
    if env:
        return [("source", Path(env))] if Path(env).is_dir() else []
    package, source = package_bundle_dir(), source_bundle_dir()
    if package is not None and source is not None and package.resolve() == source.resolve():
        package = None  # an editable install: the package data is the clone's folder
    return [(kind, path) for kind, path in (("package", package), ("source", source)) if path is not None]


def builtin_bundle_dir() -> Path | None:
    """The first folder of :func:`builtin_bundle_dirs` (the one whose bundles win), or ``None``."""
    dirs = builtin_bundle_dirs()
    return dirs[0][1] if dirs else None


def user_bundle_dir() -> Path:
    """Where ``medgen bundle install`` puts bundles: ``$MEDGEN_BUNDLE_DIR`` or ``~/.medgen/bundles``."""
    return Path(os.environ.get("MEDGEN_BUNDLE_DIR", Path.home() / ".medgen" / "bundles"))


def env_bundle_dirs() -> list[Path]:
    """The folders of ``MEDGEN_BUNDLE_PATH`` (empty entries skipped), each checked to be a folder."""
    folders = []
    for entry in os.environ.get("MEDGEN_BUNDLE_PATH", "").split(os.pathsep):
        if not entry.strip():
            continue
        path = Path(entry).expanduser()
        if not path.is_dir():
            why = "is a file" if path.exists() else "does not exist"
            raise BundleError(f"MEDGEN_BUNDLE_PATH entry {entry!r} {why}; expected a folder of bundles or a bundle folder "
                              f"(entries separated by {os.pathsep!r}); fix or unset MEDGEN_BUNDLE_PATH.")
        folders.append(Path(os.path.abspath(path)))
    return folders


def search_roots() -> list[tuple[str, Path]]:
    """``[(source, folder)]`` searched for bundles, in lookup order (``env``, ``user``, ``package``, ``source``)."""
    return [("env", p) for p in env_bundle_dirs()] + [("user", Path(os.path.abspath(user_bundle_dir())))] + builtin_bundle_dirs()


def read_metadata(bundle_root: str | Path) -> dict[str, Any]:
    """Parse ``configs/metadata.json`` of a bundle with a clear error when it is missing or invalid."""
    path = Path(bundle_root) / "configs" / "metadata.json"
    if not path.is_file():
        raise BundleError(f"bundle {bundle_root}: configs/metadata.json is missing (every MONAI bundle needs one).")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise BundleError(f"bundle {bundle_root}: configs/metadata.json is not valid JSON: {err}") from err
    except (OSError, UnicodeDecodeError) as err:
        raise BundleError(f"bundle {bundle_root}: configs/metadata.json cannot be read: {err}") from err
    if not isinstance(meta, dict):
        raise BundleError(f"bundle {bundle_root}: configs/metadata.json must hold a JSON object, not {type(meta).__name__}.")
    return meta


@dataclass
class BundleInfo:
    """A bundle on disk: its key (folder name), root folder, parsed metadata, where it came from (one of
    :data:`SOURCES`) and the folders of same-named bundles later in the lookup order that it hides."""

    name: str
    path: Path
    metadata: dict[str, Any] = field(repr=False)
    source: str
    hidden: list[Path] = field(default_factory=list)

    @property
    def display_name(self) -> str:
        """The metadata's ``name`` (a label), or the folder name."""
        return str(self.metadata.get("name") or self.name)

    @property
    def version(self) -> str:
        return str(self.metadata.get("version", "?"))

    @property
    def task(self) -> str:
        return str(self.metadata.get("task", ""))

    @property
    def medgen_task(self) -> str:
        """MedGen's action for this bundle: ``upscale``, ``translate``, ``augment`` or ``segment``."""
        medgen = self.metadata.get("medgen", {})
        return str(medgen.get("action", "")) if isinstance(medgen, dict) else ""

    @property
    def variants(self) -> dict[str, dict[str, Any]]:
        medgen = self.metadata.get("medgen", {})
        return dict(medgen.get("variants", {})) if isinstance(medgen, dict) else {}

    @property
    def bundle_id(self) -> str:
        return f"{self.name}@{self.version}"

    def config(self, name: str) -> Path:
        """Path of ``configs/<name>.json``, with a clear error when the bundle lacks it."""
        path = self.path / "configs" / f"{name}.json"
        if not path.is_file():
            raise BundleError(f"bundle {self.name}: configs/{name}.json is missing.")
        return path


@dataclass
class Catalog:
    """What a scan found: bundles by key, and one line per problem (a broken bundle folder, a bundle hidden
    behind a built-in)."""

    bundles: dict[str, BundleInfo]
    problems: list[str] = field(default_factory=list)


def _bundle_folders(root: Path) -> list[Path]:
    """``root`` itself if it is a bundle, else its sub-folders that hold ``configs/metadata.json`` (hidden ones,
    such as ``.install-*`` staging folders, left out)."""
    if (root / "configs" / "metadata.json").is_file():
        return [root]
    try:
        children = sorted(root.iterdir())
    except OSError:
        return []
    return [c for c in children if not c.name.startswith(".") and (c / "configs" / "metadata.json").is_file()]


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def scan_catalog(explicit: Iterable[str | Path] = ()) -> Catalog:
    """Scan ``explicit`` bundle folders (source ``path``) and :func:`search_roots`, in lookup order.

    The first bundle of each key wins; built-in keys are claimed first, so an ``env`` or ``user`` copy of a
    built-in is hidden behind it (and reported in ``problems``). Raises :class:`BundleError` for a bad
    ``MEDGEN_BUNDLE_PATH`` entry or an explicit folder that is not a readable bundle.
    """
    catalog = Catalog({})
    places: list[tuple[str, Path]] = []
    for folder in explicit:
        path = Path(folder).expanduser()
        if not (path / "configs" / "metadata.json").is_file():
            raise BundleError(f"{folder}: not a bundle folder (expected configs/metadata.json inside it).")
        read_metadata(path)  # an explicit folder must be readable: its error is the user's to fix now
        places.append(("path", Path(os.path.abspath(path))))
    roots = search_roots()
    builtin = [(s, f) for s, r in roots if s in BUILTIN_SOURCES for f in _bundle_folders(r)]
    others = [(s, f) for s, r in roots if s not in BUILTIN_SOURCES for f in _bundle_folders(r)]
    claims = places + builtin + others  # explicit folders first, then built-ins claim their names
    for source, folder in claims:
        key = folder.name
        try:
            metadata = read_metadata(folder)
        except BundleError as err:
            catalog.problems.append(f"skipped the bundle folder {folder} ({source}): {str(err).removeprefix(f'bundle {folder}: ')}")
            continue
        winner = catalog.bundles.get(key)
        if winner is None:
            catalog.bundles[key] = BundleInfo(name=key, path=folder, metadata=metadata, source=source)
            continue
        if _same(winner.path, folder):
            continue  # the same folder reached twice (e.g. MEDGEN_BUNDLE_PATH naming the user folder)
        winner.hidden.append(folder)
        if winner.source in BUILTIN_SOURCES and source not in BUILTIN_SOURCES:
            catalog.problems.append(f"the {source} bundle {folder} has the name of the built-in bundle {key!r} and does not replace it; "
                                    f"{key!r} is the built-in one (run yours with its folder, --bundle {folder})")
    catalog.bundles = dict(sorted(catalog.bundles.items()))
    return catalog


def warn_once(lines: Sequence[str], always: bool = False) -> None:
    """Write each line to stderr as a ``medgen: warning:``, once per process (``always``: now, and not again)."""
    for line in lines:
        if always or line not in _WARNED:
            _WARNED.add(line)
            sys.stderr.write(f"medgen: warning: {line}\n")


def builtin_bundle_names() -> set[str]:
    """Keys (folder names) of the bundles shipped with MedGen."""
    return {f.name for _, root in builtin_bundle_dirs() for f in _bundle_folders(root)}


def discover_bundles() -> dict[str, BundleInfo]:
    """All bundles by key (see the module docstring for the order); each problem is reported once per process on stderr."""
    catalog = scan_catalog()
    warn_once(catalog.problems)
    return catalog.bundles


def get_bundle(name_or_path: str | Path) -> BundleInfo:
    """A bundle by the path of its root folder (source ``path``) or by key (see :func:`discover_bundles`)."""
    path = Path(name_or_path).expanduser()
    if (path / "configs" / "metadata.json").is_file():
        root = path.resolve()
        return BundleInfo(name=root.name, path=root, metadata=read_metadata(path), source="path")
    bundles = discover_bundles()
    if str(name_or_path) in bundles:
        return bundles[str(name_or_path)]
    known = ", ".join(sorted(bundles)) or "none"
    if path.exists() or os.sep in str(name_or_path) or (os.altsep and os.altsep in str(name_or_path)):
        raise BundleError(f"{name_or_path}: not a bundle folder (expected configs/metadata.json inside it); bundles by name: {known}.")
    raise BundleError(f"no bundle named {name_or_path!r}; available: {known}.")
