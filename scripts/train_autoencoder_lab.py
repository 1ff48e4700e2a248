#!/usr/bin/env python
"""Re-train the weights shipped in monai_bundles/brain_slice_autoencoder (CPU or GPU) and record their sha256.

Three networks, all from the bundle's own configs (:func:`medgen_core.bundles.bundle_config.open_bundle_config`):

* ``autoencoder`` (``models/model.pt``): ``configs/train.json`` (FiLM, latent 32, seed 0);
* ``autoencoder_b`` (``models/autoencoder_b.pt``): the same config with seed 1 (for encoder/decoder mixing);
* ``restoration`` (``models/restoration.pt``): the ``restoration`` section of ``configs/lab.json``.

Checkpoints go to ``--runs-dir`` (an interrupted run resumes). The sha256 of every installed file is
written into ``configs/metadata.json`` (``medgen.variants``) with a training note; ``medgen.trained``
becomes true only for a run of at least the shipped schedule.

    OMP_NUM_THREADS=1 python scripts/train_autoencoder_lab.py                    # shipped schedule (about 10 min on one CPU thread)
    python scripts/train_autoencoder_lab.py --iterations 50 --runs-dir /tmp/ae_smoke   # smoke run (trained stays false)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from medgen_core.bundles.bundle_config import open_bundle_config
from medgen_core.bundles.overrides import torch_device
from medgen_core.bundles.weights import install_variant_weights

BUNDLE = Path(__file__).resolve().parents[1] / "monai_bundles" / "brain_slice_autoencoder"
ITERATIONS = 3000  # train.json's and lab.json's shipped schedule


def _parser(files: list[str], overrides: dict) -> Any:
    """The bundle's configs ``files`` merged, with ``overrides`` (paths as literals, the device as a torch.device)."""
    return open_bundle_config(BUNDLE, files, overrides=overrides)


def train_autoencoder(out: Path, seed: int, iterations: int | None, device: str | None) -> tuple[Path, float]:
    overrides: dict = {"output_dir": str(out), "seed": seed}
    if iterations is not None:
        overrides["iterations"] = iterations
    if device:
        overrides["device"] = torch_device(device)
    parser = _parser(["train.json"], overrides)
    parser.get_parsed_content("initialize")
    t0 = time.time()
    parser.get_parsed_content("run")  # MONAI's SupervisedTrainer (train#trainer)
    return out / "model.pt", time.time() - t0


def train_restoration(out: Path, iterations: int | None, device: str | None) -> tuple[Path, float]:
    from medgen_core.training.restoration import train_restoration

    parser = _parser(["inference.json", "lab.json"], {"restoration#train_config#iterations": iterations} if iterations else {})
    section = "restoration"
    data = parser.get_parsed_content("lab_data")
    t0 = time.time()
    model = train_restoration(
        parser.get_parsed_content(f"{section}#network_def"), data.train_images, parser.get_parsed_content(f"{section}#train_config"), out,
        device or ("cuda" if torch.cuda.is_available() else "cpu"), kinds=tuple(parser.get_parsed_content(f"{section}#kinds")),
        settings=parser.get_parsed_content(f"{section}#settings"),
    )
    return model, time.time() - t0


def install(variant: str, model_path: Path) -> Path:
    """Copy ``model_path`` to the variant's file and record its sha256 in the metadata."""
    return install_variant_weights(BUNDLE, variant, model_path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int, default=None, help=f"override the configs' iterations (shipped schedule: {ITERATIONS})")
    ap.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda:0 (default: cuda if available)")
    ap.add_argument("--runs-dir", type=Path, default=BUNDLE / "runs", help="checkpoints and logs (resumable)")
    ap.add_argument("--no-install", action="store_true", help="do not copy weights into the bundle")
    ap.add_argument("--variants", default="autoencoder,autoencoder_b,restoration", help="comma-separated variants to (re)train")
    args = ap.parse_args(argv)
    if args.iterations is not None and args.iterations < 1:
        ap.error("--iterations must be >= 1")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    runs = {
        "autoencoder": lambda: train_autoencoder(args.runs_dir / "autoencoder", 0, args.iterations, args.device),
        "autoencoder_b": lambda: train_autoencoder(args.runs_dir / "autoencoder_b", 1, args.iterations, args.device),
        "restoration": lambda: train_restoration(args.runs_dir / "restoration", args.iterations, args.device),
    }
    chosen = [v for v in args.variants.split(",") if v]
    if any(v not in runs for v in chosen):
        ap.error(f"--variants: choose from {list(runs)}, got {chosen}")
    meta_path = BUNDLE / "configs" / "metadata.json"
    note = {k: v for k, v in json.loads(meta_path.read_text(encoding="utf-8"))["medgen"].get("training", {}).items() if k in runs}
    for variant in chosen:
        run = runs[variant]
        model_path, seconds = run()
        state = torch.load(args.runs_dir / variant / "checkpoint.pt", map_location="cpu", weights_only=True)
        note[variant] = {"iterations": int(state["iteration"]), "seconds_this_call": round(seconds, 1)}
        print(f"{variant}: {note[variant]['iterations']} iterations ({seconds:.0f} s in this call) -> {model_path}", flush=True)
        if not args.no_install:
            print(f"{variant}: installed {install(variant, model_path)}", flush=True)
    if not args.no_install:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        meta["medgen"]["trained"] = all(note.get(v, {}).get("iterations", 0) >= ITERATIONS for v in runs)
        meta["medgen"]["training"] = {**note, "batch_size": 16, "device": str(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))}
        meta_path.write_text(json.dumps(meta, indent=4) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
