"""Crash-safe file + sidecar pairs: a process killed at any moment leaves the old pair or the new pair.

:func:`staged_pair` hands out two temporary names next to the destination (``.medgen-tmp-<pid>-<hex>-<name>``
and the same for ``<name>.generated.json``). When both are written (and fsynced) it commits them:

1. under an exclusive lock on the folder (``flock``; no lock on platforms without ``fcntl``), write the commit
   journal ``.<name>.medgen-journal`` (atomically) listing the two renames;
2. rename the file, then the sidecar;
3. remove the journal.

:func:`recover_pair` runs first on every read, verify and write of a path (under the same lock): a leftover
journal is rolled forward (both temporary files were complete before it was written, so the rest of the renames
finish the new pair), and temporary files of writers that no longer run are removed. A crash before the journal
leaves the old pair untouched.

Tests stop a writer at a chosen stage with ``MEDGEN_TEST_PAIR_PAUSE=<stage>:<marker file>``: at that stage the
writer creates the marker file and sleeps (stages: :data:`PAUSE_STAGES`). Not for production use.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

from medgen_core.errors import ProvenanceError
from medgen_core.io.writers import fsync_dir

__all__ = ["PAUSE_ENV", "PAUSE_STAGES", "journal_path", "recover_pair", "staged_pair"]

logger = logging.getLogger(__name__)

SIDECAR_SUFFIX = ".generated.json"
JOURNAL_SCHEMA = "medgen-pair-journal/1"
#: Test hook: ``<stage>:<marker path>`` makes a writer create the marker and sleep at that stage.
PAUSE_ENV = "MEDGEN_TEST_PAIR_PAUSE"
#: ``staged``: both temporary files written, no journal yet; ``journaled``: journal written, nothing renamed;
#: ``between-renames``: the file renamed, the sidecar not yet; ``renamed``: both renamed, journal still there.
PAUSE_STAGES = ("staged", "journaled", "between-renames", "renamed")
_TMP_PREFIX = ".medgen-tmp-"
_PAUSE_SECONDS = 120.0


def _sidecar_name(name: str) -> str:
    return name + SIDECAR_SUFFIX


def journal_path(path: str | Path) -> Path:
    """The commit journal of ``path``: ``.<name>.medgen-journal`` in the same folder."""
    path = Path(path)
    return path.with_name(f".{path.name}.medgen-journal")


def _pause(stage: str) -> None:
    """The test hook (see the module docstring)."""
    spec = os.environ.get(PAUSE_ENV, "")
    wanted, _, marker = spec.partition(":")
    if wanted == stage and marker:
        Path(marker).write_text(str(os.getpid()), encoding="ascii")
        time.sleep(_PAUSE_SECONDS)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


@contextlib.contextmanager
def _folder_lock(directory: Path) -> Iterator[None]:
    """Exclusive ``flock`` on the folder (no-op without ``fcntl``); released when the process dies."""
    try:
        import fcntl
    except ImportError:  # Windows: no lock; renames are still ordered by the journal
        yield
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _temp_pattern(name: str) -> re.Pattern[str]:
    # Ours, and the ``.tmp-<hex>-`` file an atomic writer inside a pair may leave when killed mid-write.
    # The journal's own temporary file is ``<prefix><pid>-<hex>-.<name>.medgen-journal``.
    return re.compile(rf"(?:\.tmp-[0-9a-f]+-)?{re.escape(_TMP_PREFIX)}(\d+)-[0-9a-f]{{8}}-\.?{re.escape(name)}"
                      rf"(?:{re.escape(SIDECAR_SUFFIX)}|\.medgen-journal)?")


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (always ``True`` off POSIX, where ``os.kill(pid, 0)`` would terminate it)."""
    if pid == os.getpid() or os.name != "posix":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _dead_temps(path: Path) -> list[Path]:
    """Temporary files of ``path``'s pairs whose writer process no longer runs."""
    pattern = _temp_pattern(path.name)
    try:
        names = os.listdir(path.parent)
    except OSError:
        return []
    found = []
    for name in names:
        match = pattern.fullmatch(name)
        if match and not _pid_alive(int(match.group(1))):
            found.append(path.parent / name)
    return found


