"""The never-worse gate of ``medgen upscale`` (medgen_core.inference.sr_gate and the in-plane resolver).

Real volumes (a crop of the MNI T1 that nilearn ships, degraded with the project's own operators), the
shipped bundle network loaded through the bundle's own config, and real files through the bundle's
transform chain and the CLI.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from medgen_core.cli.main import main
from medgen_core.data.samples import load_mni152_t1
from medgen_core.inference import VolumeSuperResolver
from medgen_core.inference.sr_gate import ConsistencyProjector, GateReport, choose_alpha, gate_decision, inplane_gate_degradation
from medgen_core.io import read_volume
from medgen_core.provenance import sidecar_path, verify_provenance
from medgen_core.transforms.resolution_sim import AxisDegradation
from medgen_core.transforms.volume_io import ApplyVolumeInfererd, LoadVolumed, SaveGeneratedVolumed

BUNDLE = Path(__file__).resolve().parents[1] / "monai_bundles" / "brain_mri_super_resolution"


@pytest.fixture(scope="module")
def mni_crop() -> np.ndarray:
    """A 96 x 112 x 6 crop of the MNI T1 (held-out axial slab), normalised to its 99.9th percentile."""
    t1 = load_mni152_t1().array[50:146, 60:172, 86:92]
    return (t1 / np.percentile(t1, 99.9)).astype(np.float32)


@pytest.fixture(scope="module")
def bundle_network() -> nn.Module:
    """The bundle's default x2 network, built and weight-checked by the bundle's own inference config."""
    from monai.bundle import ConfigParser

    meta = json.loads((BUNDLE / "configs" / "metadata.json").read_text(encoding="utf-8"))
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "inference.json"))
    parser.read_meta(str(BUNDLE / "configs" / "metadata.json"))
    parser.update({"bundle_root": str(BUNDLE), "variant": meta["medgen"]["default_variant"]["2"], "device": torch.device("cpu")})
    return parser.get_parsed_content("network").eval()


def _degrade(hr: np.ndarray, kind: str, scale: int = 2) -> np.ndarray:
    """In-plane degradation (axes 0, 1) of ``hr`` with the gate's operator for ``kind``."""
    specs = {0: inplane_gate_degradation(kind, scale), 1: inplane_gate_degradation(kind, scale)}
    return ConsistencyProjector.from_specs(hr.shape, specs).degrade(hr).astype(np.float32)


def _psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((a[mask] - b[mask]) ** 2)))


class BicubicNetwork(nn.Module):
    """Plain bicubic x2 (a network that adds nothing)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2.0, mode="bicubic", align_corners=False)


class BrokenNetwork(nn.Module):
    """Bicubic plus a fixed checkerboard of +-0.3: a deliberately broken x2 network that always loses."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(x, scale_factor=2.0, mode="bicubic", align_corners=False)
        i = torch.arange(up.shape[-2])[:, None] + torch.arange(up.shape[-1])[None, :]
        return up + 0.3 * (2 * (i % 2) - 1).to(up)


@pytest.mark.parametrize("spec", [
    AxisDegradation(0, 2.0, "gaussian", 1.0),
    AxisDegradation(0, 2.0, "block", 2.0),
    AxisDegradation(0, 2.0, "kspace"),
    AxisDegradation(0, 4.0, "gaussian", 2.0),
    AxisDegradation(0, 2.5, "block", 2.5),  # non-integer factor
    AxisDegradation(0, 5.0, "slice_box", 3.0, 0.6),  # slice profile with gaps
], ids=["gauss2", "block2", "kspace2", "gauss4", "box2.5", "gap5"])
def test_consistency_projection_makes_the_output_reproduce_the_input(spec: AxisDegradation) -> None:
    rng = np.random.default_rng(0)
    y = rng.random((40, 30, 3)).astype(np.float32)
    x = rng.random((int(40 / spec.factor), 30, 3)).astype(np.float32)
    proj = ConsistencyProjector.from_specs(y.shape, {0: spec})
    before = proj.residual(y, x)
    out = proj.project(y, x)
    assert before > 0.1
    assert proj.residual(out, x) < 1e-6
    np.testing.assert_allclose(proj.degrade(out), x, atol=1e-5)
    # the least change that does it: the correction is orthogonal to everything D cannot see
    other = proj.project(rng.random(y.shape), np.zeros_like(x))  # a direction in the null space of D
    assert abs(float(np.sum((out - y) * other))) < 1e-3 * float(np.linalg.norm(out - y) * np.linalg.norm(other))


