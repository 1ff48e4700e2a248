"""One-way architecture of medgen_core: no import cycle between subpackages or files, lower layers never import higher ones.

Every ``.py`` file under ``medgen_core/`` is parsed with :mod:`ast`; every import counts, at module level and
inside functions, classes, ``try`` and ``if TYPE_CHECKING`` blocks, relative imports resolved, plus
``importlib.import_module`` / ``__import__`` calls with a literal name. ``from pkg import name`` is an edge to
``pkg.name`` when that is a module, else to ``pkg``. The Slicer side is checked in
``tests/slicer/test_slicer_no_medgen_core_import.py``.

Run ``python tests/test_architecture.py`` to print the layers, the subpackage graph and any cycle.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "medgen_core"

# Bottom first; a subpackage may import its own layer's members only where listed in SAME_LAYER_ALLOWED, and
# any lower layer. Top-level modules (medgen_core/errors.py, medgen_core/__init__.py) sit below everything.
LAYERS: list[tuple[str, ...]] = [
    ("utils", "io", "networks", "losses"),
    ("provenance",),
    ("transforms",),
    ("data",),
    ("augmentation", "inference"),
    ("training",),
    ("evaluation",),
    ("bundles",),
    ("experiments",),
    ("cli",),
]
# Imports inside one layer that are allowed (importer, imported); everything else within a layer is refused,
# so the two members of a layer stay independent unless named here.
SAME_LAYER_ALLOWED = {("io", "utils"), ("networks", "utils"), ("losses", "utils")}
ROOT_MODULES = {"", "errors"}  # medgen_core/__init__.py, medgen_core/errors.py


def module_files(root: Path = REPO, package: str = PACKAGE) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` under ``root/package`` (``pkg/__init__.py`` is ``pkg``)."""
    modules = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _resolve(importer: str, is_package: bool, level: int, module: str | None) -> str:
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def imports_of(source: str, importer: str, is_package: bool, known: set[str]) -> list[tuple[int, str]]:
    """``(line, imported module)`` for every import in ``source`` that names a module of ``known`` (any nesting)."""
    found: list[tuple[int, str]] = []

    def add(line: int, name: str) -> None:
        while name and name not in known:  # "pkg.mod.attr" -> "pkg.mod"
            name = name.rpartition(".")[0]
        if name:
            found.append((line, name))

    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(node.lineno, alias.name)
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(importer, is_package, node.level, node.module) if node.level else (node.module or "")
            for alias in node.names:
                if f"{target}.{alias.name}" in known:
                    add(node.lineno, f"{target}.{alias.name}")
                else:
                    add(node.lineno, target)
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if called in ("import_module", "__import__"):
                add(node.lineno, node.args[0].value)
    return found


def module_graph(root: Path = REPO, package: str = PACKAGE) -> dict[str, dict[str, int]]:
    """importer -> {imported module: first line}, over medgen_core's own modules (self-imports dropped)."""
    files = module_files(root, package)
    known = set(files)
    graph: dict[str, dict[str, int]] = {}
    for name, path in files.items():
        edges: dict[str, int] = {}
        for line, target in imports_of(path.read_text(encoding="utf-8"), name, path.name == "__init__.py", known):
            if target != name:
                edges.setdefault(target, line)
        graph[name] = edges
    return graph


