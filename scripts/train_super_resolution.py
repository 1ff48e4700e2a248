#!/usr/bin/env python
"""Re-train the weights shipped in monai_bundles/brain_mri_super_resolution (CPU or GPU).

Runs the bundle's own ``configs/train.json`` through MONAI's ConfigParser once per variant, copies
each ``model.pt`` into the bundle's ``models/`` folder and records its sha256 in ``configs/metadata.json``.

    python scripts/train_super_resolution.py                 # every variant (about 3 h on 2 CPU cores)
    python scripts/train_super_resolution.py --variants x2_mixed --iterations 200
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from monai.bundle import ConfigParser

from medgen_core.bundles.overrides import literal_overrides

BUNDLE = Path(__file__).resolve().parents[1] / "monai_bundles" / "brain_mri_super_resolution"
# Iteration counts of the shipped weights. x2_block and x4_gaussian were reached by resuming shorter
# runs (700 -> 1500; 1000 -> 2000 -> 3000 -> 4200 -> 7000 -> 9000), i.e. with restarts of the cosine
# schedule; a fresh run with these counts uses one schedule. About 3 h in all on 2 CPU cores.
VARIANTS = {
    "x2_mixed": {"scale": 2, "degradation": "mixed", "iterations": 1200},
    "x2_gaussian": {"scale": 2, "degradation": "gaussian", "iterations": 1500},
    "x4_gaussian": {"scale": 4, "degradation": "gaussian", "iterations": 9000},
    "x4_mixed": {"scale": 4, "degradation": "mixed", "iterations": 600},
    "x2_block": {"scale": 2, "degradation": "block", "iterations": 1500},
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--iterations", type=int, default=None, help="override train.json's iterations")
    ap.add_argument("--runs-dir", type=Path, default=BUNDLE / "runs", help="checkpoints and logs (resumable)")
    ap.add_argument("--no-install", action="store_true", help="do not copy weights into the bundle")
    args = ap.parse_args(argv)
    for name in args.variants:
        parser = ConfigParser()
        parser.read_config(BUNDLE / "configs" / "train.json")
        overrides = {"bundle_root": str(BUNDLE), "variant": name, "output_dir": str(args.runs_dir / name), **VARIANTS[name]}
        if args.iterations is not None:
            overrides["iterations"] = args.iterations
        parser.update(literal_overrides(overrides))  # paths as literals: a runs folder named '$...' or 'a#b' is a folder
        parser.get_parsed_content("initialize")
        model_path = parser.get_parsed_content("trainer").run()
        if not args.no_install:
            target = BUNDLE / "models" / f"{name}.pt"
            shutil.copyfile(model_path, target)
            print(f"{name}: installed {target}", flush=True)
    if not args.no_install:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from record_bundle_hashes import record_hashes

        record_hashes(BUNDLE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
