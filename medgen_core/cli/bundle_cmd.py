"""``medgen bundle list | run | check | pack | install``: the bundles MedGen knows, running, checking and sharing them.

``run --set ID VALUE`` values are literals (JSON numbers, booleans, null and arrays of those; anything
else is a plain string that MONAI never evaluates); ``--set-expression ID VALUE`` is the expert opt-in
for a ``$`` expression or ``@`` reference, which must pass the config inspection. ``check`` inspects
the configs before MONAI's commands execute them; ``install`` refuses a built-in bundle's name unless
``--allow-builtin-name``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from medgen_core.bundles import discover_bundles, get_bundle, install_bundle, pack_bundle, read_zoo_index, run_bundle_inference, run_checks, weights_status
from medgen_core.bundles.conformance import CHECKS, STATIC_CHECKS
from medgen_core.bundles.overrides import check_set_values, expert_override, parse_set_value
from medgen_core.errors import BundleError, MedGenError

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
    run.add_argument("--set", nargs=2, action="append", default=[], metavar=("ID", "VALUE"),
                     help="override a config id with a literal value: a JSON number, true/false/null or array, else a plain string (repeatable)")
    run.add_argument("--set-expression", nargs=2, action="append", default=[], metavar=("ID", "EXPR"),
                     help="expert: override a config id with a value MONAI interprets ($ expression, @ reference); it must pass the config inspection")
    run.add_argument("--trust", action="store_true", help="run even if the bundle's configs fail the inspection (only for bundles you trust)")
    run.set_defaults(func=_run)
    check = sub.add_parser("check", help="check that a bundle is zoo-ready (layout, metadata, weights, configs, MONAI commands)")
    check.add_argument("name", help="bundle name or folder")
    check.add_argument("--quick", action="store_true", help="skip the MONAI commands (verify_metadata, verify_net_in_out, ckpt_export, run)")
    check.add_argument("--only", nargs="+", choices=CHECKS, metavar="CHECK", help=f"run only these checks: {', '.join(CHECKS)}")
    check.add_argument("--trust", action="store_true", help="run MONAI's commands even if the config inspection fails (they execute the configs)")
    check.set_defaults(func=_check)
    pack = sub.add_parser("pack", help="pack a bundle into <name>_v<version>.zip with a checksums.sha256 manifest")
    pack.add_argument("name", help="bundle name or folder")
    pack.add_argument("--out", type=Path, default=Path("."), help="folder for the zip (default: current folder)")
    pack.set_defaults(func=_pack)
    inst = sub.add_parser("install", help="verify and install a packed bundle (zip) or a bundle folder")
    inst.add_argument("source", type=Path, help="<name>_v<version>.zip or a bundle folder")
    inst.add_argument("--trust", action="store_true", help="install even if its configs call code outside monai, medgen_core, torch, numpy")
    inst.add_argument("--force", action="store_true", help="replace an installed bundle of the same version")
    inst.add_argument("--allow-builtin-name", action="store_true",
                      help="install a bundle named like a built-in one (the built-in keeps the name; the copy runs by its folder)")
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
    info = get_bundle(args.name)
    values = check_set_values({k: parse_set_value(v) for k, v in args.set})
    expressions: dict = {}
    for config_id, text in args.set_expression:
        expressions.update(expert_override(config_id, text))
    try:
        out = run_bundle_inference(info, args.input, args.output, values, trust=args.trust, expressions=expressions)
    except MedGenError:
        raise
    except Exception as err:  # a bundle or an override that does not fit: one line, not a traceback
        cause = err
        while cause.__cause__ is not None or cause.__context__ is not None:  # MONAI wraps the real error
            cause = cause.__cause__ or cause.__context__
        lines = [ln for ln in str(cause).splitlines() if ln.strip()] or [""]
        raise BundleError(f"bundle {info.name} failed on {args.input}: {type(cause).__name__}: {lines[0][:300]}") from None
    print(f"wrote {out}")
    return 0


def _check(args: argparse.Namespace) -> int:
    info = get_bundle(args.name)
    names = args.only or (list(STATIC_CHECKS) if args.quick else list(CHECKS))
    print(f"checking {info.name} {info.version} at {info.path}")
    failed = 0
    for result in run_checks(info.path, names, trust=args.trust):
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
    if args.out.exists() and not args.out.is_dir():
        raise BundleError(f"{args.out}: --out must be a folder (the zip is written into it), but a file of that name exists")
    print(f"wrote {pack_bundle(args.name, args.out)}")
    return 0


def _install(args: argparse.Namespace) -> int:
    info = install_bundle(args.source, dest=args.dest, trust=args.trust, force=args.force, allow_builtin_name=args.allow_builtin_name)
    print(f"installed {info.name} {info.version} at {info.path}")
    return 0
