"""Actions that need other processes: a writer killed at a chosen commit, two writers of one output at once.

The child process is ``medgen`` with ``os.replace``/``os.rename`` wrapped: the wrapper counts the renames
whose destination is in the case folder (its ``home/`` excluded) and, at the chosen count, either SIGKILLs the
process (a crash with the temporary files written) or pauses it until released. This needs no hook inside
medgen, so it holds for any commit protocol built on renames.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from .model import Outcome

__all__ = ["concurrent_writers", "killed_writer"]

_CHILD = r"""
import os, signal, sys, time
mode, stop_at = sys.argv[1], int(sys.argv[2])
folder = os.path.realpath(os.getcwd())
home = os.path.join(folder, "home") + os.sep
done = [0]

def wrap(original):
    def rename(src, dst, *args, **kwargs):
        target = os.path.realpath(os.fspath(dst)) if "dst_dir_fd" not in kwargs else ""
        inside = target.startswith(folder + os.sep) and not target.startswith(home)
        if inside and done[0] == stop_at:
            if mode == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            open(os.environ["CORPUS_PAUSED"], "w").close()
            deadline = time.monotonic() + 90
            while not os.path.exists(os.environ["CORPUS_RELEASE"]) and time.monotonic() < deadline:
                time.sleep(0.01)
        result = original(src, dst, *args, **kwargs)
        if inside:
            done[0] += 1
        return result
    return rename

os.replace, os.rename = wrap(os.replace), wrap(os.rename)
from medgen_core.cli.main import main
sys.exit(main(sys.argv[3:]))
"""


def _child(mode: str, stop_at: int, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", _CHILD, mode, str(stop_at), *argv], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _plain(argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "medgen_core.cli.main", *argv], env=dict(os.environ), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _blocked_on_lock(pid: int) -> bool:
    try:
        return "lock" in Path(f"/proc/{pid}/wchan").read_text()
    except OSError:
        return False


def killed_writer(argv: list[str], after_commits: int) -> Callable[[Path], Outcome]:
    """SIGKILL ``medgen ARGV`` right before its ``after_commits + 1``-th rename into the case folder."""

    def action(folder: Path) -> Outcome:
        """medgen killed (SIGKILL) in the middle of writing its output pair"""
        proc = _child("kill", after_commits, argv, dict(os.environ))
        out, err = proc.communicate(timeout=120)
        return Outcome(proc.returncode, out, err)

    return action


def concurrent_writers(first: list[str], second: list[str]) -> Callable[[Path], Outcome]:
    """Two writers of the same output: the first pauses after its first rename into the folder while the second
    runs (until it finishes or waits on a lock), then both finish.

    The outcome is exit 0 when both succeed, or when one succeeds and the other refuses with exit code 2.
    """

    def action(folder: Path) -> Outcome:
        """two medgen processes write the same output at the same time (one paused between its renames)"""
        flags = Path(tempfile.mkdtemp(prefix="medgen-corpus-"))
        env = {**os.environ, "CORPUS_PAUSED": str(flags / "paused"), "CORPUS_RELEASE": str(flags / "release")}
        try:
            a = _child("pause", 1, first, env)
            deadline = time.monotonic() + 120
            while a.poll() is None and not (flags / "paused").exists() and time.monotonic() < deadline:
                time.sleep(0.02)
            b = _plain(second)
            deadline = time.monotonic() + 60
            while b.poll() is None and not _blocked_on_lock(b.pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            (flags / "release").touch()
            outputs = [p.communicate(timeout=120) for p in (a, b)]
            results = [(p.returncode, out, err) for p, (out, err) in zip((a, b), outputs)]
        finally:
            for flag in flags.iterdir():
                flag.unlink()
            flags.rmdir()
        codes = [rc for rc, _, _ in results]
        refusals_clean = all(len([ln for ln in err.splitlines() if ln.startswith("medgen: error:")]) == 1
                             for rc, _, err in results if rc == 2)
        rc = 0 if (0 in codes and set(codes) <= {0, 2} and refusals_clean) else next(c for c in codes if c != 0)
        return Outcome(rc, "\n".join(out for _, out, _ in results), "\n".join(f"[writer {i + 1} exit {c}] {err.strip()}"
                                                                            for i, (c, _, err) in enumerate(results)))

    return action
