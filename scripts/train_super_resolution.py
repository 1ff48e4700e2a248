#!/usr/bin/env python
"""Re-train the weights shipped in monai_bundles/brain_mri_super_resolution (CPU or GPU).

Runs the bundle's own ``configs/train.json`` (a MONAI ``SupervisedTrainer``) through MONAI's ConfigParser
(:func:`medgen_core.bundles.bundle_config.open_bundle_config`) once per variant, copies each ``model.pt`` into the bundle's ``models/`` folder and records its sha256 in ``configs/metadata.json``.

    python scripts/train_super_resolution.py                 # every variant (about 3 h on 2 CPU cores)
    python scripts/train_super_resolution.py --variants x2_mixed --iterations 200
    nohup python scripts/train_super_resolution.py --variants x2_synthetic --threads 1 > x2_synthetic.log 2>&1 &

The ``*_synthetic`` variants (the contrast- and resolution-agnostic FastSRNet) add the overlay
``configs/train_synthetic.json`` (synthetic pairs mixed with real MNI T1 patches) and are installed with their
network spec and sha256 through ``install_variant_weights``. Every variant resumes from the newest
``runs/<variant>/checkpoint_epoch=N.pt`` when one exists (rerun the same command after an interruption).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import torch

from medgen_core.bundles.bundle_config import open_bundle_config
from medgen_core.bundles.weights import install_variant_weights

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
    "x2_synthetic": {"scale": 2, "iterations": 6000},
    "x4_synthetic": {"scale": 4, "iterations": 6000},
}
#: Overlay configs (after train.json) and the metadata entry of the synthetic-data variants.
SYNTHETIC_OVERLAY = "train_synthetic.json"
SYNTHETIC_NETWORK = {"architecture": "fast", "num_feat": 48, "num_block": 4}


def install_synthetic(name: str, scale: int, model_path: Path, iterations: int, history: str | None = None) -> Path:
    """Create (or update) the variant's metadata entry, then copy the weights in and record their sha256."""
    import json

    meta_path = BUNDLE / "configs" / "metadata.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    variants = meta["medgen"]["variants"]
    entry = variants.setdefault(name, {"file": f"models/{name}.pt", "sha256": ""})
    training = {"data": "synthetic pairs + real MNI T1 patches (configs/train_synthetic.json)", "iterations": iterations}
    if history:
        training["history"] = history
    entry.update({"scale": scale, "degradation": "synthetic", "network": SYNTHETIC_NETWORK, "training": training})
    tmp = meta_path.with_name(meta_path.name + ".tmp")
    tmp.write_text(json.dumps(meta, indent=4) + "\n", encoding="utf-8")
    tmp.replace(meta_path)
    return install_variant_weights(BUNDLE, name, model_path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--iterations", type=int, default=None, help="override train.json's iterations")
    ap.add_argument("--runs-dir", type=Path, default=BUNDLE / "runs", help="checkpoints and logs (resumable)")
    ap.add_argument("--no-install", action="store_true", help="do not copy weights into the bundle")
    ap.add_argument("--init-from", type=Path, default=None,
                    help="start from this run's network weights (checkpoint.pt / model.pt; fresh optimiser), unless the run has its own checkpoint")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (e.g. 1 on a shared machine)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    for name in args.variants:
        synthetic = name.endswith("_synthetic")
        configs = ["train.json"] + ([SYNTHETIC_OVERLAY] if synthetic else [])
        overrides = {"variant": name, "output_dir": str(args.runs_dir / name), **VARIANTS[name]}
        if args.iterations is not None:
            overrides["iterations"] = args.iterations
        if args.init_from is not None:
            overrides["init_from"] = str(args.init_from)  # a checkpoint of the run itself, if any, wins (resume)
        # paths as literals: a runs folder named '$...' or 'a#b' is a folder
        parser = open_bundle_config(BUNDLE, configs, overrides=overrides)
        parser.get_parsed_content("initialize")
        parser.get_parsed_content("run")
        model_path = args.runs_dir / name / "model.pt"
        if synthetic and not args.no_install:
            print(f"{name}: installed {install_synthetic(name, VARIANTS[name]['scale'], model_path, overrides['iterations'])}", flush=True)
        elif not args.no_install:
            target = BUNDLE / "models" / f"{name}.pt"
            shutil.copyfile(model_path, target)
            print(f"{name}: installed {target}", flush=True)
    if not args.no_install and not all(n.endswith("_synthetic") for n in args.variants):
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from record_bundle_hashes import record_hashes

        record_hashes(BUNDLE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
