"""Helpers shared by the ``medgen`` commands: the ``--device`` option, and how an error ends a run.

Nothing here imports torch at import time (``medgen --help`` must stay fast); :func:`check_device` imports
it when a command runs.

Exit codes of every command (``medgen --help`` lists them too):

* 0: success.
* 1: the command ran and its answer is no (``bundle check``: checks failed; ``provenance verify``: modified;
  ``provenance detect``: no mark found).
* 2: bad input, with one ``medgen: error: ...`` line that names what is wrong: a file (missing, corrupt,
  unsupported), a bundle (broken, weights whose sha256 does not match), or a value that cannot be used (not a
  number, out of range, not one of the choices, ``--device cuda`` without CUDA), or an optional package that is
  not installed.
* 3, 4, 5, 6: ``provenance verify`` statuses (missing, unsigned, forged, intact but untrusted key).
* 64: a usage error (``EX_USAGE`` of sysexits.h), one line: the command line itself is malformed (unknown
  command or option, a missing or extra argument, an option without its value, options that exclude each other).
* 70: an unexpected error (a bug, or the machine ran out of memory or disk): one line; ``--debug`` prints
  the full traceback.
* 130: interrupted (Ctrl-C); 141: the reader of stdout went away (``medgen bundle list | head``).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import traceback

from medgen_core.errors import MedGenError

__all__ = [
    "DEVICE_CHOICES",
    "EXIT_BROKEN_PIPE",
    "EXIT_FAILED",
    "EXIT_INTERNAL",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "EXIT_USER",
    "EXIT_CODES_HELP",
    "OPTIONAL_PACKAGES",
    "add_device_argument",
    "check_device",
    "device_override",
    "missing_package_message",
    "one_line",
    "report_error",
    "resolve_device",
]

EXIT_OK = 0
#: The command ran and its answer is no (checks failed, file modified, mark not found).
EXIT_FAILED = 1
#: Bad input: a file, a bundle or a value that cannot be used; one line on stderr (the bad-input corpus relies on it).
EXIT_USER = 2
#: A malformed command line (``EX_USAGE`` of sysexits.h): unknown command or option, missing or extra arguments.
EXIT_USAGE = 64
#: An unexpected exception (``EX_SOFTWARE`` of sysexits.h), outside the codes that commands give answers with.
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130
#: stdout was closed by its reader (128 + SIGPIPE, as a shell reports a process killed by it).
EXIT_BROKEN_PIPE = 141

EXIT_CODES_HELP = ("exit codes: 0 success; 1 the command's answer is no (bundle check failed, provenance modified, "
                   "mark not found); 2 bad input: a file, bundle or value that cannot be used (one 'medgen: error:' "
                   "line); 3-6 provenance verify statuses; 64 usage error: unknown command or option, missing or extra "
                   "argument; 70 unexpected error (--debug shows the traceback); 130 interrupted")

#: Optional packages and the extra of ``medgen`` that installs each.
OPTIONAL_PACKAGES = {"transformers": "sd", "dipy": "data"}

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"
_DEVICE = re.compile(r"^(?:auto|cpu|cuda(?::\d+)?)$")


def one_line(message: object) -> str:
    """``message`` on one line: its non-empty lines joined with ``; `` (library messages may span lines)."""
    parts = [part.strip() for part in str(message).splitlines() if part.strip()]
    return re.sub(r":\s*;\s*", ": ", "; ".join(parts))


# --- devices ----------------------------------------------------------------------------------------------


def add_device_argument(parser: argparse.ArgumentParser, default: str = "auto", what: str = "compute device") -> None:
    """Add ``--device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``); the command calls :func:`check_device` when it runs.

    The value is checked at run time, not by argparse, so that a refusal is one line with exit code 2 on every route
    (argparse would raise ``SystemExit`` from inside :func:`medgen_core.cli.main.main`).
    """
    auto = "auto: CUDA when available, else the CPU; " if default == "auto" or default is None else ""
    parser.add_argument("--device", default=default, metavar="DEVICE",
                        help=f"{what}: {DEVICE_CHOICES} ({auto}default {default})")


def check_device(device: str, option: str = "--device") -> None:
    """Refuse a device that cannot be used here, in one line: not ``auto``/``cpu``/``cuda``/``cuda:N``, or CUDA where
    torch sees no GPU (or fewer than N + 1). Call it before loading any model or reading large inputs.

    Raises:
        MedGenError: the value and what was expected (``medgen`` prints it with exit code 2).
    """
    text = str(device)
    if not _DEVICE.match(text):
        raise MedGenError(f"{option} {text!r} is not a torch device; expected {DEVICE_CHOICES}")
    if not text.startswith("cuda"):
        return
    import torch

    if not torch.cuda.is_available():
        build = "this torch build has no CUDA support" if torch.version.cuda is None else "no CUDA GPU is visible"
        raise MedGenError(f"{option} {text}: CUDA is not available ({build}); use {option} cpu or {option} auto")
    index = int(text.partition(":")[2] or 0)
    if index >= torch.cuda.device_count():
        raise MedGenError(f"{option} {text}: there are only {torch.cuda.device_count()} CUDA device(s) (cuda:0 to "
                          f"cuda:{torch.cuda.device_count() - 1})")


def resolve_device(device: str) -> str:
    """``auto`` as a concrete device (``cuda`` when available, else ``cpu``); any other value unchanged."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def device_override(device: str) -> dict:
    """The bundle config override for ``--device`` (none for ``auto``: the bundle picks CUDA only when available)."""
    if device == "auto":
        return {}
    return {"device": f"$torch.device('{device}')"}