def test_projection_within_range_keeps_both_the_range_and_the_consistency(mni_crop: np.ndarray) -> None:
    spec = inplane_gate_degradation("block", 2)
    lr = _degrade(mni_crop, "block")
    up = np.repeat(np.repeat(lr, 2, 0), 2, 1) + 0.2 * np.random.default_rng(1).standard_normal(mni_crop.shape).astype(np.float32)
    proj = ConsistencyProjector.from_specs(up.shape, {0: spec, 1: spec})
    out = proj.project_within(up, lr, float(lr.min()), float(lr.max()), iterations=100)
    assert out.min() >= lr.min() and out.max() <= lr.max()
    before = proj.residual(np.clip(up, lr.min(), lr.max()), lr)
    assert before > 0.05 and proj.residual(out, lr) < 1e-4  # alternating projections converge to a consistent image in range
    assert proj.residual(proj.project_within(up, lr, float(lr.min()), float(lr.max())), lr) < 0.02 * before  # the default 10 rounds


def test_choose_alpha_recovers_the_best_blend_and_the_decision_thresholds() -> None:
    rng = np.random.default_rng(2)
    base, model = rng.random((20, 20)), rng.random((20, 20))
    mask = np.ones((20, 20), dtype=bool)
    assert choose_alpha(base + 0.4 * (model - base), base, model, mask) == pytest.approx(0.4, abs=1e-9)
    assert choose_alpha(base - 0.4 * (model - base), base, model, mask) == 0.0  # clipped to [0, 1]
    assert choose_alpha(base + 1.7 * (model - base), base, model, mask) == 1.0
    assert choose_alpha(base, base, base, mask) == 0.0  # no correction to weigh
    assert gate_decision(0.97) == ("model", 1.0)
    assert gate_decision(0.03) == ("interpolation", 0.0)
    assert gate_decision(0.5) == ("blend", 0.5)


def test_gate_falls_back_to_interpolation_when_the_network_loses(mni_crop: np.ndarray) -> None:
    lr = _degrade(mni_crop, "gaussian")
    gated = VolumeSuperResolver(BrokenNetwork(), 2, slice_axis=2, progress=False, gate_degradation="gaussian")
    y, _ = gated.upscale_array(lr, 2)
    report = gated.last_gate
    assert report.decision == "interpolation" and report.alpha == 0.0
    assert report.psnr_model < report.psnr_baseline - 5  # the self-check saw the network lose
    ungated, _ = VolumeSuperResolver(BrokenNetwork(), 2, slice_axis=2, progress=False, gate=False).upscale_array(lr, 2)
    bicubic = np.clip(F.interpolate(torch.from_numpy(lr).permute(2, 0, 1)[:, None], scale_factor=2.0, mode="bicubic")[:, 0]
                      .permute(1, 2, 0).numpy(), lr.min(), lr.max())
    mask = mni_crop > 0.1
    assert _psnr(ungated, mni_crop, mask) < _psnr(bicubic, mni_crop, mask) - 5
    assert _psnr(y, mni_crop, mask) >= _psnr(bicubic, mni_crop, mask)  # never worse than the interpolation baseline
    assert report.consistency_after < 1e-3 < report.consistency_before


