"""Figures (PNG) so a person can see a result at a glance: preview montages of 2D images (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["save_montage"]


def save_montage(
    columns: Sequence[tuple[str, np.ndarray]],
    png_path: str | Path,
    title: str = "",
    vmax: float | None = None,
    zoom: tuple[slice, slice] | None = None,
) -> Path:
    """Save a row of 2D images (``(H, W)`` each, equal size) with titles, plus a zoomed row when ``zoom`` is given.

    Images are shown in radiological display (first axis left-right, transposed so anterior is up).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = 2 if zoom is not None else 1
    n = len(columns)
    vmax = vmax if vmax is not None else float(max(np.percentile(img, 99.5) for _, img in columns))
    fig, axes = plt.subplots(rows, n, figsize=(3.2 * n, 3.4 * rows), dpi=110, squeeze=False)
    for j, (name, img) in enumerate(columns):
        for i in range(rows):
            view = img if i == 0 else img[zoom]
            ax = axes[i][j]
            ax.imshow(np.rot90(view), cmap="gray", vmin=0, vmax=vmax, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(name, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png_path)
    plt.close(fig)
    return png_path
