#!/usr/bin/env python
"""Calibrate the gate's degradation estimate on synthetic data only (no test image is read).

For each scale and degradation kind, stacks of synthetic planes (:class:`~medgen_core.data.synthetic_sr.SyntheticSRPairs`,
random anatomy, contrast, bias, noise and degradation width; the held-out MNI slab excluded) are degraded by that
kind only. The gate's estimate is recorded: the consistency residual of every kind, the relative residual (model
against bicubic), and the self-check of every feasible kind. The script prints how often each rule picks the true
kind: the least residual alone (the gate's rule, :data:`~medgen_core.inference.sr_gate.ESTIMATE_MARGIN` 1), with the
self-check as tie-break among kinds within ``margin`` of it, and the least relative residual. With ``--truth`` it
also runs the whole gated upscaler with each kind forced and scores it against the synthetic truth: the mean and
worst gain over bicubic of each rule's choice, and of the oracle (the best kind, truth known).

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
from medgen_core.inference.sr_gate import INPLANE_GATE_KINDS, ConsistencyProjector, inplane_gate_degradation, masked_psnr_np, projection_feasible
from medgen_core.inference.super_resolve import _bicubic_stack
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
    ap.add_argument("--truth", action="store_true", help="also run the whole gated upscaler with each kind forced and score it on the truth")
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    bundle = get_bundle("brain_mri_super_resolution")
    rows = []
    for scale in (2, 4):
        name = bundle.metadata["medgen"]["default_variant"][str(scale)]
        v = bundle.variants[name]
        net = load_verified_network(sr_network(v.get("network"), scale), bundle.path / v["file"], v["sha256"])
        gate = VolumeSuperResolver(net, scale, gate=True, gate_degradation=v.get("degradation", "synthetic"), progress=False)
        forced = {k: VolumeSuperResolver(net, scale, gate=True, gate_degradation=k, progress=False) for k in INPLANE_GATE_KINDS}
        for kind in INPLANE_GATE_KINDS:
            data = SyntheticSRPairs(patch_size=(args.size, args.size), factors=(scale,), seed=args.seed * 100 + scale * 10 + len(kind),
                                    kinds=(kind,))
            for _ in progress(range(args.trials), desc=f"x{scale} {kind}"):
                draws = [data.sample() for _ in range(args.planes)]
                lr = np.stack([d["lr"][0].numpy() for d in draws]).astype(np.float32)
                norm = max(float(np.percentile(lr, 99.9)), 1e-8)
                lr = lr / norm
                lo, hi = float(lr.min()), float(lr.max())
                y = np.clip(gate._upscale_stack(lr), lo, hi)
                base = np.clip(_bicubic_stack(lr, scale), lo, hi)
                residuals, gated, relative = {}, {}, {}
                h, w = lr.shape[1] - lr.shape[1] % scale, lr.shape[2] - lr.shape[2] % scale
                for k in INPLANE_GATE_KINDS:
                    spec = inplane_gate_degradation(k, scale)
                    projector = ConsistencyProjector.from_specs(y.shape, {1: spec, 2: spec})
                    residuals[k] = projector.residual(y, lr)
                    relative[k] = residuals[k] / max(projector.residual(base, lr), 1e-12)
                    if projection_feasible(projector, y, lr, lo, hi):
                        gated[k] = gate._check_kind(lr[:, :h, :w], k, lo, hi)["psnr_gated"]
                if not gated:
                    continue
                row = {"scale": scale, "kind": kind, "residuals": residuals, "relative": relative, "gated": gated,
                       **{f"pick_{m}": pick(residuals, gated, m) for m in MARGINS},
                       "pick_relative": min(gated, key=relative.get)}
                if args.truth:  # the truth is known here: PSNR of the whole gated upscaler with each kind forced
                    hr = np.stack([d["hr"][0].numpy() for d in draws]).astype(np.float32) / norm
                    mask = hr > 0.1 * float(np.percentile(hr, 99.9))
                    vol = np.ascontiguousarray(np.moveaxis(lr, 0, -1))
                    row["psnr"] = {k: masked_psnr_np(np.moveaxis(r.upscale_array(vol, 2)[0], -1, 0), hr, mask) for k, r in forced.items()}
                    row["psnr"]["bicubic"] = masked_psnr_np(base, hr, mask)
                rows.append(row)
    print(f"{len(rows)} stacks of {args.planes} synthetic {args.size}x{args.size} planes")
    rules = [f"pick_{m}" for m in MARGINS] + ["pick_relative"] + (["oracle"] if args.truth else [])
    print("| rule | " + " | ".join(f"x{s} {k}" for s in (2, 4) for k in INPLANE_GATE_KINDS) + " | all |"
          + (" mean gain over bicubic (dB) | worst gain (dB) |" if args.truth else ""))
    print("|---|" + "---|" * (9 if args.truth else 7))
    summary = {}
    for rule in rules:
        chosen = [max(INPLANE_GATE_KINDS, key=r["psnr"].get) if rule == "oracle" else r[rule] for r in rows]
        cells = []
        for s in (2, 4):
            for k in INPLANE_GATE_KINDS:
                sel = [c == k for r, c in zip(rows, chosen) if r["scale"] == s and r["kind"] == k]
                cells.append(f"{np.mean(sel):.0%}" if sel else "-")
        acc = float(np.mean([c == r["kind"] for r, c in zip(rows, chosen)]))
        summary[rule] = {"accuracy": acc}
        extra = ""
        if args.truth:
            gains = [r["psnr"][c] - r["psnr"]["bicubic"] for r, c in zip(rows, chosen)]
            summary[rule].update(mean_gain_db=float(np.mean(gains)), worst_gain_db=float(np.min(gains)))
            extra = f" {np.mean(gains):+.2f} | {np.min(gains):+.2f} |"
        label = {"pick_1.0": "least residual only", "pick_relative": "least relative residual (model / bicubic)",
                 "oracle": "oracle (best kind, truth known)"}.get(rule) or f"margin {rule[5:]} (within {1 / float(rule[5:]) - 1:.0%})"
        print(f"| {label} | " + " | ".join(cells) + f" | {acc:.0%} |" + extra)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"rows": rows, "accuracy": summary}, f, indent=4)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
