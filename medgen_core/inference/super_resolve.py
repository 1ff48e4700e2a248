"""Whole-volume super-resolution with a 2D network applied slice by slice, behind the never-worse gate.

Intensities are normalised per volume (divided by the 99.9th percentile, as in training) and mapped
back afterwards, so outputs keep the input's units. Each batch of slices goes through MONAI's
:class:`~monai.inferers.SlidingWindowInferer` (which handles outputs larger than inputs), so slices of
any size fit in memory. With ``gate=True`` (the default) the in-plane pass is checked on the input first
and the output is made consistent with it (:mod:`medgen_core.inference.sr_gate`), batch by batch, so
memory stays bounded. :func:`super_resolver` builds the in-plane or the through-plane upscaler
(:mod:`medgen_core.inference.through_plane`) from one set of bundle settings.
"""

from __future__ import annotations

import logging
from typing import Iterator, Literal

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.inferers import SlidingWindowInferer

from medgen_core.inference.generated import GeneratedVolume
from medgen_core.inference.geometry import upscaled_affine
from medgen_core.inference.sr_gate import (
    ESTIMATE_MARGIN,
    INFEASIBLE,
    INPLANE_GATE_KINDS,
    ConsistencyProjector,
    GateReport,
    choose_alpha,
    foreground_mask,
    gate_decision,
    inplane_gate_degradation,
    masked_psnr_np,
    projection_feasible,
)
from medgen_core.io import Volume
from medgen_core.transforms.resolution_sim import AxisDegradation
from medgen_core.utils.progress import progress

__all__ = ["VolumeSuperResolver", "bicubic_upscale_volume", "pick_slice_axis", "super_resolver"]

logger = logging.getLogger(__name__)

#: Low-resolution pixels per forward pass at most (8 MNI-sized axial slices; 2 slices of 512 x 512).
PIXELS_PER_BATCH = 1 << 19


def pick_slice_axis(spacing: tuple[float, float, float]) -> int:
    """The through-plane axis: the odd one out when two spacings are equal (``(2, 2, 1)`` -> 2,
    ``(1, 3, 1)`` -> 1), the last axis when all are equal, else the one with the largest spacing."""
    sp = np.asarray(spacing, dtype=np.float64)
    same = [bool(np.isclose(sp[a], sp[b], rtol=1e-3)) for a, b in ((1, 2), (0, 2), (0, 1))]  # pair without axis i
    if all(same):
        return 2
    if sum(same) == 1:
        return int(same.index(True))
    return int(np.argmax(sp))


def _plane_axes(slice_axis: int) -> tuple[int, int]:
    a, b = (ax for ax in range(3) if ax != slice_axis)
    return a, b


def _bicubic_stack(stack: np.ndarray, scale: int) -> np.ndarray:
    """Bicubic upscaling of ``(N, h, w)`` planes (the in-plane baseline, ``align_corners=False``)."""
    x = torch.from_numpy(np.ascontiguousarray(stack, dtype=np.float32))[:, None]
    return F.interpolate(x, scale_factor=float(scale), mode="bicubic", align_corners=False)[:, 0].numpy()


def bicubic_upscale_volume(volume: Volume, scale: int, slice_axis: int | None = None) -> Volume:
    """Bicubic in-plane upscaling (the baseline), with the same geometry as :class:`VolumeSuperResolver`."""
    slice_axis = pick_slice_axis(volume.spacing) if slice_axis is None else slice_axis
    up = _bicubic_stack(np.moveaxis(volume.array, slice_axis, 0), scale)
    factors = [float(scale)] * 3
    factors[slice_axis] = 1.0
    return Volume(array=np.moveaxis(up, 0, slice_axis), affine=upscaled_affine(volume.affine, factors), path=None, format=volume.format)


def _check_planes(stack: np.ndarray, count: int) -> np.ndarray:
    """Indices of up to ``count`` evenly spaced planes of ``stack`` ``(N, h, w)`` that hold foreground."""
    ref = float(np.percentile(stack, 99.9)) if stack.size else 0.0
    filled = np.flatnonzero((stack > 0.1 * ref).mean(axis=(1, 2)) > 0.05)
    if filled.size == 0:
        filled = np.arange(stack.shape[0])
    take = np.linspace(0, filled.size - 1, num=min(count, filled.size)).round().astype(int)
    return np.unique(filled[take])


