"""First-use install of MedGen into Slicer's Python: checked without importing, installed only after asking.

Nothing is installed at import time or when the module loads. The install is first planned
(:func:`plan_install`, pure: versions in, commands out) and then carried out (:func:`execute_plan`) by an
injected ``pip_install`` (``slicer.util.pip_install`` in Slicer) and, for torch, the PyTorch extension's
installer when that extension is there. The Qt layer only asks once and shows the progress.

Order and what is skipped:

1. **torch** (first, so that pip later finds it satisfied and never pulls a multi-GB CUDA wheel from PyPI):
   skipped when a version ``>= TORCH_MINIMUM`` is installed; else through the PyTorch extension
   (``PyTorchUtilsLogic().installTorch``, which picks the build for the GPU) when it is installed; else the
   CPU build from the PyTorch CPU index.
2. **medgen**: skipped when installed and not older than the wheel bundled with the extension
   (``Resources/wheels/medgen-*.whl``); else that wheel if present, else ``medgen>=...`` from the
   package index, with any other unmet line of ``Resources/requirements.txt``. While pip runs, the
   installed torch, SimpleITK and requests are pinned by a constraints file, so Slicer's copies are never
   replaced (pip stops with a conflict message instead).

Afterwards a restart is recommended only if a distribution whose modules Slicer has already imported
changed version. MedGen itself always runs in a child process, which sees the new packages at once.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "CPU_TORCH_INDEX_URL",
    "PROTECTED",
    "TORCH_MINIMUM",
    "InstallError",
    "InstallPlan",
    "InstallResult",
    "InstallStep",
    "canonical_name",
    "execute_plan",
    "find_bundled_wheel",
    "install_torch_with_extension",
    "installed_versions",
    "meets_minimum",
    "missing_distributions",
    "parse_requirement",
    "plan_install",
    "pytorch_extension_available",
    "requirement_lines",
    "restart_recommended",
    "version_tuple",
    "wheel_version",
]

TORCH_MINIMUM = "2.4"
TORCH_REQUIREMENT = f">={TORCH_MINIMUM}"
CPU_TORCH_INDEX_URL = "https://download.pytorch.org/whl/cpu"
REQUIRED_DISTRIBUTIONS = ("torch", "medgen")
#: Distributions Slicer (or the PyTorch extension) owns: pinned to their installed versions while pip runs.
PROTECTED: tuple[str, ...] = ("torch", "SimpleITK", "requests")
CONSTRAINTS_NAME = "medgen-slicer-constraints.txt"

ProgressCallback = Callable[[int, int, str], None]
"""``(steps done, steps in all, message)``, called before each step and once at the end."""


class InstallError(RuntimeError):
    """A step of the install failed or left MedGen missing (one line: which step, what happened)."""


# -- versions and requirements -------------------------------------------------------------------
def canonical_name(name: str) -> str:
    """PEP 503 normalised distribution name (``SimpleITK`` -> ``simpleitk``, ``pytorch_ignite`` -> ``pytorch-ignite``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def version_tuple(version: str) -> tuple[int, ...]:
    """The release numbers of a version string (``"2.13.0+cpu"`` -> ``(2, 13, 0)``, ``"1.6.1rc1"`` -> ``(1, 6, 1)``)."""
    match = re.match(r"\s*v?(\d+(?:\.\d+)*)", str(version))
    if not match:
        raise ValueError(f"version {version!r} does not start with a release number (expected e.g. 2.4.0)")
    numbers = [int(part) for part in match.group(1).split(".")]
    while len(numbers) > 1 and numbers[-1] == 0:
        numbers.pop()
    return tuple(numbers)


def meets_minimum(version: str | None, minimum: str | None) -> bool:
    """True when ``version`` is installed and not older than ``minimum`` (``None``: any version)."""
    if version is None:
        return False
    return minimum is None or version_tuple(version) >= version_tuple(minimum)


def parse_requirement(line: str) -> tuple[str, str | None]:
    """``(name, minimum version or None)`` of a requirement line ``name`` or ``name>=X`` (extras kept in the name).

    Raises:
        ValueError: any other specifier (the extension uses minimum versions only, never pins).
    """
    text = line.split("#")[0].strip()
    match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*(?:\[[A-Za-z0-9,._-]+\])?)\s*(?:>=\s*([0-9][0-9A-Za-z.+!-]*))?", text)
    if not match:
        raise ValueError(f"requirement {line.strip()!r} is not 'name' or 'name>=version' (minimum versions only, no pins)")
    return match.group(1), match.group(2)


