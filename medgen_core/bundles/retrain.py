"""Retrain a bundle on the user's data into a copy, and make retrained weights usable (``medgen train``, ``medgen bundle rehash``).

A bundle's weights are loaded only when their sha256 equals the one in ``configs/metadata.json``
(:mod:`medgen_core.bundles.weights`), so weights a user trained are refused until their hashes are recorded.
:func:`rehash_bundle` records them: every ``{"file", "sha256"}`` entry whose file changed gets the new sha256 and
``"weights_origin": "user-retrained"``, ``medgen.weights_origin`` and ``medgen.retrained`` (when, which files,
what data) say so for the whole bundle, and ``large_files.yml`` is rewritten. The inference configs copy an
entry's ``weights_origin`` into every output's provenance record (``parameters.weights_origin``; ``"shipped"``
for MedGen's own weights). A built-in bundle is never rehashed: its weights are MedGen's.

:func:`retrain_bundle` is ``medgen train``: copy the bundle (never the installed one) to ``out``, run its
``configs/train.json`` through MONAI's ``ConfigWorkflow`` with the one data override (``dataset_dir``) and an
optional step budget (``num_steps``), copy the trained weights over the files its ``bundle_exports`` name, and
rehash. Running the same command again resumes from the copy's ``runs/train`` checkpoints.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medgen_core.bundles.catalog import BundleInfo, get_bundle, read_metadata
from medgen_core.errors import BundleError, TrainingDataError

__all__ = ["RETRAINED", "RehashedFile", "RetrainResult", "rehash_bundle", "retrain_bundle"]

RETRAINED = "user-retrained"
_COPY_IGNORE = shutil.ignore_patterns("runs", "eval", "__pycache__", ".tmp-*")


@dataclass
class RehashedFile:
    """One weight file whose recorded sha256 changed."""

    file: str
    old_sha256: str
    new_sha256: str


@dataclass
class RetrainResult:
    """What :func:`retrain_bundle` did: the bundle copy, the installed weight files and the training run folder."""

    bundle: Path
    run_dir: Path
    installed: dict[str, Path] = field(default_factory=dict)
    rehashed: list[RehashedFile] = field(default_factory=list)
    iterations: int = 0
    seconds: float = 0.0


def _file_entries(metadata: Any) -> list[dict[str, Any]]:
    """Every ``{"file": str, "sha256": str, ...}`` object in ``metadata`` (searched recursively)."""
    found, stack = [], [metadata]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if isinstance(item.get("file"), str) and isinstance(item.get("sha256"), str):
                found.append(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def _write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.write_text(json.dumps(data, indent=4) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _refuse_builtin(root: Path, what: str) -> None:
    from medgen_core.bundles.inspection import is_builtin

    if is_builtin(root):
        raise BundleError(f"bundle {root.name} ({root}) is built in: its weights are MedGen's shipped weights and are never {what}; "
                          f"retrain into a copy with `medgen train {root.name} --data DIR --out COPY`, or copy the folder first.")


def rehash_bundle(bundle: str | Path | BundleInfo, origin: str = RETRAINED, note: Mapping[str, Any] | None = None) -> list[RehashedFile]:
    """Record the current sha256 of every weight file named in ``configs/metadata.json`` (see the module docstring).

    Returns the files whose hash changed (empty: nothing to do, the metadata is left as it was).
    Raises :class:`BundleError` for a built-in bundle or a listed file that is missing.
    """
    from medgen_core.provenance import sha256_file

    info = bundle if isinstance(bundle, BundleInfo) else get_bundle(bundle)
    root = Path(info.path)
    _refuse_builtin(root, "rehashed")
    meta = read_metadata(root)
    changed: dict[str, RehashedFile] = {}
    for entry in _file_entries(meta):
        path = root / entry["file"]
        if not path.is_file():
            raise BundleError(f"bundle {info.name}: {entry['file']} is listed in configs/metadata.json but missing; nothing was rehashed.")
        actual = sha256_file(path)
        if actual != entry["sha256"].lower():
            changed.setdefault(entry["file"], RehashedFile(entry["file"], entry["sha256"], actual))
            entry["sha256"] = actual
            entry["weights_origin"] = origin
    if not changed:
        return []
    medgen = meta.setdefault("medgen", {})
    medgen["weights_origin"] = origin
    medgen["retrained"] = {"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "files": sorted(changed), **dict(note or {})}
    _write_json_atomic(root / "configs" / "metadata.json", meta)
    from medgen_core.bundles.large_files import find_large_files, write_large_files

    if find_large_files(root) is not None:
        write_large_files(root)
    return list(changed.values())


def _copy_bundle(src: Path, out: Path) -> None:
    """Copy ``src`` to ``out`` through a hidden sibling folder and a rename (no half copy at ``out``)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".tmp-{out.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        shutil.copytree(src, tmp, ignore=_COPY_IGNORE, symlinks=False)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _prepare_copy(info: BundleInfo, out: Path) -> bool:
    """Make ``out`` a copy of the bundle; ``True`` when ``out`` already was one (an earlier ``medgen train``: resume)."""
    if out.exists():
        meta_path = out / "configs" / "metadata.json"
        if meta_path.is_file():
            try:
                same = out.resolve() != info.path.resolve() and "retrain_of" in json.loads(meta_path.read_text(encoding="utf-8")).get("medgen", {})
            except (OSError, ValueError):
                same = False
            if same:
                return True
        if out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        else:
            raise BundleError(f"{out}: already exists and is not a copy made by `medgen train`; choose another --out (a new or empty folder).")
    _copy_bundle(info.path, out)
    meta = read_metadata(out)
    meta.setdefault("medgen", {})["retrain_of"] = {"name": info.name, "version": info.version, "source": info.source}
    _write_json_atomic(out / "configs" / "metadata.json", meta)
    return False


