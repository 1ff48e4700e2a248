"""Corruption and restoration: train a network to reverse the degradation family of
:mod:`medgen_core.transforms.corruption`, and report restoration PSNR by level.

For every kind and level the held-out slab is corrupted with a fixed seed; PSNR/SSIM of the corrupted
slices and of the restored ones against the clean slices go to ``restoration.json``, the curves to
``restoration.png`` and examples to ``restoration_examples.png``.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn

from medgen_core.data.lab_slices import LabSlices
from medgen_core.errors import LabError
from medgen_core.experiments.lab.evaluate import batched, psnr_ssim, save_figure, save_image_grid, stamp_file, write_json
from medgen_core.training.autoencoder import SliceTrainingConfig
from medgen_core.training.restoration import train_restoration
from medgen_core.transforms.corruption import CORRUPTION_KINDS, CorruptionSettings, corrupt

__all__ = ["evaluate_restoration", "plot_restoration", "run_restoration"]


def _finite(psnr: float) -> float | None:
    """PSNR rounded to 3 decimals; None for an identical image (infinite PSNR, not valid JSON)."""
    return round(psnr, 3) if math.isfinite(psnr) else None


@torch.no_grad()
def evaluate_restoration(network: nn.Module, images: torch.Tensor, kinds: Sequence[str], levels: Sequence[float],
                         settings: CorruptionSettings = CorruptionSettings(), seed: int = 1234) -> dict[str, list[dict[str, float]]]:
    """``{kind: [{"level", "corrupted_psnr", "restored_psnr", "corrupted_ssim", "restored_ssim"}, ...]}`` on ``images``
    (a PSNR is None where the image is identical to the clean one, e.g. corrupted at level 0)."""
    network.eval()
    table: dict[str, list[dict[str, float]]] = {}
    for kind in kinds:
        rows = []
        for level in levels:
            bad = corrupt(images, kind, float(level), torch.Generator().manual_seed(seed), settings)
            fixed = batched(lambda t: network(t), bad)
            cp, cs = psnr_ssim(bad, images)
            rp, rs = psnr_ssim(fixed, images)
            rows.append({"level": float(level), "corrupted_psnr": _finite(cp), "restored_psnr": _finite(rp),
                         "corrupted_ssim": round(cs, 4), "restored_ssim": round(rs, 4)})
        table[kind] = rows
    return table


def plot_restoration(table: Mapping[str, list[dict[str, float]]], path: str | Path, title: str) -> Path:
    """PSNR against level per kind: corrupted (dashed) and restored (solid)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    for i, (kind, rows) in enumerate(table.items()):
        color = f"C{i}"
        for key, style, label in (("corrupted_psnr", "--", None), ("restored_psnr", "o-", kind)):
            pts = [(r["level"], r[key]) for r in rows if r[key] is not None]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, color=color, label=label, alpha=1.0 if label else 0.7)
    ax.set_xlabel("corruption level")
    ax.set_ylabel("PSNR (dB), held-out slab")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, title="solid: restored, dashed: corrupted", title_fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def run_restoration(network: nn.Module, data: LabSlices, config: SliceTrainingConfig, out_dir: str | Path,
                    kinds: Sequence[str] = CORRUPTION_KINDS, levels: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0),
                    settings: CorruptionSettings = CorruptionSettings(), device: str | torch.device = "cpu",
                    train: bool = True, extra: Mapping[str, Any] | None = None, provenance: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Train ``network`` (unless ``train`` is False: already trained) and evaluate it by kind and level.

    Writes ``<out>/restoration/`` (training outputs), ``restoration.json``, ``restoration.png`` and
    ``restoration_examples.png`` (with ``provenance``, also its sidecar); returns the JSON content.
    """
    bad = [k for k in kinds if k not in CORRUPTION_KINDS]
    if not kinds or bad:
        raise LabError(f"restoration: unknown corruption kind(s) {bad or list(kinds)}; choose from {list(CORRUPTION_KINDS)}")
    if not levels or any(not 0.0 <= float(v) <= 1.0 for v in levels):
        raise LabError(f"restoration: levels must be numbers in [0, 1], got {list(levels)}")
    out = Path(out_dir)
    seconds = 0.0
    if train:
        t0 = time.time()
        train_restoration(network, data.train_images, config, out / "restoration", device, kinds=tuple(kinds), settings=settings)
        seconds = time.time() - t0
    network = network.cpu().eval()
    table = evaluate_restoration(network, data.test_images, kinds, levels, settings)
    def mean_of(key: str, i: int) -> float | None:
        values = [table[k][i][key] for k in kinds]
        return None if any(v is None for v in values) else round(sum(values) / len(values), 3)

    mean = [{"level": float(lv), "corrupted_psnr": mean_of("corrupted_psnr", i), "restored_psnr": mean_of("restored_psnr", i)}
            for i, lv in enumerate(levels)]
    summary = {"experiment": "corruption_restoration", "kinds": list(kinds), "levels": [float(v) for v in levels],
               "corruption_settings": settings.__dict__, "training": {k: getattr(config, k) for k in ("iterations", "batch_size", "lr", "loss", "seed")},
               "training_seconds": round(seconds, 1), "heldout_slices": int(data.test_images.shape[0]),
               "by_kind": table, "mean_over_kinds": mean, "settings": dict(extra or {})}
    write_json(summary, out / "restoration.json")
    plot_restoration(table, out / "restoration.png", f"restoration by level ({config.iterations} iterations)")
    x = data.test_images[len(data.test_images) // 2 : len(data.test_images) // 2 + 1]
    rows, labels = [], []
    with torch.no_grad():
        for kind in kinds:
            bad_imgs = [corrupt(x, kind, float(lv), torch.Generator().manual_seed(1234), settings) for lv in levels]
            rows.append([b[0, 0].clamp(0, 1).numpy() for b in bad_imgs])
            rows.append([network(b)[0, 0].clamp(0, 1).numpy() for b in bad_imgs])
            labels += [f"{kind}\ncorrupted", f"{kind}\nrestored"]
    png = save_image_grid(rows, out / "restoration_examples.png", row_labels=labels, col_labels=[f"level {float(v):.2f}" for v in levels],
                          title="corruption and restoration (held-out slice)")
    if provenance is not None:
        stamp_file(png, provenance, "restoration_figure", {"kinds": list(kinds), "levels": [float(v) for v in levels]})
    return summary