class VolumeSuperResolver:
    """Upscale a 3D :class:`~medgen_core.io.Volume` with a 2D super-resolution network.

    Args:
        network: 2D network mapping ``(B, 1, h, w)`` to ``(B, 1, scale*h, scale*w)``.
        scale: the network's upscaling factor.
        axes: ``"inplane"`` upscales the two axes orthogonal to ``slice_axis``; ``"all"`` then also
            upscales the through-plane axis by running the network on orthogonal planes and
            block-averaging the doubly upscaled in-plane axis back (the gate covers the in-plane pass).
        slice_axis: through-plane axis; None picks the axis with the largest spacing.
        batch_size: slices per forward pass.
        roi_size: sliding-window tile size (low-resolution voxels) for large slices.
        device: torch device.
        progress: show a tqdm progress bar.
        clamp: clip outputs to the input's intensity range (no new extremes).
        gate: run the never-worse gate (self-check, blend or fall back, consistency projection).
        gate_degradation: the variant's degradation, the model ``D`` of the self-check and of the consistency
            projection: ``gaussian``, ``block`` or ``kspace``; anything else (``mixed``, synthetic) estimates it
            from the input (see :mod:`~medgen_core.inference.sr_gate`).
        gate_planes: slices used by the self-check.
    """

    def __init__(
        self,
        network: nn.Module,
        scale: int,
        axes: Literal["inplane", "all"] = "inplane",
        slice_axis: int | None = None,
        batch_size: int = 8,
        roi_size: int = 512,
        device: str | torch.device = "cpu",
        progress: bool = True,
        clamp: bool = True,
        gate: bool = True,
        gate_degradation: str | None = "mixed",
        gate_planes: int = 16,
    ) -> None:
        if axes not in ("inplane", "all"):
            raise ValueError(f"VolumeSuperResolver: axes must be 'inplane' or 'all', got {axes!r}.")
        if slice_axis is not None and slice_axis not in (0, 1, 2):
            raise ValueError(f"VolumeSuperResolver: slice_axis must be 0, 1, 2 or None, got {slice_axis}.")
        self.network = network.to(device).eval()
        self.scale, self.axes, self.slice_axis = int(scale), axes, slice_axis
        self.batch_size, self.device, self.progress, self.clamp = batch_size, torch.device(device), progress, clamp
        self.gate, self.gate_degradation, self.gate_planes = bool(gate), gate_degradation, int(gate_planes)
        self.inferer = SlidingWindowInferer(roi_size=(roi_size, roi_size), sw_batch_size=batch_size, overlap=0.25, mode="gaussian")
        self.last_gate: GateReport | None = None

    def planes_per_batch(self, plane_shape: tuple[int, ...]) -> int:
        """Planes per forward pass: ``batch_size``, fewer for large planes so that a batch holds at most
        :data:`PIXELS_PER_BATCH` low-resolution pixels (the network's activations are ``~num_feat`` times that)."""
        return max(1, min(self.batch_size, PIXELS_PER_BATCH // max(1, int(np.prod(plane_shape)))))

    @torch.no_grad()
    def _network_batches(self, stack: np.ndarray, desc: str | None) -> Iterator[tuple[int, np.ndarray]]:
        """``(start, upscaled batch)`` for the planes ``(N, h, w)`` of ``stack`` (normalised intensities)."""
        batch = self.planes_per_batch(stack.shape[1:])
        starts = range(0, stack.shape[0], batch)
        for start in progress(starts, desc=desc or "", unit="batch", disable=not self.progress or desc is None):
            x = torch.from_numpy(np.ascontiguousarray(stack[start : start + batch]))[:, None].to(self.device)
            y = self.network(x) if max(x.shape[-2:]) <= self.inferer.roi_size[0] else self.inferer(x, self.network)
            yield start, y[:, 0].float().cpu().numpy()

    def _upscale_stack(self, stack: np.ndarray, desc: str | None = None) -> np.ndarray:
        return np.concatenate([y for _, y in self._network_batches(stack, desc)], axis=0)

    def _upscale_planes(self, array: np.ndarray, slice_axis: int, desc: str) -> np.ndarray:
        """Upscale every plane orthogonal to ``slice_axis`` of ``array`` (normalised intensities), no gate."""
        return np.moveaxis(self._upscale_stack(np.moveaxis(array, slice_axis, 0), desc), 0, slice_axis)

    def _gate_kinds(self, planes: np.ndarray, lo: float, hi: float) -> tuple[list[str], str, dict | None, bool]:
        """The candidate in-plane degradation models: the variant's own, or (mixed / unknown) the feasible kinds
        (:func:`~.sr_gate.projection_feasible`) whose consistency residual ``||x - D m(x)|| / ||x||`` on ``planes`` is
        within :data:`~.sr_gate.ESTIMATE_MARGIN` of the least one, least first. The relative residual
        ``||x - D m(x)|| / ||x - D b(x)||`` (``b`` bicubic) is recorded too, not used (see :mod:`~.sr_gate`). Returns
        ``(candidates, how they were chosen, {"model": residuals, "relative": relative residuals}, feasible)``; when
        no kind is feasible the projection is skipped."""
        y = self._upscale_stack(planes)
        y = np.clip(y, lo, hi) if self.clamp else y
        projectors = {k: ConsistencyProjector.from_specs(y.shape, {1: inplane_gate_degradation(k, self.scale),
                                                                   2: inplane_gate_degradation(k, self.scale)}) for k in INPLANE_GATE_KINDS}
        if self.gate_degradation in INPLANE_GATE_KINDS:
            kind = str(self.gate_degradation)
            return [kind], "variant", None, projection_feasible(projectors[kind], y, planes, lo, hi, self.clamp)
        base = _bicubic_stack(planes, self.scale)
        base = np.clip(base, lo, hi) if self.clamp else base
        model = {k: p.residual(y, planes) for k, p in projectors.items()}
        relative = {k: model[k] / max(projectors[k].residual(base, planes), 1e-12) for k in projectors}
        residuals = {"model": model, "relative": relative}
        order = sorted(model, key=model.get)
        how = f"estimated for the {self.gate_degradation or 'unknown'} variant (least residual"
        feasible = [k for k in order if projection_feasible(projectors[k], y, planes, lo, hi, self.clamp)]
        if not feasible:
            return [order[0]], how + "; none feasible)", residuals, False
        infeasible = [k for k in order[: order.index(feasible[0])]]
        how += (")" if not infeasible else f" among the feasible; {', '.join(infeasible)} infeasible)")
        close = [k for k in feasible if model[k] * ESTIMATE_MARGIN <= model[feasible[0]]]
        return close, how, residuals, True

    def _check_kind(self, hr: np.ndarray, kind: str, lo: float, hi: float) -> dict:
        """Self-check of one degradation model on the planes ``hr`` ``(N, h, w)``: degrade, upscale by the model and
        by bicubic, blend weight and PSNRs (model, baseline, gated) in the foreground."""
        spec = inplane_gate_degradation(kind, self.scale)
        check = ConsistencyProjector.from_specs(hr.shape, {1: spec, 2: spec})
        lr = check.degrade(hr).astype(np.float32)
        model, base = self._upscale_stack(lr), _bicubic_stack(lr, self.scale)
        mask = foreground_mask(hr)
        decision, alpha = gate_decision(choose_alpha(hr, base, model, mask, project=lambda y: check.project(y, lr)))
        gated = base + alpha * (model - base)
        gated = check.project_within(gated, lr, lo, hi) if self.clamp else check.project(gated, lr)
        return {"spec": spec, "decision": decision, "alpha": alpha,
                "psnr_model": masked_psnr_np(np.clip(model, lo, hi) if self.clamp else model, hr, mask),
                "psnr_baseline": masked_psnr_np(np.clip(base, lo, hi) if self.clamp else base, hr, mask),
                "psnr_gated": masked_psnr_np(gated, hr, mask)}

    def self_check(self, stack: np.ndarray, lo: float, hi: float) -> GateReport:
        """The gate's self-check on planes of ``stack`` ``(N, h, w)`` (normalised): pick the degradation model,
        degrade, upscale, compare with the input, choose ``alpha``. When several estimated models are about as
        consistent (within :data:`~.sr_gate.ESTIMATE_MARGIN`), the one with the best gated self-check is used."""
        s = self.scale
        idx = _check_planes(stack, self.gate_planes)
        kinds, how, residuals, feasible = self._gate_kinds(stack[idx], lo, hi)
        h, w = stack.shape[1] - stack.shape[1] % s, stack.shape[2] - stack.shape[2] % s
        report = GateReport(True, "model", 1.0, "bicubic", inplane_gate_degradation(kinds[0], s).to_dict(), degradation_choice=how,
                            operator_residuals=residuals, self_check_planes=int(idx.size),
                            projection="applied" if feasible else INFEASIBLE)
        if h < 2 * s or w < 2 * s:
            report.note = f"planes too small for a x{s} self-check ({stack.shape[1]} x {stack.shape[2]}); model kept, consistency projected"
            return report
        hr = stack[idx, :h, :w].astype(np.float32)
        checks = {k: self._check_kind(hr, k, lo, hi) for k in kinds}
        kind = max(kinds, key=lambda k: checks[k]["psnr_gated"])
        if len(kinds) > 1:
            report.degradation_choice = how[:-1] + (f"; {', '.join(kinds)} within {1 / ESTIMATE_MARGIN - 1:.0%} of the least residual, "
                                                    f"{kind} has the best self-check: " + ", ".join(
                                                        f"{k} {checks[k]['psnr_gated']:.2f} dB" for k in kinds) + ")")
        c = checks[kind]
        report.degradation = c["spec"].to_dict()
        report.decision, report.alpha = c["decision"], c["alpha"]
        report.psnr_model, report.psnr_baseline, report.psnr_gated = c["psnr_model"], c["psnr_baseline"], c["psnr_gated"]
        return report

    def _gated_inplane(self, x: np.ndarray, slice_axis: int, lo: float, hi: float) -> np.ndarray:
        """In-plane pass over the normalised ``x``: gate (when on), blend, consistency, clamp; batch by batch."""
        s, desc = self.scale, f"upscale x{self.scale} in-plane"
        stack = np.moveaxis(x, slice_axis, 0)
        if not self.gate:
            self.last_gate = GateReport(False, "model", 1.0, "bicubic", {})
            y = self._upscale_stack(stack, desc)
            return np.moveaxis(np.clip(y, lo, hi) if self.clamp else y, 0, slice_axis)
        report = self.self_check(stack, lo, hi)
        batch = self.planes_per_batch(stack.shape[1:])
        spec = AxisDegradation(**{k: v for k, v in report.degradation.items() if k != "operator"})
        out = np.empty((stack.shape[0], stack.shape[1] * s, stack.shape[2] * s), dtype=np.float32)
        project = ConsistencyProjector.from_specs((1, *out.shape[1:]), {1: spec, 2: spec})
        sq_x = sq_before = sq_after = 0.0
        if report.alpha > 0:
            batches = self._network_batches(stack, desc)
        else:  # interpolation only: the network is not run on the volume
            batches = ((i, None) for i in progress(range(0, stack.shape[0], batch), desc=f"{desc} (interpolation)",
                                                   unit="batch", disable=not self.progress))
        for start, model in batches:
            xs = stack[start : start + batch]
            y = _bicubic_stack(xs, s)
            if model is not None:
                y = y + report.alpha * (model - y)
            y = np.clip(y, lo, hi) if self.clamp else y
            before = float(np.sum((xs.astype(np.float64) - project.degrade(y)) ** 2))
            sq_before += before
            if report.projection == "applied":
                y = project.project_within(y, xs, lo, hi) if self.clamp else project.project(y, xs)
                sq_after += float(np.sum((xs.astype(np.float64) - project.degrade(y)) ** 2))
            else:
                sq_after += before
            sq_x += float(np.sum(xs.astype(np.float64) ** 2))
            out[start : start + len(xs)] = y
        report.consistency_before = float(np.sqrt(sq_before / max(sq_x, 1e-20)))
        report.consistency_after = float(np.sqrt(sq_after / max(sq_x, 1e-20)))
        self.last_gate = report
        logger.info(report.summary_line())
        return np.moveaxis(out, 0, slice_axis)

    def upscale_array(self, array: np.ndarray, slice_axis: int) -> tuple[np.ndarray, tuple[float, float, float]]:
        """Upscale ``array`` ``(X, Y, Z)``; returns the result and the per-axis factors (gate report in :attr:`last_gate`)."""
        array = np.asarray(array, dtype=np.float32)
        lo, hi = float(array.min()), float(array.max())
        norm = float(np.percentile(array, 99.9))
        norm = norm if norm > 0 else max(hi, 1e-8)
        x = array / norm
        y = self._gated_inplane(x, slice_axis, lo / norm, hi / norm)
        factors = [float(self.scale)] * 3
        factors[slice_axis] = 1.0
        if self.axes == "all":
            # through-plane: planes that contain the slice axis; the second in-plane axis is upscaled
            # twice by this pass, so block-average it back (the degradation model of a thick voxel)
            other = _plane_axes(slice_axis)[0]
            y = self._upscale_planes(y, other, f"upscale x{self.scale} through-plane")
            keep = _plane_axes(slice_axis)[1]
            shape = list(y.shape)
            shape[keep : keep + 1] = [shape[keep] // self.scale, self.scale]
            y = y.reshape(shape).mean(axis=keep + 1)
            factors[slice_axis] = float(self.scale)
        y = np.asarray(y, dtype=np.float32)
        y *= norm  # in place: the output is the largest array here
        if self.clamp:
            np.clip(y, lo, hi, out=y)
        return y, tuple(factors)

    def __call__(self, volume: Volume) -> GeneratedVolume:
        """Upscaled copy of ``volume``; the output covers the same physical box (see :mod:`.geometry`) and carries
        the gate's report in ``generation_parameters["gate"]``."""
        slice_axis = pick_slice_axis(volume.spacing) if self.slice_axis is None else self.slice_axis
        array, factors = self.upscale_array(volume.array, slice_axis)
        params = {"gate": self.last_gate.to_dict() if self.last_gate else None, "factors": list(factors)}
        if self.axes == "all" and self.gate:
            params["gate"]["note"] = (params["gate"].get("note") or "") + "gate covers the in-plane pass; the through-plane pass is not gated"
        return GeneratedVolume(array=array, affine=upscaled_affine(volume.affine, factors), path=None, format=volume.format,
                               generation_parameters=params)


def super_resolver(
    network: nn.Module,
    scale: int,
    axes: str = "inplane",
    slice_axis: int | None = None,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    gate: bool = True,
    gate_degradation: str | None = "mixed",
    target_spacing: float | None = None,
    slice_thickness: float | None = None,
    adapt_seconds: float = 45.0,
    adapt_steps: int | None = 1500,
    refiner: nn.Module | None = None,
    seed: int = 0,
    progress: bool = True,
):
    """The upscaler for ``axes``: :class:`VolumeSuperResolver` (``inplane``, ``all``) or
    :class:`~medgen_core.inference.through_plane.ThroughPlaneSuperResolver` (``through``: ``refiner`` is the
    per-scan adapted network, ``network``/``scale`` are not used)."""
    if axes == "through":
        from medgen_core.inference.through_plane import ThroughPlaneSuperResolver

        return ThroughPlaneSuperResolver(refiner=refiner, slice_axis=slice_axis, target_spacing=target_spacing,
                                         slice_thickness=slice_thickness, adapt_seconds=adapt_seconds, adapt_steps=adapt_steps,
                                         gate=gate, batch_size=batch_size, device=device, seed=seed, progress=progress)
    return VolumeSuperResolver(network, scale, axes=axes, slice_axis=slice_axis, batch_size=batch_size, device=device,
                               gate=gate, gate_degradation=gate_degradation, progress=progress)
