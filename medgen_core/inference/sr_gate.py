"""The never-worse gate: an upscaler checks itself on its own input before it writes anything.

Self-check. The input ``x`` (normalised) is degraded once more by the same factor with the degradation
model ``D`` (the operators of :mod:`medgen_core.transforms.resolution_sim`), super-resolved by the model
(``m``) and by the interpolation baseline (``b``: bicubic in-plane, cubic B-spline through-plane), and both
are compared with ``x`` inside the foreground (:func:`foreground_mask`). The blend ``b + alpha (m - b)``
with the least foreground squared error is found in closed form (:func:`choose_alpha`, ``alpha`` clipped
to [0, 1]); ``alpha <= 0.05`` falls back to interpolation, ``alpha >= 0.95`` keeps the model.

Data consistency. On the real output ``y`` the projection ``y + P (x - D y)`` with ``D P = I`` makes the
output, degraded again, equal the input (:class:`ConsistencyProjector`, separable along the degraded
axes). ``P = D^T (D D^T)^-1`` is the orthogonal (least-change) back-projection: for any image that ``D``
maps to ``x`` (the truth among them) it never increases the error. The intensity range of the input is
then enforced by alternating clamp and projection (both convex sets), ending with the clamp, so the
recorded "consistency residual after" is what is left once the range holds (in-plane: 10 rounds, about 1e-7 where
the clamp does not bind, 3e-4 (block) to 3e-3 (k-space) on a whole brain where it does, because the input's
range is tighter than the truth's; through-plane: 50 rounds, about 1e-7). When the two do not converge
(:func:`projection_feasible`), no image in the input's range degrades to the input under ``D``: the model
does not fit this input, and the projection is skipped (recorded as such).

Which ``D``. A variant trained for one degradation uses it. For a variant trained on a mix (``mixed``, the
synthetic default) the in-plane model is estimated per input: the network's output ``m`` on the self-check
planes is degraded by each kind of :data:`INPLANE_GATE_KINDS` and the feasible kind with the least consistency
residual ``||x - D m|| / ||x||`` is used. It rarely picks Gaussian (8-17 % of Gaussian-blurred synthetic stacks;
block on dipy's Gaussian-blurred T2w, 1.8 dB below the Gaussian model there), because a network that
under-restores a blur leaves an output that a milder operator reproduces best. The record also holds the
relative residual ``||x - D m|| / ||x - D b||`` (``b`` bicubic), which cancels that bias and picks Gaussian on
dipy, but it is not used: on synthetic stacks whose blur width differs from the gate's fixed model
(``scripts/calibrate_sr_gate.py --truth``, 72 stacks of random anatomy, contrast, noise and width) it chose
Gaussian where projecting on it cost up to 5.7 dB, mean gain over bicubic +0.29 dB against +0.67 dB for the
plain residual (worst -5.74 against -1.11 dB). Block is the safe projection for a blur of unknown width. Projecting
on a wrong model costs a lot (MNI slab x2: the Gaussian projection on a block-averaged input -8.8 dB against the
ungated model), a right one gains (+0.4 to +1.6 dB); the SR bundle's docs give every cell.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from medgen_core.transforms.resolution_sim import AxisDegradation, apply_axis_degradation

__all__ = [
    "ALPHA_KEEP",
    "ALPHA_FALLBACK",
    "ConsistencyProjector",
    "GateReport",
    "axis_matrix",
    "choose_alpha",
    "foreground_mask",
    "gate_decision",
    "INPLANE_GATE_KINDS",
    "ESTIMATE_MARGIN",
    "inplane_gate_degradation",
    "masked_psnr_np",
    "projection_feasible",
]

logger = logging.getLogger(__name__)

#: alpha at or above which the model's correction is kept whole, at or below which interpolation is used.
ALPHA_KEEP, ALPHA_FALLBACK = 0.95, 0.05
#: Foreground: normalised intensity above this fraction of the volume's 99.9th percentile.
FOREGROUND_FRACTION = 0.1
#: Estimated degradation models whose consistency residual is at most 1 / ESTIMATE_MARGIN times the least one
#: are "about as consistent"; the gate then picks among them by the self-check. 1.0 = the least residual alone:
#: on synthetic calibration stacks (``scripts/calibrate_sr_gate.py``) every margin below 1 picked the true kind
#: less often (the self-check favours k-space on block-averaged inputs).
ESTIMATE_MARGIN = 1.0


#: In-plane degradation models the gate knows (those the variants are trained with).
INPLANE_GATE_KINDS = ("gaussian", "block", "kspace")


def inplane_gate_degradation(kind: str, scale: int, axis: int = 0) -> AxisDegradation:
    """One in-plane degradation model along one axis: ``gaussian`` (sigma ``0.5 * scale``, as
    :func:`~medgen_core.transforms.degradation.degrade` uses), ``block`` or ``kspace``."""
    if kind == "block":
        return AxisDegradation(axis, float(scale), "block", float(scale))
    if kind == "kspace":
        return AxisDegradation(axis, float(scale), "kspace")
    if kind == "gaussian":
        return AxisDegradation(axis, float(scale), "gaussian", 0.5 * scale)
    raise ValueError(f"inplane_gate_degradation: kind must be one of {INPLANE_GATE_KINDS}, got {kind!r}.")


def axis_matrix(n_hr: int, spec: AxisDegradation) -> np.ndarray:
    """``(n_lr, n_hr)`` float64 matrix of ``spec`` along one axis (``n_hr`` a whole multiple of the factor), built by
    applying :func:`~medgen_core.transforms.resolution_sim.apply_axis_degradation` to the identity, so it is the
    exact operator the training pairs were made with (Gaussian, box / slice profile, or k-space truncation)."""
    eye = torch.eye(n_hr, dtype=torch.float64)
    return apply_axis_degradation(eye, spec, dim=0).numpy()


def _along(a: torch.Tensor, m: torch.Tensor, axis: int) -> torch.Tensor:
    """Apply matrix ``m`` ``(n_out, n_in)`` along ``axis`` of ``a``."""
    return torch.movedim(torch.matmul(m, torch.movedim(a, axis, -2)), -2, axis)


@dataclass
class ConsistencyProjector:
    """Separable degradation ``D`` (one matrix per array axis) and its back-projection ``P`` (``D P = I``).

    The matrices are built in float64 and applied in float32 (residuals of about 1e-7 relative).

    Args:
        operators: ``{array axis: (n_lr, n_hr) matrix}``.
    """

    operators: dict[int, np.ndarray]
    back: dict[int, np.ndarray] = field(init=False)

    def __post_init__(self) -> None:
        self.back, self._d, self._p = {}, {}, {}
        for axis, d in self.operators.items():
            d = np.asarray(d, dtype=np.float64)
            self.operators[axis] = d
            self.back[axis] = d.T @ np.linalg.inv(d @ d.T)  # orthogonal back-projection, D P = I
            self._d[axis] = torch.from_numpy(d.astype(np.float32))
            self._p[axis] = torch.from_numpy(self.back[axis].astype(np.float32))

    @classmethod
    def from_specs(cls, shape: Sequence[int], specs: dict[int, AxisDegradation]) -> "ConsistencyProjector":
        """Projector for an array of ``shape`` (high resolution) degraded by ``specs`` (array axis -> spec)."""
        return cls({axis: axis_matrix(int(shape[axis]), spec) for axis, spec in specs.items()})

    def _degrade(self, y: torch.Tensor) -> torch.Tensor:
        for axis, d in self._d.items():
            y = _along(y, d, axis)
        return y

    def _project(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        r = x - self._degrade(y)
        for axis, p in self._p.items():
            r = _along(r, p, axis)
        return y + r

    def degrade(self, y: np.ndarray) -> np.ndarray:
        """``D y`` (float32)."""
        return self._degrade(torch.as_tensor(np.asarray(y, dtype=np.float32))).numpy()

    def project(self, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        """``y + P (x - D y)``: the output degraded by ``D`` equals ``x`` (float32)."""
        return self._project(torch.as_tensor(np.asarray(y, dtype=np.float32)), torch.as_tensor(np.asarray(x, dtype=np.float32))).numpy()

    def residual(self, y: np.ndarray, x: np.ndarray) -> float:
        """Relative consistency residual ``||x - D y|| / ||x||``."""
        x64 = np.asarray(x, dtype=np.float64)
        return float(np.linalg.norm(x64 - self.degrade(y)) / max(np.linalg.norm(x64), 1e-12))

    def project_within(self, y: np.ndarray, x: np.ndarray, lo: float, hi: float, iterations: int = 10, tol: float = 1e-5) -> np.ndarray:
        """Alternate projection and clamp to ``[lo, hi]`` (at most ``iterations`` rounds, until the clamp moves no voxel by
        more than ``tol`` of the range), ending with the clamp."""
        xt = torch.as_tensor(np.asarray(x, dtype=np.float32))
        out = torch.as_tensor(np.asarray(y, dtype=np.float32)).clamp(lo, hi)
        limit = tol * max(hi - lo, 1e-12) if np.isfinite(hi - lo) else 0.0
        for _ in range(iterations):
            projected = self._project(out, xt)
            out = projected.clamp(lo, hi)
            if not projected.numel() or float((out - projected).abs().max()) <= limit:
                break
        return out.numpy()


#: Why a projection is skipped.
INFEASIBLE = ("skipped: the input is not consistent with the degradation model within its intensity range "
              "(projection and clamp do not converge)")
#: A projection is feasible when alternating it with the clamp leaves at most this fraction of the residual.
FEASIBLE_RATIO = 0.25


def projection_feasible(projector: "ConsistencyProjector", y: np.ndarray, x: np.ndarray, lo: float, hi: float, clamp: bool = True) -> bool:
    """Whether ``projector`` can make ``y`` consistent with ``x`` within ``[lo, hi]``: after the alternating projection
    at most :data:`FEASIBLE_RATIO` of the residual is left. When it is not, no image in the range degrades to ``x``
    under this model (the truth would be one), so the model does not fit the input and forcing it would add
    artefacts (a sharp native-resolution scan projected on the Gaussian model: residual 0.0175 -> 0.0139)."""
    before = projector.residual(y, x)
    if before <= 1e-12 or not clamp:
        return True
    return projector.residual(projector.project_within(y, x, lo, hi), x) <= FEASIBLE_RATIO * before


def foreground_mask(x: np.ndarray, fraction: float = FOREGROUND_FRACTION) -> np.ndarray:
    """Voxels above ``fraction`` of the 99.9th percentile (all voxels when that leaves fewer than 64)."""
    ref = float(np.percentile(x, 99.9)) if x.size else 0.0
    mask = x > fraction * ref
    return mask if int(mask.sum()) >= 64 else np.ones_like(x, dtype=bool)


def masked_psnr_np(pred: np.ndarray, target: np.ndarray, mask: np.ndarray, data_range: float = 1.0) -> float:
    """PSNR (dB) over ``mask`` of arrays on the same grid."""
    mse = float(np.mean((np.asarray(pred, np.float64)[mask] - np.asarray(target, np.float64)[mask]) ** 2))
    return float(10.0 * np.log10(data_range**2 / max(mse, 1e-20)))


def choose_alpha(target: np.ndarray, base: np.ndarray, model: np.ndarray, mask: np.ndarray,
                 project: Callable[[np.ndarray], np.ndarray] | None = None) -> float:
    """``alpha`` in [0, 1] minimising the foreground error of ``base + alpha (model - base)`` against ``target``,
    after ``project`` (an affine map such as the consistency projection) when given."""
    if project is not None:
        pb = project(base)
        e, r = project(model) - pb, target - pb
    else:
        e, r = model - base, target - base
    den = float(np.sum(e[mask].astype(np.float64) ** 2))
    if den <= 1e-20:
        return 0.0
    return float(np.clip(np.sum(r[mask].astype(np.float64) * e[mask]) / den, 0.0, 1.0))


def gate_decision(alpha: float) -> tuple[str, float]:
    """``("model", 1)``, ``("interpolation", 0)`` or ``("blend", alpha)``."""
    if alpha >= ALPHA_KEEP:
        return "model", 1.0
    if alpha <= ALPHA_FALLBACK:
        return "interpolation", 0.0
    return "blend", float(alpha)


def _rounded(value):
    """JSON-ready copy: floats to 6 decimals (4 significant digits below 1e-3)."""
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(v) for v in value]
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return round(value, 6) if abs(value) >= 1e-3 or value == 0 else float(f"{value:.4g}")
    return value


@dataclass
class GateReport:
    """What the gate decided and the self-check figures (PSNR in dB on the normalised input, foreground).

    ``psnr_gated`` is the self-check PSNR of the output the gate chose (blend, clamp, consistency);
    ``consistency_before`` / ``consistency_after`` are ``||x - D y|| / ||x||`` on the real output before and
    after the projection; ``operator_residuals`` (estimated models only) holds, per kind, the self-check planes'
    ``model`` residual ``||x - D m|| / ||x||`` and the ``relative`` residual ``||x - D m|| / ||x - D b||`` that chose it.
    """

    enabled: bool
    decision: str
    alpha: float
    baseline: str
    degradation: dict
    psnr_model: float | None = None
    psnr_baseline: float | None = None
    psnr_gated: float | None = None
    consistency_before: float | None = None
    consistency_after: float | None = None
    degradation_choice: str = ""
    operator_residuals: dict | None = None
    projection: str = "applied"
    self_check_planes: int = 0
    note: str = ""

    def to_dict(self) -> dict:
        return _rounded(asdict(self))

    def summary_line(self) -> str:
        """One line for stdout / the log."""
        if not self.enabled:
            return "gate: off (--no-gate): model output written as it is, no self-check, no consistency projection"
        what = {"model": "model kept", "blend": f"model correction reduced to alpha {self.alpha:.2f}",
                "interpolation": f"fell back to {self.baseline} interpolation"}[self.decision]
        figures = ""
        if self.psnr_model is not None:
            figures = (f"; self-check PSNR {self.psnr_model:.2f} dB model / {self.psnr_baseline:.2f} dB {self.baseline}"
                       f" / {self.psnr_gated:.2f} dB gated")
        consistency = ""
        if self.projection != "applied":
            consistency = "; consistency projection skipped (the input does not fit the degradation model)"
        elif self.consistency_before is not None:
            consistency = f"; consistency residual {self.consistency_before:.2e} -> {self.consistency_after:.2e}"
        note = f" ({self.note})" if self.note else ""
        return f"gate: {what}{note}{figures}{consistency}"
