"""Reconstruction metrics and figure helpers shared by the lab experiments.

PSNR and SSIM are MONAI's (:class:`monai.metrics.PSNRMetric` with ``max_val=1``,
:class:`monai.metrics.SSIMMetric` with ``data_range=1``, Gaussian 11x11 window, 7x7 below 64 pixels),
on whole slices in [0, 1], averaged over slices.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from monai.metrics import PSNRMetric, SSIMMetric

from medgen_core.io import atomic_path

__all__ = ["batched", "psnr_ssim", "save_figure", "save_image_grid", "stamp_file", "write_json"]


def write_json(obj: object, path: str | Path) -> Path:
    """Write ``obj`` as indented JSON, atomically."""
    import json

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
    return path


def stamp_file(path: str | Path, provenance: Mapping[str, Any], task: str, parameters: Mapping[str, Any],
               input_paths: Sequence[str | Path] = ()) -> Path:
    """Write the provenance sidecar of a figure holding generated pixels (``provenance``: ``generator_name``,
    ``generator_version`` and optionally ``bundle_id``, ``weights_sha256``, ``seed``); returns the sidecar path."""
    from medgen_core.provenance import GenerationMetadata, write_sidecar

    meta = GenerationMetadata.create(generator_name=provenance["generator_name"], generator_version=provenance["generator_version"],
                                     bundle_id=provenance.get("bundle_id"), weights_sha256=provenance.get("weights_sha256"),
                                     seed=provenance.get("seed"), task=task, input_paths=list(input_paths), parameters=dict(parameters))
    return write_sidecar(path, meta)


def save_figure(fig: object, path: str | Path) -> Path:
    """Save a matplotlib figure as PNG atomically and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def psnr_ssim(pred: torch.Tensor, target: torch.Tensor) -> tuple[float, float]:
    """Mean PSNR (dB) and SSIM of ``pred`` vs ``target``, both ``(N, 1, H, W)`` in [0, 1] (``pred`` is clipped)."""
    pred = pred.detach().float().clamp(0, 1).cpu()
    target = target.detach().float().cpu()
    kernel = 11 if min(target.shape[-2:]) >= 64 else 7
    psnr = PSNRMetric(max_val=1.0, reduction="mean")(pred, target)
    ssim = SSIMMetric(spatial_dims=2, data_range=1.0, win_size=kernel, reduction="mean")(pred, target)
    return float(torch.as_tensor(psnr).mean()), float(torch.as_tensor(ssim).mean())


@torch.no_grad()
def batched(fn: Callable[..., torch.Tensor], *tensors: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """``fn`` applied to slices ``[i : i + batch_size]`` of every tensor, concatenated (no gradients)."""
    n = tensors[0].shape[0]
    return torch.cat([fn(*(t[i : i + batch_size] for t in tensors)) for i in range(0, n, batch_size)])


def save_image_grid(rows: Sequence[Sequence[np.ndarray]], path: str | Path, row_labels: Sequence[str] = (),
                    col_labels: Sequence[str] = (), title: str = "", cell: float = 1.4) -> Path:
    """A PNG grid of 2D images in [0, 1] (``rows[r][c]`` as ``(H, W)`` arrays, x = R-L across, anterior up)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nr, nc = len(rows), max(len(r) for r in rows)
    fig, axes = plt.subplots(nr, nc, figsize=(cell * nc + (1.0 if row_labels else 0), cell * nr + (0.4 if title else 0.1)), squeeze=False, dpi=100)
    for r, row in enumerate(rows):
        for c in range(nc):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
            if c < len(row):
                ax.imshow(np.asarray(row[c]).T[::-1], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            if r == 0 and c < len(col_labels):
                ax.set_title(col_labels[c], fontsize=7)
            if c == 0 and r < len(row_labels):
                ax.set_ylabel(row_labels[r], fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)
