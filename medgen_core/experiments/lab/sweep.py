"""Bottleneck sweep: train the conditional autoencoder at several latent sizes and plot reconstruction
quality (PSNR / SSIM on the held-out slab, and on the training slices) against the latent size.

Each latent size is trained in its own folder ``<out>/latent_<n>/`` (resumable), then evaluated;
``sweep.json`` holds every number and ``sweep.png`` the curves.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn

from medgen_core.data.lab_slices import LabSlices
from medgen_core.errors import LabError
from medgen_core.experiments.lab.evaluate import batched, psnr_ssim, save_figure, write_json
from medgen_core.training.autoencoder import SliceTrainingConfig, train_autoencoder

__all__ = ["evaluate_reconstruction", "plot_sweep", "run_bottleneck_sweep"]

logger = logging.getLogger(__name__)


@torch.no_grad()
def evaluate_reconstruction(network: nn.Module, images: torch.Tensor, labels: torch.Tensor | None) -> dict[str, float]:
    """PSNR/SSIM of ``network(images, labels)`` against ``images`` (``labels`` None = null class)."""
    network.eval()
    if labels is None:
        recon = batched(lambda x: network(x), images)
    else:
        recon = batched(lambda x, y: network(x, y), images, labels)
    psnr, ssim = psnr_ssim(recon, images)
    return {"psnr": round(psnr, 3), "ssim": round(ssim, 4)}


def plot_sweep(results: list[dict[str, Any]], path: str | Path, title: str) -> Path:
    """PSNR and SSIM against latent size (held-out and training), log2 x axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [r["latent_size"] for r in results]
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2), dpi=100)
    for ax, metric, unit in ((axes[0], "psnr", "PSNR (dB)"), (axes[1], "ssim", "SSIM")):
        ax.plot(sizes, [r["heldout"][metric] for r in results], "o-", label="held-out slab (z 80-99)")
        ax.plot(sizes, [r["train"][metric] for r in results], "s--", label="training slices")
        ax.set_xscale("log", base=2)
        ax.set_xticks(sizes, [str(s) for s in sizes])
        ax.set_xlabel("latent size")
        ax.set_ylabel(unit)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def run_bottleneck_sweep(make_network: Callable[[int], nn.Module], data: LabSlices, latent_sizes: Sequence[int],
                         config: SliceTrainingConfig, out_dir: str | Path, device: str | torch.device = "cpu",
                         settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train one autoencoder per latent size and write ``sweep.json`` and ``sweep.png`` to ``out_dir``.

    Args:
        make_network: latent size -> a fresh (untrained) autoencoder (the bundle config is the factory).
        data: training slices and the held-out slab.
        latent_sizes: e.g. ``(8, 16, 32, 64, 128)``; distinct positive ints.
        config: training settings, the same for every size.
        out_dir: output folder.
        device: torch device.
        settings: extra settings recorded in the JSON (e.g. the network config).

    Returns:
        The JSON content: ``{"results": [{"latent_size", "parameters", "seconds", "heldout": {psnr, ssim},
        "train": {...}}, ...], ...}``.
    """
    sizes = [int(s) for s in latent_sizes]
    if not sizes or min(sizes) < 1 or len(set(sizes)) != len(sizes):
        raise LabError(f"bottleneck sweep: latent sizes must be distinct positive integers, got {list(latent_sizes)}")
    out = Path(out_dir)
    results = []
    for size in sizes:
        net = make_network(size)
        if getattr(net, "latent_size", size) != size:
            raise LabError(f"bottleneck sweep: the network factory built latent_size {getattr(net, 'latent_size', None)} when asked for {size}")
        t0 = time.time()
        train_autoencoder(net, data.train_images, data.train_labels, config, out / f"latent_{size}", device)
        seconds = time.time() - t0
        net = net.cpu().eval()
        row = {
            "latent_size": size,
            "parameters": sum(p.numel() for p in net.parameters()),
            "seconds": round(seconds, 1),
            "heldout": evaluate_reconstruction(net, data.test_images, data.test_labels),
            "train": evaluate_reconstruction(net, data.train_images, data.train_labels),
        }
        logger.info("latent %d: held-out PSNR %.2f dB SSIM %.3f", size, row["heldout"]["psnr"], row["heldout"]["ssim"])
        results.append(row)
    conditioning = getattr(net, "conditioning", None)
    summary = {
        "experiment": "bottleneck_sweep",
        "conditioning": conditioning,
        "image_size": int(data.train_images.shape[-1]),
        "train_slices": int(data.train_images.shape[0]),
        "heldout_slices": int(data.test_images.shape[0]),
        "training": {k: getattr(config, k) for k in ("iterations", "batch_size", "lr", "p_uncond", "loss", "seed")},
        "metrics": "monai.metrics PSNRMetric(max_val=1) / SSIMMetric(data_range=1), whole slices in [0, 1]",
        "settings": settings or {},
        "results": results,
    }
    write_json(summary, out / "sweep.json")
    plot_sweep(results, out / "sweep.png", f"Bottleneck sweep ({conditioning} conditioning, {config.iterations} iterations each)")
    return summary
