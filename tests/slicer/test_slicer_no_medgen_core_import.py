"""The Slicer extension reaches MedGen only through its CLI and files: no file under slicer_extension/ imports medgen_core.

Every ``.py`` file is parsed with :mod:`ast` and every import is checked, at module level and inside
functions, classes, ``try`` blocks and ``if TYPE_CHECKING`` blocks, plus ``importlib.import_module`` /
``__import__`` calls with a literal name. A second check imports the library and lists the bundles through
the real CLI in a fresh interpreter and looks at ``sys.modules`` afterwards.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EXTENSION = REPO / "slicer_extension"
FORBIDDEN = "medgen_core"


def _is_forbidden(name: str | None) -> bool:
    return bool(name) and (name == FORBIDDEN or name.startswith(FORBIDDEN + "."))


def forbidden_imports(source: str, filename: str = "<string>") -> list[str]:
    """``"file:line: what"`` for every import of medgen_core in ``source`` (any nesting level)."""
    hits = []
    for node in ast.walk(ast.parse(source, filename=filename)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module or ""]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if called in ("import_module", "__import__", "find_spec"):
                names = [node.args[0].value]
        hits += [f"{filename}:{node.lineno}: {name}" for name in names if _is_forbidden(name)]
    return hits


def test_the_scanner_finds_imports_at_every_level():
    source = (
        "import os\n"
        "def f():\n"
        "    from medgen_core.bundles import discover_bundles\n"
        "class C:\n"
        "    def g(self):\n"
        "        try:\n"
        "            import medgen_core.provenance as p\n"
        "        except ImportError:\n"
        "            pass\n"
        "def h():\n"
        "    import importlib\n"
        "    return importlib.import_module('medgen_core.io'), __import__('medgen_core')\n"
        "from medgen_corelike import x\n"              # another package: allowed
        "argv = ['python', '-m', 'medgen_core.cli.main']\n"  # a command line for the child process: allowed
    )
    assert [hit.split(": ", 1)[1] for hit in forbidden_imports(source)] == [
        "medgen_core.bundles", "medgen_core.provenance", "medgen_core.io", "medgen_core"]


def test_no_file_under_slicer_extension_imports_medgen_core():
    files = sorted(EXTENSION.rglob("*.py"))
    assert len(files) >= 10  # MedGen.py and the MedGenLib modules are all scanned
    hits = [hit for path in files for hit in forbidden_imports(path.read_text(encoding="utf-8"), str(path.relative_to(REPO)))]
    assert hits == [], "the Slicer extension must talk to medgen through its CLI and files only:\n" + "\n".join(hits)


def test_listing_bundles_through_the_cli_loads_no_medgen_core_torch_or_monai(cli_listing):
    assert len(cli_listing["entries"]) >= 1  # the CLI answered with bundles
    assert cli_listing["loaded"] == []
