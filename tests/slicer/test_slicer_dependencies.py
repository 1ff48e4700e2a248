"""First-use install of MedGen into Slicer's Python: the plan (which commands, in which order, what is skipped),
carrying it out, and what happens on a Python that has no medgen (a fresh virtual environment, a real MRML scene).

Slicer's ``slicer.util.pip_install`` is replaced by stand-ins (named so) that record the commands, or by the
real pip asked with ``--dry-run --no-index`` (installs nothing). Nothing here installs anything.
"""

from __future__ import annotations

import json
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from MedGenLib import dependencies as deps
from MedGenLib.catalog import CatalogError, list_bundles
from MedGenLib.dependencies import (
    CPU_TORCH_INDEX_URL,
    InstallError,
    execute_plan,
    find_bundled_wheel,
    installed_versions,
    plan_install,
    requirement_lines,
    wheel_version,
)

REPO = Path(__file__).resolve().parents[2]
MODULE_DIR = REPO / "slicer_extension" / "MedGen"
REQUIREMENTS = requirement_lines(MODULE_DIR / "Resources" / "requirements.txt")
MEDGEN_LINE = next(line for line in REQUIREMENTS if line.startswith("medgen"))


def _slicer_without_medgen() -> dict[str, str]:
    """This Python's real distributions minus torch and medgen: a Slicer that has numpy, SimpleITK, requests, ..."""
    return {name: version for name, version in installed_versions().items() if name not in ("torch", "medgen")}


def standin_slicer_python(versions: dict[str, str], torch_version: str = "2.13.0+cpu", medgen_version: str = "0.1.0"):
    """Stand-in for Slicer's Python and ``slicer.util.pip_install`` (installs nothing).

    Returns ``(standin_pip_install, standin_versions, record)``: the pip stand-in records each argument list
    and the constraints file's text at call time, then marks torch / medgen as installed when its arguments
    name them; ``standin_versions()`` returns the stand-in's installed distributions.
    """
    state = dict(versions)
    record: dict[str, list] = {"calls": [], "constraints": []}

    def standin_pip_install(args: list[str]) -> None:
        """Stand-in for slicer.util.pip_install: records the call, pretends that pip installed what it names."""
        record["calls"].append(list(args))
        record["constraints"].append(Path(args[args.index("-c") + 1]).read_text(encoding="utf-8") if "-c" in args else None)
        for arg in args:
            if arg.startswith("torch"):
                state["torch"] = torch_version
            elif arg.startswith("medgen") or arg.endswith(".whl"):
                state["medgen"] = wheel_version(arg) if arg.endswith(".whl") else medgen_version

    def standin_versions() -> dict[str, str]:
        return dict(state)

    return standin_pip_install, standin_versions, record


# -- planning -------------------------------------------------------------------------------------
def test_nothing_to_do_where_torch_and_medgen_are_installed():
    real = installed_versions()  # this test environment: torch and medgen (editable) are installed
    plan = plan_install(real, REQUIREMENTS)
    assert plan.steps == () and not plan.needed
    assert plan.skipped == (f"torch {real['torch']} (>= {deps.TORCH_MINIMUM})", f"medgen {real['medgen']} (>= 0.1.0)")
    assert plan.summary().startswith("Nothing to install.")


def test_a_slicer_without_medgen_gets_torch_cpu_first_then_medgen_from_the_index():
    plan = plan_install(_slicer_without_medgen(), REQUIREMENTS)
    assert [(s.kind, s.package) for s in plan.steps] == [("pip", "torch"), ("pip", "medgen")]
    assert plan.steps[0].pip_args == (f"torch>={deps.TORCH_MINIMUM}", "--index-url", CPU_TORCH_INDEX_URL)
    assert plan.steps[1].pip_args == (MEDGEN_LINE,) and plan.steps[1].pin == ("torch", "SimpleITK", "requests")
    assert plan.skipped == ()
    summary = plan.summary()
    assert "1. torch >= 2.4, CPU build" in summary and "2. medgen>=0.1.0 and its dependencies (from the package index)" in summary


