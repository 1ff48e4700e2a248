"""Small pieces shared by the case modules: argv builders, the usual outcomes, a generated image."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from pathlib import Path

from .files import nifti
from .model import Action, Case, Error, Expected, Success

__all__ = ["OUT", "generated", "ok", "quiet_main", "upscale", "upscale_case"]

#: The output every image case writes.
OUT = "out.nii.gz"


def upscale(source: str, output: str = OUT, *options: str) -> list[str]:
    """``medgen upscale SOURCE OUTPUT [options]`` as argv (the default x2 model of the shipped SR bundle)."""
    return ["upscale", source, output, *options]


def ok(*outputs: str) -> Success:
    """Success that writes ``outputs`` (default :data:`OUT`), each verifying intact."""
    outputs = outputs or (OUT,)
    return Success(outputs, outputs)


def upscale_case(case_id: str, category: str, doc: str, write: Callable[[], str], expected: Expected, *options: str,
                 **kwargs: object) -> Case:
    """A case that writes one input with ``write()`` (returning its name) and upscales it to :data:`OUT`."""

    def build(folder: Path) -> Action:
        return upscale(write(), OUT, *options)

    return Case(case_id, category, doc, build, expected, **kwargs)


def error(names: str, *what: str) -> Error:
    """Bad input: exit code 2, one line naming ``names`` and saying one of ``what``."""
    return Error(names, tuple(what))


def usage_error(names: str, *what: str) -> Error:
    """A malformed command line (unknown option, missing argument): exit code 64, one line."""
    return Error(names, tuple(what), exit_code=64)


def quiet_main(argv: list[str]) -> int:
    """Run ``medgen`` in-process with its output swallowed (to build a case's files); raise if it fails."""
    from medgen_core.cli.main import main

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
        code = main(argv)
    if code != 0:
        raise RuntimeError(f"building the case: medgen {' '.join(argv)} exited {code}: {err.getvalue().strip()[-300:]}")
    return code


def generated(name: str, source: str = "source.nii.gz") -> Path:
    """A generated image ``name`` (``.nii.gz`` or ``.nrrd``) made by ``medgen upscale`` from a fresh small input."""
    if not Path(source).exists():
        nifti(source)
    quiet_main(upscale(source, name))
    return Path(name)
