"""Slices for the shipped translation tasks, built from the offline sample data.

* paired (Pix2Pix): discrete tissue map (background / CSF / grey / white matter, one-hot) -> MNI152 T1;
* unpaired (CycleGAN): MNI152 T1 slices (domain A, resampled to 2 mm) and dipy's T2-weighted slices
  (domain B, 2 mm).

Images are scaled to [-1, 1] (the generators end in ``tanh``); slices are centre-cropped or zero-padded
to ``size`` so that the U-Net's down-samplings divide it.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from medgen_core.data.samples import load_dipy_t2, load_mni152_t1, mni152_tissue_labels

__all__ = ["fit_to_size", "tissue_to_t1_pairs", "tissue_probability_slices", "t1_t2_unpaired", "per_class_mean_baseline"]


def fit_to_size(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Centre-crop or zero-pad the last two axes of ``x`` to ``size``."""
    for axis, target in zip((-2, -1), size):
        n = x.shape[axis]
        if n > target:
            start = (n - target) // 2
            x = x.narrow(axis, start, target)
        elif n < target:
            before = (target - n) // 2
            pad = [0, 0, 0, 0]
            pad[(0 if axis == -1 else 2)] = before
            pad[(1 if axis == -1 else 3)] = target - n - before
            x = F.pad(x, pad)
    return x


def tissue_to_t1_pairs(indices, size: tuple[int, int] = (192, 224)) -> dict[str, torch.Tensor]:
    """``{"image": one-hot tissue (N, 4, H, W), "target": T1 in [-1, 1] (N, 1, H, W), "labels": (N, 1, H, W)}``."""
    labels = mni152_tissue_labels()
    t1 = load_mni152_t1().array
    t1 = np.clip(t1 / np.percentile(t1, 99.9), 0.0, 1.0)
    lab = torch.from_numpy(np.stack([labels[:, :, z] for z in indices]).astype(np.int64))[:, None]
    img = torch.from_numpy(np.stack([t1[:, :, z] for z in indices]).astype(np.float32))[:, None]
    lab, img = fit_to_size(lab, size), fit_to_size(img, size)
    onehot = F.one_hot(lab[:, 0], 4).permute(0, 3, 1, 2).float()
    return {"image": onehot, "target": img * 2.0 - 1.0, "labels": lab}


def tissue_probability_slices(indices, size: tuple[int, int] = (192, 224)) -> list[dict[str, torch.Tensor]]:
    """Axial MNI152 slices for label-map randomisation (:mod:`medgen_core.transforms.label_randomisation`):
    one dict per slice, ``{"probs": (4, H, W) brain mask, CSF, GM, WM probabilities, "target": T1 (1, H, W) in [-1, 1]}``,
    on the grid of :func:`tissue_to_t1_pairs` (CSF = ``1 - GM - WM`` inside the brain mask)."""
    from medgen_core.data.tissue_label_constructions import mni_tissue_probabilities

    prob = mni_tissue_probabilities()
    t1 = load_mni152_t1().array
    t1 = np.clip(t1 / np.percentile(t1, 99.9), 0.0, 1.0)
    p = fit_to_size(torch.from_numpy(np.stack([prob[:, :, :, z] for z in indices]).astype(np.float32)), size)
    img = fit_to_size(torch.from_numpy(np.stack([t1[:, :, z] for z in indices]).astype(np.float32))[:, None], size)
    return [{"probs": p[i].clone(), "target": img[i] * 2.0 - 1.0} for i in range(len(p))]


def t1_t2_unpaired(size: tuple[int, int] = (128, 128), t1_indices=None) -> dict[str, torch.Tensor]:
    """``{"A": MNI T1 axial slices at 2 mm, "B": dipy T2w slices}``, each ``(N, 1, *size)`` in [-1, 1]."""
    t1 = load_mni152_t1().array
    t1 = np.clip(t1 / np.percentile(t1, 99.9), 0.0, 1.0)
    idx = range(30, 150, 2) if t1_indices is None else t1_indices
    a = torch.from_numpy(np.stack([t1[:, :, z] for z in idx]).astype(np.float32))[:, None]
    a = F.avg_pool2d(a, 2)  # 1 mm -> 2 mm, like the T2 volume
    t2 = load_dipy_t2().array
    t2 = np.clip(t2 / np.percentile(t2, 99.9), 0.0, 1.0)
    b = torch.from_numpy(np.moveaxis(t2, 2, 0).astype(np.float32))[:, None]
    return {"A": fit_to_size(a, size) * 2 - 1, "B": fit_to_size(b, size) * 2 - 1}


def per_class_mean_baseline(train: dict[str, torch.Tensor], labels: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """The baseline for tissue -> T1: each voxel gets its class's mean training intensity, then a
    Gaussian blur (``sigma`` voxels). Returns ``(N, 1, H, W)`` in [-1, 1]."""
    from monai.networks.layers import GaussianFilter

    means = torch.stack([train["target"][train["labels"] == c].mean() for c in range(4)])
    out = means[labels[:, 0]].unsqueeze(1)
    return GaussianFilter(spatial_dims=2, sigma=sigma)(out)
