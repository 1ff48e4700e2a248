"""Class-conditional 2D diffusion: training on MONAI's SupervisedTrainer (the bundle's train.json: batches, target,
resume, DDP), DDIM sampler / SDEdit, MNI slice data and the brain_slice_ddpm bundle through MONAI's runner (tiny
networks, CPU, seconds)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.nets import DiffusionModelUNet
from monai.networks.schedulers import DDPMScheduler

from bundle_testing import REPO
from medgen_core.data.slices import (
    MNI152_1MM_AFFINE,
    MNI152_1MM_SHAPE,
    MNI_BRAIN_Z_EXTENT,
    SLICE_POSITION_CLASSES,
    mni_axial_slices_2mm,
    mni_slice_affine_2mm,
    slice_position_class,
)
from medgen_core.inference.diffusion_sampling import DiffusionSampler, class_ids_for, sample_output_paths
from medgen_core.provenance import read_provenance, verify_provenance
from medgen_core.training.diffusion import DiffusionBatches, NoisePrepareBatch
from medgen_core.training.engines import checkpoint_files, load_checkpoint
from train_testing import log_rows, train, workflow

BUNDLE = REPO / "monai_bundles" / "brain_slice_ddpm"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _net(seed: int = 0, in_channels: int = 4, classes: int | None = 2, perturb: bool = True) -> DiffusionModelUNet:
    """A tiny DiffusionModelUNet (K classes + null). MONAI zero-initialises the output convolution, so
    ``perturb`` adds small noise to every weight to make outputs depend on the input and the class."""
    torch.manual_seed(seed)
    net = DiffusionModelUNet(spatial_dims=2, in_channels=in_channels, out_channels=in_channels, channels=(8, 8), attention_levels=(False, False),
                             num_res_blocks=1, norm_num_groups=8, num_head_channels=8, num_class_embeds=None if classes is None else classes + 1)
    if perturb:
        with torch.no_grad():
            for p in net.parameters():
                p.add_(0.05 * torch.randn(p.shape))
    return net.eval()


TINY = {"network_def#channels": [8, 8], "network_def#attention_levels": [False, False], "network_def#num_head_channels": 8,
        "network_def#num_class_embeds": 3, "batch_size": 2, "lr": 1e-3, "log_every": 1, "checkpoint_every": 1000, "bf16": False, "warmup": 1}


def _training(images: torch.Tensor, labels: torch.Tensor, out: Path, **kw) -> dict:
    """Overrides of the bundle's train.json for the in-memory slices ``images`` with classes ``labels``."""
    return {**TINY, "training_data": (images, labels), "class_labels": labels, "image_size": images.shape[-1], "output_dir": str(out), **kw}


def _seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """6 smooth off-centre blobs (6, 1, 16, 16) in [0, 1] (none is symmetric under a flip of axis H)."""
    hh, ww = torch.meshgrid(torch.linspace(-1, 1, 16), torch.linspace(-1, 1, 16), indexing="ij")
    return torch.stack([torch.exp(-((ww - 0.1 * i) ** 2 + (hh - 0.4) ** 2) * 3) for i in range(6)])[:, None].clamp(0, 1)


