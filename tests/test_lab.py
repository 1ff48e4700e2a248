"""The latent-space lab: conditional autoencoder strategies, corruption family, mixing, interpolation,
sweep and restoration outputs, the trainers, and ``medgen lab`` on the shipped bundle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.networks.nets import UNet

from medgen_core.cli.main import main
from medgen_core.inference.autoencode import VolumeAutoencoder
from medgen_core.io import Volume
from medgen_core.experiments.lab import (
    LabError,
    LabSlices,
    check_mixable,
    interpolate_latents,
    mix_models,
    run_bottleneck_sweep,
    run_restoration,
    write_interpolation,
)
from medgen_core.networks.conditional_autoencoder import CONDITIONING_STRATEGIES, ConditionalAutoencoder
from medgen_core.provenance import verify_provenance
from medgen_core.training.autoencoder import SliceBatches, SliceTrainingConfig, train_autoencoder
from medgen_core.training.engines import checkpoint_files, load_checkpoint
from medgen_core.training.restoration import CorruptedSliceBatches
from medgen_core.transforms.corruption import CORRUPTION_KINDS, Corrupt, Corruptd, corrupt

torch.set_num_threads(1)


def tiny(conditioning: str = "film", latent_size: int = 4, num_classes: int = 3, image_size: int = 16) -> ConditionalAutoencoder:
    torch.manual_seed(0)
    return ConditionalAutoencoder(2, 1, image_size, (4, 8), latent_size=latent_size, num_classes=num_classes, conditioning=conditioning)


def smooth_images(n: int = 12, size: int = 16, seed: int = 0) -> torch.Tensor:
    """Smooth random blobs in [0, 1]: (n, 1, size, size)."""
    g = torch.Generator().manual_seed(seed)
    x = F.avg_pool2d(torch.rand(n, 1, size + 4, size + 4, generator=g), 5, 1)
    return (x - x.amin()) / (x.amax() - x.amin())


def tiny_slices(size: int = 16) -> LabSlices:
    train, test = smooth_images(12, size, 0), smooth_images(4, size, 1)
    return LabSlices(train, torch.arange(12) % 3, torch.arange(12), test, torch.tensor([0, 1, 2, 0]), torch.arange(4), ("a", "b", "c"))


# -- conditional autoencoder -----------------------------------------------------------------------
@pytest.mark.parametrize("conditioning", CONDITIONING_STRATEGIES)
def test_each_conditioning_changes_the_output_with_the_class(conditioning: str) -> None:
    net = tiny(conditioning).eval()
    x = smooth_images(2)
    with torch.no_grad():
        outs = [net(x, torch.full((2,), c)) for c in range(3)] + [net(x)]  # classes 0, 1, 2 and the null class
        z0, z1 = net.encode(x, torch.zeros(2, dtype=torch.long)), net.encode(x, torch.ones(2, dtype=torch.long))
        soft = net.decoder.decode_weighted(z0, F.one_hot(torch.zeros(2, dtype=torch.long), 4).float())
    assert outs[0].shape == (2, 1, 16, 16) and float(outs[0].min()) >= 0 and float(outs[0].max()) <= 1
    for i in range(4):
        for j in range(i + 1, 4):
            assert float((outs[i] - outs[j]).abs().max()) > 1e-4, (conditioning, i, j)
    assert not torch.allclose(z0, z1)  # the encoder is conditioned too
    assert torch.allclose(soft, net.decode(z0, torch.zeros(2, dtype=torch.long)), atol=1e-6)
    assert net.latent_shape == (4,) and z0.shape == (2, 4)


def test_autoencoder_scripts_and_rejects_bad_settings() -> None:
    net = tiny("embedding").eval()
    x, y = smooth_images(2), torch.tensor([0, 2])
    scripted = torch.jit.script(net)
    assert torch.allclose(scripted(x, y), net(x, y), atol=1e-6) and torch.allclose(scripted(x), net(x), atol=1e-6)
    with pytest.raises(ValueError, match="conditioning must be one of"):
        ConditionalAutoencoder(conditioning="concat")
    with pytest.raises(ValueError, match="image_size 18 must be divisible by 2\\*\\*len\\(channels\\) = 4"):
        ConditionalAutoencoder(2, 1, 18, (4, 8))


# -- corruption family -----------------------------------------------------------------------------
@pytest.mark.parametrize("kind", CORRUPTION_KINDS)
def test_corruption_is_identity_at_zero_and_monotone_in_level(kind: str) -> None:
    x = smooth_images(3, 32)
    assert torch.equal(corrupt(x, kind, 0.0, torch.Generator().manual_seed(1)), x)
    errors = [float(((corrupt(x, kind, lv, torch.Generator().manual_seed(1)) - x) ** 2).mean()) for lv in (0.0, 0.25, 0.5, 0.75, 1.0)]
    assert errors[0] == 0.0 and all(b > a for a, b in zip(errors, errors[1:])), errors
    again = corrupt(x, kind, 0.6, torch.Generator().manual_seed(1))
    assert torch.equal(again, corrupt(x, kind, 0.6, torch.Generator().manual_seed(1)))  # seeded
    assert corrupt(x[0], kind, 0.5, torch.Generator().manual_seed(1)).shape == x[0].shape  # one (C, H, W) image


def test_corruption_transforms_and_errors() -> None:
    x = smooth_images(1, 32)[0]
    assert torch.equal(Corrupt("noise", 0.5, seed=3)(x), Corrupt("noise", 0.5, seed=3)(x))
    assert not torch.equal(Corrupt("noise", 0.5, seed=3)(x), Corrupt("noise", 0.5, seed=4)(x))
    t = Corruptd("img", kinds=("blur", "stripes"), output_key="bad")
    t.set_random_state(0)
    d = t({"img": x})
    assert torch.equal(d["img"], x) and d["bad"].shape == x.shape and t._kind in ("blur", "stripes") and 0 <= t._level <= 1
    with pytest.raises(ValueError, match="unknown kind 'jpeg'"):
        corrupt(x, "jpeg", 0.5)
    with pytest.raises(ValueError, match="level must be in \\[0, 1\\], got 1.5"):
        corrupt(x, "blur", 1.5)


# -- mixing -----------------------------------------------------------------------------------------
def test_mixing_compatible_models() -> None:
    a, b = tiny("film"), tiny("film")
    torch.manual_seed(1)
    b = ConditionalAutoencoder(2, 1, 16, (4, 8), latent_size=4, num_classes=3, conditioning="film").eval()
    x, y = smooth_images(4), torch.tensor([0, 1, 2, 0])
    mixed = mix_models(a, b)
    with torch.no_grad():
        assert torch.allclose(mixed(x, y), b.decode(a.encode(x, y), y), atol=1e-6)
        same = mix_models(a, a, "linear", smooth_images(12, seed=3), torch.arange(12) % 3)  # a model mixed with itself: W = I
        assert torch.allclose(same(x, y), a(x, y), atol=1e-4)


@pytest.mark.parametrize(("other", "field"), [
    (dict(latent_size=8), "latent_shape: encoder [4] vs decoder [8]"),
    (dict(conditioning="onehot"), "conditioning: encoder 'film' vs decoder 'onehot'"),
    (dict(num_classes=5), "num_classes: encoder 3 vs decoder 5"),
    (dict(image_size=32), "image_size: encoder 16 vs decoder 32"),
])  # fmt: skip
def test_mixing_incompatible_models_raises_a_clear_error(other: dict, field: str) -> None:
    a, b = tiny(), tiny(**other)
    with pytest.raises(LabError, match="cannot combine the encoder of model A with the decoder of model B") as err:
        mix_models(a, b)
    assert field in str(err.value)
    with pytest.raises(LabError, match="declares no signature"):
        check_mixable(a.encoder, torch.nn.Linear(4, 4))


# -- interpolation ----------------------------------------------------------------------------------
def test_interpolation_endpoints_reproduce_the_reconstructions(tmp_path: Path) -> None:
    from medgen_core.data.samples import mni152_t1_path

    net = tiny("onehot").eval()
    xs = smooth_images(2)
    result = interpolate_latents(net, xs[0], 0, xs[1], 2, steps=5)
    with torch.no_grad():
        ra, rb = net(xs[:1], torch.tensor([0])), net(xs[1:], torch.tensor([2]))
    assert result.frames.shape == (5, 1, 16, 16) and result.ts == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert torch.allclose(result.frames[0], ra[0], atol=1e-6) and torch.allclose(result.frames[-1], rb[0], atol=1e-6)
    assert float((result.frames[2] - ra[0]).abs().max()) > 1e-4  # the middle is neither endpoint
    write_interpolation(result, xs[0], xs[1], tmp_path, "interp", {"generator_name": "test_ae", "generator_version": "0.0.1"},
                        {"steps": 5}, [mni152_t1_path()])
    assert verify_provenance(tmp_path / "interp.nii.gz").status == "intact"
    assert verify_provenance(tmp_path / "interp.png").status == "intact"
    record = json.loads((tmp_path / "interp.nii.gz.generated.json").read_text())["record"]
    assert record["task"] == "latent_interpolation" and record["output"]["shape"] == [16, 16, 5]
    with pytest.raises(LabError, match="class_b = 3 is not a class of this model"):
        interpolate_latents(net, xs[0], 0, xs[1], 3)
    with pytest.raises(LabError, match="at least 2 steps"):
        interpolate_latents(net, xs[0], 0, xs[1], 1, steps=1)


# -- sweep, training, restoration -------------------------------------------------------------------
def test_sweep_writes_json_and_png(tmp_path: Path) -> None:
    cfg = SliceTrainingConfig(iterations=3, batch_size=4, log_every=1, warmup=1)
    summary = run_bottleneck_sweep(lambda n: tiny(latent_size=n), tiny_slices(), [2, 8], cfg, tmp_path)
    saved = json.loads((tmp_path / "sweep.json").read_text())
    assert saved == json.loads(json.dumps(summary)) and [r["latent_size"] for r in saved["results"]] == [2, 8]
    assert all(np.isfinite(r["heldout"]["psnr"]) and -1 <= r["heldout"]["ssim"] <= 1 for r in saved["results"])
    assert (tmp_path / "sweep.png").stat().st_size > 1000 and (tmp_path / "latent_8" / "model.pt").is_file()
    with pytest.raises(LabError, match="distinct positive integers"):
        run_bottleneck_sweep(lambda n: tiny(latent_size=n), tiny_slices(), [4, 4], cfg, tmp_path)


def test_autoencoder_training_lowers_the_loss_and_resumes(tmp_path: Path) -> None:
    net, data = tiny(), tiny_slices()
    x, y = data.train_images, data.train_labels
    with torch.no_grad():
        before = float(F.mse_loss(net(x, y), x))
    config = SliceTrainingConfig(iterations=40, batch_size=8, lr=3e-3, warmup=2, checkpoint_every=20)
    model = train_autoencoder(net, x, y, config, tmp_path)
    with torch.no_grad():
        after = float(F.mse_loss(net(x, y), x))
    assert after < 0.7 * before, (before, after)
    assert [n for n, _ in checkpoint_files(tmp_path)] == [1, 2] and load_checkpoint(tmp_path / "checkpoint_epoch=2.pt")["trainer"]["iteration"] == 40
    again = tiny()
    train_autoencoder(again, x, y, config, tmp_path)  # resumes at iteration 40: nothing more to train, the weights are the run's
    for k, v in torch.load(model, weights_only=True).items():
        torch.testing.assert_close(again.state_dict()[k], v, rtol=0, atol=0)
    with pytest.raises(ValueError, match="class_labels must be integer"):
        train_autoencoder(tiny(), x, torch.full((12,), 3), SliceTrainingConfig(), tmp_path)
    batch = SliceBatches(x, y, 3, batch_size=400, num_batches=1, p_uncond=0.25)[0]
    assert torch.equal(batch["image"], batch["label"]) and set(batch["class_label"].tolist()) <= {0, 1, 2, 3}
    assert 0.15 < float((batch["class_label"] == 3).float().mean()) < 0.35  # dropped to the null class K = 3


def test_restoration_training_lowers_the_loss_and_reports_by_level(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = UNet(2, 1, 1, channels=(4, 8), strides=(2,), num_res_units=0)
    data = tiny_slices(32)
    clean = data.train_images
    bad = torch.cat([corrupt(clean[i : i + 1], k, 0.6, torch.Generator().manual_seed(i)) for i, k in enumerate(CORRUPTION_KINDS * 3)])
    with torch.no_grad():
        before = float(F.l1_loss(net(bad), clean))
    cfg = SliceTrainingConfig(iterations=40, batch_size=8, lr=3e-3, warmup=2, loss="l1")
    summary = run_restoration(net, data, cfg, tmp_path, kinds=("blur", "noise"), levels=(0.0, 0.5, 1.0))
    with torch.no_grad():
        after = float(F.l1_loss(net(bad), clean))
    assert after < 0.7 * before, (before, after)
    saved = json.loads((tmp_path / "restoration.json").read_text())
    assert saved["by_kind"]["blur"][0]["corrupted_psnr"] is None  # level 0: identical, infinite PSNR
    assert [r["level"] for r in saved["by_kind"]["noise"]] == [0.0, 0.5, 1.0] and summary["kinds"] == ["blur", "noise"]
    noise = saved["by_kind"]["noise"]
    assert noise[1]["corrupted_psnr"] > noise[2]["corrupted_psnr"]
    assert (tmp_path / "restoration.png").is_file() and (tmp_path / "restoration_examples.png").is_file()
    with pytest.raises(ValueError, match="kinds must be a non-empty subset"):
        CorruptedSliceBatches(clean, kinds=("jpeg",))
    pair = CorruptedSliceBatches(clean, batch_size=4, kinds=("noise",), level_range=(0.5, 1.0))[0]
    assert pair["image"].shape == pair["label"].shape == (4, 1, 32, 32) and not torch.equal(pair["image"], pair["label"])


def test_global_residual_adds_the_input() -> None:
    from medgen_core.networks.residual import GlobalResidual

    inner = UNet(2, 1, 1, channels=(4, 8), strides=(2,), num_res_units=0)
    x = smooth_images(2, 16)
    with torch.no_grad():
        assert torch.allclose(GlobalResidual(inner)(x), x + inner(x))


def test_volume_autoencoder_keeps_the_grid() -> None:
    net = tiny(num_classes=4).eval()
    arr = np.random.default_rng(0).random((20, 24, 8)).astype(np.float32) * 300
    affine = np.diag([-1.0, 1.0, 3.0, 1.0])  # LAS storage order: reoriented to RAS and back
    out = VolumeAutoencoder(net, ["a", "b", "c", "d"], "auto", progress=False)(Volume(arr, affine))
    assert out.shape == (20, 24, 8) and np.allclose(out.affine, affine) and np.isfinite(out.array).all()
    assert 0 <= float(out.array.min()) and float(out.array.max()) <= float(np.percentile(arr, 99.9)) + 1e-3
    assert VolumeAutoencoder(net, ["a", "b", "c", "d"]).slice_classes(8).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    # a 16 mm training field at 1 mm pixels: the 20 x 24 slice is cropped to 16 x 16, the rest stays 0
    cropped = VolumeAutoencoder(net, ["a", "b", "c", "d"], "", progress=False, field_mm=16.0)(Volume(arr, np.eye(4)))
    assert cropped.shape == (20, 24, 8) and float(np.abs(cropped.array[:2]).max()) == 0.0 and float(cropped.array[2:18, 4:20].max()) > 0
    with pytest.raises(ValueError, match="class_name must be"):
        VolumeAutoencoder(net, ["a", "b", "c", "d"], "nope")


# -- the CLI on the shipped bundle -------------------------------------------------------------------
@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("lab") / "sweep"
    assert main(["lab", "sweep", "--out", str(out), "--latent-sizes", "8,32", "--iterations", "2"]) == 0
    return out


def test_cli_sweep_interpolate_mix_restore(sweep_dir: Path, tmp_path: Path, capsys) -> None:
    sweep = json.loads((sweep_dir / "sweep.json").read_text())
    assert [r["latent_size"] for r in sweep["results"]] == [8, 32] and sweep["conditioning"] == "film" and (sweep_dir / "sweep.png").is_file()
    assert main(["lab", "interpolate", "--out", str(tmp_path / "i"), "--steps", "3"]) == 0
    for name in ("within_class", "across_classes"):
        assert verify_provenance(tmp_path / "i" / f"interpolation_{name}.nii.gz").status == "intact"
        assert (tmp_path / "i" / f"interpolation_{name}.png").is_file()
    assert main(["lab", "mix", "--out", str(tmp_path / "m")]) == 0
    mixing = json.loads((tmp_path / "m" / "mixing.json").read_text())["results"]
    assert set(mixing) >= {"autoencoder", "autoencoder_b", "enc autoencoder + dec autoencoder_b"}
    assert main(["lab", "restore", "--out", str(tmp_path / "r"), "--pretrained", "--kinds", "blur", "--levels", "0,1"]) == 0
    rest = json.loads((tmp_path / "r" / "restoration.json").read_text())
    assert rest["kinds"] == ["blur"] and rest["settings"]["pretrained"] is True
    for png in (tmp_path / "m" / "mixing.png", tmp_path / "r" / "restoration_examples.png"):
        assert verify_provenance(png).status == "intact"
    assert "restoration at level 1.00" in capsys.readouterr().out


@pytest.mark.parametrize(("argv", "message"), [
    (["sweep", "--latent-sizes", "8,x"], "--latent-sizes must be comma-separated ints"),
    (["sweep", "--iterations", "0"], "--iterations must be >= 1"),
    (["interpolate", "--steps", "1"], "--steps must be >= 2"),
    (["mix", "--encoder", "nope"], "has no variant 'nope'"),
    (["restore", "--kinds", "jpeg"], "unknown corruption kind(s) ['jpeg']"),
    (["restore", "--levels", "0,2"], "levels must be numbers in [0, 1]"),
    (["restore", "--pretrained", "--iterations", "5"], "cannot be combined with --iterations"),
    (["sweep", "--bundle", "no_such_bundle"], "no bundle named 'no_such_bundle'"),
])  # fmt: skip
def test_cli_bad_arguments(argv: list[str], message: str, tmp_path: Path, capsys) -> None:
    assert main(["lab", *argv, "--out", str(tmp_path / "o")]) == 2
    assert message in capsys.readouterr().err


def test_cli_mix_refuses_models_that_do_not_fit(sweep_dir: Path, tmp_path: Path, capsys) -> None:
    argv = ["lab", "mix", "--out", str(tmp_path), "--decoder", str(sweep_dir / "latent_8" / "model.pt"), "--decoder-latent-size", "8"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "cannot combine the encoder of autoencoder with the decoder of model" in err and "latent_shape: encoder [32] vs decoder [8]" in err
    assert not (tmp_path / "mixing.json").exists()
    # the same file read with the wrong latent size: the weights do not fit, said clearly
    assert main(["lab", "mix", "--out", str(tmp_path), "--decoder", str(sweep_dir / "latent_8" / "model.pt")]) == 2
    assert "does not fit the autoencoder (latent_size 32" in capsys.readouterr().err


def test_multi_gpu_train_config_under_torchrun_two_cpu_processes(tmp_path: Path) -> None:
    import os
    import socket
    import subprocess
    import sys

    from train_testing import log_rows

    bundle = Path(__file__).resolve().parents[1] / "monai_bundles" / "brain_slice_autoencoder"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr", "127.0.0.1", "--master_port", str(port),
           "-m", "monai.bundle", "run", "--config_file", "['configs/train.json','configs/multi_gpu_train.json']",
           "--meta_file", "configs/metadata.json", "--bundle_root", ".", "--iterations", "2", "--batch_size", "2", "--log_every", "1",
           "--output_dir", str(out)]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=bundle, env=env, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=240)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    state = torch.load(out / "model.pt", map_location="cpu", weights_only=True)
    ConditionalAutoencoder(2, 1, 64, (16, 32, 64, 64), latent_size=32, num_classes=4, conditioning="film").load_state_dict(state, strict=True)
    shards = json.loads((out / "data_shards.json").read_text())
    rank0, rank1 = set(shards["shards"]["0"]), set(shards["shards"]["1"])
    assert shards["world_size"] == 2 and rank0 and rank1 and not rank0 & rank1
    assert [s for s, _ in log_rows(out / "train_log.csv")["loss"]] == [1, 2]  # rank 0 alone writes
