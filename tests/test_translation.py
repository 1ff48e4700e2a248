"""Image translation: CycleGAN losses, image pool, Pix2Pix resume, 2D/3D networks, 3D training + inference,
:class:`VolumeTranslator`, the two translation bundles (train.json on MONAI's GanTrainer, on a user folder and a
datalist; ``python -m monai.bundle run``) and ``medgen translate``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn as nn

from medgen_core.cli.main import main
from medgen_core.errors import ImageReadError
from medgen_core.inference.translate import VolumeTranslator, network_size_multiple
from medgen_core.io import Volume, read_volume
from medgen_core.networks.gan import Pix2PixUNet, ResnetGenerator, build_patch_discriminator
from medgen_core.provenance import read_provenance, sidecar_path, verify_provenance
from medgen_core.training.cyclegan import cycle_losses
from medgen_core.training.engines import checkpoint_files, load_checkpoint
from medgen_core.training.image_pool import ImagePool
from train_testing import log_rows, train

REPO = Path(__file__).resolve().parents[1]
PIX2PIX = REPO / "monai_bundles" / "brain_tissue_to_t1_pix2pix"
CYCLEGAN = REPO / "monai_bundles" / "brain_t1_to_t2w_cyclegan"
AFFINE = np.array([[-1.0, 0, 0, 20], [0, 1.2, 0, -10], [0, 0, 2.5, 5], [0, 0, 0, 1]])  # LAS storage, anisotropic


class _Affine(nn.Module):
    """``scale * x + shift`` (a generator with known output)."""

    def __init__(self, scale: float, shift: float) -> None:
        super().__init__()
        self.scale, self.shift = scale, shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * x + self.shift


def _labels(shape=(40, 44, 3)) -> np.ndarray:
    """Nested ellipses: 0 outside, then 1, 2, 3 towards the centre (a toy tissue map)."""
    x, y, _ = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    r = np.sqrt(x**2 + (1.2 * y) ** 2)
    return np.select([r < 0.3, r < 0.55, r < 0.8], [3, 2, 1], 0).astype(np.float32)


def _save(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    nib.save(nib.Nifti1Image(np.asarray(data, dtype=np.float32), affine), str(path))
    return path


# -- losses and image pool --------------------------------------------------------------------------
def test_cycle_and_identity_terms_match_manual_computation() -> None:
    a, b = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0)), torch.randn(2, 1, 8, 8)
    fake_b, fake_a, cyc_a, cyc_b, idt_a, idt_b = cycle_losses(a, b, nn.Identity(), nn.Identity(), 10.0, 0.5)
    assert torch.equal(fake_b, a) and torch.equal(fake_a, b)
    assert float(cyc_a) == float(cyc_b) == float(idt_a) == float(idt_b) == 0.0
    g_a, g_b = _Affine(1.0, 1.0), _Affine(0.5, 0.0)  # G(x) = x + 1, F(y) = y / 2
    _, _, cyc_a, cyc_b, idt_a, idt_b = cycle_losses(a, b, g_a, g_b, 10.0, 0.5)
    torch.testing.assert_close(cyc_a, (0.5 * (a + 1) - a).abs().mean() * 10)
    torch.testing.assert_close(cyc_b, ((0.5 * b + 1) - b).abs().mean() * 10)
    torch.testing.assert_close(idt_a, torch.tensor(1.0) * 10 * 0.5)  # |G(b) - b| = 1
    torch.testing.assert_close(idt_b, (0.5 * a - a).abs().mean() * 10 * 0.5)
    assert float(cycle_losses(a, b, g_a, g_b, 10.0, 0.0)[4]) == 0.0


def test_image_pool_fills_returns_inputs_then_mixes() -> None:
    images = [torch.full((1, 1, 2, 2), float(i)) for i in range(30)]
    assert ImagePool(0).query(images[0]) is images[0]  # 0 disables the pool
    pool = ImagePool(3, torch.Generator().manual_seed(0))
    for i in range(3):  # while filling, every query returns its input and stores it
        assert torch.equal(pool.query(images[i]), images[i])
    assert [float(t.max()) for t in pool.images] == [0.0, 1.0, 2.0]
    new = torch.cat(images[3:23])
    out = pool.query(new)
    returned = [float(v) for v in out.amax(dim=(1, 2, 3))]
    old = [v for v, fresh in zip(returned, range(3, 23)) if v != fresh]
    assert 0 < len(old) < 20 and all(v < 23 for v in returned)  # some old, some new
    assert len(pool.images) == 3 and any(float(t.max()) >= 3 for t in pool.images)  # old ones were replaced
    again = ImagePool(3, torch.Generator().manual_seed(0))
    for i in range(3):
        again.query(images[i])
    assert torch.equal(again.query(new), out)  # seeded: reproducible


# -- networks -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "make,shape,expected",
    [
        (lambda: Pix2PixUNet(2, 4, 1, num_downs=3, features=4), (2, 4, 32, 24), (2, 1, 32, 24)),
        (lambda: Pix2PixUNet(3, 2, 1, num_downs=2, features=4), (1, 2, 16, 8, 12), (1, 1, 16, 8, 12)),
        (lambda: ResnetGenerator(2, 1, 1, features=4, n_res=2), (2, 1, 20, 24), (2, 1, 20, 24)),
        (lambda: ResnetGenerator(3, 1, 1, features=4, n_res=1), (1, 1, 16, 12, 8), (1, 1, 16, 12, 8)),
        (lambda: build_patch_discriminator(2, 5, features=4), (1, 5, 256, 256), (1, 1, 30, 30)),  # 70x70 PatchGAN
        (lambda: build_patch_discriminator(3, 1, features=4, norm="INSTANCE"), (1, 1, 32, 32, 32), (1, 1, 2, 2, 2)),
    ],
)
def test_network_shapes_2d_3d(make, shape, expected) -> None:
    net = make().eval()
    with torch.no_grad():
        out = net(torch.rand(shape))
    assert tuple((out[-1] if isinstance(out, list) else out).shape) == expected


def test_generators_refuse_sizes_they_cannot_halve() -> None:
    with pytest.raises(ValueError, match="divisible by 8"):
        Pix2PixUNet(2, 1, 1, num_downs=3, features=4)(torch.rand(1, 1, 20, 24))
    assert network_size_multiple(Pix2PixUNet(2, 1, 1, num_downs=5, features=2)) == 32
    assert network_size_multiple(ResnetGenerator(2, 1, 1, features=2, n_res=0)) == 4 and network_size_multiple(nn.Identity()) == 1


# -- training -----------------------------------------------------------------------------------------
EMPTY = {"_target_": "Compose", "transforms": []}
TINY_PIX2PIX = {"num_classes": 2, "generator#num_downs": 2, "generator#features": 4, "discriminator#features": 4, "discriminator#num_layers": 2,
                "slice_transforms": EMPTY, "log_every": 1}


def _paired(shape, n: int = 2) -> list[dict[str, torch.Tensor]]:
    lab = (torch.rand((n, 1, *shape), generator=torch.Generator().manual_seed(1)) > 0.5).long()
    onehot = torch.cat([1 - lab, lab], 1).float()
    return [{"image": onehot[i], "target": (lab[i].float() * 1.6 - 0.8)} for i in range(n)]


def test_pix2pix_resume_restores_epoch_iteration_and_optimizer(tmp_path) -> None:
    from ignite.engine import Events

    overrides = {**TINY_PIX2PIX, "training_data": _paired((16, 16)), "output_dir": str(tmp_path), "epochs": 1, "epochs_decay": 1}

    def stop_after_one_epoch(w) -> None:
        trainer = w.parser.get_parsed_content("train#trainer")
        trainer.add_event_handler(Events.EPOCH_COMPLETED(once=1), lambda engine: engine.terminate())

    train("brain_tissue_to_t1_pix2pix", overrides, before_run=stop_after_one_epoch)
    assert (tmp_path / "samples" / "epoch_0001.png").is_file() and (tmp_path / "train_log.csv").is_file()
    first = load_checkpoint(tmp_path / "checkpoint_epoch=1.pt")
    # epoch 1 ran at 2e-4; the rate for epoch 2 (stepped at the end of epoch 1) is the first of the decay: 1 - 1/2
    assert first["trainer"]["iteration"] == 2 and first["g_optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-4)
    w = train("brain_tissue_to_t1_pix2pix", overrides)  # the same command again: resumes at epoch 1, runs epoch 2
    second = load_checkpoint(tmp_path / "checkpoint_epoch=2.pt")
    assert second["trainer"]["iteration"] == 4 and [n for n, _ in checkpoint_files(tmp_path)] == [1, 2]
    for name in ("g_optimizer", "d_optimizer"):  # the optimiser state carried over: 4 Adam steps, not 2
        assert {int(st["step"]) for st in second[name]["state"].values()} == {4}
    assert second["g_optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-4)  # past the schedule's end it stays at its last value
    assert w.parser.get_parsed_content("train#trainer").state.epoch == 2
    assert [s for s, _ in log_rows(tmp_path / "train_log.csv")["g_l1"]] == [1, 2, 3, 4]


def test_3d_training_then_sliding_window_inference(tmp_path) -> None:
    p2p = train("brain_tissue_to_t1_pix2pix", {**TINY_PIX2PIX, "training_data": _paired((32, 32, 32)), "output_dir": str(tmp_path / "p2p"),
                                               "generator#spatial_dims": 3, "discriminator#spatial_dims": 3, "num_steps": 2})
    volumes = [torch.rand(1, 32, 32, 32) * 2 - 1 for _ in range(2)]
    tiny = {f"{n}#{k}": v for n in ("generator_a2b", "generator_b2a") for k, v in (("spatial_dims", 3), ("features", 4), ("n_res", 1))}
    tiny.update({f"{n}#{k}": v for n in ("discriminator_a", "discriminator_b") for k, v in (("spatial_dims", 3), ("features", 4), ("num_layers", 2))})
    cyc = train("brain_t1_to_t2w_cyclegan", {**tiny, "domain_a": volumes, "domain_b": volumes[::-1], "slice_transform": EMPTY, "pool_size": 2,
                                             "output_dir": str(tmp_path / "cyc"), "num_steps": 2, "log_every": 1})
    logged = log_rows(tmp_path / "cyc" / "train_log.csv")
    assert set(logged) == {"g_a", "g_b", "cycle_a", "cycle_b", "idt_a", "idt_b", "d_a", "d_b"}
    assert all(np.isfinite(v) for rows in logged.values() for _, v in rows)
    assert len(cyc.parser.get_parsed_content("train#iteration").pool_b.images) == 2

    labels = Volume(_labels((40, 36, 20)), AFFINE)
    out = VolumeTranslator(p2p.parser.get_parsed_content("g_network"), input_mode="labels", num_classes=2, roi_size=32, progress=False)(
        Volume(np.minimum(labels.array, 1), AFFINE))
    assert out.shape == labels.shape and np.array_equal(out.affine, AFFINE)
    assert np.isfinite(out.array).all() and 0.0 <= out.array.min() and out.array.max() <= 1.0
    t1 = Volume(labels.array * 30 + 5, AFFINE)
    out = VolumeTranslator(cyc.parser.get_parsed_content("g_a"), roi_size=(16, 16, 16), batch_size=4, progress=False)(t1)
    assert out.shape == t1.shape and 0.0 <= out.array.min() and out.array.max() <= np.percentile(t1.array, 99.9) + 1e-4


# -- VolumeTranslator -----------------------------------------------------------------------------------
def test_translator_intensity_mapping_and_padding() -> None:
    vol = Volume(np.random.default_rng(0).random((23, 31, 3)).astype(np.float32) * 100 - 5, AFFINE)
    out = VolumeTranslator(nn.Identity(), size_multiple=8, progress=False)(vol)  # identity: [0, p99.9] round trip
    np.testing.assert_allclose(out.array, np.clip(vol.array, 0, np.percentile(vol.array, 99.9)), atol=1e-3)
    fixed = VolumeTranslator(nn.Identity(), in_range=(0, 50), out_range=(10, 20), progress=False)(vol).array
    np.testing.assert_allclose(fixed, 10 + 10 * np.clip(vol.array / 50, 0, 1), atol=1e-4)


def test_translator_reorients_so_storage_order_does_not_matter() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), nn.Tanh())  # not flip-symmetric
    data = np.random.default_rng(1).random((12, 10, 4)).astype(np.float32)
    ras = VolumeTranslator(net, progress=False)(Volume(data, np.diag([1.0, 1, 1, 1])))
    flipped = np.diag([-1.0, 1, 1, 1])
    flipped[0, 3] = 11  # same world grid, first axis stored right-to-left
    las = VolumeTranslator(net, progress=False)(Volume(data[::-1], flipped))
    np.testing.assert_allclose(las.array[::-1], ras.array, atol=1e-6)
    np.testing.assert_array_equal(las.affine, flipped)


def test_translator_refuses_non_label_input_for_label_models() -> None:
    net = Pix2PixUNet(2, 4, 1, num_downs=2, features=2)
    with pytest.raises(ImageReadError, match=r"not a label map.*integer labels 0\.\.3"):
        VolumeTranslator(net, input_mode="labels", num_classes=4, progress=False)(Volume(np.full((8, 8, 2), 0.5), AFFINE))
    with pytest.raises(ValueError, match="input_mode"):
        VolumeTranslator(net, input_mode="rgb")


# -- bundles ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["pix2pix-folder", "pix2pix-datalist", "cyclegan-folder"])
def test_train_config_on_the_users_data(tmp_path, layout: str) -> None:
    """train.json on the user's own files (``dataset_dir``: a folder, or a MONAI datalist for Pix2Pix): a 2-step run
    through MONAI's ConfigWorkflow passes check_properties and exports the generator(s)."""
    data = tmp_path / "data"
    if layout.startswith("pix2pix"):
        (data / "labels").mkdir(parents=True)
        (data / "t1").mkdir()
        for i in range(2):
            _save(data / "labels" / f"s{i}.nii.gz", _labels((36, 40, 6)), np.eye(4))
            _save(data / "t1" / f"s{i}.nii.gz", _labels((36, 40, 6)) * 40, np.eye(4))
        if layout.endswith("datalist"):
            items = [{"image": str(data / "labels" / f"s{i}.nii.gz"), "target": str(data / "t1" / f"s{i}.nii.gz")} for i in range(2)]
            (tmp_path / "datalist.json").write_text(json.dumps({"training": items}))
            data = tmp_path / "datalist.json"
        bundle, size, exports = PIX2PIX, [64, 64], ["model.pt"]
    else:
        for d, n in (("A", 1), ("B", 2)):
            (data / d).mkdir(parents=True)
            for i in range(n):
                _save(data / d / f"v{i}.nii.gz", _labels((36, 40, 6)) * 30 + i, np.eye(4))
        bundle, size, exports = CYCLEGAN, [32, 32], ["generator_a2b.pt", "generator_b2a.pt"]
    train(bundle.name, {"dataset_dir": str(data), "output_dir": str(tmp_path / "run"), "slice_size": size, "num_steps": 2, "log_every": 1,
                        "device": "$torch.device('cpu')"})
    assert all((tmp_path / "run" / name).is_file() for name in exports)
    assert all([s for s, _ in rows] == [1, 2] for rows in log_rows(tmp_path / "run" / "train_log.csv").values())


