#!/usr/bin/env python
"""Memory of the generative-augmentation manager with its cache full (``max_models = 3``), and after eviction.

Builds a generator folder whose four ``t1_{class}`` entries link to shipped bundles (brain_slice_ddpm,
brain_tissue_to_t1_pix2pix, then brain_slice_ddpm twice more: each entry is its own model in memory; the
CycleGAN bundle is an image-to-image translator, not a generator the manager can use) and asks the manager for them in turn, generating one batch of 16 slices with each. Prints, after every
step: the process RSS (resident memory, from /proc/self/status), the peak RSS so far, the manager's
parameter bytes (``memory_bytes()``), what is cached, and the load / generation times. The fourth request
evicts the least recently used generator: RSS should not grow by another model.

    python benchmarks/benchmark_augmentation_memory.py [--threads 2] [--steps 10]

Numbers are printed, never asserted; they depend on the allocator and on what else runs on the machine.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import torch

from medgen_core.augmentation import AugmentationConfig, GenerativeAugmentationManager
from medgen_core.bundles.generators import bundle_loaders

ROOT = Path(__file__).resolve().parents[1] / "monai_bundles"
GENERATORS = {  # class -> (bundle, how it generates)
    "inferior": ("brain_slice_ddpm", "sample"),
    "lower_middle": ("brain_tissue_to_t1_pix2pix", "labels"),
    "upper_middle": ("brain_slice_ddpm", "sample"),
    "superior": ("brain_slice_ddpm", "sample"),
}


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10, help="DDIM steps for the diffusion generator")
    ap.add_argument("--batch", type=int, default=16)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="medgen-mem-") as tmp:
        base = Path(tmp)
        for cls, (bundle, _) in GENERATORS.items():
            (base / f"t1_{cls}").symlink_to(ROOT / bundle, target_is_directory=True)
        cfg = AugmentationConfig(enabled=True, modality="t1", classes=list(GENERATORS), max_models=3, inference_steps=args.steps,
                                 per_class={c: {"source": s} for c, (_, s) in GENERATORS.items()})
        manager = GenerativeAugmentationManager(base, cfg, device="cpu", loaders=bundle_loaders())
        print(f"start: RSS {rss_mb():.0f} MB, threads {args.threads}, batch {args.batch}, {args.steps} DDIM steps")
        labels = torch.randint(0, 4, (args.batch, 1, 96, 112), generator=torch.Generator().manual_seed(0))
        print("| request | generator | load s | generate s | RSS MB | peak RSS MB | manager parameter MB | cached (LRU first) |")
        print("|---|---|---|---|---|---|---|---|")
        for i, (cls, (bundle, source)) in enumerate(GENERATORS.items(), 1):
            t0 = time.perf_counter()
            manager.get(cls)
            t1 = time.perf_counter()
            manager.generate(cls, args.batch, seed=i, labels=labels if source == "labels" else None)
            t2 = time.perf_counter()
            print(f"| {i} | {bundle} ({cls}) | {t1 - t0:.2f} | {t2 - t1:.2f} | {rss_mb():.0f} | {peak_mb():.0f} | "
                  f"{manager.memory_bytes() / 2**20:.1f} | {', '.join(manager.cached)} |", flush=True)
        s = manager.stats
        print(f"cache: {s.hits} hits, {s.misses} misses, {s.evictions} evictions")
        manager.clear()
        print(f"after clear(): RSS {rss_mb():.0f} MB, manager parameter MB {manager.memory_bytes() / 2**20:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
