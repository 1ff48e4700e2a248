"""Build the ``medgen`` command line for one generation request (upscale, translate, augment)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

__all__ = [
    "ACTIONS",
    "UPSCALE_AXES",
    "Command",
    "Device",
    "GenerationRequest",
    "build_command",
    "detect_cuda_gpus",
    "device_advice",
    "medgen_executable",
    "python_executable",
    "variant_output_paths",
]

#: The actions MedGen bundles declare in ``metadata["medgen"]["action"]``, in button order.
ACTIONS: tuple[str, ...] = ("translate", "upscale", "augment")
DIRECTIONS: tuple[str, ...] = ("a2b", "b2a")
#: ``medgen upscale --axes`` values the module offers.
UPSCALE_AXES: tuple[str, ...] = ("inplane", "all", "through")


class Device(str, Enum):
    """Where the child process computes: ``auto`` (CUDA if the child finds it), force ``cpu``, or ``cuda``."""

    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"


@dataclass(frozen=True)
class GenerationRequest:
    """One run of ``medgen <action> INPUT OUTPUT ...``.

    Args:
        action: ``"upscale"``, ``"translate"`` or ``"augment"``.
        input_path, output_path: files the CLI reads and writes (NRRD in the module).
        bundle: bundle name (``--bundle``); ``None`` uses the CLI's default (upscale only).
        scale: upscaling factor (upscale).
        variant: explicit bundle variant (upscale/augment), overrides ``scale``.
        direction: ``"a2b"`` or ``"b2a"`` for two-way translate bundles; ``None`` for one-way ones.
        seed: random seed (augment).
        strength: image-to-image strength in (0, 1] (augment); ``None`` uses the bundle's default.
        count: number of variants (augment); with more than one, the CLI writes
            :func:`variant_output_paths` instead of ``output_path``.
        device: :class:`Device`; ``cpu`` also hides GPUs from the child (``CUDA_VISIBLE_DEVICES=-1``).
        axes: upscale ``"inplane"`` (``--scale``) or ``"through"`` (along the slice axis, ``--axes through``).
        target_spacing: through: output spacing in mm (``--target-spacing``); ``None`` = the in-plane spacing.
        adapt_seconds: through: per-scan adaptation budget (``--adapt-seconds``, 0 disables); ``None`` = the CLI's default.
        gate: upscale: the never-worse gate; ``False`` passes ``--no-gate``.
        extra_args: appended verbatim (advanced use).
    """

    action: str
    input_path: Path
    output_path: Path
    bundle: str | None = None
    scale: int = 2
    variant: str | None = None
    direction: str | None = None
    seed: int | None = None
    strength: float | None = None
    count: int = 1
    device: Device = Device.AUTO
    axes: str = "inplane"
    target_spacing: float | None = None
    adapt_seconds: float | None = None
    gate: bool = True
    extra_args: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"unknown action {self.action!r}; expected one of {', '.join(ACTIONS)}")
        if self.action == "translate" and not self.bundle:
            raise ValueError("translate needs a bundle name")
        if self.action == "translate" and self.direction not in (None, *DIRECTIONS):
            raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}, got {self.direction!r}")
        if int(self.count) < 1 or (self.action != "augment" and int(self.count) != 1):
            raise ValueError(f"count (number of variants) must be >= 1 and is for augment only, got {self.count} for {self.action}")
        if self.action == "augment" and self.strength is not None and not 0.0 < float(self.strength) <= 1.0:
            raise ValueError(f"strength must be in (0, 1], got {self.strength}")
        if self.action == "upscale" and int(self.scale) < 2:
            raise ValueError(f"scale must be >= 2, got {self.scale}")
        if self.axes not in UPSCALE_AXES:
            raise ValueError(f"axes must be one of {', '.join(UPSCALE_AXES)}, got {self.axes!r}")
        if (self.target_spacing is not None or self.adapt_seconds is not None) and (self.action != "upscale" or self.axes != "through"):
            raise ValueError("target_spacing and adapt_seconds are for upscale with axes='through' only")
        if self.target_spacing is not None and not float(self.target_spacing) > 0:
            raise ValueError(f"target_spacing must be > 0 mm, got {self.target_spacing}")
        if self.adapt_seconds is not None and not float(self.adapt_seconds) >= 0:
            raise ValueError(f"adapt_seconds must be >= 0, got {self.adapt_seconds}")
        object.__setattr__(self, "device", Device(self.device))


@dataclass(frozen=True)
class Command:
    """A ready-to-run command: ``argv`` and the full child environment ``env``."""

    argv: list[str]
    env: dict[str, str]

    def display(self) -> str:
        """Shell-like one-line rendering for the log box."""
        return subprocess.list2cmdline(self.argv)


def python_executable() -> str:
    """The Python to run ``-m medgen_core.cli.main`` with.

    Inside Slicer ``sys.executable`` is ``python-real`` (no launcher environment), so ``PythonSlicer``
    on the PATH is preferred there; elsewhere it is ``sys.executable``.
    """
    if "python-real" in Path(sys.executable).name:
        found = shutil.which("PythonSlicer")
        if found:
            return found
    return sys.executable


def medgen_executable(configured: str | os.PathLike[str] | None = None) -> list[str]:
    """argv prefix for the CLI: a configured ``medgen`` executable, else ``[python, -m, medgen_core.cli.main]``."""
    if configured:
        return [str(configured)]
    return [python_executable(), "-m", "medgen_core.cli.main"]


def variant_output_paths(request: GenerationRequest) -> list[Path]:
    """The files the CLI writes for ``request``: ``output_path``, or ``<stem>_variant<i><ext>`` for several variants."""
    out = Path(request.output_path)
    if int(request.count) == 1:
        return [out]
    ext = ".nii.gz" if out.name.endswith(".nii.gz") else out.suffix
    return [out.with_name(f"{out.name[: -len(ext)]}_variant{i + 1}{ext}") for i in range(int(request.count))]


def _action_args(request: GenerationRequest) -> list[str]:
    if request.action == "augment":  # one variant of the input: ``medgen augment variants INPUT --output OUTPUT``
        args = ["augment", "variants", str(request.input_path), "--output", str(request.output_path)]
    else:
        args = [request.action, str(request.input_path), str(request.output_path)]
    if request.bundle:
        args += ["--bundle", request.bundle]
    if request.action == "upscale":
        args += ["--scale", str(int(request.scale))]
        if request.variant:
            args += ["--variant", request.variant]
        if request.axes != "inplane":
            args += ["--axes", request.axes]
        if request.target_spacing is not None:
            args += ["--target-spacing", repr(float(request.target_spacing))]
        if request.adapt_seconds is not None:
            args += ["--adapt-seconds", repr(float(request.adapt_seconds))]
        if not request.gate:
            args.append("--no-gate")
    elif request.action == "translate" and request.direction:
        args += ["--direction", request.direction]
    elif request.action == "augment":
        if request.seed is not None:
            args += ["--seed", str(int(request.seed))]
        if request.strength is not None:
            args += ["--strength", repr(float(request.strength))]
        if int(request.count) > 1:
            args += ["--k", str(int(request.count))]
    return args


def build_command(
    request: GenerationRequest,
    executable: Sequence[str] | None = None,
    base_env: Mapping[str, str] | None = None,
) -> Command:
    """The ``medgen`` argv (with ``--progress json`` and the device flag) and its environment.

    Args:
        request: what to run.
        executable: argv prefix; default :func:`medgen_executable`.
        base_env: environment to start from; default ``os.environ``.
    """
    argv = list(executable or medgen_executable()) + _action_args(request)
    argv += ["--device", request.device.value, "--progress", "json", *request.extra_args]
    env = dict(os.environ if base_env is None else base_env)
    env["MEDGEN_PROGRESS"] = "json"
    env["PYTHONUNBUFFERED"] = "1"
    if request.device is Device.CPU:
        env["CUDA_VISIBLE_DEVICES"] = "-1"
    return Command(argv=argv, env=env)


def detect_cuda_gpus(timeout_s: float = 5.0) -> list[tuple[str, int]]:
    """``(name, memory MiB)`` of NVIDIA GPUs from ``nvidia-smi`` (no torch import); ``[]`` if none or unknown."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return []
    try:
        out = subprocess.run(
            [exe, "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=timeout_s, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.splitlines():
        name, _, mem = line.rpartition(",")
        if name.strip() and mem.strip().isdigit():
            gpus.append((name.strip(), int(mem.strip())))
    return gpus


def device_advice(gpus: Sequence[tuple[str, int]], low_memory_mib: int = 7500) -> str:
    """One line about the compute device for the GUI (CPU fallback, low GPU memory)."""
    if not gpus:
        return "No NVIDIA GPU found: models run on the CPU (slower; fine for small volumes)."
    name, memory = max(gpus, key=lambda g: g[1])
    text = f"GPU: {name} ({memory / 1024:.0f} GB)."
    if memory < low_memory_mib:
        text += " Less than 8 GB: use 'Force CPU' if large volumes run out of memory."
    return text
