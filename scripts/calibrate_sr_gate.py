#!/usr/bin/env python
"""Calibrate the gate's degradation estimate on synthetic data only (no test image is read).

For each scale and degradation kind, stacks of synthetic planes (:class:`~medgen_core.data.synthetic_sr.SyntheticSRPairs`,
random anatomy, contrast, bias, noise and degradation width; the held-out MNI slab excluded) are degraded by that
kind only. The gate's estimate is recorded: the consistency residual of every kind, and the self-check of every
feasible kind. The script prints how often the true kind is picked by the least residual alone, and by the
least residual with the self-check as tie-break among kinds within ``margin`` of it, for several margins; the gate
uses :data:`~medgen_core.inference.sr_gate.ESTIMATE_MARGIN`.

    python scripts/calibrate_sr_gate.py --trials 20 --json calibration.json
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from medgen_core.bundles import get_bundle, load_verified_network
from medgen_core.data.synthetic_sr import SyntheticSRPairs
from medgen_core.inference import VolumeSuperResolver
from medgen_core.inference.sr_gate import INPLANE_GATE_KINDS, ConsistencyProjector, inplane_gate_degradation, projection_feasible
from medgen_core.networks.sr import sr_network
from medgen_core.utils.progress import progress

MARGINS = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5)


def pick(residuals: dict, gated: dict, margin: float) -> str:
    """The gate's rule: among feasible kinds (those with a self-check) within ``margin`` of the least residual, the best self-check."""
    feasible = [k for k in sorted(residuals, key=residuals.get) if k in gated]
    close = [k for k in feasible if residuals[k] * margin <= residuals[feasible[0]]]
    return max(close, key=gated.get)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=20, help="stacks per scale and kind")
    ap.add_argument("--planes", type=int, default=8, help="planes per stack")
    ap.add_argument("--size", type=int, default=160, help="HR plane size")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    bundle = get_bundle("brain_mri_super_resolution")
    rows = []
    for scale in (2, 4):
        name = bundle.metadata["medgen"]["default_variant"][str(scale)]
        v = bundle.variants[name]
        net = load_verified_network(sr_network(v.get("network"), scale), bundle.path / v["file"], v["sha256"])
        gate = VolumeSuperResolver(net, scale, gate=True, gate_degradation=v.get("degradation", "synthetic"), progress=False)
        for kind in INPLANE_GATE_KINDS:
            data = SyntheticSRPairs(patch_size=(args.size, args.size), factors=(scale,), seed=args.seed * 100 + scale * 10 + len(kind),
                                    kinds=(kind,))
            for _ in progress(range(args.trials), desc=f"x{scale} {kind}"):
                lr = np.stack([data.sample()["lr"][0].numpy() for _ in range(args.planes)]).astype(np.float32)
                lr = lr / max(float(np.percentile(lr, 99.9)), 1e-8)
                lo, hi = float(lr.min()), float(lr.max())
                y = np.clip(gate._upscale_stack(lr), lo, hi)
                residuals, gated = {}, {}
                h, w = lr.shape[1] - lr.shape[1] % scale, lr.shape[2] - lr.shape[2] % scale
                for k in INPLANE_GATE_KINDS:
                    spec = inplane_gate_degradation(k, scale)
                    projector = ConsistencyProjector.from_specs(y.shape, {1: spec, 2: spec})
                    residuals[k] = projector.residual(y, lr)
                    if projection_feasible(projector, y, lr, lo, hi):
                        gated[k] = gate._check_kind(lr[:, :h, :w], k, lo, hi)["psnr_gated"]
                if not gated:
                    continue
                rows.append({"scale": scale, "kind": kind, "residuals": residuals, "gated": gated,
                             **{f"pick_{m}": pick(residuals, gated, m) for m in MARGINS}})
    print(f"{len(rows)} stacks of {args.planes} synthetic {args.size}x{args.size} planes")
    print("| margin | " + " | ".join(f"x{s} {k}" for s in (2, 4) for k in INPLANE_GATE_KINDS) + " | all |")
    print("|---|" + "---|" * 7)
    summary = {}
    for m in MARGINS:
        cells = []
        for s in (2, 4):
            for k in INPLANE_GATE_KINDS:
                sel = [r for r in rows if r["scale"] == s and r["kind"] == k]
                cells.append(f"{np.mean([r[f'pick_{m}'] == k for r in sel]):.0%}" if sel else "-")
        summary[str(m)] = float(np.mean([r[f"pick_{m}"] == r["kind"] for r in rows]))
        label = "least residual only" if m == 1.0 else f"{m} (within {1 / m - 1:.0%})"
        print(f"| {label} | " + " | ".join(cells) + f" | {summary[str(m)]:.0%} |")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"rows": rows, "accuracy": summary}, f, indent=4)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
