"""``medgen demo``: super-resolution on the shipped MNI152 sample, end to end, with no network.

Takes the held-out axial slab of the MNI152 T1 template (never seen in training), degrades it in-plane
(x2 Gaussian blur + decimation, block averaging, k-space truncation), upscales each low-resolution
volume with the SR bundle's default model through the same code path as ``medgen upscale``, and prints
PSNR/SSIM (brain foreground) of the model and of bicubic. Then a through-plane example: the same slab made
into 5 mm sagittal slices (box slice profile, so 40 slices become 5x thicker along x) is brought back to 1 mm by
``--axes through`` (per-scan adaptation for ``--adapt-seconds``) and compared with the cubic B-spline.
Writes the volumes, their provenance and montage PNGs to ``--out``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from medgen_core.cli._common import DEFAULT_ADAPT_SECONDS, DEFAULT_ADAPT_STEPS, non_negative_float
from medgen_core.data.samples import MNI_HELDOUT_AXIAL, load_mni152_brain_mask, load_mni152_t1
from medgen_core.errors import MedGenError
from medgen_core.io import Volume, read_volume, write_volume

__all__ = ["register", "held_out_slab", "downscaled_volume"]

# Copies of medgen_core.transforms.degradation.DEGRADATIONS and medgen_core.cli.upscale_cmd.DEFAULT_SR_BUNDLE
# (importing those loads torch, which would slow 'medgen demo --help'); tests/test_cli_startup.py keeps them equal.
DEGRADATIONS = ("gaussian", "block", "kspace")
DEFAULT_SR_BUNDLE = "brain_mri_super_resolution"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("demo", help="run super-resolution on the shipped MNI152 sample and report PSNR/SSIM", description=__doc__)
    p.add_argument("--out", type=Path, default=Path("medgen_demo_output"), help="output folder (default ./medgen_demo_output)")
    p.add_argument("--scale", type=int, default=2, choices=(2, 4))
    p.add_argument("--degradations", nargs="+", default=list(DEGRADATIONS), choices=list(DEGRADATIONS))
    p.add_argument("--bundle", default=DEFAULT_SR_BUNDLE)
    p.add_argument("--through-mm", type=non_negative_float, default=5.0, help="slice thickness of the through-plane example (0 skips it; default 5)")
    p.add_argument("--adapt-seconds", type=non_negative_float, default=DEFAULT_ADAPT_SECONDS,
                   help=f"per-scan adaptation budget of the through-plane example (default {DEFAULT_ADAPT_SECONDS:g} s, at most "
                        f"{DEFAULT_ADAPT_STEPS} steps as in medgen upscale; 0 disables it)")
    p.set_defaults(func=run)


def held_out_slab(multiple: int = 4) -> tuple[Volume, np.ndarray]:
    """The MNI152 held-out axial slab (cropped in-plane to a multiple of ``multiple``) and its brain mask."""
    t1 = load_mni152_t1()
    lo, hi = MNI_HELDOUT_AXIAL
    nx, ny = (n - n % multiple for n in t1.shape[:2])
    shift = np.eye(4)
    shift[2, 3] = lo
    slab = Volume(array=t1.array[:nx, :ny, lo:hi].copy(), affine=t1.affine @ shift, path=None, format="nifti")
    mask = load_mni152_brain_mask()[:nx, :ny, lo:hi]
    return slab, mask


def downscaled_volume(hr: Volume, scale: int, degradation: str) -> Volume:
    """In-plane degraded copy of ``hr`` on the centred low-resolution grid (the exact inverse of the SR geometry)."""
    import torch

    from medgen_core.inference.geometry import upscaled_affine
    from medgen_core.transforms.degradation import degrade

    lr = degrade(torch.from_numpy(hr.array), scale, degradation, axes=(0, 1)).numpy()
    # upscaled_affine maps the LR grid to the HR grid, so the LR affine is HR's with the inverse map
    lr_affine = hr.affine @ np.linalg.inv(upscaled_affine(np.eye(4), (scale, scale, 1)))
    return Volume(array=lr.astype(np.float32), affine=lr_affine, path=None, format=hr.format)


def thick_slice_volume(hr: Volume, axis: int, factor: float) -> Volume:
    """``hr`` made into slices ``factor`` times thicker along ``axis`` with a box profile (thickness = spacing), on the
    grid-centred thick grid (the exact inverse of the through-plane geometry); ``hr.shape[axis]`` must be a whole
    multiple of ``factor``."""
    import torch

    from medgen_core.transforms.resolution_sim import AxisDegradation, apply_axis_degradation

    thick = apply_axis_degradation(torch.from_numpy(np.asarray(hr.array, dtype=np.float32)), AxisDegradation(axis, factor, "block", factor), dim=axis)
    m = np.eye(4)
    m[axis, axis], m[axis, 3] = factor, (factor - 1) / 2
    return Volume(array=thick.numpy(), affine=np.asarray(hr.affine, dtype=np.float64) @ m, path=None, format=hr.format)


def through_plane_example(bundle, out: Path, mm: float, adapt_seconds: float) -> dict:
    """The held-out slab with ``mm`` sagittal slices, back to 1 mm with ``--axes through``; metrics vs the B-spline."""
    import torch

    from medgen_core.bundles import run_bundle_inference
    from medgen_core.utils.figures import save_montage
    from medgen_core.provenance import verify_provenance
    from medgen_core.transforms.resolution_sim import exact_lengths, interpolate_to_hr

    slab, mask = held_out_slab()
    axis, factor = 0, float(mm) / float(np.linalg.norm(slab.affine[:3, 0]))
    n_hr, _ = exact_lengths(slab.shape[axis], factor)
    hr = Volume(array=slab.array[:n_hr], affine=slab.affine, path=None, format="nifti")
    mask = mask[:n_hr]
    thick = thick_slice_volume(hr, axis, factor)
    thick_path = write_volume(thick, out / f"mni_slab_sagittal_{mm:g}mm_thick.nii.gz")
    sr_path = run_bundle_inference(bundle, thick_path, out / f"mni_slab_sagittal_{mm:g}mm_medgen_through.nii.gz",
                                   {"axes": "through", "slice_axis": axis, "adapt_seconds": float(adapt_seconds),
                                    "adapt_steps": DEFAULT_ADAPT_STEPS})
    sr = read_volume(sr_path)
    factors = [1.0, 1.0, 1.0]
    factors[axis] = factor
    spline = interpolate_to_hr(torch.from_numpy(thick.array)[None], factors)[0].numpy()
    spline = np.clip(spline, thick.array.min(), thick.array.max())
    result = {"thickness_mm": mm, "factor": factor, "slices": int(thick.shape[axis]), "adapt_seconds": adapt_seconds,
              "bspline": _metrics(spline, hr.array, mask), "model": _metrics(sr.array, hr.array, mask),
              "provenance": verify_provenance(sr_path).status}
    k = hr.shape[2] // 2
    thick_near = np.repeat(thick.array[:, :, k], int(np.ceil(factor)), 0)[: hr.shape[0]]
    save_montage([(f"{mm:g} mm slices (nearest)", thick_near), ("cubic B-spline", spline[:, :, k]),
                  ("MedGen through-plane (AI-generated)", sr.array[:, :, k]), ("ground truth", hr.array[:, :, k])],
                 out / "montage_through_plane.png", title=f"MNI152 held-out slice z={MNI_HELDOUT_AXIAL[0] + k}: {mm:g} mm sagittal slices -> 1 mm")
    return result


def _metrics(pred: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    import torch

    from medgen_core.evaluation.metrics import masked_psnr, masked_ssim

    to = lambda a: torch.from_numpy(np.ascontiguousarray(np.moveaxis(a, 2, 0)))[:, None]  # noqa: E731
    p, t, m = to(np.clip(pred, 0, truth.max())), to(truth), to(mask)
    return {"psnr": masked_psnr(p, t, m), "ssim": masked_ssim(p, t, m)}


def run(args: argparse.Namespace) -> int:
    from medgen_core.bundles import get_bundle, run_bundle_inference
    from medgen_core.inference import bicubic_upscale_volume
    from medgen_core.utils.figures import save_montage
    from medgen_core.provenance import verify_provenance

    bundle = get_bundle(args.bundle)
    variant = bundle.metadata.get("medgen", {}).get("default_variant", {}).get(str(args.scale), f"x{args.scale}_mixed")
    out = args.out
    if out.exists() and not out.is_dir():
        raise MedGenError(f"{out}: --out must be a folder, but a file of that name exists")
    out.mkdir(parents=True, exist_ok=True)
    hr, mask = held_out_slab()
    print(f"MNI152 held-out slab z={MNI_HELDOUT_AXIAL[0]}..{MNI_HELDOUT_AXIAL[1] - 1}: {hr.shape}; model {bundle.bundle_id} variant {variant}")
    results = {}
    for degradation in args.degradations:
        lr = downscaled_volume(hr, args.scale, degradation)
        lr_path = write_volume(lr, out / f"mni_slab_{degradation}_x{args.scale}_lowres.nii.gz")
        sr_path = run_bundle_inference(bundle, lr_path, out / f"mni_slab_{degradation}_x{args.scale}_medgen_sr.nii.gz", {"variant": variant, "slice_axis": 2})
        sr = read_volume(sr_path)
        bic = bicubic_upscale_volume(lr, args.scale, slice_axis=2)
        results[degradation] = {"bicubic": _metrics(bic.array, hr.array, mask), "model": _metrics(sr.array, hr.array, mask)}
        results[degradation]["provenance"] = verify_provenance(sr_path).status
        if degradation == args.degradations[0]:
            k = hr.shape[2] // 2
            lr_near = np.repeat(np.repeat(lr.array[:, :, k], args.scale, 0), args.scale, 1)
            h, w = hr.shape[:2]
            save_montage(
                [("low-res input (nearest)", lr_near), ("bicubic", bic.array[:, :, k]), ("MedGen SR (AI-generated)", sr.array[:, :, k]), ("ground truth", hr.array[:, :, k])],
                out / "montage.png",
                title=f"MNI152 held-out slice z={MNI_HELDOUT_AXIAL[0] + k}, x{args.scale} {degradation}",
                zoom=(slice(h // 4, h // 4 + h // 3), slice(w // 3, w // 3 + w // 3)),
            )
    print(f"\n{'degradation':<12} {'bicubic PSNR':>13} {'model PSNR':>11} {'gain dB':>8} {'bicubic SSIM':>13} {'model SSIM':>11}  provenance")
    for name, r in results.items():
        b, m = r["bicubic"], r["model"]
        print(f"{name:<12} {b['psnr']:>13.2f} {m['psnr']:>11.2f} {m['psnr'] - b['psnr']:>+8.2f} {b['ssim']:>13.4f} {m['ssim']:>11.4f}  {r['provenance']}")
    through = None
    if args.through_mm > 0:
        through = through_plane_example(bundle, out, args.through_mm, args.adapt_seconds)
        b, m = through["bspline"], through["model"]
        print(f"\nthrough-plane: {through['slices']} sagittal slices of {args.through_mm:g} mm -> 1 mm (x{through['factor']:g}, "
              f"per-scan adaptation: at most {args.adapt_seconds:g} s / {DEFAULT_ADAPT_STEPS} steps)")
        print(f"{'':<12} {'B-spline PSNR':>13} {'model PSNR':>11} {'gain dB':>8} {'B-spline SSIM':>13} {'model SSIM':>11}  provenance")
        print(f"{'through':<12} {b['psnr']:>13.2f} {m['psnr']:>11.2f} {m['psnr'] - b['psnr']:>+8.2f} {b['ssim']:>13.4f} {m['ssim']:>11.4f}  {through['provenance']}")
    (out / "demo_results.json").write_text(json.dumps({"bundle": bundle.bundle_id, "variant": variant, "scale": args.scale, "results": results,
                                                       "through_plane": through}, indent=2), encoding="utf-8")
    print(f"\noutputs, sidecars, montage.png{' and montage_through_plane.png' if through else ''} in {out.resolve()}")
    return 0
