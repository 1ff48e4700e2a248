"""The ``medgen`` command line starts light and ends every error with one line.

- ``medgen --help`` and ``medgen CMD --help`` import no torch / MONAI / diffusers (checked through ``sys.modules``
  in a fresh interpreter; the time itself is measured by ``benchmarks/benchmark_cli_startup.py``, not here);
- the placeholders that ``medgen --help`` lists say what each command module registers;
- an unexpected exception is one line with exit code 70, the traceback only with ``--debug``;
- ``--device cuda:N`` without CUDA, a malformed ``--device`` and a missing ``transformers`` are one line, exit code 2;
- a malformed command line (unknown command or option, missing or extra argument) is one line, exit code 64, while a
  value argparse refuses (not a number, out of range, not a choice) is bad input, exit code 2.

Failures are caused for real in a subprocess (CUDA hidden, a module made to fail on import by a ``sitecustomize``),
never by patching the library.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from medgen_core.cli import demo_cmd, genseg_cmd
from medgen_core.cli._common import EXIT_INTERNAL, EXIT_USAGE, EXIT_USER, missing_package_message, report_error
from medgen_core.cli.main import COMMANDS, build_parser, main

HEAVY = ("torch", "monai", "diffusers", "transformers")
# every command module keeps its heavy imports inside the functions that run them (medgen_core.bundles included)
LIGHT_COMMANDS = tuple(COMMANDS)


def _python(code: str, *, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          env={**os.environ, **(env or {})})


def _medgen(*argv: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return _python(f"import sys; from medgen_core.cli.main import main; sys.exit(main({list(argv)!r}))", env=env, cwd=cwd)


def _error_lines(stderr: str) -> list[str]:
    """The ``medgen: error:`` lines (a progress bar may precede one on the same line, ending with a carriage return)."""
    return [line for line in re.split(r"[\r\n]", stderr) if line.startswith("medgen: error:")]


def _blocking(tmp_path: Path, code: str) -> dict[str, str]:
    """Environment whose interpreters run ``code`` first (a ``sitecustomize`` on PYTHONPATH)."""
    folder = tmp_path / "site"
    folder.mkdir(exist_ok=True)
    (folder / "sitecustomize.py").write_text(textwrap.dedent(code), encoding="utf-8")
    return {"PYTHONPATH": os.pathsep.join([str(folder), *filter(None, [os.environ.get("PYTHONPATH")])])}


def test_help_imports_no_torch() -> None:
    """``import medgen_core.cli.main``, ``medgen --help`` and the light commands' parsers (help text included) load
    none of torch, MONAI, diffusers, transformers."""
    done = _python(textwrap.dedent(f"""
        import contextlib, io, json, sys
        import medgen_core.cli.main as cli
        after_import = sorted(m for m in {HEAVY!r} if m in sys.modules)
        with contextlib.redirect_stdout(io.StringIO()) as out:
            try:
                cli.main(["--help"])
            except SystemExit:
                pass
        after_help = sorted(m for m in {HEAVY!r} if m in sys.modules)
        parser = cli.build_parser({LIGHT_COMMANDS!r})
        for action in parser._subparsers._group_actions[0].choices.values():
            action.format_help()
        after_commands = sorted(m for m in {HEAVY!r} if m in sys.modules)
        print(json.dumps([after_import, after_help, after_commands, "upscale" in out.getvalue()]))
    """))
    assert done.returncode == 0, done.stderr
    after_import, after_help, after_commands, listed = json.loads(done.stdout.strip().splitlines()[-1])
    assert after_import == [] and after_help == [] and listed, (after_import, after_help)
    assert after_commands == [], f"'medgen CMD --help' of {LIGHT_COMMANDS} imports {after_commands}"


def test_help_lists_every_command_with_its_modules_own_help() -> None:
    """The one-line helps of :data:`COMMANDS` (shown by ``medgen --help`` without importing the modules) are the ones
    the modules register; update COMMANDS in main.py when a module's help changes."""
    full = build_parser()
    registered = {a.dest: a.help for a in full._subparsers._group_actions[0]._choices_actions}
    assert registered, "no command registered"
    assert {name: COMMANDS[name][1] for name in registered} == registered
    lazy = build_parser([])
    assert {a.dest: a.help for a in lazy._subparsers._group_actions[0]._choices_actions} == registered


