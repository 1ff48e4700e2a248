"""The standing bad-input corpus (issue 14, point 4): every case built into tmp_path and run through ``medgen``.

Each case must give its one expected outcome (success with outputs that verify intact; one line
``medgen: error: ...`` with exit code 2; a ``provenance verify`` status) and keep the invariants of every
case: no input changed, nothing half-written left behind, no payload marker created. Cases run in-process
(``medgen_core.cli.main.main`` with fd-level capture); the few that need other processes start them.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from corpus import CASES, Case, CaseUnavailable, case_env
from corpus.runner import check_case, compare, isolated_process_state, run_action, snapshot


@pytest.fixture(scope="session")
def corpus_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Caches shared by the cases (matplotlib's font list), outside every case folder."""
    return tmp_path_factory.mktemp("corpus-cache")


def test_corpus_is_large_and_every_category_is_present() -> None:
    categories = {case.category for case in CASES}
    assert len(CASES) >= 50
    assert categories == {"image", "output", "provenance", "bundle", "names", "cli"}


def test_the_checks_catch_changed_inputs_leftovers_markers_and_multi_line_errors(tmp_path: Path) -> None:
    """The invariants and the error check can fail: a changed input, a temporary file, a payload marker and a
    two-line error are each reported."""
    from corpus import Error, Outcome

    (tmp_path / "scan.nii.gz").write_bytes(b"input")
    before = snapshot(tmp_path)
    (tmp_path / "scan.nii.gz").write_bytes(b"changed")
    (tmp_path / ".tmp-1234-out.nii.gz").write_bytes(b"half")
    (tmp_path / "PWNED_x").touch()
    case = Case("selftest", "cli", "self-test", lambda folder: None, Error("scan.nii.gz"))
    problems = compare(before, snapshot(tmp_path), case)
    assert any(p.startswith("input changed: scan.nii.gz") for p in problems)
    assert "left behind: .tmp-1234-out.nii.gz" in problems and "payload ran: PWNED_x exists" in problems
    two_lines = Outcome(2, "", "medgen: error: scan.nii.gz: bad\nITK ERROR: more\n")
    assert check_case(case, two_lines, lambda: ("", "")) != []
    one_line = Outcome(2, "", "upscale:  50%|#####     | 1/2 [00:00<00:00]\rmedgen: error: scan.nii.gz: bad\n")
    assert check_case(case, one_line, lambda: ("", "")) == []


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=pytest.mark.timeout(c.timeout_s)) for c in CASES])
def test_case(case: Case, tmp_path: Path, corpus_cache: Path, capfd: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "case"
    folder.mkdir()

    def read() -> tuple[str, str]:
        captured = capfd.readouterr()
        return captured.out, captured.err

    started = time.monotonic()
    with case_env(folder, corpus_cache, case.env), isolated_process_state():
        try:
            action = case.build(folder)
        except CaseUnavailable as why:
            pytest.skip(str(why))
        read()
        before = snapshot(folder)
        outcome, peak_mb = run_action(action, folder, read, case.max_memory_mb)
        problems = check_case(case, outcome, read)
        after = snapshot(folder)
    problems += compare(before, after, case)
    problems += [f"left behind outside the case folder: {p.name}" for p in tmp_path.iterdir() if p != folder]
    if case.max_memory_mb is not None and peak_mb > case.max_memory_mb:
        problems.append(f"peak traced memory {peak_mb:.0f} MB > {case.max_memory_mb:.0f} MB")
    assert not problems, f"{case.id} ({case.doc}; {time.monotonic() - started:.1f} s):\n  " + "\n  ".join(problems)
