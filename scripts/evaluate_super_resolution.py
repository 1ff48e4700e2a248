#!/usr/bin/env python
"""Evaluate the shipped super-resolution models against bicubic (and the fitted linear filter), in and out of domain.

In-domain: the held-out axial slab of the MNI152 T1 (never used in training), brain foreground: the default
and the degradation-specific variants, x2 and x4.

Default candidates (``x<s>_mixed``, the RRDB trained on the MNI T1, and ``x<s>_synthetic``, the FastSRNet
trained on the synthetic generator) on every test set, every degradation, every cell reported:

* ``mni_heldout``: the in-domain slab above;
* ``dipy_t2``: dipy's T2-weighted b=0 volume S0_10 (another contrast, 2 mm, oblique), head foreground;
* ``contrast_random``: the held-out MNI slab's tissue maps rendered with random per-tissue contrasts, bias
  fields and gamma (the generator's transforms, deformation seed ``HELD_OUT_SEED``, never a training seed;
  the training never reads the slab), 2 draws per slice, head foreground;
* ``bandlimited``: the held-out MNI slab band-limited to 0.6 of Nyquist in-plane (a target stored at a finer
  matrix than it was acquired at, zero-filled), brain foreground;
* ``t1_other_subject``: dipy's ``t1_coronal_slice`` (a T1 coronal slice of another subject, 256x256),
  foreground > 5 % of its 99.9th percentile.

Every degradation is grid-centred (see medgen_core.transforms.degradation). Writes the bundle's
docs/results.json, the tables in docs/README.md (between the results markers) and montage PNGs.

    python scripts/evaluate_super_resolution.py
    python scripts/evaluate_super_resolution.py --candidate x2_synthetic=monai_bundles/brain_mri_super_resolution/runs/x2_synthetic/checkpoint.pt --no-write
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from medgen_core.bundles import get_bundle, load_verified_network
from medgen_core.data.samples import MNI_HELDOUT_AXIAL, load_dipy_t2, load_mni152_brain_mask, load_mni152_t1, mni_training_axial_indices
from medgen_core.evaluation.sr_baselines import apply_linear_filter, bicubic, evaluate_sr, fit_linear_filter
from medgen_core.utils.figures import save_montage
from medgen_core.networks.sr import sr_network
from medgen_core.transforms.degradation import DEGRADATIONS, crop_to_multiple, degrade

BUNDLE = Path(__file__).resolve().parents[1] / "monai_bundles" / "brain_mri_super_resolution"
#: Seed of the contrast-randomised test draws (training streams use the run seed and its offsets, small integers).
HELD_OUT_SEED = 20_250_915
BANDWIDTH = 0.6
#: Suffix of the candidate "default variant with its never-worse gate" (the full upscaler, as the CLI runs it).
GATED = "+gate"
FAST_SPEC = {"architecture": "fast", "num_feat": 48, "num_block": 4}


def slices(vol: np.ndarray, idx) -> torch.Tensor:
    return torch.from_numpy(np.stack([vol[:, :, z] for z in idx]).astype(np.float32))[:, None]


def load_model(variant: dict) -> torch.nn.Module:
    net = sr_network(variant.get("network"), int(variant["scale"]))
    return load_verified_network(net, BUNDLE / variant["file"], variant["sha256"])


def load_checkpoint_model(path: Path, scale: int) -> torch.nn.Module:
    """A FastSRNet from a training run's ``checkpoint.pt`` or ``model.pt`` (not yet installed, no sha256 to check)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    net = sr_network(FAST_SPEC, scale)
    net.load_state_dict(state.get("net", state))
    return net.eval()


def model_fn(net: torch.nn.Module, norm: float):
    """The inference normalisation: divide by the volume's 99.9th percentile, upscale, multiply back."""
    return lambda lr: net(lr / norm) * norm


def gated_fn(net: torch.nn.Module, scale: int, reports: list | None = None):
    """The full upscaler with the never-worse gate on the stack ``lr`` ``(N, 1, h, w)`` taken as one volume (slices on
    the last axis): its own normalisation, self-check, blend / fallback, consistency projection and clamp."""
    from medgen_core.inference import VolumeSuperResolver
    from medgen_core.io import Volume

    def run(lr: torch.Tensor) -> torch.Tensor:
        vol = Volume(array=lr[:, 0].permute(1, 2, 0).numpy().copy(), affine=np.eye(4), path=None, format="nifti")
        resolver = VolumeSuperResolver(net, scale, slice_axis=2, gate=True, gate_degradation="synthetic", progress=False)
        out = resolver(vol)
        if reports is not None:
            reports.append(resolver.last_gate.to_dict())
        return torch.from_numpy(np.asarray(out.array, dtype=np.float32)).permute(2, 0, 1)[:, None]

    return run


