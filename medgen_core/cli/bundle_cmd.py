"""``medgen bundle list | run``: the bundles MedGen knows and a direct way to run one."""

from __future__ import annotations

import argparse
from pathlib import Path

from medgen_core.bundles import discover_bundles, run_bundle_inference

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("bundle", help="list or run MONAI bundles")
    sub = p.add_subparsers(dest="bundle_command", metavar="ACTION", required=True)
    ls = sub.add_parser("list", help="list discovered bundles")
    ls.set_defaults(func=_list)
    run = sub.add_parser("run", help="run a bundle's inference config on one file")
    run.add_argument("name", help="bundle name or folder")
    run.add_argument("input", type=Path)
    run.add_argument("output", type=Path)
    run.add_argument("--set", nargs=2, action="append", default=[], metavar=("ID", "VALUE"), help="override a config id (repeatable)")
    run.set_defaults(func=_run)


def _list(args: argparse.Namespace) -> int:
    bundles = discover_bundles()
    if not bundles:
        print("no bundles found")
        return 0
    print(f"{'name':<36} {'version':<9} {'action':<10} {'source':<8} task")
    for b in bundles.values():
        print(f"{b.name:<36} {b.version:<9} {b.medgen_task:<10} {b.source:<8} {b.task}")
    return 0


def _run(args: argparse.Namespace) -> int:
    out = run_bundle_inference(args.name, args.input, args.output, dict(args.set))
    print(f"wrote {out}")
    return 0