def _roll_forward(path: Path, journal: Path) -> None:
    """Finish the renames a journal lists, then remove it."""
    try:
        entry = json.loads(journal.read_text(encoding="utf-8"))
        renames = entry["renames"] if entry.get("schema") == JOURNAL_SCHEMA else None
    except (OSError, ValueError, AttributeError, KeyError) as err:
        raise ProvenanceError(f"{journal}: unreadable commit journal ({err}); inspect and remove it by hand") from err
    allowed = {path.name, _sidecar_name(path.name)}
    pattern = _temp_pattern(path.name)
    if not isinstance(renames, list) or not all(
        isinstance(r, list) and len(r) == 2 and r[1] in allowed and isinstance(r[0], str) and pattern.fullmatch(r[0])
        for r in renames
    ):
        raise ProvenanceError(f"{journal}: not a commit journal of {path.name}; inspect and remove it by hand")
    for src, dst in renames:
        source = path.parent / src
        if source.exists():
            os.replace(source, path.parent / dst)
    fsync_dir(path.parent)
    journal.unlink()
    fsync_dir(path.parent)
    logger.warning("%s: finished an interrupted write (rolled the commit journal forward)", path)


def recover_pair(path: str | Path) -> None:
    """Finish or clean up an interrupted pair write of ``path`` (roll a leftover journal forward, remove the
    temporary files of dead writers). A read-only folder is left as it is, with a warning.

    Raises:
        ProvenanceError: A journal exists but is not one this module wrote.
    """
    path = Path(path)
    if not path.name or not path.parent.is_dir():
        return
    journal = journal_path(path)
    if not journal.exists() and not _dead_temps(path):
        return
    try:
        with _folder_lock(path.parent):
            if journal.exists():
                _roll_forward(path, journal)
            for tmp in _dead_temps(path):
                tmp.unlink()
    except OSError as err:
        logger.warning("%s: cannot finish an interrupted write here (%s)", path, err)


def _write_journal(journal: Path, renames: list[list[str]]) -> None:
    tmp = journal.with_name(f"{_TMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}-{journal.name}")  # removed by recovery once its writer is dead
    try:
        tmp.write_text(json.dumps({"schema": JOURNAL_SCHEMA, "renames": renames}), encoding="utf-8")
        _fsync_file(tmp)
        os.replace(tmp, journal)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(journal.parent)


@contextlib.contextmanager
def staged_pair(path: str | Path) -> Iterator[tuple[Path, Path]]:
    """Yield temporary paths ``(file, sidecar)`` for ``path``; when the block succeeds, commit both.

    The caller writes the complete file to the first path and its sidecar to the second. On an exception
    in the block both temporary files are removed and ``path`` and its sidecar are untouched.

    Raises:
        ProvenanceError: The sidecar destination is a directory, or committing failed (then neither the new
            file nor its temporary files are left; the old sidecar may remain, describing no file).
    """
    path = Path(path)
    side = path.with_name(_sidecar_name(path.name))
    if side.is_dir():
        raise ProvenanceError(f"{path}: cannot write the provenance sidecar {side.name}: it is a directory; nothing written")
    recover_pair(path)
    token = f"{_TMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}-"
    tmp_file, tmp_side = path.with_name(token + path.name), side.with_name(token + side.name)
    try:
        yield tmp_file, tmp_side
        for tmp in (tmp_file, tmp_side):
            if not tmp.is_file():
                raise ProvenanceError(f"{path}: the writer produced no {'sidecar' if tmp is tmp_side else 'file'}")
            _fsync_file(tmp)
        _pause("staged")
        _commit(path, side, tmp_file, tmp_side)
    finally:
        for tmp in (tmp_file, tmp_side):
            with contextlib.suppress(OSError):
                tmp.unlink()


def _commit(path: Path, side: Path, tmp_file: Path, tmp_side: Path) -> None:
    journal = journal_path(path)
    with _folder_lock(path.parent):
        _write_journal(journal, [[tmp_file.name, path.name], [tmp_side.name, side.name]])
        _pause("journaled")
        renamed = False
        try:
            os.replace(tmp_file, path)
            renamed = True
            _pause("between-renames")
            os.replace(tmp_side, side)
            fsync_dir(path.parent)
        except OSError as err:
            if renamed:  # a new file with the old sidecar would disagree: remove the new file
                with contextlib.suppress(OSError):
                    path.unlink()
            with contextlib.suppress(OSError):
                journal.unlink()
            raise ProvenanceError(f"{path}: writing the file and its provenance sidecar failed ({err}); nothing written") from err
        _pause("renamed")
        journal.unlink()
        fsync_dir(path.parent)
