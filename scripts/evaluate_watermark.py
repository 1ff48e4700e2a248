#!/usr/bin/env python
"""Robustness study of medgen's voxel watermark (:mod:`medgen_core.provenance.watermark`).

Protocol (offline, deterministic with the seed below; a few minutes on 2 CPU cores):

- Real volumes, all shipped inside installed packages (nothing is downloaded): the nilearn MNI152
  2009 T1 template at 1 mm (a random 128x128x96 crop) and 2 mm, its grey- and white-matter maps
  and two images derived from them (a T2-like contrast from the tissue maps, a skull-stripped T1),
  the nilearn sample statistical map, dipy's S0_10 b=0 (plus an in-plane x2 cubic upsampling, the
  shape of an SR output), aniso_vox, its denoised ascm_out_test and test_piesno; then 12 variants
  (random crop of 60-90 % per axis, random axis flip, random intensity transform). dipy's DWI
  samples (small_64D, small_101D, small_25) are 10x10x10 or smaller, below the detector's minimum
  of 4096 object voxels, and are left out.
- Each volume is used twice: unmarked (false positives) and marked with the public mark at the
  default strength (detections). Both go through every transformation below, through real files
  (nibabel, SimpleITK, medgen's DICOM writer) where the transformation is a file operation.
- Null distribution beyond the public key: every unmarked and marked volume is also scored with
  ``--keys`` keys nobody embedded.

    python scripts/evaluate_watermark.py                # rewrites the results section of docs/watermark.md
    python scripts/evaluate_watermark.py --out /tmp/wm  # writes watermark_results.{md,json,png} there
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")

from scipy import ndimage  # noqa: E402
from tqdm import tqdm  # noqa: E402

from medgen_core.io import Volume, read_volume, write_volume  # noqa: E402
from medgen_core.provenance.watermark import (  # noqa: E402
    DEFAULT_MAX_MODULATION,
    DEFAULT_STRENGTH,
    DEFAULT_THRESHOLD,
    SCALE_RANGE,
    SCHEME,
    SCHEME_VERSION,
    TILE_PERIOD,
    detect_watermark,
    detect_watermark_keys,
    embed_watermark,
)

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "watermark.md"

LARGE_VOXELS = 100_000  # "large" volumes in the table: at least this many voxels after the transformation


# ----------------------------------------------------------------------------------------- volumes
def _nifti_volume(path: str | Path, index: int | None = None) -> Volume:
    import nibabel as nib

    img = nib.load(str(path))
    data = np.asarray(img.dataobj, dtype=np.float32)
    if index is not None:
        data = data[..., index]
    return Volume(data, img.affine)


def real_volumes(rng: np.random.Generator) -> list[tuple[str, Volume]]:
    """The 12 base volumes and 12 random variants (crop, flip, intensity), as ``(name, volume)``."""
    import dipy
    import nilearn
    from nilearn import datasets

    def nl(img) -> Volume:
        return Volume(np.asarray(img.get_fdata(), dtype=np.float32), img.affine)

    dipy_dir = Path(dipy.__file__).parent / "data" / "files"
    t1_2 = nl(datasets.load_mni152_template(resolution=2))
    t1_1 = nl(datasets.load_mni152_template(resolution=1))
    gm = nl(datasets.load_mni152_gm_template(resolution=2))
    wm = nl(datasets.load_mni152_wm_template(resolution=2))
    mask = datasets.load_mni152_brain_mask(resolution=2).get_fdata() > 0.5
    csf = np.clip(1.0 - gm.array - wm.array, 0.0, 1.0) * mask
    s0 = _nifti_volume(dipy_dir / "S0_10slices.nii.gz", 0)
    s0_x2 = Volume(ndimage.zoom(s0.array, (2, 2, 1), order=3).clip(0), s0.affine @ np.diag([0.5, 0.5, 1, 1]))
    o = rng.integers(0, np.array(t1_1.shape) - (128, 128, 96) + 1)
    base = [
        ("mni_t1_2mm", t1_2),
        ("mni_t1_1mm_crop128", Volume(t1_1.array[o[0]:o[0] + 128, o[1]:o[1] + 128, o[2]:o[2] + 96], t1_1.affine)),
        ("mni_gm_2mm", gm),
        ("mni_wm_2mm", wm),
        ("mni_t2like_2mm", Volume(1000 * (1.0 * csf + 0.55 * gm.array + 0.3 * wm.array), t1_2.affine)),
        ("mni_t1_brain_2mm", Volume(t1_2.array * mask, t1_2.affine)),
        ("nilearn_statmap_3mm", _nifti_volume(Path(nilearn.__file__).parent / "datasets" / "data" / "image_10426.nii.gz")),
        ("dipy_s0_10", s0),
        ("dipy_s0_10_x2", s0_x2),
        ("dipy_aniso_vox", _nifti_volume(dipy_dir / "aniso_vox.nii.gz")),
        ("dipy_ascm_out", _nifti_volume(dipy_dir / "ascm_out_test.nii.gz")),
        ("dipy_piesno", _nifti_volume(dipy_dir / "test_piesno.nii.gz")),
    ]
    variants = []
    for i, (name, vol) in enumerate(base):
        shape = np.array(vol.shape)
        size = np.maximum(1, np.round(shape * rng.uniform(0.6, 0.9, 3))).astype(int)
        size[shape < 16] = shape[shape < 16]  # keep thin axes whole
        start = rng.integers(0, shape - size + 1)
        a = vol.array[tuple(slice(s, s + n) for s, n in zip(start, size))]
        a = np.flip(a, axis=int(rng.integers(0, 3)))
        if i % 2:
            lo, hi = float(a.min()), float(a.max())
            a = lo + (hi - lo) * ((a - lo) / (hi - lo)) ** rng.uniform(0.6, 1.6)  # gamma
        else:
            a = a * rng.uniform(0.3, 3.0) + rng.uniform(-0.5, 0.5) * float(np.ptp(a))
        variants.append((f"{name}_variant", Volume(np.ascontiguousarray(a), vol.affine)))
    return base + variants


# --------------------------------------------------------------------------------- transformations
def _sitk_image(vol: Volume):
    import SimpleITK as sitk

    from medgen_core.io import ras_to_lps

    image = sitk.GetImageFromArray(np.ascontiguousarray(vol.array.transpose(2, 1, 0)))
    lps = ras_to_lps(vol.affine)
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetDirection(tuple(float(v) for v in (lps[:3, :3] / spacing).ravel()))
    image.SetOrigin(tuple(float(v) for v in lps[:3, 3]))
    return image


def _resample(vol: Volume, factor: float) -> np.ndarray:
    """Resample to ``round(factor * size)`` voxels over the same physical box (SimpleITK, linear)."""
    import SimpleITK as sitk

    image = _sitk_image(vol)
    size = [max(1, int(round(n * factor))) for n in image.GetSize()]
    size = [n if old > 1 else 1 for n, old in zip(size, image.GetSize())]
    spacing = [s * old / new for s, old, new in zip(image.GetSpacing(), image.GetSize(), size)]
    direction = np.array(image.GetDirection()).reshape(3, 3)
    shift = direction @ ((np.array(spacing) - np.array(image.GetSpacing())) / 2)
    out = sitk.Resample(image, size, sitk.Transform(), sitk.sitkLinear, tuple(np.array(image.GetOrigin()) + shift),
                        spacing, image.GetDirection(), 0.0, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(out).transpose(2, 1, 0)


def _nib_resave(vol: Volume, tmp: Path, dtype) -> np.ndarray:
    import nibabel as nib

    img = nib.Nifti1Image(vol.array, vol.affine)
    img.set_data_dtype(dtype)  # int16: nibabel chooses scl_slope / scl_inter
    nib.save(img, tmp / "a.nii.gz")
    return read_volume(tmp / "a.nii.gz", strict=False).array


def _sitk_resave(vol: Volume, tmp: Path, suffix: str) -> np.ndarray:
    import SimpleITK as sitk

    write_volume(vol, tmp / "a.nii.gz")
    sitk.WriteImage(sitk.ReadImage(str(tmp / "a.nii.gz")), str(tmp / f"b{suffix}"), True)
    return read_volume(tmp / f"b{suffix}", strict=False).array


def _nifti_nrrd_nifti(vol: Volume, tmp: Path) -> np.ndarray:
    import SimpleITK as sitk

    write_volume(vol, tmp / "a.nii.gz")
    sitk.WriteImage(sitk.ReadImage(str(tmp / "a.nii.gz")), str(tmp / "b.nrrd"), True)
    sitk.WriteImage(sitk.ReadImage(str(tmp / "b.nrrd")), str(tmp / "c.nii.gz"), True)
    return read_volume(tmp / "c.nii.gz", strict=False).array


def _dicom_roundtrip(vol: Volume, tmp: Path) -> np.ndarray:
    """Through medgen's DICOM writer and back; a sheared affine (DICOM planes cannot hold it) becomes its spacing."""
    from medgen_core.errors import ImageWriteError
    from medgen_core.io.dicom_writer import dicom_representation, write_dicom_series

    try:
        dicom_representation(vol)
    except ImageWriteError:
        vol = Volume(vol.array, np.diag([*vol.spacing, 1.0]))
    write_volume(vol, tmp / "a.nii.gz")
    write_dicom_series(read_volume(tmp / "a.nii.gz", strict=False), tmp / "dicom", series_description="watermark study")
    return read_volume(tmp / "dicom", strict=False).array