def test_the_pytorch_extension_installs_torch_when_present():
    plan = plan_install(_slicer_without_medgen(), REQUIREMENTS, pytorch_extension=True)
    assert [(s.kind, s.package, s.requirement) for s in plan.steps] == [("pytorch_extension", "torch", ">=2.4"), ("pip", "medgen", "")]
    old_torch = {**_slicer_without_medgen(), "torch": "1.13.1"}
    assert plan_install(old_torch, REQUIREMENTS, pytorch_extension=True).steps[0].kind == "pytorch_extension"  # too old: upgraded
    has_torch = {**_slicer_without_medgen(), "torch": "2.5.1+cu124"}
    assert [s.package for s in plan_install(has_torch, REQUIREMENTS, pytorch_extension=True).steps] == ["medgen"]


def test_a_bundled_wheel_wins_over_the_index_and_upgrades_an_older_medgen(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    for name in ("medgen-0.1.0-py3-none-any.whl", "medgen-0.10.2-py3-none-any.whl", "medgen-0.9.0-py3-none-any.whl",
                 "medgen-9.0-cp311-cp311-linux_x86_64.whl", "other-5.0-py3-none-any.whl", "medgen-notes.txt"):
        (wheels / name).write_bytes(b"")
    wheel = find_bundled_wheel(wheels)
    assert wheel.name == "medgen-0.10.2-py3-none-any.whl"  # newest by version (0.10 > 0.9), pure-Python only
    assert find_bundled_wheel(tmp_path / "absent") is None and find_bundled_wheel(None) is None
    plan = plan_install(_slicer_without_medgen(), REQUIREMENTS, wheel=wheel)
    assert plan.steps[-1].pip_args == (str(wheel),) and "medgen 0.10.2 from the wheel bundled with the extension" in plan.steps[-1].description
    older = {**installed_versions(), "medgen": "0.9.1"}
    plan = plan_install(older, REQUIREMENTS, wheel=wheel)
    assert [s.package for s in plan.steps] == ["medgen"] and "(replaces 0.9.1)" in plan.steps[0].description
    same = {**installed_versions(), "medgen": "0.10.2"}
    assert plan_install(same, REQUIREMENTS, wheel=wheel).steps == ()


def test_requirements_must_be_minimum_versions_without_torch():
    assert REQUIREMENTS[0] == MEDGEN_LINE  # the shipped file parses
    with pytest.raises(ValueError, match=r"requirement 'medgen==0.1.0' is not 'name' or 'name>=version'"):
        plan_install({}, ["medgen==0.1.0"])
    with pytest.raises(ValueError, match="must not name torch"):
        plan_install({}, ["medgen>=0.1", "torch>=2.4"])
    with pytest.raises(ValueError, match="does not name medgen"):
        plan_install({}, ["monai>=1.6"])
    plan = plan_install({"monai": "1.5.0"}, ["medgen>=0.1", "monai>=1.6.1", "nibabel"])
    assert plan.steps[-1].pip_args == ("medgen>=0.1", "monai>=1.6.1", "nibabel")  # unmet extra lines join the medgen step


def test_version_comparison():
    assert deps.version_tuple("2.13.0+cpu") == (2, 13) and deps.version_tuple("1.6.1rc1") == (1, 6, 1)
    assert deps.meets_minimum("2.10.0", "2.4") and not deps.meets_minimum("2.3.1", "2.4") and not deps.meets_minimum(None, None)
    assert deps.meets_minimum("2.4.0", "2.4") and deps.meets_minimum("0.1.0", None)
    with pytest.raises(ValueError, match="does not start with a release number"):
        deps.version_tuple("latest")


# -- carrying it out ------------------------------------------------------------------------------
def test_steps_run_in_order_with_slicers_packages_pinned(tmp_path):
    start = _slicer_without_medgen()
    pip_install, versions, record = standin_slicer_python(start)
    progress = []
    plan = plan_install(versions(), REQUIREMENTS)
    result = execute_plan(plan, pip_install, on_progress=lambda *a: progress.append(a), versions=versions, modules=[], workdir=tmp_path)
    constraints = tmp_path / deps.CONSTRAINTS_NAME
    assert record["calls"] == [[f"torch>={deps.TORCH_MINIMUM}", "--index-url", CPU_TORCH_INDEX_URL, "-c", str(constraints)],
                               [MEDGEN_LINE, "-c", str(constraints)]]
    # the torch installed by step 1 is pinned in step 2, as are Slicer's own SimpleITK and requests
    assert record["constraints"][1].splitlines() == ["torch==2.13.0+cpu", f"SimpleITK=={start['simpleitk']}", f"requests=={start['requests']}"]
    assert record["constraints"][0].splitlines() == [f"SimpleITK=={start['simpleitk']}", f"requests=={start['requests']}"]
    assert result.changed == {"medgen": (None, "0.1.0"), "torch": (None, "2.13.0+cpu")} and not result.restart_recommended
    assert [p[:2] for p in progress] == [(0, 2), (1, 2), (2, 2)] and progress[-1][2] == "MedGen is installed."


def test_restart_is_recommended_only_when_an_imported_distribution_changed():
    start = {**_slicer_without_medgen(), "torch": "2.3.0"}  # too old: upgraded by the plan
    pip_install, versions, _ = standin_slicer_python(start)
    plan = plan_install(versions(), REQUIREMENTS)
    result = execute_plan(plan, pip_install, versions=versions, modules=["numpy", "torch.nn"])
    assert result.changed["torch"] == ("2.3.0", "2.13.0+cpu") and result.restart_recommended
    assert not deps.restart_recommended(["medgen"], ["numpy", "torch"])  # medgen runs in a child process: no restart


def test_a_failed_step_stops_the_install_with_one_line(tmp_path):
    _, versions, _ = standin_slicer_python(_slicer_without_medgen())
    calls = []

    def standin_pip_install_that_fails(args):
        """Stand-in for slicer.util.pip_install that fails like pip without network (exit code 1)."""
        calls.append(args)
        raise subprocess.CalledProcessError(1, ["python", "-m", "pip", "install", *args])

    plan = plan_install(versions(), REQUIREMENTS)
    with pytest.raises(InstallError, match=r"^step 1 \(torch >= 2.4, CPU build .*\) failed: CalledProcessError: .*exit status 1") as info:
        execute_plan(plan, standin_pip_install_that_fails, versions=versions, workdir=tmp_path)
    assert len(calls) == 1 and "\n" not in str(info.value)  # medgen was not attempted


def test_the_pytorch_extension_step_and_a_missing_result_are_reported(tmp_path):
    pip_install, versions, record = standin_slicer_python(_slicer_without_medgen())
    plan = plan_install(versions(), REQUIREMENTS, pytorch_extension=True)

    def standin_install_torch_declined(requirement):
        """Stand-in for PyTorchUtilsLogic().installTorch: the user declined (returns None)."""
        return None

    with pytest.raises(InstallError, match=r"step 1 \(torch >= 2.4 through the PyTorch extension .*\) did not install torch"):
        execute_plan(plan, pip_install, install_torch=standin_install_torch_declined, versions=versions, workdir=tmp_path)
    assert record["calls"] == []

    def standin_pip_install_that_does_nothing(args):
        """Stand-in for slicer.util.pip_install that succeeds but installs nothing."""

    plan = plan_install(versions(), REQUIREMENTS)
    with pytest.raises(InstallError, match=r"the install finished but torch, medgen is still missing"):
        execute_plan(plan, standin_pip_install_that_does_nothing, versions=versions, workdir=tmp_path)


@pytest.fixture(scope="module")
def medgen_wheel(tmp_path_factory) -> Path:
    """The real medgen wheel, built from a copy of the working tree (the tree itself is left alone)."""
    src = tmp_path_factory.mktemp("src")
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split("\n")
    for rel in filter(None, files):
        if (REPO / rel).is_file() and not rel.startswith(("tests/", "slicer_extension/", "docs/", "benchmarks/")):
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            (src / rel).write_bytes((REPO / rel).read_bytes())
    out = tmp_path_factory.mktemp("wheels")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(src), "-w", str(out)],
                   check=True, capture_output=True, timeout=600)
    return find_bundled_wheel(out)


