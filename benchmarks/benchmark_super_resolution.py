#!/usr/bin/env python
"""Speed and memory of x2 in-plane super-resolution of the whole MNI152 volume (197x233x189), one run.

For each variant and thread count it prints: seconds for the network alone (``torch.inference_mode``, whole
slices in batches, channels-last where the network uses it), seconds for the full upscaler
(:class:`~medgen_core.inference.VolumeSuperResolver`: normalisation, network, clamp; ``--gate`` adds the
never-worse gate), seconds for bicubic on the same volume, the network's GFLOP for the volume (convolutions,
counted with ``torch.utils.flop_counter``; the bicubic skip is not counted), the achieved GFLOP/s as a
fraction of the measured float32 matrix-multiply peak at the same thread count, and the peak RSS. The
machine's load average is printed first: other processes on a shared machine slow every figure down.
``--bf16`` also times bfloat16 autocast and reports the max-abs difference to float32 eager.

    python benchmarks/benchmark_super_resolution.py                       # x2_synthetic vs x2_mixed, 2 and 1 threads
    python benchmarks/benchmark_super_resolution.py --variants x2_synthetic --threads 2 --bf16 --json out.json
    python benchmarks/benchmark_super_resolution.py --shape 512 512 400 --variants x2_synthetic --threads 2   # large volume
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from medgen_core.bundles import get_bundle, load_verified_network
from medgen_core.data.samples import load_mni152_t1
from medgen_core.io import Volume
from medgen_core.networks.sr import sr_network


def matmul_flops(n: int = 2048, repeats: int = 10) -> float:
    """Measured float32 matrix-multiply FLOP/s at the current thread count."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - t)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def load_variant(name: str) -> tuple[torch.nn.Module, int]:
    bundle = get_bundle("brain_mri_super_resolution")
    v = bundle.variants[name]
    net = sr_network(v.get("network"), int(v["scale"]))
    return load_verified_network(net, bundle.path / v["file"], v["sha256"]), int(v["scale"])


def volume_gflop(net: torch.nn.Module, shape: tuple[int, int, int]) -> float:
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        net(torch.rand(1, 1, shape[0], shape[1]))
    return counter.get_total_flops() * shape[2] / 1e9


def network_only(net: torch.nn.Module, array: np.ndarray, batch_size: int, bf16: bool) -> tuple[float, np.ndarray]:
    """Seconds for the network on every axial slice of ``array`` (normalised), and the output."""
    stack = np.moveaxis(array / float(np.percentile(array, 99.9)), 2, 0).astype(np.float32)
    outs = []
    t = time.perf_counter()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for start in range(0, stack.shape[0], batch_size):
            outs.append(net(torch.from_numpy(stack[start : start + batch_size])[:, None]).float()[:, 0].numpy())
    return time.perf_counter() - t, np.concatenate(outs)


def bicubic_seconds(array: np.ndarray, scale: int, batch_size: int) -> float:
    stack = torch.from_numpy(np.moveaxis(array, 2, 0).astype(np.float32))[:, None]
    t = time.perf_counter()
    for start in range(0, stack.shape[0], batch_size):
        F.interpolate(stack[start : start + batch_size], scale_factor=float(scale), mode="bicubic", align_corners=False)
    return time.perf_counter() - t


def resolver_seconds(net: torch.nn.Module, scale: int, volume: Volume, batch_size: int, gate: bool) -> float:
    from medgen_core.inference import VolumeSuperResolver

    resolver = VolumeSuperResolver(net, scale, batch_size=batch_size, progress=False, gate=gate, slice_axis=2)
    t = time.perf_counter()
    with torch.inference_mode():
        resolver(volume)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", nargs="+", default=None, help="default: x2_synthetic (if shipped) and x2_mixed")
    ap.add_argument("--threads", nargs="+", type=int, default=[2, 1])
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--bf16", action="store_true", help="also time bfloat16 autocast (CPU with AVX512-BF16 / AMX), max-abs diff to fp32")
    ap.add_argument("--gate", action="store_true", help="time the full upscaler with the never-worse gate on (default off)")
    ap.add_argument("--skip-resolver", action="store_true", help="time the network alone (not the full upscaler)")
    ap.add_argument("--shape", nargs=3, type=int, default=None, help="a random smooth volume of this shape instead of the MNI T1")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = ap.parse_args()
    bundle = get_bundle("brain_mri_super_resolution")
    names = args.variants or [n for n in ("x2_synthetic", "x2_mixed") if n in bundle.variants]
    if args.shape:
        g = np.random.default_rng(0)
        array = torch.nn.functional.interpolate(torch.from_numpy(g.random((1, 1, *(max(2, n // 16) for n in args.shape)), dtype=np.float32)),
                                                size=tuple(args.shape), mode="trilinear")[0, 0].numpy()
        volume = Volume(array=array, affine=np.eye(4), path=None, format="nifti")
    else:
        volume = load_mni152_t1()
    array = np.asarray(volume.array, dtype=np.float32)
    load = os.getloadavg()
    print(f"volume {array.shape}, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs, torch {torch.__version__}")
    results = {"shape": list(array.shape), "load_average": list(load), "runs": []}
    for name in names:
        net, scale = load_variant(name)
        gflop = volume_gflop(net, array.shape)
        params = sum(p.numel() for p in net.parameters())
        print(f"\n{name}: {type(net).__name__}, {params:,} parameters, {gflop:.0f} GFLOP for the volume "
              f"({gflop * 1e9 / 2 / (array.shape[0] * array.shape[1] * array.shape[2]) / 1e6:.3f} M MAC per LR pixel)")
        for threads in args.threads:
            torch.set_num_threads(threads)
            mm = matmul_flops()
            net_s, ref = network_only(net, array, args.batch_size, bf16=False)
            row = {"variant": name, "threads": threads, "gflop": gflop, "network_s": net_s, "matmul_gflops": mm / 1e9,
                   "achieved_gflops": gflop / net_s, "fraction_of_matmul": gflop * 1e9 / net_s / mm,
                   "bicubic_s": bicubic_seconds(array, scale, args.batch_size)}
            if args.bf16:
                bf_s, bf_out = network_only(net, array, args.batch_size, bf16=True)
                row.update(network_bf16_s=bf_s, bf16_max_abs_diff=float(np.abs(bf_out - ref).max()),
                           bf16_mean_abs_diff=float(np.abs(bf_out - ref).mean()))
            del ref
            if not args.skip_resolver:
                row["upscaler_s"] = resolver_seconds(net, scale, volume, args.batch_size, args.gate)
                row["upscaler_gate"] = args.gate
            row["peak_rss_mb"] = peak_rss_mb()
            results["runs"].append(row)
            print(f"  {threads} thread(s): network {net_s:.1f} s"
                  + (f", full upscaler {row['upscaler_s']:.1f} s (gate {'on' if args.gate else 'off'})" if "upscaler_s" in row else "")
                  + f", bicubic {row['bicubic_s']:.2f} s; {row['achieved_gflops']:.1f} GFLOP/s = {row['fraction_of_matmul']:.0%} of the "
                  f"measured matmul {row['matmul_gflops']:.1f} GFLOP/s; peak RSS {row['peak_rss_mb']:.0f} MB")
            if args.bf16:
                print(f"  {threads} thread(s) bf16 autocast: network {row['network_bf16_s']:.1f} s, max |bf16 - fp32| "
                      f"{row['bf16_max_abs_diff']:.4f} (mean {row['bf16_mean_abs_diff']:.5f}, normalised intensities)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
