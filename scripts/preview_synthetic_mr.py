"""Montage of random synthetic SR draws (HR target, LR input, parameters) from the MNI tissue maps.

Half the draws are in-plane (x2 / x4: Gaussian, block, k-space), half through-plane (one axis, factors
1.5-5, box / Gaussian slice profiles with gaps or overlaps). The LR image is shown on the HR grid
(nearest neighbour) so that the two panels line up.

    python scripts/preview_synthetic_mr.py --out monai_bundles/brain_mri_super_resolution/docs/synthetic_draws.png
"""

from __future__ import annotations

import argparse
import io
import os
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from medgen_core.data.synthetic_sr import SyntheticSRPairs, compatible_patch_size  # noqa: E402
from medgen_core.io import atomic_path  # noqa: E402

THROUGH_FACTORS = (1.5, 2, 2.5, 3, 4, 5)


def _on_hr_grid(lr: torch.Tensor, hr_shape: tuple[int, int], params: dict) -> np.ndarray:
    """Nearest-neighbour copy of ``lr`` (H, W) onto the HR grid: HR voxel i shows LR voxel floor(i / factor)."""
    img = lr.numpy()
    for spec in params["degradation"]:
        idx = np.minimum((np.arange(hr_shape[spec["axis"]]) / spec["factor"]).astype(int), img.shape[spec["axis"]] - 1)
        img = np.take(img, idx, axis=spec["axis"])
    return img


def _caption(i: int, p: dict) -> str:
    deg = p["degradation"]
    factors = "x".join(f"{d['factor']:g}" for d in deg)
    axes = "both" if len(deg) == 2 else f"axis {deg[0]['axis']}"
    kind = deg[0]["kind"] + (f" r{deg[0]['thickness_ratio']:.2f}" if deg[0]["thickness_ratio"] else "")
    contrast = p["contrast"]["mode"]
    if contrast == "gmm":
        m = p["contrast"]["means"]
        contrast = "GMM " + ("WM>GM" if m[3] > m[2] else "GM>WM")
    bw = p["hr_bandwidth"]
    noise = p["noise"]
    return (f"#{i} {p['source']['plane']} {contrast}\n{factors} {axes} {kind}\n"
            f"bw {'full' if bw is None else '/'.join(f'{f:.2f}' for f in bw)}  g {p['gamma']:.2f}  "
            f"{noise['kind'][:3]} {noise['std']:.3f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("synthetic_draws.png"))
    parser.add_argument("--n", type=int, default=24, help="number of draws (half in-plane, half through-plane)")
    parser.add_argument("--patch", type=int, default=120, help="HR patch side (through-plane draws use a compatible size)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    import matplotlib.pyplot as plt

    half = args.n // 2
    inplane = SyntheticSRPairs((args.patch, args.patch), "inplane", (2, 4), seed=args.seed)
    size = compatible_patch_size(THROUGH_FACTORS, args.patch)
    through = SyntheticSRPairs((size, size), "through", THROUGH_FACTORS, seed=args.seed + 1)
    draws = [inplane.sample() for _ in range(half)] + [through.sample() for _ in range(args.n - half)]
    per_row = 4
    rows = -(-len(draws) // per_row)
    fig, axes = plt.subplots(rows, 2 * per_row, figsize=(2 * per_row * 1.45, rows * 1.95), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, draw in enumerate(draws):
        hr = draw["hr"][0]
        lr = _on_hr_grid(draw["lr"][0], tuple(hr.shape), draw["params"])
        r, c = divmod(i, per_row)
        for j, (img, title) in enumerate(((hr.numpy(), "hr"), (lr, "lr"))):
            ax = axes[r, 2 * c + j]
            ax.imshow(img.T, cmap="gray", vmin=0.0, vmax=1.0, origin="lower", interpolation="nearest")
            ax.set_title(title, fontsize=6, pad=1)
        axes[r, 2 * c].text(0.0, -0.04, _caption(i, draw["params"]), transform=axes[r, 2 * c].transAxes, fontsize=5, va="top")
    fig.subplots_adjust(left=0.01, right=0.99, top=0.98, bottom=0.06, wspace=0.05, hspace=0.6)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=80, format="png")
    plt.close(fig)
    buffer.seek(0)
    with atomic_path(args.out) as tmp:  # everything is grey: an 8-bit grey PNG is a third of the RGBA size
        Image.open(buffer).convert("L").save(tmp, format="PNG", optimize=True)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KB, {len(draws)} draws)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
