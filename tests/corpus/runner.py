"""Running a corpus case in-process and checking it: its expected outcome, and the invariants of every case.

Invariants (issue 14): no file that existed before the action changed (sha256, mtime, mode, link target) or
went away, unless the case allows it (an earlier output pair being replaced); nothing new is left in the case
folder except the expected outputs, their sidecars and the installation's key files (no temporary or
half-written file, no partial install); no payload marker (``PWNED*``) exists anywhere in the folder.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import json
import logging
import os
import re
import stat
import sys
import traceback
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .model import MARKER_PREFIX, Action, Case, ChecksFail, Error, Outcome, Status, Success

__all__ = ["check_case", "compare", "error_lines", "isolated_process_state", "run_action", "snapshot"]

#: New files the installation may create in any case (its signing key pair and trust list) ...
KEY_FILES = "home/.medgen/keys"
#: ... and its own (empty) folders.
INSTALLATION_DIRS = ("home/.medgen", "home/.medgen/bundles", KEY_FILES)
_PROGRESS = re.compile(r"\d+%\||\[\d\d:\d\d|\d+(?:batch|it|slice)s? \[")
_LOG = re.compile(r"^(?:INFO|DEBUG) [\w.]+: |^\d{4}-\d\d-\d\d[ T][\d:,.]+ - .* - (?:INFO|DEBUG) - ")


@dataclass(frozen=True)
class Entry:
    """What a path is: kind (file, dir, link, other), content hash, mtime and mode, link target."""

    kind: str
    sha256: str | None
    mtime_ns: int
    mode: int
    target: str | None


def snapshot(folder: Path) -> dict[str, Entry]:
    """Every path under ``folder`` (links not followed), relative, with what it is."""
    found: dict[str, Entry] = {}
    for root, dirs, files in os.walk(folder, followlinks=False):
        for name in dirs + files:
            path = Path(root) / name
            rel = path.relative_to(folder).as_posix()
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                found[rel] = Entry("link", None, 0, 0, os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                found[rel] = Entry("dir", None, 0, stat.S_IMODE(st.st_mode), None)
            elif stat.S_ISREG(st.st_mode):
                digest = hashlib.sha256()
                with open(path, "rb") as handle:
                    for block in iter(lambda: handle.read(1 << 22), b""):
                        digest.update(block)
                found[rel] = Entry("file", digest.hexdigest(), st.st_mtime_ns, stat.S_IMODE(st.st_mode), None)
            else:
                found[rel] = Entry("other", None, 0, stat.S_IMODE(st.st_mode), None)
    return found


def _allowed(rel: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(rel, p) for p in patterns)


def compare(before: dict[str, Entry], after: dict[str, Entry], case: Case) -> list[str]:
    """The invariants' violations between the snapshots taken before and after a case's action."""
    outputs = case.expected.outputs if isinstance(case.expected, Success) else ()
    may_change = (*case.may_change, *outputs, *(f"{o}.generated.json" for o in outputs))
    parents = {p.as_posix() for o in outputs for p in Path(o).parents if p.as_posix() != "."}
    problems = []
    for rel, entry in before.items():
        if _allowed(rel, may_change):
            continue
        now = after.get(rel)
        if now is None:
            problems.append(f"input removed: {rel}")
        elif now != entry:
            what = [f for f in ("kind", "sha256", "mtime_ns", "mode", "target") if getattr(now, f) != getattr(entry, f)]
            problems.append(f"input changed: {rel} ({', '.join(what)})")
    for rel in sorted(set(after) - set(before)):
        name = rel.rsplit("/", 1)[-1]
        if name.startswith(MARKER_PREFIX):
            continue  # reported below
        if _allowed(rel, may_change) or rel in parents or (rel in INSTALLATION_DIRS and after[rel].kind == "dir"):
            continue
        if rel.startswith(KEY_FILES + "/") and not name.startswith(".") and after[rel].kind == "file":
            continue
        problems.append(f"left behind: {rel}" + (" (a folder)" if after[rel].kind == "dir" else ""))
    problems += [f"payload ran: {rel} exists" for rel in sorted(after) if rel.rsplit("/", 1)[-1].startswith(MARKER_PREFIX)]
    return problems


def error_lines(stderr: str) -> list[str]:
    """stderr lines a user reads as messages: progress bars and INFO/DEBUG log records left out."""
    lines = [line.strip() for line in re.split(r"[\r\n]+", stderr) if line.strip()]
    return [line for line in lines if not _PROGRESS.search(line) and not _LOG.search(line)]


@contextlib.contextmanager
def isolated_process_state() -> Iterator[None]:
    """Restore what an in-process ``medgen`` run changes for the whole process: logging handlers (MONAI's
    bundle logging config replaces the root's; its modules add stream handlers bound to the captured
    stdout on first import), ``sys.path`` (bundle roots are added)."""

    def loggers() -> dict[str, logging.Logger]:
        found = {name: item for name, item in logging.root.manager.loggerDict.items() if isinstance(item, logging.Logger)}
        return {**found, "": logging.getLogger()}

    saved = {name: (list(item.handlers), item.level, item.disabled) for name, item in loggers().items()}
    path = list(sys.path)
    root = logging.getLogger()
    for handler in list(root.handlers):  # as in a fresh process: medgen's logging.basicConfig then logs to stderr
        root.removeHandler(handler)
    root.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for name, item in loggers().items():
            handlers, level, disabled = saved.get(name, ([], item.level, item.disabled))
            for handler in list(item.handlers):
                if handler not in handlers:
                    item.removeHandler(handler)
            for handler in handlers:
                if handler not in item.handlers:
                    item.addHandler(handler)
            item.setLevel(level)
            item.disabled = disabled
        sys.path[:] = path


def run_main(argv: list[str], read: Callable[[], tuple[str, str]]) -> Outcome:
    """``medgen ARGV`` in-process; ``read()`` returns (and clears) what was captured on stdout/stderr."""
    from medgen_core.cli.main import main

    read()
    tail = ""
    try:
        rc = main(list(argv))
    except SystemExit as exit_:
        rc = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except BaseException:  # noqa: BLE001 - a traceback is a failed case, reported with the case
        rc, tail = -1, "\n" + traceback.format_exc()
    out, err = read()
    return Outcome(int(rc), out, err + tail)


def run_action(action: Action, folder: Path, read: Callable[[], tuple[str, str]], max_memory_mb: float | None) -> tuple[Outcome, float]:
    """Run a case's action; returns its outcome and the peak traced memory in MB (0 when not traced)."""
    if max_memory_mb is not None:
        from medgen_core.cli.main import build_parser

        build_parser()  # import every command module first: imports are not what is measured
        tracemalloc.start()
    try:
        if action is None:
            outcome = Outcome(0, "", "")
        elif isinstance(action, list):
            outcome = run_main(action, read)
        else:
            outcome = action(folder)
    finally:
        peak = tracemalloc.get_traced_memory()[1] / 2**20 if tracemalloc.is_tracing() else 0.0
        if max_memory_mb is not None:
            tracemalloc.stop()
    return outcome, peak


