#!/usr/bin/env python
"""Realism suite (:mod:`medgen_core.evaluation.realism`) on the shipped generators, with reference rows.

Every comparison runs :func:`~medgen_core.evaluation.realism.realism_report` (each set / its own 99.9th
percentile; paired sets / the truth's): classifier two-sample test (2 folds, ``--steps`` Adam steps each,
accuracy over all held-out predictions, 95 % Wilson interval), log-spectral distance (LSD) of the radially
averaged power spectra with the real set's even-vs-odd floor, high-frequency excess (>= 0.25 cycles/pixel),
per-tissue means (labels 1 CSF, 2 GM, 3 WM) and, paired, PSNR / SSIM inside the brain.

Data (all offline):
- MNI: the nilearn MNI152 2009 T1 at 2 mm in-plane, 128 x 128 (training range: ``mni_axial_slices_2mm``;
  held-out: ``mni_heldout_axial_slices_2mm``, z = 76..103, which no shipped generator saw). Tissue labels: the
  MNI152 maps on each slice's grid (:func:`~medgen_core.data.tissue_maps.mni_tissue_labels_on_grid`).
- T2w (CycleGAN): see ``scripts/evaluate_cyclegan.py``, which this script runs for ``--only cyclegan`` (dipy's held-out
  slices on the generators' 2 mm MNI grid, the MNI T1 on the same planes).

Rows:
- reference (MNI training-range slices, even z = real, odd z = "fake"; blocks of 10 z in one fold): real
  halves; + Gaussian noise (sigma 0.05); Gaussian blur (sigma 1 px); speckle x (1 + 0.3 N(0, 1)).
- CycleGAN: ``scripts/evaluate_cyclegan.py`` (its own rows, reference rows and acceptance table).
- Pix2Pix (tissue labels -> T1), paired: the bundle (VolumeTranslator, as it runs) on the MNI labels of the
  held-out slab z = 76..103 at 1 mm (197 x 233), vs the real T1 there, and the per-class-mean + blur
  baseline; blocks of 7 slices share a fold (neighbouring slices are near-duplicates).
- DDPM: as many samples as held-out slices (10 DDIM steps, guidance 1, the held-out slices' position
  classes, seed 100) vs the MNI held-out slices (no tissue labels exist for samples).

    python scripts/evaluate_realism.py                          # all, into the bundles' docs/
    python scripts/evaluate_realism.py --only cyclegan --docs-dir /tmp/realism --steps 100
    python scripts/evaluate_realism.py --from-json              # README sections again from docs/realism.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from evaluate_translation import BUNDLES, bundle_network  # noqa: E402

from medgen_core.data.samples import load_mni152_t1, mni152_tissue_labels, mni_training_axial_indices  # noqa: E402
from medgen_core.data.slices import mni_axial_slices_2mm, mni_heldout_axial_slices_2mm, mni_slice_affine_2mm, slice_position_class  # noqa: E402
from medgen_core.data.tissue_maps import mni_tissue_labels_on_grid  # noqa: E402
from medgen_core.evaluation.realism import plot_spectra, realism_report  # noqa: E402

ROOT = Path(__file__).resolve().parents[1] / "monai_bundles"
DDPM = ROOT / "brain_slice_ddpm"


def mni_labels(z: torch.Tensor, size: int = 128) -> torch.Tensor:
    """``(N, 1, size, size)`` int64 tissue labels of the 2 mm MNI slices at axial indices ``z``."""
    return torch.from_numpy(np.stack([mni_tissue_labels_on_grid(mni_slice_affine_2mm(int(k), size), (size, size)) for k in z]).astype(np.int64))[:, None]


def summary(name: str, rep: dict) -> dict:
    """One table row of a report."""
    t, s = rep["two_sample"], rep["spectrum"]
    row = {"comparison": name, "n_real": rep["n_real"], "n_fake": rep["n_fake"], "accuracy": t["accuracy"], "ci": [t["ci_low"], t["ci_high"]],
           "auc": t["auc"], "lsd_db": s["log_spectral_distance_db"], "lsd_real_halves_db": s["real_halves_log_spectral_distance_db"],
           "hf_excess_db": s["high_frequency_excess_db"]}
    tissue = rep.get("tissue", {})
    for side in ("fake", "real"):
        if side in tissue:
            row[f"{side}_ordering"] = tissue[side]["ordering"]
            row[f"{side}_ratios"] = tissue[side]["ratios"]
    if "comparison" in tissue:
        row["ordering_matches"] = tissue["comparison"]["ordering_matches"]
        row["ratio_error"] = tissue["comparison"]["ratio_relative_error"]
    if "paired" in rep:
        row["psnr"], row["ssim"] = rep["paired"]["psnr"], rep["paired"]["ssim"]
    print(f"{name}: acc {t['accuracy']:.3f} [{t['ci_low']:.3f}, {t['ci_high']:.3f}]  LSD {s['log_spectral_distance_db']:.2f} dB "
          f"(floor {s['real_halves_log_spectral_distance_db']:.2f})  HF {s['high_frequency_excess_db']:+.2f} dB"
          + (f"  ratios {tissue['fake']['ratios']}" if "fake" in tissue else "") + (f"  PSNR {row['psnr']:.2f}" if "psnr" in row else ""), flush=True)
    return row


def reference_rows(steps: int) -> list[dict]:
    from monai.networks.layers import GaussianFilter

    x, z = mni_axial_slices_2mm(128)
    a, b, za, zb = x[0::2], x[1::2], z[0::2], z[1::2]
    la, lb = mni_labels(za), mni_labels(zb)
    g = torch.Generator().manual_seed(1)
    fakes = {"real halves (MNI T1, even vs odd slices)": b,
             "real + Gaussian noise (sigma 0.05)": b + 0.05 * torch.randn(b.shape, generator=g),
             "real, Gaussian blur (sigma 1 px)": GaussianFilter(spatial_dims=2, sigma=1.0)(b),
             "real x speckle (1 + 0.3 N(0,1))": b * (1 + 0.3 * torch.randn(b.shape, generator=g))}
    return [summary(name, realism_report(a, f, real_labels=la, fake_labels=lb, groups_real=(za // 10).tolist(),
                                         groups_fake=(zb // 10).tolist(), steps=steps)) for name, f in fakes.items()]


def pix2pix(steps: int, docs: Path) -> dict:
    from medgen_core.data.translation import per_class_mean_baseline, tissue_to_t1_pairs
    from medgen_core.inference.translate import VolumeTranslator
    from medgen_core.io import Volume

    training = set(mni_training_axial_indices())
    z = np.array([k for k in range(189) if k not in training])
    labels = mni152_tissue_labels()
    t1 = load_mni152_t1()
    target = np.clip(t1.array / np.percentile(t1.array, 99.9), 0.0, 1.0)[:, :, z]
    net = bundle_network(BUNDLES["pix2pix"], "tissue_to_t1")
    translator = VolumeTranslator(net, input_mode="labels", num_classes=4, out_range=(0.0, 1.0), progress=False)
    model = translator(Volume(labels[:, :, z].astype(np.float32), t1.affine)).array
    lab = torch.from_numpy(np.moveaxis(labels[:, :, z], 2, 0).astype(np.int64))[:, None]
    train = tissue_to_t1_pairs([k for k in mni_training_axial_indices() if 8 <= k < 153], labels.shape[:2])
    baseline = ((per_class_mean_baseline(train, lab) + 1) / 2).clamp(0, 1)
    real = torch.from_numpy(np.moveaxis(target, 2, 0).astype(np.float32))[:, None]
    fake = torch.from_numpy(np.moveaxis(np.clip(model, 0, 1), 2, 0).astype(np.float32))[:, None]
    groups = (z // 7).tolist()
    reps = {"Pix2Pix labels -> T1 vs real T1 (MNI held-out, paired)": realism_report(real, fake, real_labels=lab, fake_labels=lab, paired=True,
                                                                                     groups_real=groups, groups_fake=groups, steps=steps),
            "per-class mean + blur vs real T1 (paired baseline)": realism_report(real, baseline, real_labels=lab, fake_labels=lab, paired=True,
                                                                                 groups_real=groups, groups_fake=groups, steps=steps)}
    rows = [summary(k, v) for k, v in reps.items()]
    s, sb = reps[list(reps)[0]]["spectrum"], reps[list(reps)[1]]["spectrum"]
    f = np.asarray(s["freqs"])
    plot_spectra({"real T1 (MNI held-out)": (f, np.asarray(s["real"])), "Pix2Pix (AI)": (f, np.asarray(s["fake"])),
                  "per-class mean + blur": (f, np.asarray(sb["fake"]))}, docs / "realism_spectrum.png",
                 title=f"labels -> T1: LSD Pix2Pix {s['log_spectral_distance_db']:.1f} dB, baseline {sb['log_spectral_distance_db']:.1f} dB")
    return {"rows": rows, "figures": ["realism_spectrum.png"], "reports": reps}


def ddpm(steps: int, docs: Path) -> dict:
    from medgen_core.bundles.generators import DiffusionBundleBackend
    from medgen_core.data.slices import SLICE_POSITION_CLASSES

    real, z = mni_heldout_axial_slices_2mm(128)
    classes = slice_position_class(z.numpy(), 4)
    backend = DiffusionBundleBackend(DDPM, "cpu")
    samples, t0 = [], time.perf_counter()
    with torch.no_grad():
        for c in np.unique(classes):
            n = int((classes == c).sum())
            samples.append(backend.sample(n, class_name=SLICE_POSITION_CLASSES[int(c)], steps=10, guidance_scale=1.0,
                                          generator=torch.Generator().manual_seed(100 + int(c))).float().clamp(0, 1))
    seconds = time.perf_counter() - t0
    fake = torch.cat(samples)
    reps = {"DDPM samples (10 DDIM steps) vs real MNI held-out slices": realism_report(real, fake, real_labels=mni_labels(z), steps=steps)}
    rows = [summary(k, v) for k, v in reps.items()]
    s = reps[list(reps)[0]]["spectrum"]
    f = np.asarray(s["freqs"])
    plot_spectra({"real (MNI held-out)": (f, np.asarray(s["real"])), "DDPM samples (AI)": (f, np.asarray(s["fake"]))}, docs / "realism_spectrum.png",
                 title=f"DDPM: LSD {s['log_spectral_distance_db']:.1f} dB")
    return {"rows": rows, "figures": ["realism_spectrum.png"], "reports": reps, "sampling_seconds": seconds, "n_samples": len(fake)}


def _ratios(row: dict, side: str) -> str:
    r = row.get(f"{side}_ratios")
    return "n/a" if not r else " / ".join("n/a" if v is None else f"{v:.2f}" for v in r.values())


def table(rows: list[dict]) -> list[str]:
    out = ["| comparison | n real / fake | two-sample accuracy [95 % CI] | LSD (dB) [real-halves floor] | HF excess (dB) | tissue order (generated) "
           "| CSF/GM / GM/WM generated (real) | order matches; ratio errors | PSNR / SSIM brain |", "|---|---|---|---|---|---|---|---|---|"]
    short = {"csf": "CSF", "grey_matter": "GM", "white_matter": "WM"}
    for r in rows:
        order = " > ".join(short[c] for c in r["fake_ordering"]) if r.get("fake_ordering") else "n/a"
        paired = f"{r['psnr']:.2f} / {r['ssim']:.3f}" if "psnr" in r else ""
        match = "n/a"
        if "ordering_matches" in r:
            errors = " / ".join("n/a" if e is None else f"{100 * e:+.0f} %" for e in r["ratio_error"].values())
            match = f"{'yes' if r['ordering_matches'] else 'no'}; {errors}"
        out.append(f"| {r['comparison']} | {r['n_real']} / {r['n_fake']} | {r['accuracy']:.3f} [{r['ci'][0]:.3f}, {r['ci'][1]:.3f}] | "
                   f"{r['lsd_db']:.2f} [{r['lsd_real_halves_db']:.2f}] | {r['hf_excess_db']:+.2f} | {order} | {_ratios(r, 'fake')} ({_ratios(r, 'real')}) "
                   f"| {match} | {paired} |")
    return out


def write_section(docs: Path, result: dict, reference: list[dict], steps: int, intro: str) -> None:
    """``docs/realism.json`` and the section between the realism markers of ``docs/README.md`` (added before
    ``## Limitations``, else at the end, the first time); the README is re-read right before it is written."""
    payload = {"protocol": __doc__.split("\n\n")[1:3], "steps": steps, "rows": result["rows"], "reference_rows": reference, "figures": result["figures"],
               **{k: v for k, v in result.items() if k not in ("rows", "reports", "figures", "reference_rows", "protocol", "steps")},
               "reports": result["reports"]}
    tmp = docs / ".realism.json.tmp"
    tmp.write_text(json.dumps(payload, indent=4) + "\n", encoding="utf-8")
    os.replace(tmp, docs / "realism.json")
    lines = ["<!-- realism:start -->", "## Realism (suite)", "",
             f"Produced by `python scripts/evaluate_realism.py` (numbers in `docs/realism.json`); metrics: `medgen_core.evaluation.realism`, "
             f"also run by `medgen evaluate realism REAL FAKE --out DIR`. Two-sample test: a small CNN trained from scratch ({steps} steps, "
             "2 folds) to tell real from generated slices; accuracy over all held-out predictions, 0.5 = indistinguishable. LSD: "
             "log-spectral distance of the radially averaged power spectra (0 = same spectrum; the real set's even-vs-odd floor in "
             "brackets); HF excess > 0 means too much high-frequency power (noise, speckle), < 0 too little (blur). Tissue: means "
             "under the MNI152 tissue maps (registered to the dipy T2w). Each set is scaled by its own 99.9th percentile.", "",
             intro, "", *table(result["rows"]), "", "Reference rows (MNI T1 training-range slices, even vs odd, blocks of 10 slices per fold):", "",
             *table(reference), "", *(f"![{Path(p).stem}]({p})" for p in result["figures"]), "<!-- realism:end -->"]
    readme = docs / "README.md"
    text = readme.read_text(encoding="utf-8")
    section = "\n".join(lines)
    if "<!-- realism:start -->" in text:
        text = re.sub(r"<!-- realism:start -->.*?<!-- realism:end -->", lambda _: section, text, flags=re.S)
    elif "\n## Limitations" in text:
        text = text.replace("\n## Limitations", f"\n{section}\n\n## Limitations", 1)
    else:
        text = text.rstrip("\n") + f"\n\n{section}\n"
    tmp = docs / ".README.md.tmp"
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, readme)


