"""Shared setup of the Slicer-module tests: ``MedGenLib`` on ``sys.path`` and a fresh MRML scene.

Tests that need MRML use the ``scene`` fixture (or the ``slicer_core`` fixture); they are skipped
cleanly when ``slicer-core`` is not installed. The others (command building, progress parsing,
process control, module files) run everywhere.

``slicer`` (from slicer-core) is a pkgutil namespace: on import it adds every ``slicer/`` folder on
``sys.path`` and imports the modules inside. pytest puts ``tests/`` on ``sys.path``, which would make
it import this folder's test files as ``slicer.*``. So it is imported here, once, with ``tests/``
hidden from ``sys.path``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]
TESTS_DIR = REPO / "tests"
MODULE_DIR = REPO / "slicer_extension" / "MedGen"
if str(MODULE_DIR) not in sys.path:
    sys.path.insert(0, str(MODULE_DIR))


def _import_slicer_core() -> ModuleType | None:
    """``import slicer`` without this test folder joining its namespace; ``None`` if slicer-core is missing."""
    if "slicer" in sys.modules:
        return sys.modules["slicer"] if hasattr(sys.modules["slicer"], "vtkMRMLScene") else None
    saved = list(sys.path)
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != TESTS_DIR]
    try:
        import slicer
    except ImportError:
        sys.modules.pop("slicer", None)
        return None
    finally:
        sys.path[:] = saved
    return slicer if hasattr(slicer, "vtkMRMLScene") else None


SLICER = _import_slicer_core()


@pytest.fixture(scope="session")
def slicer_core() -> ModuleType:
    """The ``slicer`` package from slicer-core (skips the test when it is not installed)."""
    if SLICER is None:
        pytest.skip("slicer-core is not installed (pip install 'slicer-core>=5.11')")
    return SLICER


@pytest.fixture
def scene(slicer_core):
    """A fresh ``slicer.vtkMRMLScene``."""
    return slicer_core.vtkMRMLScene()
