"""Progress bars that can also report machine-readable progress.

:func:`progress` wraps :func:`tqdm.tqdm`. When the environment variable ``MEDGEN_PROGRESS=json`` is
set (``medgen upscale --progress json`` sets it), it also prints one line per completed step to stdout::

    MEDGEN_PROGRESS {"stage": "upscale x2 in-plane", "done": 1, "total": 4, "fraction": 0.25}

so that a parent process (the 3D Slicer module) can show a progress bar.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from tqdm import tqdm

__all__ = ["PROGRESS_ENV", "PROGRESS_PREFIX", "json_progress_enabled", "progress", "progress_line", "progress_mode"]

PROGRESS_ENV = "MEDGEN_PROGRESS"
PROGRESS_PREFIX = "MEDGEN_PROGRESS"

T = TypeVar("T")


def json_progress_enabled() -> bool:
    """Whether ``MEDGEN_PROGRESS=json`` is set."""
    return os.environ.get(PROGRESS_ENV, "").strip().lower() == "json"


def progress_line(stage: str, done: int, total: int | None) -> str:
    """One ``MEDGEN_PROGRESS {...}`` line (``fraction`` is ``None`` when the total is unknown)."""
    fraction = round(done / total, 6) if total else None
    payload = {"stage": stage, "done": done, "total": total, "fraction": fraction}
    return f"{PROGRESS_PREFIX} {json.dumps(payload)}"


@contextlib.contextmanager
def progress_mode(mode: str | None) -> Iterator[None]:
    """Within the block, ``"json"`` sets ``MEDGEN_PROGRESS=json``, ``"bar"`` unsets it, ``None`` keeps it;
    the previous value is restored afterwards (in-process callers of the CLI are not affected)."""
    previous = os.environ.get(PROGRESS_ENV)
    if mode == "json":
        os.environ[PROGRESS_ENV] = "json"
    elif mode == "bar":
        os.environ.pop(PROGRESS_ENV, None)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(PROGRESS_ENV, None)
        else:
            os.environ[PROGRESS_ENV] = previous


def progress(iterable: Iterable[T], desc: str, total: int | None = None, **tqdm_kwargs: Any) -> Iterator[T]:
    """Iterate over ``iterable`` with a tqdm bar (``tqdm_kwargs`` go to tqdm, e.g. ``unit``, ``disable``).

    With ``MEDGEN_PROGRESS=json`` a JSON progress line is printed (and flushed) after each step,
    whether or not the bar is disabled.
    """
    if total is None:
        try:
            total = len(iterable)  # type: ignore[arg-type]
        except TypeError:
            total = None
    emit = json_progress_enabled()
    for done, item in enumerate(tqdm(iterable, desc=desc, total=total, **tqdm_kwargs), start=1):
        yield item
        if emit:
            print(progress_line(desc, done, total), file=sys.stdout, flush=True)
