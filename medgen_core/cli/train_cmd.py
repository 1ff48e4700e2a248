"""``medgen train BUNDLE --data DIR [--out DIR] [--steps N]``: retrain a bundle on your own data, into a copy.

The bundle is copied to ``--out`` (default ``./<bundle>_retrained``; the installed bundle is never written), its
``configs/train.json`` runs on MONAI's engines through ``ConfigWorkflow`` with ``dataset_dir`` = ``--data`` (the
folder layout each bundle expects is in its ``docs/README.md``), the trained weights replace the copy's weight files
and their sha256 are recorded (``medgen bundle rehash``), marked ``user-retrained``. Use the copy with ``--bundle
OUT`` (``medgen upscale --bundle OUT ...``); outputs made with it say ``weights_origin: user-retrained`` in their
provenance. Running the same command again resumes from the copy's checkpoints.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from medgen_core.cli._common import add_device_argument, check_device, positive_int

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train", help="retrain a bundle on your own data (a copy with re-hashed weights)", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle", help="bundle name or folder (never written to)")
    p.add_argument("--data", type=Path, required=True, metavar="DIR",
                   help="training data: a folder of NIfTI files (or a file list) in the layout of the bundle's docs/README.md")
    p.add_argument("--out", type=Path, default=None, metavar="DIR", help="the retrained bundle copy (default ./<bundle>_retrained); reused to resume")
    p.add_argument("--steps", type=positive_int, default=None, metavar="N", help="stop after N training iterations (default: the bundle's schedule)")
    p.add_argument("--set", nargs=2, action="append", default=[], metavar=("ID", "VALUE"),
                   help="override a train.json id with a literal (JSON number, true/false/null, array, else a string), e.g. --set variant x4_mixed")
    p.add_argument("--config", action="append", default=[], metavar="NAME",
                   help="another training config under configs/ merged after train.json (e.g. train_synthetic.json)")
    add_device_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from medgen_core.bundles.overrides import check_set_values, parse_set_value
    from medgen_core.bundles.retrain import retrain_bundle

    check_device(args.device)
    overrides = check_set_values({k: parse_set_value(v) for k, v in args.set})
    result = retrain_bundle(args.bundle, args.data, args.out, steps=args.steps, device=None if args.device == "auto" else args.device,
                            overrides=overrides, configs=("train", *args.config))
    for produced, target in result.installed.items():
        print(f"installed {target} (trained {produced})")
    for item in result.rehashed:
        print(f"rehashed {item.file}: sha256 {item.new_sha256}")
    print(f"wrote the retrained bundle {result.bundle} ({result.iterations} iterations in {result.seconds:.0f} s; checkpoints and logs in "
          f"{result.run_dir}); use it with --bundle {result.bundle}")
    return 0