def _monai_run(bundle: Path, src: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.json", "--meta_file", "configs/metadata.json",
           "--bundle_root", str(bundle), "--input_file", str(src), "--output_file", str(out), *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(cmd, cwd=bundle, env=env, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=300)


@pytest.mark.parametrize("bundle,direction", [(PIX2PIX, None), (CYCLEGAN, "b2a")], ids=["pix2pix", "cyclegan-b2a"])
def test_monai_bundle_run_keeps_grid_and_provenance(tmp_path, bundle: Path, direction: str | None) -> None:
    src = _save(tmp_path / "in.nii.gz", _labels() if bundle == PIX2PIX else _labels() * 50 + 3)
    out = tmp_path / "out" / "translated.nii.gz"
    proc = _monai_run(bundle, src, out, *(["--direction", direction] if direction else []))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in out.parent.iterdir()) == ["translated.nii.gz", "translated.nii.gz.generated.json"]
    assert verify_provenance(out).status == "intact"
    record = read_provenance(out)["embedded"]
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())["medgen"]
    assert record["weights_sha256"] == meta["variants"][direction or "tissue_to_t1"]["sha256"]
    assert record["task"] == ("image_translation_t2w_to_t1" if direction else "image_translation_tissue_labels_to_t1")
    result = nib.load(str(out))
    assert result.shape == (40, 44, 3) and np.allclose(result.affine, AFFINE)


