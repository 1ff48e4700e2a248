"""Tests for medgen_core.training.super_resolution and medgen_core.losses.adversarial (tiny, CPU, seconds)."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from medgen_core.losses import relativistic_discriminator_loss, relativistic_generator_loss
from medgen_core.networks import RRDBNet
from medgen_core.training.base import load_checkpoint
from medgen_core.training.super_resolution import PatchSampler, SRTrainingConfig, SuperResolutionTrainer
from medgen_core.transforms.degradation import degrade



PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def slices() -> torch.Tensor:
    """8 smooth random 48x48 slices in [0, 1], shape (8, 1, 48, 48)."""
    rng = np.random.default_rng(0)
    sl = np.stack([gaussian_filter(rng.normal(size=(48, 48)), 2.0, mode="wrap") for _ in range(8)])
    sl = (sl - sl.min()) / (sl.max() - sl.min())
    return torch.from_numpy(sl).float()[:, None]


def _net(seed: int = 0, interp_residual: bool = True) -> RRDBNet:
    torch.manual_seed(seed)
    return RRDBNet(spatial_dims=2, scale=2, num_feat=8, num_block=1, num_grow=4, interp_residual=interp_residual)


def _config(**kw) -> SRTrainingConfig:
    base = dict(scale=2, degradation="block", patch_size=24, batch_size=2, iterations=4, lr=1e-3,
                min_foreground=0.0, log_every=1, checkpoint_every=1000, bf16=False, seed=0)
    return SRTrainingConfig(**{**base, **kw})


def _rows(path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _fixed_eval_l1(net: torch.nn.Module, slices: torch.Tensor) -> float:
    lr = degrade(slices, 2, "block")
    with torch.no_grad():
        return float((net(lr) - slices).abs().mean())


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="degradation must be 'mixed' or one of"):
        SRTrainingConfig(degradation="bicubic")
    with pytest.raises(ValueError, match="patch_size 30 must be a multiple of scale 4"):
        SRTrainingConfig(scale=4, patch_size=30)


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


def test_l1_training_decreases_loss_and_writes_outputs(tmp_path, slices: torch.Tensor) -> None:
    # without the bicubic skip the network starts far from the target, so 30 steps must clearly help
    net = _net(interp_residual=False)
    before = _fixed_eval_l1(net, slices)
    trainer = SuperResolutionTrainer(net, slices, _config(iterations=30), tmp_path)
    model_path = trainer.run(resume=False)
    after = _fixed_eval_l1(net, slices)
    assert after < 0.85 * before, (before, after)

    rows = _rows(tmp_path / "train_log.csv")
    assert [int(r["iteration"]) for r in rows] == list(range(1, 31))
    l1 = np.array([float(r["l1"]) for r in rows])
    assert np.all(np.isfinite(l1)) and l1[-5:].mean() < 0.9 * l1[:5].mean(), l1
    assert all(r["g_adv"] == "" and r["d_loss"] == "" for r in rows)

    assert model_path == tmp_path / "model.pt"
    state = torch.load(model_path, map_location="cpu", weights_only=True)
    assert all(isinstance(v, torch.Tensor) and v.device.type == "cpu" for v in state.values())
    fresh = _net(seed=123, interp_residual=False)
    fresh.load_state_dict(state, strict=True)
    assert _fixed_eval_l1(fresh, slices) == pytest.approx(after, rel=1e-6)

    png = (tmp_path / "loss_curve.png").read_bytes()
    assert png.startswith(PNG_SIGNATURE) and len(png) > 1000
    assert trainer.iteration == 30 and not trainer.net.training
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt")
    assert ckpt["iteration"] == 30 and ckpt["config"]["iterations"] == 30


def test_resume_continues_from_the_checkpoint(tmp_path, slices: torch.Tensor) -> None:
    run_dir = tmp_path / "run"
    config = _config(iterations=12, checkpoint_every=5)
    crashed = SuperResolutionTrainer(_net(seed=0), slices, config, run_dir)
    real_step = crashed.l1_step

    def crashing_step():
        if crashed.iteration == 7:
            raise RuntimeError("simulated crash")
        return real_step()

    crashed.l1_step = crashing_step
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashed.run(resume=False)
    assert crashed.iteration == 7
    saved = load_checkpoint(run_dir / "checkpoint.pt")
    assert saved["iteration"] == 5
    assert not (run_dir / "model.pt").exists()
    shutil.copytree(run_dir, tmp_path / "run_copy")

    resumed = SuperResolutionTrainer(_net(seed=99), slices, config, run_dir)  # different init: must be overwritten
    assert resumed.resume() is True
    assert resumed.iteration == 5
    for k, v in resumed.net.state_dict().items():
        torch.testing.assert_close(v, saved["net"][k], rtol=0, atol=0)
    # the crashed trainer moved on after the checkpoint: resuming restores iteration-5 weights, not those
    assert any(not torch.equal(v, crashed.net.state_dict()[k]) for k, v in saved["net"].items())
    opt_state = resumed.opt.state_dict()["state"]
    assert len(opt_state) == len(saved["opt"]["state"]) > 0
    for idx, st in saved["opt"]["state"].items():
        assert float(opt_state[idx]["step"]) == float(st["step"]) == 5.0
        torch.testing.assert_close(opt_state[idx]["exp_avg"], st["exp_avg"], rtol=0, atol=0)
        torch.testing.assert_close(opt_state[idx]["exp_avg_sq"], st["exp_avg_sq"], rtol=0, atol=0)

    resumed.run(resume=False)  # already resumed above
    assert resumed.iteration == 12
    assert float(next(iter(resumed.opt.state_dict()["state"].values()))["step"]) == 12.0

    # resuming is reproducible: the same checkpoint gives the same final weights
    again = SuperResolutionTrainer(_net(seed=7), slices, config, tmp_path / "run_copy")
    again.run(resume=True)
    assert again.iteration == 12
    for k, v in again.net.state_dict().items():
        torch.testing.assert_close(v, resumed.net.state_dict()[k], rtol=0, atol=0)
    final = torch.load(run_dir / "model.pt", weights_only=True)
    for k, v in final.items():
        torch.testing.assert_close(v, resumed.net.state_dict()[k], rtol=0, atol=0)
    # iterations 8..12 were logged after the resume
    logged = [int(r["iteration"]) for r in _rows(run_dir / "train_log.csv")]
    assert logged[-5:] == [8, 9, 10, 11, 12]


def test_resume_without_checkpoint_starts_at_zero(tmp_path, slices: torch.Tensor) -> None:
    trainer = SuperResolutionTrainer(_net(), slices, _config(), tmp_path)
    assert trainer.resume() is False and trainer.iteration == 0


def test_gan_finetune_logs_adversarial_terms(tmp_path, slices: torch.Tensor) -> None:
    config = _config(iterations=2, gan_iterations=2, patch_size=32, checkpoint_every=1000)
    trainer = SuperResolutionTrainer(_net(), slices, config, tmp_path)
    assert trainer.disc is not None
    disc_before = {k: v.clone() for k, v in trainer.disc.state_dict().items()}
    trainer.run(resume=False)
    assert trainer.iteration == 4
    rows = _rows(tmp_path / "train_log.csv")
    assert [int(r["iteration"]) for r in rows] == [1, 2, 3, 4]
    for r in rows[:2]:
        assert r["g_adv"] == "" and r["d_loss"] == ""
    for r in rows[2:]:
        g_adv, d_loss = float(r["g_adv"]), float(r["d_loss"])
        assert np.isfinite(g_adv) and np.isfinite(d_loss)
        # BCE-with-logits mean of two terms: positive; near log 2 for an untrained discriminator
        assert 0.0 < d_loss < 5.0 and 0.0 < g_adv < 5.0
    assert any(not torch.equal(v, trainer.disc.state_dict()[k]) for k, v in disc_before.items() if v.is_floating_point())
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt")
    assert {"disc", "opt_d"} <= set(ckpt)


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
