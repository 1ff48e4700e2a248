#!/usr/bin/env python
"""brain_slice_ddpm: sample quality vs sampling speed, measured with the realism suite (issue 17 item 4).

For every weights file and every DDIM step count: one sample per real held-out MNI slice (z = 76..103, 28 slices,
which no shipped generator saw), with that slice's position class, guidance 1, seed 100 + class; then
:func:`~medgen_core.evaluation.realism.realism_report` against the real held-out slices (two-sample accuracy,
log-spectral distance, high-frequency excess, per-tissue means) and the sampling speed (slices/s, batch 16, this
process's threads, median of ``--repeats`` timed batches after a warm-up).

Tissue statistics of samples: a sample has no tissue map of its own, so it gets the MNI tissue labels of its
nearest real *training* slice (L2 on the 2 mm grid; the samples lie on that grid and their outline follows the
class). The ordering / ratios then say whether the generated intensities under that anatomy have the T1 contrast
(WM > GM > CSF, the real ratios); they are not a segmentation of the sample.

    python scripts/evaluate_ddpm_tradeoff.py --weights shipped=monai_bundles/brain_slice_ddpm/models/model.pt \\
        --steps-list 5 10 20 --out /tmp/ddpm_tradeoff.json
    python scripts/evaluate_ddpm_tradeoff.py ... --docs-dir monai_bundles/brain_slice_ddpm/docs   # + montage, spectrum
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from evaluate_realism import mni_labels, summary, table  # noqa: E402

from medgen_core.bundles.bundle_config import open_bundle_config  # noqa: E402
from medgen_core.data.slices import SLICE_POSITION_CLASSES, mni_axial_slices_2mm, mni_heldout_axial_slices_2mm, slice_position_class  # noqa: E402
from medgen_core.evaluation.realism import plot_spectra, realism_report  # noqa: E402
from medgen_core.inference.diffusion_sampling import DiffusionSampler  # noqa: E402

BUNDLE = Path(__file__).resolve().parents[1] / "monai_bundles" / "brain_slice_ddpm"


def load_network(path: Path) -> torch.nn.Module:
    """The bundle's ``network_def`` with the state dict in ``path`` (any candidate file, not only the shipped one)."""
    if not path.is_file():
        raise SystemExit(f"evaluate_ddpm_tradeoff: {path}: no such weights file (expected a DiffusionModelUNet state dict).")
    net = open_bundle_config(BUNDLE, "inference").get_parsed_content("network_def")
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return net.eval()


def sample_like(sampler: DiffusionSampler, classes: np.ndarray, steps: int) -> torch.Tensor:
    """``(N, 1, 128, 128)`` samples in [0, 1], one per entry of ``classes``, in the same order (seed 100 + class)."""
    out = torch.empty(len(classes), 1, 128, 128)
    for c in np.unique(classes):
        idx = np.flatnonzero(classes == c)
        with torch.no_grad():
            x = sampler.sample(len(idx), torch.full((len(idx),), int(c)), steps=steps, generator=torch.Generator().manual_seed(100 + int(c)))
        out[idx] = x.float().clamp(0, 1)
    return out


def speed(sampler: DiffusionSampler, steps: int, repeats: int, batch: int = 16) -> float:
    """Median slices/s of ``repeats`` timed batches of ``batch`` (after one 1-step warm-up)."""
    classes = torch.arange(batch) % 4
    sampler.sample(batch, classes, steps=1, generator=torch.Generator().manual_seed(0))
    times = []
    for r in range(repeats):
        t0 = time.perf_counter()
        sampler.sample(batch, classes, steps=steps, generator=torch.Generator().manual_seed(r))
        times.append(time.perf_counter() - t0)
    return batch / statistics.median(times)


def nearest_training_labels(fake: torch.Tensor, train: torch.Tensor, train_z: torch.Tensor) -> torch.Tensor:
    """MNI tissue labels ``(N, 1, 128, 128)`` of each sample's nearest training slice (L2)."""
    d = torch.cdist(fake.flatten(1), train.flatten(1))
    return mni_labels(train_z[d.argmin(1)])


