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


_LIST_IN_FRESH_INTERPRETER = (
    "import json, sys\n"
    "sys.path.insert(0, sys.argv[1])\n"
    "import MedGenLib.catalog, MedGenLib.commands, MedGenLib.dependencies, MedGenLib.jobs, MedGenLib.scene_io\n"
    "try:\n"
    "    entries = MedGenLib.catalog.list_bundles()\n"  # the real `medgen bundle list --json`, in a child process
    "except MedGenLib.catalog.CatalogError as err:\n"
    "    entries, error = None, str(err)\n"
    "else:\n"
    "    error = None\n"
    "print(json.dumps({'entries': entries, 'error': error,"
    " 'loaded': [m for m in ('medgen_core', 'torch', 'monai') if m in sys.modules]}))\n"
)


@pytest.fixture(scope="session")
def cli_listing() -> dict:
    """``{"entries", "error", "loaded"}``: MedGenLib's ``list_bundles()`` run once in a fresh interpreter.

    ``entries`` is the validated output of the real ``medgen bundle list --json``; ``loaded`` lists which of
    medgen_core / torch / monai that interpreter had imported afterwards (the Slicer side must load none).
    """
    import json
    import subprocess

    out = subprocess.run([sys.executable, "-c", _LIST_IN_FRESH_INTERPRETER, str(MODULE_DIR)], capture_output=True, text=True,
                         encoding="utf-8", errors="replace", timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result["error"] and "unrecognized arguments: --json" in result["error"]:
        pytest.skip("this medgen has no `bundle list --json` yet")
    assert result["error"] is None, result["error"]
    return result


def pytest_collection_modifyitems(config, items):
    """Tests of this folder marked ``slow`` run only when asked for (``-m slow``), as pyproject's marker says."""
    if "slow" in (config.option.markexpr or ""):
        return
    skip = pytest.mark.skip(reason="slow: run with -m slow")
    for item in items:
        if "slow" in item.keywords and Path(str(item.fspath)).resolve().is_relative_to(Path(__file__).resolve().parent):
            item.add_marker(skip)