def _verify(file: str, read: Callable[[], tuple[str, str]]) -> tuple[dict | None, Outcome]:
    outcome = run_main(["provenance", "verify", file, "--json"], read)
    text = outcome.stdout
    try:
        return json.JSONDecoder().raw_decode(text[text.index("{"):])[0], outcome
    except ValueError:
        return None, outcome


def _check_status(file: str, statuses: tuple[str, ...], trusted: bool | None, read) -> list[str]:
    from medgen_core.cli import provenance_cmd

    result, outcome = _verify(file, read)
    if result is None:
        return [f"provenance verify {file} printed no JSON (exit {outcome.rc}): {(outcome.stderr or outcome.stdout).strip()[-600:]}"]
    status = result.get("status")
    problems = []
    if status not in statuses:
        problems.append(f"provenance verify {file}: status {status!r}, expected {' or '.join(statuses)} ({result.get('message')})")
    if trusted is not None and result.get("trusted") is not trusted:
        problems.append(f"provenance verify {file}: trusted is {result.get('trusted')!r}, expected {trusted}")
    untrusted_code = getattr(provenance_cmd, "EXIT_UNTRUSTED", None)
    code = untrusted_code if status == "intact" and result.get("trusted") is False and untrusted_code is not None else \
        provenance_cmd.EXIT_CODES.get(status)
    if code is not None and outcome.rc != code:
        problems.append(f"provenance verify {file}: exit code {outcome.rc}, expected {code} for {status}")
    return problems


def check_case(case: Case, outcome: Outcome, read: Callable[[], tuple[str, str]]) -> list[str]:
    """Problems with the case's outcome against its expected one (runs ``provenance verify`` where needed)."""
    expected = case.expected
    shown = f"exit {outcome.rc}; stderr: {outcome.stderr.strip()[-1500:]!r}"
    problems: list[str] = []
    if isinstance(expected, (Success, ChecksFail)) and "Traceback (most recent call last)" in outcome.stderr + outcome.stdout:
        problems.append(f"traceback ({shown})")
    if isinstance(expected, Success):
        if outcome.rc != 0:
            return [f"expected success (exit 0), got {shown}"]
        problems += [f"expected output {o} missing" for o in expected.outputs if not os.path.isfile(o)]
        for file in expected.verify:
            if os.path.isfile(file):
                problems += _check_status(file, ("intact",), True, read)
    elif isinstance(expected, Error):
        lines = error_lines(outcome.stderr)
        if outcome.rc != expected.exit_code:
            problems.append(f"expected exit {expected.exit_code} with one error line, got {shown}")
        elif len(lines) != 1 or not lines[0].startswith("medgen: error:"):
            problems.append(f"expected stderr to be one line 'medgen: error: ...', got {len(lines)} line(s): {lines[:6]!r}")
        else:
            line = lines[0]
            if expected.names not in line:
                problems.append(f"the error does not name {expected.names!r}: {line!r}")
            if expected.what and not any(w.lower() in line.lower() for w in expected.what):
                problems.append(f"the error does not say what is wrong (any of {list(expected.what)}): {line!r}")
        if "Traceback (most recent call last)" in outcome.stdout:
            problems.append("traceback on stdout")
    elif isinstance(expected, Status):
        problems += _check_status(expected.file, expected.statuses, expected.trusted, read)
    elif isinstance(expected, ChecksFail):
        if outcome.rc != 1:
            problems.append(f"expected exit 1 (checks failed), got {shown}")
        problems += [f"stdout lacks {word!r}" for word in expected.stdout if word not in outcome.stdout]
    return problems

