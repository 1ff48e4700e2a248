#!/usr/bin/env python
"""Pretrain the through-plane refiner shipped in monai_bundles/brain_mri_super_resolution (about 17 min, 1 CPU thread).

The start point that ``medgen upscale --axes through`` adapts per scan: a
:class:`~medgen_core.networks.slice_refiner.SliceRefiner` trained on synthetic 2D pairs from
:class:`~medgen_core.data.synthetic_sr.SyntheticSRPairs` (random anatomy deformation and contrast from the MNI tissue
maps, held-out slab excluded, no real T1 mixed in), degraded along the first plane axis with a box slice profile
(``slice_box`` thickness 0.5-1.5 x spacing, or ``block``) at factors 2-6 and brought back with the cubic B-spline,
exactly as the per-scan pairs are made. A pool of draws is made first, then Adam (MSE, cosine decay) on random
48 x 48 crops with flips. Writes ``models/through_refiner.pt`` and records its sha256 in ``configs/metadata.json``
(``medgen.through_plane``).

    python scripts/train_through_refiner.py --pool 6000 --steps 10000   # the shipped weights (about 17 min)
    python scripts/train_through_refiner.py --steps 200 --pool 300 --out /tmp/refiner   # a quick check
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

BUNDLE = Path(__file__).resolve().parents[1] / "monai_bundles" / "brain_mri_super_resolution"
FACTORS = (2.0, 2.5, 3.0, 4.0, 5.0, 6.0)
NETWORK = {"features": 16, "num_layers": 4, "linear_kernel": [11, 3]}


def make_pool(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(inputs, targets)`` ``(n, 1, 60, 60)``: B-spline of the slice-profile degradation along H, and the synthetic truth."""
    from medgen_core.data.synthetic_sr import SyntheticSRPairs

    draws = SyntheticSRPairs(patch_size=(60, 60), axes_mode="through", factors=FACTORS, slice_axis=0, kinds=("slice_box", "block"),
                             interpolate=True, seed=seed, real_t1_prob=0.0)
    xs, ys = [], []
    for _ in range(n):
        d = draws.sample()
        xs.append(d["lr_on_hr"])
        ys.append(d["hr"])
    return torch.stack(xs), torch.stack(ys)


def train(inputs: torch.Tensor, targets: torch.Tensor, steps: int, seed: int, lr: float = 2e-3, batch: int = 16, patch: int = 48,
          network: dict | None = None):
    from medgen_core.networks.slice_refiner import SliceRefiner

    network = network or NETWORK
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    net = SliceRefiner(**network)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    span = inputs.shape[-1] - patch + 1
    losses = []
    for step in range(steps):
        i = torch.randint(len(inputs), (batch,), generator=g)
        r, c = (int(v) for v in torch.randint(0, span, (2,), generator=g))
        x, y = inputs[i, :, r : r + patch, c : c + patch], targets[i, :, r : r + patch, c : c + patch]
        if torch.rand((), generator=g) < 0.5:
            x, y = x.flip(-1), y.flip(-1)
        if torch.rand((), generator=g) < 0.5:
            x, y = x.flip(-2), y.flip(-2)
        for group in opt.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        loss = F.mse_loss(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append((float(loss.detach()), float(F.mse_loss(x, y))))
        if (step + 1) % 300 == 0:
            recent = losses[-300:]
            print(f"step {step + 1}: MSE {sum(a for a, _ in recent) / 300:.5f} (B-spline {sum(b for _, b in recent) / 300:.5f})", flush=True)
    return net.eval(), losses


def install(net: torch.nn.Module, out_dir: Path, record: dict, network: dict | None = None) -> Path:
    """Write ``through_refiner.pt`` atomically; record file, sha256, network and training in ``metadata.json`` of a bundle."""
    models = out_dir / "models" if (out_dir / "configs").is_dir() else out_dir
    models.mkdir(parents=True, exist_ok=True)
    path = models / "through_refiner.pt"
    tmp = path.with_name(path.name + ".tmp")
    torch.save(net.state_dict(), tmp)
    tmp.replace(path)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    meta_path = out_dir / "configs" / "metadata.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        meta["medgen"]["through_plane"] = {"file": "models/through_refiner.pt", "sha256": sha, "network": network or NETWORK, "training": record}
        tmp_meta = meta_path.with_name(meta_path.name + ".tmp")
        tmp_meta.write_text(json.dumps(meta, indent=4) + "\n", encoding="utf-8")
        tmp_meta.replace(meta_path)
    print(f"wrote {path} sha256 {sha}")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pool", type=int, default=3000, help="synthetic draws made before training")
    parser.add_argument("--steps", type=int, default=1800, help="Adam steps (batch 16)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=BUNDLE, help="bundle folder (default: the SR bundle) or a plain folder")
    parser.add_argument("--features", type=int, default=NETWORK["features"], help="refiner channels")
    parser.add_argument("--layers", type=int, default=NETWORK["num_layers"], help="refiner 3x3 convolutions")
    args = parser.parse_args()
    network = {**NETWORK, "features": args.features, "num_layers": args.layers}
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    inputs, targets = make_pool(args.pool, args.seed + 1)
    t1 = time.perf_counter()
    print(f"pool of {args.pool} draws in {t1 - t0:.1f} s", flush=True)
    net, losses = train(inputs, targets, args.steps, args.seed, network=network)
    t2 = time.perf_counter()
    last = losses[-300:] or losses
    record = {"data": "SyntheticSRPairs(axes_mode='through', slice_axis=0, kinds=('slice_box', 'block'), real_t1_prob=0), held-out MNI slab excluded",
              "factors": list(FACTORS), "pool": args.pool, "steps": args.steps, "seed": args.seed, "patch": 48, "batch": 16, "loss": "MSE",
              "seconds": round(t2 - t1, 1), "threads": args.threads,
              "final_mse": round(sum(a for a, _ in last) / len(last), 6), "bspline_mse": round(sum(b for _, b in last) / len(last), 6)}
    install(net, args.out, record, network)
    print(json.dumps(record))


if __name__ == "__main__":
    main()