# -- training -------------------------------------------------------------------------------------
def test_training_runs_logs_and_resumes(tmp_path: Path, images: torch.Tensor) -> None:
    labels = torch.tensor([0, 1, 0, 1, 0, 1])
    # one iteration per epoch (checkpoint_every=1): a later, longer run continues at the last epoch
    train("brain_slice_ddpm", _training(images, labels, tmp_path, iterations=3, checkpoint_every=1))
    assert [n for n, _ in checkpoint_files(tmp_path)] == [2, 3]
    checkpoint = load_checkpoint(checkpoint_files(tmp_path)[-1][1])
    assert checkpoint["trainer"]["iteration"] == 3 and {"network", "optimizer", "lr_scheduler", "ema"} <= set(checkpoint)
    rows = log_rows(tmp_path / "train_log.csv")["loss"]
    assert [s for s, _ in rows] == [1, 2, 3] and all(np.isfinite(v) and v > 0 for _, v in rows)

    resumed = train("brain_slice_ddpm", _training(images, labels, tmp_path, iterations=5, checkpoint_every=1, seed=9))  # resumes at 3
    assert resumed.parser.get_parsed_content("train#trainer").state.iteration == 5
    assert load_checkpoint(checkpoint_files(tmp_path)[-1][1])["trainer"]["iteration"] == 5
    assert [s for s, _ in log_rows(tmp_path / "train_log.csv")["loss"]] == [1, 2, 3, 4, 5]  # continues, no restart
    assert (tmp_path / "loss_curve.png").read_bytes()[:8] == PNG_SIGNATURE

    state = torch.load(tmp_path / "model.pt", map_location="cpu", weights_only=True)  # plain state_dict (EMA weights)
    fresh = _net(perturb=False)
    fresh.load_state_dict(state, strict=True)
    ema = resumed.parser.get_parsed_content("train#handlers#3")
    assert all(torch.equal(state[k], v) for k, v in ema.module.state_dict().items())
    net = resumed.parser.get_parsed_content("network")
    assert any(not torch.equal(state[k], v) for k, v in net.state_dict().items() if v.is_floating_point())  # EMA, not the raw weights


def test_training_starts_from_init_from(tmp_path: Path, images: torch.Tensor) -> None:
    """``init_from`` (train.json, as ``scripts/train_ddpm.py --init-from``) loads a state dict into the network; without it the network differs."""
    labels = torch.tensor([0, 1, 0, 1, 0, 1])
    source = _net(seed=3)
    torch.save(source.state_dict(), tmp_path / "init.pt")
    started = workflow("brain_slice_ddpm", _training(images, labels, tmp_path / "a", init_from=str(tmp_path / "init.pt"))).parser
    net = started.get_parsed_content("network")
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in net.state_dict().items())
    ema = started.get_parsed_content("train#handlers#3").module  # the average starts from the same weights
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in ema.state_dict().items())
    fresh = workflow("brain_slice_ddpm", _training(images, labels, tmp_path / "b")).parser.get_parsed_content("network")
    assert any(not torch.equal(v, source.state_dict()[k]) for k, v in fresh.state_dict().items() if v.is_floating_point())


def test_batches_drop_labels_and_flip(images: torch.Tensor) -> None:
    batches = DiffusionBatches(images, torch.zeros(6, dtype=torch.long), _net(), batch_size=400, num_batches=1, p_uncond=0.25)
    batch = batches[0]
    x, labels = batch["image"], batch["class_label"]
    assert x.shape == (400, 4, 8, 8) and float(x.min()) >= -1.0 and float(x.max()) <= 1.0  # 2x2 space-to-depth of [-1, 1] slices
    assert set(labels.tolist()) == {0, 2} and 0.15 < float((labels == 2).float().mean()) < 0.35  # null class id K = 2
    full = F.pixel_shuffle(x, 2)
    originals = images * 2 - 1
    flipped = [any(torch.equal(s, o.flip(-2)) and not torch.equal(s, o) for o in originals) for s in full]
    assert 0.3 < np.mean(flipped) < 0.7  # left-right flips (axis H) about half of the time
    assert "class_label" not in DiffusionBatches(images, None, _net(classes=None), 2, 1)[0]


def test_batch_validation(images: torch.Tensor) -> None:
    with pytest.raises(ValueError, match=r"images must be \(N, 1, H, W\)"):
        DiffusionBatches(images[:, 0], None, _net(), 2, 1)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        DiffusionBatches(images * 3, None, _net(), 2, 1)
    with pytest.raises(ValueError, match=r"class_labels must be in \[0, 2\)"):
        DiffusionBatches(images, torch.tensor([0, 1, 2, 0, 1, 0]), _net(), 2, 1)
    with pytest.raises(ValueError, match="no class embedding"):
        DiffusionBatches(images, torch.zeros(6, dtype=torch.long), _net(classes=None), 2, 1)
    with pytest.raises(ValueError, match="in_channels = out_channels = f\\*f"):
        DiffusionBatches(images, None, _net(in_channels=2), 2, 1)
    with pytest.raises(ValueError, match="p_uncond in"):
        DiffusionBatches(images, None, _net(), 2, 1, p_uncond=1.0)


