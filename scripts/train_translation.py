#!/usr/bin/env python
"""Re-train the weights shipped in the translation bundles (Pix2Pix tissue -> T1, CycleGAN T1 <-> T2w).

Runs each bundle's own ``configs/train.json`` (MONAI's GanTrainer) through MONAI's ConfigParser (checkpoints in
``--runs-dir``, so an interrupted run resumes where it stopped), copies the exported generators into the
bundle's ``models/`` folder and records their sha256 in ``configs/metadata.json``. Also writes the
bundles' sample inputs (``sample_data/``, held-out MNI slab) if they are missing.

    python scripts/train_translation.py                          # both bundles, the schedules in SCHEDULES
    python scripts/train_translation.py --bundle pix2pix --epochs 20
    python scripts/train_translation.py --bundle all --epochs 1 --samples 4 --runs-dir /tmp/smoke --no-install

Pix2Pix label-map randomisation (``--labels random``, the default for the MNI sample data): every training
sample gets its tissue map made anew from the MNI tissue probabilities
(:func:`medgen_core.transforms.label_randomisation.label_randomisation`: one elastic deformation of the
probabilities and the T1 together, argmax / threshold / intensity constructions, erosion or dilation,
missing classes); ``--labels fixed`` trains on the fixed argmax labels of ``train.json``. ``--init-from``
starts the generator from a saved state dict (the shipped 0.2.x weights continue the 0.1.1 weights).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from medgen_core.bundles.runner import training_parser

from medgen_core.provenance import sha256_file

ROOT = Path(__file__).resolve().parents[1] / "monai_bundles"
BUNDLES = {
    "pix2pix": {"dir": ROOT / "brain_tissue_to_t1_pix2pix", "exports": {"model.pt": "tissue_to_t1"}, "model_pt": None},
    "cyclegan": {"dir": ROOT / "brain_t1_to_t2w_cyclegan", "exports": {"generator_a2b.pt": "a2b", "generator_b2a.pt": "b2a"}, "model_pt": "generator_a2b.pt"},
}
# Epochs (constant lr, then linear decay) of the shipped weights on the default sample data. The paper
# uses 100 + 100; these are cut to what 2 CPU cores manage (see the bundles' docs/README.md).
SCHEDULES = {"pix2pix": (15, 15), "cyclegan": (5, 5)}
HELDOUT = (80, 100)


def write_sample_data(name: str, bundle: Path) -> Path | None:
    """The held-out MNI slab (z=80..99) as the bundle's sample input; written once, never overwritten."""
    import nibabel as nib

    from medgen_core.data.samples import load_mni152_t1, mni152_tissue_labels

    lo, hi = HELDOUT
    if name == "pix2pix":
        path = bundle / "sample_data" / f"mni152_tissue_labels_z{lo}-{hi - 1}.nii.gz"
        step = np.eye(4)
        data = mni152_tissue_labels()[:, :, lo:hi].astype(np.uint8)
    else:  # 2 mm in-plane (2x2 block average, as the CycleGAN training slices), 1 mm slices
        path = bundle / "sample_data" / f"mni152_t1_2mm_z{lo}-{hi - 1}.nii.gz"
        step = np.array([[2.0, 0, 0, 0.5], [0, 2.0, 0, 0.5], [0, 0, 1, 0], [0, 0, 0, 1]])
        t1 = load_mni152_t1().array[:, :, lo:hi]
        x, y = t1.shape[0] // 2 * 2, t1.shape[1] // 2 * 2
        data = t1[:x, :y].reshape(x // 2, 2, y // 2, 2, hi - lo).mean(axis=(1, 3)).astype(np.float32)
    if path.exists():
        return None
    mni_affine = load_mni152_t1().affine
    shift = np.eye(4)
    shift[2, 3] = lo
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, mni_affine @ shift @ step), str(path))
    return path


# Label-map randomisation of the Pix2Pix MNI training (replaces train.json's slice data and transforms).
RANDOM_LABEL_DATA = ("$medgen_core.data.translation.tissue_probability_slices([z for z in medgen_core.data.samples.mni_training_axial_indices() "
                     "if @sample_slice_range[0] <= z < @sample_slice_range[1]], tuple(@slice_size))")
RANDOM_LABEL_TRANSFORMS = "$medgen_core.transforms.label_randomisation.label_randomisation(num_classes=@num_classes, spatial_dims=2)"


def use_random_labels(parser) -> None:
    """Point a Pix2Pix ``train.json`` parser at probability slices and the label-randomisation chain."""
    import importlib

    for module in ("medgen_core.data.translation", "medgen_core.transforms.label_randomisation"):
        importlib.import_module(module)  # the config's expressions reach them as attributes of medgen_core

    parser["training_data"] = RANDOM_LABEL_DATA
    parser["slice_transforms"] = RANDOM_LABEL_TRANSFORMS


