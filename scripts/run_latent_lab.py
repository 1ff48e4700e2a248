#!/usr/bin/env python
"""Produce the latent-space lab's figures and numbers for monai_bundles/brain_slice_autoencoder/docs.

Runs ``medgen lab`` (the CLI, so the figures come from exactly what users run) on the bundle:

1. ``sweep``: latent sizes from ``configs/lab.json`` (1, 2, 4, ..., 128), FiLM conditioning;
2. ``conditioning``: one sweep point (latent 32) per strategy in ``lab.json``'s ``conditioning_comparison``;
3. ``interpolate``: the shipped autoencoder, within a class and across classes;
4. ``mix``: encoder of ``autoencoder`` with the decoder of ``autoencoder_b`` (raw and linearly aligned);
5. ``restore``: the shipped restoration network (``--pretrained``) by kind and level.

Work folders go to ``--work`` (resumable: finished sweep points are not retrained); the PNGs are copied
to ``docs/figures/`` and every number to ``docs/results.json``.

    OMP_NUM_THREADS=1 python scripts/run_latent_lab.py                 # everything (about 20 min on one loaded CPU thread)
    python scripts/run_latent_lab.py --only interpolate,mix,restore   # the parts that use the shipped weights
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch

from medgen_core.cli.main import main as medgen

BUNDLE = Path(__file__).resolve().parents[1] / "monai_bundles" / "brain_slice_autoencoder"
STAGES = ("sweep", "conditioning", "interpolate", "mix", "restore")


def _run(argv: list[str]) -> float:
    t0 = time.time()
    code = medgen(["lab", *argv])
    if code != 0:
        raise SystemExit(f"medgen lab {' '.join(argv)} failed with exit code {code}")
    return time.time() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=BUNDLE / "eval" / "lab", help="work folder (resumable)")
    ap.add_argument("--only", default=",".join(STAGES), help=f"comma-separated stages of {STAGES}")
    ap.add_argument("--iterations", type=int, default=None, help="override the sweep's iterations per latent size")
    args = ap.parse_args(argv)
    stages = [s for s in args.only.split(",") if s]
    bad = [s for s in stages if s not in STAGES]
    if bad:
        ap.error(f"unknown stage(s) {bad}; choose from {STAGES}")
    torch.set_num_threads(1)
    figures = BUNDLE / "docs" / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    results_path = BUNDLE / "docs" / "results.json"
    results = json.loads(results_path.read_text(encoding="utf-8")) if results_path.is_file() else {}
    extra = ["--iterations", str(args.iterations)] if args.iterations else []
    work = args.work
    if "sweep" in stages:
        seconds = _run(["sweep", "--out", str(work / "sweep"), *extra])
        results["sweep"] = {**json.loads((work / "sweep" / "sweep.json").read_text(encoding="utf-8")), "wall_seconds": round(seconds, 1)}
        shutil.copyfile(work / "sweep" / "sweep.png", figures / "sweep.png")
    if "conditioning" in stages:
        table = {}
        strategies = json.loads((BUNDLE / "configs" / "lab.json").read_text(encoding="utf-8"))["conditioning_comparison"]
        for strategy in strategies:
            out = work / f"conditioning_{strategy}"
            seconds = _run(["sweep", "--out", str(out), "--latent-sizes", "32", "--conditioning", strategy, *extra])
            row = json.loads((out / "sweep.json").read_text(encoding="utf-8"))["results"][0]
            table[strategy] = {**row, "wall_seconds": round(seconds, 1)}
        results["conditioning"] = table
    if "interpolate" in stages:
        _run(["interpolate", "--out", str(work / "interpolate")])
        for name in ("within_class", "across_classes"):
            shutil.copyfile(work / "interpolate" / f"interpolation_{name}.png", figures / f"interpolation_{name}.png")
        results["interpolation"] = {name: json.loads((work / "interpolate" / f"interpolation_{name}.nii.gz.generated.json").read_text(encoding="utf-8"))["record"]["parameters"]
                                    for name in ("within_class", "across_classes")}
    if "mix" in stages:
        _run(["mix", "--out", str(work / "mix")])
        results["mixing"] = json.loads((work / "mix" / "mixing.json").read_text(encoding="utf-8"))
        shutil.copyfile(work / "mix" / "mixing.png", figures / "mixing.png")
    if "restore" in stages:
        _run(["restore", "--out", str(work / "restore"), "--pretrained"])
        results["restoration"] = json.loads((work / "restore" / "restoration.json").read_text(encoding="utf-8"))
        for name in ("restoration.png", "restoration_examples.png"):
            shutil.copyfile(work / "restore" / name, figures / name)
    results_path.write_text(json.dumps(results, indent=4) + "\n", encoding="utf-8")
    print(f"figures in {figures}, numbers in {results_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
