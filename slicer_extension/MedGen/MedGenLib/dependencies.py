"""Python packages MedGen needs inside Slicer: checked without importing, installed only on request.

Nothing is installed at import time. torch comes from the PyTorch extension (``PyTorchUtils``), MedGen
from ``Resources/requirements.txt`` through ``slicer.packaging.pip_ensure`` (Slicer >= 5.12) or
``slicer.util.pip_install``, never replacing Slicer's torch, SimpleITK or requests.
"""

from __future__ import annotations

import importlib.metadata
import sys
from collections.abc import Callable, Iterable

__all__ = ["TORCH_REQUIREMENT", "install_dependencies", "missing_distributions", "requirement_lines"]

TORCH_REQUIREMENT = ">=2.4"
REQUIRED_DISTRIBUTIONS = ("torch", "medgen")
PROTECTED = ["torch", "SimpleITK", "requests"]


def missing_distributions(names: Iterable[str] = REQUIRED_DISTRIBUTIONS) -> list[str]:
    """Distributions that are not installed (``importlib.metadata``; nothing is imported)."""
    missing = []
    for name in names:
        try:
            importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(name)
    return missing


def requirement_lines(requirements_file: str) -> list[str]:
    """Requirement strings of a requirements.txt (comments and blank lines dropped)."""
    with open(requirements_file, encoding="utf-8") as handle:
        return [line.split("#")[0].strip() for line in handle if line.split("#")[0].strip()]


def install_dependencies(requirements_file: str, confirm: Callable[[str], bool] | None = None) -> bool:
    """Install what is missing after one confirmation (``confirm(message) -> bool``); True when all is there.

    Offers a restart when packages that were already imported were updated.
    """
    import slicer

    missing = missing_distributions()
    if not missing:
        return True
    message = (f"MedGen needs these Python packages, which will be installed into Slicer's Python now: "
               f"{', '.join(missing)}. This may take several minutes.")
    if confirm is not None and not confirm(message):
        return False
    already_imported = [name for name in ("torch", "monai", "medgen_core") if name in sys.modules]
    if "torch" in missing:
        try:
            import PyTorchUtils
        except ImportError as err:
            raise RuntimeError("Install the 'PyTorch' extension (Extensions Manager) first, then restart Slicer.") from err
        if PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False, torchVersionRequirement=TORCH_REQUIREMENT) is None:
            return False
    _pip_install(requirements_file)
    if already_imported and slicer.util.confirmYesNoDisplay("Restart Slicer to use the updated packages?"):
        slicer.util.restart()
    return not missing_distributions()


def _pip_install(requirements_file: str) -> None:
    import slicer

    try:
        from slicer import packaging  # Slicer >= 5.12
    except ImportError:
        packaging = None
    if packaging is not None and hasattr(packaging, "pip_ensure"):
        requirements = packaging.load_requirements(requirements_file)
        try:
            packaging.pip_ensure(requirements, requester="MedGen", skip_packages=PROTECTED)
        except TypeError:  # a version without skip_packages: torch is already installed, so pip keeps it
            packaging.pip_ensure(requirements, requester="MedGen")
        return
    slicer.util.pip_install(" ".join(requirement_lines(requirements_file)))