def test_gate_keeps_the_shipped_model_where_it_wins(mni_crop: np.ndarray, bundle_network: nn.Module) -> None:
    lr = _degrade(mni_crop, "gaussian")
    gated = VolumeSuperResolver(bundle_network, 2, slice_axis=2, progress=False, gate_degradation="gaussian")
    y, _ = gated.upscale_array(lr, 2)
    report = gated.last_gate
    assert report.decision in ("model", "blend") and report.alpha > 0.5
    assert report.psnr_gated > report.psnr_model > report.psnr_baseline
    bicubic = np.clip(F.interpolate(torch.from_numpy(lr).permute(2, 0, 1)[:, None], scale_factor=2.0, mode="bicubic")[:, 0]
                      .permute(1, 2, 0).numpy(), lr.min(), lr.max())
    mask = mni_crop > 0.1
    assert _psnr(y, mni_crop, mask) > _psnr(bicubic, mni_crop, mask) + 2
    assert report.consistency_after < 1e-3


def test_gate_estimates_the_degradation_model_of_a_mixed_variant(mni_crop: np.ndarray, bundle_network: nn.Module) -> None:
    """Projecting a block-averaged input on the Gaussian model would cost several dB: a mixed variant must pick block."""
    lr = _degrade(mni_crop, "block")
    gated = VolumeSuperResolver(bundle_network, 2, slice_axis=2, progress=False, gate_degradation="mixed")
    y, _ = gated.upscale_array(lr, 2)
    report = gated.last_gate
    assert report.degradation["kind"] == "block" and report.degradation_choice.startswith("estimated")
    model = report.operator_residuals["model"]
    assert model["block"] == min(model.values()) and set(report.operator_residuals["relative"]) == set(model)
    wrong, _ = VolumeSuperResolver(bundle_network, 2, slice_axis=2, progress=False, gate_degradation="gaussian").upscale_array(lr, 2)
    mask = mni_crop > 0.1
    assert _psnr(y, mni_crop, mask) > _psnr(wrong, mni_crop, mask) + 2


def _write(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(np.asarray(data, dtype=np.float32), affine), str(path))
    return path


def test_provenance_records_a_fallback_through_the_bundle_chain(tmp_path, mni_crop: np.ndarray) -> None:
    """The fallback decision and its figures reach the signed record (bundle transform chain, real files)."""
    src = _write(tmp_path / "lr.nii.gz", _degrade(mni_crop, "gaussian") * 800, np.diag([2.0, 2.0, 1.0, 1.0]))
    out = tmp_path / "sr.nii.gz"
    chain = [LoadVolumed("image"),
             ApplyVolumeInfererd("image", VolumeSuperResolver(BrokenNetwork(), 2, slice_axis=2, progress=False, gate_degradation="gaussian")),
             SaveGeneratedVolumed("pred", "test_sr", "0.0", "super_resolution", parameters={"variant": "broken"})]
    d = {"image": str(src), "output": str(out)}
    for t in chain:
        d = t(d)
    record = json.loads(sidecar_path(out).read_text(encoding="utf-8"))["record"]
    gate = record["parameters"]["gate"]
    assert record["parameters"]["variant"] == "broken"
    assert gate["decision"] == "interpolation" and gate["alpha"] == 0.0 and gate["enabled"] is True
    assert gate["psnr_model"] < gate["psnr_baseline"] and gate["consistency_after"] < 1e-3
    assert "fell back to bicubic" in GateReport(**gate).summary_line()
    assert verify_provenance(out).status == "intact"