def _crop(a: np.ndarray, rng: np.random.Generator, axes: tuple[int, ...]) -> np.ndarray:
    size = [n // 2 if i in axes and n >= 8 else n for i, n in enumerate(a.shape)]
    start = [int(rng.integers(0, n - s + 1)) for n, s in zip(a.shape, size)]
    return a[tuple(slice(o, o + s) for o, s in zip(start, size))]


def _to_int16_4095(a: np.ndarray) -> np.ndarray:
    lo, hi = float(a.min()), float(a.max())
    return np.round((a - lo) / (hi - lo) * 4095).astype(np.int16)


Transform = Callable[[Volume, np.random.Generator, Path], np.ndarray]

#: name -> (transformation, is an expected failure case)
TRANSFORMS: dict[str, tuple[Transform, bool]] = {
    "none": (lambda v, r, t: v.array, False),
    "NIfTI re-save (nibabel, float32)": (lambda v, r, t: _nib_resave(v, t, np.float32), False),
    "NIfTI re-save (nibabel, int16 + scl_slope)": (lambda v, r, t: _nib_resave(v, t, np.int16), False),
    "NRRD re-save (SimpleITK)": (lambda v, r, t: _sitk_resave(v, t, ".nrrd"), False),
    "MHA re-save (SimpleITK)": (lambda v, r, t: _sitk_resave(v, t, ".mha"), False),
    "NIfTI -> NRRD -> NIfTI (SimpleITK)": (lambda v, r, t: _nifti_nrrd_nifti(v, t), False),
    "DICOM series (int16 + rescale) and back": (lambda v, r, t: _dicom_roundtrip(v, t), False),
    "intensity a*x+b (a in 0.3..3)": (lambda v, r, t: v.array * r.uniform(0.3, 3.0) + r.uniform(-1, 1) * float(np.ptp(v.array)), False),
    "rescale to int16 0..4095": (lambda v, r, t: _to_int16_4095(v.array), False),
    "crop to half FOV in-plane (x, y; random offset)": (lambda v, r, t: _crop(v.array, r, (0, 1)), False),
    "crop to half along x, y and z (1/8 of the voxels)": (lambda v, r, t: _crop(v.array, r, (0, 1, 2)), False),
    "resample x0.9 (SimpleITK linear)": (lambda v, r, t: _resample(v, 0.9), False),
    "resample x1.1 (SimpleITK linear)": (lambda v, r, t: _resample(v, 1.1), False),
    "reorient (swap x/y, flip z)": (lambda v, r, t: np.flip(np.swapaxes(v.array, 0, 1), 2), False),
    "Gaussian blur sigma 1 voxel": (lambda v, r, t: ndimage.gaussian_filter(v.array, 1.0), True),
    "Gaussian blur sigma 2 voxels": (lambda v, r, t: ndimage.gaussian_filter(v.array, 2.0), True),
    "added noise, sigma 2 % of the 99.5th percentile": (
        lambda v, r, t: v.array + r.normal(0, 0.02 * float(np.percentile(v.array, 99.5) - v.array.min()), v.shape), True),
    "resample x0.8 (outside the searched 0.85..1.18)": (lambda v, r, t: _resample(v, 0.8), True),
    "resample x0.5": (lambda v, r, t: _resample(v, 0.5), True),
}


def replace_doc_section(name: str, text: str) -> None:
    """Replace what stands between ``<!-- {name}:begin ... -->`` and ``<!-- {name}:end -->`` in docs/watermark.md."""
    doc = DOC.read_text(encoding="utf-8")
    begin, end = f"<!-- {name}:begin", f"<!-- {name}:end -->"
    if begin not in doc or end not in doc:
        raise SystemExit(f"{DOC}: section markers {begin!r} ... / {end!r} not found")
    head, rest = doc.split(begin, 1)
    marker, _ = rest.split("-->", 1)
    DOC.write_text(head + begin + marker + "-->\n" + text + "\n" + end + rest.split(end, 1)[1], encoding="utf-8")


# ------------------------------------------------------------------------------------------- study
def image_cost(original: np.ndarray, marked: np.ndarray) -> dict[str, float]:
    """PSNR (dB, peak = data range), max |change| / data range, and the mark's RMS inside the object
    (voxels > 2 % of the range above the minimum) over the noise SD that dipy's ``estimate_sigma`` finds."""
    from dipy.denoise.noise_estimate import estimate_sigma

    x = original.astype(np.float64)
    diff = marked.astype(np.float64) - x
    data_range = float(np.ptp(x))
    inside = (x - x.min()) > 0.02 * data_range
    noise = float(estimate_sigma(x, N=0)[0])
    return {"psnr_db": float(20 * np.log10(data_range / np.sqrt(np.mean(diff**2)))),
            "max_abs_change_rel": float(np.abs(diff).max() / data_range),
            "noise_sd_rel": noise / data_range,
            "mark_rms_over_noise_sd": float(np.sqrt(np.mean(diff[inside] ** 2)) / noise)}


def _study_volume(job: tuple[int, str, Volume, int, int, float]) -> dict:
    """All transformations of one volume, unmarked and marked (runs in a worker process)."""
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # the MetaImage writer warns about every NIfTI-only field
    v_index, name, vol, seed, n_keys, strength = job
    marked = Volume(embed_watermark(vol.array, strength=strength), vol.affine)
    keys = list(range(1, n_keys + 1))
    out = {"cost": {"volume": name, "shape": list(vol.shape), **image_cost(vol.array, marked.array)},
           "null": {kind: [r.score for r in detect_watermark_keys(v.array, keys)] for kind, v in (("unmarked", vol), ("marked", marked))},
           "rows": {}}
    with tempfile.TemporaryDirectory() as work:
        for t_index, (tname, (fn, _)) in enumerate(TRANSFORMS.items()):
            out["rows"][tname] = {}
            for kind, v in (("unmarked", vol), ("marked", marked)):
                t_rng = np.random.default_rng([seed, v_index, t_index])  # the same crop / noise for both
                a = np.asarray(fn(v, t_rng, Path(tempfile.mkdtemp(dir=work))))
                res = detect_watermark(a)
                out["rows"][tname][kind] = {"volume": name, "shape": list(a.shape), "voxels": int(a.size),
                                            "score": round(res.score, 3), "scale": round(res.scale, 4),
                                            "orientation": res.orientation}
    return out


def run_study(seed: int, n_keys: int, strength: float, workers: int) -> dict:
    """Every volume through every transformation (``workers`` processes); per-row scores, costs, null scores."""
    volumes = real_volumes(np.random.default_rng(seed))
    jobs = [(i, name, vol, seed, n_keys, strength) for i, (name, vol) in enumerate(volumes)]
    t0 = time.perf_counter()
    if workers > 1:
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            results = list(tqdm(pool.imap(_study_volume, jobs), total=len(jobs), desc="watermark study (volumes)"))
    else:
        results = [_study_volume(job) for job in tqdm(jobs, desc="watermark study (volumes)")]
    rows = {t: {kind: [r["rows"][t][kind] for r in results] for kind in ("marked", "unmarked")} for t in TRANSFORMS}
    return {"volumes": [n for n, _ in volumes], "rows": rows, "costs": [r["cost"] for r in results],
            "null_scores": {kind: [s for r in results for s in r["null"][kind]] for kind in ("unmarked", "marked")},
            "seconds": time.perf_counter() - t0}


def summarise(study: dict, threshold: float) -> dict:
    table = []
    for tname, kinds in study["rows"].items():
        marked, unmarked = kinds["marked"], kinds["unmarked"]
        large = [r for r in marked if r["voxels"] >= LARGE_VOXELS]
        table.append({
            "transformation": tname,
            "failure_case": TRANSFORMS[tname][1],
            "detected": sum(r["score"] >= threshold for r in marked), "n_marked": len(marked),
            "detected_large": sum(r["score"] >= threshold for r in large), "n_large": len(large),
            "false_positives": sum(r["score"] >= threshold for r in unmarked), "n_unmarked": len(unmarked),
            "median_score_marked": float(np.median([r["score"] for r in marked])),
            "max_score_unmarked": float(max(r["score"] for r in unmarked)),
        })
    psnr = [c["psnr_db"] for c in study["costs"]]
    change = [c["max_abs_change_rel"] for c in study["costs"]]
    nulls = np.array(study["null_scores"]["unmarked"] + study["null_scores"]["marked"])
    public_unmarked = np.array([r["score"] for k in study["rows"].values() for r in k["unmarked"]])
    return {
        "table": table,
        "psnr_db": {"median": float(np.median(psnr)), "min": float(np.min(psnr)), "max": float(np.max(psnr))},
        "max_abs_change_rel": {"median": float(np.median(change)), "max": float(np.max(change))},
        "null_wrong_keys": {"n": int(nulls.size), "above_threshold": int((nulls >= threshold).sum()),
                            "max": float(nulls.max()), "mean": float(nulls.mean()), "sd": float(nulls.std()),
                            "q99": float(np.quantile(nulls, 0.99))},
        "null_public_key_unmarked": {"n": int(public_unmarked.size), "above_threshold": int((public_unmarked >= threshold).sum()),
                                     "max": float(public_unmarked.max())},
        "gumbel_false_positive_rate": gumbel_tail(np.concatenate([nulls, public_unmarked[public_unmarked > 0]]), threshold),
    }


def gumbel_tail(scores: np.ndarray, threshold: float) -> float:
    """P(score >= threshold) under a Gumbel (maximum of many trials) fitted to ``scores`` by moments: an
    extrapolation beyond what the trials can show, not a measurement."""
    beta = float(scores.std()) * np.sqrt(6) / np.pi
    mu = float(scores.mean()) - 0.5772156649 * beta
    return float(-np.expm1(-np.exp(-(threshold - mu) / beta)))


def markdown(study: dict, summary: dict, args: argparse.Namespace) -> str:
    s = summary
    lines = [
        f"Produced by `python scripts/evaluate_watermark.py` (seed {args.seed}, {len(study['volumes'])} real volumes, "
        f"{study['seconds']:.0f} s). Scheme `{SCHEME}` v{SCHEME_VERSION}, tile {TILE_PERIOD}^3 voxels, strength "
        f"{args.strength} (PSNR {-20 * np.log10(args.strength):.1f} dB by construction; more where the {DEFAULT_MAX_MODULATION:.0%} "
        f"modulation bound or the clipping to the input range bites), threshold {args.threshold}, "
        f"scale search {SCALE_RANGE[0]}..{SCALE_RANGE[1]}.",
        "",
        f"**Image cost** over the {len(study['costs'])} marked volumes: PSNR marked vs unmarked median "
        f"{s['psnr_db']['median']:.2f} dB (min {s['psnr_db']['min']:.2f}); largest change of one voxel "
        f"{100 * s['max_abs_change_rel']['median']:.2f} % of the data range (median over volumes; max "
        f"{100 * s['max_abs_change_rel']['max']:.2f} %).",
        "",
        f"\"large\" = at least {LARGE_VOXELS:,} voxels after the transformation. Scores are peak z-scores; "
        "failure cases are in italics.",
        "",
        "| volume | shape | PSNR (dB) | max change (% of range) | noise SD (% of range, dipy estimate) | mark RMS in object / noise SD |",
        "|---|---|---|---|---|---|",
        *[f"| {c['volume']} | {'x'.join(map(str, c['shape']))} | {c['psnr_db']:.2f} | {100 * c['max_abs_change_rel']:.2f} | "
          f"{100 * c['noise_sd_rel']:.2f} | {c['mark_rms_over_noise_sd']:.2f} |" for c in study["costs"][:12]],
        "",
        "| transformation | detected (marked) | detected, large volumes | false positives (unmarked) | median score marked | max score unmarked |",
        "|---|---|---|---|---|---|",
    ]
    for r in s["table"]:
        name = f"*{r['transformation']}*" if r["failure_case"] else r["transformation"]
        lines.append(f"| {name} | {r['detected']}/{r['n_marked']} | {r['detected_large']}/{r['n_large']} | "
                     f"{r['false_positives']}/{r['n_unmarked']} | {r['median_score_marked']:.1f} | {r['max_score_unmarked']:.1f} |")
    n = s["null_wrong_keys"]
    p = s["null_public_key_unmarked"]
    lines += [
        "",
        f"**False positives.** Public key on unmarked volumes, every transformation: {p['above_threshold']}/{p['n']} "
        f"above the threshold (highest score {p['max']:.2f}). Keys nobody embedded ({args.keys} per volume, on the "
        f"unmarked and the marked volumes): {n['above_threshold']}/{n['n']} above the threshold; null scores mean "
        f"{n['mean']:.2f}, SD {n['sd']:.2f}, 99th percentile {n['q99']:.2f}, max {n['max']:.2f}. A Gumbel distribution "
        f"fitted to all these null scores puts the false-positive rate at the threshold at {s['gumbel_false_positive_rate']:.0e} "
        "per image (an extrapolation; the trials themselves bound it only to about 1/1400).",
        "",
        "![watermark study](watermark.png)",
    ]
    return "\n".join(lines)


def plot(study: dict, threshold: float, path: Path, panel: tuple[np.ndarray, np.ndarray]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(study["rows"])
    fig = plt.figure(figsize=(15, 9))
    ax = fig.add_axes((0.32, 0.08, 0.4, 0.88))
    rng = np.random.default_rng(0)
    for i, name in enumerate(names):
        for kind, colour, dy in (("unmarked", "tab:blue", -0.17), ("marked", "tab:red", 0.17)):
            scores = np.array([r["score"] for r in study["rows"][name][kind]])
            ax.scatter(np.maximum(scores, 1.0), i + dy + rng.uniform(-0.08, 0.08, scores.size), s=9, c=colour,
                       alpha=0.7, label=kind if i == 0 else None)
    ax.axvline(threshold, color="k", ls="--", lw=1, label=f"threshold {threshold}")
    ax.set_xscale("log")
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("detection score (peak z, log scale)")
    ax.legend(loc="lower right", fontsize=8)
    original, marked = panel
    k = original.shape[2] // 2
    window = (float(original.min()), float(np.percentile(original, 99.5)))
    diff = (marked - original)[:, :, k] * 100
    for j, (title, img, kw) in enumerate((
        ("unmarked (MNI 2 mm, axial)", original[:, :, k], dict(vmin=window[0], vmax=window[1])),
        ("marked", marked[:, :, k], dict(vmin=window[0], vmax=window[1])),
        ("difference x100", diff, dict(vmin=-(window[1] - window[0]), vmax=window[1] - window[0], cmap="RdBu_r")),
    )):
        a = fig.add_axes((0.76, 0.68 - 0.31 * j, 0.22, 0.28))
        a.imshow(img.T, origin="lower", cmap=kw.pop("cmap", "gray"), **kw)
        a.set_title(title, fontsize=9)
        a.axis("off")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="folder for watermark_results.{md,json,png} (default: docs/)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keys", type=int, default=20, help="wrong keys per volume for the null distribution")
    parser.add_argument("--strength", type=float, default=DEFAULT_STRENGTH)
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    parser.add_argument("--workers", type=int, default=2, help="worker processes (one volume each)")
    args = parser.parse_args(argv)
    study = run_study(args.seed, args.keys, args.strength, args.workers)
    summary = summarise(study, args.threshold)
    text = markdown(study, summary, args)
    out = args.out or DOC.parent
    out.mkdir(parents=True, exist_ok=True)
    from nilearn import datasets

    t1 = np.asarray(datasets.load_mni152_template(resolution=2).get_fdata(), dtype=np.float32)
    plot(study, args.threshold, out / "watermark.png", (t1, embed_watermark(t1, strength=args.strength)))
    (out / "watermark_results.json").write_text(json.dumps({"summary": summary, **study}, indent=2) + "\n", encoding="utf-8")
    if args.out is None:
        replace_doc_section("results", text)
        print(f"wrote {DOC}, {out / 'watermark_results.json'}, {out / 'watermark.png'}")
    else:
        (out / "watermark_results.md").write_text(text + "\n", encoding="utf-8")
        print(f"wrote {out}")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
