"""``medgen bundle list | run | check | pack | install``: the bundles MedGen knows, running, checking and sharing them."""

from __future__ import annotations

import argparse
from pathlib import Path

from medgen_core.bundles import discover_bundles, get_bundle, install_bundle, pack_bundle, read_zoo_index, run_bundle_inference, run_checks, weights_status
from medgen_core.bundles.conformance import CHECKS, STATIC_CHECKS

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("bundle", help="list, run, check, pack or install MONAI bundles")
    sub = p.add_subparsers(dest="bundle_command", metavar="ACTION", required=True)
    ls = sub.add_parser("list", help="list discovered bundles with their weight verification state")
    ls.set_defaults(func=_list)
    run = sub.add_parser("run", help="run a bundle's inference config on one file")
    run.add_argument("name", help="bundle name or folder")
    run.add_argument("input", type=Path)
    run.add_argument("output", type=Path)
    run.add_argument("--set", nargs=2, action="append", default=[], metavar=("ID", "VALUE"), help="override a config id (repeatable)")
    run.set_defaults(func=_run)
    check = sub.add_parser("check", help="check that a bundle is zoo-ready (layout, metadata, weights, configs, MONAI commands)")
    check.add_argument("name", help="bundle name or folder")
    check.add_argument("--quick", action="store_true", help="skip the MONAI commands (verify_metadata, verify_net_in_out, ckpt_export, run)")
    check.add_argument("--only", nargs="+", choices=CHECKS, metavar="CHECK", help=f"run only these checks: {', '.join(CHECKS)}")
    check.set_defaults(func=_check)
    pack = sub.add_parser("pack", help="pack a bundle into <name>_v<version>.zip with a checksums.sha256 manifest")
    pack.add_argument("name", help="bundle name or folder")
    pack.add_argument("--out", type=Path, default=Path("."), help="folder for the zip (default: current folder)")
    pack.set_defaults(func=_pack)
    inst = sub.add_parser("install", help="verify and install a packed bundle (zip) or a bundle folder")
    inst.add_argument("source", type=Path, help="<name>_v<version>.zip or a bundle folder")
    inst.add_argument("--trust", action="store_true", help="install even if its configs call code outside monai, medgen_core, torch, numpy")
    inst.add_argument("--force", action="store_true", help="replace an installed bundle of the same version")
    inst.add_argument("--dest", type=Path, default=None, help="bundle folder (default: $MEDGEN_BUNDLE_DIR or ~/.medgen/bundles)")
    inst.set_defaults(func=_install)


def _list(args: argparse.Namespace) -> int:
    bundles = discover_bundles()
    index = read_zoo_index()
    if not bundles:
        print("no bundles found")
    else:
        rows = [("name", "version", "action", "source", "weights", "task")]
        for b in bundles.values():
            entry = index.get(f"{b.name}_v{b.version}", {})
            source = f"user:{Path(entry['source']).name}" if b.source == "user" and entry.get("source") else b.source
            rows.append((b.name, b.version, b.medgen_task or "-", source, weights_status(b.path, b.metadata)[0], b.task))
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        for row in rows:
            print("  ".join(f"{cell:<{w}}" for cell, w in zip(row, widths)) + f"  {row[5]}")
    installed = {f"{b.name}_v{b.version}" for b in bundles.values()}
    archives = {k: v for k, v in index.items() if k not in installed}
    if archives:
        print("\nin the local zoo index (packed, not installed):")
        for key, entry in archives.items():
            print(f"  {key:<40} sha256 {str(entry.get('checksum'))[:16]}...  {entry.get('source', '')}")
    return 0


def _run(args: argparse.Namespace) -> int:
    out = run_bundle_inference(args.name, args.input, args.output, dict(args.set))
    print(f"wrote {out}")
    return 0


def _check(args: argparse.Namespace) -> int:
    info = get_bundle(args.name)
    names = args.only or (list(STATIC_CHECKS) if args.quick else list(CHECKS))
    print(f"checking {info.name} {info.version} at {info.path}")
    failed = 0
    for result in run_checks(info.path, names):
        if result.exempt_reason is not None:
            print(f"  EXEMPT {result.name}: {result.exempt_reason}")
            continue
        print(f"  {'PASS' if result.passed else 'FAIL'}   {result.name}")
        for problem in result.problems:
            print(f"         - {problem}")
        failed += not result.passed
    print("zoo-ready" if not failed else f"{failed} check(s) failed")
    return 0 if not failed else 1


def _pack(args: argparse.Namespace) -> int:
    print(f"wrote {pack_bundle(args.name, args.out)}")
    return 0


def _install(args: argparse.Namespace) -> int:
    info = install_bundle(args.source, dest=args.dest, trust=args.trust, force=args.force)
    print(f"installed {info.name} {info.version} at {info.path}")
    return 0
