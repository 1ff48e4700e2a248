"""Through-plane super-resolution of thick-slice volumes to (near) isotropic voxels, for any factor.

1. Grid (:func:`plan_through_plane`): the slice axis (largest spacing, or given) keeps its physical extent
   ``n_in * S``; ``n_out = round(n_in * S / target)`` voxels of spacing ``S * n_in / n_out`` (the requested
   target when ``n_in * S / target`` is whole, else within half an output voxel over the extent), grid-centred
   like the in-plane code (:func:`~medgen_core.inference.geometry.upscaled_affine`, oblique affines included).
2. Interpolation: cubic B-spline along the slice axis only (the baseline, the same operator as
   :func:`~medgen_core.transforms.resolution_sim.interpolate_to_hr`).
3. Refinement: a small residual 2D network (:class:`~medgen_core.networks.slice_refiner.SliceRefiner`, the
   identity at start) adapted to this scan (:mod:`.self_supervised`) on the planes that contain the slice axis
   and a sharp axis (sagittal and coronal for an axial stack), the orientations averaged. With a single sharp axis
   (the other one coarse too) no pairs match the application planes, and the start weights are used unadapted.
4. Gate (:mod:`.sr_gate`): the refiner is checked on held-out slice planes (degraded with the slice profile,
   never trained on) against the B-spline; ``alpha`` blends or falls back; the output is projected so that,
   degraded along the slice axis with the slice profile (box of the slice thickness at the slice spacing),
   it equals the input.

Why not the shipped in-plane network: the RRDB runs its trunk at the low resolution and upsamples both
plane axes by a fixed power of two, so it cannot refine an image already on the target grid, and one axis
by 2.5 or 3.33 is not a power of two; the refiner works on the interpolated grid, where every factor is the
same problem. The SR bundle ships start weights pretrained on synthetic thick-slice pairs
(``scripts/train_through_refiner.py``); with ``adapt_seconds = 0`` they are applied unadapted, and a refiner
left at its identity initialisation gives the consistent B-spline interpolation.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from medgen_core.errors import SuperResolutionError
from medgen_core.inference.generated import GeneratedVolume
from medgen_core.inference.geometry import upscaled_affine
from medgen_core.inference.self_supervised import PlanePairs, adapt_refiner, make_plane_pairs
from medgen_core.inference.sr_gate import (
    FEASIBLE_RATIO,
    INFEASIBLE,
    ConsistencyProjector,
    GateReport,
    axis_matrix,
    foreground_mask,
    gate_decision,
    masked_psnr_np,
)
from medgen_core.io import Volume
from medgen_core.transforms.resolution_sim import AxisDegradation, interpolate_to_hr
from medgen_core.utils.progress import progress

__all__ = ["DEFAULT_ADAPT_SECONDS", "DEFAULT_ADAPT_STEPS", "MAX_FACTOR", "ThroughPlanePlan", "ThroughPlaneSuperResolver", "bspline_matrix", "header_slice_thickness", "plan_through_plane"]

logger = logging.getLogger(__name__)

#: Per-scan adaptation defaults: at most ``DEFAULT_ADAPT_STEPS`` Adam steps within ``DEFAULT_ADAPT_SECONDS``
#: (whichever ends first; the steps make the output the same on any machine that is not too slow).
DEFAULT_ADAPT_SECONDS, DEFAULT_ADAPT_STEPS = 45.0, 1500
#: Largest through-plane factor accepted (slice spacing / target spacing).
MAX_FACTOR = 8.0
#: Factors below this are "nothing to do" (the volume is already isotropic at the target spacing).
MIN_FACTOR = 1.01
#: A non-slice axis is sharp when its spacing is within this ratio of the finest non-slice spacing.
SHARP_RATIO = 1.5


@dataclass(frozen=True)
class ThroughPlanePlan:
    """The output grid along the slice axis and the slice profile (lengths in mm)."""

    slice_axis: int
    n_in: int
    n_out: int
    slice_spacing: float
    target_spacing: float
    thickness: float
    thickness_source: str
    spacing: tuple[float, float, float]

    @property
    def factor(self) -> float:
        """``n_out / n_in``: the exact upscaling factor of the output grid."""
        return self.n_out / self.n_in

    @property
    def spacing_out(self) -> float:
        return self.slice_spacing / self.factor

    @property
    def sharp_axes(self) -> list[int]:
        """Non-slice axes whose spacing is within :data:`SHARP_RATIO` of the finest one."""
        others = [a for a in range(3) if a != self.slice_axis]
        finest = min(self.spacing[a] for a in others)
        return [a for a in others if self.spacing[a] <= SHARP_RATIO * finest]

    def profile(self, axis: int | None = None) -> AxisDegradation:
        """The slice profile on the output grid: box of the thickness (in output voxels) at the exact factor."""
        width = self.thickness / self.spacing_out
        kind = "block" if abs(width - self.factor) < 1e-6 else "slice_box"
        return AxisDegradation(self.slice_axis if axis is None else axis, self.factor, kind, width, self.thickness / self.slice_spacing)

    def to_dict(self) -> dict:
        out = asdict(self)
        out.update(factor=round(self.factor, 6), spacing_out=round(self.spacing_out, 6), gap=round(self.slice_spacing - self.thickness, 6),
                   sharp_axes=self.sharp_axes, spacing=[round(s, 6) for s in self.spacing])
        return out


def header_slice_thickness(path: str | Path | None) -> float | None:
    """Slice thickness (mm) recorded in a file's header: DICOM SliceThickness (0018,0050), NRRD ``thicknesses``;
    None when the format has none (NIfTI, MetaImage) or it cannot be read."""
    if path is None:
        return None
    path = Path(path)
    try:
        if path.is_dir() or path.suffix.lower() == ".dcm":
            import pydicom

            first = path if path.is_file() else next((p for p in sorted(path.iterdir()) if p.is_file()), None)
            if first is None:
                return None
            value = getattr(pydicom.dcmread(str(first), stop_before_pixels=True, force=True), "SliceThickness", None)
            return float(value) if value not in (None, "") and float(value) > 0 else None
        if path.suffix.lower() in (".nrrd", ".nhdr"):
            import nrrd

            values = [float(t) for t in nrrd.read_header(str(path)).get("thicknesses", []) if t is not None and np.isfinite(float(t))]
            return max(values) if values and max(values) > 0 else None
    except Exception:  # a header we cannot read just has no thickness: the spacing is used
        return None
    return None


def _bad(volume: Volume, text: str) -> SuperResolutionError:
    return SuperResolutionError(f"{volume.path or 'input volume'}: --axes through: {text}")


def plan_through_plane(volume: Volume, slice_axis: int | None = None, target_spacing: float | None = None,
                       slice_thickness: float | None = None) -> ThroughPlanePlan:
    """The output grid for ``volume``; a :class:`~medgen_core.errors.SuperResolutionError` (one line) when there is
    nothing to do or the request does not fit the volume."""
    sp = tuple(float(s) for s in volume.spacing)
    shape = volume.shape
    if min(shape) < 2:
        raise _bad(volume, f"a 2D image (shape {shape}) has no slice axis to upscale; expected a 3D volume of thick slices.")
    if slice_axis is None:
        order = np.argsort(sp)[::-1]
        if np.isclose(sp[order[0]], sp[order[1]], rtol=1e-3) and not np.isclose(sp[order[1]], sp[order[2]], rtol=1e-3):
            raise _bad(volume, f"cannot tell the slice axis: axes {int(order[0])} and {int(order[1])} share the largest spacing "
                               f"({sp[order[0]]:.4g} mm, spacing {tuple(round(s, 4) for s in sp)}); pass --slice-axis.")
        slice_axis = int(order[0])
    elif slice_axis not in (0, 1, 2):
        raise _bad(volume, f"--slice-axis must be 0, 1 or 2, got {slice_axis}.")
    others = [a for a in range(3) if a != slice_axis]
    s = sp[slice_axis]
    target = min(sp[a] for a in others) if target_spacing is None else float(target_spacing)
    if not math.isfinite(target) or target <= 0:
        raise _bad(volume, f"--target-spacing must be a positive number of mm, got {target_spacing}.")
    if target > s * (1 + 1e-6):
        raise _bad(volume, f"--target-spacing {target:g} mm is larger than the slice spacing {s:.4g} mm (axis {slice_axis}); "
                           "expected a spacing below it.")
    if s / target < MIN_FACTOR:
        raise _bad(volume, f"nothing to do: the slice spacing {s:.4g} mm (axis {slice_axis}) already equals the target "
                           f"spacing {target:.4g} mm (spacing {tuple(round(v, 4) for v in sp)}); expected thick slices.")
    if s / target > MAX_FACTOR:
        raise _bad(volume, f"factor {s / target:.3g} (slice spacing {s:.4g} mm / target {target:.4g} mm) is above {MAX_FACTOR:g}; "
                           "expected at most 8 (choose a larger --target-spacing).")
    n_in = shape[slice_axis]
    n_out = max(n_in + 1, int(round(n_in * s / target)))
    header = header_slice_thickness(volume.path) if slice_thickness is None else None
    thickness, source = (float(slice_thickness), "given") if slice_thickness is not None else ((header, "header") if header else (s, "spacing"))
    if not math.isfinite(thickness) or thickness <= 0:
        raise _bad(volume, f"--slice-thickness must be a positive number of mm, got {slice_thickness}.")
    return ThroughPlanePlan(slice_axis, n_in, n_out, s, target, thickness, source, sp)


def bspline_matrix(n_in: int, n_out: int) -> np.ndarray:
    """``(n_out, n_in)`` matrix of the cubic B-spline interpolation from ``n_in`` to ``n_out`` grid-centred samples
    (:func:`~medgen_core.transforms.resolution_sim.interpolate_to_hr` applied to the identity, one axis)."""
    return interpolate_to_hr(torch.eye(n_in, dtype=torch.float32), (n_out / n_in,)).numpy().astype(np.float64).T


def _along(a: np.ndarray, m: np.ndarray, axis: int) -> np.ndarray:
    return np.moveaxis(np.tensordot(m, a, axes=([1], [axis])), 0, axis).astype(np.float32)


class ThroughPlaneSuperResolver:
    """Upscale a thick-slice :class:`~medgen_core.io.Volume` along its slice axis (see the module docstring).

    Args:
        refiner: residual 2D network on the target grid; None = a new :class:`SliceRefiner` (identity).
        slice_axis, target_spacing, slice_thickness: see :func:`plan_through_plane` (mm; None = automatic).
        adapt_seconds: per-scan adaptation budget (0 disables it); ``adapt_steps`` caps its Adam steps.
        gate: self-check, blend or fall back, and consistency projection.
        batch_size: planes per forward pass; ``gate_planes``: held-out slice planes of the self-check.
    """

    def __init__(self, refiner: nn.Module | None = None, slice_axis: int | None = None, target_spacing: float | None = None,
                 slice_thickness: float | None = None, adapt_seconds: float = DEFAULT_ADAPT_SECONDS, adapt_steps: int | None = DEFAULT_ADAPT_STEPS,
                 gate: bool = True, batch_size: int = 8, device: str | torch.device = "cpu", seed: int = 0,
                 progress: bool = True, clamp: bool = True, gate_planes: int = 12) -> None:
        if adapt_seconds is None or not math.isfinite(float(adapt_seconds)) or float(adapt_seconds) < 0:
            raise SuperResolutionError(f"--adapt-seconds must be a number >= 0 (0 disables adaptation), got {adapt_seconds}.")
        if refiner is None:
            from medgen_core.networks.slice_refiner import SliceRefiner

            refiner = SliceRefiner()
        self.refiner, self.slice_axis, self.target_spacing, self.slice_thickness = refiner, slice_axis, target_spacing, slice_thickness
        self.adapt_seconds, self.adapt_steps, self.gate = float(adapt_seconds), adapt_steps, bool(gate)
        self.batch_size, self.device, self.seed, self.progress, self.clamp = int(batch_size), torch.device(device), int(seed), progress, clamp
        self.gate_planes = int(gate_planes)
        self.last_plan: ThroughPlanePlan | None = None
        self.last_gate: GateReport | None = None

    # -- planes ----------------------------------------------------------------------------------
    def _training_planes(self, x: np.ndarray, y0: np.ndarray, plan: ThroughPlanePlan) -> list[np.ndarray]:
        """Sharp planes ``(N, H, W)`` with H a sharp axis resampled to the output spacing, W the other sharp axis
        (or the interpolated slice axis when there is none)."""
        k, sharp, out = plan.slice_axis, plan.sharp_axes, []
        for b in sharp:
            w = next((a for a in sharp if a != b), None)
            if w is not None:
                planes = np.transpose(x, (k, b, w))  # the slice planes themselves
            else:
                c = next(a for a in range(3) if a not in (k, b))
                planes = np.transpose(y0, (c, b, k))
            ratio = plan.spacing[b] / plan.spacing_out
            if abs(ratio - 1) > 0.01:
                planes = interpolate_to_hr(torch.from_numpy(np.ascontiguousarray(planes)), (ratio, 1.0)).numpy()
            out.append(np.ascontiguousarray(planes, dtype=np.float32))
        return out

    @staticmethod
    def _held_out(planes: np.ndarray, count: int) -> np.ndarray:
        ref = float(np.percentile(planes, 99.9)) if planes.size else 0.0
        filled = np.flatnonzero((planes > 0.1 * ref).mean(axis=(1, 2)) > 0.05)
        if filled.size < 4:
            return np.zeros(0, dtype=int)
        return filled[1::4][:count]

    @torch.no_grad()
    def _refine(self, net: nn.Module, planes: np.ndarray, desc: str | None = None) -> np.ndarray:
        out = np.empty_like(planes, dtype=np.float32)
        starts = range(0, planes.shape[0], self.batch_size)
        for start in progress(starts, desc=desc or "", unit="batch", disable=not self.progress or desc is None):
            x = torch.from_numpy(np.ascontiguousarray(planes[start : start + self.batch_size]))[:, None].to(self.device)
            out[start : start + x.shape[0]] = net(x)[:, 0].float().cpu().numpy()
        return out

    # -- gate ------------------------------------------------------------------------------------
    def _self_check(self, net: nn.Module, checks: list[PlanePairs], lo: float, hi: float, report: GateReport) -> None:
        """``alpha`` and the self-check PSNRs on held-out pairs (refiner vs B-spline, consistency along H)."""
        parts = []
        for pairs in checks:
            target, base, lr = pairs.targets[:, 0].numpy(), pairs.inputs[:, 0].numpy(), pairs.lr[:, 0].numpy()
            model = self._refine(net, base)
            proj = ConsistencyProjector({1: axis_matrix(target.shape[1], pairs.spec)})
            parts.append((target, base, model, lr, proj, foreground_mask(target)))
        num = den = 0.0
        for target, base, model, lr, proj, mask in parts:
            pb = proj.project(base, lr)
            e, r = (proj.project(model, lr) - pb)[mask].astype(np.float64), (target - pb)[mask].astype(np.float64)
            num, den = num + float(np.sum(r * e)), den + float(np.sum(e * e))
        report.decision, report.alpha = gate_decision(float(np.clip(num / den, 0, 1)) if den > 1e-20 else 0.0)
        gathered = {"model": [], "base": [], "gated": [], "target": []}
        for target, base, model, lr, proj, mask in parts:
            gated = proj.project_within(base + report.alpha * (model - base), lr, lo, hi)
            for key, arr in (("model", np.clip(model, lo, hi)), ("base", np.clip(base, lo, hi)), ("gated", gated), ("target", target)):
                gathered[key].append(arr[mask])
        t = np.concatenate(gathered["target"])
        every = np.ones_like(t, dtype=bool)
        report.psnr_model = masked_psnr_np(np.concatenate(gathered["model"]), t, every)
        report.psnr_baseline = masked_psnr_np(np.concatenate(gathered["base"]), t, every)
        report.psnr_gated = masked_psnr_np(np.concatenate(gathered["gated"]), t, every)
        report.self_check_planes = int(sum(len(p) for p in checks))

    # -- run -------------------------------------------------------------------------------------
    def __call__(self, volume: Volume) -> GeneratedVolume:
        plan = plan_through_plane(volume, self.slice_axis, self.target_spacing, self.slice_thickness)
        self.last_plan = plan
        k = plan.slice_axis
        array = np.asarray(volume.array, dtype=np.float32)
        lo, hi = float(array.min()), float(array.max())
        norm = float(np.percentile(array, 99.9))
        norm = norm if norm > 0 else max(hi, 1e-8)
        x = array / norm
        lo_n, hi_n = (lo / norm, hi / norm) if self.clamp else (-np.inf, np.inf)
        y0 = _along(x, bspline_matrix(plan.n_in, plan.n_out), k)  # the baseline on the output grid

        sources = self._training_planes(x, y0, plan)
        held = self._held_out(sources[0], self.gate_planes) if self.gate else np.zeros(0, dtype=int)
        train, checks = [], []
        for planes in sources:
            keep = np.setdiff1d(np.arange(planes.shape[0]), held)
            pairs = make_plane_pairs(planes, plan.factor, plan.thickness / plan.slice_spacing)
            train.append(pairs.subset(keep))
            if held.size:
                checks.append(pairs.subset(held))
        # with one sharp axis the training planes' other axis is the blurred slice axis, unlike the planes the refiner is
        # applied to (measured on dipy's T2w made thick along axis 0: -0.2 dB against no adaptation); keep the start weights
        one_sharp = len(plan.sharp_axes) < 2
        net, adaptation = adapt_refiner(self.refiner, train, 0.0 if one_sharp else self.adapt_seconds, self.adapt_steps, seed=self.seed,
                                        show_progress=self.progress, device=self.device)
        if one_sharp and self.adapt_seconds > 0:
            adaptation.note = (f"no adaptation: only axis {plan.sharp_axes[0]} is sharp, so the slice planes cannot give pairs like the "
                               "through-plane planes; the refiner's start weights are used")
            logger.info(adaptation.note)

        spec = plan.profile()
        report = GateReport(self.gate, "model", 1.0, "cubic B-spline", spec.to_dict(), degradation_choice="slice profile "
                            f"(box of the {plan.thickness_source} thickness {plan.thickness:.4g} mm at {plan.slice_spacing:.4g} mm)")
        if not self.gate:
            pass
        elif checks:
            self._self_check(net, checks, lo_n, hi_n, report)
            if report.decision == "interpolation" and self.adapt_seconds <= 0:
                report.note = "no adaptation (--adapt-seconds 0)"
        else:
            report.note = "too few slice planes with foreground for a held-out self-check; refiner kept"

        fused = np.zeros_like(y0) if report.alpha > 0 else None
        if fused is not None:
            sharp = plan.sharp_axes
            for a in sharp:
                c = next(ax for ax in range(3) if ax not in (k, a))
                planes = np.ascontiguousarray(np.transpose(y0, (c, k, a)))
                refined = self._refine(net, planes, f"through-plane x{plan.factor:.3g} (planes along axis {a})")
                fused += np.transpose(refined, np.argsort((c, k, a))) / len(sharp)
            y = y0 + report.alpha * (fused - y0)
        else:
            y = y0
        y = np.clip(y, lo_n, hi_n)
        if self.gate:
            y = self._project(y, x, plan, lo_n, hi_n, report)
        self.last_gate = report
        logger.info(report.summary_line())
        factors = [1.0, 1.0, 1.0]
        factors[k] = plan.factor
        params = {"through_plane": plan.to_dict(), "adaptation": adaptation.to_dict(), "gate": report.to_dict(), "factors": factors,
                  "network": f"{type(self.refiner).__module__}.{type(self.refiner).__name__} on the B-spline grid, adapted to this scan from its start weights "
                             "(the in-plane variant's network is not used)"}
        return GeneratedVolume(array=(y * norm).astype(np.float32), affine=upscaled_affine(volume.affine, factors), path=None,
                               format=volume.format, generation_parameters=params)

    def _project(self, y: np.ndarray, x: np.ndarray, plan: ThroughPlanePlan, lo: float, hi: float, report: GateReport) -> np.ndarray:
        """Consistency with the input along the slice axis, slab by slab along another axis; residuals into ``report``."""
        k = plan.slice_axis
        proj = ConsistencyProjector({0: axis_matrix(plan.n_out, plan.profile(0))})
        ym, xm = np.moveaxis(y, k, 0), np.moveaxis(x, k, 0)
        out = np.empty_like(ym)
        sq_x = sq_before = sq_after = 0.0
        for start in range(0, ym.shape[1], 16):
            ys, xs = ym[:, start : start + 16], xm[:, start : start + 16]
            sq_before += float(np.sum((xs.astype(np.float64) - proj.degrade(ys)) ** 2))
            ys = proj.project_within(ys, xs, lo, hi, iterations=50)
            sq_after += float(np.sum((xs.astype(np.float64) - proj.degrade(ys)) ** 2))
            sq_x += float(np.sum(xs.astype(np.float64) ** 2))
            out[:, start : start + 16] = ys
        report.consistency_before = float(np.sqrt(sq_before / max(sq_x, 1e-20)))
        report.consistency_after = float(np.sqrt(sq_after / max(sq_x, 1e-20)))
        if report.consistency_after > FEASIBLE_RATIO * report.consistency_before:  # the slice profile does not fit this input
            report.projection, report.consistency_after = INFEASIBLE, report.consistency_before
            return y
        return np.moveaxis(out, 0, k)
