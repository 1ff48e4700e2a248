"""Label-map randomisation for label -> image translation: a new way of making the tissue map per sample.

A user's tissue map comes from their own segmenter (an argmax of probabilities, thresholded partial-volume
maps, an intensity clustering, a smoothed or morphologically cleaned mask), so a translator trained on one
construction learns where that construction puts its boundaries and fails on the others. These transforms
make the label map of every training sample anew from tissue probability maps, so no single construction
is learnt. MONAI ``Randomizable`` ``MapTransform`` s, channel-first, 2D or 3D; seed a chain with
``Compose.set_random_state(seed)``.

Data (one sample): ``probs`` float ``(4, *S)`` = brain mask (or its probability), CSF, grey matter, white
matter probabilities; ``target`` float ``(1, *S)`` = the paired image in [-1, 1] (read by the intensity
construction only). The chain :func:`label_randomisation` returns ``image`` = one-hot labels
``(num_classes, *S)`` (0 background, 1 CSF, 2 GM, 3 WM) and the deformed ``target``:

1. MONAI ``Rand2DElasticd`` / ``Rand3DElasticd`` on ``probs`` and ``target`` in one call (one random
   affine + elastic field, both resampled bilinearly), so the image is deformed exactly like its labels.
2. :class:`RandTissueLabelsd`: probabilities -> labels by a random construction (optionally after a
   random Gaussian smoothing of the probabilities): argmax with random class weights, thresholds in a
   random priority order, or two intensity thresholds of the smoothed target.
3. :class:`RandLabelMorphologyd`: one tissue class eroded or dilated by a random radius (the brain outline
   is kept: dilation stays inside the brain, eroded voxels take the neighbouring tissue class).
4. :class:`RandMergeTissueClassd`: a missing class (e.g. CSF labelled grey matter, or background).

The default ranges leave gaps so that held-out evaluations can use settings that training never drew
(see :mod:`medgen_core.data.tissue_label_constructions`): thresholds avoid (0.30, 0.40), smoothing
sigmas avoid (1.0, 2.0), radii are 1 and 3 (never 2), and the intensity construction always smooths
the image first (sigma >= 0.5), so a clustering of the raw image is never reproduced exactly.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.transforms import (
    AsDiscreted,
    Compose,
    CopyItemsd,
    DeleteItemsd,
    GaussianSmooth,
    MapTransform,
    Rand2DElasticd,
    Rand3DElasticd,
    Randomizable,
    RandFlipd,
)

__all__ = [
    "CONSTRUCTIONS",
    "RandLabelMorphologyd",
    "RandMergeTissueClassd",
    "RandTissueLabelsd",
    "disk_dilate",
    "label_randomisation",
]

#: Label constructions of :class:`RandTissueLabelsd`.
CONSTRUCTIONS = ("argmax", "threshold", "intensity")
_Ranges = Sequence[tuple[float, float]]


def _uniform_from(rng: np.random.RandomState, ranges: _Ranges) -> float:
    """One draw, uniform over the union of the (disjoint) intervals ``ranges`` (picked by length)."""
    lengths = np.array([hi - lo for lo, hi in ranges], dtype=np.float64)
    i = int(rng.choice(len(ranges), p=lengths / lengths.sum())) if lengths.sum() > 0 else 0
    lo, hi = ranges[i]
    return float(rng.uniform(lo, hi))


def _check_ranges(name: str, ranges: _Ranges, low: float, high: float) -> list[tuple[float, float]]:
    out = [(float(a), float(b)) for a, b in ranges]
    if not out or any(not (low <= a <= b <= high) for a, b in out):
        raise ValueError(f"{name}: expected a non-empty list of (low, high) intervals within [{low}, {high}], got {ranges}.")
    return out


def disk_dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Binary dilation of ``mask`` ``(*S)`` (2D or 3D, bool) by a disk / ball of ``radius`` voxels (Euclidean)."""
    if radius <= 0:
        return mask.clone()
    nd = mask.dim()
    if nd not in (2, 3):
        raise ValueError(f"disk_dilate: expects a 2D or 3D mask, got shape {tuple(mask.shape)}.")
    axes = torch.meshgrid(*[torch.arange(-radius, radius + 1, dtype=torch.float32)] * nd, indexing="ij")
    kernel = (sum(a**2 for a in axes) <= radius**2 + 1e-6).float()[None, None]
    conv = F.conv2d if nd == 2 else F.conv3d
    return conv(mask[None, None].float(), kernel, padding=radius)[0, 0] > 0.5


