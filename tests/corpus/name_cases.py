"""File and folder names that MONAI's config parser would treat as code or references: ``$`` expressions,
``%`` file macros, ``@`` references and ``@#`` ids, as inputs, outputs and folders of ``medgen upscale``,
``medgen translate`` and ``medgen bundle run``.

A path is data: every case must succeed and write exactly the named file, with the payload never run
(each payload tries to create a ``PWNED_*`` marker in the case folder, the current directory).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .common import ok, upscale
from .files import label_map, nifti
from .model import MARKER_PREFIX, Action, Case

__all__ = ["CASES"]

PIX2PIX = "brain_tissue_to_t1_pix2pix"


def _dollar(tag: str) -> str:
    return f"$__import__('os').system('touch {MARKER_PREFIX}_{tag}')"


#: ``%evil.json#payload.nii.gz`` as a macro would import ``payload.nii.gz`` from ``evil.json``: a $ expression
PERCENT = "%evil.json#payload.nii.gz"


def _evil_json() -> None:
    Path("evil.json").write_text(json.dumps({"payload.nii.gz": _dollar("percent")}))


def _write_input(name: str, labels: bool) -> str:
    Path(name).parent.mkdir(parents=True, exist_ok=True)
    nifti(name, label_map(), np.diag([2.0, 2.0, 2.0, 1.0])) if labels else nifti(name)
    return name


def _command(tool: str, source: str, output: str) -> list[str]:
    if tool == "upscale":
        return upscale(source, output)
    if tool == "translate":
        return ["translate", source, output, "--bundle", PIX2PIX]
    return ["bundle", "run", "brain_mri_super_resolution", source, output]


def _case(tool: str, tag: str, doc: str, source: str, output: str) -> Case:
    def build(folder: Path) -> Action:
        _evil_json()
        _write_input(source, labels=tool == "translate")
        if Path(output).parent != Path("."):
            Path(output).parent.mkdir(parents=True, exist_ok=True)
        return _command(tool, source, output)

    return Case(f"name_{tool}_{tag}", "names", doc, build, ok(output))


def _cases(tool: str) -> list[Case]:
    return [
        _case(tool, "dollar_input", f"{tool}: input file named like a $ expression", _dollar(f"{tool}_in") + ".nii.gz", "out.nii.gz"),
        _case(tool, "dollar_output", f"{tool}: output file named like a $ expression", "scan.nii.gz", _dollar(f"{tool}_out") + ".nii.gz"),
        _case(tool, "dollar_folder", f"{tool}: input and output folders named like $ expressions",
              _dollar(f"{tool}_dir_in") + "/scan.nii.gz", _dollar(f"{tool}_dir_out") + "/out.nii.gz"),
        _case(tool, "percent_input", f"{tool}: input named like a % macro that imports a $ expression", PERCENT, "out.nii.gz"),
        _case(tool, "percent_output", f"{tool}: output named like a % macro", "scan.nii.gz", PERCENT),
        _case(tool, "at_reference_output", f"{tool}: output named like an @ reference to the input", "scan.nii.gz", "@input_file.nii.gz"),
        _case(tool, "at_hash_output", f"{tool}: output named '@#x.nii.gz' (an @# id): written under that exact name", "scan.nii.gz",
              "@#x.nii.gz"),
        _case(tool, "at_hash_input", f"{tool}: input named '@#scan.nii.gz': read under that exact name", "@#scan.nii.gz", "out.nii.gz"),
    ]


CASES: list[Case] = [*_cases("upscale"), *_cases("translate"),
                     _case("bundle_run", "dollar_paths", "bundle run: input and output named like $ expressions",
                           _dollar("run_in") + ".nii.gz", _dollar("run_out") + ".nii.gz")]
