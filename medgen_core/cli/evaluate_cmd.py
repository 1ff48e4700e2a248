"""``medgen evaluate realism REAL FAKE --out DIR``: how real do generated slices look?

REAL and FAKE are each either

* a **folder of 2D images**: every ``.png``, ``.nii`` or ``.nii.gz`` file directly inside it, in name order
  (one image per file; one kind of file per folder; other files are ignored); a folder with none of these
  is read as a DICOM series (a 3D volume, below); or
* a **3D volume file** (``.nii``/``.nii.gz``, ``.nrrd``, ``.mha``/``.mhd``, ``.dcm``): reoriented to the
  closest RAS orientation, its axial slices (third axis) are the images.

NIfTI and volume slices are arrays ``(X, Y)`` in RAS order; PNGs are ``(rows, columns)`` as stored, so
compare like with like. Each side is divided by its own 99.9th percentile (units need not match;
with ``--paired`` both by REAL's, since a prediction is in its truth's units).

Writes into DIR (created if needed; files replaced only when complete): ``realism.json`` (every number,
the spectra, the settings), ``realism.md`` (a table) and ``realism_spectrum.png``. Metrics:
:mod:`medgen_core.evaluation.realism`.

Options:

* ``--tissue-maps LABELS``: tissue labels for FAKE (same layout: a folder of label images or a label
  volume; 0 background, 1 CSF, 2 grey matter, 3 white matter), or ``mni``: the MNI152 tissue maps
  (nilearn) resampled onto FAKE's grid through its affine (NIfTI / volume inputs already in MNI space).
  ``--real-tissue-maps`` does the same for REAL. Adds per-tissue statistics and the CSF/GM, GM/WM ratios.
* ``--paired``: FAKE[i] was generated for REAL[i] (the truth); adds PSNR and SSIM inside the brain
  (FAKE's tissue labels > 0, else REAL's, else REAL above 5 % of its 99.9th percentile).

Refused with one line and exit code 2, before any compute: fewer than 20 images on a side, images of
different sizes, NaN/Inf values, unreadable files, label maps that do not match their images.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medgen_core.cli._common import non_negative_int, positive_int
from medgen_core.errors import ImageReadError, ImageWriteError, MedGenError

__all__ = ["MIN_IMAGES", "ImageSet", "load_image_set", "register"]

logger = logging.getLogger(__name__)

#: Fewest images per side the command accepts.
MIN_IMAGES = 20
OUTPUT_FILES = ("realism.json", "realism.md", "realism_spectrum.png")
_IMAGE_SUFFIXES = (".png", ".nii", ".nii.gz")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("evaluate", help="evaluate generated images (realism suite)", description="Evaluate generated images.")
    sub = p.add_subparsers(dest="evaluate_command", metavar="WHAT")
    r = sub.add_parser("realism", help="two-sample test, power spectrum, tissue statistics of FAKE against REAL",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("real", type=Path, help="real images: a folder of 2D .png/.nii/.nii.gz images, or a 3D volume file (axial slices)")
    r.add_argument("fake", type=Path, help="generated images, the same kind as REAL")
    r.add_argument("--out", type=Path, required=True, help="output folder for realism.json, realism.md, realism_spectrum.png")
    r.add_argument("--tissue-maps", default=None, help="tissue labels of FAKE (folder or volume, 1 CSF 2 GM 3 WM) or 'mni'")
    r.add_argument("--real-tissue-maps", default=None, help="tissue labels of REAL (folder or volume) or 'mni'")
    r.add_argument("--paired", action="store_true", help="FAKE[i] is the prediction for REAL[i]: add PSNR / SSIM inside the brain")
    r.add_argument("--steps", type=positive_int, default=300, help="training steps of each two-sample classifier (default 300)")
    r.add_argument("--seed", type=non_negative_int, default=0, help="seed of the two-sample test (default 0)")
    r.set_defaults(func=run)
    p.set_defaults(func=lambda args: (p.print_help(), 1)[1])


@dataclass
class ImageSet:
    """A side of the comparison: ``images`` float32 ``(N, H, W)``, one name per image, and per-image 4x4
    RAS affines of the slice grids (``None`` for PNGs, which carry no geometry)."""

    images: np.ndarray
    names: list[str]
    affines: list[np.ndarray] | None
    files: list[Path]


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def _canonical(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(X, Y, Z)`` array and affine reoriented to the closest RAS orientation (no resampling)."""
    import nibabel as nib

    img = nib.as_closest_canonical(nib.Nifti1Image(np.asarray(array, dtype=np.float32), np.asarray(affine, dtype=np.float64)))
    return np.asarray(img.dataobj, dtype=np.float32), np.asarray(img.affine, dtype=np.float64)


