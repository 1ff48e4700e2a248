#!/usr/bin/env python
"""Evaluate the shipped abr_joint_cvae weights on held-out simulated ABRs; write docs figures and results.json.

Held-out set: ``simulate_abr_dataset(2000, seed=2)`` (training used seeds 0 and 1). Measures

* MMD^2 of joint samples vs the held-out set against the split-half baseline (protocol in
  :mod:`medgen_core.evaluation.signal_metrics`), for the shipped sampler (fitted latent mixture + observation
  noise) and two ablations (``N(0, I)`` prior; decoder means without observation noise);
* per-parameter calibration of joint samples (static parameters and peaks);
* reconstruction errors (posterior mean) of both modes, and peak errors;
* peak-latency error against the simulator: generated peaks vs :func:`expected_peaks` of their static
  parameters (joint: the generated ones, legacy: the given ones), next to the same error for real records
  (their individual jitter is the floor);
* legacy: wave I/III/V latency against stimulus intensity for given parameters vs the simulator.

    OMP_NUM_THREADS=1 python scripts/evaluate_abr_cvae.py      # -> monai_bundles/abr_joint_cvae/docs/*.png, results.json
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from medgen_core.bundles.cvae import load_cvae
from medgen_core.data.abr_dataset import PEAK_NAMES, STATIC_NAMES
from medgen_core.data.abr_simulator import expected_peaks, simulate_abr_dataset, time_axis_ms
from medgen_core.evaluation.signal_metrics import (calibration, mmd_report, peak_errors, plot_calibration, plot_signals,
                                                   reconstruction_errors)
from medgen_core.inference.cvae_sampling import sample_joint, sample_legacy, static_grid
from medgen_core.training.cvae import normalized_tensors

BUNDLE = Path(__file__).resolve().parents[1] / "monai_bundles" / "abr_joint_cvae"
DOCS = BUNDLE / "docs"
N_HELDOUT = 2000


def _reconstruct(net, data) -> dict:
    with torch.no_grad():
        t = normalized_tensors(net, data)
        mu, _ = net.encode(t["signal"], t["static"])
        sig, stat, peaks, logits = net.decode(mu, t["static"])
        signal, static, peak_values = (v.numpy() for v in net.denormalize(sig, stat, peaks))
    present = torch.sigmoid(logits).numpy() >= 0.5
    out = reconstruction_errors(data.signals, signal, data.static, static, STATIC_NAMES)
    out["peaks"] = peak_errors(peak_values, present, data.peaks, data.peak_mask, PEAK_NAMES)
    return out


def _latency_error_vs_simulator(peaks, mask, static) -> dict:
    want, want_mask = expected_peaks(static)
    return peak_errors(peaks, mask, want, want_mask, PEAK_NAMES[:3])


def _plot_mmd(rows: list[tuple[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.5, 2.6), dpi=100)
    names, values = zip(*rows)
    ax.barh(names, values, color=["tab:green"] + ["tab:blue"] * (len(rows) - 1))
    ax.axvline(2 * rows[0][1], color="tab:red", ls="--", label="2 x held-out A vs B")
    ax.set_xlabel("MMD^2 (Gaussian kernels, standardised features)")
    ax.legend(fontsize=8)
    ax.tick_params(labelsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _plot_latency_intensity(curves: dict, intensities: np.ndarray, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 3.2), dpi=100, squeeze=False)
    for ax, (title, c) in zip(axes[0], curves.items()):
        for j, (wave, colour) in enumerate(zip(("I", "III", "V"), ("tab:blue", "tab:orange", "tab:green"))):
            ax.plot(intensities, c["simulator"][:, j], color=colour, ls="--", lw=1)
            ax.errorbar(intensities, c["mean"][:, j], yerr=c["sd"][:, j], color=colour, marker="o", ms=3, lw=1, capsize=2, label=f"wave {wave}")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("click intensity (dB nHL)")
        ax.set_ylabel("latency (ms)")
        ax.legend(fontsize=7)
    fig.suptitle("legacy sampling: generated (dots, mean +- sd of 40) vs simulator (dashed)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _json_safe(value):
    """Plain JSON: numpy numbers as Python numbers, NaN (absent peaks) as null."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if not np.isfinite(value) else float(value)
    return value


