"""Synthetic MR from tissue maps (SynthSeg / SynthSR-style domain randomisation): anatomy, contrast, bias, gamma.

The chain :class:`SyntheticSRPaird` turns tissue maps into ``(lr, hr)`` training pairs with no real
training scan; the steps are MONAI ``Randomizable`` ``MapTransform`` s (seed them all with
``set_random_state``), 2D or 3D, float32, channel-first ``(C, *spatial)``:

1. :class:`RandSpatialDeformd`: affine (scaling, rotation, shearing, translation) and a smooth elastic
   field, left-right flip, one linear resampling of every key onto an output patch.
2. :class:`RandHeadTissuesd`: tissue channels ``(GM, WM, brain, head)`` -> 7 class probabilities
   (:data:`SYNTH_CLASSES`). The MNI T1 that nilearn ships is skull-stripped, so the non-brain head is not
   cut out of it by intensity: three shells around the brain (extra-cerebral CSF / dura, skull, scalp) of
   random thickness, from the distance to the brain, with exact partial volume at their borders.
3. :class:`RandTissueContrastd`: a Gaussian per class with random mean and std (partial-volume mixed),
   so T1-, T2-, PD-, FLAIR-like and inverted contrasts all appear; or, with ``real_t1_prob``, the
   (deformed) real MNI T1.
4. :class:`RandBiasFieldd` (smooth multiplicative field, exponentiated) and :class:`RandGammaNormalised`
   (``/ 99.9th percentile``, clip to [0, 1], random gamma).
5. :mod:`~medgen_core.transforms.resolution_sim`: random HR bandwidth, an exactly defined degradation, noise.

Ranges (SynthSeg = Billot et al., Medical Image Analysis 2023, ``brain_generator.py`` defaults; SynthSR =
Iglesias et al., Science Advances 2023):

* means U[25, 225], stds U[5, 25] per class (SynthSeg). Deviation: the background (air) is dark
  (mean U[0, 10], std U[0, 5]) with probability 0.8, because magnitude MR has dark air and an SR model
  sees it at every border; otherwise it is drawn like the others (SynthSeg).
* within-class noise: white N(0, sigma_k^2) blurred by a Gaussian of sigma U[0.5, 1.0] voxel, as SynthSeg's
  resolution step blurs it at the atlas resolution (sigma ~0.75); in 2D the smoothed field is scaled to
  the std a 3D blur leaves, ``(4 pi sigma^2)^(-3/4)`` (0.42-0.15), so 2D and 3D draws are equally noisy.
  Partial-volume mixing of the class means (deviation: SynthSeg samples hard labels, then blurs).
* scaling +-0.2, rotation +-15 deg, shearing +-0.012 (SynthSeg); left-right flip p 0.5. Translation: the
  patch is centred on a random brain voxel (:mod:`medgen_core.data.synthetic_sr`), plus U[-t, t] voxels
  with ``translate_range`` t (0 by default: the random centre already spans the brain).
* elastic: std U[0, 4] voxels on a control grid of 25-voxel spacing (SynthSeg ``nonlin_std`` 4 at
  ``nonlin_scale`` 0.04 of the image size), cubic (2D) / linear (3D) interpolation. Deviation: the field
  is used as a displacement, not integrated as a velocity (scaling and squaring); at this smoothness it
  does not fold (tests check the Jacobian determinant stays > 0).
* bias field: std U[0, 0.5] on a 40-voxel grid (scale 0.025), exponentiated, p 0.95 (between SynthSR's
  0.3 and SynthSeg's 0.7: 0.7 gives 4x gain swings within one slice, stronger than real receive coils).
* gamma: ``exp(N(0, 0.5))`` after min/percentile normalisation (SynthSeg's log-std 0.5).
* resolution: see :mod:`~medgen_core.transforms.resolution_sim` (sigma 0.42-0.75 x factor: SynthSR's
  0.42 and SynthSeg's 0.75; slice thickness 0.5-1.5 x spacing, i.e. gaps and overlaps; SynthSeg draws it
  between the atlas resolution and the spacing).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.transforms import Compose, GaussianSmooth, MapTransform, Randomizable
from monai.transforms.utils import create_rotate, create_scale, create_shear

from medgen_core.transforms.resolution_sim import RandHRBandwidthd, RandMRNoised, RandResolutionDegraded

__all__ = [
    "HEAD_DISTANCE_MAX",
    "SYNTH_CLASSES",
    "RandBiasFieldd",
    "RandGammaNormalised",
    "RandHeadTissuesd",
    "RandSpatialDeformd",
    "RandTissueContrastd",
    "SyntheticSRPaird",
    "smooth_random_field",
]

#: Classes of the probability map made by :class:`RandHeadTissuesd`, in channel order.
SYNTH_CLASSES = ("background", "csf", "grey_matter", "white_matter", "extracerebral", "skull", "scalp")
#: Distance (voxels) from the brain at which the ``head`` channel (``1 - distance / HEAD_DISTANCE_MAX``) reaches 0.
HEAD_DISTANCE_MAX = 32.0


def _params(d: Mapping[Hashable, Any]) -> dict[str, Any]:
    return dict(d.get("params", {}))


def smooth_random_field(R: np.random.RandomState, size: Sequence[int], spacing: float, std: float, channels: int = 1) -> torch.Tensor:
    """``(channels, *size)`` float32: N(0, ``std``) values on a control grid of ``spacing`` voxels (at least 2 points
    per axis, spanning the field), interpolated cubically (2D) or linearly (3D)."""
    grid = [max(2, math.ceil((n - 1) / spacing) + 1) for n in size]
    coarse = torch.from_numpy(R.normal(0.0, 1.0, (1, channels, *grid)).astype(np.float32)) * float(std)
    mode = "bicubic" if len(size) == 2 else "trilinear"
    return F.interpolate(coarse, size=tuple(int(n) for n in size), mode=mode, align_corners=True)[0]


class RandSpatialDeformd(Randomizable, MapTransform):
    """Resample ``keys`` (each ``(C, *S)``, numpy of any float dtype or torch; 2D or 3D) onto one random output
    grid of ``spatial_size``: ``x_src = centre + t + M (u - c_out) + disp(u)``, with ``M`` = rotation x shear x
    scaling (x a mirror of output axis ``flip_axis`` with ``flip_prob``), ``disp`` an elastic field
    (:func:`smooth_random_field`) in source voxels, ``u`` the output index and ``c_out`` its centre.
    Linear interpolation, zeros outside the source (only the needed box of a large source is read).
    ``zoom_range`` (optional): one more isotropic factor, log-uniform in ``(low, high)``, source voxels per output
    voxel (2 = the anatomy at 2 mm voxels from the 1 mm source, as a coarser scan sees it).

    ``d["centre"]`` (source index coordinates) overrides the default centre (the source's centre);
    ``d["flip_axis"]`` (None = no flip) overrides ``flip_axis``. Records ``params["deform"]``;
    :attr:`last_coordinates` keeps the last source coordinates ``(dims, *spatial_size)``.
    """

    def __init__(self, keys: KeysCollection, spatial_size: Sequence[int], scale_range: float = 0.2, rotate_deg: float = 15.0,
                 shear_range: float = 0.012, translate_range: float = 0.0, elastic_std: float = 4.0,
                 elastic_spacing: float = 25.0, flip_prob: float = 0.5, flip_axis: int | None = 0,
                 zoom_range: tuple[float, float] | None = None) -> None:
        MapTransform.__init__(self, keys)
        self.spatial_size = tuple(int(n) for n in spatial_size)
        if len(self.spatial_size) not in (2, 3) or min(self.spatial_size) < 2:
            raise ValueError(f"RandSpatialDeformd: spatial_size must be 2 or 3 sizes >= 2, got {spatial_size}.")
        self.scale_range, self.rotate_deg, self.shear_range, self.translate_range = scale_range, rotate_deg, shear_range, translate_range
        self.elastic_std, self.elastic_spacing, self.flip_prob, self.flip_axis = elastic_std, elastic_spacing, flip_prob, flip_axis
        if zoom_range is not None and not 0 < float(zoom_range[0]) <= float(zoom_range[1]):
            raise ValueError(f"RandSpatialDeformd: zoom_range must be (low, high) with 0 < low <= high, got {zoom_range}.")
        self.zoom_range = None if zoom_range is None else (float(zoom_range[0]), float(zoom_range[1]))
        self.last_coordinates: torch.Tensor | None = None

    def randomize(self, data: Any = None) -> None:
        nd = len(self.spatial_size)
        self._scale = 1.0 + self.R.uniform(-self.scale_range, self.scale_range, nd)
        self._angles = np.deg2rad(self.R.uniform(-self.rotate_deg, self.rotate_deg, 1 if nd == 2 else 3))
        self._shear = self.R.uniform(-self.shear_range, self.shear_range, 2 if nd == 2 else 6)
        self._translate = self.R.uniform(-self.translate_range, self.translate_range, nd)
        self._flip = bool(self.R.rand() < self.flip_prob)
        self._elastic = float(self.R.uniform(0.0, self.elastic_std))
        self._disp = smooth_random_field(self.R, self.spatial_size, self.elastic_spacing, self._elastic, channels=nd)
        if self.zoom_range is not None:  # drawn last, so that draws without it are unchanged
            self._scale = self._scale * float(np.exp(self.R.uniform(*np.log(self.zoom_range))))

    def coordinates(self, source_shape: Sequence[int], centre: Sequence[float] | None, flip_axis: int | None) -> torch.Tensor:
        """Source index coordinates ``(dims, *spatial_size)`` of the current draw."""
        nd = len(self.spatial_size)
        m = (create_rotate(nd, self._angles) @ create_shear(nd, self._shear) @ create_scale(nd, self._scale))[:nd, :nd]
        if self._flip and flip_axis is not None:
            m = m @ np.diag([-1.0 if i == flip_axis else 1.0 for i in range(nd)])
        c_src = np.asarray([(n - 1) / 2.0 for n in source_shape] if centre is None else centre, dtype=np.float64) + self._translate
        u = torch.stack(torch.meshgrid(*[torch.arange(n, dtype=torch.float32) - (n - 1) / 2.0 for n in self.spatial_size], indexing="ij"))
        x = torch.einsum("ij,j...->i...", torch.as_tensor(m, dtype=torch.float32), u)
        return x + torch.as_tensor(c_src, dtype=torch.float32).reshape(nd, *([1] * nd)) + self._disp

    @staticmethod
    def _sample(arr: Any, coords: torch.Tensor) -> torch.Tensor:
        nd = coords.shape[0]
        shape = arr.shape[1:]
        lo = [max(0, int(math.floor(float(coords[i].min()))) - 1) for i in range(nd)]
        hi = [min(shape[i], int(math.ceil(float(coords[i].max()))) + 2) for i in range(nd)]
        out_shape = (arr.shape[0], *coords.shape[1:])
        if any(h <= a for a, h in zip(lo, hi)):  # the whole grid lies outside the source
            return torch.zeros(out_shape, dtype=torch.float32)
        lo = [min(a, n - 2) for a, n in zip(lo, shape)]  # at least 2 samples per axis for align_corners
        hi = [max(h, a + 2) for a, h in zip(lo, hi)]
        box = (slice(None), *[slice(a, b) for a, b in zip(lo, hi)])
        crop = torch.as_tensor(np.asarray(arr[box], dtype=np.float32) if isinstance(arr, np.ndarray) else arr[box].float())
        norm = [2.0 * (coords[i] - lo[i]) / (hi[i] - lo[i] - 1) - 1.0 for i in range(nd)]
        grid = torch.stack(norm[::-1], dim=-1)[None]
        return F.grid_sample(crop[None], grid, mode="bilinear", padding_mode="zeros", align_corners=True)[0].reshape(out_shape)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize()
        keys = list(self.key_iterator(d))
        flip_axis = d.get("flip_axis", self.flip_axis)
        shape = tuple(d[keys[0]].shape[1:])
        if len(shape) != len(self.spatial_size):
            raise ValueError(f"RandSpatialDeformd: {keys[0]!r} has {len(shape)} spatial dims, "
                             f"spatial_size {self.spatial_size} has {len(self.spatial_size)}.")
        bad = [k for k in keys if tuple(d[k].shape[1:]) != shape]
        if bad:
            raise ValueError(f"RandSpatialDeformd: keys {bad} differ in spatial shape from {keys[0]!r} {shape}.")
        coords = self.coordinates(shape, d.get("centre"), flip_axis)
        self.last_coordinates = coords
        for key in keys:
            d[key] = self._sample(d[key], coords)
        params = _params(d)
        params["deform"] = {"scale": self._scale.tolist(), "rotation_deg": np.rad2deg(self._angles).tolist(), "shear": self._shear.tolist(),
                            "translation": self._translate.tolist(), "flip": self._flip and flip_axis is not None,
                            "elastic_std": self._elastic, "centre": None if d.get("centre") is None else [float(c) for c in d["centre"]]}
        d["params"] = params
        return d


class RandHeadTissuesd(Randomizable, MapTransform):
    """``d[key]`` ``(4, *S)`` = (GM, WM, brain, head) -> ``d[output_key]`` ``(7, *S)`` probabilities of :data:`SYNTH_CLASSES`
    (they sum to 1). ``head = 1 - distance_to_brain / HEAD_DISTANCE_MAX``; shells of thickness U``extracerebral_mm``,
    U``skull_mm``, U``scalp_mm`` (voxels), each border smoothly displaced by a field of std U[0, ``jitter_mm``];
    partial volume: a voxel at distance ``r`` from a border is ``clip(r + 1/2, 0, 1)`` inside it."""

    def __init__(self, key: str = "tissue", output_key: str = "probs", extracerebral_mm: tuple[float, float] = (0.5, 3.0),
                 skull_mm: tuple[float, float] = (2.5, 7.0), scalp_mm: tuple[float, float] = (2.0, 7.0), jitter_mm: float = 1.5,
                 jitter_spacing: float = 40.0) -> None:
        MapTransform.__init__(self, key)
        self.key, self.output_key = key, output_key
        self.ranges = (extracerebral_mm, skull_mm, scalp_mm)
        self.jitter_mm, self.jitter_spacing = jitter_mm, jitter_spacing

    def randomize(self, spatial_shape: Sequence[int]) -> None:
        self._thick = [float(self.R.uniform(*r)) for r in self.ranges]
        self._jitter = float(self.R.uniform(0.0, self.jitter_mm))
        self._field = smooth_random_field(self.R, spatial_shape, self.jitter_spacing, self._jitter)[0]

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        t = torch.as_tensor(d[self.key], dtype=torch.float32)
        if t.shape[0] != 4:
            raise ValueError(f"RandHeadTissuesd: {self.key!r} must have 4 channels (GM, WM, brain, head), got {t.shape[0]}.")
        self.randomize(t.shape[1:])
        thick, jitter, field = self._thick, self._jitter, self._field
        gm, wm, brain, head = (c.clamp(0.0, 1.0) for c in t)
        gm = torch.minimum(gm, brain)
        wm = torch.minimum(wm, brain - gm)
        csf = brain - gm - wm
        dist = (1.0 - head) * HEAD_DISTANCE_MAX + field
        edges = np.cumsum(thick)
        inside = [((float(e) - dist) + 0.5).clamp(0.0, 1.0) for e in edges]
        out = 1.0 - brain
        shells = [out * inside[0], out * (inside[1] - inside[0]), out * (inside[2] - inside[1])]
        d[self.output_key] = torch.stack([out * (1.0 - inside[2]), csf, gm, wm, *shells])
        params = _params(d)
        params["head"] = {"extracerebral_mm": thick[0], "skull_mm": thick[1], "scalp_mm": thick[2], "jitter_mm": jitter}
        d["params"] = params
        return d


class RandTissueContrastd(Randomizable, MapTransform):
    """``d[prob_key]`` ``(K, *S)`` class probabilities -> ``d[output_key]`` ``(1, *S)`` on a 0-255 scale: per class a
    Gaussian N(mu_k, sigma_k^2), mu_k ~ U``mean_range``, sigma_k ~ U``std_range``; the image is
    ``sum_k p_k (mu_k + sigma_k n)``, ``n`` white noise blurred by a Gaussian of sigma U``texture_sigma_range`` voxels
    (its std as after a 3D blur, see the module docstring); ``partial_volume=False``: hard labels (``p`` one-hot
    of the argmax). Class 0 (air) is dark with ``dark_background_prob``. With ``real_t1_prob`` the image is ``255 * d[t1_key]`` instead.
    Records ``params["contrast"]``."""

    def __init__(self, prob_key: str = "probs", t1_key: str | None = "t1", output_key: str = "image",
                 mean_range: tuple[float, float] = (25.0, 225.0), std_range: tuple[float, float] = (5.0, 25.0),
                 dark_background_prob: float = 0.8, background_mean_range: tuple[float, float] = (0.0, 10.0),
                 background_std_range: tuple[float, float] = (0.0, 5.0), texture_sigma_range: tuple[float, float] = (0.5, 1.0),
                 partial_volume: bool = True, real_t1_prob: float = 0.2) -> None:
        MapTransform.__init__(self, prob_key)
        self.prob_key, self.t1_key, self.output_key = prob_key, t1_key, output_key
        self.mean_range, self.std_range, self.texture_sigma_range = mean_range, std_range, texture_sigma_range
        self.dark_background_prob = dark_background_prob
        self.background_mean_range, self.background_std_range = background_mean_range, background_std_range
        self.partial_volume, self.real_t1_prob = partial_volume, real_t1_prob

    def randomize(self, num_classes: int) -> None:
        self._mu = self.R.uniform(*self.mean_range, num_classes)
        self._sd = self.R.uniform(*self.std_range, num_classes)
        if self.R.rand() < self.dark_background_prob:
            self._mu[0], self._sd[0] = self.R.uniform(*self.background_mean_range), self.R.uniform(*self.background_std_range)
        self._tex = float(self.R.uniform(*self.texture_sigma_range))
        self._real = bool(self.R.rand() < self.real_t1_prob)
        self._seed = int(self.R.randint(2**31 - 1))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        p = torch.as_tensor(d[self.prob_key], dtype=torch.float32)
        k = p.shape[0]
        self.randomize(k)
        mu, sd, tex = self._mu, self._sd, self._tex
        real = self._real and self.t1_key is not None and self.t1_key in d
        g = torch.Generator().manual_seed(self._seed)
        params = _params(d)
        if real:
            d[self.output_key] = 255.0 * torch.as_tensor(d[self.t1_key], dtype=torch.float32).clamp(0.0, 1.0)
            params["contrast"] = {"mode": "real_t1"}
        else:
            if not self.partial_volume:
                p = F.one_hot(p.argmax(0), k).movedim(-1, 0).float()
            noise = torch.randn((1, *p.shape[1:]), generator=g)
            if tex > 0:  # smoothed, then scaled to the std a 3D Gaussian blur of sigma tex leaves of white noise
                noise = torch.as_tensor(GaussianSmooth(sigma=tex)(noise))
                noise = noise / noise.std().clamp_min(1e-6) * min(1.0, (4.0 * math.pi * tex**2) ** -0.75)
            mu_t = torch.as_tensor(mu, dtype=torch.float32).reshape(k, *([1] * (p.dim() - 1)))
            sd_t = torch.as_tensor(sd, dtype=torch.float32).reshape(k, *([1] * (p.dim() - 1)))
            d[self.output_key] = ((p * mu_t).sum(0, keepdim=True) + (p * sd_t).sum(0, keepdim=True) * noise).float()
            params["contrast"] = {"mode": "gmm", "means": mu.tolist(), "stds": sd.tolist(), "texture_sigma": tex,
                                  "partial_volume": self.partial_volume}
        d["params"] = params
        return d


class RandBiasFieldd(Randomizable, MapTransform):
    """With ``prob``, multiply ``keys`` ``(C, *S)`` by ``exp(field)``, ``field`` = :func:`smooth_random_field` of std
    U[0, ``std_max``] on a ``spacing``-voxel grid, one field for all keys; records ``params["bias_field"]`` (the std, or None)."""

    def __init__(self, keys: KeysCollection = "image", prob: float = 0.95, std_max: float = 0.5, spacing: float = 40.0) -> None:
        MapTransform.__init__(self, keys)
        self.prob, self.std_max, self.spacing = prob, std_max, spacing

    def randomize(self, spatial_shape: Sequence[int]) -> None:
        self._std = float(self.R.uniform(0.0, self.std_max)) if self.R.rand() < self.prob else None
        self._gain = None if self._std is None else torch.exp(smooth_random_field(self.R, spatial_shape, self.spacing, self._std))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        keys = list(self.key_iterator(d))
        self.randomize(tuple(d[keys[0]].shape[1:]))
        for key in keys:
            x = torch.as_tensor(d[key], dtype=torch.float32)
            d[key] = x if self._gain is None else x * self._gain
        params = _params(d)
        params["bias_field"] = self._std
        d["params"] = params
        return d


class RandGammaNormalised(Randomizable, MapTransform):
    """``d[key]`` -> ``d[output_key]`` in [0, 1]: clip at 0, divide by the 99.9th percentile, clip to 1, raise to
    ``gamma = exp(N(0, log_gamma_std))``; records ``params["gamma"]``."""

    def __init__(self, key: str = "image", output_key: str = "hr", log_gamma_std: float = 0.5) -> None:
        MapTransform.__init__(self, key)
        self.key, self.output_key, self.log_gamma_std = key, output_key, log_gamma_std

    def randomize(self, data: Any = None) -> None:
        self._gamma = float(np.exp(self.R.normal(0.0, self.log_gamma_std)))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize()
        gamma = self._gamma
        x = torch.as_tensor(d[self.key], dtype=torch.float32).clamp_min(0.0)
        top = float(torch.quantile(x.flatten()[:: max(1, x.numel() // 200_000)], 0.999)) if x.numel() else 0.0
        top = top if top > 0 else max(float(x.max()), 1e-6)
        d[self.output_key] = (x / top).clamp(0.0, 1.0) ** gamma
        params = _params(d)
        params["gamma"] = gamma
        d["params"] = params
        return d


class SyntheticSRPaird(Compose):
    """The whole chain: ``{"tissue": (4, *S), "t1": (1, *S)[, "centre", "flip_axis"]}`` ->
    adds ``"hr"`` ``(1, *P')``, ``"lr"`` ``(1, *p)``, ``"probs"`` ``(7, *P)`` (deformed class probabilities, for
    label-conditioned reuse), ``"t1"`` ``(1, *P)`` (the deformed real T1), ``"params"`` (every draw, plain
    Python). ``P = patch_size``; ``P'`` is ``P`` cropped so each degraded axis is ``lr size x factor`` exactly.

    Args:
        patch_size: HR output size (2 or 3 sizes).
        axes_mode, factors, kinds, kind_weights, anisotropic_prob, slice_axis: see
            :class:`~medgen_core.transforms.resolution_sim.RandResolutionDegraded`.
        real_t1_prob: chance of the real T1 instead of a random contrast.
        hr_bandwidth_prob: chance that the HR target is itself band-limited (0.5-1.0 of Nyquist).
        noise_prob, noise_std_range: LR noise.
        deform, contrast: extra keyword arguments for :class:`RandSpatialDeformd` / :class:`RandTissueContrastd`.

    Example::

        chain = SyntheticSRPaird(patch_size=(96, 96), factors=(2,)).set_random_state(seed=0)
        out = chain({"tissue": tissue_plane, "t1": t1_plane})   # out["lr"]: (1, 48, 48), out["hr"]: (1, 96, 96)
    """

    def __init__(self, patch_size: Sequence[int], axes_mode: str = "inplane", factors: Sequence[float] = (2,),
                 kinds: Sequence[str] | None = None, kind_weights: Sequence[float] | None = None,
                 anisotropic_prob: float = 0.0, slice_axis: int | None = None, real_t1_prob: float = 0.2,
                 hr_bandwidth_prob: float = 0.3, noise_prob: float = 0.9, noise_std_range: tuple[float, float] = (0.0, 0.05),
                 deform: Mapping[str, Any] | None = None, contrast: Mapping[str, Any] | None = None) -> None:
        super().__init__([
            RandSpatialDeformd(("tissue", "t1"), patch_size, **dict(deform or {})),
            RandHeadTissuesd("tissue", "probs"),
            RandTissueContrastd("probs", "t1", "image", real_t1_prob=real_t1_prob, **dict(contrast or {})),
            RandBiasFieldd("image"),
            RandGammaNormalised("image", "hr"),
            RandHRBandwidthd("hr", prob=hr_bandwidth_prob),
            RandResolutionDegraded("hr", "lr", axes_mode=axes_mode, factors=factors, kinds=kinds, kind_weights=kind_weights,
                                   anisotropic_prob=anisotropic_prob, slice_axis=slice_axis),
            RandMRNoised("lr", prob=noise_prob, std_range=noise_std_range),
        ])

    def __call__(self, data: Mapping[Hashable, Any], *args: Any, **kwargs: Any) -> dict[Hashable, Any]:
        out = dict(super().__call__(dict(data), *args, **kwargs))
        out.pop("image", None)
        out.pop("tissue", None)
        return out
