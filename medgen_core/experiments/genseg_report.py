"""Summaries of GenSeg benchmark records: mean +- SD tables, paired differences, shift effects, a bar chart.

Input: the ``records`` of ``results.json`` (:func:`~medgen_core.experiments.genseg_benchmark.run_benchmark`),
complete or partial. Statistics use only draws that have every method being compared (paired).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medgen_core.data.tissue_slices import ACQUISITION_SHIFTS, TISSUE_CLASSES

__all__ = ["SHIFTED_MEAN", "TEST_SETS", "markdown_report", "summarize", "write_bar_chart"]

SHIFTED_MEAN = "shifted_mean"
TEST_SETS = ("in_domain", "anatomy", *ACQUISITION_SHIFTS, SHIFTED_MEAN)
_HEADERS = {"in_domain": "in-domain", "anatomy": "anatomy shift", "bias_field": "bias field", "noise": "noise",
            "gibbs_ringing": "Gibbs", "contrast_gamma": "gamma", "low_resolution": "low res", SHIFTED_MEAN: "**acq. shift mean**"}


def _value(record: dict, test_set: str, metric: str = "dice", cls: str = "mean") -> float:
    scores = record["scores"]
    if test_set == SHIFTED_MEAN:
        return float(np.mean([scores[s][metric][cls] for s in ACQUISITION_SHIFTS]))
    return float(scores[test_set][metric][cls])


def _by_draw(records: Sequence[dict]) -> dict[int, dict[str, dict]]:
    table: dict[int, dict[str, dict]] = {}
    for r in records:
        table.setdefault(int(r["draw"]), {})[r["method"]] = r
    return table


def summarize(records: Sequence[dict], methods: Sequence[str], metric: str = "dice", cls: str = "mean") -> dict:
    """``{method: {test_set: (mean, sd, n)}}`` over the draws where that method ran."""
    out: dict[str, dict[str, tuple[float, float, int]]] = {}
    for m in methods:
        rows = [r for r in records if r["method"] == m]
        if rows:
            out[m] = {}
            for t in TEST_SETS:
                v = np.array([_value(r, t, metric, cls) for r in rows])
                out[m][t] = (float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else float("nan"), int(v.size))
    return out


def paired_difference(records: Sequence[dict], a: str, b: str, metric: str = "dice") -> dict[str, tuple[float, float, int]]:
    """Per test set, mean and SD over draws of ``score(a) - score(b)`` (draws with both methods only)."""
    pairs = [(d[a], d[b]) for d in _by_draw(records).values() if a in d and b in d]
    out = {}
    for t in TEST_SETS:
        v = np.array([_value(x, t, metric) - _value(y, t, metric) for x, y in pairs])
        out[t] = (float(v.mean()) if v.size else float("nan"), float(v.std(ddof=1)) if v.size > 1 else float("nan"), int(v.size))
    return out


def shift_effects(records: Sequence[dict], method: str) -> dict[str, tuple[float, float, int]]:
    """Per acquisition shift, ``Dice(shifted) - Dice(anatomy)`` of ``method`` (mean, SD over draws)."""
    rows = [r for r in records if r["method"] == method]
    out = {}
    for s in ACQUISITION_SHIFTS:
        v = np.array([_value(r, s) - _value(r, "anatomy") for r in rows])
        out[s] = (float(v.mean()) if v.size else float("nan"), float(v.std(ddof=1)) if v.size > 1 else float("nan"), int(v.size))
    return out


def _fmt(stat: tuple[float, float, int], signed: bool = False) -> str:
    mean, sd, _ = stat
    if math.isnan(mean):
        return "n/a"
    head = f"{mean:+.3f}" if signed else f"{mean:.3f}"
    return head if math.isnan(sd) else f"{head} ± {sd:.3f}"


def _table(rows: dict[str, dict[str, tuple]], labels: dict[str, str], signed: bool = False, columns=TEST_SETS) -> list[str]:
    lines = ["| method | " + " | ".join(_HEADERS.get(c, c) for c in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for key, stats in rows.items():
        lines.append(f"| {labels.get(key, key)} | " + " | ".join(_fmt(stats[c], signed) for c in columns) + " |")
    return lines


def markdown_report(results: dict, labels: dict[str, str]) -> str:
    """The benchmark's markdown report (tables of Dice, IoU, per-class scores, paired differences, shift effects)."""
    records, cfg = results["records"], results["config"]
    methods = [m for m in cfg["methods"] if any(r["method"] == m for r in records)]
    draws = sorted({int(r["draw"]) for r in records})
    state = "complete" if results.get("complete") else "PARTIAL (still running or interrupted)"
    sources = results.get("merged_from") or []
    merged = f" (summed over {len(sources)} merged runs)" if sources else ""
    lines = ["# GenSeg benchmark: brain tissue segmentation (MNI152, 2 mm axial slices)", "",
             f"Status: {state}; draws {draws} ({len(draws)}), {len(records)} method runs, "
             f"{results.get('seconds', 0) / 60:.1f} min on {cfg['threads']} CPU thread(s){merged}. "
             f"Budget per method: {cfg['steps']} segmenter updates of batch {cfg['batch_size']} (lr {cfg['lr']}), "
             f"best validation-loss state every {cfg['eval_every']}; Pix2Pix stage 1: {cfg['pretrain_steps']} updates. "
             f"Segmenter: {cfg['segmenter']} {cfg['channels']}. GenSeg: lambda {cfg['lambda_syn']}, upper level "
             f"{cfg['upper_params']}, arch lr {cfg['lr_arch']}.", "",
             "## Foreground Dice (mean of CSF, GM, WM), mean ± SD over draws", ""]
    lines += _table(summarize(records, methods), labels)
    lines += ["", "## Foreground IoU, mean ± SD over draws", ""]
    lines += _table(summarize(records, methods, "iou"), labels)
    for metric in ("dice", "iou"):
        lines += ["", f"## {metric.upper() if metric == 'iou' else 'Dice'} per class (in-domain / acquisition-shift mean)", ""]
        cols = [f"{c} {t}" for c in TISSUE_CLASSES[1:] for t in ("in-domain", "shifted")]
        lines += ["| method | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
        for m in methods:
            cells = []
            for c in TISSUE_CLASSES[1:]:
                s = summarize(records, [m], metric, c)[m]
                cells += [_fmt(s["in_domain"]), _fmt(s[SHIFTED_MEAN])]
            lines.append(f"| {labels.get(m, m)} | " + " | ".join(cells) + " |")
    diffs = {f"{x} − {y}": paired_difference(records, x, y) for x, y in (("d_genseg", "b_classic"), ("c_separate", "b_classic"),
                                                                         ("e_more_labels", "b_classic"), ("d_genseg", "c_separate"))
             if x in methods and y in methods}
    if diffs:
        n = next(iter(diffs.values()))["in_domain"][2]
        lines += ["", f"## Paired differences of foreground Dice (mean ± SD over {n} paired draws)", ""]
        lines += _table({k: v for k, v in diffs.items()}, {k: k.replace("_", " ") for k in diffs}, signed=True)
    for m in ("a_plain", "b_classic"):
        if m in methods:
            lines += ["", f"## Effect of each acquisition shift on {labels.get(m, m)}: Dice(shifted) − Dice(anatomy shift)", ""]
            lines += _table({m: shift_effects(records, m)}, labels, signed=True, columns=ACQUISITION_SHIFTS)
    secs = {m: np.mean([r["seconds"] for r in records if r["method"] == m]) for m in methods}
    lines += ["", "## Seconds per run (mean)", "", "| " + " | ".join(labels.get(m, m) for m in methods) + " |",
              "|---" * len(methods) + "|", "| " + " | ".join(f"{secs[m]:.0f}" for m in methods) + " |"]
    kernels = [r["derived_kernels"] for r in records if "derived_kernels" in r]
    if kernels:
        lines += ["", f"GenSeg derived up-sampling kernels per draw (outermost first): {kernels}"]
    return "\n".join(lines) + "\n"


def write_bar_chart(results: dict, labels: dict[str, str], path: str | Path) -> Path:
    """PNG bar chart: foreground Dice per test set and method, SD error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records, methods = results["records"], [m for m in results["config"]["methods"]]
    stats = summarize(records, methods)
    methods = [m for m in methods if m in stats]
    x = np.arange(len(TEST_SETS))
    width = 0.8 / max(len(methods), 1)
    fig, ax = plt.subplots(figsize=(12, 4.5))
    for i, m in enumerate(methods):
        mean = [stats[m][t][0] for t in TEST_SETS]
        sd = [0 if math.isnan(stats[m][t][1]) else stats[m][t][1] for t in TEST_SETS]
        ax.bar(x + (i - (len(methods) - 1) / 2) * width, mean, width, yerr=sd, capsize=2, label=labels.get(m, m))
    ax.set_xticks(x, [_HEADERS.get(t, t).strip("*") for t in TEST_SETS], rotation=20)
    ax.set_ylabel("foreground Dice")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8, ncol=2, loc="upper right")
    ax.set_title(f"GenSeg benchmark, {len({r['draw'] for r in records})} draws (mean ± SD)")
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path
