"""Synthetic super-resolution pairs from the MNI152 tissue maps that nilearn ships: no real training scan.

Source (:func:`mni_synthetic_source`, built once per process in a few seconds): the grey- and white-matter
probability maps of MNI152 2009, its brain mask, a head channel ``1 - d / HEAD_DISTANCE_MAX`` (``d`` = distance
to the brain in mm, from which :class:`~medgen_core.transforms.synthetic_mr.RandHeadTissuesd` draws the
extra-cerebral, skull and scalp shells) and the T1 template (``/ 99.9th percentile``, clipped to [0, 1]),
all 1 mm ``(197, 233, 189)``, stored float16 (87 MB).

Each draw picks a random brain voxel as the patch centre, then (2D) a plane through it, axial / coronal /
sagittal with ``plane_probs``, and runs :class:`~medgen_core.transforms.synthetic_mr.SyntheticSRPaird`.

Held-out evaluation slab: with ``exclude_heldout`` (default) nothing is read from the MNI axial slices
``[76, 104)`` (:data:`~medgen_core.data.samples.MNI_HELDOUT_AXIAL` and its margin): axial planes and centres
lie outside them, and coronal / sagittal planes and 3D patches read only the side of the volume (below or
above the slab) that holds the centre; beyond it is air, like the end of a field of view.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from math import lcm
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from medgen_core.data.samples import (
    MNI_HELDOUT_AXIAL,
    MNI_HELDOUT_MARGIN,
    load_mni152_brain_mask,
    load_mni152_t1,
    load_mni152_tissue_probabilities,
)
from medgen_core.transforms.resolution_sim import interpolate_to_hr
from medgen_core.transforms.synthetic_mr import HEAD_DISTANCE_MAX, SyntheticSRPaird

__all__ = [
    "PLANES",
    "SyntheticSRPairs",
    "SyntheticSource",
    "collate_pairs",
    "compatible_patch_size",
    "mni_synthetic_source",
    "synthetic_sr_pairs",
]

#: 2D plane orientations, by the MNI axis normal to the plane: axial (z), coronal (y), sagittal (x).
PLANES = ("axial", "coronal", "sagittal")


@dataclass(frozen=True)
class SyntheticSource:
    """Source maps: ``tissue`` ``(4, X, Y, Z)`` float16 (GM, WM, brain, head), ``t1`` ``(1, X, Y, Z)`` float16,
    ``centres`` ``(N, 3)`` brain voxels allowed as patch centres, ``excluded_z`` the axial range never read."""

    tissue: np.ndarray
    t1: np.ndarray
    centres: np.ndarray
    excluded_z: tuple[int, int] | None

    def side(self, z: int) -> tuple[int, int]:
        """Axial range ``[lo, hi)`` that may be read for a patch centred at axial index ``z``."""
        depth = self.tissue.shape[3]
        if self.excluded_z is None:
            return 0, depth
        lo, hi = self.excluded_z
        return (0, lo) if z < lo else (hi, depth)


@lru_cache(maxsize=2)
def mni_synthetic_source(exclude_heldout: bool = True) -> SyntheticSource:
    """The MNI152 source maps (cached); see the module docstring."""
    from scipy.ndimage import distance_transform_edt

    t1 = load_mni152_t1().array
    t1 = np.clip(t1 / max(float(np.percentile(t1, 99.9)), 1e-8), 0.0, 1.0)
    gm, wm = load_mni152_tissue_probabilities()
    brain = load_mni152_brain_mask()
    dist = np.clip(distance_transform_edt(~brain) - 0.5, 0.0, None)  # distance to the brain's surface, mm
    head = np.clip(1.0 - dist / HEAD_DISTANCE_MAX, 0.0, 1.0)
    tissue = np.stack([gm, wm, brain.astype(np.float32), head]).astype(np.float16)
    excluded = (MNI_HELDOUT_AXIAL[0] - MNI_HELDOUT_MARGIN, MNI_HELDOUT_AXIAL[1] + MNI_HELDOUT_MARGIN) if exclude_heldout else None
    centres = np.argwhere(brain[::2, ::2, ::2]).astype(np.int16) * 2
    if excluded is not None:
        centres = centres[(centres[:, 2] < excluded[0]) | (centres[:, 2] >= excluded[1])]
    return SyntheticSource(tissue, t1[None].astype(np.float16), centres, excluded)


def compatible_patch_size(factors: Sequence[float], at_least: int) -> int:
    """Smallest multiple of every factor's numerator (``2.5 = 5/2`` -> 5) that is >= ``at_least``: with it the
    HR patch is never cropped, so draws of different factors share one shape."""
    step = lcm(*[Fraction(float(f)).limit_denominator(100).numerator for f in factors])
    return int(-(-int(at_least) // step) * step)


def _fit_centre(c: int, lo: int, hi: int, half: float) -> float:
    """Move ``c`` so that ``[c - half, c + half]`` lies in ``[lo, hi)`` when it fits."""
    return float(np.clip(c, lo + half, hi - 1 - half)) if hi - lo > 2 * half else (lo + hi - 1) / 2.0


class _Stream:
    """One reproducible stream of draws (a numpy RandomState for the source, the chain seeded from it)."""

    def __init__(self, source: SyntheticSource, patch_size: tuple[int, ...], plane_probs: np.ndarray, seed: int,
                 interpolate: bool, chain_kwargs: Mapping[str, Any]) -> None:
        self.source, self.patch_size, self.plane_probs, self.interpolate = source, patch_size, plane_probs, interpolate
        self.R = np.random.RandomState(seed)
        self.chain = SyntheticSRPaird(patch_size, **chain_kwargs)
        self.chain.set_random_state(seed=int(self.R.randint(2**31 - 1)))

    def _inputs(self) -> dict[str, Any]:
        src, p = self.source, self.patch_size
        x, y, z = (int(v) for v in src.centres[self.R.randint(len(src.centres))])
        lo, hi = src.side(z)
        if len(p) == 3:
            cz = _fit_centre(z, lo, hi, p[2] / 2.0) - lo
            return {"tissue": src.tissue[..., lo:hi], "t1": src.t1[..., lo:hi], "centre": (x, y, cz), "flip_axis": 0,
                    "source": {"plane": "3d", "centre_voxel": [x, y, z], "z_range": [lo, hi]}}
        plane = PLANES[int(self.R.choice(3, p=self.plane_probs))]
        if plane == "axial":
            t, t1, centre, flip = src.tissue[:, :, :, z], src.t1[:, :, :, z], (x, y), 0
        elif plane == "coronal":
            t, t1, centre, flip = src.tissue[:, :, y, lo:hi], src.t1[:, :, y, lo:hi], (x, _fit_centre(z, lo, hi, p[1] / 2.0) - lo), 0
        else:
            t, t1, centre, flip = src.tissue[:, x, :, lo:hi], src.t1[:, x, :, lo:hi], (y, _fit_centre(z, lo, hi, p[1] / 2.0) - lo), None
        return {"tissue": t, "t1": t1, "centre": centre, "flip_axis": flip,
                "source": {"plane": plane, "centre_voxel": [x, y, z], "z_range": [lo, hi] if plane != "axial" else [z, z + 1]}}

    def next(self) -> dict[str, Any]:
        inputs = self._inputs()
        source = inputs.pop("source")
        out = self.chain(inputs)
        params = dict(out["params"])
        params["source"] = source
        result = {"lr": out["lr"], "hr": out["hr"], "probs": out["probs"], "t1": out["t1"], "params": params}
        if self.interpolate:
            factors = [1.0] * (out["hr"].dim() - 1)
            for spec in params["degradation"]:
                factors[spec["axis"]] = spec["factor"]
            result["lr_on_hr"] = interpolate_to_hr(out["lr"], factors)
        return result


class SyntheticSRPairs(IterableDataset):
    """Stream of synthetic SR pairs: dicts ``{"lr": (1, *p), "hr": (1, *P'), "probs": (7, *P), "t1": (1, *P),
    "params": dict[, "lr_on_hr": (1, *P')]}`` (float32), reproducible per ``seed`` (each DataLoader worker gets
    its own stream from ``(seed, worker id)``). 2D when ``patch_size`` has 2 sizes, 3D with 3.

    Args:
        patch_size: HR patch, e.g. ``(96, 96)`` or ``(64, 64, 64)``. With non-integer factors use
            :func:`compatible_patch_size` so that every draw has the same shape.
        axes_mode: ``"inplane"`` (2D: both axes, e.g. x2/x4), ``"through"`` (one axis: the slice axis,
            ``slice_axis`` or random) or ``"all"``.
        factors: factors drawn uniformly.
        seed: stream seed.
        num_samples: stop after this many (None = endless).
        exclude_heldout: never read the held-out MNI slab (see the module docstring).
        plane_probs: probabilities of axial, coronal, sagittal planes (2D).
        interpolate: also return ``lr_on_hr``, the cubic B-spline of ``lr`` on the HR grid.
        source: source maps (default: :func:`mni_synthetic_source` ``(exclude_heldout)``).
        **chain_kwargs: more :class:`~medgen_core.transforms.synthetic_mr.SyntheticSRPaird` arguments (kinds, ...).
    """

    def __init__(self, patch_size: Sequence[int] = (96, 96), axes_mode: str = "inplane", factors: Sequence[float] = (2,),
                 seed: int = 0, num_samples: int | None = None, exclude_heldout: bool = True,
                 plane_probs: Sequence[float] = (0.5, 0.25, 0.25), interpolate: bool = False,
                 source: SyntheticSource | None = None, **chain_kwargs: Any) -> None:
        self.patch_size = tuple(int(n) for n in patch_size)
        if len(self.patch_size) not in (2, 3) or min(self.patch_size) < 8:
            raise ValueError(f"SyntheticSRPairs: patch_size must be 2 or 3 sizes >= 8, got {tuple(patch_size)}.")
        probs = np.asarray(plane_probs, dtype=np.float64)
        if probs.shape != (3,) or probs.min() < 0 or probs.sum() <= 0:
            raise ValueError(f"SyntheticSRPairs: plane_probs must be 3 non-negative numbers, got {plane_probs}.")
        if num_samples is not None and num_samples < 0:
            raise ValueError(f"SyntheticSRPairs: num_samples must be >= 0, got {num_samples}.")
        self.plane_probs, self.seed, self.num_samples, self.interpolate = probs / probs.sum(), int(seed), num_samples, interpolate
        self.chain_kwargs = {"axes_mode": axes_mode, "factors": tuple(factors), **chain_kwargs}
        SyntheticSRPaird(self.patch_size, **self.chain_kwargs)  # validate the arguments now
        self.source = mni_synthetic_source(exclude_heldout) if source is None else source
        self._stream: _Stream | None = None

    def _new_stream(self, seed: int) -> _Stream:
        return _Stream(self.source, self.patch_size, self.plane_probs, seed, self.interpolate, self.chain_kwargs)

    def sample(self) -> dict[str, Any]:
        """The next draw of this object's own stream (seeded by ``seed`` on first use)."""
        if self._stream is None:
            self._stream = self._new_stream(self.seed)
        return self._stream.next()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        seed = self.seed if info is None else int(np.random.SeedSequence([self.seed, info.id]).generate_state(1)[0])
        stream = self._new_stream(seed)
        n = self.num_samples
        if info is not None and n is not None:  # split the count over workers
            n = n // info.num_workers + (1 if info.id < n % info.num_workers else 0)
        i = 0
        while n is None or i < n:
            yield stream.next()
            i += 1


def collate_pairs(batch: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Stack the tensors of a list of draws (equal shapes: one factor, or a :func:`compatible_patch_size`);
    ``params`` stays a list of dicts."""
    out: dict[str, Any] = {"params": [b["params"] for b in batch]}
    for key in batch[0]:
        if key == "params":
            continue
        shapes = {tuple(b[key].shape) for b in batch}
        if len(shapes) > 1:
            raise ValueError(f"collate_pairs: {key!r} has shapes {sorted(shapes)} in one batch; use one factor per batch "
                             "or a patch size from compatible_patch_size(factors).")
        out[key] = torch.stack([b[key] for b in batch])
    return out


def synthetic_sr_pairs(n: int | None = None, patch_size: Sequence[int] = (96, 96), axes_mode: str = "inplane",
                       factors: Sequence[float] = (2,), seed: int = 0,
                       **kwargs: Any) -> Iterator[tuple[torch.Tensor, torch.Tensor, dict[str, Any]]]:
    """``(lr, hr, params)`` triples from :class:`SyntheticSRPairs` (``n`` of them, or endless)."""
    for item in SyntheticSRPairs(patch_size, axes_mode, factors, seed, num_samples=n, **kwargs):
        yield item["lr"], item["hr"], item["params"]
