"""Safe weight loading: check the sha256 recorded in the bundle's metadata, then load tensors only.

A ``.pt`` file is a pickle; ``torch.load(weights_only=True)`` refuses any object that is not a
tensor, number, string or container, so a checkpoint carrying code is refused rather than executed.
``.safetensors`` files hold no code at all.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medgen_core.errors import WeightsError
from medgen_core.provenance import sha256_file

if TYPE_CHECKING:  # torch is imported where weights are loaded ('medgen CMD --help' stays light)
    import torch
    import torch.nn as nn

__all__ = [
    "WEIGHT_SUFFIXES",
    "install_variant_weights",
    "load_state_dict_safely",
    "load_verified_network",
    "recorded_sha256s",
    "recorded_weight_entries",
    "verify_weights_file",
    "weight_files",
    "weights_status",
]


def verify_weights_file(path: str | Path, expected_sha256: str | None) -> str:
    """Return the file's sha256 after checking it equals ``expected_sha256`` (required, 64 hex digits)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist (expected the bundle's trained weights there).")
    if not expected_sha256 or len(str(expected_sha256)) != 64:
        raise WeightsError(f"weights file {path}: no sha256 is recorded in the bundle metadata, so it cannot be verified; refusing to load it.")
    actual = sha256_file(path)
    if actual != str(expected_sha256).lower():
        raise WeightsError(
            f"weights file {path} does not match the sha256 recorded in the bundle metadata "
            f"(expected {expected_sha256}, found {actual}): it was changed or corrupted; refusing to load it."
        )
    return actual


