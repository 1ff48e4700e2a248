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