def _read_png(path: Path) -> np.ndarray:
    import SimpleITK as sitk

    try:
        image = sitk.ReadImage(str(path))
    except Exception as err:
        raise ImageReadError(f"{path}: cannot read as PNG ({type(err).__name__}); the file may be truncated or corrupt") from None
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    if image.GetNumberOfComponentsPerPixel() > 1:
        channels = array[..., :3] if array.shape[-1] >= 3 else array[..., :1]
        if not np.all(channels == channels[..., :1]):
            raise ImageReadError(f"{path}: is a colour image; expected a grayscale PNG")
        array = channels[..., 0]
    if array.ndim != 2:
        raise ImageReadError(f"{path}: image has shape {array.shape}; expected a 2D grayscale PNG")
    return array


def _volume_slices(path: Path) -> tuple[list[np.ndarray], list[str], list[np.ndarray]]:
    from medgen_core.io import read_volume

    vol = read_volume(path)
    array, affine = _canonical(vol.array, vol.affine)
    shift = np.eye(4)
    slices, names, affines = [], [], []
    for k in range(array.shape[2]):
        shift[2, 3] = k
        slices.append(array[:, :, k])
        names.append(f"{path.name}[z={k}]")
        affines.append(affine @ shift)
    return slices, names, affines


def load_image_set(path: Path, role: str) -> ImageSet:
    """The 2D images of ``path`` (a folder of 2D images or a 3D volume, see the module doc), checked: readable,
    finite, one size. ``role`` names the side in messages ("REAL", "FAKE", ...).

    Raises:
        ImageReadError: missing or unreadable input, mixed kinds of files, a 3D file in a folder, NaN/Inf,
            images of different sizes.
    """
    from medgen_core.io import read_volume

    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"{role} {path}: not found; expected a folder of 2D images (.png, .nii, .nii.gz) or a 3D volume file")
    slices: list[np.ndarray] = []
    names: list[str] = []
    affines: list[np.ndarray] | None = []
    files: list[Path] = []
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".") and _suffix(p) in _IMAGE_SUFFIXES)
        kinds = {"png" if _suffix(p) == ".png" else "nifti" for p in files}
        if len(kinds) > 1:
            raise ImageReadError(f"{role} {path}: folder mixes PNG and NIfTI images (their axes differ); expected one kind of file")
        if not files:
            if not any(p.is_file() for p in path.iterdir()):
                raise ImageReadError(f"{role} {path}: folder holds no images; expected .png, .nii or .nii.gz 2D images (or a DICOM series)")
            slices, names, affines = _volume_slices(path)  # a DICOM series folder
        elif kinds == {"png"}:
            slices, names, affines = [_read_png(p) for p in files], [p.name for p in files], None
        else:
            for p in files:
                vol = read_volume(p, strict=False)  # an empty (all-zero) slice is a valid image here
                if vol.array.shape[2] != 1:
                    raise ImageReadError(f"{role} {p}: is 3D with shape {vol.array.shape}; a folder holds 2D images "
                                         "(give a 3D volume as a file, not inside a folder)")
                array, affine = _canonical(vol.array, vol.affine)
                slices.append(array[:, :, 0])
                names.append(p.name)
                affines.append(affine)
    else:
        slices, names, affines = _volume_slices(path)
        files = [path]
    for name, s in zip(names, slices):
        if not np.isfinite(s).all():
            raise ImageReadError(f"{role} {path}: image {name} contains {int((~np.isfinite(s)).sum())} NaN/Inf pixels; expected finite values")
    shapes = {s.shape for s in slices}
    if len(shapes) > 1:
        first = slices[0].shape
        odd = next(n for n, s in zip(names, slices) if s.shape != first)
        other = next(s.shape for s in slices if s.shape != first)
        raise ImageReadError(f"{role} {path}: images have different sizes ({names[0]} is {first[0]}x{first[1]}, {odd} is "
                             f"{other[0]}x{other[1]}); expected one size")
    return ImageSet(np.stack(slices).astype(np.float32), names, affines, files or [path])


def _tissue_labels(spec: str, images: ImageSet, role: str) -> tuple[np.ndarray, list[Path]]:
    """Labels ``(N, H, W)`` for ``images`` from ``spec`` ('mni' or a label folder/volume), checked."""
    if spec.strip().lower() == "mni":
        if images.affines is None:
            raise MedGenError(f"{role}: --tissue-maps mni needs NIfTI or volume images (PNGs carry no geometry); give a label folder instead")
        from medgen_core.data.tissue_maps import mni_tissue_labels_on_grid

        labels = np.stack([mni_tissue_labels_on_grid(a, images.images.shape[1:]) for a in images.affines])
        if not (labels > 0).any():
            raise MedGenError(f"{role}: no brain of the MNI152 template falls on these images; are they in MNI space?")
        return labels, []
    labels_set = load_image_set(Path(spec), f"{role} tissue maps")
    labels = labels_set.images
    if labels.shape != images.images.shape:
        raise ImageReadError(f"{role} tissue maps {spec}: {labels.shape[0]} maps of {labels.shape[1]}x{labels.shape[2]} for "
                             f"{images.images.shape[0]} images of {images.images.shape[1]}x{images.images.shape[2]}; expected one map per image")
    values = np.unique(labels)
    if not np.all(np.isin(values, (0, 1, 2, 3))):
        raise ImageReadError(f"{role} tissue maps {spec}: values {values[~np.isin(values, (0, 1, 2, 3))][:5].tolist()} are not tissue "
                             "labels; expected 0 background, 1 CSF, 2 grey matter, 3 white matter")
    return labels.astype(np.int64), labels_set.files