def _install(src: Path, target: Path) -> Path:
    tmp = target.with_name(f".tmp-{target.name}")
    shutil.copyfile(src, tmp)
    os.replace(tmp, target)
    return target


def _set_default_variants(root: Path, installed: Mapping[str, Path]) -> None:
    """A retrained variant becomes the copy's default for its scale (``medgen.default_variant``), so that the copy's
    default run uses the weights just trained."""
    meta = read_metadata(root)
    medgen = meta.get("medgen", {})
    defaults, variants = medgen.get("default_variant"), medgen.get("variants", {})
    if not isinstance(defaults, dict):
        return
    files = {p.resolve().relative_to(root.resolve()).as_posix() for p in installed.values()}
    changed = False
    for name, entry in variants.items():
        if entry.get("file") in files and "scale" in entry and defaults.get(str(entry["scale"])) != name:
            defaults[str(entry["scale"])] = name
            changed = True
    if changed:
        _write_json_atomic(root / "configs" / "metadata.json", meta)


def retrain_bundle(bundle: str | Path | BundleInfo, data: str | Path, out: str | Path | None = None, steps: int | None = None,
                   device: Any = None, overrides: Mapping[str, Any] | None = None, configs: Sequence[str] = ("train",)) -> RetrainResult:
    """Train ``bundle`` on the user's ``data`` into the copy ``out`` (default ``./<name>_retrained``) and rehash it.

    Args:
        bundle: bundle name or folder (it is never written to).
        data: the training data, ``dataset_dir`` of the bundle's train.json (a folder or a file list; the layout is in
            the bundle's docs/README.md).
        out: the bundle copy to write; an earlier copy of ``medgen train`` is reused (training resumes).
        steps: stop after this many iterations (``num_steps``); None: the bundle's full schedule.
        device: torch device (``"cpu"``, ``"cuda:0"``); None: the config's default.
        overrides: more config ids (literals), e.g. ``{"variant": "x4_mixed", "scale": 4}``.
        configs: the training configs under ``configs/``, merged in order.
    """
    from medgen_core.bundles.bundle_config import open_bundle_config, unwrapped_errors

    info = bundle if isinstance(bundle, BundleInfo) else get_bundle(bundle)
    for name in configs:
        if not Path(name).suffix:
            info.config(name)  # a bundle without train.json: one line
    data = Path(data).expanduser()
    if not data.exists():
        raise TrainingDataError(f"{data}: no such folder or file; expected the training data of {info.name} (see its docs/README.md).")
    if steps is not None and int(steps) < 1:
        raise TrainingDataError(f"--steps must be >= 1, got {steps}.")
    out = Path(os.path.abspath(Path(out).expanduser() if out is not None else Path.cwd() / f"{info.name}_retrained"))
    if out.resolve() == info.path.resolve() or info.path.resolve() in out.resolve().parents:
        raise BundleError(f"{out}: the output must not be the bundle {info.name} itself or inside it; choose another --out.")
    resumed = _prepare_copy(info, out)
    run_dir = out / "runs" / "train"
    values = {**dict(overrides or {}), "dataset_dir": str(data.resolve()), "output_dir": str(run_dir)}
    if steps is not None:
        values["num_steps"] = int(steps)
    t0 = time.time()
    try:
        parsed = open_bundle_config(out, list(configs), overrides=values, device=device)
        workflow = parsed.workflow("train")
        with unwrapped_errors():
            workflow.initialize()
            missing = workflow.check_properties()
            if missing:
                raise BundleError(f"bundle {info.name}: configs/train.json lacks MONAI's required training properties {missing}.")
            exports = workflow.parser.get_parsed_content("bundle_exports") if "bundle_exports" in workflow.parser else {}
            workflow.run()
            trainer = workflow.parser.get_parsed_content("train#trainer")
            workflow.finalize()
    except BaseException:
        from medgen_core.training.engines import checkpoint_files

        if not resumed and not checkpoint_files(run_dir):  # nothing to resume from: leave no half-made copy behind
            shutil.rmtree(out, ignore_errors=True)
        raise
    result = RetrainResult(bundle=out, run_dir=run_dir, iterations=int(trainer.state.iteration), seconds=time.time() - t0)
    if not exports:
        raise BundleError(f"bundle {info.name}: configs/train.json names no bundle_exports (trained file -> bundle file); nothing to install.")
    for produced, target in exports.items():
        src = run_dir / produced
        if not src.is_file():
            raise BundleError(f"bundle {info.name}: training ran but wrote no {produced} in {run_dir}.")
        result.installed[produced] = _install(src, out / target)
    note = {"data": str(data.resolve()), "iterations": result.iterations, "resumed": resumed, "steps": steps,
            "retrained_from": f"{info.name}@{info.version}"}
    result.rehashed = rehash_bundle(BundleInfo(name=out.name, path=out.resolve(), metadata=read_metadata(out), source="path"), note=note)
    _set_default_variants(out, result.installed)
    return result
