"""Command building, progress parsing and the child process (cancel kills the whole tree). No MRML needed."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from MedGenLib.catalog import bundle_for, bundles_by_action, enabled_actions
from MedGenLib.commands import Device, GenerationRequest, build_command, device_advice, medgen_executable
from MedGenLib.process import CANCELLED_RETURN_CODE, MedGenProcess, State
from MedGenLib.progress import ErrorEvent, LogEvent, ProgressEvent, StateEvent, parse_line

from medgen_core.utils.progress import progress, progress_mode

GRANDCHILD_AND_PROGRESS = (
    "import subprocess, sys, time\n"
    "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
    "print('GRANDCHILD', child.pid, flush=True)\n"
    "for i in range(100):\n"
    "    print('MEDGEN_PROGRESS {\"stage\": \"stand-in\", \"done\": %d, \"total\": 100, \"fraction\": %f}' % (i + 1, (i + 1) / 100), flush=True)\n"
    "    time.sleep(0.2)\n"
)


# -- core: machine-readable progress --------------------------------------------------------------
def test_progress_prints_json_lines_only_when_asked(capsys, monkeypatch):
    monkeypatch.delenv("MEDGEN_PROGRESS", raising=False)
    assert list(progress(range(3), "stage a", disable=True)) == [0, 1, 2]
    assert "MEDGEN_PROGRESS" not in capsys.readouterr().out
    with progress_mode("json"):
        assert list(progress(iter(range(4)), "stage b", total=4, disable=True)) == [0, 1, 2, 3]
    assert "MEDGEN_PROGRESS" not in os.environ  # restored
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4
    events = [parse_line(line) for line in lines]
    assert [e.done for e in events] == [1, 2, 3, 4] and events[-1] == ProgressEvent("stage b", 4, 4, 1.0)


def test_parse_line_handles_progress_errors_and_noise():
    assert parse_line('MEDGEN_PROGRESS {"stage": "s", "done": 1, "total": 4, "fraction": 0.25}\n') == ProgressEvent("s", 1, 4, 0.25)
    glued = '\rupscale:   0%|          | 0/1 [00:00<?, ?batch/s]MEDGEN_PROGRESS {"stage": "s", "done": 1, "total": 2}'
    assert parse_line(glued) == ProgressEvent("s", 1, 2, 0.5)  # tqdm (stderr) fragment before the line
    assert parse_line("medgen: error: in.nrrd: file not found") == ErrorEvent("in.nrrd: file not found")
    assert isinstance(parse_line("MEDGEN_PROGRESS {broken"), LogEvent)
    assert parse_line("wrote out.nrrd") == LogEvent("wrote out.nrrd")


# -- command building -----------------------------------------------------------------------------
def test_build_command_for_each_action(tmp_path):
    exe = [sys.executable, "-m", "medgen_core.cli.main"]
    assert medgen_executable() == exe and medgen_executable("/opt/medgen/bin/medgen") == ["/opt/medgen/bin/medgen"]
    up = build_command(GenerationRequest("upscale", tmp_path / "in.nrrd", tmp_path / "out.nrrd", scale=4, variant="x4_mixed"), base_env={})
    assert up.argv == exe + ["upscale", str(tmp_path / "in.nrrd"), str(tmp_path / "out.nrrd"), "--scale", "4", "--variant",
                             "x4_mixed", "--device", "auto", "--progress", "json"]
    assert up.env == {"MEDGEN_PROGRESS": "json", "PYTHONUNBUFFERED": "1"}
    tr = build_command(GenerationRequest("translate", Path("a.nrrd"), Path("b.nrrd"), bundle="t1_t2", direction="b2a"), ["medgen"], {})
    assert tr.argv == ["medgen", "translate", "a.nrrd", "b.nrrd", "--bundle", "t1_t2", "--direction", "b2a", "--device", "auto", "--progress", "json"]
    one_way = build_command(GenerationRequest("translate", Path("a.nrrd"), Path("b.nrrd"), bundle="tissue_t1"), ["medgen"], {})
    assert "--direction" not in one_way.argv  # one-way (pix2pix) bundles refuse --direction
    au = build_command(GenerationRequest("augment", Path("a.nrrd"), Path("b.nrrd"), bundle="aug", seed=7, strength=0.3), ["medgen"], {})
    assert au.argv[1:] == ["augment", "variants", "a.nrrd", "--output", "b.nrrd", "--bundle", "aug", "--seed", "7", "--strength", "0.3",
                           "--device", "auto", "--progress", "json"]
    with pytest.raises(ValueError, match=r"strength must be in \(0, 1\], got 1.5"):
        GenerationRequest("augment", Path("a.nrrd"), Path("b.nrrd"), bundle="aug", strength=1.5)
    with pytest.raises(ValueError):
        GenerationRequest("translate", Path("a"), Path("b"))  # needs a bundle
    with pytest.raises(ValueError):
        GenerationRequest("segment", Path("a"), Path("b"))


def test_force_cpu_hides_gpus_from_the_child():
    cmd = build_command(GenerationRequest("upscale", Path("a.nrrd"), Path("b.nrrd"), device=Device.CPU), ["medgen"], {"PATH": "/bin"})
    assert cmd.argv[cmd.argv.index("--device") + 1] == "cpu"
    assert cmd.env["CUDA_VISIBLE_DEVICES"] == "-1" and cmd.env["PATH"] == "/bin"
    auto = build_command(GenerationRequest("upscale", Path("a.nrrd"), Path("b.nrrd")), ["medgen"], {})
    assert "CUDA_VISIBLE_DEVICES" not in auto.env
    assert "CPU" in device_advice([]) and "Force CPU" in device_advice([("small GPU", 4096)])


def test_catalog_groups_bundles_by_action():
    metas = {
        "sr": {"name": "sr", "version": "1.0", "medgen": {"action": "upscale", "variants": {"x2_mixed": {"scale": 2}, "x4_mixed": {"scale": 4}}}},
        "t1t2": {"name": "t1t2", "version": "0.2", "medgen": {"action": "translate", "directions": {"a2b": "T1 -> T2", "b2a": "T2 -> T1"}, "trained": False}},
        "tissue": {"name": "tissue", "medgen": {"action": "translate"}},
        "seg": {"name": "seg", "medgen": {"action": "segment"}},
    }
    groups = bundles_by_action(lambda: metas)
    assert {a: [c.name for c in cs] for a, cs in groups.items()} == {"translate": ["t1t2", "tissue"], "upscale": ["sr"], "augment": []}
    assert enabled_actions(groups) == {"translate", "upscale"}
    assert groups["upscale"][0].scales == [2, 4]
    assert groups["translate"][0].directions == ("a2b", "b2a") and not groups["translate"][0].trained
    assert groups["translate"][1].directions == () and groups["translate"][1].trained
    assert bundle_for(groups, "upscale", "t1t2").name == "sr" and bundle_for(groups, "augment") is None


def test_catalog_from_the_shipped_bundles(cli_listing):
    groups = bundles_by_action(lambda: cli_listing["entries"])  # the real `medgen bundle list --json`
    sr = bundle_for(groups, "upscale", "brain_mri_super_resolution")
    assert sr is not None and 2 in sr.scales and sr.runnable


# -- child process --------------------------------------------------------------------------------
def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie waiting to be reaped is dead for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _live_processes_in_session(sid: int) -> list[int]:
    """PIDs of non-zombie processes whose session id is ``sid`` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":  # fields: state, ppid, pgrp, session, ...
            found.append(int(stat.parent.name))
    return found