def requirement_lines(requirements_file: str | os.PathLike[str]) -> list[str]:
    """Requirement strings of a requirements.txt (comments and blank lines dropped)."""
    with open(requirements_file, encoding="utf-8") as handle:
        return [line.split("#")[0].strip() for line in handle if line.split("#")[0].strip()]


def installed_versions() -> dict[str, str]:
    """``{canonical name: version}`` of every distribution in this Python (``importlib.metadata``; nothing imported)."""
    importlib.invalidate_caches()
    versions: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"] if dist.metadata is not None else None
        if name:
            versions.setdefault(canonical_name(name), dist.version)
    return versions


def missing_distributions(names: Iterable[str] = REQUIRED_DISTRIBUTIONS) -> list[str]:
    """Distributions that are not installed (``importlib.metadata``; nothing is imported)."""
    missing = []
    for name in names:
        try:
            importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(name)
    return missing


# -- the bundled wheel ---------------------------------------------------------------------------
_WHEEL_NAME = re.compile(r"(?P<name>[^-]+)-(?P<version>[^-]+)(?:-\d[^-]*)?-[^-]+-[^-]+-[^-]+\.whl")


def wheel_version(path: str | os.PathLike[str]) -> str:
    """The version in a wheel's file name (PEP 427: ``name-version[-build]-python-abi-platform.whl``).

    Raises:
        ValueError: the file name is not a wheel name.
    """
    match = _WHEEL_NAME.fullmatch(Path(path).name)
    if not match:
        raise ValueError(f"{Path(path).name}: not a wheel file name (expected name-version-python-abi-platform.whl)")
    return match.group("version")


def find_bundled_wheel(folder: str | os.PathLike[str] | None, name: str = "medgen") -> Path | None:
    """The newest ``<name>-*-py3-none-any.whl`` in ``folder`` (the extension's ``Resources/wheels``), or ``None``."""
    if folder is None or not Path(folder).is_dir():
        return None
    wheels = []
    for path in Path(folder).glob(f"{name}-*.whl"):
        match = _WHEEL_NAME.fullmatch(path.name)
        if match and canonical_name(match.group("name")) == canonical_name(name) and path.name.endswith("-none-any.whl"):
            wheels.append((version_tuple(match.group("version")), path))
    return max(wheels)[1] if wheels else None


# -- the plan ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class InstallStep:
    """One command of the first-use install.

    Args:
        kind: ``"pytorch_extension"`` (``PyTorchUtilsLogic().installTorch(requirement)``) or ``"pip"``
            (``pip_install(list(pip_args) + constraint arguments)``).
        package: what the step provides (``"torch"`` or ``"medgen"``).
        description: one line for the confirmation and the progress dialog.
        pip_args: arguments after ``pip install`` (requirements, a wheel path, index options).
        requirement: version requirement handed to the PyTorch extension (``">=2.4"``).
        pin: distributions pinned to their installed versions by a constraints file during this step.
    """

    kind: str
    package: str
    description: str
    pip_args: tuple[str, ...] = ()
    requirement: str = ""
    pin: tuple[str, ...] = ()


@dataclass(frozen=True)
class InstallPlan:
    """What the install will do: ``steps`` in order, and what is ``skipped`` and why (one line each)."""

    steps: tuple[InstallStep, ...] = ()
    skipped: tuple[str, ...] = ()

    @property
    def needed(self) -> bool:
        return bool(self.steps)

    def summary(self) -> str:
        """Text for the one confirmation: numbered steps, then what is already there."""
        lines = ["MedGen will install into Slicer's Python:"] if self.steps else ["Nothing to install."]
        lines += [f"  {i}. {step.description}" for i, step in enumerate(self.steps, 1)]
        if self.skipped:
            lines += ["Already there:"] + [f"  - {reason}" for reason in self.skipped]
        if self.steps:
            lines.append("This downloads packages unless they are bundled, and may take several minutes.")
        return "\n".join(lines)


