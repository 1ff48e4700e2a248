"""``medgen augment``: synthetic data from generators, every file stamped as AI-generated.

    medgen augment --config aug.json --out DIR --n 32                    # a synthetic dataset
    medgen augment variants INPUT --config aug.json --class NAME --k 3 --out DIR   # variants of a volume
    medgen augment variants INPUT --bundle brain_slice_ddpm --strength 0.3 --output variant.nrrd
    medgen augment experiment --bundle brain_slice_ddpm --out DIR        # does augmentation help? (kappa/F1/accuracy)

The config file is an augmentation config (see :class:`medgen_core.augmentation.AugmentationConfig`),
optionally wrapped as ``{"generators": "DIR", "augmentation": {...}}``; ``generators`` (or
``--generators``) is the folder of ``{modality}_{class}`` (or ``{modality}``) generator directories:
diffusers pipelines or MedGen bundles (a bundle whose configs use code outside the allowlist needs
``--trust``). ``--bundle NAME`` instead uses one installed bundle as the generator of every class.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from medgen_core.cli._common import (
    add_device_argument,
    check_device,
    check_output_path,
    fraction,
    non_negative_int,
    positive_int,
    strength,
)
from medgen_core.errors import AugmentationError

if TYPE_CHECKING:  # imported where used: 'medgen augment --help' stays fast
    from medgen_core.augmentation import AugmentationConfig, GenerativeAugmentationManager

__all__ = ["build_manager", "register", "variant_paths"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("augment", help="generate synthetic training data (datasets, variants of a volume)", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", nargs="?", default="generate", choices=("generate", "variants", "experiment"),
                   help="generate: a synthetic dataset (default); variants: K synthetic variants of INPUT; experiment: train a "
                        "slice-position classifier with and without generative augmentation and report kappa / macro F1 / accuracy")
    p.add_argument("input", nargs="?", type=Path, default=None, help="variants: the source volume (image, or label map with --source labels)")
    p.add_argument("--config", type=Path, default=None, help="augmentation config (.json/.yaml)")
    p.add_argument("--generators", type=Path, default=None, help="folder of {modality}_{class} generator directories")
    p.add_argument("--bundle", default=None, help="use this MedGen bundle (e.g. brain_slice_ddpm, brain_tissue_to_t1_pix2pix) for every class")
    p.add_argument("--out", type=Path, default=None, help="output folder")
    p.add_argument("--output", type=Path, default=None,
                   help="variants: output file (.nii/.nii.gz/.nrrd) instead of --out; with --k > 1 the files are <name>_variant<i><ext>")
    p.add_argument("--n", type=positive_int, default=16, help="generate: number of images (>= 1)")
    p.add_argument("--k", type=positive_int, default=3, help="variants: number of variants (>= 1)")
    p.add_argument("--class", dest="class_name", default=None, help="class to generate (default: all classes round-robin / the first class)")
    p.add_argument("--source", default=None, choices=("vary", "labels"), help="variants: image-to-image (vary) or from a label map (labels)")
    p.add_argument("--strength", type=strength, default=None, help="variants: image-to-image strength in (0, 1]")
    p.add_argument("--steps", type=positive_int, default=None, help="diffusion steps, >= 1 (overrides the config)")
    p.add_argument("--seed", type=non_negative_int, default=None, help="random seed, >= 0 (overrides the config)")
    add_device_argument(p)
    p.add_argument("--trust", action="store_true", help="load bundles whose configs use code outside the allowlist (only if you trust them)")
    ex = p.add_argument_group("experiment (defaults: the reported sweep)")
    ex.add_argument("--seeds", type=non_negative_int, nargs="+", default=None, help="experiment: seeds (default 0 1 2)")
    ex.add_argument("--probs", type=fraction, nargs="+", default=None, help="experiment: prob values (default 0.3 0.5 0.7)")
    ex.add_argument("--mix-ranges", type=_mix_range, nargs="+", default=None, metavar="LO,HI",
                    help="experiment: mix_ratio_range values (default 0.1,0.3 0.3,0.5)")
    ex.add_argument("--steps-sweep", type=positive_int, nargs="+", default=None, help="experiment: inference_steps values (default 10 20 50)")
    ex.add_argument("--iterations", type=positive_int, default=None, help="experiment: classifier training iterations per run (default 200)")
    ex.add_argument("--bank-per-class", type=positive_int, default=None, help="experiment: synthetic slices pre-generated per class and steps value (default 48)")
    p.add_argument("--progress", default=None, choices=("bar", "json"), help="'json' also prints MEDGEN_PROGRESS lines (for GUIs)")
    p.set_defaults(func=run)


def _read_config(args: argparse.Namespace) -> tuple[AugmentationConfig, Path | None]:
    from medgen_core.augmentation import AugmentationConfig
    from medgen_core.bundles import get_bundle

    overrides = {k: v for k, v in (("inference_steps", args.steps), ("seed", args.seed), ("strength", args.strength)) if v is not None}
    generators = args.generators
    if args.config is None:
        if args.bundle is None:
            raise AugmentationError("give --config (an augmentation config) or --bundle (a generator bundle)")
        data: dict = {}
    else:
        if not args.config.is_file():
            raise AugmentationError(f"{args.config}: augmentation config not found")
        text = args.config.read_text(encoding="utf-8")
        if args.config.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            try:
                data = json.loads(text)
            except json.JSONDecodeError as err:
                raise AugmentationError(f"{args.config}: not valid JSON ({err})") from err
        if isinstance(data, dict) and "augmentation" in data:
            if generators is None and data.get("generators"):
                generators = (args.config.parent / data["generators"]).resolve()
            data = data["augmentation"]
    if args.bundle is not None and "classes" not in data:
        classes = get_bundle(args.bundle).metadata.get("medgen", {}).get("class_names")
        if classes:
            data = {**data, "classes": classes}
    cfg = AugmentationConfig.from_dict({**data, **overrides, "enabled": True}, origin=str(args.config or "--bundle"))
    return cfg, generators


def _mix_range(text: str) -> list[float]:
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"mix range must be LO,HI (two numbers in [0, 1]), got {text!r}") from None
    if not 0 <= lo <= hi <= 1:
        raise argparse.ArgumentTypeError(f"mix range must satisfy 0 <= LO <= HI <= 1, got {text!r}")
    return [lo, hi]


def run_experiment_command(args: argparse.Namespace, cfg: AugmentationConfig, manager: GenerativeAugmentationManager) -> int:
    """``medgen augment experiment``: the slice-position classification stand-in task on the MNI152 template."""
    from dataclasses import replace

    import torch

    from medgen_core.experiments.augmentation import ExperimentConfig, markdown_table, run_experiment
    from medgen_core.data.slices import mni_axial_slices_2mm, mni_heldout_axial_slices_2mm, slice_position_class

    overrides = {"seeds": args.seeds, "probs": args.probs, "mix_ratio_ranges": args.mix_ranges, "inference_steps": args.steps_sweep,
                 "iterations": args.iterations, "bank_per_class": args.bank_per_class}
    exp = replace(ExperimentConfig(), **{k: v for k, v in overrides.items() if v is not None})
    if exp.iterations < 1 or exp.bank_per_class < 1 or any(s < 1 for s in exp.inference_steps):
        raise AugmentationError("medgen augment experiment: --iterations, --bank-per-class and --steps-sweep must be >= 1")
    images, z = mni_axial_slices_2mm(128)
    labels = torch.as_tensor(slice_position_class(z.numpy(), len(cfg.classes)), dtype=torch.int64)
    unseen_x, unseen_z = mni_heldout_axial_slices_2mm(128)  # no shipped generator was trained on these
    unseen_y = torch.as_tensor(slice_position_class(unseen_z.numpy(), len(cfg.classes)), dtype=torch.int64)
    result = run_experiment(images, labels, list(cfg.classes), manager, args.out, exp, progress=True, unseen=(unseen_x, unseen_y))
    print(markdown_table(result["summary"]))
    print(f"wrote {args.out / 'results.json'}, {args.out / 'results.md'} and {args.out / 'results.png'}")
    return 0


def variant_paths(input_path: Path, k: int, out_dir: Path | None, output: Path | None) -> list[Path]:
    """Where ``k`` variants go: ``out_dir/<input stem>_variant<i>.nii.gz``, or ``output`` itself (k = 1),
    or ``<output stem>_variant<i><output extension>`` (k > 1)."""
    if k < 1:
        raise AugmentationError(f"--k must be >= 1, got {k}")
    if output is None:
        assert out_dir is not None
        stem = input_path.name.split(".")[0]
        return [out_dir / f"{stem}_variant{i + 1}.nii.gz" for i in range(k)]
    if k == 1:
        return [output]
    ext = ".nii.gz" if output.name.endswith(".nii.gz") else output.suffix
    stem = output.name[: -len(ext)]
    return [output.with_name(f"{stem}_variant{i + 1}{ext}") for i in range(k)]


def build_manager(cfg: AugmentationConfig, generators: Path | None, bundle: str | None, device: str, trust: bool,
                  scratch: Path) -> GenerativeAugmentationManager:
    """A manager over ``generators``, or over ``scratch/{modality}`` linked to ``bundle``."""
    from medgen_core.augmentation import DiffusersLoader, GenerativeAugmentationManager
    from medgen_core.bundles import get_bundle
    from medgen_core.bundles.generators import bundle_loaders

    if bundle is not None:
        info = get_bundle(bundle)
        base = scratch / "generators"
        base.mkdir(parents=True, exist_ok=True)
        (base / cfg.modality).symlink_to(info.path, target_is_directory=True)
        generators = base
    if generators is None:
        raise AugmentationError("no generators: give --generators DIR, --bundle NAME, or 'generators' in the config file")
    dev = None if device == "auto" else device
    return GenerativeAugmentationManager(generators, cfg, device=dev, loaders=[DiffusersLoader(), *bundle_loaders(trust)])


def run(args: argparse.Namespace) -> int:
    from medgen_core.augmentation.outputs import volume_variants, write_synthetic_dataset
    from medgen_core.io import read_volume
    from medgen_core.provenance import write_generated_volume
    from medgen_core.utils.progress import progress_mode

    check_device(args.device)
    with progress_mode(args.progress), tempfile.TemporaryDirectory(prefix="medgen-augment-") as scratch:
        cfg, generators = _read_config(args)
        if args.action == "generate" and (args.out is None or args.output is not None):
            raise AugmentationError("medgen augment (generate) writes a dataset: give the output folder --out (not --output)")
        if args.action == "variants" and (args.out is None) == (args.output is None):
            raise AugmentationError("medgen augment variants: give either an output folder --out (with --k) or one output file --output")
        if args.action == "variants":
            if args.input is None:
                raise AugmentationError("medgen augment variants needs an INPUT volume")
            if args.output is not None:
                check_output_path(args.input, args.output)
            source_volume = read_volume(args.input)  # fail fast, before loading any model
            manager = build_manager(cfg, generators, args.bundle, args.device, args.trust, Path(scratch))
            class_name = args.class_name or cfg.classes[0]
            source = args.source or ("labels" if cfg.for_class(class_name).source == "labels" else "vary")
            k = args.k
            paths = variant_paths(args.input, k, args.out, args.output)
            for path in paths:
                check_output_path(args.input, path)
            if args.out is not None:
                args.out.mkdir(parents=True, exist_ok=True)
            for i, (volume, meta) in enumerate(volume_variants(manager, source_volume, k, class_name, source=source, seed=args.seed)):
                path = paths[i]
                write_generated_volume(volume, path, meta)
                print(f"wrote {path} (variant {i + 1}/{k}, {source}, strength {meta.parameters.get('strength', '-')}); provenance in {path}.generated.json")
            return 0
        if args.action == "experiment":
            if args.out is None:
                raise AugmentationError("medgen augment experiment: give the output folder --out")
            manager = build_manager(cfg, generators, args.bundle, args.device, args.trust, Path(scratch))
            return run_experiment_command(args, cfg, manager)
        manager = build_manager(cfg, generators, args.bundle, args.device, args.trust, Path(scratch))
        classes = [args.class_name] if args.class_name else None
        result = write_synthetic_dataset(manager, args.n, args.out, classes=classes, seed=args.seed)
        print(f"wrote {len(result.files)} synthetic images to {args.out}; manifest {result.manifest}; montage {result.montage}")
        return 0
