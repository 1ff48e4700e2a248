#!/usr/bin/env python
"""Sampling speed of the brain_slice_ddpm generator on the CPU: slices per second at 128x128 for 10 DDIM
steps (batch 16), parameter count and peak RSS, next to a full-resolution lean UNet and a plain
default-size MONAI ``DiffusionModelUNet``.

Every model runs in its own subprocess (so each peak RSS is its own) through the same
:class:`~medgen_core.inference.diffusion_sampling.DiffusionSampler` (batched, ``channels_last``,
bfloat16 autocast when the CPU supports bf16 natively). Numbers are printed, never asserted.

    python benchmarks/benchmark_ddpm_sampling.py                       # all three models, 2 threads
    python benchmarks/benchmark_ddpm_sampling.py --models bundle --threads 1 --repeats 5

Timings depend on what else runs on the machine: with fewer free cores than ``--threads``, OpenMP
threads wait for each other at every barrier and a 2-thread run can be slower than a 1-thread run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

BUNDLE = Path(__file__).resolve().parents[1] / "monai_bundles" / "brain_slice_ddpm"
MODELS = {
    "bundle": "brain_slice_ddpm network_def (2x2 space-to-depth, channels 32/64/64, 1 res block, mid-block attention), shipped weights",
    "lean128": "lean UNet at full resolution (in 1 channel, channels 16/32/64, 1 res block, mid-block attention, 8 groups), random weights",
    "plain": "plain default-size MONAI DiffusionModelUNet(spatial_dims=2, in_channels=1, out_channels=1), random weights",
}


def _network(name: str):
    import torch
    from monai.networks.nets import DiffusionModelUNet

    if name == "bundle":
        from medgen_core.bundles.bundle_config import open_bundle_config
        from medgen_core.bundles.weights import load_verified_network

        parser = open_bundle_config(BUNDLE, "inference")
        entry = parser.get_parsed_content("_meta_#medgen#variants")[parser.get_parsed_content("variant")]
        return load_verified_network(parser.get_parsed_content("network_def"), BUNDLE / entry["file"], entry["sha256"], "cpu")
    torch.manual_seed(0)
    if name == "lean128":
        return DiffusionModelUNet(spatial_dims=2, in_channels=1, out_channels=1, channels=(16, 32, 64), attention_levels=(False, False, False),
                                  num_res_blocks=1, norm_num_groups=8, num_head_channels=64, num_class_embeds=5, use_flash_attention=True)
    return DiffusionModelUNet(spatial_dims=2, in_channels=1, out_channels=1)


def measure(name: str, threads: int, repeats: int, batch: int, steps: int, bf16: bool | None) -> dict:
    """Time ``repeats`` calls of ``sample(batch, steps=steps)`` after one warm-up call (in this process)."""
    import torch

    from medgen_core.inference.diffusion_sampling import DiffusionSampler

    torch.set_num_threads(threads)
    net = _network(name)
    params = sum(p.numel() for p in net.parameters())
    sampler = DiffusionSampler(net, image_size=(128, 128), device="cpu", bf16=bf16, batch_size=batch)
    classes = None if sampler.num_classes is None else torch.arange(batch) % sampler.num_classes
    sampler.sample(batch, classes, steps=1, generator=torch.Generator().manual_seed(0))  # warm-up: kernels for these shapes
    seconds = []
    for r in range(repeats):
        t0 = time.perf_counter()
        out = sampler.sample(batch, classes, steps=steps, generator=torch.Generator().manual_seed(r))
        seconds.append(time.perf_counter() - t0)
    assert out.shape == (batch, 1, 128, 128)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB
    return {
        "model": name, "params": params, "threads": threads, "bf16": sampler.bf16, "batch": batch, "steps": steps,
        "seconds": [round(s, 3) for s in seconds], "slices_per_s_median": batch / statistics.median(seconds),
        "slices_per_s_best": batch / min(seconds), "peak_rss_mb": rss_mb,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--repeats", type=int, default=3, help="timed sampling calls per model")
    ap.add_argument("--plain-repeats", type=int, default=1, help="timed calls for the (slow) plain UNet")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--bf16", choices=("auto", "on", "off"), default="auto", help="bfloat16 autocast (auto: if the CPU has native bf16)")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: measure one model in this process
    args = ap.parse_args(argv)
    bf16 = {"auto": None, "on": True, "off": False}[args.bf16]
    if args.one:
        repeats = args.plain_repeats if args.one == "plain" else args.repeats
        print("RESULT " + json.dumps(measure(args.one, args.threads, repeats, args.batch, args.steps, bf16)), flush=True)
        return 0
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads), "CUDA_VISIBLE_DEVICES": ""}
    print(f"DDIM sampling, 128x128, {args.steps} steps, batch {args.batch}, {args.threads} torch thread(s), CPU: {os.cpu_count()} cores visible, "
          f"load average before {os.getloadavg()[0]:.1f} (the machine may be shared: timings depend on it)", flush=True)
    results = []
    for name in args.models:
        cmd = [sys.executable, __file__, "--one", name, "--threads", str(args.threads), "--repeats", str(args.repeats),
               "--plain-repeats", str(args.plain_repeats), "--batch", str(args.batch), "--steps", str(args.steps), "--bf16", args.bf16]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if done.returncode != 0 or line is None:
            print(f"{name}: failed (exit {done.returncode}): {(done.stderr or done.stdout)[-800:]}", flush=True)
            continue
        res = json.loads(line[len("RESULT "):])
        results.append(res)
        print(f"{name:8s} {res['params'] / 1e6:6.3f} M params  {res['slices_per_s_median']:6.2f} slices/s (best {res['slices_per_s_best']:.2f}; "
              f"{res['seconds']} s per batch)  peak RSS {res['peak_rss_mb']:.0f} MB  bf16={res['bf16']}   [{MODELS[name]}]", flush=True)
    print(f"load average after {os.getloadavg()[0]:.1f}", flush=True)
    by = {r["model"]: r for r in results}
    if "bundle" in by and "plain" in by:
        print(f"bundle vs plain: {by['bundle']['slices_per_s_median'] / by['plain']['slices_per_s_median']:.1f}x faster", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
