"""``medgen translate INPUT OUTPUT --bundle NAME``: image translation (Pix2Pix, CycleGAN) through a bundle.

Runs the bundle's ``configs/inference.json`` through :func:`medgen_core.bundles.run_bundle_inference`
(the code path of ``python -m monai.bundle run``). The output has the input's grid and carries provenance.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from medgen_core.cli._common import (
    add_device_argument,
    add_output_format_arguments,
    check_device,
    check_output,
    check_preview_path,
    device_override,
    positive_int,
    run_bundle_to_output,
)
from medgen_core.errors import BundleError
from medgen_core.io import Volume, read_volume

if TYPE_CHECKING:
    from medgen_core.bundles import BundleInfo
from medgen_core.utils.progress import progress_mode

__all__ = ["register", "translation_bundle", "write_translation_preview"]

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("translate", help="translate a volume to another contrast (Pix2Pix / CycleGAN bundles)", description=__doc__)
    p.add_argument("input", type=Path, help="input image: .nii/.nii.gz, .nrrd, .mha/.mhd, .dcm or a DICOM series folder")
    p.add_argument("output", type=Path, help="output image: .nii, .nii.gz or .nrrd, or a folder with --format dicom (a provenance sidecar is written next to it)")
    p.add_argument("--bundle", required=True, help="translation bundle name or folder, e.g. brain_tissue_to_t1_pix2pix, brain_t1_to_t2w_cyclegan")
    p.add_argument("--direction", default=None, choices=("a2b", "b2a"), help="for two-way (CycleGAN) bundles: a2b (default) or b2a")
    p.add_argument("--slice-axis", type=int, default=None, choices=(0, 1, 2), help="slice axis after reorientation to RAS (default 2: axial)")
    p.add_argument("--batch-size", type=positive_int, default=None, help="slices per forward pass (>= 1)")
    add_device_argument(p)
    p.add_argument("--preview", type=Path, default=None, help="also write a PNG montage of the middle slice (input / output)")
    add_output_format_arguments(p)
    p.add_argument("--progress", default=None, choices=("bar", "json"),
                   help="'json' also prints one 'MEDGEN_PROGRESS {...}' line per step to stdout (for GUIs); default: bar only")
    p.set_defaults(func=run)


def translation_bundle(name: str, direction: str | None) -> BundleInfo:
    """The bundle, checked to be a translation bundle that supports ``direction``."""
    from medgen_core.bundles import discover_bundles, get_bundle

    bundle = get_bundle(name)
    if bundle.medgen_task != "translate":
        available = sorted(n for n, b in discover_bundles().items() if b.medgen_task == "translate")
        raise BundleError(f"bundle {bundle.name} is not a translation bundle (medgen.action is {bundle.medgen_task!r}); translation bundles: {', '.join(available) or 'none'}.")
    directions = bundle.metadata.get("medgen", {}).get("directions", {})
    if direction is not None and direction not in directions:
        raise BundleError(f"bundle {bundle.name} translates one way only; --direction applies to two-way bundles (directions: {', '.join(directions) or 'none'}).")
    return bundle


def run(args: argparse.Namespace) -> int:
    with progress_mode(args.progress):  # --progress json: MEDGEN_PROGRESS lines on stdout
        return _translate(args)


def _translate(args: argparse.Namespace) -> int:
    fmt = check_output(args.input, args.output, args.format, args.keep_patient_ids)
    check_preview_path(args.preview)
    check_device(args.device)
    source = read_volume(args.input)  # fail fast, with a clear message, before loading any model
    bundle = translation_bundle(args.bundle, args.direction)
    overrides = {k: v for k, v in (("direction", args.direction), ("slice_axis", args.slice_axis), ("batch_size", args.batch_size)) if v is not None}
    out, result = run_bundle_to_output(bundle, args.input, args.output, {**overrides, **device_override(args.device)}, fmt,
                                       keep_patient_ids=args.keep_patient_ids)
    what = bundle.metadata.get("medgen", {}).get("directions", {}).get(args.direction or "a2b", bundle.task)
    print(f"wrote {out} {result.shape} ({bundle.name}: {what}); provenance in {out}.generated.json")
    if args.preview:
        write_translation_preview(source, result, args.preview, 2 if args.slice_axis is None else args.slice_axis, title=what)
        print(f"preview {args.preview}")
    return 0


def write_translation_preview(source: Volume, result: Volume, png: Path, slice_axis: int = 2, title: str = "") -> Path:
    """Montage of the middle slice (input / output), each scaled to its own 99.5th percentile."""
    from medgen_core.utils.figures import save_montage

    k = source.shape[slice_axis] // 2
    cols = []
    for name, vol in (("input", source), ("output (AI-generated)", result)):
        plane = np.take(vol.array, k, axis=slice_axis)
        cols.append((name, plane / max(float(np.percentile(plane, 99.5)), 1e-8)))
    return save_montage(cols, png, title=title, vmax=1.0)
