"""What scripts/check_installed_wheel.py and scripts/release_check.py share: running a step, a fresh virtual
environment with the wheel installed in it, and the working folder's lifetime.

Every failure is a :class:`CheckFailed` whose message is one line naming the step; ``details`` holds the tail of
the output that explains it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["DEFAULT_TORCH", "CheckFailed", "Installed", "clean_env", "finish", "install", "run", "tail", "working_folder"]

DEFAULT_TORCH = "torch==2.13.0"


class CheckFailed(RuntimeError):
    """A step failed; the message is one line, ``details`` the output that explains it."""

    def __init__(self, message: str, details: str = "") -> None:
        super().__init__(message)
        self.details = details


def tail(text: str, lines: int = 25) -> str:
    """The last ``lines`` lines of ``text``."""
    return "\n".join(text.strip().splitlines()[-lines:])


def run(cmd: list[str | Path], what: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 1800,
        ok_codes: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess:
    """Run ``cmd``; raise :class:`CheckFailed` naming ``what`` unless its exit code is in ``ok_codes``."""
    try:
        done = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as err:
        raise CheckFailed(f"{what}: timed out after {timeout:.0f} s", str(err.stdout or "") + str(err.stderr or "")) from None
    if done.returncode not in ok_codes:
        raise CheckFailed(f"{what}: exit code {done.returncode} (expected {' or '.join(map(str, ok_codes))}): {' '.join(map(str, cmd))}",
                          tail(done.stdout) + "\n" + tail(done.stderr))
    return done


@dataclass
class Installed:
    """A fresh virtual environment with the wheel installed, and a clean place to run it from."""

    venv: Path
    home: Path
    cwd: Path
    env: dict[str, str] = field(repr=False)

    @property
    def bin(self) -> Path:
        return self.venv / ("Scripts" if os.name == "nt" else "bin")

    @property
    def python(self) -> Path:
        return self.bin / ("python.exe" if os.name == "nt" else "python")

    def medgen(self, *args: str | Path, what: str, ok_codes: tuple[int, ...] = (0,), timeout: float = 900,
               extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        env = {**self.env, **(extra_env or {})}
        return run([self.bin / "medgen", *args], what, cwd=self.cwd, env=env, ok_codes=ok_codes, timeout=timeout)

    def py(self, *args: str | Path, what: str, timeout: float = 900, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return run([self.python, *args], what, cwd=self.cwd, env={**self.env, **(extra_env or {})}, timeout=timeout)


def clean_env(venv: Path, home: Path) -> dict[str, str]:
    """The caller's environment without MEDGEN_*, PYTHONPATH and virtual-environment variables; HOME at ``home``."""
    drop = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "CONDA_PREFIX", "PYTHONUSERBASE")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDGEN_") and k not in drop}
    bindir = venv / ("Scripts" if os.name == "nt" else "bin")
    env.update(HOME=str(home), USERPROFILE=str(home), PATH=f"{bindir}{os.pathsep}{env.get('PATH', '')}", VIRTUAL_ENV=str(venv),
               MPLBACKEND="Agg", PYTHONNOUSERSITE="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def install(wheel: Path, work: Path, torch_spec: str = DEFAULT_TORCH, extras: str = "") -> Installed:
    """A fresh venv under ``work`` (no system site packages): torch first, then ``wheel`` (``wheel[extras]`` when
    ``extras`` is given; by default the plain wheel, as a user installs it)."""
    venv, home, cwd = work / "venv", work / "home", work / "elsewhere"
    home.mkdir(parents=True, exist_ok=True)
    cwd.mkdir(parents=True, exist_ok=True)
    run([sys.executable, "-m", "venv", str(venv)], "venv: python -m venv")
    inst = Installed(venv, home, cwd, clean_env(venv, home))
    pip_env = {**inst.env, "HOME": os.environ.get("HOME", str(home))}  # pip keeps the user's cache
    run([inst.python, "-m", "pip", "install", "-q", torch_spec], f"venv: pip install {torch_spec}", cwd=cwd, env=pip_env)
    target = f"{wheel}[{extras}]" if extras else str(wheel)
    run([inst.python, "-m", "pip", "install", "-q", target], f"venv: pip install {Path(target).name}", cwd=cwd, env=pip_env)
    return inst


def working_folder(work: Path | None, prefix: str) -> Path:
    """``work`` (created), or a new temporary folder named ``prefix...``."""
    folder = (work or Path(tempfile.mkdtemp(prefix=prefix))).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def finish(what: str, failures: list[str], work: Path, started: float, *, keep: bool, given: bool) -> int:
    """Print the verdict of a run that began at ``started`` (``time.monotonic()``) and return its exit code: 1 with
    every failure listed (the working folder is kept), or 0, removing the working folder unless it was asked for
    (``--work``) or ``--keep``."""
    if failures:
        print(f"\n{what} FAILED ({len(failures)}), working folder kept: {work}", file=sys.stderr)
        for line in failures:
            print(f"  - {line}", file=sys.stderr)
        return 1
    print(f"\n{what} passed in {time.monotonic() - started:.0f} s")
    if not keep and not given:
        shutil.rmtree(work, ignore_errors=True)
    return 0