def test_help_values_copied_into_light_modules_are_the_originals() -> None:
    """demo_cmd's and genseg_cmd's copies of choices and defaults (kept there so that their help stays light)."""
    from medgen_core.cli.upscale_cmd import DEFAULT_SR_BUNDLE
    from medgen_core.transforms.degradation import DEGRADATIONS

    assert demo_cmd.DEGRADATIONS == DEGRADATIONS and demo_cmd.DEFAULT_SR_BUNDLE == DEFAULT_SR_BUNDLE
    from medgen_core.experiments.genseg_benchmark import METHODS, GenSegBenchmarkConfig
    from medgen_core.training.segmentation import SEGMENTERS

    defaults = GenSegBenchmarkConfig()
    assert genseg_cmd.METHODS == METHODS and genseg_cmd.SEGMENTERS == SEGMENTERS
    assert genseg_cmd.BENCHMARK_DEFAULTS == {k: getattr(defaults, k) for k in genseg_cmd.BENCHMARK_DEFAULTS}


def test_help_shows_the_exit_codes_and_device_forms(capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert stop.value.code == 0 and "70 unexpected error" in text and "2 bad input" in text and "64 usage error" in text and "--debug" in text
    with pytest.raises(SystemExit):
        main(["translate", "--help"])
    assert "auto, cpu, cuda or cuda:N" in " ".join(capsys.readouterr().out.split())


USAGE_ERRORS = {  # a malformed command line: exit 64
    "unknown command": (["upscal"], "invalid choice: 'upscal'"),
    "unknown action": (["bundle", "lst"], "invalid choice: 'lst'"),
    "missing action": (["provenance"], "required: ACTION"),
    "missing arguments": (["upscale", "in.nii.gz"], "required: output"),
    "unknown option": (["upscale", "in.nii.gz", "out.nii.gz", "--colour", "red"], "unrecognized arguments: --colour red"),
    "option without its value": (["upscale", "in.nii.gz", "out.nii.gz", "--scale"], "--scale: expected one argument"),
    "extra argument": (["provenance", "verify", "a.nii.gz", "b.nii.gz"], "unrecognized arguments: b.nii.gz"),
}
BAD_VALUES = {  # a value that cannot be used, refused by argparse: exit 2 like any bad input
    "not a number": (["upscale", "in.nii.gz", "out.nii.gz", "--target-spacing", "five"], "--target-spacing: expected a number"),
    "out of range": (["upscale", "in.nii.gz", "out.nii.gz", "--batch-size", "0"], "--batch-size"),
    "not a choice": (["upscale", "in.nii.gz", "out.nii.gz", "--scale", "3"], "--scale: invalid choice: 3"),
    "not an int": (["demo", "--scale", "x2"], "invalid int value: 'x2'"),
}


@pytest.mark.parametrize("case", sorted(USAGE_ERRORS) + sorted(BAD_VALUES))
def test_usage_errors_exit_64_and_bad_values_exit_2(tmp_path: Path, capsys, monkeypatch, case: str) -> None:
    """Both are one ``medgen: error:`` line naming what is wrong; nothing is written (into the current folder)."""
    monkeypatch.chdir(tmp_path)
    argv, fragment = USAGE_ERRORS.get(case) or BAD_VALUES[case]
    with pytest.raises(SystemExit) as stop:
        main([*argv])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert stop.value.code == (EXIT_USAGE if case in USAGE_ERRORS else EXIT_USER), (case, err)
    assert len(lines) == 1 and lines[0].startswith("medgen: error:") and fragment in lines[0], lines
    assert list(tmp_path.iterdir()) == []


def test_a_data_error_is_exit_2_not_64(tmp_path: Path) -> None:
    """A well-formed command line whose input is bad (a file that is not an image): 2, in a real process."""
    bad = tmp_path / "scan.nii.gz"
    bad.write_bytes(b"not a nifti file at all")
    done = _medgen("upscale", str(bad), str(tmp_path / "out.nii.gz"), cwd=tmp_path)
    assert done.returncode == EXIT_USER and _error_lines(done.stderr) and str(bad) in _error_lines(done.stderr)[0], done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan.nii.gz"]


def test_unexpected_exception_is_one_line_exit_70_and_debug_shows_the_traceback(tmp_path: Path) -> None:
    """A module that a command imports when it runs fails with a RuntimeError (made to, by a sitecustomize)."""
    env = _blocking(tmp_path, """
        import sys

        class Fail:
            def find_spec(self, name, path=None, target=None):
                if name == "medgen_core.provenance.trust":
                    raise RuntimeError("simulated failure\\nwith a second line")

        sys.meta_path.insert(0, Fail())
    """)
    plain = _medgen("provenance", "trust", "list", env=env)
    lines = [line for line in plain.stderr.splitlines() if line.strip()]
    assert plain.returncode == EXIT_INTERNAL, plain.stderr
    assert len(lines) == 1 and "Traceback" not in plain.stderr, plain.stderr
    assert lines[0].startswith("medgen: error: unexpected RuntimeError in medgen provenance: simulated failure; with a second line")
    assert "--debug" in lines[0]
    for argv in (("--debug", "provenance", "trust", "list"), ("provenance", "trust", "list", "--debug")):
        debug = _medgen(*argv, env=env)
        assert debug.returncode == EXIT_INTERNAL, debug.stderr
        assert "Traceback (most recent call last)" in debug.stderr and 'raise RuntimeError("simulated failure' in debug.stderr
        assert _error_lines(debug.stderr)[-1].startswith("medgen: error: unexpected RuntimeError") and debug.stderr.rstrip().endswith("second line")


def test_report_error_codes(capsys) -> None:
    """MedGenError (also wrapped by a library, as MONAI wraps config errors) and a missing package: 2; others: 70."""
    from medgen_core.errors import WeightsError

    try:
        try:
            raise WeightsError("model.pt: sha256 does not match\nexpected abc")
        except WeightsError as inner:
            raise RuntimeError("Failed to instantiate {'_target_': ...}") from inner
    except RuntimeError as wrapped:
        assert report_error(wrapped) == EXIT_USER
    assert capsys.readouterr().err == "medgen: error: model.pt: sha256 does not match; expected abc\n"
    assert report_error(ZeroDivisionError("division by zero")) == EXIT_INTERNAL
    assert capsys.readouterr().err.startswith("medgen: error: unexpected ZeroDivisionError in medgen: division by zero; run again with --debug")
    missing = ModuleNotFoundError("No module named 'transformers'", name="transformers")
    assert missing_package_message(missing, "medgen augment") == ("medgen augment needs the optional package 'transformers', which is "
                                                                 "not installed; install it with: pip install 'medgen[sd]'")
    assert missing_package_message(ModuleNotFoundError("x", name="medgen_core.nothing")) is None  # our own bug, not a package


@pytest.mark.parametrize("device, fragment", [("cuda:0", "CUDA is not available"), ("cuda", "CUDA is not available"),
                                              ("cuda:x", "is not a torch device; expected auto, cpu, cuda or cuda:N"),
                                              ("gpu0", "is not a torch device")])
def test_device_refusals_are_one_line_exit_2(tmp_path: Path, device: str, fragment: str) -> None:
    done = _medgen("cvae", "sample", "--bundle", "abr_joint_cvae", "--n", "2", "--output", "s.npz", "--device", device,
                   env={"CUDA_VISIBLE_DEVICES": ""}, cwd=tmp_path)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith(f"medgen: error: --device {device}") or lines[0].startswith(f"medgen: error: --device {device!r}"), lines[0]
    assert fragment in lines[0]
    assert not (tmp_path / "s.npz").exists()


def test_missing_transformers_is_one_line_with_the_extra(tmp_path: Path) -> None:
    """A Stable Diffusion generator without transformers installed (hidden from the interpreter by a sitecustomize)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from augmentation_testing import save_tiny_sd_pipeline

    save_tiny_sd_pipeline(tmp_path / "generators" / "t1")
    (tmp_path / "aug.json").write_text(json.dumps({"generators": "generators", "augmentation": {"modality": "t1", "classes": ["a"],
                                                                                                "inference_steps": 2}}))
    env = _blocking(tmp_path, 'import sys\nsys.modules["transformers"] = None  # as if it were not installed\n')
    done = _medgen("augment", "--config", "aug.json", "--out", "synth", "--n", "1", env={**env, "HF_HUB_OFFLINE": "1"}, cwd=tmp_path)
    lines = _error_lines(done.stderr)
    assert done.returncode == 2 and len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "needs the package 'transformers'" in lines[0] and "pip install 'medgen[sd]'" in lines[0] and "text_encoder (CLIPTextModel)" in lines[0]
    assert not list((tmp_path / "synth").glob("synthetic_*"))


def test_no_command_prints_help_and_exits_1(capsys) -> None:
    assert main([]) == 1
    assert "COMMAND" in capsys.readouterr().out
