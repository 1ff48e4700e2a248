"""MNI152 tissue maps (nilearn) brought onto other grids: by the grid's affine (grids already in MNI space) or
by an affine registration of the MNI T1 to an unregistered volume (dipy).

Labels follow :data:`~medgen_core.data.samples.TISSUE_CLASSES`: 0 background, 1 CSF, 2 grey matter, 3 white
matter (CSF = ``1 - GM - WM`` inside the brain mask, as in :func:`~medgen_core.data.samples.mni152_tissue_labels`).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from medgen_core.data.samples import load_mni152_brain_mask, load_mni152_t1, load_mni152_tissue_probabilities
from medgen_core.data.slices import MNI152_1MM_AFFINE

__all__ = ["mni_tissue_labels_on_grid", "register_mni_affine", "register_mni_tissue_labels"]


@lru_cache(maxsize=1)
def _mni_probabilities() -> np.ndarray:
    """``(4, 197, 233, 189)`` float32: brain mask, CSF, GM, WM probabilities of the 1 mm MNI152 template."""
    gm, wm = load_mni152_tissue_probabilities()
    brain = load_mni152_brain_mask().astype(np.float32)
    csf = np.clip(1.0 - gm - wm, 0.0, 1.0) * brain
    return np.stack([brain, csf, gm * brain, wm * brain]).astype(np.float32)


def _labels_from_probabilities(p: np.ndarray) -> np.ndarray:
    """``(4, ...)`` (brain, CSF, GM, WM) -> uint8 labels: the most probable tissue where brain >= 0.5, else 0."""
    labels = (np.argmax(p[1:], axis=0) + 1).astype(np.uint8)
    labels[p[0] < 0.5] = 0
    return labels


def mni_tissue_labels_on_grid(affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Tissue labels ``shape`` (2D ``(X, Y)`` or 3D ``(X, Y, Z)``) of a grid that lies in MNI152 space.

    The 1 mm brain / CSF / GM / WM probabilities are sampled at every voxel centre (world = ``affine @ ijk``)
    by trilinear interpolation (0 outside the template), then labelled as in
    :func:`~medgen_core.data.samples.mni152_tissue_labels`.
    """
    from scipy.ndimage import map_coordinates

    shape3 = tuple(shape) + (1,) * (3 - len(shape))
    ijk = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float64) for s in shape3], indexing="ij"), axis=0).reshape(3, -1)
    world = np.asarray(affine, dtype=np.float64)[:3, :3] @ ijk + np.asarray(affine, dtype=np.float64)[:3, 3:4]
    mni = np.linalg.inv(MNI152_1MM_AFFINE)
    vox = mni[:3, :3] @ world + mni[:3, 3:4]
    prob = np.stack([map_coordinates(p, vox, order=1, mode="constant", cval=0.0) for p in _mni_probabilities()])
    return _labels_from_probabilities(prob).reshape(tuple(shape))


def register_mni_affine(volume: np.ndarray, affine: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """4x4 map from ``volume``'s world space (placed by ``affine``) to MNI152 world space, by an affine
    registration of the MNI152 T1 to ``volume``.

    dipy's ``AffineRegistration`` (Mattes mutual information, 32 bins, so any contrast; centre of mass ->
    translation -> rigid -> 12-parameter affine, pyramid factors 2, 1) maps the 2 mm template onto
    ``volume``. ``result @ affine`` maps ``volume``'s voxel indices to MNI world coordinates (mm).
    Accuracy is that of an affine template fit: boundaries within a few mm.
    """
    from dipy.align.imaffine import AffineRegistration, MutualInformationMetric, transform_centers_of_mass
    from dipy.align.transforms import AffineTransform3D, RigidTransform3D, TranslationTransform3D

    from medgen_core.data.slices import block_average_2mm

    t1 = load_mni152_t1().array
    t1 = np.clip(t1 / max(float(np.percentile(t1, 99.9)), 1e-8), 0.0, 1.0)
    t1_2mm = block_average_2mm(t1)[:, :, : t1.shape[2] // 2 * 2].reshape(t1.shape[0] // 2, t1.shape[1] // 2, -1, 2).mean(axis=3)
    mov_affine = MNI152_1MM_AFFINE @ np.array([[2.0, 0, 0, 0.5], [0, 2.0, 0, 0.5], [0, 0, 2.0, 0.5], [0, 0, 0, 1]])
    static = np.asarray(volume, dtype=np.float64)
    static_affine = np.asarray(affine, dtype=np.float64)
    rng_state = np.random.get_state()
    np.random.seed(seed)  # dipy's metric samples with the global numpy RNG when sampling_proportion is set
    try:
        start = transform_centers_of_mass(static, static_affine, t1_2mm, mov_affine).affine
        reg = AffineRegistration(metric=MutualInformationMetric(nbins=32, sampling_proportion=None), level_iters=[500, 200],
                                 sigmas=[1.0, 0.0], factors=[2, 1], verbosity=0)
        for transform in (TranslationTransform3D(), RigidTransform3D(), AffineTransform3D()):
            start = reg.optimize(static, t1_2mm, transform, None, static_grid2world=static_affine, moving_grid2world=mov_affine,
                                 starting_affine=start).affine
    finally:
        np.random.set_state(rng_state)
    return np.asarray(start, dtype=np.float64)  # dipy's affine maps static world -> moving (MNI) world


def register_mni_tissue_labels(volume: np.ndarray, affine: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """Tissue labels ``(X, Y, Z)`` on ``volume``'s grid by an affine registration of the MNI152 T1 to it
    (:func:`register_mni_affine`); the 1 mm probability maps are resampled through the result (trilinear)
    and labelled. Accuracy is that of an affine template fit: boundaries within a few mm.
    """
    return mni_tissue_labels_on_grid(register_mni_affine(volume, affine, seed=seed) @ np.asarray(affine, dtype=np.float64), np.shape(volume))
