"""Helpers shared by the ``medgen`` commands (the one module they share; no command imports another): the
``--device`` option, how an error ends a run, argparse value types, preview and output path checks, and the
``--format`` option with the bundle run that writes NIfTI/NRRD or a DICOM series.

Nothing here imports torch, MONAI or the image readers at import time (``medgen --help`` must stay fast); the
functions import them when a command runs.

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
import json
import math
import os
import re
import shutil
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medgen_core.errors import ImageWriteError, MedGenError, ProvenanceError

if TYPE_CHECKING:
    from medgen_core.bundles import BundleInfo
    from medgen_core.io import Volume

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
    "FORMATS",
    "OPTIONAL_PACKAGES",
    "add_device_argument",
    "add_output_format_arguments",
    "check_device",
    "check_output",
    "check_output_path",
    "check_preview_path",
    "device_override",
    "fraction",
    "missing_package_message",
    "non_negative_float",
    "non_negative_int",
    "nonempty_path",
    "one_line",
    "positive_float",
    "positive_int",
    "DEFAULT_ADAPT_SECONDS",
    "DEFAULT_ADAPT_STEPS",
    "report_error",
    "resolve_device",
    "run_bundle_to_output",
    "strength",
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


# --- command-line values ----------------------------------------------------------------------------------
# argparse types that refuse out-of-range numbers (argparse prints the one line, exit code 2), and the run-time
# check of preview paths (a MedGenError, exit code 2).


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
#: Per-scan adaptation defaults of ``medgen upscale --axes through`` and the demo (the same as the library's and the bundle's, a test checks):
#: at most this many Adam steps within at most this many seconds. On the weakest MNI cell (5 mm sagittal) 800 / 1400 /
#: 2000 steps gain +1.92 / +2.01 / +2.07 dB over the B-spline; 1500 steps take about 30 s on 2 quiet cores.
DEFAULT_ADAPT_SECONDS, DEFAULT_ADAPT_STEPS = 45.0, 1500

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


# --- outputs --------------------------------------------------------------------------------------------
# ``--format {auto,nifti,nrrd,dicom}`` for the commands that write a generated image (upscale, translate): NIfTI
# and NRRD are written by the bundle itself. For DICOM the bundle runs into a temporary NRRD inside a temporary
# folder (NRRD rather than NIfTI: its header keeps the affine in full float64 precision, NIfTI's sform is float32);
# that volume and the record the bundle wrote for it (the real generator, weights hash, parameters and input) are
# then written as a DICOM series with :func:`medgen_core.provenance.dicom_output.write_generated_dicom_series`.


def check_output_path(input_path: Path, output_path: Path) -> None:
    """Refuse early (before any compute) an unsupported output format or an output that is the input."""
    from medgen_core.io import SUPPORTED_WRITE_SUFFIXES, format_of
    from medgen_core.io import check_output_path as check_output_files

    fmt = format_of(output_path)
    if fmt is None or fmt[1] not in SUPPORTED_WRITE_SUFFIXES:
        raise ImageWriteError(f"{output_path}: unsupported output format; expected one of {', '.join(SUPPORTED_WRITE_SUFFIXES)}.")
    check_output_files([input_path], output_path)  # every file of the input (detached data, DICOM folder), links, loops, read-only


FORMATS = ("auto", "nifti", "nrrd", "dicom")


def add_output_format_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--format`` and ``--keep-patient-ids``."""
    parser.add_argument("--format", default="auto", choices=FORMATS,
                        help="output format: 'auto' (default) from the output suffix (.nii, .nii.gz, .nrrd); "
                             "'dicom' writes a DICOM series into the folder OUTPUT (new or empty)")
    parser.add_argument("--keep-patient-ids", action="store_true",
                        help="--format dicom with a DICOM input: copy patient name/ID/birth date/sex and study "
                             "identifiers into the series (default: anonymous values)")


def check_output(input_path: Path, output_path: Path, fmt: str, keep_patient_ids: bool = False) -> str:
    """The output format (``nifti``, ``nrrd`` or ``dicom``), refusing bad requests before any compute.

    Raises:
        ImageWriteError: Unknown or mismatched suffix, an output that is the input, or a DICOM
            folder that exists and is not empty (or is the input folder).
    """
    from medgen_core.io import SUPPORTED_WRITE_SUFFIXES, check_output_folder, check_output_path as check_output_files, format_of

    known = format_of(output_path)
    if fmt == "dicom":
        if known is not None:
            raise ImageWriteError(f"{output_path}: --format dicom writes a series into a folder; expected a folder name, not a {known[1]} file name.")
        if output_path.exists() and not output_path.is_dir():
            raise ImageWriteError(f"{output_path}: exists and is not a folder; --format dicom needs a new (or empty) folder.")
        if input_path.exists() and output_path.exists() and output_path.resolve() in (input_path.resolve(), input_path.resolve().parent):
            raise ImageWriteError(f"{output_path}: is the input folder; refusing to write into an input (choose a new folder).")
        if output_path.is_dir() and any(output_path.iterdir()):
            raise ImageWriteError(f"{output_path}: folder exists and is not empty; --format dicom needs a new (or empty) folder.")
        check_output_folder([input_path], output_path)  # links to input folders, symlink loops, read-only folders
        return "dicom"
    if keep_patient_ids:
        raise ImageWriteError(f"{output_path}: --keep-patient-ids applies to --format dicom only (NIfTI/NRRD outputs carry no patient identifiers).")
    if known is None or known[1] not in SUPPORTED_WRITE_SUFFIXES:
        raise ImageWriteError(f"{output_path}: unsupported output format; expected one of {', '.join(SUPPORTED_WRITE_SUFFIXES)}, "
                              "or --format dicom with a folder.")
    if fmt not in ("auto", known[0]):
        raise ImageWriteError(f"{output_path}: the suffix {known[1]} is {known[0].upper()}, not --format {fmt}.")
    check_output_files([input_path], output_path)  # every file of the input (detached data, DICOM folder), links, loops, read-only
    return known[0]


def run_bundle_to_output(
    bundle: BundleInfo,
    input_path: Path,
    output_path: Path,
    overrides: Mapping[str, Any],
    fmt: str,
    *,
    keep_patient_ids: bool = False,
    derivation_codes: Iterable[tuple[str, str, str]] = (),
) -> tuple[Path, Volume]:
    """Run the bundle and write its output in ``fmt``; returns the output path and the generated volume.

    The volume is in the bundle output's own voxel order (a DICOM series of a left-handed grid
    reads back with its slice order reversed, see :mod:`medgen_core.io.dicom_writer`).
    """
    from medgen_core.bundles import run_bundle_inference
    from medgen_core.io import read_volume

    if fmt != "dicom":
        out = run_bundle_inference(bundle, input_path, output_path, overrides)
        return out, read_volume(out)
    from medgen_core.provenance import GenerationMetadata, sidecar_path
    from medgen_core.provenance.dicom_output import write_generated_dicom_series

    work = Path(tempfile.mkdtemp(prefix="medgen-dicom-"))
    try:
        staged = run_bundle_inference(bundle, input_path, work / "generated.nrrd", overrides)
        result = read_volume(staged)
        try:
            record = json.loads(sidecar_path(staged).read_text(encoding="utf-8"))["record"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ProvenanceError(f"bundle {bundle.name} wrote no readable provenance record for its output ({err}).") from err
        metadata = GenerationMetadata.from_dict(record)
        write_generated_dicom_series(result, output_path, metadata, source=input_path,
                                     keep_patient=keep_patient_ids, derivation_codes=derivation_codes)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return output_path, result
