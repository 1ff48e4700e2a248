"""``medgen provenance show|verify FILE``: inspect and check the provenance of a generated file.

Exit codes of ``verify``: 0 intact, 1 modified, 3 missing (2 is any user error, from ``main``).
``show`` exits 0 when a record was found and 3 when there is none.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from medgen_core.provenance import read_provenance, verify_provenance

__all__ = ["EXIT_CODES", "register"]

#: Exit code of ``medgen provenance verify`` for each verification status.
EXIT_CODES = {"intact": 0, "modified": 1, "missing": 3}


def register(subparsers: Any) -> None:
    """Add the ``provenance`` command (with ``show`` and ``verify``) to the ``medgen`` parser."""
    parser = subparsers.add_parser(
        "provenance",
        help="show or verify the AI-generation record of a file",
        description="Show or verify the provenance record (sidecar and embedded) of a generated file.",
    )
    actions = parser.add_subparsers(dest="provenance_action", metavar="ACTION", required=True)

    show = actions.add_parser("show", help="print the provenance record of FILE")
    show.add_argument("file", metavar="FILE", help="generated image or other output file")
    show.add_argument("--json", action="store_true", help="print the raw records as JSON")
    show.set_defaults(func=_show)

    verify = actions.add_parser(
        "verify", help="check FILE against its record (exit 0 intact, 1 modified, 3 missing)"
    )
    verify.add_argument("file", metavar="FILE", help="generated image or other output file")
    verify.add_argument("--json", action="store_true", help="print the result as JSON")
    verify.set_defaults(func=_verify)


def _show(args: argparse.Namespace) -> int:
    found = read_provenance(args.file)
    if args.json:
        print(json.dumps(found, indent=2, sort_keys=True))
        return 0 if found is not None else EXIT_CODES["missing"]
    if found is None:
        print(f"missing: no provenance record for {args.file}")
        return EXIT_CODES["missing"]
    sidecar, embedded = found["sidecar"], found["embedded"]
    record = embedded if embedded is not None else (sidecar or {}).get("record") or {}
    where = [name for name, value in (("sidecar", sidecar), ("embedded", embedded)) if value is not None]
    lines = [
        f"file:        {args.file}",
        f"found in:    {', '.join(where)}",
        f"generator:   {record.get('generator_name')}",
        f"version:     {record.get('generator_version')}",
        f"task:        {record.get('task')}",
        f"generated:   {record.get('generated_at')}",
        f"bundle:      {record.get('bundle_id')}",
        f"weights:     sha256 {record.get('weights_sha256')}",
        f"parameters:  {json.dumps(record.get('parameters') or {}, sort_keys=True)}",
        f"seed:        {record.get('seed')}",
        f"output:      pixel sha256 {(record.get('output') or {}).get('sha256')}",
        f"run id:      {record.get('run_id')}",
        "inputs:",
    ]
    inputs = record.get("inputs") or []
    lines += [f"  - {i.get('role')}: {i.get('path')} (sha256 {str(i.get('sha256'))[:12]}...)" for i in inputs]
    if not inputs:
        lines.append("  (none)")
    lines.append(f"disclosure:  {record.get('disclosure')}")
    print("\n".join(lines))
    return 0


def _verify(args: argparse.Namespace) -> int:
    result = verify_provenance(args.file)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, sort_keys=True))
    elif result.status == "intact":
        print("intact")
    else:
        print(f"{result.status}: {result.message}")
    return EXIT_CODES[result.status]
