#!/usr/bin/env python
"""Realism and cycle consistency of the CycleGAN T1 <-> T2w bundle on a fair, held-out T2w set (issue 17, item 3).

Evaluation data (:mod:`medgen_core.data.dipy_t2w`, all offline):
- real T2w: dipy ``S0_10`` slices 5..9 (``DIPY_T2W_EVAL_SLICES``; training used 0..4 only), each resampled within
  its own plane onto the MNI 2 mm 128 x 128 grid (the generators' training and output grid: same field of view
  and pixel size), brain only;
- T1 on the same planes: the MNI152 T1 (2 x 2 mm in-plane box average) sampled on those 5 tilted planes, so both
  sides show the same anatomy level; they lie inside the MNI held-out slab (z = 80..97 of 76..103), which no
  generator saw. Tissue labels: the MNI152 maps on those planes (the same labels for both sides; for dipy they
  are as good as the affine registration); everything outside the brain (label 0) is 0, generated images too.
- T1 -> T2w: G_A(T1 on the planes) vs the real T2w; T2w -> T1: G_B(real T2w) vs the T1 on the planes; identity
  rows compare the untranslated input with the target (a translator should beat them).

Metrics (:func:`medgen_core.evaluation.realism.realism_report`; each set / its own 99.9th percentile): the
classifier two-sample test on whole slices (5 vs 5: 10 predictions, wide intervals) and on 32 x 32 patches
(stride 8, >= 75 % brain; a slice's patches stay in one fold, so no patch is judged by a classifier that saw its
neighbours), log-spectral distance (LSD) of the whole slices next to the identity's, per-tissue means (order,
CSF/GM and GM/WM ratios). Cycle: PSNR in [0, 1] of G_B(G_A(T1)) vs T1 (the 5 planes, and the 28 MNI held-out
axial slices z = 76..103 at 2 mm) and of G_A(G_B(T2w)) vs T2w, over the whole slice and inside the brain.
Reference rows: the same real T2w against dipy's training slices 0..4 (real vs real, same subject; slices and
patches) and the MNI T1 on the planes against MNI T1 on the planes of slices 0..4.

    python scripts/evaluate_cyclegan.py                        # bundle docs: realism.json, README section, figures
    python scripts/evaluate_cyclegan.py --docs-dir /tmp/eval --steps 100 --weights-dir runs/cyclegan_v2
    python scripts/evaluate_cyclegan.py --from-json            # README section again from docs/realism.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from evaluate_realism import summary, table  # noqa: E402

from medgen_core.data.dipy_t2w import DIPY_T2W_EVAL_SLICES, DIPY_T2W_TRAIN_SLICES, dipy_plane_affines, dipy_t2w_on_mni_grid, mni_t1_on_planes  # noqa: E402
from medgen_core.data.slices import mni_heldout_axial_slices_2mm, mni_slice_affine_2mm  # noqa: E402
from medgen_core.data.tissue_maps import mni_tissue_labels_on_grid  # noqa: E402
from medgen_core.evaluation.metrics import masked_psnr  # noqa: E402
from medgen_core.evaluation.realism import classifier_two_sample_test, plot_spectra, realism_report, scale_to_unit  # noqa: E402

BUNDLE = Path(__file__).resolve().parents[1] / "monai_bundles" / "brain_t1_to_t2w_cyclegan"
SIZE = 128
PATCH, STRIDE, MIN_BRAIN = 32, 8, 0.75
SHORT = {"csf": "CSF", "grey_matter": "GM", "white_matter": "WM"}


def generators(weights_dir: Path | None) -> tuple[nn.Module, nn.Module]:
    """The bundle's a2b and b2a generators (sha256-verified), or the ``generator_*.pt`` of a run folder."""
    if weights_dir is None:
        from evaluate_translation import bundle_network

        return bundle_network(BUNDLE, "a2b"), bundle_network(BUNDLE, "b2a")
    from train_cyclegan import generator

    nets = []
    for name in ("generator_a2b.pt", "generator_b2a.pt"):
        net = generator()
        net.load_state_dict(torch.load(weights_dir / name, map_location="cpu", weights_only=True))
        nets.append(net.eval())
    return nets[0], nets[1]


