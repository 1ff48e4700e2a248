"""Shared checks of command-line values: argparse types that refuse out-of-range numbers, and the run-time check
of preview paths (``--device`` is in :mod:`medgen_core.cli._common`; :func:`check_device` is re-exported here for
older imports). Every refusal is one line (argparse prints it with exit code 2; the run-time checks raise
:class:`~medgen_core.errors.MedGenError`, which ``medgen`` prints with exit code 2).
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from pathlib import Path

from medgen_core.cli._common import check_device
from medgen_core.errors import MedGenError

__all__ = [
    "check_device",
    "check_preview_path",
    "fraction",
    "nonempty_path",
    "non_negative_float",
    "non_negative_int",
    "positive_float",
    "positive_int",
    "strength",
]


def _integer(text: str) -> int:
    try:
        return int(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def _real(text: str) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _bounded(parse: Callable[[str], float], ok: Callable[[float], bool], what: str) -> Callable[[str], float]:
    def convert(text: str) -> float:
        value = parse(text)
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return value

    convert.__name__ = what  # argparse names the type in some messages
    return convert


#: An integer >= 1 (counts, sizes, steps, epochs).
positive_int = _bounded(_integer, lambda v: v >= 1, "a whole number >= 1")
#: An integer >= 0 (seeds).
non_negative_int = _bounded(_integer, lambda v: v >= 0, "a whole number >= 0")
#: A finite number > 0 (learning rates).
positive_float = _bounded(_real, lambda v: v > 0, "a number > 0")
#: A finite number >= 0 (loss weights).
non_negative_float = _bounded(_real, lambda v: v >= 0, "a number >= 0")
#: A number in [0, 1] (probabilities, levels).
fraction = _bounded(_real, lambda v: 0 <= v <= 1, "a number in [0, 1]")
#: A number in (0, 1] (image-to-image strength).
strength = _bounded(_real, lambda v: 0 < v <= 1, "a number in (0, 1]")


def nonempty_path(text: str) -> Path:
    """A path argument that is not empty (``Path("")`` would silently mean the current folder)."""
    if not str(text).strip():
        raise argparse.ArgumentTypeError("empty path; expected a file name")
    return Path(text)


def check_preview_path(path: Path | None, option: str = "--preview") -> None:
    """Refuse, before any compute, a preview path that is not a ``.png`` file name or cannot be written.

    A missing folder is fine (it is created, like an output's); the nearest existing folder must be writable.
    """
    if path is None:
        return
    if not str(path).strip() or path.suffix.lower() != ".png":
        raise MedGenError(f"{path}: {option} writes a PNG image; expected a file name ending in .png")
    if path.is_symlink() and not path.exists():
        raise MedGenError(f"{path}: {option} is a broken symbolic link (or a symlink loop); expected a PNG file name")
    if os.path.lexists(path) and not path.is_file():
        raise MedGenError(f"{path}: {option} is an existing folder (or not a regular file); expected a PNG file name")
    parent = path.parent
    while not parent.exists():
        if os.path.lexists(parent):  # a dangling symlink or a loop
            raise MedGenError(f"{path}: {option} folder {parent} is a broken symbolic link")
        parent = parent.parent
    if not parent.is_dir():
        raise MedGenError(f"{path}: {option} cannot be written: {parent} is a file, not a folder")
    from medgen_core.io import folder_is_writable

    if not folder_is_writable(parent):
        raise MedGenError(f"{path}: {option} cannot be written: the folder {parent} is read-only")
