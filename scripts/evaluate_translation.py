#!/usr/bin/env python
"""Evaluate the shipped translation bundles; write docs/results.json, the README table and montages.

Pix2Pix (tissue map -> T1): for each held-out way of making the label map
(:data:`medgen_core.data.tissue_label_constructions.HELDOUT_CONSTRUCTIONS`: the argmax labels, thresholded
probabilities, a k-means clustering of the T1, dilated white matter, smoothed probabilities, a 2 mm
segmentation), PSNR / SSIM of the model and of the per-class-mean baseline built from the same labels
(each class gets its mean training-slice intensity under that construction, Gaussian blur sigma 1) on the
held-out MNI152 slab z=80..99, over the MNI brain mask and over the whole slice, intensities in [0, 1]
(1 = 99.9th percentile); and the realism suite's two-sample accuracy and log-spectral distance of both
against the real T1 (slab plus its never-trained margin, z=76..103). The model runs through the bundle's
inference path (:class:`VolumeTranslator` on the label volume). Montages: ``montage_heldout.png`` (argmax
labels) and ``montage_constructions.png`` (one row per construction).

CycleGAN (T1 <-> T2w): cycle consistency both ways (L1 and PSNR in [0, 1]) on the held-out MNI slab
(2 mm, domain A) and the 10 dipy T2w slices (domain B, all used in training: there are no others), and
a Frechet distance (``monai.metrics.FIDMetric``) between translated and real slices of the target
domain, next to the identity baseline (untranslated input vs the target domain). Features come from a
FIXED, randomly initialised, seeded conv net (:class:`RandomFeatures`), every position of its 8x8 output
map being one 64-d sample, standardised by the real target domain's per-dimension mean and std.
Why this network: it is independent of the models under test (a trained discriminator was optimised jointly with the generator it would judge, so its features are the ones
the generator learned to fool), reproducible offline from code alone (no downloaded ImageNet weights)
and deterministic. It measures low-level intensity/texture statistics, not perceptual realism; compare
only against the identity baseline, the real-vs-real floor (two halves of the target domain's slices)
and across versions of these bundles; smoke-test (noise) outputs can already beat the identity baseline,
because noise texture matches the T2w scan better than the smooth T1 template does.

    python scripts/evaluate_translation.py                       # both bundles, into their docs/
    python scripts/evaluate_translation.py --bundle cyclegan --docs-dir /tmp/eval
    python scripts/evaluate_translation.py --bundle pix2pix --docs-dir /tmp/eval --max-slices 2 --realism-steps 0   # smoke
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from medgen_core.bundles import get_bundle
from medgen_core.bundles.generators import bundle_network as _bundle_network
from medgen_core.data.samples import MNI_HELDOUT_AXIAL, load_mni152_t1, mni_training_axial_indices
from medgen_core.data.translation import per_class_mean_baseline, t1_t2_unpaired
from medgen_core.evaluation.feature_distance import RandomFeatures, feature_distance
from medgen_core.evaluation.metrics import masked_psnr, masked_ssim
from medgen_core.inference.translate import VolumeTranslator
from medgen_core.io import Volume
from medgen_core.utils.figures import save_montage

ROOT = Path(__file__).resolve().parents[1] / "monai_bundles"
BUNDLES = {"pix2pix": ROOT / "brain_tissue_to_t1_pix2pix", "cyclegan": ROOT / "brain_t1_to_t2w_cyclegan"}


def bundle_network(bundle_dir: Path, variant: str) -> nn.Module:
    """The bundle's ``network_def`` with the variant's weights (sha256-verified), on the CPU, eval mode."""
    return _bundle_network(bundle_dir, variant)[0]


def _slices(vol: np.ndarray) -> torch.Tensor:
    """``(X, Y, Z)`` -> axial slices ``(Z, 1, X, Y)`` (dtype kept)."""
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(vol, 2, 0)))[:, None]


def _construction_montage(panels: list[tuple[str, list[tuple[str, np.ndarray]]]], path: Path, title: str) -> Path:
    """One row per label construction (labels, baseline, model, real T1), radiological display, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = len(panels[0][1])
    fig, axes = plt.subplots(len(panels), cols, figsize=(2.6 * cols, 2.9 * len(panels)), dpi=100, squeeze=False)
    for i, (row_name, images) in enumerate(panels):
        for j, (name, img) in enumerate(images):
            ax = axes[i][j]
            ax.imshow(np.rot90(img), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(name, fontsize=8)
            if j == 0:
                ax.set_ylabel(row_name, fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return path


def evaluate_pix2pix(bundle_dir: Path, docs: Path, max_slices: int | None, realism_steps: int = 300) -> dict:
    """PSNR / SSIM inside the brain of model and per-class-mean baseline for every held-out label construction
    (:data:`~medgen_core.data.tissue_label_constructions.HELDOUT_CONSTRUCTIONS`), and the realism suite's two-sample
    accuracy and spectral distance of both against the real T1 (on the slab and its never-trained margin)."""
    from medgen_core.data.samples import MNI_HELDOUT_MARGIN
    from medgen_core.data.tissue_label_constructions import HELDOUT_CONSTRUCTIONS, argmax_labels, heldout_label_constructions, mni_tissue_probabilities
    from medgen_core.evaluation.realism import realism_report

    lo, hi = MNI_HELDOUT_AXIAL
    hi = hi if max_slices is None else min(hi, lo + max_slices)
    z_all = list(range(lo - MNI_HELDOUT_MARGIN, hi + MNI_HELDOUT_MARGIN))  # slab + margin: no slice of it was trained on
    inner = [z_all.index(z) for z in range(lo, hi)]
    t1 = load_mni152_t1()
    t1n = np.clip(t1.array / np.percentile(t1.array, 99.9), 0.0, 1.0).astype(np.float32)
    brain_vol = mni_tissue_probabilities()[0] >= 0.5
    reference = argmax_labels(mni_tissue_probabilities())
    net = bundle_network(bundle_dir, "tissue_to_t1")
    translator = VolumeTranslator(net, input_mode="labels", num_classes=4, out_range=(0.0, 1.0), progress=False)
    train_z = [z for z in mni_training_axial_indices() if 8 <= z < 153]
    y_all, brain_all = _slices(t1n[:, :, z_all]), _slices(brain_vol[:, :, z_all])
    y, brain = y_all[inner], brain_all[inner]
    groups = [z // 7 for z in z_all]  # blocks of neighbouring slices share a two-sample fold
    rows, panels, k = [], [], len(inner) // 2
    for name, labels in heldout_label_constructions().items():
        train = {"target": _slices(t1n[:, :, train_z]) * 2 - 1, "labels": _slices(labels[:, :, train_z].astype(np.int64))}
        test_labels = _slices(labels[:, :, z_all].astype(np.int64))
        baseline = ((per_class_mean_baseline(train, test_labels) + 1) / 2).clamp(0, 1)
        model = _slices(translator(Volume(labels[:, :, z_all].astype(np.float32), t1.affine)).array.astype(np.float32)).clamp(0, 1)
        row = {"construction": name, "description": HELDOUT_CONSTRUCTIONS[name],
               "agreement_with_argmax": float((labels[brain_vol] == reference[brain_vol]).mean())}
        for method, pred in (("baseline", baseline), ("model", model)):
            p = pred[inner]
            row[f"{method}_brain_psnr"], row[f"{method}_brain_ssim"] = masked_psnr(p, y, brain), masked_ssim(p, y, brain)
            row[f"{method}_slice_psnr"], row[f"{method}_slice_ssim"] = masked_psnr(p, y), masked_ssim(p, y)
            if realism_steps > 0:
                with torch.enable_grad():  # the two-sample classifier trains
                    rep = realism_report(y_all, pred, paired=True, brain_mask=brain_all, groups_real=groups, groups_fake=groups, steps=realism_steps)
                row[f"{method}_two_sample_accuracy"] = rep["two_sample"]["accuracy"]
                row[f"{method}_two_sample_ci"] = [rep["two_sample"]["ci_low"], rep["two_sample"]["ci_high"]]
                row[f"{method}_lsd_db"] = rep["spectrum"]["log_spectral_distance_db"]
                row[f"{method}_hf_excess_db"] = rep["spectrum"]["high_frequency_excess_db"]
                row["real_halves_lsd_db"] = rep["spectrum"]["real_halves_log_spectral_distance_db"]
        row["gain_psnr_db"] = row["model_brain_psnr"] - row["baseline_brain_psnr"]
        row["gain_ssim"] = row["model_brain_ssim"] - row["baseline_brain_ssim"]
        row["meets_target"] = bool(row["gain_psnr_db"] >= 1.0 and row["gain_ssim"] >= 0.01)
        rows.append(row)
        print(bundle_dir.name, {key: v for key, v in row.items() if key != "description"}, flush=True)
        i = inner[k]
        panels.append((name, [("labels (input)", test_labels[i, 0].numpy() / 3.0), ("per-class mean + blur", baseline[i, 0].numpy()),
                              ("Pix2Pix (AI-generated)", model[i, 0].numpy()), ("real T1 (target)", y_all[i, 0].numpy())]))
        if name == "argmax":
            save_montage(panels[-1][1], docs / "montage_heldout.png", title=f"MNI152 held-out slice z={z_all[i]}", vmax=1.0)
    _construction_montage(panels, docs / "montage_constructions.png", f"Held-out slice z={z_all[inner[k]]}, one row per label construction")
    argmax = next(r for r in rows if r["construction"] == "argmax")
    heldout = [{"method": m, "brain_psnr": argmax[f"{p}_brain_psnr"], "brain_ssim": argmax[f"{p}_brain_ssim"], "slice_psnr": argmax[f"{p}_slice_psnr"],
                "slice_ssim": argmax[f"{p}_slice_ssim"]} for m, p in (("per-class mean + blur", "baseline"), ("Pix2Pix (MedGen)", "model"))]
    return {"protocol": f"MNI152 2009 (nilearn) held-out axial slices z={lo}..{hi - 1}, full 197x233 slices; brain = the MNI brain mask "
                        "(the same for every construction); intensities / 99.9th percentile, clipped to [0, 1], data range 1; SSIM window 11, "
                        "sigma 1.5; baseline = each class's mean training-slice T1 intensity under the same construction, Gaussian blur sigma 1; "
                        f"realism suite ({realism_steps} classifier steps, 2 folds, slices z={z_all[0]}..{z_all[-1]}, paired, blocks of 7 slices per fold)",
            "heldout": heldout, "constructions": rows}


def evaluate_cyclegan(bundle_dir: Path, docs: Path, max_slices: int | None) -> dict:
    lo, hi = MNI_HELDOUT_AXIAL
    hi = hi if max_slices is None else min(hi, lo + max_slices)
    data = t1_t2_unpaired((128, 128), range(lo, hi))
    a, b = data["A"], data["B"][: max_slices or None]
    g_a2b, g_b2a = bundle_network(bundle_dir, "a2b"), bundle_network(bundle_dir, "b2a")
    with torch.no_grad():
        fake_b, fake_a = g_a2b(a), g_b2a(b)
        rec_a, rec_b = g_b2a(fake_b), g_a2b(fake_a)
    to01 = lambda t: ((t + 1) / 2).clamp(0, 1)  # noqa: E731
    feats = RandomFeatures(seed=0)

    def fd(x: torch.Tensor, y: torch.Tensor) -> float:
        return feature_distance(x, y, feats)

    rows = [
        {"direction": "A->B (T1 -> T2w)", "cycle_l1": float((to01(rec_a) - to01(a)).abs().mean()), "cycle_psnr": masked_psnr(to01(rec_a), to01(a)),
         "fd_model": fd(fake_b, b), "fd_identity": fd(a, b), "fd_real_halves": fd(b[::2], b[1::2]), "n_input": len(a), "n_target": len(b)},
        {"direction": "B->A (T2w -> T1)", "cycle_l1": float((to01(rec_b) - to01(b)).abs().mean()), "cycle_psnr": masked_psnr(to01(rec_b), to01(b)),
         "fd_model": fd(fake_a, a), "fd_identity": fd(b, a), "fd_real_halves": fd(a[::2], a[1::2]), "n_input": len(b), "n_target": len(a)},
    ]
    for r in rows:
        print(bundle_dir.name, r, flush=True)
    i, j = len(a) // 2, len(b) // 2
    for name, cols in (("montage_a2b.png", [("real T1 (input)", a[i]), ("T1 -> T2w (AI-generated)", fake_b[i]), ("back to T1 (cycle)", rec_a[i]), ("a real T2w", b[j])]),
                       ("montage_b2a.png", [("real T2w (input)", b[j]), ("T2w -> T1 (AI-generated)", fake_a[j]), ("back to T2w (cycle)", rec_b[j]), ("a real T1", a[i])])):
        save_montage([(n, to01(t)[0].numpy()) for n, t in cols], docs / name, title=name[8:11].replace("2", " -> ").upper(), vmax=1.0)
    return {"protocol": f"domain A: MNI152 T1 held-out slices z={lo}..{hi - 1} at 2 mm in-plane; domain B: dipy S0_10 T2w, {len(b)} slices (training data: "
                        "no other T2w is available offline); 128x128, [0, 99.9th percentile] -> [-1, 1]. Cycle metrics in [0, 1]. "
                        "FD: monai FIDMetric on RandomFeatures (fixed seeded random 4-layer conv net, 64-d, 64 positions per slice), "
                        "features standardised by the real target domain's mean and std",
            "heldout": rows}


def _table(name: str, rows: list[dict]) -> list[str]:
    if name == "pix2pix":
        out = ["| method | brain PSNR (dB) | brain SSIM | whole-slice PSNR (dB) | whole-slice SSIM |", "|---|---|---|---|---|"]
        out += [f"| {r['method']} | {r['brain_psnr']:.2f} | {r['brain_ssim']:.4f} | {r['slice_psnr']:.2f} | {r['slice_ssim']:.4f} |" for r in rows]
    else:
        out = ["| direction | cycle L1 | cycle PSNR (dB) | FD model | FD identity baseline | FD real vs real (halves) | slices in / target |",
               "|---|---|---|---|---|---|---|"]
        out += [f"| {r['direction']} | {r['cycle_l1']:.4f} | {r['cycle_psnr']:.2f} | {r['fd_model']:.2f} | {r['fd_identity']:.2f} | {r['fd_real_halves']:.2f} | "
                f"{r['n_input']} / {r['n_target']} |" for r in rows]
    return out


def _constructions_table(rows: list[dict]) -> list[str]:
    """Pix2Pix: one row per label construction, model against the per-class-mean baseline of the same labels."""
    realism = "model_two_sample_accuracy" in rows[0]
    head = "| labels | agrees with argmax | baseline PSNR / SSIM | Pix2Pix PSNR / SSIM | gain dB / SSIM | >= +1 dB and +0.01 |"
    head += " two-sample acc. Pix2Pix (baseline) | LSD dB Pix2Pix (baseline) |" if realism else ""
    out = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        line = (f"| {r['construction']} | {100 * r['agreement_with_argmax']:.1f} % | {r['baseline_brain_psnr']:.2f} / {r['baseline_brain_ssim']:.4f} | "
                f"{r['model_brain_psnr']:.2f} / {r['model_brain_ssim']:.4f} | {r['gain_psnr_db']:+.2f} / {r['gain_ssim']:+.4f} | "
                f"{'yes' if r['meets_target'] else 'no'} |")
        if realism:
            line += (f" {r['model_two_sample_accuracy']:.3f} ({r['baseline_two_sample_accuracy']:.3f}) |"
                     f" {r['model_lsd_db']:.2f} ({r['baseline_lsd_db']:.2f}) |")
        out.append(line)
    return out


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def write_docs(name: str, bundle_dir: Path, docs: Path, results: dict) -> None:
    """``docs/results.json`` and the tables between the results markers of ``docs/README.md``."""
    docs.mkdir(parents=True, exist_ok=True)
    _write_atomic(docs / "results.json", json.dumps(results, indent=4) + "\n")
    weights = "trained weights" if results["trained"] else "**untrained smoke-test weights (not meaningful; run scripts/train_translation.py)**"
    lines = ["<!-- results:start -->", f"Produced by `python scripts/evaluate_translation.py` with the {weights} (numbers also in `docs/results.json`).", "",
             f"Protocol: {results['protocol']}.", ""]
    if results.get("constructions"):
        from medgen_core.data.tissue_label_constructions import HELDOUT_CONSTRUCTIONS

        lines += ["Brain PSNR (dB) / SSIM per way of making the label map (the baseline uses the same labels); two-sample accuracy "
                  "(0.5 = indistinguishable from the real T1) and log-spectral distance to the real T1 from the realism suite:", "",
                  *_constructions_table(results["constructions"]), "", "Label constructions:", "",
                  *(f"- `{k}`: {v}" for k, v in HELDOUT_CONSTRUCTIONS.items() if any(r["construction"] == k for r in results["constructions"])), "",
                  "Argmax labels only, brain and whole slice:", ""]
    lines += [*_table(name, results["heldout"]), "", *(f"![{png.stem}]({png.name})" for png in sorted(docs.glob("montage_*.png"))), "<!-- results:end -->"]
    readme = bundle_dir / "docs" / "README.md"
    source = readme.read_text(encoding="utf-8") if readme.exists() else "<!-- results:start -->\n<!-- results:end -->\n"
    text = re.sub(r"<!-- results:start -->.*<!-- results:end -->", lambda _: "\n".join(lines), source, flags=re.S)
    _write_atomic(docs / "README.md", text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", default="all", choices=(*BUNDLES, "all"))
    ap.add_argument("--docs-dir", type=Path, default=None, help="write results/README/montages here instead of <bundle>/docs (e.g. for smoke runs)")
    ap.add_argument("--max-slices", type=int, default=None, help="evaluate at most this many held-out slices (smoke runs)")
    ap.add_argument("--realism-steps", type=int, default=300, help="Pix2Pix: two-sample classifier steps per fold (0: skip the realism columns)")
    args = ap.parse_args(argv)
    torch.set_grad_enabled(False)
    for name in (BUNDLES if args.bundle == "all" else [args.bundle]):
        bundle_dir = BUNDLES[name]
        docs = (args.docs_dir / bundle_dir.name) if args.docs_dir else bundle_dir / "docs"
        docs.mkdir(parents=True, exist_ok=True)
        results = (evaluate_pix2pix(bundle_dir, docs, args.max_slices, args.realism_steps) if name == "pix2pix" else
                   evaluate_cyclegan(bundle_dir, docs, args.max_slices))
        results["trained"] = bool(get_bundle(bundle_dir).metadata.get("medgen", {}).get("trained", False))
        write_docs(name, bundle_dir, docs, results)
        print(f"{name}: wrote {docs / 'results.json'}, {docs / 'README.md'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
