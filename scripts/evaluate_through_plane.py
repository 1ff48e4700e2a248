#!/usr/bin/env python
"""Measure through-plane SR and the never-worse gate on real volumes (a few minutes on 1 CPU thread).

Through-plane: the MNI152 T1 (nilearn, 1 mm) and dipy's T2w b=0 volume (``S0_10``, 2 mm in-plane) are made into
thick-slice volumes with a box slice profile (thickness = spacing, 4 mm and 5 mm) along each axis, brought back
to the original grid by ``medgen upscale --axes through`` (the SR bundle run through MONAI's ConfigWorkflow, real
NIfTI files) and compared with the original inside the brain foreground (PSNR; SSIM on the planes normal to the
shortest other axis, so they contain the slice axis) against the cubic B-spline along the slice axis. Rows: B-spline; B-spline + the gate's
consistency projection (identity refiner); the bundle's pretrained refiner without adaptation (``--adapt-seconds
0``); with the default 20 s adaptation. dipy's third axis (10 slices 53 mm apart) cannot be made thicker: n/a.

Gate, in-plane: dipy's T2w (out of the training domain) degraded x2 in-plane (Gaussian, block, k-space), upscaled
by the bundle's default x2 variant with and without the gate, against bicubic; the gate's decision, alpha and
chosen degradation model.

    python scripts/evaluate_through_plane.py                 # writes the bundle's docs/through_plane_results.json + PNGs
    python scripts/evaluate_through_plane.py --quick         # MNI 5 mm axial and dipy 5 mm axis 0 only
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

BUNDLE = Path(__file__).resolve().parents[1] / "monai_bundles" / "brain_mri_super_resolution"
DOCS = BUNDLE / "docs"


def thin_affine_to_thick(affine: np.ndarray, axis: int, factor: float) -> np.ndarray:
    """Affine of the grid whose voxel ``k`` along ``axis`` is centred at fine index ``(k + 1/2) factor - 1/2``."""
    m = np.eye(4)
    m[axis, axis] = factor
    m[axis, 3] = (factor - 1) / 2
    return np.asarray(affine, dtype=np.float64) @ m


def volumes() -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``name -> (image, affine, foreground mask)``."""
    from scipy.ndimage import binary_fill_holes

    from medgen_core.data.samples import load_dipy_t2, load_mni152_brain_mask, load_mni152_t1

    mni = load_mni152_t1()
    dipy = load_dipy_t2()
    fg = dipy.array > 0.1 * np.percentile(dipy.array, 99.9)
    fg = np.stack([binary_fill_holes(fg[..., z]) for z in range(fg.shape[2])], axis=-1)
    return {"mni_t1": (mni.array, mni.affine, load_mni152_brain_mask()), "dipy_t2w": (dipy.array, dipy.affine, fg)}


def psnr(pred: np.ndarray, truth: np.ndarray, mask: np.ndarray, norm: float) -> float:
    return float(10 * np.log10(norm**2 / np.mean((pred[mask] - truth[mask]) ** 2)))


def ssim(pred: np.ndarray, truth: np.ndarray, mask: np.ndarray, norm: float, plane_axis: int) -> float:
    """Mean SSIM over the mask, on the planes normal to ``plane_axis`` (MONAI's SSIM, window 11)."""
    from medgen_core.evaluation.metrics import masked_ssim

    to = lambda a: torch.from_numpy(np.ascontiguousarray(np.moveaxis(a, plane_axis, 0)))[:, None].float()  # noqa: E731
    keep = np.flatnonzero(np.moveaxis(mask, plane_axis, 0).reshape(mask.shape[plane_axis], -1).mean(1) > 0.02)
    return masked_ssim(to(pred / norm)[keep], to(truth / norm)[keep], to(mask)[keep].bool())


def run_bundle(src: Path, out: Path, overrides: dict) -> tuple[np.ndarray, dict]:
    from medgen_core.bundles import run_bundle_inference
    from medgen_core.io import read_volume
    from medgen_core.provenance import sidecar_path

    run_bundle_inference("brain_mri_super_resolution", src, out, overrides)
    record = json.loads(sidecar_path(out).read_text(encoding="utf-8"))["record"]
    return read_volume(out).array, record["parameters"]