def plan_install(
    installed: Mapping[str, str],
    requirements: Sequence[str],
    wheel: str | os.PathLike[str] | None = None,
    pytorch_extension: bool = False,
    torch_minimum: str = TORCH_MINIMUM,
    cpu_index_url: str = CPU_TORCH_INDEX_URL,
) -> InstallPlan:
    """The steps that make MedGen available (see the module docstring for the order and the rules).

    Args:
        installed: ``{distribution name: version}`` of Slicer's Python (e.g. :func:`installed_versions`).
        requirements: lines of ``Resources/requirements.txt``; one of them is ``medgen[>=X]``.
        wheel: a medgen wheel bundled with the extension (:func:`find_bundled_wheel`), or ``None``.
        pytorch_extension: the PyTorch extension (``PyTorchUtils``) is installed.
        torch_minimum: oldest acceptable torch.
        cpu_index_url: package index of the CPU builds of torch.

    Raises:
        ValueError: a requirement line is not ``name`` / ``name>=X``, no line names medgen, or torch is in
            the requirements (torch is installed by step 1 only).
    """
    versions = {canonical_name(k): v for k, v in installed.items()}
    parsed = [parse_requirement(line) for line in requirements]
    bare = [canonical_name(name.split("[")[0]) for name, _ in parsed]
    if "torch" in bare:
        raise ValueError("requirements.txt must not name torch: it is installed first (PyTorch extension or CPU build)")
    if "medgen" not in bare:
        raise ValueError("requirements.txt does not name medgen (expected a line 'medgen>=X')")
    steps: list[InstallStep] = []
    skipped: list[str] = []

    torch_version = versions.get("torch")
    if meets_minimum(torch_version, torch_minimum):
        skipped.append(f"torch {torch_version} (>= {torch_minimum})")
    elif pytorch_extension:
        steps.append(InstallStep("pytorch_extension", "torch", f"torch >= {torch_minimum} through the PyTorch extension (build for this computer's GPU)",
                                 requirement=f">={torch_minimum}"))
    else:
        steps.append(InstallStep("pip", "torch", f"torch >= {torch_minimum}, CPU build (from {cpu_index_url})",
                                 pip_args=(f"torch>={torch_minimum}", "--index-url", cpu_index_url),
                                 pin=tuple(p for p in PROTECTED if p != "torch")))

    medgen_version = versions.get("medgen")
    medgen_minimum = next(minimum for (_, minimum), key in zip(parsed, bare) if key == "medgen")
    bundled = wheel_version(wheel) if wheel is not None else None
    newer_wheel = bundled is not None and medgen_version is not None and version_tuple(bundled) > version_tuple(medgen_version)
    others = [line for line, (name, minimum), key in zip(requirements, parsed, bare)
              if key != "medgen" and not meets_minimum(versions.get(key), minimum)]
    pin = PROTECTED
    if meets_minimum(medgen_version, medgen_minimum) and not newer_wheel:
        skipped.append(f"medgen {medgen_version} (>= {medgen_minimum or 'any'})")
        if others:
            steps.append(InstallStep("pip", "medgen", f"{', '.join(others)} (from the package index)", pip_args=tuple(others), pin=pin))
    elif wheel is not None:
        what = f"medgen {bundled} from the wheel bundled with the extension"
        if newer_wheel:
            what += f" (replaces {medgen_version})"
        steps.append(InstallStep("pip", "medgen", what + " and its dependencies", pip_args=(str(wheel), *others), pin=pin))
    else:
        line = next(line for line, key in zip(requirements, bare) if key == "medgen")
        steps.append(InstallStep("pip", "medgen", f"{line} and its dependencies (from the package index)", pip_args=(line, *others), pin=pin))
    return InstallPlan(tuple(steps), tuple(skipped))


# -- carrying it out -----------------------------------------------------------------------------
@dataclass(frozen=True)
class InstallResult:
    """What :func:`execute_plan` did.

    Args:
        commands: per step, ``("pip", args...)`` as passed to ``pip_install`` or ``("pytorch_extension", requirement)``.
        changed: ``{distribution: (old version or None, new version or None)}`` for every distribution that changed.
        restart_recommended: a changed distribution has modules already imported in this process.
    """

    commands: tuple[tuple[str, ...], ...] = ()
    changed: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)
    restart_recommended: bool = False


def restart_recommended(
    changed: Iterable[str],
    modules: Iterable[str],
    top_level: Mapping[str, Sequence[str]] | None = None,
) -> bool:
    """True if a changed distribution provides a top-level module in ``modules`` (already imported).

    Args:
        changed: distribution names whose version changed.
        modules: names of imported modules (``sys.modules``).
        top_level: ``{top-level module: [distribution, ...]}``; default ``importlib.metadata.packages_distributions()``.
    """
    mapping = importlib.metadata.packages_distributions() if top_level is None else top_level
    changed_names = {canonical_name(name) for name in changed}
    imported = {name.split(".")[0] for name in modules}
    return any(module in imported and changed_names & {canonical_name(d) for d in dists} for module, dists in mapping.items())


