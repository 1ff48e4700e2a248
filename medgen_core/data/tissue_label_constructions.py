"""Tissue label maps made in other ways than the training labels: the held-out label constructions.

A label -> T1 translator meets label maps from its users' own segmenters. These functions build such maps
from the MNI152 tissue probabilities (or from the T1 itself), in 3D on the 1 mm grid, so that a
translator can be evaluated on constructions that its training never used exactly (see
:mod:`medgen_core.transforms.label_randomisation`, whose default ranges leave these settings out).
Labels: 0 background, 1 CSF, 2 grey matter, 3 white matter; ``probs`` is ``(4, *S)`` = brain mask, CSF, GM, WM.

:data:`HELDOUT_CONSTRUCTIONS` (name -> description) and :func:`heldout_label_constructions` give the set
used by ``scripts/evaluate_translation.py``.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

__all__ = [
    "HELDOUT_CONSTRUCTIONS",
    "HELDOUT_DILATION_RADIUS",
    "HELDOUT_SMOOTH_SIGMA",
    "HELDOUT_THRESHOLD",
    "argmax_labels",
    "coarse_argmax_labels",
    "heldout_label_constructions",
    "kmeans_labels",
    "mni_tissue_probabilities",
    "morphology_labels",
    "smoothed_argmax_labels",
    "threshold_labels",
]

#: Threshold of :func:`threshold_labels` in the held-out set (training draws thresholds outside [0.30, 0.40]).
HELDOUT_THRESHOLD = 0.35
#: Ball radius of the held-out white-matter dilation (training uses disks of radius 1 and 3).
HELDOUT_DILATION_RADIUS = 2
#: Gaussian sigma (voxels, 3D) of the held-out smoothing (training draws 2D sigmas outside (1.0, 2.0)).
HELDOUT_SMOOTH_SIGMA = 1.5

HELDOUT_CONSTRUCTIONS = {
    "argmax": "most probable of CSF / GM / WM inside the brain mask (the labels of the bundle's 0.1.x training)",
    "threshold_0.35": f"WM where p_WM >= {HELDOUT_THRESHOLD}, else GM where p_GM >= {HELDOUT_THRESHOLD}, else CSF (inside the brain mask)",
    "kmeans_t1": "3-cluster k-means of the T1 intensities inside the brain mask, clusters dark to bright = CSF, GM, WM",
    "wm_dilated_2": f"argmax labels with white matter dilated by a 3D ball of radius {HELDOUT_DILATION_RADIUS} voxels (inside the brain)",
    "smoothed_1.5": f"argmax of the probabilities after a 3D Gaussian smoothing, sigma {HELDOUT_SMOOTH_SIGMA} voxels",
    "argmax_2mm": "argmax of the probabilities block-averaged to 2 mm, upsampled back to 1 mm by nearest neighbour (blocky boundaries)",
}


@lru_cache(maxsize=1)
def mni_tissue_probabilities() -> np.ndarray:
    """``(4, 197, 233, 189)`` float32: brain mask, CSF (``1 - GM - WM`` inside it), GM, WM of the 1 mm MNI152 template
    (cached: do not modify)."""
    from medgen_core.data.samples import load_mni152_brain_mask, load_mni152_tissue_probabilities

    gm, wm = load_mni152_tissue_probabilities()
    brain = load_mni152_brain_mask().astype(np.float32)
    csf = np.clip(1.0 - gm - wm, 0.0, 1.0) * brain
    return np.stack([brain, csf, gm * brain, wm * brain]).astype(np.float32)


def _check(probs: np.ndarray) -> np.ndarray:
    probs = np.asarray(probs, dtype=np.float32)
    if probs.ndim < 3 or probs.shape[0] != 4:
        raise ValueError(f"tissue label constructions: expected probabilities (4, *S) = brain, CSF, GM, WM, got shape {probs.shape}.")
    return probs


def argmax_labels(probs: np.ndarray) -> np.ndarray:
    """uint8 ``(*S)``: the most probable of CSF / GM / WM where ``probs[0] >= 0.5``, else 0."""
    probs = _check(probs)
    labels = (np.argmax(probs[1:], axis=0) + 1).astype(np.uint8)
    labels[probs[0] < 0.5] = 0
    return labels


def threshold_labels(probs: np.ndarray, threshold: float = HELDOUT_THRESHOLD) -> np.ndarray:
    """uint8 ``(*S)``: WM where ``p_WM >= threshold``, else GM where ``p_GM >= threshold``, else CSF; 0 outside the brain."""
    probs = _check(probs)
    labels = np.ones(probs.shape[1:], dtype=np.uint8)
    labels[probs[2] >= threshold] = 2
    labels[probs[3] >= threshold] = 3
    labels[probs[0] < 0.5] = 0
    return labels


def kmeans_labels(image: np.ndarray, brain: np.ndarray, seed: int = 0) -> np.ndarray:
    """uint8 ``(*S)``: 3-cluster k-means (``scipy.cluster.vq.kmeans2``, centres started at the 10th / 50th / 90th
    percentiles) of ``image`` inside the boolean ``brain``; clusters sorted dark to bright = 1, 2, 3 (a T1 contrast)."""
    from scipy.cluster.vq import kmeans2

    image, brain = np.asarray(image, dtype=np.float64), np.asarray(brain, dtype=bool)
    if image.shape != brain.shape or not brain.any():
        raise ValueError(f"kmeans_labels: image {image.shape} and a non-empty brain mask of the same shape expected, got {brain.shape}.")
    v = image[brain]
    start = np.percentile(v, [10, 50, 90])[:, None]
    centres, idx = kmeans2(v[:, None], start, minit="matrix", iter=100, seed=seed)
    rank = np.empty(3, dtype=np.uint8)
    rank[np.argsort(centres[:, 0])] = np.arange(1, 4, dtype=np.uint8)
    labels = np.zeros(image.shape, dtype=np.uint8)
    labels[brain] = rank[idx]
    return labels


def morphology_labels(labels: np.ndarray, cls: int = 3, radius: int = HELDOUT_DILATION_RADIUS, dilate: bool = True) -> np.ndarray:
    """``labels`` with class ``cls`` dilated (over other tissue only, so the brain outline stays) or eroded (removed
    voxels take the nearest other tissue class) by a ball of ``radius`` voxels (3D, or a disk in 2D)."""
    from scipy import ndimage

    labels = np.asarray(labels)
    out = labels.copy()
    grid = np.stack(np.meshgrid(*[np.arange(-radius, radius + 1)] * labels.ndim, indexing="ij"))
    ball = (grid**2).sum(0) <= radius**2
    mask = labels == cls
    if dilate:
        out[ndimage.binary_dilation(mask, ball) & (labels > 0)] = cls
        return out
    removed = mask & ~ndimage.binary_erosion(mask, ball, border_value=1)
    other = (labels > 0) & ~mask
    if other.any():
        _, nearest = ndimage.distance_transform_edt(~other, return_indices=True)
        out[removed] = labels[tuple(i[removed] for i in nearest)]
    return out


def smoothed_argmax_labels(probs: np.ndarray, sigma: float = HELDOUT_SMOOTH_SIGMA) -> np.ndarray:
    """:func:`argmax_labels` after a Gaussian smoothing (``sigma`` voxels, all spatial axes) of the CSF / GM / WM maps."""
    from scipy import ndimage

    probs = _check(probs)
    smooth = np.stack([probs[0]] + [ndimage.gaussian_filter(p, sigma) for p in probs[1:]])
    return argmax_labels(smooth)


def coarse_argmax_labels(probs: np.ndarray, factor: int = 2) -> np.ndarray:
    """:func:`argmax_labels` of the probabilities block-averaged by ``factor`` per axis, repeated back to full size
    (a trailing partial block copies its neighbour)."""
    probs = _check(probs)
    shape = probs.shape[1:]
    cut = [s // factor * factor for s in shape]
    p = probs[(slice(None), *[slice(0, c) for c in cut])]
    blocks = p.reshape(4, *[v for c in cut for v in (c // factor, factor)]).mean(axis=tuple(range(2, 2 + 2 * len(cut), 2)))
    coarse = argmax_labels(blocks)
    for axis in range(coarse.ndim):
        coarse = np.repeat(coarse, factor, axis=axis)
    pad = [(0, s - c) for s, c in zip(shape, cut)]
    return np.pad(coarse, pad, mode="edge")


def heldout_label_constructions(probs: np.ndarray | None = None, t1: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Every construction of :data:`HELDOUT_CONSTRUCTIONS` as uint8 ``(*S)`` (default: the 1 mm MNI152 volume, T1
    divided by its 99.9th percentile and clipped to [0, 1])."""
    if probs is None:
        probs = mni_tissue_probabilities()
    if t1 is None:
        from medgen_core.data.samples import load_mni152_t1

        t1 = load_mni152_t1().array
        t1 = np.clip(t1 / np.percentile(t1, 99.9), 0.0, 1.0)
    probs = _check(probs)
    argmax = argmax_labels(probs)
    return {
        "argmax": argmax,
        "threshold_0.35": threshold_labels(probs, HELDOUT_THRESHOLD),
        "kmeans_t1": kmeans_labels(t1, probs[0] >= 0.5),
        "wm_dilated_2": morphology_labels(argmax, 3, HELDOUT_DILATION_RADIUS, dilate=True),
        "smoothed_1.5": smoothed_argmax_labels(probs, HELDOUT_SMOOTH_SIGMA),
        "argmax_2mm": coarse_argmax_labels(probs, 2),
    }