def test_process_reports_done_and_failure():
    ok = MedGenProcess([sys.executable, "-c", "print('MEDGEN_PROGRESS {\"stage\": \"s\", \"done\": 1, \"total\": 1}')"]).start()
    assert ok.wait(30) is State.DONE and ok.returncode == 0
    assert ProgressEvent("s", 1, 1, 1.0) in ok.poll_events()
    bad = MedGenProcess([sys.executable, "-c", "import sys; print('medgen: error: x.nrrd: corrupt', file=sys.stderr); sys.exit(2)"]).start()
    assert bad.wait(30) is State.FAILED and bad.returncode == 2 and bad.error_message == "x.nrrd: corrupt"
    missing = MedGenProcess(["/nonexistent/medgen"]).start()
    assert missing.state is State.FAILED and "cannot start" in missing.error_message


@pytest.mark.skipif(os.name != "posix", reason="process-group kill is POSIX here (taskkill /T on Windows)")
def test_cancel_kills_the_whole_process_tree():
    events: list = []
    proc = MedGenProcess([sys.executable, "-c", GRANDCHILD_AND_PROGRESS], on_event=events.append).start()
    deadline = time.monotonic() + 20
    while not any(isinstance(e, ProgressEvent) for e in events) and time.monotonic() < deadline:
        time.sleep(0.05)
    grandchild = int(next(line.split()[1] for line in proc.lines if line.startswith("GRANDCHILD")))
    child = proc.pid
    assert proc.state is State.RUNNING and _alive(child) and _alive(grandchild)
    started = time.monotonic()
    proc.cancel()
    assert time.monotonic() - started < 10
    assert proc.state is State.CANCELLED and proc.returncode == CANCELLED_RETURN_CODE
    assert StateEvent("Cancelled", "cancelled by the user") in events
    deadline = time.monotonic() + 10
    while (_alive(child) or _alive(grandchild)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(child) and not _alive(grandchild)
    assert _live_processes_in_session(child) == []  # nothing left of the child's session (zombies aside)


def test_cli_main_runs_as_module_and_offers_json_progress():
    out = subprocess.run([sys.executable, "-m", "medgen_core.cli.main", "upscale", "--help"], capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=120, check=False)
    assert out.returncode == 0 and "--progress {bar,json}" in out.stdout
