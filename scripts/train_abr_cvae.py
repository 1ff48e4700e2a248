#!/usr/bin/env python
"""Re-train the weights shipped in monai_bundles/abr_joint_cvae (signal CVAE for simulated ABRs), CPU or GPU.

Runs the bundle's own ``configs/train.json`` through MONAI's ConfigParser once per mode (``joint`` ->
``models/model.pt``, ``legacy`` -> ``models/model_legacy.pt``), with checkpoints in ``--runs-dir/<mode>``
so an interrupted run resumes, copies the weights into the bundle, records their sha256 in
``configs/metadata.json`` (``medgen.variants``) with a training note, and copies the loss curves into
``docs/``. The training data are simulated by :mod:`medgen_core.data.abr_simulator` (train seed 0,
validation seed 1; the evaluation script holds out seed 2).

    OMP_NUM_THREADS=1 python scripts/train_abr_cvae.py                  # both modes, the shipped schedule
    python scripts/train_abr_cvae.py --modes joint --epochs 2 --runs-dir /tmp/abr_smoke --no-install   # smoke run
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

from medgen_core.bundles.weights import install_variant_weights

BUNDLE = Path(__file__).resolve().parents[1] / "monai_bundles" / "abr_joint_cvae"
FILES = {"joint": "models/model.pt", "legacy": "models/model_legacy.pt"}


def _epochs(out: Path) -> int:
    """Epochs done so far: the newest ``checkpoint_epoch=N.pt`` (0 without one)."""
    from medgen_core.training.engines import checkpoint_files

    files = checkpoint_files(out)
    return files[-1][0] if files else 0


def train(mode: str, runs_dir: Path, epochs: int | None, device: str | None) -> tuple[Path, float, int, int, dict]:
    """Run ``train.json`` in ``mode``; returns ``(model.pt, seconds, epochs done in this call, total epochs, settings)``.

    A finished run (checkpoint at the last epoch) only re-fits the sampling model (observation noise,
    latent mixture) and re-exports the weights."""
    out = runs_dir / mode
    parser = training_parser(BUNDLE, out, device, mode=mode, epochs=epochs)
    start = _epochs(out)
    t0 = time.time()
    parser.get_parsed_content("run")  # MONAI's SupervisedTrainer (train#trainer), then the sampling model fit and model.pt
    model_path = out / "model.pt"
    settings = {k: parser.get_parsed_content(k) for k in ("num_train", "num_val", "batch_size", "seed")}
    settings.update({k: parser.get_parsed_content(f"train_config#{k}") for k in ("lr", "max_beta", "warmup_epochs", "prior_components")})
    return model_path, time.time() - t0, _epochs(out) - start, _epochs(out), settings


def install(mode: str, model_path: Path, note: dict) -> Path:
    """Copy the weights to the mode's file and record its sha256 and the training note in the metadata."""
    notes = json.loads((BUNDLE / "configs" / "metadata.json").read_text(encoding="utf-8"))["medgen"].get("training", {})
    if note.get("epochs_this_call") == 0 and "seconds_training" in notes.get(mode, {}):
        note["seconds_training"] = notes[mode]["seconds_training"]  # only the sampling model was re-fitted
    target = install_variant_weights(BUNDLE, mode, model_path, training={**notes, mode: note})
    for name in ("loss_curve.png", "train_log.csv"):
        if (model_path.parent / name).is_file():
            shutil.copyfile(model_path.parent / name, BUNDLE / "docs" / f"{mode}_{name}")
    return target


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--modes", nargs="+", choices=tuple(FILES), default=list(FILES))
    ap.add_argument("--epochs", type=int, default=None, help="override train.json's epochs")
    ap.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda:0 (default: cuda if available)")
    ap.add_argument("--runs-dir", type=Path, default=BUNDLE / "runs", help="checkpoints and logs (resumable)")
    ap.add_argument("--no-install", action="store_true", help="do not copy weights into the bundle")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    for mode in args.modes:
        model_path, seconds, done, total, settings = train(mode, args.runs_dir, args.epochs, args.device)
        print(f"abr cvae {mode}: {done} epochs in {seconds:.0f} s, {total} in all -> {model_path}", flush=True)
        if not args.no_install:
            device = str(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
            note = {"epochs": total, **settings, "epochs_this_call": done, "seconds_training": round(seconds, 1), "device": device,
                    "threads": torch.get_num_threads()}
            target = install(mode, model_path, note)
            print(f"abr cvae {mode}: installed {target}, sha256 recorded in configs/metadata.json", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
