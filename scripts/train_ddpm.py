#!/usr/bin/env python
"""Re-train the weights shipped in monai_bundles/brain_slice_ddpm (class-conditional 2D DDPM, CPU or GPU).

Runs the bundle's own ``configs/train.json`` (MONAI's SupervisedTrainer) through MONAI's ConfigParser (checkpoints in ``--runs-dir``,
so an interrupted run resumes where it stopped), copies the EMA weights ``model.pt`` into the bundle's
``models/`` folder and records their sha256 in ``configs/metadata.json`` (``medgen.variants``), together
with a training note. ``medgen.trained`` becomes true only for a run of at least the shipped schedule
(``ITERATIONS``) at the shipped batch size.

    python scripts/train_ddpm.py                                   # the shipped schedule (about 40 min at 0.8 s/iteration, one CPU thread)
    python scripts/train_ddpm.py --iterations 150 --runs-dir /tmp/ddpm_smoke   # smoke run (trained stays false)
    python scripts/train_ddpm.py --init-from models/model.pt --iterations 1300 --lr 2e-4 --warmup 20   # fine-tune (0.3.0)

``--init-from`` starts the network (and so its EMA) from a state dict such as the shipped ``model.pt``; the
iterations it already had count towards ``medgen.training.iterations`` (``--prior-iterations``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from medgen_core.bundles.runner import training_parser

from medgen_core.bundles.weights import install_variant_weights

BUNDLE = Path(__file__).resolve().parents[1] / "monai_bundles" / "brain_slice_ddpm"
VARIANT = "slice_position"
ITERATIONS = 3000  # the shipped schedule (train.json's "iterations")
BATCH_SIZE = 16


def _iterations(out: Path) -> int:
    """Iterations done so far: the engine state in the newest ``checkpoint_epoch=N.pt`` (0 without one)."""
    from medgen_core.training.engines import checkpoint_files, load_checkpoint

    files = checkpoint_files(out)
    return int(load_checkpoint(files[-1][1])["trainer"]["iteration"]) if files else 0


def train(runs_dir: Path, iterations: int | None, batch_size: int | None, device: str | None, init_from: Path | None = None,
          lr: float | None = None, warmup: int | None = None) -> tuple[Path, float, int, int]:
    """Run ``train.json``; returns ``(model.pt, seconds, iterations done in this call, total iterations)``."""
    out = runs_dir / "ddpm"
    parser = training_parser(BUNDLE, out, device, iterations=iterations, batch_size=batch_size, lr=lr, warmup=warmup,
                             init_from=str(init_from) if init_from is not None else None)
    start = _iterations(out)
    t0 = time.time()
    parser.get_parsed_content("run")  # MONAI's SupervisedTrainer (train#trainer)
    return out / "model.pt", time.time() - t0, _iterations(out) - start, _iterations(out)


def install(model_path: Path, trained: bool, note: dict) -> Path:
    """Copy ``model_path`` to the variant's file, record its sha256, ``trained`` and the training note."""
    return install_variant_weights(BUNDLE, VARIANT, model_path, trained=trained, training=note)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int, default=None, help=f"override train.json's iterations (shipped schedule: {ITERATIONS})")
    ap.add_argument("--batch-size", type=int, default=None, help=f"override train.json's batch_size ({BATCH_SIZE})")
    ap.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda:0 (default: cuda if available)")
    ap.add_argument("--runs-dir", type=Path, default=BUNDLE / "runs", help="checkpoints and logs (resumable)")
    ap.add_argument("--no-install", action="store_true", help="do not copy weights into the bundle")
    ap.add_argument("--init-from", type=Path, default=None, help="start from this state dict (e.g. the shipped models/model.pt)")
    ap.add_argument("--prior-iterations", type=int, default=0, help="iterations the --init-from weights already had (for the note)")
    ap.add_argument("--lr", type=float, default=None, help="override train.json's lr (5e-4)")
    ap.add_argument("--warmup", type=int, default=None, help="override train.json's warmup (50)")
    args = ap.parse_args(argv)
    if args.iterations is not None and args.iterations < 1:
        ap.error("--iterations must be >= 1")
    if args.init_from is not None and not args.init_from.is_file():
        ap.error(f"--init-from {args.init_from}: no such file (expected a state dict of the bundle's network, e.g. models/model.pt)")
    model_path, seconds, done, total = train(args.runs_dir, args.iterations, args.batch_size, args.device, args.init_from, args.lr, args.warmup)
    total += args.prior_iterations
    rate = seconds / max(done, 1)
    print(f"ddpm: {done} iterations in {seconds:.0f} s ({rate:.2f} s/iteration), {total} in all -> {model_path}", flush=True)
    if not args.no_install:
        batch = args.batch_size or BATCH_SIZE
        trained = total >= ITERATIONS and batch == BATCH_SIZE
        device = str(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        note = {"iterations": total, "batch_size": batch, "seconds_per_iteration": round(rate, 3), "device": device}
        if args.init_from is not None:
            note.update(init_from=args.init_from.name, fine_tune_iterations=total - args.prior_iterations, lr=args.lr)
        target = install(model_path, trained, note)
        print(f"ddpm: installed {target} (trained={str(trained).lower()}), sha256 recorded in configs/metadata.json", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