def dry_run_pip_install(args: list[str]) -> None:
    """Stand-in for slicer.util.pip_install that asks the real pip what it would do (``--dry-run --no-index``): installs nothing."""
    subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", *args], check=True, capture_output=True, timeout=300)


@pytest.mark.slow
def test_real_pip_accepts_the_wheel_step_and_refuses_to_replace_slicers_simpleitk(medgen_wheel, tmp_path):
    assert medgen_wheel is not None and wheel_version(medgen_wheel) == installed_versions()["medgen"]
    real = installed_versions()
    plan = plan_install({**real, "medgen": "0.0.1"}, REQUIREMENTS, wheel=medgen_wheel)  # an old medgen: the wheel replaces it
    assert [s.pip_args for s in plan.steps] == [(str(medgen_wheel),)]
    execute_plan(plan, dry_run_pip_install, versions=lambda: real, workdir=tmp_path)  # pip resolves every dependency offline
    slicer_5_2 = {**real, "simpleitk": "2.2.0"}  # older than medgen's SimpleITK>=2.3: pip must refuse, not replace it
    with pytest.raises(InstallError, match=r"step 1 \(medgen .* from the wheel bundled with the extension .*\) failed: CalledProcessError"):
        execute_plan(plan, dry_run_pip_install, versions=lambda: slicer_5_2, workdir=tmp_path)


