"""Brain tissue segmentation slices at 2 mm from the MNI152 template, with paired draws and test sets (GenSeg).

The T1 template and its tissue map (:func:`~medgen_core.data.samples.mni152_tissue_labels`: 0 background,
1 CSF = inside the brain mask where ``1 - GM - WM`` is the most probable, 2 grey matter, 3 white matter) are
brought to 2 mm isotropic: T1 by 2x2x2 block averaging, labels by the 2x2x2 majority (ties to the lower class).
Axial slices are centre-cropped to :data:`SLICE_SIZE` (80 x 96 px = 160 x 192 mm covers the brain).

Splits (2 mm axial indices, the brain spans z = 0..76):

* training z-range :data:`TRAIN_Z_RANGE`; a *draw* picks 7 train + 2 validation slices from it, and a
  superset of 30 train slices (the same 2 validation slices) for the "more labels" reference;
* in-domain test: the slices of the training z-range outside that superset (so no method saw them);
* anatomy shift: :data:`ANATOMY_SHIFT_Z_RANGES` (inferior and superior to the training range);
* acquisition shifts: the anatomy-shift slices under MONAI intensity transforms at fixed seeds
  (:data:`ACQUISITION_SHIFTS`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from medgen_core.data.samples import TISSUE_CLASSES, load_mni152_t1, mni152_tissue_labels
from medgen_core.data.translation import fit_to_size

__all__ = [
    "ACQUISITION_SHIFTS",
    "ANATOMY_SHIFT_Z_RANGES",
    "NUM_TISSUE_CLASSES",
    "SLICE_SIZE",
    "TISSUE_CLASSES",
    "TRAIN_Z_RANGE",
    "SliceDraw",
    "TissueSlices",
    "acquisition_shift",
    "anatomy_shift_indices",
    "draw_slices",
    "majority_downsample",
    "mni_tissue_volume_2mm",
    "tissue_slices",
]

NUM_TISSUE_CLASSES = len(TISSUE_CLASSES)
#: (height, width) of every slice in 2 mm pixels (x = R-L, y = P-A); divisible by 16.
SLICE_SIZE = (80, 96)
#: 2 mm axial index range ``[lo, hi)`` the labelled slices are drawn from (MNI 1 mm z = 40..127).
TRAIN_Z_RANGE = (20, 64)
#: 2 mm axial ranges of the anatomy-shift test set, just below and above the training range (MNI 1 mm z = 24..39, 128..143).
ANATOMY_SHIFT_Z_RANGES = ((12, 20), (64, 72))


def _block_view(a: np.ndarray) -> np.ndarray:
    x, y, z = (s // 2 * 2 for s in a.shape)
    return a[:x, :y, :z].reshape(x // 2, 2, y // 2, 2, z // 2, 2)


def majority_downsample(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """``(X, Y, Z)`` integer labels -> ``(X//2, Y//2, Z//2)``: the most frequent label of each 2x2x2 block."""
    counts = np.stack([_block_view(labels == c).sum(axis=(1, 3, 5)) for c in range(num_classes)])
    return counts.argmax(axis=0).astype(np.uint8)


@lru_cache(maxsize=1)
def mni_tissue_volume_2mm() -> tuple[np.ndarray, np.ndarray]:
    """``(t1, labels)`` at 2 mm isotropic, each ``(98, 116, 94)``: T1 in [0, 1] (/ 99.9th percentile), uint8 labels."""
    t1 = load_mni152_t1().array
    t1 = np.clip(t1 / max(float(np.percentile(t1, 99.9)), 1e-8), 0.0, 1.0)
    t1_2mm = _block_view(t1).mean(axis=(1, 3, 5)).astype(np.float32)
    return t1_2mm, majority_downsample(mni152_tissue_labels(), NUM_TISSUE_CLASSES)


@dataclass
class TissueSlices:
    """Axial slices: ``image`` float32 ``(N, 1, H, W)`` in [0, 1], ``label`` int64 ``(N, 1, H, W)``, ``z`` ``(N,)``."""

    image: torch.Tensor
    label: torch.Tensor
    z: torch.Tensor

    def __len__(self) -> int:
        return int(self.image.shape[0])

    def scaled(self) -> torch.Tensor:
        """Images in [-1, 1] (the generator's range, and the segmenters' input range)."""
        return self.image * 2.0 - 1.0


def tissue_slices(z_indices: Sequence[int], size: tuple[int, int] = SLICE_SIZE) -> TissueSlices:
    """The 2 mm axial slices ``z_indices`` (0..93), centre-cropped / padded to ``size``."""
    t1, labels = mni_tissue_volume_2mm()
    z = [int(i) for i in z_indices]
    bad = [i for i in z if not 0 <= i < t1.shape[2]]
    if bad:
        raise ValueError(f"tissue_slices: z indices {bad} outside [0, {t1.shape[2]}) (2 mm axial slices of MNI152).")
    image = torch.from_numpy(np.ascontiguousarray(np.moveaxis(t1[:, :, z], 2, 0)))[:, None]
    label = torch.from_numpy(np.ascontiguousarray(np.moveaxis(labels[:, :, z], 2, 0)).astype(np.int64))[:, None]
    return TissueSlices(fit_to_size(image, size), fit_to_size(label, size), torch.tensor(z, dtype=torch.int64))


@dataclass(frozen=True)
class SliceDraw:
    """One paired draw: 2 mm axial indices of the train / validation / reference-train / in-domain test slices."""

    seed: int
    train: tuple[int, ...]
    val: tuple[int, ...]
    reference_train: tuple[int, ...]
    test: tuple[int, ...]


def draw_slices(seed: int, n_train: int = 7, n_val: int = 2, n_reference: int = 30,
                z_range: tuple[int, int] = TRAIN_Z_RANGE) -> SliceDraw:
    """Random draw from ``z_range``: ``n_train`` + ``n_val`` labelled slices, a superset of ``n_reference`` train
    slices (containing the ``n_train``; same validation slices), and the rest of the range as the in-domain test.

    Raises:
        ValueError: if the range cannot hold ``n_reference + n_val`` slices and at least one test slice.
    """
    lo, hi = z_range
    pool = np.arange(lo, hi)
    if not 0 < n_train <= n_reference or n_val < 1 or n_reference + n_val >= pool.size:
        raise ValueError(f"draw_slices: need 0 < n_train ({n_train}) <= n_reference ({n_reference}), n_val ({n_val}) >= 1 "
                         f"and n_reference + n_val < {pool.size} slices in z-range {z_range}.")
    order = np.random.default_rng(seed).permutation(pool)
    val, train = order[:n_val], order[n_val:n_val + n_train]
    reference = order[n_val:n_val + n_reference]
    test = order[n_val + n_reference:]
    as_tuple = lambda a: tuple(int(i) for i in np.sort(a))  # noqa: E731
    return SliceDraw(seed, as_tuple(train), as_tuple(val), as_tuple(reference), as_tuple(test))


def anatomy_shift_indices() -> list[int]:
    """2 mm axial indices of the anatomy-shift test set."""
    return [z for lo, hi in ANATOMY_SHIFT_Z_RANGES for z in range(lo, hi)]


# -- acquisition shifts (MONAI transforms at fixed seeds) ---------------------------------------------------


def _shift_transforms() -> dict[str, Callable[[], Callable]]:
    from monai.transforms import (
        RandAdjustContrast,
        RandBiasField,
        RandGaussianNoise,
        RandGibbsNoise,
        RandSimulateLowResolution,
    )

    return {
        "bias_field": lambda: RandBiasField(degree=3, coeff_range=(0.3, 0.4), prob=1.0),
        "noise": lambda: RandGaussianNoise(prob=1.0, mean=0.0, std=0.1, sample_std=False),
        "gibbs_ringing": lambda: RandGibbsNoise(prob=1.0, alpha=(0.8, 0.85)),
        "contrast_gamma": lambda: RandAdjustContrast(prob=1.0, gamma=(0.4, 0.5)),
        "low_resolution": lambda: RandSimulateLowResolution(prob=1.0, upsample_mode="bilinear", zoom_range=(0.4, 0.45)),
    }


#: Names of the acquisition shifts, in report order.
ACQUISITION_SHIFTS = ("bias_field", "noise", "gibbs_ringing", "contrast_gamma", "low_resolution")


def acquisition_shift(images: torch.Tensor, name: str, seed: int = 0) -> torch.Tensor:
    """Apply acquisition shift ``name`` to ``(N, 1, H, W)`` images in [0, 1], slice by slice, seeded (result in [0, 1]).

    ``bias_field`` (smooth multiplicative field, degree-3 polynomial, coefficients 0.3-0.4), ``noise`` (Gaussian,
    SD 0.1), ``gibbs_ringing`` (k-space truncation, alpha 0.8-0.85), ``contrast_gamma`` (gamma 0.4-0.5: flattened
    contrast; gamma > 1 barely changed a plain U-Net's Dice in a check), ``low_resolution``
    (down-sampled to ~0.4x, nearest, then up again with bilinear interpolation).
    """
    makers = _shift_transforms()
    if name not in makers:
        raise ValueError(f"acquisition_shift: unknown shift {name!r}; expected one of {list(ACQUISITION_SHIFTS)}.")
    transform = makers[name]()
    transform.set_random_state(seed=seed)
    out = []
    for img in images:
        shifted = transform(img.clone())
        out.append(torch.as_tensor(shifted, dtype=torch.float32).reshape(img.shape))
    return torch.stack(out).clamp(0.0, 1.0)
