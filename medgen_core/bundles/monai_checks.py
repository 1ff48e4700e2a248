"""Conformance checks that run MONAI's own bundle commands (``python -m monai.bundle ...``) in a subprocess.

Each ``check_*(bundle_root, work_dir)`` returns a list of problems (empty = passes). Extra arguments for
a command can be recorded in the bundle's metadata, with the reason, as
``"medgen": {"check_args": {"ckpt_export": {"args": {"use_trace": true}, "reason": "..."}}}``.

These commands execute the bundle's configs: :func:`~medgen_core.bundles.conformance.run_checks` runs
them only after the config inspection passed. Paths that become config values (``bundle_root``,
``input_file``, ``output_file``) are passed as literals (:func:`~medgen_core.bundles.overrides.literal`),
which MONAI's command line evaluates to the exact path.
"""

from __future__ import annotations

import ast
import json
import operator
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from medgen_core.bundles.catalog import read_metadata
from medgen_core.bundles.overrides import literal

__all__ = ["check_args", "check_ckpt_export", "check_run", "check_verify_metadata", "check_verify_net_in_out", "monai_bundle_command", "sample_input_shape"]

TIMEOUT_S = 600
# ckpt_export's own arguments; any other argument is a config override (``--id value``)
_EXPORT_ARGS = {"net_id", "filepath", "ckpt_file", "meta_file", "config_file", "key_in_ckpt", "use_trace", "input_shape", "converter_kwargs", "args_file"}


def check_args(bundle_root: str | Path, command: str) -> dict[str, Any]:
    """Extra arguments for ``command`` recorded in the metadata (``medgen.check_args.<command>.args``)."""
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


def _failure(command: str, code: int, output: str) -> str:
    """One line: the command, its exit code and the last exception it printed (with its message lines)."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    starts = [i for i, ln in enumerate(lines) if re.match(r"^[\w.]*(Error|Exception)\b", ln)]
    message = " ".join(lines[starts[-1] : starts[-1] + 4]) if starts else (lines[-1] if lines else "no output")
    return f"`python -m monai.bundle {command}` failed (exit {code}): {message[:500]}"


def _base_args(root: Path) -> dict[str, Any]:
    return {"meta_file": str(root / "configs" / "metadata.json"), "config_file": str(root / "configs" / "inference.json")}


def check_verify_metadata(bundle_root: str | Path, work_dir: str | Path) -> list[str]:
    """``verify_metadata`` against MedGen's offline copy of the zoo schema (no download)."""
    from medgen_core.bundles.conformance import SCHEMA_PATH

    root = Path(bundle_root).resolve()
    args = {"meta_file": str(root / "configs" / "metadata.json"), "filepath": str(SCHEMA_PATH), **check_args(root, "verify_metadata")}
    code, out = monai_bundle_command("verify_metadata", args, root)
    return [] if code == 0 else [_failure("verify_metadata", code, out)]


def check_verify_net_in_out(bundle_root: str | Path, work_dir: str | Path) -> list[str]:
    """``verify_net_in_out network_def`` on the CPU: the network accepts ``image`` and returns ``pred``."""
    root = Path(bundle_root).resolve()
    args = {"net_id": "network_def", **_base_args(root), "device": "cpu", **check_args(root, "verify_net_in_out")}
    code, out = monai_bundle_command("verify_net_in_out", args, root)
    return [] if code == 0 else [_failure("verify_net_in_out", code, out)]


def sample_input_shape(metadata: dict[str, Any]) -> tuple[int, ...]:
    """``(1, C, *spatial)`` for ``network_data_format.inputs.image``: ``"*"`` becomes 32, 40, 48 ...
    and expressions such as ``"16*n"`` or ``"2**p*n"`` are evaluated with ``n=2, p=4``."""
    spec = metadata["network_data_format"]["inputs"]["image"]
    spatial = []
    for i, dim in enumerate(spec["spatial_shape"]):
        if isinstance(dim, int):
            spatial.append(dim)
        elif dim == "*":
            spatial.append(32 + 8 * i)
        else:
            spatial.append(_arithmetic(str(dim), {"n": 2, "p": 4}))
    return (1, int(spec["num_channels"]), *spatial)


def _arithmetic(expr: str, names: dict[str, int]) -> int:
    """Value of a small integer expression such as ``"16*n"`` or ``"2**p*n"`` (no calls, no other names)."""
    ops = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.FloorDiv: operator.floordiv, ast.Pow: operator.pow}

    def value(node: ast.AST) -> int:
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.Name) and node.id in names:
            return names[node.id]
        if isinstance(node, ast.BinOp) and type(node.op) in ops:
            left, right = value(node.left), value(node.right)
            if isinstance(node.op, ast.Pow) and right > 16:
                raise ValueError("exponent too large")
            return int(ops[type(node.op)](left, right))
        raise ValueError(f"unsupported element {ast.dump(node)}")

    try:
        return value(ast.parse(expr, mode="eval").body)
    except (SyntaxError, ValueError) as err:
        raise ValueError(f"sample_input_shape: cannot make a sample size from spatial_shape entry {expr!r}: {err}.") from err


def _eager_network(root: Path, overrides: dict[str, Any]) -> Any:
    import torch
    from monai.bundle import ConfigParser

    from medgen_core.bundles.weights import load_state_dict_safely

    if str(root) not in sys.path:  # bundle-local scripts/ must be importable
        sys.path.insert(0, str(root))
    parser = ConfigParser()
    parser.read_meta(str(root / "configs" / "metadata.json"))
    parser.read_config(str(root / "configs" / "inference.json"))
    parser.update({"bundle_root": literal(str(root)), **overrides})
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(load_state_dict_safely(root / "models" / "model.pt"), strict=True)
    return net.to(torch.device("cpu")).eval()


def check_ckpt_export(bundle_root: str | Path, work_dir: str | Path) -> list[str]:
    """``ckpt_export network_def`` of ``models/model.pt`` to TorchScript, then compare the exported model
    with the eager network (same weights) on a random sample input (``atol=1e-5``)."""
    import torch

    root, work = Path(bundle_root).resolve(), Path(work_dir).resolve()
    ts_path = work / "model.ts"
    extra = check_args(root, "ckpt_export")
    args = {"net_id": "network_def", "filepath": str(ts_path), "ckpt_file": str(root / "models" / "model.pt"), **_base_args(root),
            "bundle_root": literal(str(root)), **extra}
    code, out = monai_bundle_command("ckpt_export", args, root)
    if code != 0 or not ts_path.is_file():
        return [_failure("ckpt_export", code, out)]
    try:
        exported = torch.jit.load(str(ts_path), map_location="cpu").eval()
        eager = _eager_network(root, {k: v for k, v in extra.items() if k not in _EXPORT_ARGS})
        shape = sample_input_shape(read_metadata(root))
        x = torch.rand(shape, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            want, got = eager(x), exported(x)
    except Exception as err:  # any failure here is a finding about the bundle, reported as one line
        return [f"ckpt_export: the exported {ts_path.name} could not be compared with the eager network: {type(err).__name__}: {err}"]
    if want.shape != got.shape:
        return [f"ckpt_export: TorchScript output shape {tuple(got.shape)} differs from eager {tuple(want.shape)} for input {shape}"]
    diff = float((want - got).abs().max())
    if diff > 1e-5:
        return [f"ckpt_export: TorchScript output differs from the eager network by {diff:.3g} (> 1e-5) for input {shape}"]
    return []


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