def through_plane_cell(name: str, image: np.ndarray, affine: np.ndarray, mask: np.ndarray, axis: int, mm: float, work: Path,
                       adapt_seconds: float, adapt_steps: int | None = None) -> dict:
    from medgen_core.inference import ThroughPlaneSuperResolver
    from medgen_core.io import Volume
    from medgen_core.transforms.resolution_sim import AxisDegradation, apply_axis_degradation, exact_lengths, interpolate_to_hr

    spacing = float(np.linalg.norm(affine[:3, axis]))
    factor = mm / spacing
    n_hr, n_lr = exact_lengths(image.shape[axis], factor)
    crop = [slice(None)] * 3
    crop[axis] = slice(0, n_hr)
    truth, fg = image[tuple(crop)], mask[tuple(crop)]
    thick = apply_axis_degradation(torch.from_numpy(truth), AxisDegradation(axis, factor, "block", factor), dim=axis).numpy()
    thick_affine = thin_affine_to_thick(affine, axis, factor)
    src = work / f"{name}_{axis}_{mm:g}.nii.gz"
    nib.save(nib.Nifti1Image(thick, thick_affine), str(src))
    norm = float(np.percentile(truth, 99.9))
    plane = min((a for a in range(3) if a != axis), key=lambda a: truth.shape[a])  # SSIM planes contain the slice axis
    factors = [1.0, 1.0, 1.0]
    factors[axis] = factor
    outputs = {"cubic B-spline": np.clip(interpolate_to_hr(torch.from_numpy(thick)[None], factors)[0].numpy(), thick.min(), thick.max())}
    t = time.perf_counter()
    outputs["B-spline + consistency"] = ThroughPlaneSuperResolver(slice_axis=axis, adapt_seconds=0, progress=False)(Volume(thick, thick_affine)).array
    seconds = {"B-spline + consistency": time.perf_counter() - t}
    gates = {}
    adapted = f"refiner + {adapt_steps} steps adaptation" if adapt_steps else f"refiner + {adapt_seconds:g} s adaptation"
    for label, secs in (("refiner, no adaptation", 0.0), (adapted, adapt_seconds)):
        t = time.perf_counter()
        out, params = run_bundle(src, work / f"out_{name}_{axis}_{mm:g}_{secs:g}.nii.gz",
                                 {"axes": "through", "slice_axis": axis, "adapt_seconds": secs, "adapt_steps": adapt_steps})
        seconds[label] = time.perf_counter() - t
        outputs[label], gates[label] = out, {"decision": params["gate"]["decision"], "alpha": params["gate"]["alpha"],
                                             "self_check_model": params["gate"]["psnr_model"], "self_check_bspline": params["gate"]["psnr_baseline"],
                                             "steps": params["adaptation"]["steps"]}
    assert all(o.shape == truth.shape for o in outputs.values()), {k: o.shape for k, o in outputs.items()}
    cell = {"volume": name, "axis": axis, "thickness_mm": mm, "factor": round(factor, 4), "slices": n_lr, "methods": {}}
    for label, out in outputs.items():
        cell["methods"][label] = {"psnr": round(psnr(out, truth, fg, norm), 3), "ssim": round(ssim(out, truth, fg, norm, plane), 4),
                                  "seconds": round(seconds.get(label, 0.0), 1), **gates.get(label, {})}
    base = cell["methods"]["cubic B-spline"]["psnr"]
    for m in cell["methods"].values():
        m["gain_db"] = round(m["psnr"] - base, 3)
    if name == "mni_t1" and axis == 2 and mm == 5:
        write_montages(truth, thick, outputs, axis, factor)
    print(json.dumps(cell), flush=True)
    return cell


