"""``medgen bundle list | run | check | pack | install | rehash``: the bundles MedGen knows, running, checking and sharing them.

``list`` shows where each bundle came from (``path``, ``env`` = ``MEDGEN_BUNDLE_PATH``, ``user``, ``package``,
``source``; order and rules in :mod:`medgen_core.bundles.catalog`) and the same-named copies it hides;
``list --json`` prints ``{"bundles": [{"name", "display_name", "version", "path", "source", "hidden",
"weights_ok", "metadata"}]}`` (the Slicer module reads it), ``check --json`` a list of ``{"check", "passed", "message"}``.

``run --set ID VALUE`` values are literals (JSON numbers, booleans, null and arrays of those; anything
else is a plain string that MONAI never evaluates); ``--set-expression ID VALUE`` is the expert opt-in
for a ``$`` expression or ``@`` reference, which must pass the config inspection. ``check`` inspects
the configs before MONAI's commands execute them; ``install`` refuses a built-in bundle's name unless
``--allow-builtin-name``. ``rehash`` records the sha256 of retrained weights in a bundle's metadata, marked
``user-retrained`` (never for a built-in bundle; ``medgen train`` does it for the copy it writes).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from medgen_core.bundles import get_bundle, install_bundle, pack_bundle, read_zoo_index, run_bundle_inference, run_checks, weights_status
from medgen_core.bundles.catalog import BundleInfo, scan_catalog, search_roots, warn_once
from medgen_core.bundles.conformance import CHECKS, STATIC_CHECKS
from medgen_core.bundles.overrides import check_set_values, expert_override, parse_set_value
from medgen_core.errors import BundleError, MedGenError

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("bundle", help="list, run, check, pack, install or rehash MONAI bundles")
    sub = p.add_subparsers(dest="bundle_command", metavar="ACTION", required=True)
    ls = sub.add_parser("list", help="list discovered bundles, where each came from, and their weight verification state")
    ls.add_argument("--json", action="store_true", help='print {"bundles": [{name, display_name, version, path, source, hidden, weights_ok, metadata}]}')
    ls.add_argument("--bundle", action="append", default=[], metavar="FOLDER", help="also list this bundle folder, first in the lookup order (repeatable)")
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
    check.add_argument("--json", action="store_true", help="print a JSON list of {check, passed, message}")
    check.set_defaults(func=_check)
    pack = sub.add_parser("pack", help="pack a bundle into <name>_v<version>.zip with a checksums.sha256 manifest")
    pack.add_argument("name", help="bundle name or folder")
    pack.add_argument("--out", type=Path, default=Path("."), help="folder for the zip (default: current folder)")
    pack.set_defaults(func=_pack)
    inst = sub.add_parser("install", help="verify and install a packed bundle (zip) or a bundle folder")
    inst.add_argument("source", type=Path, help="<name>_v<version>.zip or a bundle folder")
    inst.add_argument("--trust", action="store_true",
                      help="install even if its configs call code outside monai, medgen_core, torch, numpy, or its weights' sha256s are recorded nowhere (Model Zoo bundles)")
    inst.add_argument("--force", action="store_true", help="replace an installed bundle of the same version")
    inst.add_argument("--allow-builtin-name", action="store_true",
                      help="install a bundle named like a built-in one (the built-in keeps the name; the copy runs by its folder)")
    inst.add_argument("--dest", type=Path, default=None, help="bundle folder (default: $MEDGEN_BUNDLE_DIR or ~/.medgen/bundles)")
    inst.add_argument("--sha256", default=None, metavar="HEX", help="refuse the archive unless its sha256 is this (e.g. the checksum in a zoo index)")
    inst.set_defaults(func=_install)
    rh = sub.add_parser("rehash", help="record the sha256 of retrained weights in a bundle copy's metadata (marked user-retrained)")
    rh.add_argument("name", help="bundle folder (or name of a bundle that is not built in)")
    rh.set_defaults(func=_rehash)


def _weights_ok(info: BundleInfo) -> bool | None:
    """True when every weight file matches its recorded sha256, False on a mismatch, None when unverifiable."""
    return {"OK": True, "MISMATCH": False}.get(weights_status(info.path, info.metadata)[0])


def bundle_record(info: BundleInfo) -> dict[str, Any]:
    """One entry of ``medgen bundle list --json``."""
    return {"name": info.name, "display_name": info.display_name, "version": info.version, "path": str(info.path), "source": info.source,
            "hidden": [str(p) for p in info.hidden], "weights_ok": _weights_ok(info), "metadata": info.metadata}


def _list(args: argparse.Namespace) -> int:
    catalog = scan_catalog(args.bundle)
    warn_once(catalog.problems, always=True)  # broken folders, copies hidden behind a built-in: stderr; the listing goes on
    bundles = catalog.bundles
    if args.json:
        print(json.dumps({"bundles": [bundle_record(b) for b in bundles.values()]}, indent=2))
        return 0
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
        hidden = [(b, p) for b in bundles.values() for p in b.hidden]
        if hidden:
            print("\nhidden (a bundle of the same name comes first in the lookup order):")
            for b, path in hidden:
                print(f"  {b.name}: {path} is hidden by the {b.source} bundle at {b.path}")
    searched = ", ".join(f"{source} {path}" for source, path in search_roots())
    print(f"\nlookup order: --bundle FOLDER, MEDGEN_BUNDLE_PATH, user, package, source; searched: {searched}")
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


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Send everything written to stdout (MONAI's log handlers hold the stream or its file descriptor) to stderr,
    so that stdout carries only the JSON."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _check(args: argparse.Namespace) -> int:
    info = get_bundle(args.name)
    names = args.only or (list(STATIC_CHECKS) if args.quick else list(CHECKS))
    if not args.json:
        print(f"checking {info.name} {info.version} at {info.path}")
    failed = 0
    records = []
    with _stdout_to_stderr() if args.json else contextlib.nullcontext():
        results = run_checks(info.path, names, trust=args.trust)
    for result in results:
        if result.exempt_reason is not None:
            records.append({"check": result.name, "passed": True, "message": f"exempt: {result.exempt_reason}"})
            if not args.json:
                print(f"  EXEMPT {result.name}: {result.exempt_reason}")
            continue
        records.append({"check": result.name, "passed": result.passed, "message": "; ".join(result.problems)})
        if not args.json:
            print(f"  {'PASS' if result.passed else 'FAIL'}   {result.name}")
            for problem in result.problems:
                print(f"         - {problem}")
        failed += not result.passed
    if args.json:
        print(json.dumps(records, indent=2))
    else:
        print("zoo-ready" if not failed else f"{failed} check(s) failed")
    return 0 if not failed else 1


def _pack(args: argparse.Namespace) -> int:
    if args.out.exists() and not args.out.is_dir():
        raise BundleError(f"{args.out}: --out must be a folder (the zip is written into it), but a file of that name exists")
    print(f"wrote {pack_bundle(args.name, args.out)}")
    return 0


def _install(args: argparse.Namespace) -> int:
    info = install_bundle(args.source, dest=args.dest, trust=args.trust, force=args.force, allow_builtin_name=args.allow_builtin_name,
                          expected_sha256=args.sha256)
    print(f"installed {info.name} {info.version} at {info.path}")
    return 0


def _rehash(args: argparse.Namespace) -> int:
    from medgen_core.bundles.retrain import rehash_bundle

    info = get_bundle(args.name)
    changed = rehash_bundle(info)
    if not changed:
        print(f"{info.name}: every weight file matches its recorded sha256; nothing to rehash")
        return 0
    for item in changed:
        print(f"rehashed {item.file}: sha256 {item.old_sha256[:12]}... -> {item.new_sha256} (user-retrained)")
    print(f"updated {info.path / 'configs' / 'metadata.json'}")
    return 0
