#!/usr/bin/env python
"""Evaluate the shipped brain_slice_ddpm generator: realism, class adherence, novelty, speed; montage.

Protocol (all offline, deterministic with the seeds below):
- Real slices: the 114 training-range axial MNI152 slices at 2 mm (``mni_axial_slices_2mm(128)``), split at
  random (seed 0) into halves A and B, stratified by slice-position class.
- Synthetic slices: ``len(A)`` samples from noise through the bundle's own sampler (10 DDIM steps by default),
  with the class counts of half A, at guidance 1 and 2.
- Feature distance (FD, :func:`medgen_core.evaluation.feature_distance.feature_distance`: Frechet distance on
  a fixed random conv net's features, standardised by the reference): FD(synthetic, A) against the
  real-vs-real floor FD(B, A) (same sizes); the 300-iteration smoke-run weights (their samples are noise)
  give the "untrained" reference.
- Class adherence: a small MONAI ``Classifier`` trained on half B (64x64) classifies half A (real accuracy)
  and the synthetic slices (does the generator draw the class it was asked for?).
- Novelty: for every synthetic slice, the PSNR to its nearest real training slice (all 114); copies of
  training slices would show up as very high values (> 40 dB).

    python scripts/evaluate_ddpm.py                      # into monai_bundles/brain_slice_ddpm/docs/
    python scripts/evaluate_ddpm.py --docs-dir /tmp/eval --steps 20
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from medgen_core.bundles.generators import DiffusionBundleBackend
from medgen_core.data.slices import SLICE_POSITION_CLASSES, mni_axial_slices_2mm, slice_position_class
from medgen_core.evaluation.feature_distance import RandomFeatures, feature_distance

BUNDLE = Path(__file__).resolve().parents[1] / "monai_bundles" / "brain_slice_ddpm"


def split_halves(labels: torch.Tensor, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices of two halves, stratified by class (random within each class)."""
    rng = np.random.default_rng(seed)
    a, b = [], []
    for c in np.unique(labels.numpy()):
        idx = rng.permutation(np.nonzero(labels.numpy() == c)[0])
        a.append(idx[: (len(idx) + 1) // 2])
        b.append(idx[(len(idx) + 1) // 2:])
    return np.sort(np.concatenate(a)), np.sort(np.concatenate(b))


def sample(backend: DiffusionBundleBackend, counts: dict[int, int], steps: int, guidance: float, seed: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """``counts[c]`` samples of every class ``c``; returns ``(images (N, 1, 128, 128), labels (N,), seconds)``."""
    images, labels = [], []
    t0 = time.perf_counter()
    for c, n in counts.items():
        g = torch.Generator().manual_seed(seed + c)
        images.append(backend.sample(n, class_name=SLICE_POSITION_CLASSES[c], steps=steps, guidance_scale=guidance, generator=g))
        labels.append(torch.full((n,), c, dtype=torch.int64))
    return torch.cat(images).float().clamp(0, 1), torch.cat(labels), time.perf_counter() - t0


def class_adherence(train_x: torch.Tensor, train_y: torch.Tensor, tests: dict[str, tuple[torch.Tensor, torch.Tensor]],
                    iterations: int = 300, seed: int = 0) -> dict[str, float]:
    """Accuracy of a slice-position classifier trained on ``train_x`` on each test set."""
    from monai.networks.nets import Classifier

    torch.manual_seed(seed)
    size = 64
    down = lambda x: F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)  # noqa: E731
    net = Classifier(in_shape=(1, size, size), classes=4, channels=(8, 16, 32, 64), strides=(2, 2, 2, 2), num_res_units=0)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x_all, g = down(train_x), torch.Generator().manual_seed(seed)
    for _ in range(iterations):
        idx = torch.randint(0, x_all.shape[0], (16,), generator=g)
        x = x_all[idx]
        x = torch.where((torch.rand(16, generator=g) < 0.5)[:, None, None, None], x.flip(-1), x)
        loss = F.cross_entropy(net(x), train_y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        return {name: float((net(down(x)).argmax(1) == y).float().mean()) for name, (x, y) in tests.items()}


def nearest_real_psnr(synthetic: torch.Tensor, real: torch.Tensor) -> np.ndarray:
    """PSNR (data range 1) of every synthetic slice to its nearest real slice (minimum MSE over ``real``)."""
    mse = torch.cdist(synthetic.flatten(1).double(), real.flatten(1).double()).pow(2) / synthetic[0].numel()
    return (10 * torch.log10(1 / mse.min(1).values.clamp_min(1e-12))).numpy()


def save_real_vs_synthetic(real: torch.Tensor, real_y: torch.Tensor, syn: torch.Tensor, syn_y: torch.Tensor, png: Path, per_class: int = 4) -> Path:
    """One row per class: ``per_class`` real slices, then ``per_class`` synthetic ones (radiological display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(4, 2 * per_class, figsize=(2 * per_class * 1.3, 4 * 1.45), dpi=100)
    for c in range(4):
        r, s = real[real_y == c], syn[syn_y == c]
        pick_r = np.linspace(0, len(r) - 1, per_class).round().astype(int)
        for j in range(2 * per_class):
            img = r[pick_r[j]] if j < per_class else s[j - per_class]
            ax = axes[c, j]
            ax.imshow(img[0].numpy().T, cmap="gray", vmin=0, vmax=1, origin="lower")
            ax.set_xticks([]), ax.set_yticks([])
            if c == 0:
                ax.set_title("real" if j < per_class else "synthetic (AI)", fontsize=8)
            if j == 0:
                ax.set_ylabel(SLICE_POSITION_CLASSES[c], fontsize=8)
    fig.suptitle("brain_slice_ddpm: real MNI152 slices (left) vs AI-generated samples (right), 10 DDIM steps", fontsize=9)
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)
    return png


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs-dir", type=Path, default=BUNDLE / "docs")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.docs_dir.mkdir(parents=True, exist_ok=True)
    real, z = mni_axial_slices_2mm(128)
    labels = torch.as_tensor(slice_position_class(z.numpy(), 4), dtype=torch.int64)
    ia, ib = split_halves(labels)
    a, ay, b, by = real[ia], labels[ia], real[ib], labels[ib]
    counts = {c: int((ay == c).sum()) for c in range(4)}
    backend = DiffusionBundleBackend(BUNDLE, "cpu")
    meta = json.loads((BUNDLE / "configs" / "metadata.json").read_text(encoding="utf-8"))["medgen"]
    feats = RandomFeatures(seed=0)
    results: dict = {"protocol": __doc__.split("\n\n")[1], "weights": {"trained": meta.get("trained"), **meta.get("training", {})},
                     "steps": args.steps, "real_half_sizes": [len(ia), len(ib)], "fd_real_b_vs_a": feature_distance(b, a, feats), "guidance": {}}
    synthetic = {}
    for guidance in (1.0, 2.0):
        syn, syn_y, seconds = sample(backend, counts, args.steps, guidance, seed=100)
        synthetic[guidance] = (syn, syn_y)
        psnr_nn = nearest_real_psnr(syn, real)
        per_class_fd = {SLICE_POSITION_CLASSES[c]: feature_distance(syn[syn_y == c], a[ay == c], feats) for c in range(4)}
        results["guidance"][str(guidance)] = {
            "fd_synthetic_vs_a": feature_distance(syn, a, feats), "fd_per_class": per_class_fd,
            "fd_real_per_class": {SLICE_POSITION_CLASSES[c]: feature_distance(b[by == c], a[ay == c], feats) for c in range(4)},
            "nearest_real_psnr_median": float(np.median(psnr_nn)), "nearest_real_psnr_max": float(psnr_nn.max()),
            "samples": len(syn), "seconds": seconds, "slices_per_second": len(syn) / seconds,
            "intensity_mean_synthetic": float(syn.mean()), "intensity_mean_real": float(a.mean()),
        }
        print(f"guidance {guidance}: {results['guidance'][str(guidance)]}", flush=True)
    tests = {"real_a": (a, ay), **{f"synthetic_g{g}": v for g, v in synthetic.items()}}
    results["class_adherence_accuracy"] = class_adherence(b, by, tests)
    print("class adherence (classifier trained on real half B):", results["class_adherence_accuracy"], flush=True)
    save_real_vs_synthetic(a, ay, *synthetic[1.0], args.docs_dir / "montage_real_vs_synthetic.png")
    (args.docs_dir / "results.json").write_text(json.dumps(results, indent=4) + "\n", encoding="utf-8")
    print(f"wrote {args.docs_dir / 'results.json'} and {args.docs_dir / 'montage_real_vs_synthetic.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