# -- sampler ----------------------------------------------------------------------------------------
class _Oracle(nn.Module):
    """The exact predictor for a data set of one image: ``eps = (x_t - sqrt(a_t) x0) / sqrt(1 - a_t)``, or
    ``v = sqrt(a_t) eps - sqrt(1 - a_t) x0``, or ``x0`` itself, as ``prediction_type`` says."""

    def __init__(self, target: torch.Tensor, prediction_type: str = "epsilon") -> None:
        super().__init__()
        self.prediction_type = prediction_type
        self.in_channels = self.out_channels = 4
        self.num_class_embeds = 3
        self.register_buffer("x0", F.pixel_unshuffle(target * 2 - 1, 2))
        self.register_buffer("abar", DDPMScheduler(num_train_timesteps=1000).alphas_cumprod)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        a = self.abar[timesteps].view(-1, 1, 1, 1)
        eps = (x - a.sqrt() * self.x0) / (1 - a).sqrt()
        if self.prediction_type == "v_prediction":
            return a.sqrt() * eps - (1 - a).sqrt() * self.x0
        return self.x0.expand_as(x) if self.prediction_type == "sample" else eps


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize("steps", [1, 7, 10])
def test_ddim_with_an_exact_predictor_returns_the_data(steps: int, prediction_type: str) -> None:
    target = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    sampler = DiffusionSampler(_Oracle(target, prediction_type), image_size=(16, 16), bf16=False, prediction_type=prediction_type)
    out = sampler.sample(3, torch.tensor([0, 1, 0]), steps=steps, guidance_scale=2.0, generator=torch.Generator().manual_seed(1))
    assert (out - target).abs().max() < 1e-4
    varied = sampler.vary(torch.rand(2, 1, 16, 16), 0.5, steps=steps, generator=torch.Generator().manual_seed(1))
    assert (varied - target).abs().max() < 1e-4


@pytest.mark.parametrize("in_channels", [1, 4])
def test_sampler_shape_range_determinism_and_guidance(in_channels: int) -> None:
    sampler = DiffusionSampler(_net(in_channels=in_channels), image_size=(16, 24), num_classes=2, batch_size=3)
    assert sampler.factor == (2 if in_channels == 4 else 1)

    def run(seed: int, guidance: float = 1.0, classes: tuple[int, ...] | None = (0, 1, 1, 0, 1)) -> torch.Tensor:
        ids = None if classes is None else torch.tensor(classes)
        return sampler.sample(5, ids, steps=4, guidance_scale=guidance, generator=torch.Generator().manual_seed(seed))

    a = run(0)
    assert a.shape == (5, 1, 16, 24) and a.dtype == torch.float32
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0 and float(a.std()) > 0
    assert torch.equal(a, run(0))  # deterministic for a seeded generator (eta = 0: noise is the only randomness)
    assert not torch.allclose(a, run(1), atol=1e-3)  # other seed, other samples
    guided = run(0, guidance=3.0)
    assert guided.shape == a.shape and torch.isfinite(guided).all() and not torch.allclose(guided, a, atol=1e-4)
    unconditional = run(0, guidance=3.0, classes=None)  # null class: guidance has nothing to amplify
    assert torch.equal(unconditional, run(0, classes=None))
    assert not torch.allclose(unconditional, a, atol=1e-4)