class RandTissueLabelsd(Randomizable, MapTransform):
    """Tissue probabilities ``(4, *S)`` (brain, CSF, GM, WM) -> integer labels ``(1, *S)`` by a random construction.

    Brain = ``probs[0] >= 0.5``; outside it the label is 0. Inside, with ``smooth_prob`` the three tissue
    probabilities are first smoothed by a Gaussian of sigma drawn from ``smooth_sigma_ranges`` (voxels), then:

    * ``"argmax"``: the most probable of ``w_c p_c`` with ``log w_c ~ U[-log_weight, log_weight]`` per class;
    * ``"threshold"``: in a random priority order of (WM, GM), a class wins where its probability is at least
      its threshold (each drawn from ``threshold_ranges``); the rest is CSF;
    * ``"intensity"``: ``target`` (in [-1, 1], mapped to [0, 1]) smoothed by sigma from
      ``intensity_sigma_range``, then ``1 + (x >= t_1) + (x >= t_2)`` with ``t_k`` from ``intensity_threshold_ranges[k]``.

    Args:
        keys: the probability key. label_key: where the labels go (int64). target_key: the image key.
        construction_weights: probabilities of :data:`CONSTRUCTIONS`, in that order.
    """

    def __init__(
        self,
        keys: KeysCollection = "probs",
        label_key: str = "label",
        target_key: str = "target",
        construction_weights: Sequence[float] = (0.4, 0.35, 0.25),
        log_weight: float = 0.3,
        threshold_ranges: _Ranges = ((0.20, 0.30), (0.40, 0.55)),
        smooth_prob: float = 0.3,
        smooth_sigma_ranges: _Ranges = ((0.3, 1.0), (2.0, 2.5)),
        intensity_sigma_range: tuple[float, float] = (0.5, 1.5),
        intensity_threshold_ranges: _Ranges = ((0.55, 0.65), (0.76, 0.86)),
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        w = np.asarray(construction_weights, dtype=np.float64)
        if w.shape != (len(CONSTRUCTIONS),) or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"RandTissueLabelsd: construction_weights must be {len(CONSTRUCTIONS)} non-negative numbers "
                             f"({', '.join(CONSTRUCTIONS)}) with a positive sum, got {construction_weights}.")
        if len(intensity_threshold_ranges) != 2:
            raise ValueError(f"RandTissueLabelsd: intensity_threshold_ranges needs 2 intervals (CSF|GM, GM|WM), got {intensity_threshold_ranges}.")
        if not 0.0 <= smooth_prob <= 1.0 or log_weight < 0:
            raise ValueError(f"RandTissueLabelsd: smooth_prob must be in [0, 1] and log_weight >= 0, got {smooth_prob}, {log_weight}.")
        self.label_key, self.target_key = label_key, target_key
        self.construction_weights = w / w.sum()
        self.log_weight = float(log_weight)
        self.threshold_ranges = _check_ranges("RandTissueLabelsd threshold_ranges", threshold_ranges, 0.0, 1.0)
        self.smooth_prob = float(smooth_prob)
        self.smooth_sigma_ranges = _check_ranges("RandTissueLabelsd smooth_sigma_ranges", smooth_sigma_ranges, 0.0, 100.0)
        self.intensity_sigma_range = _check_ranges("RandTissueLabelsd intensity_sigma_range", [intensity_sigma_range], 0.0, 100.0)[0]
        self.intensity_threshold_ranges = _check_ranges("RandTissueLabelsd intensity_threshold_ranges", intensity_threshold_ranges, 0.0, 1.0)
        self.params: dict[str, Any] = {}

    def randomize(self, data: Any = None) -> None:
        p: dict[str, Any] = {"construction": CONSTRUCTIONS[int(self.R.choice(len(CONSTRUCTIONS), p=self.construction_weights))]}
        p["smooth_sigma"] = _uniform_from(self.R, self.smooth_sigma_ranges) if self.R.rand() < self.smooth_prob else 0.0
        p["log_weights"] = self.R.uniform(-self.log_weight, self.log_weight, 3).tolist()
        p["thresholds"] = [_uniform_from(self.R, self.threshold_ranges) for _ in range(2)]  # WM, GM
        p["wm_first"] = bool(self.R.rand() < 0.5)
        p["intensity_sigma"] = float(self.R.uniform(*self.intensity_sigma_range))
        p["intensity_thresholds"] = [float(self.R.uniform(*r)) for r in self.intensity_threshold_ranges]
        self.params = p

    def labels(self, probs: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        """Labels ``(1, *S)`` int64 of ``probs (4, *S)`` with the current parameters (call :meth:`randomize` first)."""
        p = self.params
        probs = torch.as_tensor(probs, dtype=torch.float32)
        if probs.dim() not in (3, 4) or probs.shape[0] != 4:
            raise ValueError(f"RandTissueLabelsd: expects probabilities (4, *S) = brain, CSF, GM, WM in 2D or 3D, got {tuple(probs.shape)}.")
        brain, tissue = probs[0] >= 0.5, probs[1:]
        if p["smooth_sigma"] > 0:
            tissue = GaussianSmooth(sigma=p["smooth_sigma"])(tissue)
        gm, wm = tissue[1], tissue[2]
        if p["construction"] == "argmax":
            w = torch.tensor(p["log_weights"], dtype=torch.float32).exp().view(3, *[1] * (tissue.dim() - 1))
            lab = (tissue * w).argmax(0) + 1
        elif p["construction"] == "threshold":
            t_wm, t_gm = p["thresholds"]
            lab = torch.ones_like(brain, dtype=torch.int64)
            order = ((wm, t_wm, 3), (gm, t_gm, 2)) if p["wm_first"] else ((gm, t_gm, 2), (wm, t_wm, 3))
            for prob, t, c in reversed(order):  # the first in priority order is written last (wins)
                lab[prob >= t] = c
        else:
            if target is None:
                raise ValueError(f"RandTissueLabelsd: the intensity construction needs the image under '{self.target_key}'.")
            x = (torch.as_tensor(target, dtype=torch.float32)[:1] + 1.0) / 2.0
            x = GaussianSmooth(sigma=p["intensity_sigma"])(x)[0]
            t1, t2 = p["intensity_thresholds"]
            lab = 1 + (x >= t1).long() + (x >= t2).long()
        lab = torch.where(brain, lab, torch.zeros_like(lab))
        return lab.long()[None]

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize()
        for key in self.key_iterator(d):
            d[self.label_key] = self.labels(torch.as_tensor(d[key]), d.get(self.target_key))
        return d


class RandLabelMorphologyd(Randomizable, MapTransform):
    """With ``prob``, erode or dilate one tissue class of an integer label map ``(1, *S)`` by a radius from ``radii``.

    The class is drawn from ``classes``. Dilation overwrites only other tissue (label > 0), so the brain outline
    stays; erosion gives each removed voxel the most frequent other tissue class within ``radius + 1`` (the
    class itself where there is none). Disk (2D) / ball (3D) structuring elements.
    """

    def __init__(self, keys: KeysCollection = "label", prob: float = 0.5, radii: Sequence[int] = (1, 3),
                 classes: Sequence[int] = (1, 2, 3), allow_missing_keys: bool = False) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        if not 0.0 <= prob <= 1.0 or not radii or any(int(r) < 1 for r in radii) or not classes or any(int(c) < 1 for c in classes):
            raise ValueError(f"RandLabelMorphologyd: need prob in [0, 1], radii >= 1 and tissue classes >= 1, got {prob}, {radii}, {classes}.")
        self.prob, self.radii, self.classes = float(prob), [int(r) for r in radii], [int(c) for c in classes]
        self.params: dict[str, Any] = {}

    def randomize(self, data: Any = None) -> None:
        self.params = {"apply": bool(self.R.rand() < self.prob), "class": int(self.R.choice(self.classes)),
                       "dilate": bool(self.R.rand() < 0.5), "radius": int(self.R.choice(self.radii))}

    @staticmethod
    def apply(label: torch.Tensor, cls: int, radius: int, dilate: bool) -> torch.Tensor:
        """Erode or dilate class ``cls`` of ``label (1, *S)`` by ``radius``; returns a new tensor."""
        lab = torch.as_tensor(label).clone()
        if lab.dim() not in (3, 4) or lab.shape[0] != 1:
            raise ValueError(f"RandLabelMorphologyd: expects labels (1, *S) in 2D or 3D, got {tuple(lab.shape)}.")
        flat = lab[0]
        mask = flat == cls
        if dilate:
            flat[disk_dilate(mask, radius) & (flat > 0)] = cls
            return lab
        removed = mask & disk_dilate(~mask, radius)
        others = [c for c in range(1, int(flat.max()) + 1) if c != cls]
        if not others or not removed.any():
            return lab
        window = [disk_dilate(flat == c, radius + 1) & removed for c in others]  # neighbouring tissue classes
        votes = torch.stack([w.float() * (1.0 + 1e-3 * i) for i, w in enumerate(window)])  # ties: the higher class
        best = torch.tensor(others, dtype=flat.dtype)[votes.argmax(0)]
        fill = removed & (votes.max(0).values > 0)
        flat[fill] = best[fill]
        return lab

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize()
        if not self.params["apply"]:
            return d
        for key in self.key_iterator(d):
            d[key] = self.apply(d[key], self.params["class"], self.params["radius"], self.params["dilate"])
        return d


class RandMergeTissueClassd(Randomizable, MapTransform):
    """With ``prob``, relabel one class as another (``merges``: ``(from, to)`` pairs, one drawn): a segmenter without that class."""

    def __init__(self, keys: KeysCollection = "label", prob: float = 0.1, merges: Sequence[tuple[int, int]] = ((1, 2), (1, 0)),
                 allow_missing_keys: bool = False) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        if not 0.0 <= prob <= 1.0 or not merges or any(len(m) != 2 or int(m[0]) == int(m[1]) for m in merges):
            raise ValueError(f"RandMergeTissueClassd: need prob in [0, 1] and (from, to) pairs of different classes, got {prob}, {merges}.")
        self.prob, self.merges = float(prob), [(int(a), int(b)) for a, b in merges]
        self.params: dict[str, Any] = {}

    def randomize(self, data: Any = None) -> None:
        self.params = {"apply": bool(self.R.rand() < self.prob), "merge": self.merges[int(self.R.randint(len(self.merges)))]}

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize()
        if not self.params["apply"]:
            return d
        src, dst = self.params["merge"]
        for key in self.key_iterator(d):
            lab = torch.as_tensor(d[key]).clone()
            lab[lab == src] = dst
            d[key] = lab
        return d


def label_randomisation(
    num_classes: int = 4,
    spatial_dims: int = 2,
    probs_key: str = "probs",
    target_key: str = "target",
    image_key: str = "image",
    elastic_prob: float = 0.3,
    elastic_spacing: float = 24.0,
    elastic_magnitude: tuple[float, float] = (0.0, 2.0),
    rotate: float = 0.05,
    scale: float = 0.04,
    translate: float = 3.0,
    flip_prob: float = 0.5,
    morphology_prob: float = 0.4,
    merge_prob: float = 0.05,
    keep: Sequence[str] = (),
    **label_kwargs: Any,
) -> Compose:
    """The training chain: deform probabilities and image together, flip, make labels, perturb them, one-hot.

    Input ``{probs_key: (4, *S), target_key: (1, *S)}``; output ``{image_key: (num_classes, *S) float one-hot,
    target_key: (1, *S)}`` plus the keys in ``keep`` (``"probs"``, ``"label"``). ``rotate`` (radians),
    ``scale`` (fraction) and ``translate`` (voxels) are the ranges of the random affine of the MONAI elastic
    transform; ``elastic_spacing`` / ``elastic_magnitude`` its control-point spacing and displacement (voxels).
    ``label_kwargs`` go to :class:`RandTissueLabelsd`.
    """
    if spatial_dims not in (2, 3):
        raise ValueError(f"label_randomisation: spatial_dims must be 2 or 3, got {spatial_dims}.")
    keys = [probs_key, target_key]
    n = spatial_dims
    elastic_args = dict(keys=keys, prob=elastic_prob, rotate_range=(rotate,) * (1 if n == 2 else 3), scale_range=(scale,) * n,
                        translate_range=(translate,) * n, mode="bilinear", padding_mode="border")
    elastic = (Rand2DElasticd(spacing=(elastic_spacing,) * 2, magnitude_range=elastic_magnitude, **elastic_args) if n == 2 else
               Rand3DElasticd(sigma_range=(elastic_spacing / 4, elastic_spacing / 2), magnitude_range=elastic_magnitude, **elastic_args))
    drop = [k for k in (probs_key, "label") if k not in keep]
    return Compose([
        elastic,
        RandFlipd(keys=keys, prob=flip_prob, spatial_axis=0),
        RandTissueLabelsd(keys=probs_key, label_key="label", target_key=target_key, **label_kwargs),
        RandLabelMorphologyd(keys="label", prob=morphology_prob, classes=tuple(range(1, num_classes))),
        RandMergeTissueClassd(keys="label", prob=merge_prob),
        CopyItemsd(keys="label", names=image_key),
        AsDiscreted(keys=image_key, to_onehot=num_classes),
        *([DeleteItemsd(keys=drop)] if drop else []),
    ])
