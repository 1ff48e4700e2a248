"""Copies of the shipped super-resolution bundle, made hostile in the ways issue 14 lists."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medgen_core.bundles import builtin_bundle_dir

__all__ = ["SR_BUNDLE", "copy_sr_bundle", "edit_inference", "edit_metadata", "pickle_weights", "PAYLOADS"]

SR_BUNDLE = "brain_mri_super_resolution"
SR_WEIGHTS = "models/model.pt"  # the file the default x2 variant (x2_synthetic) loads


def copy_sr_bundle(dst: str | Path, name: str | None = None) -> Path:
    """A copy of the shipped SR bundle at ``dst`` (without local outputs), renamed to ``name`` if given."""
    src = (builtin_bundle_dir() or Path(__file__).resolve().parents[2] / "monai_bundles") / SR_BUNDLE
    dst = Path(dst)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("eval", "runs", "__pycache__", ".*"))
    if name is not None:
        edit_metadata(dst, lambda meta: meta.update(name=name))
    return dst


def _edit_json(path: Path, change: Callable[[dict[str, Any]], Any]) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data, indent=4) + "\n")


def edit_metadata(bundle: Path, change: Callable[[dict[str, Any]], Any]) -> Path:
    _edit_json(bundle / "configs" / "metadata.json", change)
    return bundle


def edit_inference(bundle: Path, change: Callable[[dict[str, Any]], Any]) -> Path:
    _edit_json(bundle / "configs" / "inference.json", change)
    return bundle


def record_weights_sha256(bundle: Path, relative: str = SR_WEIGHTS) -> None:
    """Recompute the sha256 of a weight file everywhere the metadata records it (what an attacker would do)."""
    digest = hashlib.sha256((bundle / relative).read_bytes()).hexdigest()

    def change(meta: dict[str, Any]) -> None:
        medgen = meta.get("medgen", {})
        for entry in [*medgen.get("variants", {}).values(), medgen.get("model_pt", {})]:
            if isinstance(entry, dict) and entry.get("file") == relative:
                entry["sha256"] = digest

    edit_metadata(bundle, change)


class _Payload:
    """Unpickling this runs ``touch <marker>``."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (f"touch '{self.marker}'",))


def pickle_weights(bundle: Path, marker: Path) -> None:
    """Replace the default weights by a state dict that carries a pickle payload, with its sha256 recorded."""
    import torch

    path = bundle / SR_WEIGHTS
    state = dict(torch.load(path, map_location="cpu", weights_only=True))
    state["_extra"] = _Payload(str(marker))
    torch.save(state, path)
    record_weights_sha256(bundle)


def flip_weight_byte(bundle: Path) -> None:
    """Flip one bit in the middle of the default weights (the metadata keeps the old sha256)."""
    path = bundle / SR_WEIGHTS
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _initialize(step: Any) -> Callable[[dict[str, Any]], None]:
    return lambda cfg: cfg["initialize"].append(step)


def _reader(marker: str) -> Callable[[dict[str, Any]], None]:
    # MONAI's LoadImage locates a reader given as a dotted string and calls it with the extra arguments
    loader = {"_target_": "LoadImaged", "keys": "unused", "allow_missing_keys": True, "reader": "os.system",
              "command": f"touch '{marker}'"}
    return lambda cfg: cfg["preprocessing"]["transforms"].insert(0, loader)


#: Config changes that reach the operating system, by name: each creates ``marker`` when the config runs.
PAYLOADS: dict[str, Callable[[str], Callable[[dict[str, Any]], None]]] = {
    "target_os_system": lambda m: _initialize({"_target_": "os.system", "command": f"touch '{m}'"}),
    "dollar_import_os": lambda m: _initialize(f"$__import__('os').system(\"touch '{m}'\")"),
    "dollar_torch_os": lambda m: _initialize(f"$torch.os.system(\"touch '{m}'\")"),
    "dotted_reader_os": _reader,
    "numpy_tofile": lambda m: _initialize(f"$numpy.zeros(1).tofile('{m}')"),
}