def test_vary_small_strength_stays_closer_than_full_strength(images: torch.Tensor) -> None:
    sampler = DiffusionSampler(_net(), image_size=(16, 16), num_classes=2)
    small = sampler.vary(images, 0.1, torch.zeros(6, dtype=torch.long), steps=10, generator=_seeded())
    full = sampler.vary(images, 1.0, torch.zeros(6, dtype=torch.long), steps=10, generator=_seeded())
    assert small.shape == images.shape and float(small.min()) >= 0 and float(small.max()) <= 1
    assert torch.equal(small, sampler.vary(images, 0.1, torch.zeros(6, dtype=torch.long), steps=10, generator=_seeded()))
    assert (small - images).abs().mean() < 0.5 * (full - images).abs().mean()


def test_sampler_validation(images: torch.Tensor) -> None:
    sampler = DiffusionSampler(_net(), image_size=(16, 16), num_classes=2)
    with pytest.raises(ValueError, match=r"class_ids must be in \[0, 2\)"):
        sampler.sample(2, torch.tensor([0, 2]))
    with pytest.raises(ValueError, match=r"class_ids must be an integer tensor of shape \(2,\)"):
        sampler.sample(2, torch.tensor([0, 1, 1]))
    with pytest.raises(ValueError, match=r"steps must be in \[1, 1000\]"):
        sampler.sample(1, steps=0)
    with pytest.raises(ValueError, match="guidance_scale must be a finite number"):
        sampler.sample(1, guidance_scale=float("nan"))
    with pytest.raises(ValueError, match=r"strength must be in \(0, 1\]"):
        sampler.vary(images, 0.0)
    with pytest.raises(ValueError, match=r"images must be \(N, 1, 16, 16\)"):
        sampler.vary(images[..., :8], 0.5)
    with pytest.raises(ValueError, match="num_classes=3 needs a network with num_class_embeds=4"):
        DiffusionSampler(_net(), image_size=(16, 16), num_classes=3)
    with pytest.raises(ValueError, match="divisible by the space-to-depth factor 2"):
        DiffusionSampler(_net(), image_size=(15, 16))
    with pytest.raises(ValueError, match="unknown class_name 'middle'"):
        class_ids_for("middle", SLICE_POSITION_CLASSES, 2)
    assert class_ids_for("", SLICE_POSITION_CLASSES, 2) is None and class_ids_for("superior", SLICE_POSITION_CLASSES, 2).tolist() == [3, 3]
    assert sample_output_paths("d", "", "p", 2) == [Path("d/p_000.nii.gz"), Path("d/p_001.nii.gz")]
    assert sample_output_paths("d", "o/x.nii.gz", "p", 1) == [Path("o/x.nii.gz")]
    assert sample_output_paths("d", "o/x.nii.gz", "p", 2) == [Path("o/x_000.nii.gz"), Path("o/x_001.nii.gz")]


# -- MNI slices ---------------------------------------------------------------------------------------
def test_slice_position_classes() -> None:
    lo, hi = MNI_BRAIN_Z_EXTENT
    assert len(SLICE_POSITION_CLASSES) == 4
    assert slice_position_class(lo) == 0 and slice_position_class(hi - 1) == 3 and slice_position_class(188) == 3
    classes = slice_position_class(np.arange(lo, hi))
    assert classes.tolist() == sorted(classes.tolist()) and np.bincount(classes).min() >= (hi - lo) // 4
    assert slice_position_class(torch.tensor([0, 100]), n_classes=2).tolist() == [0, 1]
    with pytest.raises(ValueError, match=r"integer MNI axial indices in \[0, 189\)"):
        slice_position_class(189)