def _cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_translate_both_bundles_with_preview_and_json_progress(tmp_path, capsys) -> None:
    labels, t1 = _save(tmp_path / "labels.nii.gz", _labels()), _save(tmp_path / "t1.nii.gz", _labels() * 50 + 3)
    code, stdout, stderr = _cli(capsys, "translate", labels, tmp_path / "a" / "t1.nii.gz", "--bundle", PIX2PIX.name, "--preview", tmp_path / "a.png")
    assert code == 0, stderr
    assert (tmp_path / "a.png").read_bytes().startswith(b"\x89PNG") and "wrote" in stdout
    out = tmp_path / "b" / "t2w.nrrd"
    code, stdout, stderr = _cli(capsys, "translate", t1, out, "--bundle", CYCLEGAN.name, "--progress", "json", "--device", "cpu")
    assert code == 0, stderr
    assert "MEDGEN_PROGRESS {" in stdout and "T1-weighted -> T2-weighted" in stdout
    for path in (tmp_path / "a" / "t1.nii.gz", out):
        assert verify_provenance(path).status == "intact" and read_volume(path).shape == (40, 44, 3)
    assert read_provenance(out)["embedded"]["parameters"]["direction"] == "a2b"


@pytest.mark.parametrize(
    "case,message",
    [("intensity_to_labels", "not a label map"), ("direction_one_way", "translates one way only"), ("not_translation", "not a translation bundle")],
)
def test_cli_translate_bad_requests_write_nothing(tmp_path, capsys, case: str, message: str) -> None:
    src = _save(tmp_path / "in.nii.gz", _labels() * 50 + 3)
    args = {"intensity_to_labels": ["--bundle", PIX2PIX.name], "direction_one_way": ["--bundle", PIX2PIX.name, "--direction", "b2a"],
            "not_translation": ["--bundle", "brain_mri_super_resolution"]}[case]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code, _, stderr = _cli(capsys, "translate", src, out_dir / "x.nii.gz", *args)
    assert code == 2 and stderr.startswith("medgen: error:") and message in stderr and "Traceback" not in stderr, stderr
    assert list(out_dir.iterdir()) == [] and not sidecar_path(out_dir / "x.nii.gz").exists()
