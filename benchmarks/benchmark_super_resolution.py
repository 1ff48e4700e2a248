#!/usr/bin/env python
"""Speed and memory of x2 super-resolution of the whole MNI152 volume (197x233x189), in-plane.

Prints: wall seconds, slices per second, peak resident memory, the network's FLOPs for the volume
(counted with torch.utils.flop_counter), the machine's measured float32 matrix-multiply FLOP/s, and the
achieved fraction of it. Run: ``python benchmarks/benchmark_super_resolution.py [--variant x2_mixed] [--bf16]``.
"""

from __future__ import annotations

import argparse
import resource
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from medgen_core.bundles import get_bundle, load_verified_network
from medgen_core.data.samples import load_mni152_t1
from medgen_core.inference import VolumeSuperResolver
from medgen_core.networks import RRDBNet


def matmul_flops(n: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - t)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--variant", default="x2_mixed")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--bf16", action="store_true", help="bfloat16 autocast (CPU with AVX512-BF16, or GPU)")
    args = ap.parse_args()
    bundle = get_bundle("brain_mri_super_resolution")
    v = bundle.variants[args.variant]
    net = load_verified_network(RRDBNet(2, scale=v["scale"], num_feat=32, num_block=3, num_grow=16), bundle.path / v["file"], v["sha256"])
    vol = load_mni152_t1()
    print(f"threads {torch.get_num_threads()}, volume {vol.shape}, variant {args.variant}, parameters {sum(p.numel() for p in net.parameters()):,}")
    rss0 = peak_rss_mb()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(torch.rand(1, 1, vol.shape[0], vol.shape[1]))
    flops = counter.get_total_flops() * vol.shape[2]
    resolver = VolumeSuperResolver(net, v["scale"], batch_size=args.batch_size, progress=True)
    t = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
        out = resolver(vol)
    seconds = time.perf_counter() - t
    peak = peak_rss_mb()
    mm = matmul_flops()
    print(f"output {out.shape}")
    print(f"seconds            {seconds:.1f}")
    print(f"slices per second  {vol.shape[2] / seconds:.2f}")
    print(f"peak RSS           {peak:.0f} MB (before run {rss0:.0f} MB)")
    print(f"network FLOPs      {flops / 1e12:.2f} TFLOP for the volume")
    print(f"achieved           {flops / seconds / 1e9:.1f} GFLOP/s")
    print(f"matmul FLOP/s      {mm / 1e9:.1f} GFLOP/s (float32 2048x2048)")
    print(f"fraction           {flops / seconds / mm:.1%} of measured matmul throughput")


if __name__ == "__main__":
    main()
