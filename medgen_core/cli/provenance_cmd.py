"""``medgen provenance show|verify|trust|key``: inspect and check the signed provenance of a generated file.

Exit codes of ``verify`` (2 is any user error, from ``main``: empty or missing path, unreadable key file):

* 0 ``intact``: content matches a record signed by a trusted key (this installation's, or one added with
  ``medgen provenance trust add``);
* 6 ``intact`` but signed by an UNTRUSTED key: the record is consistent, but whoever holds that key could
  have written it for any image, so scripts that accept on exit 0 do not accept it;
* 1 ``modified``: pixels, affine (origin, direction, spacing) or record changed since signing;
* 3 ``missing``: no record at all;
* 4 ``unsigned``: content matches a record without a signature (old files, hand-made records);
* 5 ``forged``: a signature that does not verify (record edited after signing).

``show`` exits 0 when a record was found and 3 when there is none. ``detect`` (the voxel watermark, which
survives losing the header and sidecar) exits 0 when the mark is present, 1 when it is not found.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

__all__ = ["EXIT_CODES", "EXIT_UNTRUSTED", "register"]

#: Exit code of ``medgen provenance verify`` for each verification status.
EXIT_CODES = {"intact": 0, "modified": 1, "missing": 3, "unsigned": 4, "forged": 5}
#: Exit code of ``verify`` for an intact record signed by a key that is not trusted.
EXIT_UNTRUSTED = 6

_DETECT_HELP = ("look for medgen's invisible voxel mark in FILE, without any record: exit 0 present, 1 not found, "
                "2 bad input")
_VERIFY_HELP = ("check FILE against its signed record: exit 0 intact (trusted key), 6 intact but untrusted key, "
                "1 modified, 3 missing, 4 unsigned, 5 forged, 2 bad input")


def register(subparsers: Any) -> None:
    """Add the ``provenance`` command (``show``, ``verify``, ``trust``, ``key``) to the ``medgen`` parser."""
    parser = subparsers.add_parser(
        "provenance",
        help="show or verify the AI-generation record of a file",
        description="Show or verify the signed provenance record (sidecar and embedded) of a generated file, "
                    "and manage the keys whose signatures are trusted.",
        epilog=_VERIFY_HELP,
    )
    actions = parser.add_subparsers(dest="provenance_action", metavar="ACTION", required=True)

    show = actions.add_parser("show", help="print the provenance record of FILE")
    show.add_argument("file", metavar="FILE", help="generated image or other output file")
    show.add_argument("--json", action="store_true", help="print the raw records as JSON")
    show.set_defaults(func=_show)

    verify = actions.add_parser("verify", help=_VERIFY_HELP, description=_VERIFY_HELP)
    verify.add_argument("file", metavar="FILE", help="generated image or other output file")
    verify.add_argument("--json", action="store_true", help="print the result as JSON")
    verify.set_defaults(func=_verify)

    trust = actions.add_parser("trust", help="manage the keys whose signatures verify as trusted")
    trust_actions = trust.add_subparsers(dest="trust_action", metavar="TRUST_ACTION", required=True)
    add = trust_actions.add_parser("add", help="trust the public key in KEY.pub (PEM, OpenSSH or base64)")
    add.add_argument("key_file", metavar="KEY.pub", help="public key file, e.g. another installation's medgen_ed25519.pub")
    add.add_argument("--name", default=None, help="label shown by 'trust list' (default: the file name)")
    add.set_defaults(func=_trust_add)
    listing = trust_actions.add_parser("list", help="list the trusted keys")
    listing.set_defaults(func=_trust_list)
    remove = trust_actions.add_parser("remove", help="stop trusting the key with id ID")
    remove.add_argument("key_id", metavar="ID", help="key id as shown by 'trust list'")
    remove.set_defaults(func=_trust_remove)

    key = actions.add_parser("key", help="this installation's signing key")
    key_actions = key.add_subparsers(dest="key_action", metavar="KEY_ACTION", required=True)
    key_show = key_actions.add_parser("show", help="print the public key file and key id (creates the key on first use)")
    key_show.set_defaults(func=_key_show)

    detect = actions.add_parser("detect", help=_DETECT_HELP, description=_DETECT_HELP)
    detect.add_argument("file", metavar="FILE", help="image file (NIfTI, NRRD, MHA) or DICOM series folder")
    detect.add_argument("--json", action="store_true", help="print the result as JSON")
    detect.set_defaults(func=_detect)


def _show(args: argparse.Namespace) -> int:
    from medgen_core.provenance import read_provenance

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
    output = record.get("output") or {}
    signature = record.get("signature") or {}
    lines = [
        f"file:        {args.file}",
        f"found in:    {', '.join(where)}",
        f"generator:   {record.get('generator_name')}",
        f"version:     {record.get('generator_version')}",
        f"task:        {record.get('task')}",
        f"source type: {record.get('digital_source_type')}",
        f"generated:   {record.get('generated_at')}",
        f"bundle:      {record.get('bundle_id')}",
        f"weights:     sha256 {record.get('weights_sha256')}",
        f"parameters:  {json.dumps(record.get('parameters') or {}, sort_keys=True)}",
        f"seed:        {record.get('seed')}",
        f"output:      pixel sha256 {output.get('sha256')}",
        f"affine:      {json.dumps(output.get('affine'))}",
        f"signature:   {signature.get('alg', '-')} by key {signature.get('key_id', '-')}" if signature else "signature:   none",
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
    from medgen_core.provenance import verify_provenance

    result = verify_provenance(args.file)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, sort_keys=True))
    else:
        print(f"{result.status}: {result.message}")
    if result.status == "intact" and not result.trusted:
        return EXIT_UNTRUSTED
    return EXIT_CODES[result.status]


def _trust_add(args: argparse.Namespace) -> int:
    from medgen_core.provenance.trust import trust_add, trust_file

    key = trust_add(args.key_file, args.name)
    print(f"trusted key {key.key_id} from {args.key_file} (list: {trust_file()})")
    return 0


def _trust_list(args: argparse.Namespace) -> int:
    from medgen_core.provenance.trust import trusted_keys

    for key_id, entry in sorted(trusted_keys().items(), key=lambda kv: (not kv[1].own, kv[0])):
        where = "this installation" if entry.own else f"{entry.name}, added {entry.added_at}"
        print(f"{key_id}  {where}")
    return 0


def _trust_remove(args: argparse.Namespace) -> int:
    from medgen_core.provenance.trust import trust_remove

    key = trust_remove(args.key_id)
    print(f"removed key {key.key_id} from the trust list")
    return 0


def _key_show(args: argparse.Namespace) -> int:
    from medgen_core.provenance.signing import installation_key

    key = installation_key()
    print(f"key id:      {key.public.key_id}")
    print(f"public key:  {key.public_path}")
    print(f"private key: {key.path} (keep it private)")
    return 0


def _detect(args: argparse.Namespace) -> int:
    from medgen_core.errors import ImageReadError
    from medgen_core.io import read_volume
    from medgen_core.provenance.watermark import detect_watermark

    if not str(args.file).strip():
        raise ImageReadError("medgen provenance detect: empty path; expected an image file or DICOM series folder")
    result = detect_watermark(read_volume(args.file, strict=False).array)
    if args.json:
        print(json.dumps({"file": str(args.file), **result.to_dict()}, indent=2, sort_keys=True))
    elif result.present:
        print(f"mark present: score {result.score:.1f} >= threshold {result.threshold:.1f} "
              f"(scale {result.scale:.3f}, orientation {result.orientation})")
    else:
        print(f"mark not found: score {result.score:.1f} < threshold {result.threshold:.1f}")
    return 0 if result.present else 1