def save_montage(real: torch.Tensor, fakes: dict[str, torch.Tensor], png: Path, n: int = 6) -> Path:
    """Rows: real held-out slices, then each generator's samples of the same classes (same columns)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = np.linspace(0, len(real) - 1, n).round().astype(int)
    rows = {"real (MNI held-out)": real, **{f"{k} (AI)": v for k, v in fakes.items()}}
    fig, axes = plt.subplots(len(rows), n, figsize=(1.6 * n, 1.7 * len(rows)))
    for r, (name, x) in enumerate(rows.items()):
        for c, i in enumerate(cols):
            ax = axes[r, c]
            ax.imshow(x[i, 0].numpy().T[::-1], cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([]), ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(name, fontsize=7)
    fig.tight_layout()
    tmp = png.with_name(png.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, png)
    return png


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", nargs="+", required=True, help="NAME=PATH pairs (state dicts of the bundle's network_def)")
    ap.add_argument("--steps-list", type=int, nargs="+", default=[10])
    ap.add_argument("--suite-steps", type=int, default=300, help="two-sample classifier steps per fold (default 300, as evaluate_realism)")
    ap.add_argument("--repeats", type=int, default=3, help="timed batches of 16 per setting")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, required=True, help="JSON with every row (written via a temp file)")
    ap.add_argument("--docs-dir", type=Path, default=None, help="also write ddpm_montage_tradeoff.png and ddpm_spectrum_tradeoff.png here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    weights = dict(w.split("=", 1) for w in args.weights)
    real, z = mni_heldout_axial_slices_2mm(128)
    classes = slice_position_class(z.numpy(), 4)
    train, train_z = mni_axial_slices_2mm(128)
    real_labels = mni_labels(z)
    rows, spectra, montage = [], {}, {}
    for name, path in weights.items():
        sampler = DiffusionSampler(load_network(Path(path)), image_size=(128, 128), device="cpu", batch_size=16, prediction_type="v_prediction")
        for steps in args.steps_list:
            fake = sample_like(sampler, classes, steps)
            sps = speed(sampler, steps, args.repeats)
            rep = realism_report(real, fake, real_labels=real_labels, fake_labels=nearest_training_labels(fake, train, train_z), steps=args.suite_steps)
            row = summary(f"{name}, {steps} DDIM steps", rep)
            row.update(weights=name, ddim_steps=steps, slices_per_s=sps, threads=args.threads, load_average=os.getloadavg()[0],
                       mean_intensity_fake=float(fake.mean()), mean_intensity_real=float(real.mean()))
            print(f"  {sps:.2f} slices/s, load average {row['load_average']:.1f}", flush=True)
            rows.append(row)
            s = rep["spectrum"]
            spectra.setdefault("real (MNI held-out)", (np.asarray(s["freqs"]), np.asarray(s["real"])))
            spectra[f"{name}, {steps} steps (AI)"] = (np.asarray(s["freqs"]), np.asarray(s["fake"]))
            montage[f"{name}, {steps} st"] = fake
    payload = {"protocol": __doc__.split("\n\n")[1:3], "classes": [SLICE_POSITION_CLASSES[int(c)] for c in classes], "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, args.out)
    print("\n".join(table(rows)))
    for r in rows:
        print(f"{r['comparison']}: {r['slices_per_s']:.2f} slices/s ({r['threads']} thread, load {r['load_average']:.1f})")
    if args.docs_dir:
        save_montage(real, montage, args.docs_dir / "ddpm_montage_tradeoff.png")
        plot_spectra(spectra, args.docs_dir / "ddpm_spectrum_tradeoff.png", title="DDPM samples vs real held-out: radial power spectra")
    return 0


if __name__ == "__main__":
    sys.exit(main())