def test_mni_axial_slices_2mm_exclude_the_held_out_slab() -> None:
    from medgen_core.data.samples import MNI_HELDOUT_AXIAL, MNI_HELDOUT_MARGIN, load_mni152_brain_mask, load_mni152_t1

    images, z = mni_axial_slices_2mm()
    assert images.shape == (len(z), 1, 128, 128) and images.dtype == torch.float32 and len(z) > 80
    assert float(images.min()) == 0.0 and float(images.max()) == 1.0
    lo, hi = MNI_HELDOUT_AXIAL
    assert not any(lo - MNI_HELDOUT_MARGIN <= int(k) < hi + MNI_HELDOUT_MARGIN for k in z)
    assert (images > 0.05).float().mean(dim=(1, 2, 3)).min() > 0.01  # near-empty slices dropped
    assert set(slice_position_class(z.numpy()).tolist()) == {0, 1, 2, 3}
    with pytest.raises(ValueError, match="held-out evaluation slab"):
        mni_axial_slices_2mm(indices=[lo])
    mni = load_mni152_t1()  # the recorded grid is the template's, and the brain extent is the mask's
    assert mni.shape == MNI152_1MM_SHAPE and np.allclose(mni.affine, MNI152_1MM_AFFINE)
    brain_z = np.where(load_mni152_brain_mask().any(axis=(0, 1)))[0]
    assert (brain_z.min(), brain_z.max() + 1) == MNI_BRAIN_Z_EXTENT
    # 2 mm pixel (i, j) of slice z is the mean of 1 mm voxels (2i - 30 .. 2i - 29, 2j - 12 .. 2j - 11): same world centre
    world = mni_slice_affine_2mm(int(z[0])) @ np.array([64, 64, 0, 1.0])
    assert np.allclose(world[:3], (MNI152_1MM_AFFINE @ np.array([2 * 64 - 30 + 0.5, 2 * 64 - 12 + 0.5, int(z[0]), 1.0]))[:3])


# -- the bundle -------------------------------------------------------------------------------------------
def test_bundle_inference_with_monai_runner_stamps_provenance(tmp_path: Path) -> None:
    out = tmp_path / "samples"
    cmd = [
        sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.json", "--meta_file", "configs/metadata.json",
        "--logging_file", "configs/logging.conf", "--bundle_root", ".", "--output_dir", str(out), "--num_samples", "2",
        "--num_inference_steps", "2", "--class_name", "superior", "--seed", "3", "--device", "$torch.device('cpu')",
    ]  # fmt: skip
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=BUNDLE, env=env, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=240)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    files = sorted(out.glob("*.nii.gz"))
    assert [f.name for f in files] == ["brain_slice_ddpm_superior_000.nii.gz", "brain_slice_ddpm_superior_001.nii.gz"]
    for f in files:
        assert verify_provenance(f).status == "intact"
        img = nib.load(str(f))
        assert img.shape == (128, 128, 1) and np.allclose(img.header.get_zooms(), (2.0, 2.0, 2.0))
        data = img.get_fdata()
        assert 0.0 <= data.min() and data.max() <= 1.0
        record = read_provenance(f)["embedded"]
        version = json.loads((BUNDLE / "configs" / "metadata.json").read_text())["version"]
        assert record["bundle_id"] == f"brain_slice_ddpm@{version}" and record["seed"] == 3
        assert record["parameters"]["class_name"] == "superior" and record["parameters"]["num_inference_steps"] == 2
    assert not np.array_equal(nib.load(str(files[0])).get_fdata(), nib.load(str(files[1])).get_fdata())


