"""Metrics for generated signal + static-parameter records (e.g. ABRs): reconstruction errors, kernel
MMD against the held-out split-half baseline, per-parameter calibration, peak errors, and PNG plots.

**MMD protocol.** Records are mapped to standardised features fitted on the *held-out* set: each static
parameter z-scored, and the signal projected on the held-out set's top ``k`` principal components,
each divided by its standard deviation (so every feature has unit variance on real data and no single
feature dominates the kernel). The held-out set is split at random into halves A and B of ``m``
records; ``m`` generated records are compared with each half. The statistic is the biased
(V-statistic, always >= 0) estimate of MMD^2 with a sum of Gaussian kernels at 0.5, 1 and 2 times the
median pairwise distance of the held-out features (Gretton et al., JMLR 2012). Because A and B come
from the same distribution, ``MMD^2(A, B)`` is the value a perfect generator would reach at this
sample size; the criterion is ``mean(MMD^2(G, A), MMD^2(G, B)) <= 2 * MMD^2(A, B)``. MONAI's
``MMDMetric`` (unbiased, linear kernel: the squared distance of feature means, can be negative) is
reported alongside, on the same features.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

__all__ = [
    "FeatureMap",
    "calibration",
    "gaussian_mmd2",
    "mmd_report",
    "peak_errors",
    "plot_calibration",
    "plot_signals",
    "reconstruction_errors",
]


class FeatureMap:
    """Standardised features of (signal (N, L), static (N, S)) records, fitted on a reference set.

    Args:
        signals, static: the reference (held-out) records.
        num_components: principal components of the signal kept (``k``).
    """

    def __init__(self, signals: np.ndarray, static: np.ndarray, num_components: int = 10) -> None:
        signals, static = np.asarray(signals, np.float64), np.asarray(static, np.float64)
        self.static_mean, self.static_std = static.mean(0), np.maximum(static.std(0), 1e-8)
        self.signal_mean = signals.mean(0)
        _, sv, vt = np.linalg.svd(signals - self.signal_mean, full_matrices=False)
        k = min(num_components, vt.shape[0])
        self.components = vt[:k]
        self.component_std = np.maximum(sv[:k] / np.sqrt(max(signals.shape[0] - 1, 1)), 1e-8)

    def __call__(self, signals: np.ndarray, static: np.ndarray) -> np.ndarray:
        """(N, S + k) features."""
        scores = (np.asarray(signals, np.float64) - self.signal_mean) @ self.components.T / self.component_std
        return np.concatenate([(np.asarray(static, np.float64) - self.static_mean) / self.static_std, scores], axis=1)


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T, 0.0)


def gaussian_mmd2(x: np.ndarray, y: np.ndarray, bandwidth: float, scales: Sequence[float] = (0.5, 1.0, 2.0)) -> float:
    """Biased MMD^2 of samples x (n, D) and y (m, D) with ``sum_s exp(-d^2 / (2 (s * bandwidth)^2))``."""
    dxx, dyy, dxy = _sq_dists(x, x), _sq_dists(y, y), _sq_dists(x, y)
    total = 0.0
    for s in scales:
        gamma = 1.0 / (2.0 * (s * bandwidth) ** 2)
        total += np.exp(-gamma * dxx).mean() + np.exp(-gamma * dyy).mean() - 2.0 * np.exp(-gamma * dxy).mean()
    return float(total)


def _median_distance(features: np.ndarray) -> float:
    d = np.sqrt(_sq_dists(features, features))
    return float(np.median(d[np.triu_indices_from(d, k=1)]))


def mmd_report(gen_signals: np.ndarray, gen_static: np.ndarray, heldout_signals: np.ndarray, heldout_static: np.ndarray,
               seed: int = 0, num_components: int = 10, repeats: int = 5) -> dict[str, float]:
    """The MMD protocol of the module docstring, averaged over ``repeats`` random half splits.

    Returns:
        ``{"mmd2_generated_vs_heldout", "mmd2_heldout_a_vs_b", "ratio", "passes_2x", "m", "bandwidth",
        "monai_linear_mmd_generated", "monai_linear_mmd_halves", "num_features"}``.
    """
    from monai.metrics import MMDMetric

    fmap = FeatureMap(heldout_signals, heldout_static, num_components)
    real, gen = fmap(heldout_signals, heldout_static), fmap(gen_signals, gen_static)
    m = min(real.shape[0] // 2, gen.shape[0])
    if m < 2:
        raise ValueError(f"mmd_report: needs at least 4 held-out and 2 generated records, got {real.shape[0]} and {gen.shape[0]}")
    bandwidth = _median_distance(real)
    rng = np.random.default_rng(seed)
    gen_vs, halves, lin_gen, lin_halves = [], [], [], []
    linear = MMDMetric()
    for _ in range(repeats):
        order = rng.permutation(real.shape[0])
        a, b = real[order[:m]], real[order[m : 2 * m]]
        g = gen[rng.permutation(gen.shape[0])[:m]]
        gen_vs.append(0.5 * (gaussian_mmd2(g, a, bandwidth) + gaussian_mmd2(g, b, bandwidth)))
        halves.append(gaussian_mmd2(a, b, bandwidth))
        t = lambda v: torch.as_tensor(v, dtype=torch.float64)  # noqa: E731
        lin_gen.append(float(linear(t(g), t(b))))
        lin_halves.append(float(linear(t(a), t(b))))
    result = {"mmd2_generated_vs_heldout": float(np.mean(gen_vs)), "mmd2_heldout_a_vs_b": float(np.mean(halves)),
              "m": int(m), "repeats": int(repeats), "bandwidth": bandwidth, "num_features": int(real.shape[1]),
              "monai_linear_mmd_generated": float(np.mean(lin_gen)), "monai_linear_mmd_halves": float(np.mean(lin_halves))}
    result["ratio"] = result["mmd2_generated_vs_heldout"] / max(result["mmd2_heldout_a_vs_b"], 1e-12)
    result["passes_2x"] = bool(result["ratio"] <= 2.0)
    return result


def reconstruction_errors(signals: np.ndarray, recon_signals: np.ndarray, static: np.ndarray | None = None,
                          recon_static: np.ndarray | None = None, static_names: Sequence[str] = ()) -> dict[str, float]:
    """Signal RMSE and MAE (units of the signal) and, if given, static MAE per parameter (``static_mae_<name>``)."""
    diff = np.asarray(recon_signals, np.float64) - np.asarray(signals, np.float64)
    out = {"signal_rmse": float(np.sqrt((diff**2).mean())), "signal_mae": float(np.abs(diff).mean()),
           "signal_rms": float(np.sqrt((np.asarray(signals, np.float64) ** 2).mean()))}
    if static is not None and recon_static is not None:
        err = np.abs(np.asarray(recon_static, np.float64) - np.asarray(static, np.float64)).mean(0)
        names = list(static_names) or [f"static{i}" for i in range(err.size)]
        out.update({f"static_mae_{n}": float(e) for n, e in zip(names, err)})
    return out


def peak_errors(pred: np.ndarray, pred_mask: np.ndarray, true: np.ndarray, true_mask: np.ndarray, names: Sequence[str]) -> dict[str, float]:
    """Per peak: mean absolute error over records where both have the peak (``mae_<name>``), the number of
    such records (``n_<name>``) and the presence agreement (``presence_acc_<name>``)."""
    out: dict[str, float] = {}
    for j, name in enumerate(names):
        both = pred_mask[:, j] & true_mask[:, j]
        out[f"mae_{name}"] = float(np.abs(pred[both, j] - true[both, j]).mean()) if both.any() else float("nan")
        out[f"n_{name}"] = int(both.sum())
        out[f"presence_acc_{name}"] = float((pred_mask[:, j] == true_mask[:, j]).mean())
    return out


def calibration(real: np.ndarray, generated: np.ndarray, names: Sequence[str]) -> dict[str, dict[str, float]]:
    """Per parameter (columns of (N, S) and (M, S)): real/generated mean, sd, 5/50/95% quantiles, the
    Wasserstein-1 distance divided by the real sd, and the two-sample Kolmogorov-Smirnov statistic."""
    from scipy.stats import ks_2samp, wasserstein_distance

    out = {}
    for j, name in enumerate(names):
        r, g = np.asarray(real[:, j], np.float64), np.asarray(generated[:, j], np.float64)
        r, g = r[np.isfinite(r)], g[np.isfinite(g)]
        if r.size == 0 or g.size == 0:
            continue
        sd = max(float(r.std()), 1e-12)
        out[name] = {"real_mean": float(r.mean()), "gen_mean": float(g.mean()), "real_sd": float(r.std()), "gen_sd": float(g.std()),
                     **{f"real_q{q}": float(np.quantile(r, q / 100)) for q in (5, 50, 95)},
                     **{f"gen_q{q}": float(np.quantile(g, q / 100)) for q in (5, 50, 95)},
                     "wasserstein_over_sd": float(wasserstein_distance(r, g) / sd), "ks": float(ks_2samp(r, g).statistic)}
    return out



def _save_png(fig: object, path: str | Path, title: str = "") -> Path:
    """Title, tight layout, save as PNG and close a matplotlib figure."""
    import matplotlib.pyplot as plt

    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path

def plot_calibration(real: np.ndarray, generated: np.ndarray, names: Sequence[str], path: str | Path, title: str = "") -> Path:
    """Histograms of each column, real vs generated, in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 3
    rows = int(np.ceil(len(names) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols, 2.4 * rows), dpi=100, squeeze=False)
    for j, name in enumerate(names):
        ax = axes[j // cols][j % cols]
        r, g = real[:, j][np.isfinite(real[:, j])], generated[:, j][np.isfinite(generated[:, j])]
        lo, hi = np.quantile(np.concatenate([r, g]), [0.005, 0.995]) if r.size + g.size else (0, 1)
        bins = np.linspace(lo, hi + 1e-6, 31)
        ax.hist(r, bins=bins, alpha=0.55, density=True, label="held-out")
        ax.hist(g, bins=bins, alpha=0.55, density=True, label="generated")
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
    for j in range(len(names), rows * cols):
        axes[j // cols][j % cols].axis("off")
    axes[0][0].legend(fontsize=7)
    return _save_png(fig, path, title)


def plot_signals(t_ms: np.ndarray, groups: dict[str, np.ndarray], path: str | Path, title: str = "", labels: Sequence[str] | None = None) -> Path:
    """One column per group (``{name: (n, L) signals}``), one row per signal; PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(g.shape[0] for g in groups.values())
    fig, axes = plt.subplots(n, len(groups), figsize=(3.6 * len(groups), 1.3 * n + 0.6), dpi=100, squeeze=False, sharex=True)
    for c, (name, sig) in enumerate(groups.items()):
        axes[0][c].set_title(name, fontsize=9)
        for r in range(n):
            ax = axes[r][c]
            if r < sig.shape[0]:
                ax.plot(t_ms, sig[r], lw=0.9)
                if labels is not None and c == 0:
                    ax.set_ylabel(labels[r], fontsize=6)
            ax.tick_params(labelsize=6)
    for ax in axes[-1]:
        ax.set_xlabel("ms", fontsize=8)
    return _save_png(fig, path, title)
