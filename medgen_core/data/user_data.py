"""The user's own training data: the one ``dataset_dir`` override of every bundle's ``configs/train.json``.

``dataset_dir`` is a folder of NIfTI volumes (``.nii`` / ``.nii.gz``; other files are ignored, sub-folders are not
searched unless a layout names them) or a file list: a ``.txt`` file with one path per line (relative paths are
relative to the list; ``#`` starts a comment) or a ``.json`` list of paths. The layouts:

* one domain (super-resolution, DDPM, autoencoder): ``DIR/*.nii.gz`` (:func:`volume_files`);
* two domains paired by file name (Pix2Pix ``labels/`` + ``t1/``, GenSeg ``images/`` + ``labels/``):
  ``DIR/<first>/NAME.nii.gz`` and ``DIR/<second>/NAME.nii.gz`` (:func:`paired_files`); or a MONAI datalist JSON
  (``{"training": [{<key>: path, ...}]}``);
* two unpaired domains (CycleGAN): ``DIR/A/*.nii.gz`` and ``DIR/B/*.nii.gz`` (:func:`volume_files` with ``subfolder``).

:func:`position_slices` turns one-domain volumes into the 2 mm axial slices with a slice-position class that the
slice generators (DDPM, autoencoder) train on. The ABR CVAE reads signal records instead (:func:`abr_records`).

Every problem (a missing or empty folder, no NIfTI file, a file that is not a readable NIfTI, a name without its
partner) raises :class:`~medgen_core.errors.TrainingDataError` with one line naming the path, what is wrong and
what was expected. Only headers are read here; the voxels are read by the training transforms.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from medgen_core.errors import TrainingDataError

__all__ = ["NIFTI_SUFFIXES", "abr_records", "is_nifti", "labelled_slices", "paired_files", "position_slices", "volume_files"]

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def is_nifti(path: str | Path) -> bool:
    """Whether the name ends in ``.nii`` or ``.nii.gz`` (case-insensitive)."""
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def _stem(path: Path) -> str:
    name = path.name
    return name[: -len(".nii.gz")] if name.lower().endswith(".nii.gz") else name[: -len(".nii")]


def _check_header(path: Path) -> None:
    import nibabel as nib

    try:
        img = nib.load(str(path))
        shape = img.shape
    except Exception as err:  # noqa: BLE001 - nibabel raises many types on a damaged file
        raise TrainingDataError(f"{path}: not a readable NIfTI file ({type(err).__name__}: {str(err).splitlines()[0][:160]}); "
                                "expected a .nii or .nii.gz volume.") from None
    if len(shape) < 2 or min(shape[:3]) < 1:
        raise TrainingDataError(f"{path}: a NIfTI image of shape {tuple(shape)}; expected a 2D or 3D volume.")


def _list_file(source: Path) -> list[Path]:
    text = source.read_text(encoding="utf-8")
    if source.suffix.lower() == ".json":
        try:
            items = json.loads(text)
        except json.JSONDecodeError as err:
            raise TrainingDataError(f"{source}: not valid JSON ({err}); expected a list of NIfTI file paths.") from None
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise TrainingDataError(f"{source}: expected a JSON list of NIfTI file paths, got {type(items).__name__}.")
    else:
        items = [ln.split("#", 1)[0].strip() for ln in text.splitlines()]
    return [p if p.is_absolute() else source.parent / p for p in (Path(i) for i in items if i)]


def volume_files(source: str | Path, subfolder: str | None = None, what: str = "training volumes", check: bool = True) -> list[str]:
    """The NIfTI files of a data folder (``source`` or ``source/subfolder``) or of a file list, sorted by name.

    Args:
        source: a folder, a ``.txt`` list (one path per line) or a ``.json`` list of paths.
        subfolder: a folder inside ``source`` to list instead (e.g. ``"A"``).
        what: what the files are, for the error messages.
        check: read every header (one clear line for a damaged file, before training starts).
    """
    root = Path(source).expanduser()
    if not str(source).strip():
        raise TrainingDataError(f"no training data given; expected a folder of NIfTI {what} (--dataset_dir DIR).")
    if not root.exists():
        raise TrainingDataError(f"{root}: no such folder; expected a folder of NIfTI {what} (.nii, .nii.gz) or a file list.")
    if root.is_file():
        if subfolder is not None:
            raise TrainingDataError(f"{root}: a file; expected a folder with a {subfolder}/ sub-folder of NIfTI {what}.")
        if root.suffix.lower() not in (".txt", ".json"):
            raise TrainingDataError(f"{root}: a file of the wrong type; expected a folder of NIfTI {what}, or a file list (.txt, .json).")
        files = _list_file(root)
        if not files:
            raise TrainingDataError(f"{root}: the file list is empty; expected one NIfTI file ({what}) per line.")
        for f in files:
            if not f.is_file():
                raise TrainingDataError(f"{f}: listed in {root} but no such file.")
            if not is_nifti(f):
                raise TrainingDataError(f"{f}: listed in {root} but not a NIfTI file; expected .nii or .nii.gz {what}.")
    else:
        folder = root / subfolder if subfolder is not None else root
        if not folder.is_dir():
            raise TrainingDataError(f"{folder}: no such folder; expected {root} to hold a {subfolder}/ folder of NIfTI {what}.")
        entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
        files = [p for p in entries if p.is_file() and is_nifti(p)]
        if not files:
            others = [p.name for p in entries]
            found = f"it holds {len(others)} other entries ({', '.join(others[:3])}{', ...' if len(others) > 3 else ''})" if others else "it is empty"
            raise TrainingDataError(f"{folder}: no NIfTI file (.nii, .nii.gz) in this folder, {found}; expected NIfTI {what}.")
    if check:
        for f in files:
            _check_header(f)
    return [str(f) for f in files]


def paired_files(source: str | Path, first: str, second: str, keys: Sequence[str] = ("image", "label"),
                 what: str = "pairs", check: bool = True) -> list[dict[str, str]]:
    """Pairs ``[{keys[0]: source/first/NAME, keys[1]: source/second/NAME}]`` matched by file name (``.nii`` and
    ``.nii.gz`` count as the same name), or the ``"training"`` list of a MONAI datalist JSON given as ``source``.
    Every file needs its partner: an unmatched name is an error naming it."""
    root = Path(source).expanduser()
    if root.is_file() and root.suffix.lower() == ".json":
        from monai.data import load_decathlon_datalist

        try:
            items = load_decathlon_datalist(str(root), False, "training")
        except (KeyError, ValueError, json.JSONDecodeError) as err:
            raise TrainingDataError(f"{root}: not a MONAI datalist with a 'training' list ({type(err).__name__}: {err}); "
                                    f"expected {{\"training\": [{{\"{keys[0]}\": ..., \"{keys[1]}\": ...}}]}}.") from None
        pairs = []
        for i, item in enumerate(items):
            if not all(k in item for k in keys):
                raise TrainingDataError(f"{root}: item {i} of 'training' lacks {[k for k in keys if k not in item]}; expected keys {list(keys)}.")
            for k in keys:
                if not Path(item[k]).is_file():
                    raise TrainingDataError(f"{item[k]}: listed in {root} but no such file.")
                if check:
                    _check_header(Path(item[k]))
            pairs.append({k: str(item[k]) for k in keys})
        if not pairs:
            raise TrainingDataError(f"{root}: the 'training' list is empty; expected {what}.")
        return pairs
    a = {_stem(Path(f)): f for f in volume_files(root, first, f"{what} ({first})", check)}
    b = {_stem(Path(f)): f for f in volume_files(root, second, f"{what} ({second})", check)}
    lonely = sorted(set(a) ^ set(b))
    if lonely:
        name = lonely[0]
        has, lacks = (first, second) if name in a else (second, first)
        raise TrainingDataError(f"{root / has / name}: no file of the same name in {root / lacks}/ "
                                f"({len(lonely)} unmatched); expected every {first}/NAME to have a {second}/NAME.")
    return [{keys[0]: a[n], keys[1]: b[n]} for n in sorted(a)]


def position_slices(files: Sequence[str | Path], size: int = 128, n_classes: int = 4, spacing_mm: float = 2.0,
                    min_foreground: float = 0.02) -> tuple[Any, Any]:
    """Axial slices of the user's volumes for the slice generators, prepared like the MNI training slices
    (:func:`medgen_core.data.slices.mni_axial_slices_2mm`): each volume is reoriented to the closest RAS orientation,
    resampled in-plane to ``spacing_mm`` (linear), divided by its 99.9th percentile and clipped to [0, 1], and every
    axial slice is zero-padded or centre-cropped to ``size x size``. Slices whose foreground (> 0.1) covers less than
    ``min_foreground`` of the field are dropped; the others get the slice-position class
    ``floor(n_classes * (z - lo) / (hi - lo))`` over the volume's own foreground z-extent ``[lo, hi)`` (0 = most
    inferior), the MNI slices' classes measured on each subject.

    Returns:
        ``(images, classes)``: float32 ``(N, 1, size, size)`` in [0, 1] and int64 ``(N,)`` in ``[0, n_classes)``.
    """
    import nibabel as nib
    import numpy as np
    import torch
    from scipy.ndimage import zoom

    from medgen_core.data.slices import fit_to_square
    from medgen_core.io import read_volume

    images, classes = [], []
    for f in files:
        vol = read_volume(f)
        if vol.array.ndim != 3:
            raise TrainingDataError(f"{f}: a {vol.array.ndim}D image; expected a 3D volume (axial slices are taken).")
        img = nib.as_closest_canonical(nib.Nifti1Image(np.asarray(vol.array, dtype=np.float32), vol.affine))
        data = np.asarray(img.dataobj, dtype=np.float32)
        spacing = np.linalg.norm(img.affine[:3, :3], axis=0)
        data = zoom(data, (spacing[0] / spacing_mm, spacing[1] / spacing_mm, 1.0), order=1)
        data = np.clip(data / max(float(np.percentile(data, 99.9)), 1e-8), 0.0, 1.0)
        square = fit_to_square(data, size)  # (size, size, Z)
        fg = (square > 0.1).mean(axis=(0, 1))
        keep = np.flatnonzero(fg >= min_foreground)
        if keep.size == 0:
            raise TrainingDataError(f"{f}: no axial slice has {min_foreground:.0%} foreground after scaling; expected a volume with visible anatomy.")
        lo, hi = int(keep.min()), int(keep.max()) + 1
        images.append(np.moveaxis(square[:, :, keep], 2, 0))
        classes.append(np.clip((keep - lo) * int(n_classes) // max(hi - lo, 1), 0, int(n_classes) - 1))
    if not images:
        raise TrainingDataError("no training volumes given; expected at least one NIfTI volume.")
    return (torch.from_numpy(np.ascontiguousarray(np.concatenate(images), dtype=np.float32))[:, None],
            torch.from_numpy(np.concatenate(classes).astype(np.int64)))


def abr_records(source: str | Path, val_fraction: float = 0.1) -> tuple[Any, Any]:
    """``(train, val)`` ABR record sets (:class:`~medgen_core.data.abr_dataset.ABRDataset`) from ``source``: a folder with
    ``train.npz`` or ``train.csv`` and optionally ``val.npz`` / ``val.csv`` (the format of ``medgen cvae simulate``), or
    one such file. Without a validation file the last ``val_fraction`` of the records (at least one) is held out."""
    from medgen_core.data.abr_dataset import load_abr_dataset

    root = Path(source).expanduser()
    if not root.exists():
        raise TrainingDataError(f"{root}: no such folder or file; expected ABR records (train.npz or train.csv, as `medgen cvae simulate` writes).")

    def find(stem: str) -> Path | None:
        found = [root / f"{stem}{ext}" for ext in (".npz", ".csv") if (root / f"{stem}{ext}").is_file()]
        return found[0] if found else None

    train_file, val_file = (root, None) if root.is_file() else (find("train"), find("val"))
    if train_file is None:
        entries = sorted(p.name for p in root.iterdir() if not p.name.startswith("."))
        raise TrainingDataError(f"{root}: no train.npz or train.csv in this folder (found {', '.join(entries[:4]) or 'nothing'}); "
                                "expected ABR records as `medgen cvae simulate` writes them.")
    train = load_abr_dataset(train_file)
    if val_file is not None:
        return train, load_abr_dataset(val_file)
    import numpy as np

    if len(train) < 2:
        raise TrainingDataError(f"{train_file}: {len(train)} record; expected at least 2 (one is held out for validation) or a val file.")
    k = max(int(round(len(train) * val_fraction)), 1)
    return train.subset(np.arange(len(train) - k)), train.subset(np.arange(len(train) - k, len(train)))


def labelled_slices(pairs: Sequence[Mapping[str, str]], size: Sequence[int] = (80, 96), num_classes: int = 4, spacing_mm: float = 2.0,
                    keys: Sequence[str] = ("image", "label")) -> tuple[Any, Any, Any, Any]:
    """Axial 2D training pairs for the GenSeg segmenter from the user's (image, label map) volume pairs, prepared like the
    MNI tissue slices (:mod:`medgen_core.data.tissue_slices`): both reoriented to the closest RAS orientation and
    resampled in-plane to ``spacing_mm`` (image linear, labels nearest), the image divided by its 99.9th percentile and
    clipped to [0, 1], centre-cropped or padded to ``size``; only slices with some label > 0 are kept. With several
    subjects the last one's slices are the validation pairs (model selection, GenSeg's upper level), with one subject
    every fourth slice.

    Returns:
        ``(train_image, train_label, val_image, val_label)``: float32 ``(N, 1, H, W)`` in [0, 1] and int64 ``(N, 1, H, W)``.
    """
    import nibabel as nib
    import numpy as np
    import torch
    from scipy.ndimage import zoom

    from medgen_core.data.translation import fit_to_size
    from medgen_core.io import read_volume

    subjects = []
    for pair in pairs:
        image_path, label_path = pair[keys[0]], pair[keys[1]]
        image, label = read_volume(image_path), read_volume(label_path)
        if image.array.shape != label.array.shape or image.array.ndim != 3:
            raise TrainingDataError(f"{label_path}: label map of shape {tuple(label.array.shape)} for the image {image_path} of shape "
                                    f"{tuple(image.array.shape)}; expected two 3D volumes on the same grid.")
        lab = np.asarray(label.array)
        if not np.all(np.isfinite(lab)) or np.any(lab != np.round(lab)) or lab.min() < 0 or lab.max() >= num_classes:
            raise TrainingDataError(f"{label_path}: not a label map of integers 0..{num_classes - 1} (values {float(lab.min()):g}..{float(lab.max()):g}).")
        img_c = nib.as_closest_canonical(nib.Nifti1Image(np.asarray(image.array, dtype=np.float32), image.affine))
        lab_c = nib.as_closest_canonical(nib.Nifti1Image(lab.astype(np.int16), label.affine))
        spacing = np.linalg.norm(img_c.affine[:3, :3], axis=0)
        factors = (spacing[0] / spacing_mm, spacing[1] / spacing_mm, 1.0)
        img = zoom(np.asarray(img_c.dataobj, dtype=np.float32), factors, order=1)
        img = np.clip(img / max(float(np.percentile(img, 99.9)), 1e-8), 0.0, 1.0)
        lab = zoom(np.asarray(lab_c.dataobj).astype(np.int16), factors, order=0)
        keep = np.flatnonzero((lab > 0).any(axis=(0, 1)))
        if keep.size == 0:
            raise TrainingDataError(f"{label_path}: no slice holds a label > 0; expected a tissue label map (0 = background).")
        x = torch.from_numpy(np.ascontiguousarray(np.moveaxis(img[:, :, keep], 2, 0)))[:, None]
        m = torch.from_numpy(np.ascontiguousarray(np.moveaxis(lab[:, :, keep], 2, 0)).astype(np.int64))[:, None]
        subjects.append((fit_to_size(x, tuple(size)), fit_to_size(m, tuple(size))))
    if not subjects:
        raise TrainingDataError("no labelled volumes given; expected at least one image / label map pair.")
    if len(subjects) > 1:
        train = subjects[:-1]
        return (torch.cat([t[0] for t in train]), torch.cat([t[1] for t in train]), subjects[-1][0], subjects[-1][1])
    x, m = subjects[0]
    if x.shape[0] < 2:
        raise TrainingDataError(f"{pairs[0][keys[1]]}: one labelled slice; expected at least 2 (one is held out for validation) or a second subject.")
    val = torch.zeros(x.shape[0], dtype=torch.bool)
    val[3::4] = True
    if not val.any():
        val[-1] = True
    return x[~val], m[~val], x[val], m[val]