def _check_out(out: Path, inputs: list[Path]) -> None:
    from medgen_core.io import check_output_folder

    if not str(out).strip():
        raise ImageWriteError("--out: empty path; expected an output folder")
    check_output_folder(inputs, out)
    for name in OUTPUT_FILES:
        target = out / name
        if target.is_dir():
            raise ImageWriteError(f"{target}: is a folder; expected a file path for the report")


def run(args: argparse.Namespace) -> int:
    from medgen_core.evaluation.realism import realism_markdown, realism_report

    real = load_image_set(args.real, "REAL")
    fake = load_image_set(args.fake, "FAKE")
    for role, s, p in (("REAL", real, args.real), ("FAKE", fake, args.fake)):
        if len(s.images) < MIN_IMAGES:
            raise MedGenError(f"{role} {p}: {len(s.images)} images; expected at least {MIN_IMAGES} per side for a meaningful test")
    if real.images.shape[1:] != fake.images.shape[1:]:
        raise MedGenError(f"images of REAL are {real.images.shape[1]}x{real.images.shape[2]}, of FAKE {fake.images.shape[1]}x"
                          f"{fake.images.shape[2]}; expected one size (crop or pad one side)")
    if args.paired and len(real.images) != len(fake.images):
        raise MedGenError(f"--paired: {len(real.images)} REAL and {len(fake.images)} FAKE images; expected one FAKE image per REAL image")
    inputs = [*real.files, *fake.files, args.real, args.fake]
    fake_labels = real_labels = None
    if args.tissue_maps:
        fake_labels, files = _tissue_labels(args.tissue_maps, fake, "FAKE")
        inputs += files
    if args.real_tissue_maps:
        real_labels, files = _tissue_labels(args.real_tissue_maps, real, "REAL")
        inputs += files
    _check_out(args.out, inputs)

    logger.info("realism: %d real and %d fake images of %dx%d; training the two-sample classifiers (2 folds x %d steps)",
                len(real.images), len(fake.images), real.images.shape[1], real.images.shape[2], args.steps)
    try:
        report = realism_report(real.images[:, None], fake.images[:, None], real_labels=None if real_labels is None else real_labels[:, None],
                                fake_labels=None if fake_labels is None else fake_labels[:, None], paired=args.paired,
                                steps=args.steps, seed=args.seed)
    except ValueError as err:
        raise MedGenError(f"realism: {err}") from None
    report = {"inputs": {"real": str(args.real), "fake": str(args.fake), "tissue_maps": args.tissue_maps, "real_tissue_maps": args.real_tissue_maps,
                         "paired": bool(args.paired), "seed": args.seed, "steps": args.steps}, **report}
    _write_outputs(args.out, report, realism_markdown(report, real_name=f"REAL ({args.real.name})", fake_name=f"FAKE ({args.fake.name})"))
    t, s = report["two_sample"], report["spectrum"]
    print(f"two-sample accuracy {t['accuracy']:.3f} [{t['ci_low']:.3f}, {t['ci_high']:.3f}] (0.5 = indistinguishable), "
          f"log-spectral distance {s['log_spectral_distance_db']:.2f} dB; wrote {', '.join(str(args.out / n) for n in OUTPUT_FILES)}")
    return 0


def _write_outputs(out: Path, report: dict, markdown: str) -> None:
    """All three files into a temporary folder next to ``out``, then moved in (each by an atomic rename)."""
    from medgen_core.evaluation.realism import plot_spectra

    parent = out.parent if str(out.parent) else Path(".")
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it 0700; the folder it becomes gets the usual mode
    try:
        (tmp / "realism.json").write_text(json.dumps(report, indent=4) + "\n", encoding="utf-8")
        (tmp / "realism.md").write_text(markdown, encoding="utf-8")
        s = report["spectrum"]
        names = report["inputs"]
        plot_spectra({f"real ({Path(names['real']).name})": (np.asarray(s["freqs"]), np.asarray(s["real"])),
                      f"fake ({Path(names['fake']).name})": (np.asarray(s["freqs"]), np.asarray(s["fake"]))},
                     tmp / "realism_spectrum.png", title=f"LSD {s['log_spectral_distance_db']:.2f} dB")
        if not out.exists():
            os.replace(tmp, out)
            return
        for name in OUTPUT_FILES:
            os.replace(tmp / name, out / name)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
