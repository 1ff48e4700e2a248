"""Offline sample volumes: the MNI152 2009 T1 template (nilearn) and a T2-weighted brain (dipy).

Both packages ship these files inside their wheels, so nothing is downloaded. nilearn is a dependency of
medgen (``medgen demo`` works on a plain install); dipy comes with the ``data`` extra (``pip install medgen[data]``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medgen_core.errors import MedGenError
from medgen_core.io import Volume, read_volume

__all__ = [
    "MNI_HELDOUT_AXIAL",
    "MNI_HELDOUT_MARGIN",
    "mni152_t1_path",
    "load_mni152_t1",
    "load_mni152_brain_mask",
    "load_mni152_tissue_probabilities",
    "mni152_tissue_labels",
    "TISSUE_CLASSES",
    "dipy_t2_path",
    "load_dipy_t2",
    "mni_training_axial_indices",
]

# Axial slab of the MNI152 volume (z index range, end exclusive) kept out of every training run and
# used for evaluation; MNI_HELDOUT_MARGIN slices either side are excluded from training as well.
MNI_HELDOUT_AXIAL = (80, 100)
MNI_HELDOUT_MARGIN = 4


def _need(package: str) -> None:
    raise MedGenError(
        f"sample data needs the '{package}' package, which ships the file offline: pip install 'medgen[data]'"
    )


def _nilearn():
    try:
        from nilearn import datasets
    except ImportError:  # pragma: no cover - depends on the environment
        _need("nilearn")
    return datasets


def _to_volume(img, name: str) -> Volume:
    array = np.asarray(img.get_fdata(dtype=np.float32), dtype=np.float32)
    return Volume(array=array, affine=np.asarray(img.affine, dtype=np.float64), path=None, format=name)


def mni152_t1_path() -> Path:
    """Path of the MNI152 2009 T1 template NIfTI inside the nilearn package (1 mm, 197x233x189)."""
    datasets = _nilearn()
    import nilearn

    candidates = sorted(Path(nilearn.__file__).parent.glob("datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii*"))
    if candidates:
        return candidates[0]
    del datasets
    raise MedGenError("the MNI152 T1 template was not found inside the installed nilearn package")


def load_mni152_t1() -> Volume:
    """MNI152 2009 T1 template, intensities in [0, 1], shape (197, 233, 189), 1 mm, RAS."""
    return _to_volume(_nilearn().load_mni152_template(resolution=1), "mni152_t1")


def load_mni152_brain_mask() -> np.ndarray:
    """Boolean brain mask of the MNI152 template, shape (197, 233, 189)."""
    return _nilearn().load_mni152_brain_mask(resolution=1).get_fdata() > 0.5


def load_mni152_tissue_probabilities() -> tuple[np.ndarray, np.ndarray]:
    """Grey- and white-matter probability maps of the MNI152 template, each (197, 233, 189) in [0, 1]."""
    datasets = _nilearn()
    gm = datasets.load_mni152_gm_template(resolution=1).get_fdata(dtype=np.float32)
    wm = datasets.load_mni152_wm_template(resolution=1).get_fdata(dtype=np.float32)
    return gm, wm


TISSUE_CLASSES = ("background", "csf", "grey_matter", "white_matter")


def mni152_tissue_labels() -> np.ndarray:
    """Discrete tissue map of the MNI152 template, uint8 (197, 233, 189): 0 background, 1 CSF, 2 grey
    matter, 3 white matter. Inside the brain mask each voxel takes the most probable of grey matter, white
    matter and CSF (the remainder ``1 - GM - WM``); outside it is background."""
    gm, wm = load_mni152_tissue_probabilities()
    mask = load_mni152_brain_mask()
    csf = np.clip(1.0 - gm - wm, 0.0, 1.0)
    labels = (np.argmax(np.stack([csf, gm, wm]), axis=0) + 1).astype(np.uint8)
    labels[~mask] = 0
    return labels


def mni_training_axial_indices(depth: int = 189) -> list[int]:
    """Axial slice indices allowed for training: all but the held-out slab and its margin."""
    lo, hi = MNI_HELDOUT_AXIAL
    return [z for z in range(depth) if not (lo - MNI_HELDOUT_MARGIN <= z < hi + MNI_HELDOUT_MARGIN)]


def dipy_t2_path() -> Path:
    """Path of dipy's T2-weighted (b=0) brain volume ``S0_10slices.nii.gz`` (128x128x10, 2 mm in-plane, oblique thick slices)."""
    try:
        from dipy.data import get_fnames
    except ImportError:  # pragma: no cover
        _need("dipy")
    return Path(get_fnames(name="S0_10"))


def load_dipy_t2() -> Volume:
    """dipy's T2-weighted b=0 brain volume, read through :func:`medgen_core.io.read_volume` (3D, float32)."""
    return read_volume(dipy_t2_path())
