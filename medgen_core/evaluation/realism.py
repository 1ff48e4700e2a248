"""Realism of generated 2D slices against real ones: a classifier two-sample test, the radially averaged
power spectrum, per-tissue intensity statistics and (paired tasks) PSNR / SSIM inside the brain.

Every function takes slice stacks ``(N, 1, H, W)`` (float tensors or arrays) and knows nothing of bundles or
files. :func:`realism_report` runs them all on two sets after scaling each set by its own 99.9th percentile
(:func:`scale_to_unit`), so the two sides' units (PNG 0..255, scanner units, [0, 1]) need not match.

* Two-sample test (:func:`classifier_two_sample_test`): a small CNN (MONAI ``Classifier``) trained from
  scratch to tell real from generated slices. The classes are balanced by subsampling the larger set, the
  images are split into ``folds`` parts (by ``groups`` when given, so near-duplicates stay together) and
  every image is classified once by a network that never saw it (cross-fitting: with 2 folds, train on
  one half and test on the other, then swap). Accuracy 0.5 = indistinguishable, 1.0 = always told apart;
  95 % Wilson interval and the exact one-sided binomial p-value against 0.5.
* Spectrum (:func:`radial_power_spectrum`, :func:`log_spectral_distance`): mean over images of
  ``|FFT(hann * (x - mean x))|^2``, averaged over rings of width ``1 / min(H, W)`` cycles/pixel. The
  log-spectral distance is the RMS over rings of ``10 log10(P_fake / P_real)`` (dB); the high-frequency
  excess (mean of that ratio above 0.25 cycles/pixel) is positive for noise / speckle, negative for blur.
* Tissue statistics (:func:`tissue_intensity_stats`): mean, std, median of each tissue class (label
  convention of :data:`medgen_core.data.samples.TISSUE_CLASSES`: 1 CSF, 2 grey matter, 3 white matter), the
  classes ordered by mean, and the CSF/GM and GM/WM ratios of the means; :func:`compare_tissue_stats`
  against the real target contrast.
* Paired (:func:`paired_fidelity`): PSNR / SSIM over a brain mask (:mod:`medgen_core.evaluation.metrics`).
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from medgen_core.data.samples import TISSUE_CLASSES
from medgen_core.evaluation.metrics import masked_psnr, masked_ssim

__all__ = [
    "HIGH_FREQUENCY_CUTOFF",
    "TISSUES",
    "TwoSampleResult",
    "classifier_two_sample_test",
    "compare_tissue_stats",
    "high_frequency_excess_db",
    "log_spectral_distance",
    "paired_fidelity",
    "plot_spectra",
    "radial_power_spectrum",
    "realism_markdown",
    "realism_report",
    "scale_to_unit",
    "tissue_intensity_stats",
]

#: Tissue label -> name used by the statistics (background 0 is ignored).
TISSUES: dict[int, str] = {i: name for i, name in enumerate(TISSUE_CLASSES) if i > 0}
#: Rings at or above this frequency (cycles/pixel; Nyquist is 0.5) count as "high frequency".
HIGH_FREQUENCY_CUTOFF = 0.25


def _stack(images: torch.Tensor | np.ndarray, what: str) -> torch.Tensor:
    """``(N, 1, H, W)`` or ``(N, H, W)`` -> float32 ``(N, 1, H, W)``; refuses other shapes and non-finite values."""
    x = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images).float()
    if x.dim() == 3:
        x = x[:, None]
    if x.dim() != 4 or x.shape[1] != 1:
        raise ValueError(f"{what}: expected slices shaped (N, 1, H, W) or (N, H, W), got {tuple(x.shape)}.")
    if not torch.isfinite(x).all():
        raise ValueError(f"{what}: contains NaN or Inf values; expected finite intensities.")
    return x


def _unit(x: torch.Tensor, percentile: float) -> float:
    scale = float(np.percentile(x.numpy(), percentile))
    if not scale > 0:
        raise ValueError(f"scale_to_unit: the {percentile}th percentile is {scale}; expected images with positive intensities.")
    return scale


def scale_to_unit(images: torch.Tensor | np.ndarray, percentile: float = 99.9, reference: torch.Tensor | np.ndarray | None = None) -> torch.Tensor:
    """The set divided by the ``percentile`` of ``reference`` (default: itself) over all pixels, not clipped:
    ``(N, 1, H, W)`` -> same shape.

    One factor for the whole set, so contrast between slices is kept and only the unit is removed.
    """
    x = _stack(images, "scale_to_unit")
    return x / _unit(x if reference is None else _stack(reference, "scale_to_unit (reference)"), percentile)


# --------------------------------------------------------------------------------------------- two-sample test
@dataclass(frozen=True)
class TwoSampleResult:
    """Outcome of :func:`classifier_two_sample_test` (``accuracy`` over ``n_test`` held-out predictions)."""

    accuracy: float
    ci_low: float
    ci_high: float
    p_value: float
    auc: float
    correct: int
    n_test: int
    n_per_class: int
    folds: int
    steps: int
    seed: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _folds(groups: np.ndarray, folds: int, rng: np.random.Generator) -> np.ndarray:
    """Fold index of each image: the distinct ``groups`` in random order, dealt round-robin."""
    uniq = rng.permutation(np.unique(groups))
    if len(uniq) < folds:
        raise ValueError(f"classifier_two_sample_test: {len(uniq)} distinct groups cannot fill {folds} folds.")
    fold_of = {u: i % folds for i, u in enumerate(uniq)}
    return np.array([fold_of[v] for v in groups])


def _classifier(shape: tuple[int, int]) -> nn.Module:
    """MONAI ``Classifier``: 4 stride-2 conv units (8-16-32-64 channels, batch norm, PReLU), linear -> 1 logit."""
    from monai.networks.nets import Classifier

    return Classifier(in_shape=(1, *shape), classes=1, channels=(8, 16, 32, 64), strides=(2, 2, 2, 2), num_res_units=0, norm="batch")


def _augment(x: torch.Tensor, g: torch.Generator, max_shift: int) -> torch.Tensor:
    """Random flips of both axes and circular shifts up to ``max_shift`` pixels, per image: ``(B, 1, H, W)``."""
    out = []
    for img in x:
        if torch.rand(1, generator=g) < 0.5:
            img = img.flip(-1)
        if torch.rand(1, generator=g) < 0.5:
            img = img.flip(-2)
        if max_shift > 0:
            dy, dx = (int(v) for v in torch.randint(-max_shift, max_shift + 1, (2,), generator=g))
            img = torch.roll(img, (dy, dx), dims=(-2, -1))
        out.append(img)
    return torch.stack(out)


def classifier_two_sample_test(
    real: torch.Tensor | np.ndarray,
    fake: torch.Tensor | np.ndarray,
    *,
    steps: int = 300,
    batch_size: int = 32,
    lr: float = 1e-3,
    folds: int = 2,
    seed: int = 0,
    groups_real: Sequence[int] | None = None,
    groups_fake: Sequence[int] | None = None,
    max_shift: int = 4,
    confidence: float = 0.95,
) -> TwoSampleResult:
    """Classifier two-sample test (C2ST) of ``real (N, 1, H, W)`` against ``fake (M, 1, H, W)``.

    ``min(N, M)`` images of each set are kept (random by ``seed``). For each of the ``folds`` folds a fresh
    classifier (:func:`_classifier`) is trained for ``steps`` Adam steps on the other folds (balanced
    batches of ``batch_size``, random flips and shifts), then classifies the held-out fold. ``groups_real``
    and ``groups_fake`` (one integer per image, both given, one namespace) keep every image of a group, real
    or fake, in one fold: a pair, or a block of neighbouring slices (otherwise a held-out real slice whose
    neighbours were trained on as fakes is called fake, and accuracy drops below 0.5). Deterministic for a given ``seed`` (the global torch RNG is left untouched).

    Returns:
        accuracy over all ``n_test = 2 min(N, M)`` predictions, its Wilson interval at ``confidence``, the
        exact binomial p-value of "accuracy > 0.5", and the AUC of the held-out scores.
    """
    from scipy.stats import binomtest, mannwhitneyu

    real, fake = _stack(real, "two-sample test (real)"), _stack(fake, "two-sample test (fake)")
    if real.shape[2:] != fake.shape[2:]:
        raise ValueError(f"two-sample test: real slices are {tuple(real.shape[2:])}, fake {tuple(fake.shape[2:])}; expected one size.")
    n = min(len(real), len(fake))
    if n < 2 * folds:
        raise ValueError(f"two-sample test: {n} images per class cannot fill {folds} folds with 2 each; give more images.")
    rng = np.random.default_rng(seed)
    keep_r, keep_f = np.sort(rng.permutation(len(real))[:n]), np.sort(rng.permutation(len(fake))[:n])
    x = torch.cat([real[keep_r], fake[keep_f]])
    y = torch.cat([torch.zeros(n), torch.ones(n)])
    if groups_real is None or groups_fake is None:  # every image its own group, real and fake apart
        fold = np.concatenate([_folds(np.arange(n), folds, rng), _folds(np.arange(n), folds, rng)])
    else:  # one namespace: a group's real and fake images share a fold
        g_all = np.concatenate([np.asarray(groups_real)[keep_r], np.asarray(groups_fake)[keep_f]])
        fold = _folds(g_all, folds, rng)
    scores = torch.empty(2 * n)
    for k in range(folds):
        train, test = np.nonzero(fold != k)[0], np.nonzero(fold == k)[0]
        tr_r, tr_f = train[train < n], train[train >= n]
        if len(tr_r) == 0 or len(tr_f) == 0 or len(test) == 0:
            raise ValueError("two-sample test: a fold is empty (too few groups); give more images or fewer folds.")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed * 1000 + k)
            net = _classifier(tuple(x.shape[2:]))
        g = torch.Generator().manual_seed(seed * 1000 + k)
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        loss_fn = nn.BCEWithLogitsLoss()
        half = max(batch_size // 2, 1)
        net.train()
        for _ in range(steps):
            idx = torch.cat([torch.from_numpy(tr_r)[torch.randint(len(tr_r), (half,), generator=g)],
                             torch.from_numpy(tr_f)[torch.randint(len(tr_f), (half,), generator=g)]])
            loss = loss_fn(net(_augment(x[idx], g, max_shift)).view(-1), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            scores[test] = torch.cat([net(x[test[i : i + 64]]).view(-1) for i in range(0, len(test), 64)])
    pred = (scores > 0).float()
    correct = int((pred == y).sum())
    test = binomtest(correct, 2 * n, 0.5, alternative="greater")
    ci = binomtest(correct, 2 * n).proportion_ci(confidence_level=confidence, method="wilson")
    s = scores.numpy()
    auc = float(mannwhitneyu(s[n:], s[:n]).statistic / (n * n))
    return TwoSampleResult(accuracy=correct / (2 * n), ci_low=float(ci.low), ci_high=float(ci.high), p_value=float(test.pvalue), auc=auc,
                           correct=correct, n_test=2 * n, n_per_class=n, folds=folds, steps=steps, seed=seed)


# --------------------------------------------------------------------------------------------- spectrum
def radial_power_spectrum(images: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Radially averaged power spectrum of a slice stack ``(N, 1, H, W)``, averaged over the images.

    Each image has its mean removed and is multiplied by a 2D Hann window; its power
    ``|FFT|^2 / sum(window^2)`` is averaged over rings ``k = 1 .. min(H, W) // 2`` of width ``1 / min(H, W)``.

    Returns:
        ``(freqs (K,), power (K,))``: ring centres in cycles/pixel (up to 0.5) and the mean power per ring.
    """
    x = _stack(images, "radial_power_spectrum")[:, 0].double()
    h, w = x.shape[-2:]
    window = torch.outer(torch.hann_window(h, periodic=False, dtype=torch.float64), torch.hann_window(w, periodic=False, dtype=torch.float64))
    x = (x - x.mean(dim=(-2, -1), keepdim=True)) * window
    power = (torch.fft.fft2(x).abs() ** 2).mean(dim=0) / float((window**2).sum())
    side = min(h, w)
    fy, fx = torch.fft.fftfreq(h, dtype=torch.float64), torch.fft.fftfreq(w, dtype=torch.float64)
    ring = torch.round(torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2) * side).long()
    k = side // 2
    inside = (ring >= 1) & (ring <= k)
    sums = torch.zeros(k + 1, dtype=torch.float64).index_add_(0, ring[inside], power[inside])
    counts = torch.zeros(k + 1, dtype=torch.float64).index_add_(0, ring[inside], torch.ones_like(power[inside]))
    return (np.arange(1, k + 1) / side), (sums[1:] / counts[1:].clamp_min(1)).numpy()


