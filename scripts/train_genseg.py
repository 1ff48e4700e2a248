#!/usr/bin/env python
"""Re-train the segmenter shipped in monai_bundles/brain_tissue_genseg (GenSeg end to end, CPU or GPU).

Runs the bundle's own ``configs/train.json`` through MONAI's ConfigParser (draw seed 0 of the GenSeg benchmark:
7 labelled MNI152 slices + 2 validation slices at 2 mm; Pix2Pix stage 1, then the bilevel stage 2), copies the
selected segmenter ``model.pt`` into the bundle's ``models/`` folder, records its sha256 in
``configs/metadata.json`` (``medgen.variants``) with a training note, and sets ``medgen.trained`` to true only for
a run of at least the shipped schedule.

    python scripts/train_genseg.py                                     # shipped schedule (400 outer steps, 800 Pix2Pix steps)
    python scripts/train_genseg.py --steps 20 --pretrain-steps 20 --runs-dir /tmp/genseg_smoke   # smoke run (trained: false)
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch
from medgen_core.bundles.runner import training_parser

from medgen_core.provenance import sha256_file

BUNDLE = Path(__file__).resolve().parents[1] / "monai_bundles" / "brain_tissue_genseg"
VARIANT = "tissue_genseg"
STEPS, PRETRAIN_STEPS = 400, 800  # the shipped schedule (train.json)


def train(runs_dir: Path, steps: int | None, pretrain_steps: int | None, device: str | None) -> tuple[Path, float]:
    """Run ``train.json``; returns ``(model.pt, seconds)``."""
    parser = training_parser(BUNDLE, runs_dir / "genseg", device, steps=steps, pretrain_steps=pretrain_steps)
    t0 = time.time()
    parser.get_parsed_content("run")  # MONAI's GanTrainer (Pix2Pix stage 1), then SupervisedTrainer (GenSeg stage 2)
    return runs_dir / "genseg" / "model.pt", time.time() - t0


def install(model_path: Path, trained: bool, note: dict) -> Path:
    """Copy ``model_path`` to the variant's file, record its sha256, ``trained`` and the training note."""
    meta_path = BUNDLE / "configs" / "metadata.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    medgen = meta["medgen"]
    entry = medgen["variants"][VARIANT]
    target = BUNDLE / entry["file"]
    shutil.copyfile(model_path, target)
    entry["sha256"] = sha256_file(target)
    medgen["trained"] = trained
    medgen["training"] = note
    meta_path.write_text(json.dumps(meta, indent=4) + "\n", encoding="utf-8")
    return target


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=None, help=f"GenSeg outer steps (shipped: {STEPS})")
    ap.add_argument("--pretrain-steps", type=int, default=None, help=f"Pix2Pix stage-1 steps (shipped: {PRETRAIN_STEPS})")
    ap.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda:0 (default: cuda if available)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--runs-dir", type=Path, default=BUNDLE / "runs", help="training outputs")
    ap.add_argument("--no-install", action="store_true", help="do not copy weights into the bundle")
    args = ap.parse_args(argv)
    for name in ("steps", "pretrain_steps"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1")
    torch.set_num_threads(args.threads)
    model_path, seconds = train(args.runs_dir, args.steps, args.pretrain_steps, args.device)
    steps, pre = args.steps or STEPS, args.pretrain_steps or PRETRAIN_STEPS
    print(f"genseg: {steps} outer steps after {pre} Pix2Pix steps in {seconds:.0f} s -> {model_path}", flush=True)
    if not args.no_install:
        run_note = json.loads((model_path.parent / "training.json").read_text(encoding="utf-8"))
        note = {"steps": steps, "pretrain_steps": pre, "draw_seed": 0, "seconds": round(seconds, 1),
                "threads": args.threads, "best_val_loss": round(run_note["best_val_loss"], 4),
                "derived_kernels": run_note.get("derived_kernels"),
                "device": str(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))}
        target = install(model_path, steps >= STEPS and pre >= PRETRAIN_STEPS, note)
        print(f"genseg: installed {target}, sha256 recorded in configs/metadata.json", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