# --- errors -----------------------------------------------------------------------------------------------


def _chain(err: BaseException):
    """``err`` and its causes, outermost first (MONAI wraps the real error in ``RuntimeError``\\ s)."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or (None if err.__suppress_context__ else err.__context__)


def missing_package_message(err: BaseException, command: str = "medgen") -> str | None:
    """One line for a package that is not installed (``ModuleNotFoundError`` anywhere in ``err``'s chain), with the
    command that installs it; ``None`` when ``err`` is not about a missing package."""
    for cause in _chain(err):
        name = getattr(cause, "name", None) if isinstance(cause, ModuleNotFoundError) else None
        if not name or name.split(".")[0] == "medgen_core":
            continue
        package = name.split(".")[0]
        if package in OPTIONAL_PACKAGES:
            return (f"{command} needs the optional package '{package}', which is not installed; "
                    f"install it with: pip install 'medgen[{OPTIONAL_PACKAGES[package]}]'")
        return f"{command} needs the package '{package}', which is not installed (a medgen dependency); reinstall medgen: pip install medgen"
    return None


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that Python's flush at exit does not raise BrokenPipeError again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout is not a real file (captured in-process)
        pass


def _close_progress_bars() -> None:
    """Close the progress bars an error left open, so that the error starts a line of its own (tqdm ends a bar's
    line only when it closes)."""
    tqdm_module = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm_module, "tqdm", None), "_instances", ()) or ()):
        try:
            bar.close()
        except Exception:  # noqa: BLE001 - a bar that cannot close must not hide the error
            pass


def report_error(err: BaseException, *, debug: bool = False, command: str = "medgen") -> int:
    """Print ``err`` as one ``medgen: error: ...`` line on stderr (after the full traceback when ``debug``) and
    return the exit code: 2 for a :class:`MedGenError` (also when a library wrapped one) or a missing package,
    130 for Ctrl-C, 141 (and no message) for a closed stdout, 70 for anything else."""
    _close_progress_bars()
    if debug:
        traceback.print_exception(err, file=sys.stderr)
    if isinstance(err, KeyboardInterrupt):
        print("medgen: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    if isinstance(err, BrokenPipeError):  # the reader of stdout went away (medgen bundle list | head): stop quietly
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    user_error = next((cause for cause in _chain(err) if isinstance(cause, MedGenError)), None)
    if user_error is not None:
        print(f"medgen: error: {one_line(user_error)}", file=sys.stderr)
        return EXIT_USER
    missing = missing_package_message(err, command)
    if missing is not None:
        print(f"medgen: error: {missing}", file=sys.stderr)
        return EXIT_USER
    root = list(_chain(err))[-1]
    detail = one_line(root) or "(no message)"
    if len(detail) > 400:
        detail = detail[:400] + " ..."
    hint = "" if debug else "; run again with --debug for the full traceback"
    print(f"medgen: error: unexpected {type(root).__name__} in {command}: {detail}{hint}", file=sys.stderr)
    return EXIT_INTERNAL
