"""Conformance checks that execute a bundle's configs, each in a subprocess.

* :func:`run_zoo_steps`: the Model Zoo's full-mode steps and MedGen's two network checks
  (:mod:`medgen_core.bundles.zoo_verify`, run as ``python -m medgen_core.bundles.zoo_ci``), all in one
  subprocess, with the zoo's own defaults: nothing in the bundle's metadata changes them.
* :func:`check_run`: MedGen's end-to-end check, ``python -m monai.bundle run`` on a sample volume. It is the
  only check that reads ``"medgen": {"check_args": {"run": {"args": {...}, "reason": "..."}}}`` (for
  example a bundle that needs a label map as input names its sample file there).

These commands execute the bundle's configs: :func:`~medgen_core.bundles.conformance.run_checks` runs
them only after the config inspection passed. Paths that become config values (``bundle_root``,
``input_file``, ``output_file``) are passed as literals (:func:`~medgen_core.bundles.overrides.literal`),
which MONAI's command line evaluates to the exact path. This module imports nothing from
:mod:`~medgen_core.bundles.conformance` (the dependency points one way: conformance -> monai_checks -> zoo_verify).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from medgen_core.bundles.catalog import read_metadata
from medgen_core.bundles.overrides import literal
from medgen_core.bundles.zoo_verify import STEPS, ZooStep

__all__ = ["check_args", "check_run", "monai_bundle_command", "run_zoo_steps"]

TIMEOUT_S = 600


def check_args(bundle_root: str | Path, command: str = "run") -> dict[str, Any]:
    """Extra arguments for MedGen's ``run`` check recorded in the metadata (``medgen.check_args.run.args``).

    No zoo step reads them; any other command is refused.
    """
    if command != "run":
        raise ValueError(f"check_args: only MedGen's 'run' check takes arguments from the metadata, not {command!r} (the zoo uses its own defaults).")
    entry = read_metadata(bundle_root).get("medgen", {}).get("check_args", {}).get(command, {})
    return dict(entry.get("args", {})) if isinstance(entry, dict) else {}


def _cli_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value)
    return value if isinstance(value, str) else json.dumps(value)


def monai_bundle_command(command: str, args: dict[str, Any], cwd: str | Path, timeout: float = TIMEOUT_S) -> tuple[int, str]:
    """Run ``python -m monai.bundle <command> --key value ...`` on the CPU; return ``(exit code, output)``."""
    argv = [sys.executable, "-m", "monai.bundle", command]
    for key, value in args.items():
        argv += [f"--{key}", _cli_value(value)]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    try:
        done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=timeout)
    except subprocess.TimeoutExpired:
        return 124, f"timed out after {timeout:.0f} s"
    return done.returncode, done.stdout + done.stderr


def _failure_text(code: int, output: str) -> str:
    """The exit code and the last exception printed (with its message lines), in one line."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    starts = [i for i, ln in enumerate(lines) if re.match(r"^[\w.]*(Error|Exception)\b", ln)]
    message = " ".join(lines[starts[-1] : starts[-1] + 4]) if starts else (lines[-1] if lines else "no output")
    return f"exit {code}: {message[:500]}"


def _failure(command: str, code: int, output: str) -> str:
    """One line: the command, its exit code and the last exception it printed."""
    return f"`python -m monai.bundle {command}` failed ({_failure_text(code, output)})"


def _base_args(root: Path) -> dict[str, Any]:
    return {"meta_file": str(root / "configs" / "metadata.json"), "config_file": str(root / "configs" / "inference.json")}


def run_zoo_steps(bundle_root: str | Path, steps: list[str] | tuple[str, ...], work_dir: str | Path, timeout: float = TIMEOUT_S) -> dict[str, ZooStep]:
    """Run ``steps`` (names from :data:`~medgen_core.bundles.zoo_verify.STEPS`) in one subprocess and return
    their results by name; a crash or a timeout fails every step with one line that says so."""
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        raise ValueError(f"run_zoo_steps: unknown step(s) {unknown}; choose from {list(STEPS)}.")
    root, work = Path(bundle_root).absolute(), Path(work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    out = work / "zoo_results.json"
    argv = [sys.executable, "-m", "medgen_core.bundles.zoo_ci", str(root), "--steps", *steps, "--work-dir", str(work), "--json-out", str(out)]
    try:
        done = subprocess.run(argv, cwd=work, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=timeout)
        results = {r["name"]: ZooStep(**r) for r in json.loads(out.read_text(encoding="utf-8"))} if out.is_file() else {}
        why = "" if results else _failure_text(done.returncode, done.stdout + done.stderr)
    except subprocess.TimeoutExpired:
        results, why = {}, f"timed out after {timeout:.0f} s"
    return {s: results.get(s) or ZooStep(s, "fail", f"the zoo verification subprocess gave no result: {why}") for s in steps}


def _sample_volume(path: Path) -> Path:
    """A smooth positive 24x32x4 NIfTI volume (1 x 1 x 3 mm) standing in for a scan."""
    import nibabel as nib
    import numpy as np

    x, y, z = np.meshgrid(np.linspace(-1, 1, 24), np.linspace(-1, 1, 32), np.linspace(-1, 1, 4), indexing="ij")
    vol = (100 * np.exp(-(x**2 + y**2 + 0.5 * z**2) * 2) + 10 * np.cos(6 * x) ** 2).astype(np.float32)
    nib.save(nib.Nifti1Image(vol, np.diag([1.0, 1.0, 3.0, 1.0])), str(path))
    return path


def check_run(bundle_root: str | Path, work_dir: str | Path) -> list[str]:
    """``run`` the inference config on the CPU on a small sample volume; the output must exist, carry a
    provenance sidecar and verify as intact."""
    from medgen_core.provenance import sidecar_path, verify_provenance

    root, work = Path(bundle_root).resolve(), Path(work_dir).resolve()
    src, dst = _sample_volume(work / "sample_input.nii.gz"), work / "out" / "sample_output.nii.gz"
    args = {
        **_base_args(root),
        "logging_file": str(root / "configs" / "logging.conf"),
        "bundle_root": literal(str(root)),
        "input_file": literal(str(src)),
        "output_file": literal(str(dst)),
        "device": "$torch.device('cpu')",
        **check_args(root, "run"),
    }
    code, out = monai_bundle_command("run", args, root)
    if code != 0:
        return [_failure("run", code, out)]
    if not dst.is_file():
        return [f"run: finished but wrote no output at {dst} (the inference config must write @output_file)"]
    problems = []
    if not sidecar_path(dst).is_file():
        problems.append(f"run: the output has no provenance sidecar {sidecar_path(dst).name}")
    result = verify_provenance(dst)
    if result.status != "intact":
        problems.append(f"run: the output's provenance does not verify ({result.status}: {result.message})")
    return problems
