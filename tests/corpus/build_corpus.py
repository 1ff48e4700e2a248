"""Write MedGen's bad-input corpus to a folder, one sub-folder per case, with a ``manifest.json`` for people.

    python tests/corpus/build_corpus.py OUT_DIR [--only ID ...] [--category NAME ...]

Each case folder holds the files the case needs, built from code (nothing is downloaded). The manifest
lists, per case: its id, category, what it is, the command to run from the case folder (``medgen ...``,
with the environment in ``env``: HOME, MEDGEN_BUNDLE_DIR and MEDGEN_KEY_DIR inside the case folder, CUDA
hidden), the one expected outcome, and the sha256 of every file the case starts with. Cases that cannot be
built here (a read-only folder when running as root) are listed with the reason.

The test suite runs the same cases (``tests/test_bad_input_corpus.py``); this script is for looking at them
and for running them by hand against another build of medgen.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the package importable as ``corpus``
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from corpus import CASES, Case, CaseUnavailable, case_env, describe, env_values  # noqa: E402

__all__ = ["build_case", "build_corpus", "main"]

SCHEMA = "medgen-bad-input-corpus/1"


def _files(folder: Path) -> list[dict[str, object]]:
    found = []
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.is_symlink():
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            found.append({"path": path.relative_to(folder).as_posix(), "bytes": path.stat().st_size, "sha256": digest})
        elif path.is_symlink():
            found.append({"path": path.relative_to(folder).as_posix(), "symlink_to": str(path.readlink())})
    return found


def build_case(case: Case, folder: Path, cache: Path) -> dict[str, object]:
    """Build ``case`` into the empty folder ``folder``; return its manifest entry."""
    folder.mkdir(parents=True)
    with case_env(folder, cache, case.env):
        try:
            action = case.build(folder)
        except CaseUnavailable as why:
            return {"id": case.id, "category": case.category, "doc": case.doc, "unavailable": str(why)}
    entry = describe(case, action)
    env = {k: v.replace(str(folder), "<case folder>") for k, v in env_values(folder, cache).items() if k != "MPLCONFIGDIR"}
    env.pop("XDG_CACHE_HOME", None)
    entry.update(folder=folder.name, env={**env, **dict(case.env)}, files=_files(folder))
    return entry


def build_corpus(out: Path, cases: list[Case]) -> Path:
    """Build ``cases`` into ``out`` (new or empty) and write ``out/manifest.json``."""
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"build_corpus: {out} exists and is not empty; give a new or empty folder")
    out.mkdir(parents=True, exist_ok=True)
    cache = out / ".cache"
    entries = []
    for case in cases:
        print(f"building {case.id}", file=sys.stderr)
        entries.append(build_case(case, out / case.id, cache))
    manifest = {"schema": SCHEMA, "count": len(entries), "cases": entries,
                "run": "cd <case folder> && env <env> medgen <argv>; then check 'expected' (see tests/corpus/model.py)"}
    path = out / "manifest.json"
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder to write the corpus into (new or empty)")
    parser.add_argument("--only", nargs="+", default=None, metavar="ID", help="build only these case ids")
    parser.add_argument("--category", nargs="+", default=None, help="build only these categories")
    args = parser.parse_args(argv)
    cases = [c for c in CASES if (args.only is None or c.id in args.only) and (args.category is None or c.category in args.category)]
    unknown = sorted(set(args.only or ()) - {c.id for c in CASES})
    if unknown:
        parser.error(f"unknown case id(s): {', '.join(unknown)}")
    path = build_corpus(args.out.resolve(), cases)
    print(f"wrote {len(cases)} cases and {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
