"""``medgen upscale INPUT OUTPUT --scale 2``: whole-volume super-resolution through the SR bundle."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from medgen_core.bundles import get_bundle
from medgen_core.cli._common import (
    DEFAULT_ADAPT_SECONDS,
    DEFAULT_ADAPT_STEPS,
    add_device_argument,
    add_output_format_arguments,
    check_device,
    check_output,
    check_preview_path,
    device_override,
    non_negative_float,
    positive_float,
    positive_int,
    run_bundle_to_output,
)
from medgen_core.errors import BundleError, SuperResolutionError
from medgen_core.io import read_volume
from medgen_core.io.dicom_writer import SPATIAL_RESAMPLING
from medgen_core.utils.progress import progress_mode

__all__ = ["register", "choose_variant", "recorded_gate_line"]

logger = logging.getLogger(__name__)
DEFAULT_SR_BUNDLE = "brain_mri_super_resolution"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("upscale", help="super-resolve a volume (in-plane by default)", description=__doc__)
    p.add_argument("input", type=Path, help="input image: .nii/.nii.gz, .nrrd, .mha/.mhd, .dcm or a DICOM series folder")
    p.add_argument("output", type=Path, help="output image: .nii, .nii.gz or .nrrd, or a folder with --format dicom (a provenance sidecar is written next to it)")
    p.add_argument("--scale", type=int, default=2, choices=(2, 4), help="upscaling factor (default 2)")
    p.add_argument("--degradation", default=None, choices=("synthetic", "mixed", "gaussian", "block", "kspace"),
                   help="which model variant: by default the bundle's default model (x2_synthetic / x4_synthetic: any contrast, any "
                        "degradation); 'mixed' (RRDB trained on the MNI T1) or one trained for a specific degradation")
    p.add_argument("--variant", default=None, help="explicit bundle variant name (overrides --scale/--degradation)")
    p.add_argument("--axes", default="inplane", choices=("inplane", "all", "through"),
                   help="upscale in-plane (default), along all three axes (x scale), or 'through': along the slice axis only, "
                        "to the in-plane spacing (any factor up to 8, per-scan adapted)")
    p.add_argument("--slice-axis", type=int, default=None, choices=(0, 1, 2), help="through-plane axis (default: the one with the largest spacing)")
    p.add_argument("--target-spacing", type=positive_float, default=None, metavar="MM",
                   help="--axes through: output spacing along the slice axis (default: the finest in-plane spacing)")
    p.add_argument("--slice-thickness", type=positive_float, default=None, metavar="MM",
                   help="--axes through: slice thickness of the acquisition (default: DICOM/NRRD header, else the slice spacing; "
                        "thinner than the spacing = gaps)")
    p.add_argument("--adapt-seconds", type=non_negative_float, default=DEFAULT_ADAPT_SECONDS, metavar="S",
                   help=f"--axes through: time budget of the per-scan self-supervised adaptation (default {DEFAULT_ADAPT_SECONDS:g} s; "
                        "0 disables it)")
    p.add_argument("--adapt-steps", type=positive_int, default=DEFAULT_ADAPT_STEPS, metavar="N",
                   help=f"--axes through: Adam steps of the adaptation, whichever of steps and seconds ends first (default "
                        f"{DEFAULT_ADAPT_STEPS}, about 30 s on 2 quiet cores; the same steps give the same output on any machine)")
    p.add_argument("--no-gate", action="store_true",
                   help="skip the never-worse gate (self-check against interpolation, blend/fallback, data-consistency projection)")
    p.add_argument("--batch-size", type=positive_int, default=8, help="slices per forward pass (>= 1)")
    add_device_argument(p)
    p.add_argument("--bundle", default=DEFAULT_SR_BUNDLE, help="super-resolution bundle name or folder")
    p.add_argument("--preview", type=Path, default=None, help="also write a PNG montage (input / bicubic / model)")
    add_output_format_arguments(p)
    p.add_argument("--progress", default=None, choices=("bar", "json"),
                   help="'json' also prints one 'MEDGEN_PROGRESS {...}' line per step to stdout (for GUIs); default: bar only")
    p.set_defaults(func=run)


def choose_variant(bundle_variants: dict, scale: int, degradation: str | None, variant: str | None,
                   defaults: dict | None = None) -> str:
    """Variant name for the request, with a clear error listing what the bundle ships.

    Without ``variant`` or ``degradation`` it is the bundle's ``medgen.default_variant`` for the scale (``defaults``),
    else ``x<scale>_synthetic`` if shipped, else ``x<scale>_mixed``.
    """
    if variant:
        name = variant
    elif degradation:
        name = f"x{scale}_{degradation}"
    else:
        fallback = f"x{scale}_synthetic" if f"x{scale}_synthetic" in bundle_variants else f"x{scale}_mixed"
        name = (defaults or {}).get(str(scale), fallback)
    if name not in bundle_variants:
        raise BundleError(f"the bundle has no variant {name!r}; shipped variants: {', '.join(sorted(bundle_variants)) or 'none'}.")
    return name


def run(args: argparse.Namespace) -> int:
    with progress_mode(getattr(args, "progress", None)):  # --progress json: MEDGEN_PROGRESS lines on stdout
        return _upscale(args)


def _upscale(args: argparse.Namespace) -> int:
    fmt = check_output(args.input, args.output, args.format, args.keep_patient_ids)
    check_preview_path(args.preview)
    check_device(args.device)
    through = args.axes == "through"
    if not through and (args.target_spacing is not None or args.slice_thickness is not None):
        raise SuperResolutionError(f"{args.input}: --target-spacing and --slice-thickness apply to --axes through only (got --axes {args.axes}).")
    source = read_volume(args.input)  # fail fast, with a clear message, before loading any model
    if through:
        from medgen_core.inference.through_plane import plan_through_plane

        plan = plan_through_plane(source, args.slice_axis, args.target_spacing, args.slice_thickness)  # nothing to do, bad values: one line
    bundle = get_bundle(args.bundle)
    variant = choose_variant(bundle.variants, args.scale, args.degradation, args.variant, bundle.metadata.get("medgen", {}).get("default_variant"))
    overrides = {"variant": variant, "axes": args.axes, "slice_axis": args.slice_axis, "batch_size": args.batch_size, "gate": not args.no_gate,
                 "target_spacing": args.target_spacing, "slice_thickness": args.slice_thickness, "adapt_seconds": args.adapt_seconds,
                 "adapt_steps": args.adapt_steps,
                 **device_override(args.device)}
    out, result = run_bundle_to_output(bundle, args.input, args.output, overrides, fmt, keep_patient_ids=args.keep_patient_ids,
                                       derivation_codes=[SPATIAL_RESAMPLING])
    what = f"through-plane x{plan.factor:.4g} along axis {plan.slice_axis}" if through else f"variant {variant}"
    print(f"wrote {out} {source.shape} -> {result.shape}, spacing {tuple(round(s, 4) for s in result.spacing)} ({what}); provenance in {out}.generated.json")
    gate_line = recorded_gate_line(out)
    if gate_line:
        print(gate_line)
    if args.preview:
        if through:
            write_through_preview(source, result, plan.slice_axis, args.preview)
        else:
            write_sr_preview(source, result, int(bundle.variants[variant]["scale"]), args.preview, args.slice_axis)
        print(f"preview {args.preview}")
    return 0


def recorded_gate_line(out: Path) -> str | None:
    """The gate's one-line decision, from the provenance record the bundle wrote (None when it holds none)."""
    import json

    from medgen_core.inference.sr_gate import GateReport
    from medgen_core.provenance import sidecar_path

    try:
        gate = json.loads(sidecar_path(out).read_text(encoding="utf-8"))["record"]["parameters"].get("gate")
        return GateReport(**gate).summary_line() if isinstance(gate, dict) else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_sr_preview(source, result, scale: int, png: Path, slice_axis: int | None = None) -> Path:
    """Montage of the middle slice: input (nearest) / bicubic / model, plus a zoomed centre crop."""
    from medgen_core.inference import bicubic_upscale_volume, pick_slice_axis
    from medgen_core.utils.figures import save_montage

    axis = pick_slice_axis(source.spacing) if slice_axis is None else slice_axis
    k = source.shape[axis] // 2
    bic = bicubic_upscale_volume(source, scale, axis)
    take = lambda a, i: np.take(a, i, axis=axis)  # noqa: E731
    lr = np.repeat(np.repeat(take(source.array, k), scale, 0), scale, 1)
    k_out = k if result.shape[axis] == source.shape[axis] else k * scale + scale // 2
    model_plane = take(result.array, k_out)
    h, w = lr.shape
    zoom = (slice(h // 3, h // 3 + h // 4), slice(w // 3, w // 3 + w // 4))
    return save_montage([("input (nearest)", lr), ("bicubic", take(bic.array, k)), ("MedGen SR (AI-generated)", model_plane)], png, title=f"x{scale} super-resolution", zoom=zoom)


def write_through_preview(source, result, slice_axis: int, png: Path) -> Path:
    """Montage of a plane that contains the slice axis (middle of a sharp axis): input (nearest along the slice
    axis) / cubic B-spline / model."""
    from medgen_core.utils.figures import save_montage
    from medgen_core.inference.through_plane import bspline_matrix

    other = [a for a in range(3) if a != slice_axis]
    keep = max(other, key=lambda a: source.shape[a])  # the plane spans the slice axis and the longer other axis
    cut = next(a for a in other if a != keep)
    k = source.shape[cut] // 2
    n_in, n_out = source.shape[slice_axis], result.shape[slice_axis]
    take = lambda a: np.moveaxis(np.take(a, k, axis=cut), 0 if keep < slice_axis else 1, 0)  # noqa: E731  (keep, slice)
    nearest = take(source.array)[:, np.minimum((np.arange(n_out) * n_in) // n_out, n_in - 1)]
    bspline = take(source.array) @ bspline_matrix(n_in, n_out).T.astype(np.float32)
    return save_montage([("input (nearest)", nearest), ("cubic B-spline", bspline), ("MedGen SR (AI-generated)", take(result.array))], png,
                        title=f"through-plane x{n_out / n_in:.3g}")