def _constraint_lines(pin: Sequence[str], versions: Mapping[str, str]) -> list[str]:
    return [f"{name}=={versions[canonical_name(name)]}" for name in pin if canonical_name(name) in versions]


def execute_plan(
    plan: InstallPlan,
    pip_install: Callable[[list[str]], Any],
    install_torch: Callable[[str], Any] | None = None,
    on_progress: ProgressCallback | None = None,
    versions: Callable[[], Mapping[str, str]] = installed_versions,
    modules: Iterable[str] | None = None,
    workdir: str | os.PathLike[str] | None = None,
) -> InstallResult:
    """Run the plan's steps in order, then check that torch and medgen are there.

    Args:
        plan: from :func:`plan_install`.
        pip_install: runs ``pip install <args>`` (``slicer.util.pip_install``); raises on failure.
        install_torch: installs torch through the PyTorch extension, given a requirement such as ``">=2.4"``;
            returns a falsy value if it did not (default :func:`install_torch_with_extension`).
        on_progress: see :data:`ProgressCallback`.
        versions: the installed distributions now (re-read after every step).
        modules: imported module names (default ``sys.modules``), for the restart check.
        workdir: where the constraints file is written (default: a new temporary folder, removed afterwards).

    Raises:
        InstallError: a step failed (the message names it), or MedGen is still missing afterwards.
    """
    before = dict(versions())
    total = len(plan.steps)
    commands: list[tuple[str, ...]] = []
    folder = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="MedGen-install-"))
    try:
        for index, step in enumerate(plan.steps):
            if on_progress is not None:
                on_progress(index, total, f"Installing {step.description}")
            if step.kind == "pytorch_extension":
                commands.append(("pytorch_extension", step.requirement))
                try:
                    done = (install_torch or install_torch_with_extension)(step.requirement)
                except Exception as err:  # noqa: BLE001 - one line naming the step
                    raise InstallError(f"step {index + 1} ({step.description}) failed: {err}") from err
                if not done:
                    raise InstallError(f"step {index + 1} ({step.description}) did not install torch (cancelled or failed)")
            elif step.kind == "pip":
                args = list(step.pip_args)
                constraints = _constraint_lines(step.pin, versions())
                if constraints:
                    path = folder / CONSTRAINTS_NAME
                    tmp = path.with_suffix(".tmp")
                    tmp.write_text("\n".join(constraints) + "\n", encoding="utf-8")
                    os.replace(tmp, path)
                    args += ["-c", str(path)]
                commands.append(("pip", *args))
                try:
                    pip_install(args)
                except Exception as err:  # noqa: BLE001 - CalledProcessError etc. become one line
                    raise InstallError(f"step {index + 1} ({step.description}) failed: {type(err).__name__}: {err}") from err
            else:
                raise InstallError(f"step {index + 1}: unknown kind {step.kind!r} (expected 'pip' or 'pytorch_extension')")
            importlib.invalidate_caches()
    finally:
        if workdir is None:
            shutil.rmtree(folder, ignore_errors=True)
    after = dict(versions())
    still_missing = [name for name in REQUIRED_DISTRIBUTIONS if name not in after]
    if still_missing:
        raise InstallError(f"the install finished but {', '.join(still_missing)} is still missing from {sys.executable}")
    changed = {name: (before.get(name), after.get(name)) for name in sorted(set(before) | set(after)) if before.get(name) != after.get(name)}
    if on_progress is not None:
        on_progress(total, total, "MedGen is installed.")
    return InstallResult(
        commands=tuple(commands), changed=changed,
        restart_recommended=restart_recommended(changed, sys.modules if modules is None else modules),
    )


# -- Slicer-side helpers (used in Slicer only; nothing imported at module import) -----------------
def pytorch_extension_available() -> bool:
    """The PyTorch extension's ``PyTorchUtils`` module can be imported (checked without importing it)."""
    try:
        return importlib.util.find_spec("PyTorchUtils") is not None
    except (ImportError, ValueError):
        return False


def install_torch_with_extension(requirement: str = TORCH_REQUIREMENT) -> Any:
    """Install torch through the PyTorch extension (no second confirmation); returns the torch module or None."""
    import PyTorchUtils

    return PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False, torchVersionRequirement=requirement)