def translate(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``x (N, 1, H, W)`` in [0, 1] -> the generator's output in [0, 1] (inputs as in training: [0, 1] -> [-1, 1])."""
    with torch.no_grad():
        return ((net(x * 2 - 1) + 1) / 2).clamp(0, 1)


def patches(x: torch.Tensor, labels: torch.Tensor, group0: int = 0) -> tuple[torch.Tensor, list[int]]:
    """``PATCH x PATCH`` patches (stride ``STRIDE``) with >= ``MIN_BRAIN`` brain, and their group (slice index + ``group0``)."""
    out, groups = [], []
    for n in range(len(x)):
        for i in range(0, x.shape[-2] - PATCH + 1, STRIDE):
            for j in range(0, x.shape[-1] - PATCH + 1, STRIDE):
                if float((labels[n, 0, i : i + PATCH, j : j + PATCH] > 0).float().mean()) >= MIN_BRAIN:
                    out.append(x[n, :, i : i + PATCH, j : j + PATCH])
                    groups.append(group0 + n)
    return torch.stack(out), groups


def patch_test(real: torch.Tensor, real_lab: torch.Tensor, fake: torch.Tensor, fake_lab: torch.Tensor, steps: int) -> dict:
    """Two-sample test on patches of the two slice sets (each set / its own 99.9th percentile first)."""
    pr, gr = patches(scale_to_unit(real), real_lab, 0)
    pf, gf = patches(scale_to_unit(fake), fake_lab, 1000)
    return classifier_two_sample_test(pr, pf, steps=steps, groups_real=gr, groups_fake=gf).to_dict()


def cycle_row(name: str, x: torch.Tensor, rec: torch.Tensor, brain: torch.Tensor) -> dict:
    row = {"cycle": name, "n": len(x), "psnr_slice": masked_psnr(rec, x), "psnr_brain": masked_psnr(rec, x, brain), "l1_slice": float((rec - x).abs().mean())}
    print(f"cycle {name}: PSNR slice {row['psnr_slice']:.2f} dB, brain {row['psnr_brain']:.2f} dB, L1 {row['l1_slice']:.4f}", flush=True)
    return row


def montage(rows: list[list[tuple[str, np.ndarray]]], path: Path, title: str) -> None:
    """Grid of images (rows of titled ``(H, W)`` arrays in [0, 1], shown with anterior up), temp file then rename."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), len(rows[0]), figsize=(2.6 * len(rows[0]), 2.7 * len(rows)), dpi=100, squeeze=False)
    for r, row in enumerate(rows):
        for c, (name, img) in enumerate(row):
            ax = axes[r, c]
            ax.imshow(np.asarray(img).T, cmap="gray", origin="lower", vmin=0, vmax=1, interpolation="nearest")
            ax.set_title(name, fontsize=8)
            ax.axis("off")
    fig.suptitle(title, fontsize=10)
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


def evaluate(steps: int, docs: Path, weights_dir: Path | None) -> dict:
    g_a2b, g_b2a = generators(weights_dir)
    t2, lab = dipy_t2w_on_mni_grid(DIPY_T2W_EVAL_SLICES, SIZE)
    t1, lab1 = mni_t1_on_planes(dipy_plane_affines(DIPY_T2W_EVAL_SLICES, SIZE), SIZE)
    assert torch.equal(lab, lab1)
    t2_train, lab_tr = dipy_t2w_on_mni_grid(DIPY_T2W_TRAIN_SLICES, SIZE)
    t1_train, lab1_tr = mni_t1_on_planes(dipy_plane_affines(DIPY_T2W_TRAIN_SLICES, SIZE), SIZE, allow_training_slices=True)
    brain = lab > 0
    fake_t2_raw, fake_t1_raw = translate(g_a2b, t1), translate(g_b2a, t2)
    fake_t2, fake_t1 = fake_t2_raw * brain, fake_t1_raw * brain
    groups = list(range(len(t2)))  # plane k of the real and the generated set share a fold
    kw = dict(groups_real=groups, groups_fake=groups, steps=steps)
    reps = {
        "CycleGAN T1 -> T2w vs real T2w (dipy slices 5..9)": realism_report(t2, fake_t2, real_labels=lab, fake_labels=lab, **kw),
        "identity: T1 input vs real T2w": realism_report(t2, t1, real_labels=lab, fake_labels=lab, **kw),
        "CycleGAN T2w -> T1 vs real T1 (MNI, same planes)": realism_report(t1, fake_t1, real_labels=lab, fake_labels=lab, **kw),
        "identity: T2w input vs real T1": realism_report(t1, t2, real_labels=lab, fake_labels=lab, **kw),
    }
    rows = [summary(k, v) for k, v in reps.items()]
    reference = {
        "real T2w: dipy slices 5..9 vs dipy slices 0..4 (same subject)": realism_report(t2, t2_train, real_labels=lab, fake_labels=lab_tr, steps=steps),
        "real T1: MNI on planes 5..9 vs MNI on planes 0..4": realism_report(t1, t1_train, real_labels=lab, fake_labels=lab1_tr, steps=steps),
    }
    reference_rows = [summary(k, v) for k, v in reference.items()]
    patch_sets = {
        "CycleGAN T1 -> T2w vs real T2w": (t2, fake_t2), "identity: T1 input vs real T2w": (t2, t1),
        "CycleGAN T2w -> T1 vs real T1": (t1, fake_t1), "identity: T2w input vs real T1": (t1, t2),
    }
    patch_rows = []
    for name, (real, fake) in patch_sets.items():
        patch_rows.append({"comparison": name, **patch_test(real, lab, fake, lab, steps)})
    patch_rows.append({"comparison": "reference: real T2w slices 5..9 vs 0..4", **patch_test(t2, lab, t2_train, lab_tr, steps)})
    patch_rows.append({"comparison": "reference: real T1 planes 5..9 vs 0..4", **patch_test(t1, lab, t1_train, lab1_tr, steps)})
    for r in patch_rows:
        print(f"patches {r['comparison']}: acc {r['accuracy']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}] n {r['n_test']}", flush=True)

    # cycle consistency
    ax, az = mni_heldout_axial_slices_2mm(SIZE)
    ax_lab = torch.from_numpy(np.stack([mni_tissue_labels_on_grid(mni_slice_affine_2mm(int(k), SIZE), (SIZE, SIZE)) for k in az]).astype(np.int64))[:, None]
    ax = ax * (ax_lab > 0)
    cycles = [cycle_row("T1 -> T2w -> T1, the 5 planes", t1, translate(g_b2a, translate(g_a2b, t1)), brain),
              cycle_row(f"T1 -> T2w -> T1, MNI held-out axial z = {int(az.min())}..{int(az.max())} ({len(az)} slices)", ax,
                        translate(g_b2a, translate(g_a2b, ax)), ax_lab > 0),
              cycle_row("T2w -> T1 -> T2w, dipy slices 5..9", t2, translate(g_a2b, translate(g_b2a, t2)), brain)]

    # figures
    names = list(reps)
    f = np.asarray(reps[names[0]]["spectrum"]["freqs"])
    s_a, s_i = reps[names[0]]["spectrum"], reps[names[1]]["spectrum"]
    plot_spectra({"real T2w (dipy 5..9)": (f, np.asarray(s_a["real"])), "CycleGAN T1 -> T2w (AI)": (f, np.asarray(s_a["fake"])),
                  "T1 input (identity)": (f, np.asarray(s_i["fake"]))}, docs / "realism_spectrum_a2b.png",
                 title=f"T1 -> T2w: LSD to real T2w {s_a['log_spectral_distance_db']:.2f} dB (identity {s_i['log_spectral_distance_db']:.2f} dB)")
    s_b, s_j = reps[names[2]]["spectrum"], reps[names[3]]["spectrum"]
    plot_spectra({"real T1 (MNI, same planes)": (f, np.asarray(s_b["real"])), "CycleGAN T2w -> T1 (AI)": (f, np.asarray(s_b["fake"])),
                  "T2w input (identity)": (f, np.asarray(s_j["fake"]))}, docs / "realism_spectrum_b2a.png",
                 title=f"T2w -> T1: LSD to real T1 {s_b['log_spectral_distance_db']:.2f} dB (identity {s_j['log_spectral_distance_db']:.2f} dB)")
    show = (0, 2, 4)
    rec_a, rec_b = translate(g_b2a, translate(g_a2b, t1)), translate(g_a2b, translate(g_b2a, t2))
    unit = lambda x: (x / max(float(torch.quantile(x.flatten(), 0.999)), 1e-6)).clamp(0, 1)  # noqa: E731
    u_t2, u_f2 = unit(t2), unit(fake_t2_raw)
    montage([[(f"T1 input (plane {DIPY_T2W_EVAL_SLICES[k]})", t1[k, 0]), ("T1 -> T2w (AI-generated)", u_f2[k, 0]), ("real T2w, same plane (dipy)", u_t2[k, 0]),
              ("back to T1 (cycle)", rec_a[k, 0])] for k in show], docs / "realism_montage_a2b.png",
            title="T1 -> T2w on held-out planes (each column / its 99.9th percentile; generated output unmasked)")
    montage([[(f"T2w input (dipy slice {DIPY_T2W_EVAL_SLICES[k]})", u_t2[k, 0]), ("T2w -> T1 (AI-generated)", fake_t1_raw[k, 0]), ("real T1, same plane (MNI)", t1[k, 0]),
              ("back to T2w (cycle)", unit(rec_b)[k, 0])] for k in show], docs / "realism_montage_b2a.png",
            title="T2w -> T1 on held-out slices (generated output unmasked)")
    background = {"a2b_max_outside_brain": float(fake_t2_raw[~brain].max()), "a2b_mean_outside_brain": float(fake_t2_raw[~brain].mean()),
                  "b2a_max_outside_brain": float(fake_t1_raw[~brain].max()), "b2a_mean_outside_brain": float(fake_t1_raw[~brain].mean())}
    print("background of the generated images (before masking):", background, flush=True)
    return {"protocol": __doc__.split("\n\n")[1:3], "steps": steps, "rows": rows, "reference_rows": reference_rows, "patch_rows": patch_rows,
            "cycle_rows": cycles, "background": background, "figures": ["realism_montage_a2b.png", "realism_montage_b2a.png", "realism_spectrum_a2b.png", "realism_spectrum_b2a.png"],
            "weights": str(weights_dir) if weights_dir else "bundle", "reports": {**reps, **reference}}


def criteria(result: dict) -> list[str]:
    """The issue's acceptance checks, each direction: ordering, both ratios within 20 %, LSD <= half the identity's,
    two-sample accuracy <= 0.85 (slices and patches), cycle PSNR >= 28 dB (whole slice and brain)."""
    rows = {r["comparison"]: r for r in result["rows"]}
    patches_ = {r["comparison"]: r for r in result["patch_rows"]}
    lines = ["| check | T1 -> T2w | T2w -> T1 |", "|---|---|---|"]
    pairs = (("CycleGAN T1 -> T2w vs real T2w (dipy slices 5..9)", "identity: T1 input vs real T2w", "CycleGAN T1 -> T2w vs real T2w",
              result["cycle_rows"][0]),
             ("CycleGAN T2w -> T1 vs real T1 (MNI, same planes)", "identity: T2w input vs real T1", "CycleGAN T2w -> T1 vs real T1", result["cycle_rows"][2]))
    cells: dict[str, list[str]] = {}

    def ok(flag: bool) -> str:
        return "**pass**" if flag else "**fail**"

    for model, ident, patch, cyc in pairs:
        r, i, p = rows[model], rows[ident], patches_[patch]
        errs = list(r["ratio_error"].values())
        cells.setdefault("tissue order matches the real target", []).append(f"{ok(r['ordering_matches'])} ({' > '.join(SHORT[x] for x in r['fake_ordering'])})")
        cells.setdefault("CSF/GM and GM/WM within 20 % of the real target", []).append(
            f"{ok(all(e is not None and abs(e) <= 0.2 for e in errs))} ({' / '.join(f'{100 * e:+.0f} %' for e in errs)})")
        cells.setdefault("LSD <= half the identity's", []).append(f"{ok(r['lsd_db'] <= 0.5 * i['lsd_db'])} ({r['lsd_db']:.2f} vs {i['lsd_db']:.2f} dB)")
        cells.setdefault("two-sample accuracy <= 0.85, whole slices", []).append(f"{ok(r['accuracy'] <= 0.85)} ({r['accuracy']:.2f}, n = {2 * min(r['n_real'], r['n_fake'])})")
        cells.setdefault("two-sample accuracy <= 0.85, 32 x 32 patches", []).append(f"{ok(p['accuracy'] <= 0.85)} ({p['accuracy']:.2f}, n = {p['n_test']})")
        cells.setdefault("cycle PSNR >= 28 dB (whole slice / brain)", []).append(
            f"{ok(cyc['psnr_slice'] >= 28)} ({cyc['psnr_slice']:.2f} / {cyc['psnr_brain']:.2f} dB)")
    lines += [f"| {k} | {v[0]} | {v[1]} |" for k, v in cells.items()]
    return lines


def write_docs(docs: Path, result: dict) -> None:
    """``docs/realism.json`` and the section between the realism markers of ``docs/README.md`` (re-read right before writing)."""
    tmp = docs / ".realism.json.tmp"
    tmp.write_text(json.dumps(result, indent=4) + "\n", encoding="utf-8")
    os.replace(tmp, docs / "realism.json")
    steps = result["steps"]
    patch_lines = ["| comparison (32 x 32 patches, >= 75 % brain, stride 8) | predictions | two-sample accuracy [95 % CI] | AUC |", "|---|---|---|---|"]
    patch_lines += [f"| {r['comparison']} | {r['n_test']} | {r['accuracy']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}] | {r['auc']:.3f} |" for r in result["patch_rows"]]
    cycle_lines = ["| cycle | slices | PSNR whole slice (dB) | PSNR brain (dB) | L1 whole slice |", "|---|---|---|---|---|"]
    cycle_lines += [f"| {r['cycle']} | {r['n']} | {r['psnr_slice']:.2f} | {r['psnr_brain']:.2f} | {r['l1_slice']:.4f} |" for r in result["cycle_rows"]]
    b = result["background"]
    lines = ["<!-- realism:start -->", "## Realism (suite)", "",
             "Produced by `python scripts/evaluate_cyclegan.py` (also run by `python scripts/evaluate_realism.py --only cyclegan`; numbers in "
             "`docs/realism.json`); metrics: `medgen_core.evaluation.realism`, also run by `medgen evaluate realism REAL FAKE --out DIR`.", "",
             "**Evaluation set.** The only offline T2w is dipy's 10-slice b=0 scan of one subject. Slices 5..9 are held out (training "
             "used 0..4). Each is resampled within its own plane onto the generators' 128 x 128 2 mm MNI grid (same field of view and "
             "pixel size as the T1 input; an affine registration of the MNI152 template places the planes), brain only. The T1 side is "
             "the MNI152 T1 sampled on the same 5 tilted planes (MNI z = 80..97, inside the held-out slab that no generator saw), so both "
             "sides show the same anatomical level. Tissue labels: the MNI152 maps on those planes. Generated images are masked "
             "to the same brain outline (before masking, the T1 -> T2w output outside the brain has mean "
             f"{b['a2b_mean_outside_brain']:.4f}, max {b['a2b_max_outside_brain']:.3f}; T2w -> T1 mean {b['b2a_mean_outside_brain']:.4f}, "
             f"max {b['b2a_max_outside_brain']:.3f}, in [0, 1]). Each set is scaled by its own 99.9th percentile.", "",
             f"Two-sample test: a small CNN trained from scratch ({steps} steps, 2 folds) to tell real from generated; accuracy over all "
             "held-out predictions, 0.5 = indistinguishable. On whole slices that is 5 vs 5 (10 predictions), so the intervals are very "
             "wide; on 32 x 32 patches many more predictions, with a slice's patches kept in one fold. Even so the real T2w is one "
             "subject and the T1 is a smooth 152-subject average: the reference rows show what real-vs-real scores here. LSD: "
             "log-spectral distance of the radially averaged power spectra (0 = same spectrum); HF excess > 0 = too much "
             "high-frequency power (noise, speckle), < 0 too little (blur). Ratio errors are generated / real - 1.", "",
             "### Acceptance (issue 17)", "", *criteria(result), "",
             "### Whole slices", "", *table(result["rows"]), "",
             "### Patches", "", *patch_lines, "",
             "### Cycle consistency (intensities in [0, 1])", "", *cycle_lines, "",
             "### Reference rows (real vs real)", "", *table(result["reference_rows"]), "",
             *(f"![{Path(p).stem}]({p})" for p in result["figures"]), "<!-- realism:end -->"]
    readme = docs / "README.md"
    text = readme.read_text(encoding="utf-8")
    section = "\n".join(lines)
    if "<!-- realism:start -->" in text:
        text = re.sub(r"<!-- realism:start -->.*?<!-- realism:end -->", lambda _: section, text, flags=re.S)
    else:
        text = text.rstrip("\n") + f"\n\n{section}\n"
    tmp = docs / ".README.md.tmp"
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, readme)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=300, help="two-sample classifier steps per fold (default 300)")
    ap.add_argument("--docs-dir", type=Path, default=None, help="write here instead of the bundle's docs/ (a README copy is made)")
    ap.add_argument("--weights-dir", type=Path, default=None, help="evaluate a run folder's generator_a2b.pt / generator_b2a.pt instead of the bundle's")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--from-json", action="store_true", help="only rewrite the README section from docs/realism.json (no compute)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    docs = args.docs_dir or BUNDLE / "docs"
    docs.mkdir(parents=True, exist_ok=True)
    if args.docs_dir and not (docs / "README.md").exists():
        (docs / "README.md").write_text((BUNDLE / "docs" / "README.md").read_text(encoding="utf-8"), encoding="utf-8")
    if args.from_json:
        write_docs(docs, json.loads((docs / "realism.json").read_text(encoding="utf-8")))
        print(f"rewrote the README section from {docs / 'realism.json'}", flush=True)
        return 0
    result = evaluate(args.steps, docs, args.weights_dir)
    write_docs(docs, result)
    print("\n".join(criteria(result)), flush=True)
    print(f"wrote {docs / 'realism.json'} and the README section", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
