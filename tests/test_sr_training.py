"""Tests for the super-resolution training (the SR bundle's train.json on MONAI's SupervisedTrainer) and
medgen_core.losses.adversarial (tiny, CPU, seconds)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from medgen_core.losses import relativistic_discriminator_loss, relativistic_generator_loss
from medgen_core.networks import RRDBNet
from medgen_core.training.engines import checkpoint_files, load_checkpoint
from medgen_core.training.super_resolution import PatchSampler, SRDataConfig
from medgen_core.transforms.degradation import degrade
from train_testing import log_rows, train, volume_folder, workflow

BUNDLE = "brain_mri_super_resolution"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def slices() -> torch.Tensor:
    """8 smooth random 48x48 slices in [0, 1], shape (8, 1, 48, 48)."""
    rng = np.random.default_rng(0)
    sl = np.stack([gaussian_filter(rng.normal(size=(48, 48)), 2.0, mode="wrap") for _ in range(8)])
    sl = (sl - sl.min()) / (sl.max() - sl.min())
    return torch.from_numpy(sl).float()[:, None]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> str:
    """The user's data folder: two smooth 48 x 48 x 4 NIfTI volumes."""
    return str(volume_folder(tmp_path_factory.mktemp("sr_data"), n=2, shape=(48, 48, 4)))


def _overrides(data_dir: str, out, **kw) -> dict:
    base = {"dataset_dir": data_dir, "output_dir": str(out), "degradation": "block", "iterations": 4, "lr": 1e-3, "bf16": False,
            "log_every": 1, "checkpoint_every": 1000, "data_config#patch_size": 24, "data_config#batch_size": 2,
            "data_config#min_foreground": 0.0, "network_def#num_feat": 8, "network_def#num_block": 1, "network_def#num_grow": 4}
    return {**base, **kw}


def _fixed_eval_l1(net: torch.nn.Module, slices: torch.Tensor) -> float:
    lr = degrade(slices, 2, "block")
    with torch.no_grad():
        return float((net(lr) - slices).abs().mean())


def _net(w) -> torch.nn.Module:
    return w.parser.get_parsed_content("network")


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="degradation must be 'mixed' or one of"):
        SRDataConfig(degradation="bicubic")
    with pytest.raises(ValueError, match="patch_size 30 must be a multiple of scale 4"):
        SRDataConfig(scale=4, patch_size=30)


def test_patch_sampler(slices: torch.Tensor) -> None:
    g = torch.Generator().manual_seed(0)
    batch = PatchSampler(slices, 24, 0.0, g).sample(5)
    assert batch.shape == (5, 1, 24, 24)
    # every patch is a (rotated/flipped) piece of some slice: its values are a subset of the data
    assert float(batch.min()) >= 0.0 and float(batch.max()) <= 1.0
    with pytest.raises(ValueError, match="smaller than patch_size"):
        PatchSampler(slices, 64, 0.0, g)
    with pytest.raises(ValueError, match=r"must be \(N, 1, H, W\)"):
        PatchSampler(slices[:, 0], 24, 0.0, g)