def load_state_dict_safely(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a state dict of tensors from ``.pt``/``.pth`` (``weights_only=True``) or ``.safetensors``."""
    import torch

    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise WeightsError(
            f"weights file {path} carries a pickle payload that is not plain tensors (possible code execution); refusing to load it: {str(err).splitlines()[0]}"
        ) from err
    except Exception as err:  # noqa: BLE001 - torch's weights-only unpickler raises IndexError, KeyError, ... on garbage
        kind = "safetensors file" if path.suffix == ".safetensors" else "PyTorch checkpoint"
        raise WeightsError(f"weights file {path} could not be read as a {kind} ({type(err).__name__}: {err})") from err
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"weights file {path} is not a state dict of tensors.")
    return state


def load_verified_network(network: nn.Module, path: str | Path, expected_sha256: str | None, device: str | torch.device = "cpu") -> nn.Module:
    """Verify ``path`` against ``expected_sha256``, load it into ``network`` (strictly) and return it in eval mode."""
    verify_weights_file(path, expected_sha256)
    state = load_state_dict_safely(path)
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        raise WeightsError(f"weights file {path} does not fit network {type(network).__name__}: {first}") from err
    return network.to(device).eval()


# -- weight hashes recorded in a bundle's metadata ---------------------------------------------------

WEIGHT_SUFFIXES = (".pt", ".pth", ".safetensors", ".ts")
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")


def weight_files(bundle_root: str | Path) -> list[Path]:
    """Weight files of a bundle: ``models/*.pt|*.pth|*.safetensors|*.ts`` (sorted)."""
    models = Path(bundle_root) / "models"
    return sorted(p for p in models.glob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES) if models.is_dir() else []


def recorded_sha256s(metadata: Any) -> set[str]:
    """Every 64-hex-digit string found anywhere in ``metadata`` (searched recursively), lower-cased."""
    found: set[str] = set()
    stack = [metadata]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str) and _SHA256.match(item):
            found.add(item.lower())
    return found


def _file_entries(metadata: Any) -> Iterator[dict[str, Any]]:
    """Every ``{"file": str, "sha256": str, ...}`` object in ``metadata`` (searched recursively)."""
    stack = [metadata]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if isinstance(item.get("file"), str) and isinstance(item.get("sha256"), str):
                yield item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def recorded_weight_entries(metadata: Any) -> dict[str, str]:
    """``{relative file: sha256}`` from every ``{"file": ..., "sha256": ...}`` object in ``metadata``."""
    return {entry["file"]: entry["sha256"].lower() for entry in _file_entries(metadata)}


def weights_status(bundle_root: str | Path, metadata: dict[str, Any]) -> tuple[str, list[str]]:
    """Compare a bundle's weight files with the hashes in its metadata.

    Returns:
        ``(state, problems)``: ``"OK"`` (every weight file's sha256 is recorded and every
        ``{"file", "sha256"}`` entry matches its file), ``"MISMATCH"`` (an entry names a file that
        differs or is missing) or ``"unverified"`` (no weight files, or some file's sha256 is recorded
        nowhere); ``problems`` explains every failure in one line each.
    """
    root = Path(bundle_root)
    problems: list[str] = []
    mismatch = False
    actual = {p.relative_to(root).as_posix(): sha256_file(p) for p in weight_files(root)}
    # each distinct (file, sha256) pair: two entries naming one file (a variant and model_pt) must agree
    for rel, expected in sorted({(entry["file"], entry["sha256"].lower()) for entry in _file_entries(metadata)}):
        path = root / rel
        if Path(rel).suffix not in WEIGHT_SUFFIXES:
            continue
        if not path.is_file():
            mismatch = True
            problems.append(f"{rel}: listed in configs/metadata.json (sha256 {expected[:12]}...) but the file is missing")
            continue
        found = actual.get(rel) or sha256_file(path)
        if found != expected:
            mismatch = True
            problems.append(f"{rel}: sha256 {found} does not match the sha256 {expected} recorded in configs/metadata.json")
    known = recorded_sha256s(metadata)
    unrecorded = [rel for rel, sha in actual.items() if sha not in known]
    problems += [f"{rel}: its sha256 {actual[rel]} is not recorded anywhere in configs/metadata.json" for rel in unrecorded]
    if mismatch:
        return "MISMATCH", problems
    if not actual:
        return "unverified", problems + ["models/ holds no weight file (*.pt, *.pth, *.safetensors, *.ts)"]
    return ("unverified" if unrecorded else "OK"), problems


def install_variant_weights(bundle_root: str | Path, variant: str, source: str | Path, **medgen_updates: Any) -> Path:
    """Install freshly trained weights into a bundle: copy ``source`` over ``medgen.variants[variant]["file"]``,
    record the copy's sha256 there and in every other ``{"file", "sha256"}`` entry that names the same file (the
    default variant is ``models/model.pt``, also recorded as ``medgen.model_pt``), set any ``medgen_updates`` (e.g.
    ``trained=True``, ``training={...}``) in the metadata's ``medgen`` section, and rewrite ``configs/metadata.json``
    atomically (4-space JSON). Returns the installed file's path. Used by the training scripts that produce the
    shipped weights."""
    import json
    import os
    import shutil

    root = Path(bundle_root)
    meta_path = root / "configs" / "metadata.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    variants = meta.get("medgen", {}).get("variants", {})
    if variant not in variants:
        raise WeightsError(f"{meta_path}: no medgen.variants[{variant!r}] entry to install weights into (known: {sorted(variants)})")
    target = root / variants[variant]["file"]
    tmp = target.with_name(target.name + ".tmp")
    shutil.copyfile(source, tmp)
    os.replace(tmp, target)
    digest = sha256_file(target)
    for entry in _file_entries(meta):  # every entry that records this file
        if entry["file"] == variants[variant]["file"]:
            entry["sha256"] = digest
    variants[variant]["sha256"] = digest
    meta["medgen"].update(medgen_updates)
    tmp_meta = meta_path.with_name(meta_path.name + ".tmp")
    tmp_meta.write_text(json.dumps(meta, indent=4) + "\n", encoding="utf-8")
    os.replace(tmp_meta, meta_path)
    return target
