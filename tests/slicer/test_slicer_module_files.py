"""Static checks of the extension: .ui vs. module code, CMake file lists, metadata, import hygiene of MedGenLib."""

from __future__ import annotations

import ast
import re
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EXT = REPO / "slicer_extension"
MODULE = EXT / "MedGen"
UI = MODULE / "Resources" / "UI" / "MedGen.ui"
MODULE_PY = (MODULE / "MedGen.py").read_text()


def _ui_widgets() -> dict[str, ET.Element]:
    return {w.get("name"): w for w in ET.parse(UI).getroot().iter("widget")}


def _parameter_fields() -> set[str]:
    tree = ast.parse(MODULE_PY)
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "MedGenParameterNode")
    return {n.target.id for n in cls.body if isinstance(n, ast.AnnAssign)}


def test_ui_has_every_widget_the_module_uses():
    used = set(re.findall(r"self\.ui\.(\w+)", MODULE_PY))
    assert {"translateButton", "upscaleButton", "augmentButton", "progressBar", "logTextEdit", "bundleComboBox"} <= used
    assert sorted(used - set(_ui_widgets())) == []


def test_ui_parameter_names_match_the_parameter_node():
    widgets = _ui_widgets()
    bound = {}
    for name, widget in widgets.items():
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound[name] = prop.find("string").text
    assert set(bound.values()) <= _parameter_fields()
    assert {"inputVolume", "outputVolume", "scale", "direction", "seed", "forceCpu"} <= set(bound.values())
    assert widgets["outputVolumeSelector"].get("class") == "qMRMLNodeComboBox"


def test_module_has_the_four_classes_and_wraps_ui_strings():
    classes = {n.name for n in ast.parse(MODULE_PY).body if isinstance(n, ast.ClassDef)}
    assert {"MedGen", "MedGenWidget", "MedGenLogic", "MedGenTest"} <= classes
    assert "@parameterNodeWrapper" in MODULE_PY and "tryWithErrorDisplay" in MODULE_PY
    assert "from slicer.i18n import tr as _" in MODULE_PY and 'translate("qSlicerAbstractCoreModule"' in MODULE_PY
    assert "pip_install(" not in MODULE_PY.split("class MedGen(")[0]  # nothing installed at import time


def _cmake_list(text: str, variable: str) -> set[str]:
    body = re.search(rf"set\({variable}\s+(.*?)\)", text, re.DOTALL).group(1)
    return {line.strip().replace("${MODULE_NAME}", "MedGen") for line in body.splitlines() if line.strip()}


def test_module_cmakelists_lists_every_script_and_resource():
    text = (MODULE / "CMakeLists.txt").read_text()
    scripts = {p.relative_to(MODULE).as_posix() for p in MODULE.rglob("*.py") if "Testing" not in p.parts and "__pycache__" not in p.parts}
    resources = {p.relative_to(MODULE).as_posix() for p in (MODULE / "Resources").rglob("*") if p.is_file() and p.parent.name != "wheels"}
    assert _cmake_list(text, "MODULE_PYTHON_SCRIPTS") == scripts
    assert _cmake_list(text, "MODULE_PYTHON_RESOURCES") == resources  # plus Resources/wheels/medgen-*.whl by a glob
    assert "Resources/wheels/medgen-*.whl" in text
    assert "WITH_GENERIC_TESTS" in text and "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in text
    assert (MODULE / "Testing" / "Python" / "CMakeLists.txt").is_file() and (MODULE / "Testing" / "CMakeLists.txt").is_file()


def test_top_level_cmakelists_has_the_standard_blocks_in_order():
    text = (REPO / "CMakeLists.txt").read_text()
    blocks = ["project(MedGen)", "set(EXTENSION_HOMEPAGE", "set(EXTENSION_CATEGORY \"Image Synthesis\")", "set(EXTENSION_CONTRIBUTORS",
              "set(EXTENSION_DESCRIPTION", "set(EXTENSION_ICONURL", "set(EXTENSION_SCREENSHOTURLS", "set(EXTENSION_DEPENDS \"PyTorch\")",
              "find_package(Slicer REQUIRED)", "include(${Slicer_USE_FILE})", "add_subdirectory(slicer_extension/MedGen)",
              "## NEXT_MODULE", "include(${Slicer_EXTENSION_GENERATE_CONFIG})", "include(${Slicer_EXTENSION_CPACK})"]
    positions = [text.find(b) for b in blocks]
    assert -1 not in positions and positions == sorted(positions)
    for url in re.findall(r"https://raw\.githubusercontent\.com/\S+?\.png", text):
        assert (REPO / url.split("/main/", 1)[1]).is_file()


def test_icon_mockup_requirements_and_readme():
    for png, size in ((MODULE / "Resources" / "Icons" / "MedGen.png", (128, 128)), (EXT / "docs" / "panel_mockup.png", None)):
        head = png.read_bytes()[:24]
        assert head[:8] == b"\x89PNG\r\n\x1a\n"
        if size:
            assert struct.unpack(">II", head[16:24]) == size
    reqs = [line.split("#")[0].strip() for line in (MODULE / "Resources" / "requirements.txt").read_text().splitlines()]
    reqs = [r for r in reqs if r]
    assert reqs[0].startswith("medgen>=") and all(">=" in r and "==" not in r for r in reqs)
    assert not any(r.startswith("torch") for r in reqs)
    readme = (EXT / "README.md").read_text()
    assert "docs/panel_mockup.png" in readme and "--additional-module-paths slicer_extension/MedGen" in readme


def test_medgenlib_imports_no_gui_or_heavy_packages():
    code = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "import MedGenLib.catalog, MedGenLib.commands, MedGenLib.dependencies, MedGenLib.jobs, MedGenLib.process\n"
        "import MedGenLib.panel, MedGenLib.progress, MedGenLib.provenance_attributes, MedGenLib.scene_io, MedGenLib.testing\n"
        "bad = ['qt', 'ctk', 'slicer', 'slicer.ScriptedLoadableModule', 'torch', 'monai', 'medgen_core', 'vtk']\n"
        "print([m for m in bad if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(MODULE)], capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=60, check=True)
    assert out.stdout.strip() == "[]"