def _db_ratio(p_ref: np.ndarray, p: np.ndarray) -> np.ndarray:
    floor = 1e-12 * max(float(np.max(p_ref)), float(np.max(p)), 1e-300)
    return 10.0 * np.log10(np.maximum(p, floor) / np.maximum(p_ref, floor))


def log_spectral_distance(p_ref: np.ndarray, p: np.ndarray) -> float:
    """RMS over rings of ``10 log10(p / p_ref)`` in dB (0 = same spectrum); both ``(K,)`` from :func:`radial_power_spectrum`."""
    if np.shape(p_ref) != np.shape(p):
        raise ValueError(f"log_spectral_distance: spectra have {np.shape(p_ref)} and {np.shape(p)} rings; expected images of one size.")
    return float(np.sqrt(np.mean(_db_ratio(p_ref, p) ** 2)))


def high_frequency_excess_db(freqs: np.ndarray, p_ref: np.ndarray, p: np.ndarray, cutoff: float = HIGH_FREQUENCY_CUTOFF) -> float:
    """Mean of ``10 log10(p / p_ref)`` over rings at or above ``cutoff`` cycles/pixel: > 0 noise/speckle, < 0 blur."""
    sel = np.asarray(freqs) >= cutoff
    return float(np.mean(_db_ratio(np.asarray(p_ref)[sel], np.asarray(p)[sel])))


