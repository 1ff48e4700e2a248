"""``python -m medgen_core.bundles.zoo_ci BUNDLE [-m min|full]``: the Model Zoo's ``ci/verify_bundle.py``, offline.

The command-line face of :mod:`medgen_core.bundles.zoo_verify` (kept apart so that ``python -m`` does not
import that module twice): prints one line per step and where the zoo's CI would stop in min and full
mode; exit 0 when every step passes (or is excluded), 1 otherwise, 2 for a folder that is not a bundle.

    python -m medgen_core.bundles.zoo_ci monai_bundles/brain_tissue_genseg -m full --json-out results.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from medgen_core.bundles.zoo_verify import FULL_STEPS, MIN_STEPS, STEPS, first_failure, verify

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """``python -m medgen_core.bundles.zoo_ci BUNDLE [-m min|full] [--steps ...] [--json-out FILE]``: exit 0 when all pass."""
    ap = argparse.ArgumentParser(prog="python -m medgen_core.bundles.zoo_ci", description=__doc__.splitlines()[0])
    ap.add_argument("bundle", type=Path, help="bundle folder")
    ap.add_argument("-m", "--mode", choices=("min", "full"), default="full")
    ap.add_argument("--steps", nargs="+", choices=STEPS, default=None, help="run only these steps")
    ap.add_argument("--work-dir", type=Path, default=None, help="folder for the TorchScript export (default: a temporary one)")
    ap.add_argument("--model-info", type=Path, default=None, help="the zoo's models/model_info.json (published versions)")
    ap.add_argument("--device", default=None, help="MONAI's default when omitted: cuda:0 if available, else cpu")
    ap.add_argument("--json-out", type=Path, default=None, help="also write the results as JSON to this file")
    args = ap.parse_args(argv)
    if not (args.bundle / "configs").is_dir() and not (args.bundle / "LICENSE").exists():
        print(f"{args.bundle}: not a bundle folder (no configs/)", file=sys.stderr)
        return 2
    results = verify(args.bundle, args.mode, args.steps, args.work_dir, args.model_info, args.device)
    if args.json_out is not None:
        args.json_out.write_text(json.dumps([r.to_dict() for r in results], indent=4) + "\n", encoding="utf-8")
    for r in results:
        print(f"{r.status.upper():8} {r.name}: {r.message}")
    for m in ("min", "full"):
        stop = first_failure(results, m)
        ran = set(MIN_STEPS if m == "min" else FULL_STEPS) <= {r.name for r in results}
        if stop is not None:
            print(f"zoo ci/verify_bundle.py -m {m}: fails at {stop.name}")
        elif ran:
            print(f"zoo ci/verify_bundle.py -m {m}: passes")
    return 0 if all(r.passed for r in results) else 1



if __name__ == "__main__":
    sys.exit(main())
