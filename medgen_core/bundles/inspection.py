"""Inspect a bundle's configs before anything in them runs, on every route that runs one.

A bundle config is a program (``_target_``, ``$`` expressions, logging INI files that
``logging.config.fileConfig`` evaluates), so every route that parses one calls
:func:`require_inspected` first: :func:`~medgen_core.bundles.runner.run_bundle_inference` (``medgen
upscale``, ``translate``, ``genseg segment``, ``bundle run``, ``demo``),
:func:`~medgen_core.bundles.generators.bundle_network` (bundles as augmentation generators), the CVAE
and lab parsers, :func:`~medgen_core.bundles.runner.training_parser`, and ``medgen bundle check``
before MONAI's commands (:func:`~medgen_core.bundles.conformance.run_checks`).

Trust model:

* **Built-in bundles** (a real folder directly inside a folder of :func:`~medgen_core.bundles.catalog.builtin_bundle_dirs`,
  not a symbolic link, with no link in its ``configs/``) ship with MedGen and are trusted as its code is
  (``MEDGEN_BUILTIN_BUNDLES``, which moves that folder, is trusted configuration like ``PYTHONPATH``).
* **Everything else** is inspected with :func:`~medgen_core.bundles.config_safety.check_bundle_configs`:
  installed bundles (their files may have changed since ``install``), ``--bundle FOLDER``, a folder
  symlinked into the user bundle folder, a copy of a built-in anywhere else. The result is cached by
  :func:`config_digest` (a sha256 over the names of all files and the bytes of every config, logging or
  code file), so a second run costs a hash of a few small files.
* A bundle installed with ``--trust`` runs although it fails the inspection when its current
  :func:`config_digest` equals the one recorded in the local zoo index at install time: the user
  trusted exactly these files. Any change brings the inspection back.

The inspection is a guard, not a sandbox (see :mod:`medgen_core.bundles.config_safety`).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from medgen_core.bundles.catalog import BundleInfo, builtin_bundle_dirs, read_metadata
from medgen_core.bundles.config_safety import CODE_SUFFIXES, check_bundle_configs
from medgen_core.bundles.zoo_index import read_zoo_index
from medgen_core.errors import BundleError

__all__ = ["INSPECTED_SUFFIXES", "config_digest", "inspect_bundle", "is_builtin", "require_inspected", "trusted_at_install"]

INSPECTED_SUFFIXES = (".json", ".yaml", ".yml", ".conf", ".ini", *CODE_SUFFIXES)
_SKIP_TOP = ("eval", "runs")
_CLEAN: set[str] = set()  # digests of bundle contents that passed the inspection in this process


def is_builtin(root: str | Path) -> bool:
    """Whether ``root`` is a built-in bundle: a real folder directly inside a built-in bundle folder (the
    installed package data or the clone's ``monai_bundles/``), not reached through a symbolic link, with no
    symbolic link among its configs."""
    path = Path(root)
    if path.is_symlink():
        return False
    for _, builtin in builtin_bundle_dirs():
        try:
            real, home = path.resolve(strict=True), builtin.resolve(strict=True)
        except OSError:
            continue
        if real.parent != home or Path(os.path.abspath(path)).parent.resolve() != home or (home / real.name).is_symlink():
            continue
        configs = real / "configs"
        return configs.is_dir() and not any(p.is_symlink() for p in configs.rglob("*"))
    return False


def config_digest(root: str | Path) -> str:
    """sha256 over every entry of a bundle (name and kind) and the bytes of every inspected file
    (:data:`INSPECTED_SUFFIXES`); weights are covered by their own sha256 check, not here."""
    root = Path(root).resolve()
    digest = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        rel_dir = Path(dirpath).relative_to(root)
        if rel_dir.parts and rel_dir.parts[0] in _SKIP_TOP:
            dirnames[:] = []
            continue
        dirnames.sort()
        for name in sorted(filenames) + [d for d in dirnames if (Path(dirpath) / d).is_symlink()]:
            path = Path(dirpath) / name
            rel = (rel_dir / name).as_posix()
            if path.is_symlink():
                digest.update(f"L {rel} -> {os.readlink(path)}\n".encode("utf-8", "surrogatepass"))
            elif path.suffix.lower() in INSPECTED_SUFFIXES:
                digest.update(f"F {rel} {hashlib.sha256(path.read_bytes()).hexdigest()}\n".encode("utf-8", "surrogatepass"))
            else:
                digest.update(f"D {rel}\n".encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def inspect_bundle(root: str | Path) -> tuple[str, list[str]]:
    """``(digest, problems)`` of a bundle folder; a clean digest is remembered for this process."""
    digest = config_digest(root)
    if digest in _CLEAN:
        return digest, []
    problems = check_bundle_configs(Path(root).resolve())
    if not problems:
        _CLEAN.add(digest)
    return digest, problems


def trusted_at_install(root: str | Path, digest: str) -> bool:
    """Whether ``root`` was installed with ``--trust`` with exactly this :func:`config_digest`."""
    try:
        meta = read_metadata(root)
        entry = read_zoo_index().get(f"{Path(root).resolve().name}_v{meta.get('version')}", {})  # keyed by folder name
    except BundleError:
        return False
    installed = entry.get("installed_path")
    return bool(entry.get("trusted_config_sha256") == digest and installed and Path(installed).resolve() == Path(root).resolve())


def require_inspected(bundle: BundleInfo | str | Path, trust: bool = False) -> None:
    """Raise :class:`BundleError` unless the bundle is built in, passes the config inspection, was trusted
    at install with its current configs, or ``trust`` is given (the caller's explicit ``--trust``)."""
    root = Path(bundle.path if isinstance(bundle, BundleInfo) else bundle)
    if trust or is_builtin(root):
        return
    digest, problems = inspect_bundle(root)
    if not problems or trusted_at_install(root, digest):
        return
    more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
    raise BundleError(
        f"bundle {root}: refusing to run it, its configs would run code outside the allowed libraries (monai, medgen_core, torch, "
        f"numpy): {'; '.join(problems[:3])}{more}. Inspect it and install it with `medgen bundle install --trust` only if you trust its author."
    )