def test_l1_training_on_a_user_folder_decreases_loss_and_writes_outputs(tmp_path, data_dir: str, slices: torch.Tensor) -> None:
    # without the bicubic skip the network starts far from the target, so 30 steps must clearly help
    w = workflow(BUNDLE, _overrides(data_dir, tmp_path, iterations=30, **{"network_def#interp_residual": False}))
    assert w.check_properties() == []
    net = _net(w)
    before = _fixed_eval_l1(net, slices)
    w.run()
    w.finalize()
    after = _fixed_eval_l1(net, slices)
    assert after < 0.85 * before, (before, after)

    rows = log_rows(tmp_path / "train_log.csv")["l1"]
    assert [step for step, _ in rows] == list(range(1, 31))
    l1 = np.array([v for _, v in rows])
    assert np.all(np.isfinite(l1)) and l1[-5:].mean() < 0.9 * l1[:5].mean(), l1

    state = torch.load(tmp_path / "model.pt", map_location="cpu", weights_only=True)
    assert all(isinstance(v, torch.Tensor) and v.device.type == "cpu" for v in state.values())
    fresh = RRDBNet(spatial_dims=2, scale=2, num_feat=8, num_block=1, num_grow=4, interp_residual=False)
    fresh.load_state_dict(state, strict=True)
    assert _fixed_eval_l1(fresh, slices) == pytest.approx(after, rel=1e-6)

    png = (tmp_path / "loss_curve.png").read_bytes()
    assert png.startswith(PNG_SIGNATURE) and len(png) > 1000
    [(epoch, path)] = checkpoint_files(tmp_path)
    ckpt = load_checkpoint(path)
    assert epoch == 1 and ckpt["trainer"]["iteration"] == 30 and {"network", "optimizer", "lr_scheduler"} <= set(ckpt)
    # the schedule: cosine from lr to 1% of it over the 30 iterations
    assert ckpt["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-3 * (0.01 + 0.99 * 0.5 * (1 + np.cos(np.pi * 30 / 30))))


def test_a_crashed_run_resumes_to_the_weights_of_an_uninterrupted_one(tmp_path, data_dir: str) -> None:
    settings = {"iterations": 12, "checkpoint_every": 4}  # 3 epochs of 4 iterations, a checkpoint after each

    class Crash(RuntimeError):
        pass

    def crash_at_7(w) -> None:
        def boom(engine):
            if engine.state.iteration == 7:
                raise Crash("simulated crash")
        from ignite.engine import Events

        w.parser.get_parsed_content("train#trainer").add_event_handler(Events.ITERATION_COMPLETED, boom)

    run = tmp_path / "run"
    with pytest.raises(Exception) as failure:
        train(BUNDLE, _overrides(data_dir, run, **settings), before_run=crash_at_7)
    assert "simulated crash" in repr(failure.value) or isinstance(failure.value.__cause__, Crash)
    assert [n for n, _ in checkpoint_files(run)] == [1] and not (run / "model.pt").exists()
    assert load_checkpoint(run / "checkpoint_epoch=1.pt")["trainer"]["iteration"] == 4

    resumed = train(BUNDLE, _overrides(data_dir, run, seed=0, **settings))  # same command again: resumes at iteration 4
    assert resumed.parser.get_parsed_content("train#trainer").state.iteration == 12
    whole = train(BUNDLE, _overrides(data_dir, tmp_path / "whole", **settings))  # the same run without a crash
    a = torch.load(run / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "whole" / "model.pt", weights_only=True)
    for k in b:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    opt = load_checkpoint(run / "checkpoint_epoch=3.pt")["optimizer"]["state"]
    assert {float(st["step"]) for st in opt.values()} == {12.0}
    assert [n for n, _ in checkpoint_files(run)] == [2, 3]  # the newest two are kept, also across the resume
    assert whole is not resumed


def test_gan_finetune_logs_adversarial_terms(tmp_path, data_dir: str) -> None:
    w = workflow(BUNDLE, _overrides(data_dir, tmp_path, iterations=2, gan_iterations=2, **{"data_config#patch_size": 32}))
    disc = w.parser.get_parsed_content("discriminator")
    disc_before = {k: v.clone() for k, v in disc.state_dict().items()}
    w.run()
    w.finalize()
    logged = log_rows(tmp_path / "train_log.csv")
    assert [s for s, _ in logged["l1"]] == [1, 2, 3, 4]
    assert [s for s, _ in logged["g_adv"]] == [3, 4] and [s for s, _ in logged["d_loss"]] == [3, 4]
    for (_, g_adv), (_, d_loss) in zip(logged["g_adv"], logged["d_loss"]):
        # BCE-with-logits mean of two terms: positive; near log 2 for an untrained discriminator
        assert 0.0 < d_loss < 5.0 and 0.0 < g_adv < 5.0
    assert any(not torch.equal(v, disc.state_dict()[k]) for k, v in disc_before.items() if v.is_floating_point())
    ckpt = load_checkpoint(checkpoint_files(tmp_path)[-1][1])
    assert {"discriminator", "d_optimizer"} <= set(ckpt)


def _bce_logits(x: torch.Tensor, target: float) -> torch.Tensor:
    p = torch.sigmoid(x)
    return -(target * torch.log(p) + (1 - target) * torch.log(1 - p)).mean()


def test_relativistic_losses_match_manual_formula() -> None:
    real = torch.tensor([[0.5, -1.0], [2.0, 0.3]], dtype=torch.float64)
    fake = torch.tensor([[-0.2, 0.7], [-1.5, 0.1]], dtype=torch.float64)
    mr, mf = real.mean(), fake.mean()  # 0.45 and -0.225
    assert float(mr) == pytest.approx(0.45) and float(mf) == pytest.approx(-0.225)
    d_manual = 0.5 * (_bce_logits(real - mf, 1.0) + _bce_logits(fake - mr, 0.0))
    g_manual = 0.5 * (_bce_logits(real - mf, 0.0) + _bce_logits(fake - mr, 1.0))
    torch.testing.assert_close(relativistic_discriminator_loss(real, fake), d_manual)
    torch.testing.assert_close(relativistic_generator_loss(real, fake), g_manual)
    # a hand-computed value: all logits equal -> every relative logit is 0 -> log 2
    z = torch.zeros(3)
    assert float(relativistic_discriminator_loss(z, z)) == pytest.approx(np.log(2.0))
    assert float(relativistic_generator_loss(z, z)) == pytest.approx(np.log(2.0))
    # scalar check: real = [1], fake = [-1] -> D = 0.5 * (softplus(-2) + softplus(-2)) = softplus(-2)
    d = relativistic_discriminator_loss(torch.tensor([1.0]), torch.tensor([-1.0]))
    assert float(d) == pytest.approx(np.log1p(np.exp(-2.0)), rel=1e-6)
    g = relativistic_generator_loss(torch.tensor([1.0]), torch.tensor([-1.0]))
    assert float(g) == pytest.approx(np.log1p(np.exp(2.0)), rel=1e-6)


def test_discriminator_loss_decreases_as_real_logits_increase() -> None:
    fake = torch.tensor([0.1, -0.4, 0.3])
    losses = [float(relativistic_discriminator_loss(torch.tensor([0.0, 0.2, -0.1]) + d, fake)) for d in (-2.0, 0.0, 1.0, 3.0)]
    assert all(a > b for a, b in zip(losses, losses[1:])), losses
    gen = [float(relativistic_generator_loss(torch.tensor([0.0, 0.2, -0.1]) + d, fake)) for d in (-2.0, 0.0, 1.0, 3.0)]
    assert all(a < b for a, b in zip(gen, gen[1:])), gen
    # the generator gets gradients through both real and fake logits (the relativistic point)
    real = torch.tensor([0.0, 0.2, -0.1], requires_grad=True)
    fake_g = fake.clone().requires_grad_(True)
    relativistic_generator_loss(real, fake_g).backward()
    assert real.grad.abs().sum() > 0 and fake_g.grad.abs().sum() > 0
    assert torch.all(fake_g.grad < 0)  # raising fake logits lowers the generator loss
