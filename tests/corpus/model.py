"""What a corpus case is: how it is built, what it runs, and the one outcome it must give.

A :class:`Case` builds its files into an empty folder (``build(folder)``, run with the folder as the current
directory and :func:`case_env` set) and returns its action: an ``argv`` list run in-process through
``medgen_core.cli.main.main``, a callable ``action(folder) -> Outcome`` (cases that need other processes), or
``None`` (the files alone are the case, e.g. a tampered image to verify). Its ``expected`` outcome is exactly
one of :class:`Success`, :class:`Error` or :class:`Status` (and, for ``medgen bundle check``, whose verdict
is a report, :class:`ChecksFail`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

__all__ = ["Action", "Case", "CaseUnavailable", "ChecksFail", "Error", "Expected", "Outcome", "Status", "Success", "case_env", "describe"]

#: Prefix of every marker file a payload tries to create; none may ever exist.
MARKER_PREFIX = "PWNED"


@dataclass(frozen=True)
class Outcome:
    """Exit code and captured output of an action."""

    rc: int
    stdout: str
    stderr: str


Action = Union[list, Callable[[Path], Outcome], None]


@dataclass(frozen=True)
class Success:
    """Exit code 0; every file in ``outputs`` exists; every file in ``verify`` verifies intact, signed by a
    trusted key. Sidecars (``<output>.generated.json``) of the outputs may be created too."""

    outputs: tuple[str, ...]
    verify: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "success", "exit_code": 0, "outputs": list(self.outputs), "verify_intact": list(self.verify)}


@dataclass(frozen=True)
class Error:
    """Exit code ``exit_code`` (2, bad input; 64 for a malformed command line); stderr is one line starting
    ``medgen: error:`` that contains ``names`` (the file or option at fault; empty: not checked) and, when ``what``
    is given, at least one of those words (what is wrong; case-insensitive)."""

    names: str
    what: tuple[str, ...] = ()
    exit_code: int = 2

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "error", "exit_code": self.exit_code, "stderr": "one line 'medgen: error: ...'", "names": self.names,
                "what_any_of": list(self.what)}


@dataclass(frozen=True)
class Status:
    """``medgen provenance verify FILE --json`` (run after the action, if any) reports one of ``statuses``
    with that status's exit code; ``trusted``, when not None, is the signing key's trust too."""

    file: str
    statuses: tuple[str, ...]
    trusted: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "verify_status", "file": self.file, "status_any_of": list(self.statuses), "trusted": self.trusted}


@dataclass(frozen=True)
class ChecksFail:
    """``medgen bundle check``: exit code 1 (checks failed, nothing executed) and stdout contains every one of
    ``stdout`` (e.g. the failed check's name)."""

    stdout: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "checks_fail", "exit_code": 1, "stdout_contains": list(self.stdout)}


Expected = Union[Success, Error, Status, ChecksFail]


class CaseUnavailable(Exception):
    """Raised by ``build`` when the case cannot be set up here (e.g. a read-only folder when running as root)."""


@dataclass(frozen=True)
class Case:
    """One corpus entry.

    Args:
        id: Unique, file-name-safe id.
        category: ``image``, ``output``, ``provenance``, ``bundle``, ``names`` or ``cli``.
        doc: One line: what the case is and why the outcome is right.
        build: Writes the case's files into the folder (the current directory) and returns the action.
        expected: The one outcome the case must give.
        max_memory_mb: Peak Python/numpy memory (tracemalloc) the action may use, for resource bombs.
        timeout_s: Wall-clock limit of the case.
        env: Extra environment variables for build and action.
        may_change: Glob patterns (relative to the folder) of files that existed before and may be replaced
            (an earlier output pair that the action overwrites).
    """

    id: str
    category: str
    doc: str
    build: Callable[[Path], Action]
    expected: Expected
    max_memory_mb: float | None = None
    timeout_s: float = 60.0
    env: Mapping[str, str] = field(default_factory=dict)
    may_change: tuple[str, ...] = ()


def describe(case: Case, action: Action) -> dict[str, Any]:
    """The manifest entry of a built case."""
    if isinstance(action, list):
        run: Any = {"argv": ["medgen", *action]}
    elif action is None:
        run = None
    else:
        run = {"custom": (getattr(action, "__doc__", None) or getattr(action, "__name__", "callable")).strip().splitlines()[0]}
    return {"id": case.id, "category": case.category, "doc": case.doc, "action": run, "expected": case.expected.to_dict(),
            "max_memory_mb": case.max_memory_mb, "timeout_s": case.timeout_s, "env": dict(case.env)}


def env_values(folder: Path, cache: Path) -> dict[str, str]:
    """The environment of a case: HOME, bundle and key folders inside the case folder, no CUDA, caches outside."""
    home = folder / "home"
    return {
        "HOME": str(home),
        "MEDGEN_BUNDLE_DIR": str(home / ".medgen" / "bundles"),
        "MEDGEN_KEY_DIR": str(home / ".medgen" / "keys"),
        "CUDA_VISIBLE_DEVICES": "",
        "MPLCONFIGDIR": str(cache / "matplotlib"),
        "XDG_CACHE_HOME": str(cache),
        "MEDGEN_PROGRESS": "",
    }


@contextlib.contextmanager
def case_env(folder: Path, cache: Path, extra: Mapping[str, str] | None = None) -> Iterator[None]:
    """Within the block: the case's environment (:func:`env_values` and ``extra``) and the folder as cwd."""
    values = {**env_values(folder, cache), **(extra or {})}
    saved = {k: os.environ.get(k) for k in values}
    cwd = os.getcwd()
    (folder / "home").mkdir(parents=True, exist_ok=True)
    os.environ.update(values)
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(cwd)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
