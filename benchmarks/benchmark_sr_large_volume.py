#!/usr/bin/env python
"""Peak memory and time of ``medgen upscale`` (x2 in-plane, default model, gate on) on a large volume, as a user runs it.

Writes a smooth random volume (default 512 x 512 x 400, float32 NIfTI) to a temporary folder, runs the real CLI
in a child process and reports its wall time and peak RSS (``getrusage(RUSAGE_CHILDREN).ru_maxrss``) against
the bound ``3 x (input + output bytes)`` (float32 in memory). The in-plane path works slice batch by slice batch
(and tiles slices larger than 512 low-resolution pixels with MONAI's SlidingWindowInferer), so only the input and
the output volume are held whole.

    python benchmarks/benchmark_sr_large_volume.py                         # 512 512 400, about 5-10 min on 2 cores
    python benchmarks/benchmark_sr_large_volume.py --shape 256 256 100 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage


def smooth_volume(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """A smooth random volume with a head-like ellipsoid support (float32, values 0..1000)."""
    g = np.random.default_rng(seed)
    coarse = g.random(tuple(max(2, n // 16) for n in shape)).astype(np.float32)
    vol = ndimage.zoom(coarse, [n / c for n, c in zip(shape, coarse.shape)], order=1)[: shape[0], : shape[1], : shape[2]]
    grid = np.ogrid[tuple(slice(0, n) for n in shape)]
    inside = sum(((c - (n - 1) / 2) / (0.45 * n)) ** 2 for c, n in zip(grid, shape)) <= 1
    return (1000 * vol * inside).astype(np.float32)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", nargs=3, type=int, default=[512, 512, 400])
    ap.add_argument("--scale", type=int, default=2, choices=(2, 4))
    ap.add_argument("--no-gate", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    shape = tuple(args.shape)
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="medgen-bench-") as tmp:
        src, out = Path(tmp) / "large.nii", Path(tmp) / "large_x2.nii"
        nib.save(nib.Nifti1Image(smooth_volume(shape), np.diag([0.5, 0.5, 0.5, 1.0])), str(src))
        cmd = [sys.executable, "-m", "medgen_core.cli.main", "upscale", str(src), str(out), "--scale", str(args.scale)]
        cmd += ["--no-gate"] if args.no_gate else []
        t = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, encoding="utf-8", errors="replace")
        seconds = time.perf_counter() - t
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            return proc.returncode
        rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
        in_bytes = int(np.prod(shape)) * 4
        out_bytes = in_bytes * args.scale**2
        gate = [line for line in proc.stdout.splitlines() + proc.stderr.splitlines() if "gate:" in line]
    result = {"shape": list(shape), "scale": args.scale, "gate": not args.no_gate, "seconds": round(seconds, 1),
              "peak_rss_bytes": rss, "input_bytes": in_bytes, "output_bytes": out_bytes,
              "rss_over_in_plus_out": round(rss / (in_bytes + out_bytes), 3), "load_average": list(load), "cpus": os.cpu_count(),
              "gate_line": gate[-1] if gate else None}
    print(f"volume {shape} x{args.scale} in-plane (gate {'off' if args.no_gate else 'on'}), load average {load[0]:.2f} on {os.cpu_count()} CPUs: "
          f"{seconds:.1f} s, peak RSS {rss / 2**30:.2f} GiB = {result['rss_over_in_plus_out']:.2f} x (input {in_bytes / 2**30:.2f} GiB + "
          f"output {out_bytes / 2**30:.2f} GiB, float32); bound 3 x: {'met' if result['rss_over_in_plus_out'] <= 3 else 'NOT met'}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