# -- a Python without medgen ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def bare_python(tmp_path_factory) -> Path:
    """The interpreter of a fresh virtual environment: no medgen, no torch, no pip."""
    root = tmp_path_factory.mktemp("bare-venv")
    venv.create(root, with_pip=False, symlinks=True)
    return root / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")


def test_a_python_without_medgen_plans_the_full_install(bare_python, tmp_path):
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1])\n"
        "from MedGenLib import dependencies as d\n"
        "plan = d.plan_install(d.installed_versions(), d.requirement_lines(sys.argv[2]), pytorch_extension=d.pytorch_extension_available())\n"
        "print(json.dumps({'missing': d.missing_distributions(), 'steps': [[s.kind, s.package, list(s.pip_args)] for s in plan.steps]}))\n"
    )
    out = subprocess.run([str(bare_python), "-c", code, str(MODULE_DIR), str(MODULE_DIR / "Resources" / "requirements.txt")],
                         capture_output=True, text=True, timeout=60, check=True, cwd=tmp_path)  # not the clone: its egg-info counts
    result = json.loads(out.stdout)
    assert result["missing"] == ["torch", "medgen"]
    assert result["steps"] == [["pip", "torch", [f"torch>={deps.TORCH_MINIMUM}", "--index-url", CPU_TORCH_INDEX_URL]], ["pip", "medgen", [MEDGEN_LINE]]]


def test_without_medgen_the_bundle_list_is_one_clear_line(bare_python):
    with pytest.raises(CatalogError, match=r"failed: .*No module named '?medgen_core"):
        list_bundles([str(bare_python), "-I", "-m", "medgen_core.cli.main"])


def test_without_medgen_a_run_on_a_scene_fails_cleanly(scene, tmp_path, bare_python):
    from MedGenLib.jobs import GenerationJob, JobOptions
    from MedGenLib.process import State
    from MedGenLib.testing import oblique_volume

    source = oblique_volume(scene, "src")
    before = scene.GetNumberOfNodes()
    job = GenerationJob(scene, source, JobOptions(action="upscale", scale=2, device="cpu"),
                        executable=[str(bare_python), "-I", "-m", "medgen_core.cli.main"], temp_root=tmp_path)
    assert job.run(timeout_s=60) is State.FAILED
    assert "No module named 'medgen_core'" in job.error and job.result_node is None
    assert scene.GetNumberOfNodes() == before and list(tmp_path.iterdir()) == []