def test_bundle_as_augmentation_backend() -> None:
    from medgen_core.bundles.generators import BundleGeneratorLoader

    backend = BundleGeneratorLoader().load(BUNDLE, torch.device("cpu"))
    assert backend.class_names == list(SLICE_POSITION_CLASSES) and set(backend.capabilities) == {"sample", "vary"}
    out = backend.sample(2, class_name="inferior", steps=2, generator=_seeded())
    assert out.shape == (2, 1, 128, 128) and torch.equal(out, backend.sample(2, class_name="inferior", steps=2, generator=_seeded()))
    varied = backend.vary(torch.rand(1, 1, 96, 96), strength=0.3, class_name="superior", steps=3, generator=_seeded())
    assert varied.shape == (1, 1, 96, 96)
    assert json.loads((BUNDLE / "configs" / "metadata.json").read_text())["medgen"]["action"] == "augment"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_bundle_trains_with_torchrun_on_two_cpu_processes(tmp_path: Path) -> None:
    out = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
        "-m", "monai.bundle", "run",
        "--config_file", "['configs/train.json','configs/multi_gpu_train.json']", "--meta_file", "configs/metadata.json", "--bundle_root", ".",
        "--training_data", "$(torch.rand(10, 1, 32, 32), torch.arange(10) * 15)",
        "--network_def#channels", "[8, 8]", "--network_def#attention_levels", "[False, False]", "--network_def#num_head_channels", "8",
        "--iterations", "2", "--batch_size", "2", "--bf16", "False", "--log_every", "1", "--output_dir", str(out),
    ]  # fmt: skip
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=BUNDLE, env=env, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=240)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    state = torch.load(out / "model.pt", map_location="cpu", weights_only=True)
    assert not any(k.startswith("module.") for k in state)
    DiffusionModelUNet(spatial_dims=2, in_channels=4, out_channels=4, channels=(8, 8), attention_levels=(False, False), num_res_blocks=1,
                       norm_num_groups=8, num_head_channels=8, num_class_embeds=5).load_state_dict(state, strict=True)
    checkpoint = load_checkpoint(checkpoint_files(out)[-1][1])
    assert checkpoint["trainer"]["iteration"] == 2 and not any(k.startswith("module.") for k in checkpoint["network"])
    shards = json.loads((out / "data_shards.json").read_text())
    rank0, rank1 = set(shards["shards"]["0"]), set(shards["shards"]["1"])
    assert shards["world_size"] == 2 and len(rank0) == len(rank1) == 5 and not rank0 & rank1
    assert [s for s, _ in log_rows(out / "train_log.csv")["loss"]] == [1, 2]  # rank 0 alone writes


@pytest.mark.parametrize("prediction_type", ["v_prediction", "sample"])
def test_training_regresses_the_configured_target(tmp_path: Path, images: torch.Tensor, prediction_type: str) -> None:
    """The loss of one engine step equals the MSE between the network output and v (or x0), recomputed by hand from the
    same batch, noise and timesteps."""
    labels = torch.zeros(6, dtype=torch.long)
    w = workflow("brain_slice_ddpm", _training(images, labels, tmp_path, p_uncond=0.0, flip=False, ema_decay=0.0, num_steps=1,
                                              prediction_type=prediction_type))
    trainer = w.parser.get_parsed_content("train#trainer")
    net, prepare = w.parser.get_parsed_content("network"), w.parser.get_parsed_content("train#prepare_batch")
    with torch.no_grad():
        for p in net.parameters():  # MONAI zero-initialises the output convolution
            p.add_(0.05 * torch.randn(p.shape, generator=_seeded(3)))
    state = {k: v.clone() for k, v in net.state_dict().items()}
    batch = w.parser.get_parsed_content("train#dataset")[0]
    torch.manual_seed(11)
    loss = float(trainer._process_function(trainer, batch)["loss"])
    net.load_state_dict(state)
    torch.manual_seed(11)
    x, target, _, kwargs = prepare(batch, torch.device("cpu"))
    noise, t = kwargs["noise"], kwargs["timesteps"]
    a = w.parser.get_parsed_content("noise_scheduler").alphas_cumprod[t].view(-1, 1, 1, 1)
    expected = a.sqrt() * noise - (1 - a).sqrt() * x if prediction_type == "v_prediction" else x
    torch.testing.assert_close(target, expected)
    with torch.no_grad():
        pred = net(a.sqrt() * x + (1 - a).sqrt() * noise, t, class_labels=kwargs["condition"])
    assert loss == pytest.approx(float(F.mse_loss(pred, expected)), rel=1e-4)
    with pytest.raises(ValueError, match="prediction_type must be one of"):
        NoisePrepareBatch(w.parser.get_parsed_content("noise_scheduler"), prediction_type="noise")
    with pytest.raises(ValueError, match="prediction_type must be one of"):
        DiffusionSampler(_net(), image_size=(16, 16), prediction_type="x0")