INTROS = {
    "pix2pix": "With the shipped weights on the MNI held-out slab and its margin (z = 76..103, 1 mm, 197 x 233), paired with the real T1; "
               "input labels are the MNI argmax labels the model was trained on.",
    "ddpm": "With the shipped weights, 10 DDIM steps, guidance 1, one sample per real held-out slice with its slice-position class.",
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="all", choices=("cyclegan", "pix2pix", "ddpm", "all"))
    ap.add_argument("--steps", type=int, default=300, help="two-sample classifier steps per fold (default 300)")
    ap.add_argument("--docs-dir", type=Path, default=None, help="write into DIR/<bundle>/ instead of each bundle's docs/")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--from-json", action="store_true", help="only rewrite the README sections from each docs/realism.json (no compute)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(True)
    if args.only in ("all", "cyclegan"):  # its own protocol, tables and README section
        import evaluate_cyclegan

        code = evaluate_cyclegan.main([*(["--from-json"] if args.from_json else ["--steps", str(args.steps)]), "--threads", str(args.threads),
                                       *(["--docs-dir", str(args.docs_dir / BUNDLES["cyclegan"].name)] if args.docs_dir else [])])
        if code or args.only == "cyclegan":
            return code
    if args.from_json:
        for name, bundle in (("pix2pix", BUNDLES["pix2pix"]), ("ddpm", DDPM)):
            if args.only not in ("all", name):
                continue
            docs = (args.docs_dir / bundle.name) if args.docs_dir else bundle / "docs"
            stored = json.loads((docs / "realism.json").read_text(encoding="utf-8"))
            write_section(docs, stored, stored["reference_rows"], stored["steps"], INTROS[name])
            print(f"{name}: rewrote the README section from {docs / 'realism.json'}", flush=True)
        return 0
    reference = reference_rows(args.steps)
    jobs = {"pix2pix": (BUNDLES["pix2pix"], pix2pix), "ddpm": (DDPM, ddpm)}
    for name, (bundle, fn) in jobs.items():
        if args.only not in ("all", name):
            continue
        docs = (args.docs_dir / bundle.name) if args.docs_dir else bundle / "docs"
        docs.mkdir(parents=True, exist_ok=True)
        if args.docs_dir and not (docs / "README.md").exists():
            (docs / "README.md").write_text((bundle / "docs" / "README.md").read_text(encoding="utf-8"), encoding="utf-8")
        result = fn(args.steps, docs)
        write_section(docs, result, reference, args.steps, INTROS[name])
        print(f"{name}: wrote {docs / 'realism.json'} and the README section", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