def subpackage(module: str, package: str = PACKAGE) -> str:
    """``medgen_core.io.readers`` -> ``io``; ``medgen_core.errors`` -> ``errors``; ``medgen_core`` -> ``""``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == package else ""


def subpackage_graph(graph: dict[str, dict[str, int]]) -> dict[str, dict[str, str]]:
    """subpackage -> {imported subpackage: one example "module:line -> module"}."""
    out: dict[str, dict[str, str]] = {}
    for importer, edges in graph.items():
        src = subpackage(importer)
        out.setdefault(src, {})
        for target, line in edges.items():
            dst = subpackage(target)
            if dst != src:
                out[src].setdefault(dst, f"{importer}:{line} -> {target}")
    return out


def cycles(graph: dict[str, dict]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan), each sorted; empty when the graph is acyclic."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]
    sys.setrecursionlimit(max(10000, sys.getrecursionlimit()))

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, {}):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def layer_of(sub: str) -> int:
    if sub in ROOT_MODULES:
        return -1
    for rank, members in enumerate(LAYERS):
        if sub in members:
            return rank
    raise KeyError(f"medgen_core.{sub} is in no layer of tests/test_architecture.py LAYERS; add it there")


def layering_violations(sub_graph: dict[str, dict[str, str]]) -> list[str]:
    """One line per import from a subpackage to a higher layer, or to its own layer unless allowed."""
    bad = []
    for src, edges in sorted(sub_graph.items()):
        for dst, example in sorted(edges.items()):
            up = layer_of(dst) > layer_of(src)
            sideways = layer_of(dst) == layer_of(src) and src not in ROOT_MODULES and (src, dst) not in SAME_LAYER_ALLOWED
            if up or sideways:
                bad.append(f"{src} -> {dst} ({'upwards' if up else 'within one layer'}): {example}")
    return bad


# ----------------------------------------------------------------------------------------------------------- tests
def test_the_scanner_sees_lazy_relative_and_dynamic_imports():
    known = {"p", "p.a", "p.b", "p.b.c", "p.d"}
    source = (
        "import os\n"
        "from . import a\n"                      # relative, names a module
        "def f():\n"
        "    from .b import c\n"                 # lazy, relative, names a submodule
        "    from p.d import something\n"        # names an attribute: edge to the module
        "class C:\n"
        "    def g(self):\n"
        "        import importlib\n"
        "        return importlib.import_module('p.b')\n"
        "from q import p\n"                      # another package: ignored
    )
    assert imports_of(source, "p.x", False, known) == [(2, "p.a"), (4, "p.b.c"), (5, "p.d"), (9, "p.b")]
    assert imports_of("from .. import a\nfrom . import c", "p.b", True, known) == [(1, "p.a"), (2, "p.b.c")]


def test_cycle_finder_and_layer_check_catch_what_they_must():
    assert cycles({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b": 1}, "b": {}, "c": {"a": 1, "b": 1}}) == []
    assert layering_violations({"io": {"cli": "x"}, "cli": {"io": "y"}}) == ["io -> cli (upwards): x"]
    assert layering_violations({"inference": {"transforms": "x"}, "data": {"transforms": "y"}}) == []
    assert layering_violations({"evaluation": {"training": "t"}, "io": {"losses": "z"}}) == [
        "io -> losses (within one layer): z"]


def test_every_subpackage_is_in_a_layer():
    subs = {p.name for p in (REPO / PACKAGE).iterdir() if (p / "__init__.py").is_file()}
    assert len(subs) >= 12
    for sub in subs:
        layer_of(sub)  # raises with the name of the missing subpackage


def test_no_import_cycle_between_files():
    graph = module_graph()
    assert len(graph) >= 100 and sum(map(len, graph.values())) >= 200  # the scan saw the package
    found = cycles(graph)
    assert found == [], "import cycles between files of medgen_core:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_no_import_cycle_between_subpackages():
    sub_graph = subpackage_graph(module_graph())
    found = cycles(sub_graph)
    detail = [f"{src} -> {dst}: {ex}" for c in found for src in c for dst, ex in sub_graph[src].items() if dst in c]
    assert found == [], "import cycles between subpackages of medgen_core:\n" + "\n".join(detail)


def test_imports_point_down_the_layers():
    bad = layering_violations(subpackage_graph(module_graph()))
    assert bad == [], "imports against the layering (bottom first: " + " | ".join(
        ", ".join(layer) for layer in LAYERS) + "):\n" + "\n".join(bad)


def _outside_imports(folder: str, known: set[str]) -> list[tuple[str, str]]:
    """``(file:line, module)`` for every import of a medgen_core module in the ``.py`` files under ``REPO/folder``."""
    hits = []
    for path in sorted((REPO / folder).rglob("*.py")):
        for line, target in imports_of(path.read_text(encoding="utf-8"), path.stem, False, known):
            hits.append((f"{path.relative_to(REPO)}:{line}", target))
    return hits


def test_cli_commands_share_helpers_through_cli_common_only():
    """No command module imports another (shared helpers live in medgen_core.cli._common); outside cli/ nothing but
    tests imports a command module, and scripts/benchmarks reach the CLI through cli.main only."""
    graph = module_graph()
    cli = {m for m in graph if m.startswith(f"{PACKAGE}.cli.")}
    commands = {m for m in cli if m.endswith("_cmd")}
    assert len(commands) >= 8
    assert cli - commands == {f"{PACKAGE}.cli._common", f"{PACKAGE}.cli.main"}, "one private module of shared CLI helpers"
    bad = [f"{src}:{line} -> {dst}" for src, edges in graph.items() if src != f"{PACKAGE}.cli.main"
           for dst, line in edges.items() if dst in commands]
    bad += [f"{where} -> {dst}" for folder in ("scripts", "benchmarks") for where, dst in _outside_imports(folder, set(graph))
            if dst.startswith(f"{PACKAGE}.cli") and dst != f"{PACKAGE}.cli.main"]
    assert bad == [], "imports of CLI command modules (move what they share to cli._common or the library):\n" + "\n".join(bad)


def test_the_slicer_library_does_not_import_medgen_core():
    """The Slicer extension talks to medgen through its CLI and files (see also tests/slicer/test_slicer_no_medgen_core_import.py)."""
    known = set(module_graph())
    assert len(list((REPO / "slicer_extension").rglob("*.py"))) >= 10
    hits = [f"{where}: {dst}" for where, dst in _outside_imports("slicer_extension", known)]
    assert hits == [], "slicer_extension imports medgen_core:\n" + "\n".join(hits)


def test_readme_layout_names_every_subpackage_and_the_layers():
    """README's layout section lists each subpackage of medgen_core (and nothing that is gone) and the layers above."""
    import re

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Layout"):]
    section = section[: section.index("\n## ", 3)]
    listed = set(re.findall(r"^  (\w+)/", section, flags=re.M))
    subs = {p.name for p in (REPO / PACKAGE).iterdir() if (p / "__init__.py").is_file()}
    assert listed == subs, f"README layout lists {sorted(listed - subs)} (gone) and misses {sorted(subs - listed)}"
    assert " | ".join(f"`{', '.join(layer)}`" for layer in LAYERS) in " ".join(section.split()), "README's layer line"


def main() -> int:
    graph = module_graph()
    sub_graph = subpackage_graph(graph)
    print(f"{len(graph)} modules, {sum(map(len, graph.values()))} import edges")
    print("layers, bottom first:", " | ".join(", ".join(layer) for layer in LAYERS))
    for src in sorted(sub_graph, key=lambda s: (layer_of(s), s)):
        print(f"  {src or PACKAGE:13s} -> {', '.join(sorted(d or PACKAGE for d in sub_graph[src])) or '-'}")
    file_cycles, sub_cycles, bad = cycles(graph), cycles(sub_graph), layering_violations(sub_graph)
    print(f"file cycles: {len(file_cycles)}")
    for c in file_cycles:
        print("  " + " <-> ".join(c))
    print(f"subpackage cycles: {len(sub_cycles)}")
    for c in sub_cycles:
        print("  " + " <-> ".join(c))
        for src in c:
            for dst, ex in sorted(sub_graph[src].items()):
                if dst in c:
                    print(f"    {src} -> {dst}: {ex}")
    print(f"layering violations: {len(bad)}")
    for line in bad:
        print("  " + line)
    return 1 if file_cycles or sub_cycles or bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