def write_montages(truth: np.ndarray, thick: np.ndarray, outputs: dict, axis: int, factor: float) -> None:
    from medgen_core.utils.figures import save_montage

    n_out = truth.shape[axis]
    nearest = np.take(thick, np.minimum((np.arange(n_out) / factor).astype(int), thick.shape[axis] - 1), axis=axis)
    adapted = next(k for k in outputs if "adaptation" in k and "no" not in k)
    for plane, cut in (("coronal", 1), ("sagittal", 0)):
        k = truth.shape[cut] // 2 + (8 if cut == 1 else 0)
        take = lambda a: np.take(a, k, axis=cut)  # noqa: E731
        cols = [("5 mm slices (nearest)", take(nearest)), ("cubic B-spline", take(outputs["cubic B-spline"])),
                ("MedGen through-plane (AI)", take(outputs[adapted])), ("1 mm original", take(truth))]
        h, w = cols[0][1].shape
        save_montage(cols, DOCS / f"through_plane_{plane}.png", title=f"MNI T1, axial 5 mm box slices -> 1 mm ({plane})",
                     zoom=(slice(h // 4, h // 4 + h // 3), slice(w // 3, w // 3 + w // 3)))


def gate_cells(work: Path) -> list[dict]:
    """dipy T2w x2 in-plane under three degradations: bicubic, default model without / with the gate."""
    from medgen_core.data.samples import load_dipy_t2
    from medgen_core.evaluation.sr_baselines import bicubic
    from medgen_core.transforms.degradation import degrade

    dipy = load_dipy_t2()
    truth = dipy.array[:128, :128]
    norm = float(np.percentile(truth, 99.9))
    mask = truth > 0.1 * norm
    meta = json.loads((BUNDLE / "configs" / "metadata.json").read_text(encoding="utf-8"))
    variant = meta["medgen"]["default_variant"]["2"]
    cells = []
    for kind in ("gaussian", "block", "kspace"):
        lr = degrade(torch.from_numpy(truth).permute(2, 0, 1), 2, kind).permute(1, 2, 0).numpy()
        aff = thin_affine_to_thick(thin_affine_to_thick(dipy.affine, 0, 2.0), 1, 2.0)
        src = work / f"dipy_inplane_{kind}.nii.gz"
        nib.save(nib.Nifti1Image(lr, aff), str(src))
        bic = np.clip(bicubic(torch.from_numpy(lr).permute(2, 0, 1)[:, None], 2)[:, 0].permute(1, 2, 0).numpy(), lr.min(), lr.max())
        raw, _ = run_bundle(src, work / f"raw_{kind}.nii.gz", {"variant": variant, "gate": False})
        gated, params = run_bundle(src, work / f"gated_{kind}.nii.gz", {"variant": variant})
        g = params["gate"]
        cell = {"degradation": kind, "variant": variant, "bicubic": round(psnr(bic, truth, mask, norm), 3),
                "model_no_gate": round(psnr(raw, truth, mask, norm), 3), "model_gated": round(psnr(gated, truth, mask, norm), 3),
                "decision": g["decision"], "alpha": g["alpha"], "gate_model": g["degradation"]["kind"],
                "self_check": [g["psnr_model"], g["psnr_baseline"], g["psnr_gated"]], "consistency": [g["consistency_before"], g["consistency_after"]]}
        print(json.dumps(cell), flush=True)
        cells.append(cell)
    return cells


def markdown(results: dict) -> str:
    lines = ["| volume | slice axis | slices | factor | B-spline PSNR / SSIM | + consistency | refiner, no adaptation | refiner + adaptation |",
             "|---|---|---|---|---|---|---|---|"]
    for c in results["through_plane"]:
        m = c["methods"]
        cols = [f"{v['psnr']:.2f} / {v['ssim']:.3f}" + (f" ({v['gain_db']:+.2f})" if k != "cubic B-spline" else "") for k, v in m.items()]
        lines.append(f"| {c['volume']} | {c['axis']} | {c['thickness_mm']:g} mm | {c['factor']:g} | " + " | ".join(cols) + " |")
    for name, axis in results.get("not_applicable", []):
        lines.append(f"| {name} | {axis} | n/a | | 10 slices 53 mm apart: cannot be made thicker | | | |")
    lines += ["", "| dipy T2w x2 in-plane | bicubic | model, no gate | model + gate | decision (alpha) | gate's model |", "|---|---|---|---|---|---|"]
    for c in results["gate_inplane"]:
        lines.append(f"| {c['degradation']} | {c['bicubic']:.2f} | {c['model_no_gate']:.2f} | {c['model_gated']:.2f} | {c['decision']} ({c['alpha']:.2f}) "
                     f"| {c['gate_model']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapt-seconds", type=float, default=600.0,
                        help="time cap of the adaptation (default 600: the step count decides, so a loaded machine gives the same result)")
    parser.add_argument("--adapt-steps", type=int, default=1500, help="Adam steps of the adaptation (default 1500, the CLI's default)")
    parser.add_argument("--quick", action="store_true", help="MNI axis 2 and dipy axis 0 at 5 mm only")
    parser.add_argument("--out", type=Path, default=DOCS / "through_plane_results.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = {"adapt_seconds": args.adapt_seconds, "adapt_steps": args.adapt_steps, "threads": 1, "through_plane": [], "not_applicable": [], "gate_inplane": []}
    with tempfile.TemporaryDirectory(prefix="medgen-tp-eval-") as tmp:
        work = Path(tmp)
        for name, (image, affine, mask) in volumes().items():
            for mm in (5.0,) if args.quick else (4.0, 5.0):
                for axis in ((2,) if name == "mni_t1" else (0,)) if args.quick else (0, 1, 2):
                    if np.linalg.norm(affine[:3, axis]) >= mm:
                        if [name, axis] not in results["not_applicable"]:
                            results["not_applicable"].append([name, axis])
                        continue
                    results["through_plane"].append(through_plane_cell(name, image, affine, mask, axis, mm, work, args.adapt_seconds, args.adapt_steps))
        results["gate_inplane"] = gate_cells(work)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=4) + "\n", encoding="utf-8")  # bundle JSON: indent 4 (zoo format check)
    table = markdown(results)
    args.out.with_suffix(".md").write_text(table + "\n", encoding="utf-8")
    print(table)


if __name__ == "__main__":
    main()
