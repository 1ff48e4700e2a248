"""The extension as the Slicer ExtensionsIndex and the Slicer build see it: catalog JSON, top-level and module
CMake files (configured for real with CMake against a stand-in SlicerConfig.cmake), the CTest registration of the
module's self-test, and the files the metadata points at.

The index's rules checked here come from its published checker (Slicer/ExtensionsIndex
``scripts/check_description_files.py``): schema v1.0.1 entry, an accepted category ("Image Synthesis" is one),
an https/git ``scm_url`` whose repository name contains "slicer", ``project()`` named like the JSON file, http(s)
icon and screenshot URLs that are images, a licence file in the repository root.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
import urllib.parse
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXT = REPO / "slicer_extension"
MODULE = EXT / "MedGen"
ENTRY_FILE = EXT / "MedGen.json"

STANDIN_SLICER_CONFIG = r'''# Stand-in for Slicer's SlicerConfig.cmake (tests only, no Slicer here): records what the extension declares.
set(Slicer_FOUND TRUE)
set(Slicer_USE_FILE ${CMAKE_CURRENT_LIST_DIR}/UseSlicer.cmake)
set(Slicer_EXTENSION_GENERATE_CONFIG ${CMAKE_CURRENT_LIST_DIR}/GenerateConfig.cmake)
set(Slicer_EXTENSION_CPACK ${CMAKE_CURRENT_LIST_DIR}/CPack.cmake)
set(Slicer_LAUNCHER_EXECUTABLE ${CMAKE_CURRENT_LIST_DIR}/Slicer)
'''
STANDIN_USE_FILE = r'''# Stand-in for Slicer's UseSlicer.cmake: testing on, and recording versions of Slicer's module macros.
include(CTest)
set(STANDIN_RECORD ${CMAKE_BINARY_DIR}/standin_record.txt)
file(WRITE ${STANDIN_RECORD} "")
function(slicerMacroBuildScriptedModule)
  cmake_parse_arguments(MY "WITH_GENERIC_TESTS;WITH_SUBDIR" "NAME" "SCRIPTS;RESOURCES" ${ARGN})
  foreach(f IN LISTS MY_SCRIPTS MY_RESOURCES)
    if(NOT EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/${f})
      message(FATAL_ERROR "slicerMacroBuildScriptedModule: ${f} does not exist in ${CMAKE_CURRENT_SOURCE_DIR}")
    endif()
  endforeach()
  file(APPEND ${STANDIN_RECORD} "module_name\t${MY_NAME}\nmodule_dir\t${CMAKE_CURRENT_SOURCE_DIR}\n")
  file(APPEND ${STANDIN_RECORD} "scripts\t${MY_SCRIPTS}\nresources\t${MY_RESOURCES}\ngeneric_tests\t${MY_WITH_GENERIC_TESTS}\n")
endfunction()
# Same test name and command as Slicer's CMake/SlicerMacroPythonTesting.cmake
macro(slicer_add_python_unittest)
  cmake_parse_arguments(MY "" "TESTNAME_PREFIX;SCRIPT" "SLICER_ARGS" ${ARGN})
  if(NOT EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/${MY_SCRIPT})
    message(FATAL_ERROR "slicer_add_python_unittest: ${MY_SCRIPT} does not exist")
  endif()
  get_filename_component(test_name ${MY_SCRIPT} NAME_WE)
  add_test(NAME py_${MY_TESTNAME_PREFIX}${test_name}
    COMMAND ${Slicer_LAUNCHER_EXECUTABLE} --no-splash --ignore-slicerrc ${MY_SLICER_ARGS}
    --python-code "import slicer.testing; slicer.testing.runUnitTest(['${CMAKE_CURRENT_BINARY_DIR}', '${CMAKE_CURRENT_SOURCE_DIR}'], '${test_name}')")
  file(APPEND ${STANDIN_RECORD} "unittest\t${CMAKE_CURRENT_SOURCE_DIR}/${MY_SCRIPT}\n")
endmacro()
'''
STANDIN_GENERATE_CONFIG = r'''# Stand-in for Slicer's extension description generation: records the EXTENSION_* variables.
foreach(v HOMEPAGE CATEGORY CONTRIBUTORS DESCRIPTION ICONURL SCREENSHOTURLS DEPENDS)
  file(APPEND ${STANDIN_RECORD} "EXTENSION_${v}\t${EXTENSION_${v}}\n")
endforeach()
file(APPEND ${STANDIN_RECORD} "project\t${PROJECT_NAME}\n")
'''
STANDIN_CPACK = 'file(APPEND ${STANDIN_RECORD} "cpack\\tincluded\\n")\n'


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


def _repo_of(url: str) -> str:
    """``owner/name`` of a GitHub URL (git, blob or raw)."""
    parts = urllib.parse.urlsplit(url).path.strip("/").split("/")
    return f"{parts[0]}/{parts[1].removesuffix('.git')}"


def _local_file(url: str) -> Path:
    """The file of this clone that a ``.../main/<path>`` raw or blob URL points at."""
    return REPO / url.split("/main/", 1)[1]


@pytest.fixture(scope="module")
def configured(tmp_path_factory) -> dict:
    """Configure the repository root with CMake against the stand-in Slicer; the recorded declarations and ctest's view."""
    if shutil.which("cmake") is None or shutil.which("ctest") is None:
        pytest.skip("cmake/ctest not installed")
    standin = tmp_path_factory.mktemp("standin-slicer")
    for name, text in (("SlicerConfig.cmake", STANDIN_SLICER_CONFIG), ("UseSlicer.cmake", STANDIN_USE_FILE),
                       ("GenerateConfig.cmake", STANDIN_GENERATE_CONFIG), ("CPack.cmake", STANDIN_CPACK)):
        (standin / name).write_text(text, encoding="utf-8")
    launcher = standin / "Slicer"  # ctest lists a test's command only if its executable exists
    launcher.write_text("#!/bin/sh\necho 'stand-in for the Slicer launcher: no Slicer here' >&2\nexit 1\n", encoding="utf-8")
    launcher.chmod(0o755)
    build = tmp_path_factory.mktemp("build")
    out = subprocess.run(["cmake", "-S", str(REPO), "-B", str(build), f"-DSlicer_DIR={standin}"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    record: dict[str, str] = {}
    for line in (build / "standin_record.txt").read_text(encoding="utf-8").splitlines():
        key, _, value = line.partition("\t")
        record[key] = value
    tests = json.loads(subprocess.run(["ctest", "--show-only=json-v1"], cwd=build, capture_output=True, text=True, check=True, timeout=120).stdout)
    return {"record": record, "standin": standin, "tests": {t["name"]: t.get("command") for t in tests["tests"]}}


def test_catalog_entry_follows_the_index_rules():
    import jsonschema

    schema = {  # Slicer/Schemas/slicer-extension-catalog-entry-schema-v1.0.1.json (properties and types)
        "type": "object", "required": ["$schema", "category", "scm_url"], "additionalProperties": False,
        "properties": {"$schema": {"type": "string"}, "category": {"type": "string"}, "scm_url": {"type": "string"},
                       "scm_revision": {"type": "string"}, "scm_type": {"enum": ["git", "local"]},
                       "build_dependencies": {"type": "array", "items": {"type": "string"}},
                       "build_subdirectory": {"type": "string"}, "enabled": {"type": "boolean"}, "tier": {"enum": [1, 3, 5]}},
    }
    entry = json.loads(ENTRY_FILE.read_text(encoding="utf-8"))
    jsonschema.validate(entry, schema)
    assert entry["$schema"] == "https://raw.githubusercontent.com/Slicer/Slicer/main/Schemas/slicer-extension-catalog-entry-schema-v1.0.1.json#"
    assert entry["category"] == "Image Synthesis" and entry["scm_type"] == "git" and entry["scm_revision"] == "main"
    assert urllib.parse.urlsplit(entry["scm_url"]).scheme in ("https", "git")
    assert "slicer" in _repo_of(entry["scm_url"]).split("/")[1].lower()  # the index's repository-name rule
    assert entry["build_dependencies"] == ["PyTorch"] and entry["build_subdirectory"] == "."
    assert (REPO / "LICENSE").is_file()


def test_cmake_configures_with_the_extension_metadata_the_index_needs(configured):
    record = configured["record"]
    entry = json.loads(ENTRY_FILE.read_text(encoding="utf-8"))
    assert record["project"] == ENTRY_FILE.stem == "MedGen"  # project() named like the JSON file
    assert record["cpack"] == "included"
    for key in ("HOMEPAGE", "CATEGORY", "CONTRIBUTORS", "DESCRIPTION", "ICONURL", "SCREENSHOTURLS", "DEPENDS"):
        assert record[f"EXTENSION_{key}"].strip(), f"EXTENSION_{key} is empty"
    assert record["EXTENSION_CATEGORY"] == entry["category"]
    assert record["EXTENSION_DEPENDS"].split(";") == entry["build_dependencies"]
    assert len(record["EXTENSION_DESCRIPTION"]) >= 40
    urls = [record["EXTENSION_HOMEPAGE"], record["EXTENSION_ICONURL"], *record["EXTENSION_SCREENSHOTURLS"].split()]
    for url in urls:
        assert url.startswith("https://") and _repo_of(url) == _repo_of(entry["scm_url"]), url  # all from the repository the index builds
        assert _local_file(url).is_file(), f"{url} points at {_local_file(url)}, which is not in the repository"
    for url in urls[1:]:
        assert url.startswith("https://raw.githubusercontent.com/") and url.endswith(".png")  # downloads as an image
    assert _png_size(_local_file(record["EXTENSION_ICONURL"])) == (128, 128)
    for url in urls[2:]:
        assert min(_png_size(_local_file(url))) >= 200


def test_the_module_lists_every_file_and_registers_its_self_test_with_ctest(configured):
    record = configured["record"]
    assert record["module_name"] == "MedGen" and Path(record["module_dir"]) == MODULE and record["generic_tests"] == "TRUE"
    scripts = {p.relative_to(MODULE).as_posix() for p in MODULE.rglob("*.py") if "Testing" not in p.parts and "__pycache__" not in p.parts}
    resources = {p.relative_to(MODULE).as_posix() for p in (MODULE / "Resources").rglob("*") if p.is_file()}
    assert set(record["scripts"].split(";")) == scripts and set(record["resources"].split(";")) == resources
    assert Path(record["unittest"]) == MODULE / "MedGen.py"
    command = configured["tests"]["py_MedGen"]
    assert command[:3] == [str(configured["standin"] / "Slicer"), "--no-splash", "--ignore-slicerrc"]
    assert re.fullmatch(r"import slicer\.testing; slicer\.testing\.runUnitTest\(\['.+', '.+/slicer_extension/MedGen'\], 'MedGen'\)", command[-1])
    source = (MODULE / "MedGen.py").read_text(encoding="utf-8")
    assert "class MedGenTest(ScriptedLoadableModuleTest)" in source  # what runUnitTest(..., 'MedGen') runs


def test_readme_documents_building_and_loading_in_a_real_slicer():
    readme = (EXT / "README.md").read_text(encoding="utf-8")
    for needed in ("-DSlicer_DIR=", "--additional-module-paths", "ctest", "Resources/wheels", "medgen bundle list --json",
                   "Extensions Manager", "PyTorch"):
        assert needed in readme, needed