def main() -> int:
    torch.set_num_threads(1)
    t0 = time.time()
    heldout = simulate_abr_dataset(N_HELDOUT, seed=2)
    joint, prov_joint = load_cvae(str(BUNDLE), None, "joint")
    legacy, prov_legacy = load_cvae(str(BUNDLE), None, "legacy")
    m = N_HELDOUT // 2
    results: dict = {"heldout": {"n": N_HELDOUT, "seed": 2}, "weights_sha256": {"joint": prov_joint["weights_sha256"], "legacy": prov_legacy["weights_sha256"]}}

    gen = sample_joint(joint, m, seed=0)
    ablations = {"shipped sampler: latent mixture + noise": gen,
                 "N(0, I) prior + noise": sample_joint(joint, m, seed=0, fitted_prior=False),
                 "latent mixture, decoder means": sample_joint(joint, m, seed=0, observation_noise=False)}
    results["mmd"] = {name: mmd_report(d.signals, d.static, heldout.signals, heldout.static, seed=0) for name, d in ablations.items()}
    first = next(iter(results["mmd"].values()))
    seeds = {}
    for seed in range(1, 5):  # the shipped sampler again, other sampling and split seeds
        d = sample_joint(joint, m, seed=seed)
        seeds[str(seed)] = mmd_report(d.signals, d.static, heldout.signals, heldout.static, seed=seed)["ratio"]
    results["mmd_ratio_other_seeds"] = seeds
    rows = [("held-out half A vs half B", first["mmd2_heldout_a_vs_b"])] + [(n, r["mmd2_generated_vs_heldout"]) for n, r in results["mmd"].items()]
    _plot_mmd(rows, DOCS / "mmd.png")

    results["calibration_static"] = calibration(heldout.static, gen.static, STATIC_NAMES)
    results["calibration_peaks"] = calibration(heldout.peaks, gen.peaks, PEAK_NAMES)
    results["peak_presence_rate"] = {"heldout": dict(zip(PEAK_NAMES[:3], heldout.peak_mask[:, :3].mean(0).round(4).tolist())),
                                     "generated": dict(zip(PEAK_NAMES[:3], gen.peak_mask[:, :3].mean(0).round(4).tolist()))}
    plot_calibration(heldout.static, gen.static, STATIC_NAMES, DOCS / "joint_calibration_static.png", "static parameters: held-out vs joint samples")
    plot_calibration(heldout.peaks, gen.peaks, PEAK_NAMES, DOCS / "joint_calibration_peaks.png", "peaks (present ones): held-out vs joint samples")
    order, gen_order = np.argsort(heldout.static[:6, 2]), np.argsort(gen.static[:6, 2])
    plot_signals(time_axis_ms(), {"held-out (simulated)": heldout.signals[:6][order], "joint samples": gen.signals[:6][gen_order]},
                 DOCS / "joint_signals.png", "ABR waveforms (uV), sorted by intensity (row label: held-out | generated)",
                 labels=[f"{int(a[2])} | {int(b[2])} dB" for a, b in zip(heldout.static[:6][order], gen.static[:6][gen_order])])

    results["reconstruction"] = {"joint": _reconstruct(joint, heldout), "legacy": _reconstruct(legacy, heldout)}
    leg = sample_legacy(legacy, heldout.static[:m], n=1, seed=0)
    results["peak_latency_error_vs_simulator_ms"] = {
        "real_heldout (individual jitter, the floor)": _latency_error_vs_simulator(heldout.peaks, heldout.peak_mask, heldout.static),
        "joint samples (vs their generated static parameters)": _latency_error_vs_simulator(gen.peaks, gen.peak_mask, gen.static),
        "legacy samples (vs the given static parameters)": _latency_error_vs_simulator(leg.peaks, leg.peak_mask, leg.static),
    }
    intensities = np.arange(20.0, 91.0, 10.0)
    curves, latency_table = {}, {}
    for title, base in (("normal hearing (threshold 5 dB HL), 30 y, female, 11.1/s", [30.0, 0.0, 0.0, 11.1, 5.0, 2000.0]),
                        ("cochlear loss (threshold 40 dB HL), 60 y, male, 21.1/s", [60.0, 1.0, 0.0, 21.1, 40.0, 2000.0])):
        grid = static_grid(np.array(base), 2, intensities)
        s = sample_legacy(legacy, grid, n=40, seed=1)
        lat = s.peaks[:, :3].reshape(len(intensities), 40, 3)
        with np.errstate(all="ignore"):
            curves[title] = {"mean": np.nanmean(lat, 1), "sd": np.nanstd(lat, 1), "simulator": expected_peaks(grid)[0][:, :3]}
        latency_table[title] = {"intensity_db_nhl": intensities.tolist(),
                                "generated_wave_V_ms": np.round(curves[title]["mean"][:, 2], 3).tolist(),
                                "simulator_wave_V_ms": np.round(curves[title]["simulator"][:, 2], 3).tolist(),
                                "generated_presence_I_III_V": np.round(s.peak_mask[:, :3].reshape(len(intensities), 40, 3).mean(1), 3).tolist()}
    results["legacy_latency_intensity"] = latency_table
    _plot_latency_intensity(curves, intensities, DOCS / "legacy_latency_intensity.png")
    results["seconds"] = round(time.time() - t0, 1)
    (DOCS / "results.json").write_text(json.dumps(_json_safe(results), indent=4) + "\n", encoding="utf-8")  # the bundle's JSON format
    shipped = first
    print(f"other seeds: ratios {', '.join(f'{v:.2f}' for v in seeds.values())}")
    print(f"joint MMD^2 {shipped['mmd2_generated_vs_heldout']:.5f} vs held-out halves {shipped['mmd2_heldout_a_vs_b']:.5f}: ratio {shipped['ratio']:.2f}")
    for name, r in results["mmd"].items():
        print(f"  {name}: ratio {r['ratio']:.2f}")
    print(json.dumps(results["peak_latency_error_vs_simulator_ms"], indent=1, default=float)[:1500])
    return 0


if __name__ == "__main__":
    sys.exit(main())