def train(name: str, runs_dir: Path, epochs: tuple[int, int], samples: int | None, dataset_dir: str | None, device: str | None,
          random_labels: bool = False, init_from: Path | None = None, lr: float | None = None) -> tuple[Path, float, int]:
    """Run ``train.json`` (MONAI's GanTrainer); returns ``(output folder, seconds, iterations done in this call)``."""
    bundle = BUNDLES[name]["dir"]
    out = runs_dir / name
    start_iter = _iterations(out)
    if init_from is not None and start_iter == 0:  # a resumed run keeps its checkpoint
        print(f"{name}: generator initialised from {init_from}", flush=True)
    parser = training_parser(bundle, out, device, epochs=epochs[0], epochs_decay=epochs[1], samples_per_epoch=samples,
                             dataset_dir=str(Path(dataset_dir).resolve()) if dataset_dir else None,
                             init_from=str(init_from) if init_from is not None else None, lr=lr)
    if random_labels:
        use_random_labels(parser)
    t0 = time.time()
    parser.get_parsed_content("run")
    return out, time.time() - t0, _iterations(out) - start_iter


def _iterations(out: Path) -> int:
    """Iterations done so far: the newest ``checkpoint_epoch=N.pt`` in ``out``'s engine state (0 without one)."""
    from medgen_core.training.engines import checkpoint_files, load_checkpoint

    files = checkpoint_files(out)
    return int(load_checkpoint(files[-1][1])["trainer"]["iteration"]) if files else 0


def install(name: str, out: Path, trained: bool, note: dict) -> None:
    """Copy the exported generators into ``models/`` and record their sha256 (and the training note)."""
    spec, bundle = BUNDLES[name], BUNDLES[name]["dir"]
    meta_path = bundle / "configs" / "metadata.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    medgen = meta["medgen"]
    for filename, variant in spec["exports"].items():
        target = bundle / medgen["variants"][variant]["file"]
        shutil.copyfile(out / filename, target)
        medgen["variants"][variant]["sha256"] = sha256_file(target)
        print(f"{name}: installed {target}", flush=True)
    if spec["model_pt"]:
        model_pt = bundle / medgen["model_pt"]["file"]
        shutil.copyfile(out / spec["model_pt"], model_pt)
        medgen["model_pt"]["sha256"] = sha256_file(model_pt)
    medgen["trained"] = trained
    medgen["training"] = note
    meta_path.write_text(json.dumps(meta, indent=4) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", default="all", choices=(*BUNDLES, "all"))
    ap.add_argument("--epochs", type=int, default=None, help="total epochs (half constant, half linear decay); default: SCHEDULES")
    ap.add_argument("--samples", type=int, default=None, help="slices per epoch (default: every training slice; for smoke tests)")
    ap.add_argument("--dataset-dir", "--datalist", dest="datalist", default=None,
                    help="train on your own data: a folder (pix2pix: labels/ + t1/, cyclegan: A/ + B/) or, for pix2pix, a MONAI datalist JSON "
                         "(see the bundles' docs/README.md)")
    ap.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda:0 (default: cuda if available)")
    ap.add_argument("--runs-dir", type=Path, default=None, help="checkpoints and logs (resumable); default <bundle>/runs")
    ap.add_argument("--no-install", action="store_true", help="do not copy weights into the bundle")
    ap.add_argument("--labels", choices=("random", "fixed"), default="random",
                    help="Pix2Pix on the MNI sample data: label-map randomisation (default) or train.json's fixed argmax labels")
    ap.add_argument("--lr", type=float, default=None, help="initial learning rate of both networks (default: train.json's 2e-4)")
    ap.add_argument("--init-from", type=Path, default=None, help="Pix2Pix: start the generator from this state dict (e.g. earlier weights)")
    args = ap.parse_args(argv)
    if args.init_from is not None and not args.init_from.is_file():
        ap.error(f"--init-from {args.init_from}: no such file (expected a generator state dict, e.g. a bundle's models/model.pt)")
    names = list(BUNDLES) if args.bundle == "all" else [args.bundle]
    if args.datalist and len(names) > 1:
        ap.error("--dataset-dir needs --bundle pix2pix (labels/ + t1/, or a datalist) or --bundle cyclegan (A/ + B/)")
    for name in names:
        bundle = BUNDLES[name]["dir"]
        written = write_sample_data(name, bundle)
        if written:
            print(f"{name}: wrote sample input {written}", flush=True)
        epochs = SCHEDULES[name] if args.epochs is None else (math.ceil(args.epochs / 2), args.epochs // 2)
        random_labels = name == "pix2pix" and args.labels == "random" and not args.datalist
        out, seconds, iterations = train(name, args.runs_dir or bundle / "runs", epochs, args.samples, args.datalist, args.device,
                                         random_labels=random_labels, init_from=args.init_from if name == "pix2pix" else None, lr=args.lr)
        rate = seconds / max(iterations, 1)
        print(f"{name}: {iterations} iterations in {seconds:.0f} s ({rate:.2f} s/iteration) -> {out}", flush=True)
        if not args.no_install:
            full = args.epochs is None and args.samples is None and not args.datalist
            note = {"epochs": list(epochs), "samples_per_epoch": args.samples or "all", "seconds_per_iteration": round(rate, 3),
                    "device": str(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))}
            if name == "pix2pix":
                note["labels"] = "label-map randomisation (medgen_core.transforms.label_randomisation)" if random_labels else "fixed argmax labels"
                note["init_from"] = args.init_from.name if args.init_from else None
            if args.lr is not None:
                note["lr"] = args.lr
            install(name, out, trained=full, note=note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
