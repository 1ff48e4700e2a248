"""MedGen's standing bad-input corpus (issue 14, point 4).

Every case is built from code into an empty folder (:func:`build_case`); nothing is downloaded or
committed as a binary. ``tests/test_bad_input_corpus.py`` runs every case through ``medgen`` in-process
and checks its one expected outcome plus the invariants that hold for all of them (no input changed, nothing
half-written left behind, no payload ran). ``python tests/corpus/build_corpus.py OUT_DIR`` writes the
corpus to a folder with a ``manifest.json`` for people.
"""

from __future__ import annotations

from .bundle_cases import CASES as _BUNDLE
from .cli_cases import CASES as _CLI
from .image_cases import CASES as _IMAGE
from .model import (MARKER_PREFIX, Action, Case, CaseUnavailable, ChecksFail, Error, Outcome, Status, Success, case_env, describe,
                    env_values)
from .name_cases import CASES as _NAMES
from .output_cases import CASES as _OUTPUT
from .provenance_cases import CASES as _PROVENANCE

__all__ = ["CASES", "MARKER_PREFIX", "Action", "Case", "CaseUnavailable", "ChecksFail", "Error", "Outcome", "Status", "Success",
           "case_env", "describe", "env_values"]

#: Every case, by category.
CASES: list[Case] = [*_IMAGE, *_OUTPUT, *_PROVENANCE, *_BUNDLE, *_NAMES, *_CLI]

_ids = [case.id for case in CASES]
if len(set(_ids)) != len(_ids):
    raise RuntimeError(f"duplicate corpus case ids: {sorted({i for i in _ids if _ids.count(i) > 1})}")