def plot_spectra(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: str | Path, title: str = "") -> Path:
    """Log-log plot of named spectra ``{name: (freqs, power)}`` written to ``path`` (PNG; temp file, then rename)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, ax = plt.subplots(figsize=(6.0, 4.2), dpi=100)
    for name, (f, p) in curves.items():
        ax.loglog(f, p, label=name, lw=1.6)
    ax.axvline(HIGH_FREQUENCY_CUTOFF, color="0.7", ls=":", lw=1)
    ax.set_xlabel("spatial frequency (cycles / pixel)")
    ax.set_ylabel("radially averaged power")
    ax.set_title(title or "power spectrum (each set / its 99.9th percentile)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, format="png")
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


# --------------------------------------------------------------------------------------------- tissue statistics
def tissue_intensity_stats(images: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray,
                           classes: Mapping[int, str] = TISSUES) -> dict[str, Any]:
    """Intensity statistics per tissue class of ``images (N, 1, H, W)`` under integer ``labels (N, 1, H, W)``.

    Returns:
        ``{"classes": {name: {"n_pixels", "mean", "std", "median"}}, "ordering": names by descending mean,
        "ratios": {"csf/grey_matter", "grey_matter/white_matter"}}`` (ratios of the class means; a class
        with no pixels has ``None`` statistics and is left out of the ordering).
    """
    x = _stack(images, "tissue_intensity_stats").double()
    lab = torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor) else labels)
    lab = lab[:, None] if lab.dim() == 3 else lab
    if tuple(lab.shape) != tuple(x.shape):
        raise ValueError(f"tissue_intensity_stats: labels are {tuple(lab.shape)}, images {tuple(x.shape)}; expected one label per pixel.")
    stats: dict[str, dict[str, float | int | None]] = {}
    for value, name in classes.items():
        v = x[lab == value]
        stats[name] = ({"n_pixels": int(v.numel()), "mean": float(v.mean()), "std": float(v.std(unbiased=False)), "median": float(v.median())}
                       if v.numel() else {"n_pixels": 0, "mean": None, "std": None, "median": None})
    present = [n for n in classes.values() if stats[n]["mean"] is not None]
    ordering = sorted(present, key=lambda n: -float(stats[n]["mean"]))  # type: ignore[arg-type]
    names = list(classes.values())

    def ratio(a: str, b: str) -> float | None:
        ma, mb = stats.get(a, {}).get("mean"), stats.get(b, {}).get("mean")
        return None if ma is None or mb is None or mb == 0 else float(ma) / float(mb)

    ratios = {f"{a}/{b}": ratio(a, b) for a, b in zip(names[:-1], names[1:])}
    return {"classes": stats, "ordering": ordering, "ratios": ratios}


def compare_tissue_stats(fake: Mapping[str, Any], real: Mapping[str, Any]) -> dict[str, Any]:
    """Fake against real tissue statistics (both from :func:`tissue_intensity_stats`): does the ordering of
    the class means match, and the relative error ``fake / real - 1`` of each ratio."""
    err = {}
    for key, r in real["ratios"].items():
        f = fake["ratios"].get(key)
        err[key] = None if f is None or r is None or r == 0 else float(f) / float(r) - 1.0
    return {"ordering_matches": list(fake["ordering"]) == list(real["ordering"]), "ratio_relative_error": err}


# --------------------------------------------------------------------------------------------- paired
def paired_fidelity(fake: torch.Tensor | np.ndarray, truth: torch.Tensor | np.ndarray, mask: torch.Tensor | np.ndarray | None = None,
                    data_range: float = 1.0) -> dict[str, float | int]:
    """PSNR (dB) and SSIM (Gaussian window 11) of ``fake`` against ``truth`` (both ``(N, 1, H, W)``) over the
    pixels where ``mask (N, 1, H, W)`` is true (all pixels when None)."""
    f, t = _stack(fake, "paired_fidelity (fake)"), _stack(truth, "paired_fidelity (truth)")
    if f.shape != t.shape:
        raise ValueError(f"paired_fidelity: fake {tuple(f.shape)} and truth {tuple(t.shape)} differ; expected one fake per truth slice.")
    m = None if mask is None else torch.as_tensor(np.asarray(mask)).bool().reshape(f.shape)
    if m is not None and not m.any():
        raise ValueError("paired_fidelity: the mask is empty.")
    return {"psnr": masked_psnr(f, t, m, data_range=data_range), "ssim": masked_ssim(f, t, m, data_range=data_range),
            "n_pixels": int(m.sum()) if m is not None else int(f.numel())}


# --------------------------------------------------------------------------------------------- report
def realism_report(
    real: torch.Tensor | np.ndarray,
    fake: torch.Tensor | np.ndarray,
    *,
    real_labels: torch.Tensor | np.ndarray | None = None,
    fake_labels: torch.Tensor | np.ndarray | None = None,
    paired: bool = False,
    brain_mask: torch.Tensor | np.ndarray | None = None,
    groups_real: Sequence[int] | None = None,
    groups_fake: Sequence[int] | None = None,
    steps: int = 300,
    seed: int = 0,
) -> dict[str, Any]:
    """All metrics of ``fake (M, 1, H, W)`` against ``real (N, 1, H, W)``, each set scaled by :func:`scale_to_unit`
    (``paired``: both by the real set's factor, since a prediction is in its truth's units).

    Args:
        real_labels, fake_labels: tissue labels ``(N|M, 1, H, W)`` (1 CSF, 2 GM, 3 WM) for the tissue statistics.
        paired: ``fake[i]`` is the prediction of ``real[i]`` (N == M): adds PSNR / SSIM inside ``brain_mask``
            (default: ``fake_labels > 0``, else ``real_labels > 0``, else real pixels above 5 % of its scale);
            pairs share a fold in the two-sample test.
        groups_real, groups_fake: fold groups for the two-sample test (see :func:`classifier_two_sample_test`).

    Returns:
        a JSON-ready dict: ``n_real``, ``n_fake``, ``image_size``, ``two_sample``, ``spectrum`` (freqs, both
        spectra, ``log_spectral_distance_db``, ``high_frequency_excess_db``, the real-halves floor),
        ``tissue`` (when labels are given), ``paired`` (when ``paired``).
    """
    r = scale_to_unit(real)
    f = scale_to_unit(fake, reference=real if paired else None)  # paired: a prediction is in its truth's units
    if r.shape[2:] != f.shape[2:]:
        raise ValueError(f"realism_report: real slices are {tuple(r.shape[2:])}, fake {tuple(f.shape[2:])}; expected one size.")
    if paired:
        if len(r) != len(f):
            raise ValueError(f"realism_report: paired sets need one fake per real slice, got {len(r)} real and {len(f)} fake.")
        groups_real = groups_fake = list(range(len(r))) if groups_real is None else groups_real
    c2st = classifier_two_sample_test(r, f, steps=steps, seed=seed, groups_real=groups_real, groups_fake=groups_fake)
    freqs, p_real = radial_power_spectrum(r)
    _, p_fake = radial_power_spectrum(f)
    floor = None
    if len(r) >= 2:
        _, p_even = radial_power_spectrum(r[0::2])
        _, p_odd = radial_power_spectrum(r[1::2])
        floor = log_spectral_distance(p_even, p_odd)
    report: dict[str, Any] = {
        "n_real": len(r), "n_fake": len(f), "image_size": list(r.shape[2:]),
        "normalisation": ("both sets divided by the real (truth) set's 99.9th percentile (paired)" if paired else
                          "each set divided by its own 99.9th percentile over all pixels (not clipped)"),
        "two_sample": c2st.to_dict(),
        "spectrum": {"freqs": freqs.tolist(), "real": p_real.tolist(), "fake": p_fake.tolist(),
                     "log_spectral_distance_db": log_spectral_distance(p_real, p_fake),
                     "high_frequency_excess_db": high_frequency_excess_db(freqs, p_real, p_fake),
                     "real_halves_log_spectral_distance_db": floor},
    }
    if real_labels is not None or fake_labels is not None:
        tissue: dict[str, Any] = {}
        if real_labels is not None:
            tissue["real"] = tissue_intensity_stats(r, real_labels)
        if fake_labels is not None:
            tissue["fake"] = tissue_intensity_stats(f, fake_labels)
        if "real" in tissue and "fake" in tissue:
            tissue["comparison"] = compare_tissue_stats(tissue["fake"], tissue["real"])
        report["tissue"] = tissue
    if paired:
        if brain_mask is None:
            labels = fake_labels if fake_labels is not None else real_labels
            brain_mask = (torch.as_tensor(np.asarray(labels)).reshape(r.shape) > 0) if labels is not None else (r > 0.05)
        report["paired"] = {**paired_fidelity(f, r, brain_mask), "mask": "brain" if brain_mask is not None else "all"}
    return report


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return "n/a" if not math.isfinite(v) else f"{v:.{digits}f}"
    return str(v)


def realism_markdown(report: Mapping[str, Any], real_name: str = "real", fake_name: str = "fake") -> str:
    """A markdown table (metric | value | reading) of a :func:`realism_report`."""
    t, s = report["two_sample"], report["spectrum"]
    rows = [
        ("images (real / fake)", f"{report['n_real']} / {report['n_fake']} ({report['image_size'][0]}x{report['image_size'][1]})", ""),
        ("two-sample accuracy (95 % CI)", f"{t['accuracy']:.3f} [{t['ci_low']:.3f}, {t['ci_high']:.3f}]",
         f"0.5 = indistinguishable; {t['n_test']} held-out predictions, {t['folds']} folds, {t['steps']} steps, p = {t['p_value']:.2g}"),
        ("two-sample AUC", _fmt(t["auc"]), "0.5 = indistinguishable"),
        ("log-spectral distance (dB)", _fmt(s["log_spectral_distance_db"], 2),
         f"real halves: {_fmt(s['real_halves_log_spectral_distance_db'], 2)} dB"),
        ("high-frequency excess (dB, >= 0.25 cyc/px)", _fmt(s["high_frequency_excess_db"], 2), "> 0 noise / speckle, < 0 blur"),
    ]
    tissue = report.get("tissue", {})
    for side, name in (("real", real_name), ("fake", fake_name)):
        if side in tissue:
            st = tissue[side]
            means = ", ".join(f"{k} {_fmt(v['mean'])} +- {_fmt(v['std'])}" for k, v in st["classes"].items())
            rows.append((f"tissue means +- std ({name})", means, "ordering: " + " > ".join(st["ordering"])))
            rows.append((f"CSF/GM, GM/WM ({name})", ", ".join(_fmt(v) for v in st["ratios"].values()), ""))
    if "comparison" in tissue:
        c = tissue["comparison"]
        rows.append(("tissue ordering matches real", str(c["ordering_matches"]),
                     "ratio error " + ", ".join(f"{k} {_fmt(v * 100 if v is not None else None, 1)} %" for k, v in c["ratio_relative_error"].items())))
    if "paired" in report:
        p = report["paired"]
        rows.append(("PSNR / SSIM inside the brain", f"{p['psnr']:.2f} dB / {p['ssim']:.4f}", f"{p['n_pixels']} pixels"))
    lines = [f"Realism of {fake_name} against {real_name}", "", "| metric | value | reading |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines) + "\n"