def test_cli_prints_and_records_the_gate_and_no_gate_turns_it_off(tmp_path, capsys, mni_crop: np.ndarray) -> None:
    lr = _degrade(mni_crop[:48, :56], "block") * 600
    src = _write(tmp_path / "in.nii.gz", lr, np.diag([1.8, 1.8, 3.0, 1.0]))
    assert main(["upscale", str(src), str(tmp_path / "gated.nii.gz")]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("gate:")]
    assert len(lines) == 1
    record = json.loads(sidecar_path(tmp_path / "gated.nii.gz").read_text(encoding="utf-8"))["record"]
    gate = record["parameters"]["gate"]
    assert gate["enabled"] and gate["decision"] in ("model", "blend", "interpolation")
    assert {"psnr_model", "psnr_baseline", "psnr_gated", "alpha", "consistency_before", "consistency_after"} <= set(gate)
    assert GateReport(**gate).summary_line() == lines[0]
    out = read_volume(tmp_path / "gated.nii.gz").array
    spec = AxisDegradation(0, 2.0, gate["degradation"]["kind"], gate["degradation"]["width"])
    proj = ConsistencyProjector.from_specs(out.shape, {0: spec, 1: AxisDegradation(1, **{k: v for k, v in gate["degradation"].items()
                                                                                        if k not in ("axis", "operator")})})
    assert gate["consistency_after"] < 1e-4 < 1e-3 < gate["consistency_before"]
    # the file: degraded again it is the input, up to the invisible watermark added on writing (PSNR ~50 dB)
    assert proj.residual(out, read_volume(src).array) < 5e-3

    assert main(["upscale", str(src), str(tmp_path / "raw.nii.gz"), "--no-gate"]) == 0
    assert "gate: off" in capsys.readouterr().out
    raw = json.loads(sidecar_path(tmp_path / "raw.nii.gz").read_text(encoding="utf-8"))["record"]["parameters"]["gate"]
    assert raw["enabled"] is False and raw["consistency_after"] is None
    assert proj.residual(read_volume(tmp_path / "raw.nii.gz").array, read_volume(src).array) > 3 * proj.residual(out, read_volume(src).array)


def test_projection_is_skipped_when_the_input_does_not_fit_the_degradation_model() -> None:
    """Uniform noise cannot be a Gaussian-blurred image of anything in its own range: forcing it would add artefacts."""
    noise = np.random.default_rng(5).random((32, 36, 4)).astype(np.float32)
    gated = VolumeSuperResolver(BicubicNetwork(), 2, slice_axis=2, progress=False, gate_degradation="gaussian")
    y, _ = gated.upscale_array(noise, 2)
    report = gated.last_gate
    assert report.projection.startswith("skipped") and "projection skipped" in report.summary_line()
    assert report.consistency_after == pytest.approx(report.consistency_before)
    assert y.min() >= noise.min() and y.max() <= noise.max()
    block = VolumeSuperResolver(BicubicNetwork(), 2, slice_axis=2, progress=False, gate_degradation="block")
    block.upscale_array(noise, 2)
    assert block.last_gate.projection == "applied"  # box averages of noise are feasible
    assert block.last_gate.consistency_after < 0.05 * block.last_gate.consistency_before


def test_gate_records_both_residuals_and_chooses_by_the_plain_one(bundle_network: nn.Module) -> None:
    """dipy's T2w (another contrast and subject, 2 mm), Gaussian-blurred x2. The plain residual ``||x - D m||``, which
    decides, picks the milder block model (the network under-restores the blur); the recorded relative residual
    (model against bicubic) rates Gaussian best. Block is the safe choice for a blur of unknown width, and the gated
    output still beats bicubic by more than 1 dB."""
    from medgen_core.data.samples import load_dipy_t2

    t2 = load_dipy_t2().array[:, :, 2:8]
    t2 = (t2 / np.percentile(t2, 99.9)).astype(np.float32)
    lr = _degrade(t2, "gaussian")
    gated = VolumeSuperResolver(bundle_network, 2, slice_axis=2, progress=False, gate_degradation="synthetic")
    y, _ = gated.upscale_array(lr, 2)
    report = gated.last_gate
    model, relative = report.operator_residuals["model"], report.operator_residuals["relative"]
    assert report.degradation["kind"] == min(model, key=model.get) == "block"
    assert min(relative, key=relative.get) == "gaussian"
    bicubic = np.clip(F.interpolate(torch.from_numpy(lr).permute(2, 0, 1)[:, None], scale_factor=2.0, mode="bicubic")[:, 0]
                      .permute(1, 2, 0).numpy(), lr.min(), lr.max())
    mask = t2 > 0.1
    assert _psnr(y, t2, mask) > _psnr(bicubic, t2, mask) + 1