def dipy_foreground(vol: np.ndarray) -> np.ndarray:
    mask = vol > 0.1 * np.percentile(vol, 99)
    mask = ndimage.binary_opening(mask, iterations=1)
    return np.stack([ndimage.binary_fill_holes(mask[:, :, z]) for z in range(mask.shape[2])], axis=2)


# -- test sets: name -> (hr (N, 1, H, W), foreground mask, normalisation of the model input) -------------------------

def mni_heldout() -> tuple[torch.Tensor, torch.Tensor, float]:
    mni = load_mni152_t1().array
    lo, hi = MNI_HELDOUT_AXIAL
    return slices(mni, range(lo, hi)), slices(load_mni152_brain_mask().astype(np.float32), range(lo, hi)) > 0.5, float(np.percentile(mni, 99.9))


def dipy_t2() -> tuple[torch.Tensor, torch.Tensor, float]:
    dipy = load_dipy_t2().array
    hr = slices(dipy / float(np.percentile(dipy, 99.9)), range(dipy.shape[2]))
    return hr, slices(dipy_foreground(dipy).astype(np.float32), range(dipy.shape[2])) > 0.5, 1.0


def contrast_random(draws: int = 2) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Random-contrast renderings of the held-out slab (see the module docstring), in [0, 1], head foreground."""
    from medgen_core.data.synthetic_sr import mni_synthetic_source
    from medgen_core.transforms.synthetic_mr import RandBiasFieldd, RandGammaNormalised, RandHeadTissuesd, RandSpatialDeformd, RandTissueContrastd

    src = mni_synthetic_source(exclude_heldout=False)
    size = (src.tissue.shape[1] // 4 * 4, src.tissue.shape[2] // 4 * 4)
    chain = [RandSpatialDeformd(("tissue", "t1"), size, scale_range=0.1), RandHeadTissuesd("tissue", "probs"),
             RandTissueContrastd("probs", "t1", "image", real_t1_prob=0.0), RandBiasFieldd("image"), RandGammaNormalised("image", "hr")]
    seeds = np.random.RandomState(HELD_OUT_SEED)
    for t in chain:
        t.set_random_state(seed=int(seeds.randint(2**31 - 1)))
    hrs, masks = [], []
    lo, hi = MNI_HELDOUT_AXIAL
    for z in range(lo, hi):
        for _ in range(draws):
            d = {"tissue": src.tissue[:, :, :, z], "t1": src.t1[:, :, :, z], "centre": ((src.tissue.shape[1] - 1) / 2, (src.tissue.shape[2] - 1) / 2)}
            for t in chain:
                d = t(d)
            hrs.append(d["hr"])
            masks.append(d["probs"][:1] < 0.5)
    return torch.stack(hrs), torch.stack(masks), 1.0


def bandlimited() -> tuple[torch.Tensor, torch.Tensor, float]:
    from medgen_core.transforms.resolution_sim import bandlimit

    hr, mask, norm = mni_heldout()
    return bandlimit(hr / norm, (BANDWIDTH, BANDWIDTH), dims=(-2, -1)).clamp_min(0.0), mask, 1.0


def t1_other_subject() -> tuple[torch.Tensor, torch.Tensor, float]:
    import dipy

    arr = np.load(Path(dipy.__file__).parent / "data" / "files" / "t1_coronal_slice.npy").astype(np.float32)
    norm = float(np.percentile(arr, 99.9))
    mask = ndimage.binary_fill_holes(arr > 0.05 * norm)
    return torch.from_numpy(arr / norm)[None, None], torch.from_numpy(mask)[None, None], 1.0


TEST_SETS = {"mni_heldout": mni_heldout, "dipy_t2": dipy_t2, "contrast_random": contrast_random, "bandlimited": bandlimited,
             "t1_other_subject": t1_other_subject}
TEST_SET_TEXT = {
    "mni_heldout": f"MNI152 2009 T1 (nilearn), held-out axial slices z={MNI_HELDOUT_AXIAL[0]}..{MNI_HELDOUT_AXIAL[1] - 1}, brain foreground",
    "dipy_t2": "dipy S0_10 T2-weighted b=0 (128x128x10, 2 mm, oblique), normalised by its 99.9th percentile, head foreground",
    "contrast_random": f"held-out MNI slab rendered with random tissue contrasts / bias / gamma, seed {HELD_OUT_SEED}, 2 draws per slice, head foreground",
    "bandlimited": f"held-out MNI slab band-limited to {BANDWIDTH} of Nyquist in-plane (zero-filled k-space), brain foreground",
    "t1_other_subject": "dipy t1_coronal_slice (T1, another subject, coronal, 256x256), foreground > 5% of the 99.9th percentile",
}


def _row(r: dict, **keys) -> dict:
    return {**keys, **{f"{k}_{m}": v[m] for k, v in r.items() for m in ("psnr", "ssim")}}


def evaluate_in_domain(nets: dict, variants: dict, defaults: dict, test: tuple, train_hr: torch.Tensor, montages: bool) -> list[dict]:
    """The in-domain table: the default and the degradation-specific variant per scale and degradation."""
    test_hr, test_mask, norm = test
    rows = []
    for scale in (2, 4):
        default = defaults[str(scale)]
        for degradation in DEGRADATIONS:
            weights = fit_linear_filter(train_hr, scale, degradation)
            candidates = {f"default ({default})": default} if default in nets else {}
            specific = f"x{scale}_{degradation}"
            if specific in nets and specific != default:
                candidates[f"specific ({specific})"] = specific
            for label, name in candidates.items():
                r = evaluate_sr(test_hr, test_mask, scale, degradation, model_fn(nets[name], norm), weights)
                rows.append(_row(r, scale=scale, degradation=degradation, model=label))
                print(rows[-1], flush=True)
            best = specific if specific in nets else default
            if montages and best in nets and degradation == "gaussian":
                hr = crop_to_multiple(test_hr[10:11], scale, (-2, -1))
                lr = degrade(hr, scale, degradation)
                up = bicubic(lr, scale)
                cols = [("bicubic", up), ("fitted 7x7 linear filter", apply_linear_filter(up, weights)), (f"MedGen {best}", model_fn(nets[best], norm)(lr)), ("ground truth", hr)]
                lo = MNI_HELDOUT_AXIAL[0]
                save_montage([(n, t[0, 0].clamp(0, 1).numpy()) for n, t in cols], BUNDLE / "docs" / f"montage_x{scale}_{degradation}.png",
                             title=f"MNI152 held-out slice z={lo + 10}, x{scale} {degradation}", zoom=(slice(50, 110), slice(60, 130)))
    return rows


def evaluate_candidates(nets: dict, candidates: dict[int, list[str]], sets: list[str], train_hr: torch.Tensor) -> list[dict]:
    """Every candidate default on every test set and degradation: one row per (scale, set, degradation), with bicubic
    and the linear filter fitted on the MNI training slices for that exact degradation (an oracle of the degradation)."""
    rows = []
    filters = {(s, d): fit_linear_filter(train_hr, s, d) for s in candidates for d in DEGRADATIONS}
    for name in sets:
        hr, mask, norm = TEST_SETS[name]()
        for scale, models in candidates.items():
            for degradation in DEGRADATIONS:
                row = {"scale": scale, "test_set": name, "degradation": degradation}
                for i, model in enumerate(models):
                    reports: list = []
                    fn = gated_fn(nets[model[: -len(GATED)]], scale, reports) if model.endswith(GATED) else model_fn(nets[model], norm)
                    r = evaluate_sr(hr, mask, scale, degradation, fn, filters[(scale, degradation)] if i == 0 else None)
                    if reports:
                        g = reports[-1]
                        row[f"{model}_gate"] = {"decision": g["decision"], "alpha": g["alpha"], "degradation": g["degradation"].get("kind"),
                                                "projection": g["projection"].split(":")[0]}
                    if i == 0:
                        row.update(bicubic_psnr=r["bicubic"]["psnr"], bicubic_ssim=r["bicubic"]["ssim"],
                                   linear_filter_psnr=r["linear_filter"]["psnr"], linear_filter_ssim=r["linear_filter"]["ssim"])
                    row[f"{model}_psnr"], row[f"{model}_ssim"] = r["model"]["psnr"], r["model"]["ssim"]
                rows.append(row)
                print(row, flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--candidate", action="append", default=[], metavar="NAME=CHECKPOINT",
                    help="evaluate a FastSRNet training checkpoint as variant NAME (x<scale>_...), e.g. before installing it")
    ap.add_argument("--sets", nargs="+", default=list(TEST_SETS), choices=list(TEST_SETS))
    ap.add_argument("--no-write", action="store_true", help="print only; do not write docs/results.json, README tables, montages")
    ap.add_argument("--skip-in-domain", action="store_true", help="skip the per-variant in-domain table")
    args = ap.parse_args(argv)
    torch.set_grad_enabled(False)
    bundle = get_bundle(BUNDLE)
    variants = dict(bundle.variants)
    defaults = bundle.metadata["medgen"]["default_variant"]
    nets = {name: load_model(v) for name, v in variants.items()}
    for spec in args.candidate:
        name, path = spec.split("=", 1)
        scale = int(re.match(r"x(\d+)_", name).group(1))
        nets[name], variants[name] = load_checkpoint_model(Path(path), scale), {"scale": scale, "file": path}
    candidates = {s: [n for n in (f"x{s}_mixed", f"x{s}_synthetic") if n in nets] + ([defaults[str(s)] + GATED] if defaults.get(str(s)) in nets else [])
                  for s in (2, 4)}
    candidates = {s: m for s, m in candidates.items() if m}

    results: dict = {"protocol": {
        **{f"test_set_{k}": v for k, v in TEST_SET_TEXT.items()},
        "degradations": "grid-centred: gaussian sigma=0.5*scale HR voxels + decimation; block averaging; k-space truncation",
        "linear_filter": "7x7 kernel + bias after bicubic, least squares on every other MNI training slice, per scale and degradation",
    }}
    train_hr = slices(load_mni152_t1().array, mni_training_axial_indices()[::2])
    if not args.skip_in_domain:
        results["mni152_heldout"] = evaluate_in_domain(nets, variants, defaults, mni_heldout(), train_hr, montages=not args.no_write)
    results["candidates"] = {str(s): m for s, m in candidates.items()}
    results["default_candidates"] = evaluate_candidates(nets, candidates, args.sets, train_hr)
    print("\n".join(_candidate_table(results["default_candidates"], candidates)))
    if not args.no_write:
        (BUNDLE / "docs" / "results.json").write_text(json.dumps(results, indent=4) + "\n", encoding="utf-8")
        write_table(results, candidates)
    return 0


def _table(rows: list[dict]) -> list[str]:
    out = ["| scale | degradation | model | bicubic PSNR / SSIM | linear filter PSNR / SSIM | model PSNR / SSIM | gain vs bicubic | gain vs linear |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(
            f"| x{r['scale']} | {r['degradation']} | {r['model']} | {r['bicubic_psnr']:.2f} / {r['bicubic_ssim']:.4f} | "
            f"{r['linear_filter_psnr']:.2f} / {r['linear_filter_ssim']:.4f} | {r['model_psnr']:.2f} / {r['model_ssim']:.4f} | "
            f"{r['model_psnr'] - r['bicubic_psnr']:+.2f} dB | {r['model_psnr'] - r['linear_filter_psnr']:+.2f} dB |"
        )
    return out


def _candidate_table(rows: list[dict], candidates: dict[int, list[str]]) -> list[str]:
    models = sorted({m for ms in candidates.values() for m in ms}, key=lambda n: n.split("_", 1)[1])
    kinds = sorted({m.split("_", 1)[1] for m in models})
    head = ("| scale | test set | degradation | bicubic PSNR / SSIM | linear filter (oracle) PSNR / SSIM | "
            + " | ".join(f"x*_{k} PSNR / SSIM (gain vs bicubic)" for k in kinds) + " |")
    out = [head, "|---|---|---|---|---|" + "---|" * len(kinds)]
    for r in rows:
        cells = []
        for k in kinds:
            name = f"x{r['scale']}_{k}"
            gate = r.get(name + "_gate")
            note = f"; {gate['decision']}, D={gate['degradation']}" + ("" if gate["projection"] == "applied" else ", no projection") if gate else ""
            cells.append(f"{r[name + '_psnr']:.2f} / {r[name + '_ssim']:.4f} ({r[name + '_psnr'] - r['bicubic_psnr']:+.2f} dB{note})"
                         if name + "_psnr" in r else "-")
        out.append(f"| x{r['scale']} | {r['test_set']} | {r['degradation']} | {r['bicubic_psnr']:.2f} / {r['bicubic_ssim']:.4f} | "
                   f"{r['linear_filter_psnr']:.2f} / {r['linear_filter_ssim']:.4f} | " + " | ".join(cells) + " |")
    return out


def write_table(results: dict, candidates: dict[int, list[str]]) -> None:
    lines = ["<!-- results:start -->", "Produced by `python scripts/evaluate_super_resolution.py` (numbers also in `docs/results.json`).", ""]
    if "mni152_heldout" in results:
        lines += ["**In-domain: MNI152 held-out slab (brain foreground)**", "", *_table(results["mni152_heldout"]), ""]
    lines += ["**The default model in and out of domain** (`x*_mixed`: RRDB trained on the MNI T1; `x*_synthetic`: the default, "
              "FastSRNet trained on the synthetic generator, plain network output; `x*_synthetic+gate`: the default as `medgen upscale` "
              "runs it, with the never-worse gate (decision and the degradation model it estimated in brackets); the linear filter is "
              "fitted on MNI training slices for the exact degradation of the row, which no model is told). Test sets:", "",
              *[f"- `{k}`: {v}" for k, v in TEST_SET_TEXT.items()], "", *_candidate_table(results["default_candidates"], candidates),
              "<!-- results:end -->"]
    readme = BUNDLE / "docs" / "README.md"
    text = readme.read_text(encoding="utf-8") if readme.exists() else "<!-- results:start -->\n<!-- results:end -->\n"
    text = re.sub(r"<!-- results:start -->.*<!-- results:end -->", "\n".join(lines), text, flags=re.S)
    readme.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
