"""Multi-process training: the SR bundle's configs/multi_gpu_train.json under torchrun (2 CPU processes, gloo)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bundle_testing import REPO, sample_volume
from medgen_core.training.engines import checkpoint_files
from medgen_core.networks import RRDBNet
from medgen_core.training.super_resolution import PatchSampler, SRDataConfig, SRPairBatches
from train_testing import log_rows

BUNDLE = REPO / "monai_bundles" / "brain_mri_super_resolution"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_single_process_batches_use_every_slice_and_record_no_shards(tmp_path: Path) -> None:
    slices = torch.rand(4, 1, 32, 32)
    batches = SRPairBatches(slices, SRDataConfig(patch_size=16, batch_size=3, min_foreground=0.0), num_batches=2,
                            shard_record=tmp_path / "data_shards.json")
    assert isinstance(batches.sampler, PatchSampler) and batches.sampler.slices.shape[0] == 4 and len(batches) == 2
    batch = batches[0]
    assert batch["image"].shape == (3, 1, 8, 8) and batch["label"].shape == (3, 1, 16, 16)
    assert not (tmp_path / "data_shards.json").exists()
    with pytest.raises(IndexError):
        batches[2]


def test_torchrun_two_processes_on_cpu(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    sample_volume(data / "train.nii.gz", shape=(48, 48, 10))  # 10 axial slices to share
    out = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
        "-m", "monai.bundle", "run",
        "--config_file", "['configs/train.json','configs/multi_gpu_train.json']",
        "--meta_file", "configs/metadata.json", "--bundle_root", ".",
        "--iterations", "2", "--gan_iterations", "1", "--data_config#patch_size", "32", "--data_config#batch_size", "2", "--bf16", "False",
        "--data_config#min_foreground", "0.0", "--log_every", "1",
        "--network_def#num_block", "1", "--network_def#num_feat", "8",
        "--dataset_dir", str(data), "--output_dir", str(out),
    ]  # fmt: skip
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=BUNDLE, env=env, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=240)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]

    state = torch.load(out / "model.pt", map_location="cpu", weights_only=True)
    assert not any(k.startswith("module.") for k in state)
    RRDBNet(spatial_dims=2, scale=2, num_feat=8, num_block=1, num_grow=16).load_state_dict(state, strict=True)
    [(_, path)] = checkpoint_files(out)
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    assert checkpoint["trainer"]["iteration"] == 3 and "discriminator" in checkpoint  # 2 L1 steps + 1 GAN step (DDP discriminator)
    assert not any(k.startswith("module.") for k in (*checkpoint["network"], *checkpoint["discriminator"]))

    shards = json.loads((out / "data_shards.json").read_text())
    assert shards["world_size"] == 2 and shards["num_slices"] == 10
    rank0, rank1 = set(shards["shards"]["0"]), set(shards["shards"]["1"])
    assert rank0 and rank1 and not rank0 & rank1, shards
    assert rank0 | rank1 <= set(range(10)) and len(rank0) == len(rank1) == 5

    logged = log_rows(out / "train_log.csv")  # rank 0 alone writes: one row per iteration, not one per rank
    assert [s for s, _ in logged["l1"]] == [1, 2, 3] and [s for s, _ in logged["d_loss"]] == [3] and logged["d_loss"][0][1] > 0
    assert (out / "loss_curve.png").is_file()


def _nifti(path: Path, data) -> str:
    import nibabel as nib
    import numpy as np

    nib.save(nib.Nifti1Image(np.asarray(data, dtype=np.float32), np.eye(4)), str(path))
    return path.name


# every rank seeds, resumes and steps its schedule; every rank validates (the evaluator's metrics reduce over ranks)
ALL_RANKS = {"medgen_core.training.engines.EpochSeed", "medgen_core.training.engines.ResumeFromCheckpoint", "LrScheduleHandler", "ValidationHandler",
             "medgen_core.training.genseg.ParameterAveraging"}


@pytest.mark.parametrize("name", sorted(p.parents[1].name for p in (REPO / "monai_bundles").glob("*/configs/multi_gpu_train.json")))
def test_multi_gpu_configs_keep_every_rank_handler_and_give_the_writers_to_rank_0(name: str) -> None:
    """multi_gpu_train.json keeps ``train#handlers[:k]`` on ranks > 0: exactly the seeding, resume and schedule handlers,
    which every rank needs; the stats, checkpoint and export handlers (files) run on rank 0 only."""
    import re

    configs = REPO / "monai_bundles" / name / "configs"
    handlers = json.loads((configs / "train.json").read_text())["train"]["handlers"]
    split = json.loads((configs / "multi_gpu_train.json").read_text())["train#trainer#train_handlers"]
    k = int(re.search(r"\[: (\d+) if torch.distributed.get_rank\(\) > 0 else None\]", split).group(1))
    assert {h["_target_"] for h in handlers[:k]} <= ALL_RANKS and not {h["_target_"] for h in handlers[k:]} & ALL_RANKS
    assert {"medgen_core.training.engines.TrainingCheckpointSaver", "medgen_core.training.engines.ExportWeights"} <= {h["_target_"] for h in handlers[k:]}


@pytest.mark.parametrize("name", ["brain_tissue_to_t1_pix2pix", "brain_t1_to_t2w_cyclegan"])
def test_torchrun_gan_bundles_two_processes_on_cpu(tmp_path: Path, name: str) -> None:
    """Both translation bundles train under torchrun from their multi_gpu_train.json (2 CPU ranks, gloo)."""
    import numpy as np

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, size=(32, 32, 4))
    data = tmp_path / "data"
    if name.endswith("pix2pix"):
        (data / "labels").mkdir(parents=True)
        (data / "t1").mkdir()
        _nifti(data / "labels" / "s.nii.gz", labels)
        _nifti(data / "t1" / "s.nii.gz", labels * 40.0)
        exports = ["model.pt"]
    else:
        (data / "A").mkdir(parents=True)
        (data / "B").mkdir()
        _nifti(data / "A" / "a.nii.gz", labels)
        _nifti(data / "B" / "b.nii.gz", rng.random((32, 32, 4)) * 100)
        exports = ["generator_a2b.pt", "generator_b2a.pt"]
    out = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
        "-m", "monai.bundle", "run",
        "--config_file", "['configs/train.json','configs/multi_gpu_train.json']",
        "--meta_file", "configs/metadata.json", "--bundle_root", str(REPO / "monai_bundles" / name),
        "--dataset_dir", str(data), "--slice_size", "[32,32]", "--samples_per_epoch", "4", "--log_every", "1",
        "--epochs", "1", "--epochs_decay", "1", "--output_dir", str(out),
    ]  # fmt: skip
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    done = subprocess.run(cmd, cwd=REPO / "monai_bundles" / name, env=env, capture_output=True, text=True, encoding="utf-8",
                          errors="replace", timeout=300)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    for export in exports:
        state = torch.load(out / export, map_location="cpu", weights_only=True)
        assert state and not any(k.startswith("module.") for k in state)
    assert [n for n, _ in checkpoint_files(out)] == [1, 2]
    checkpoint = torch.load(out / "checkpoint_epoch=2.pt", map_location="cpu", weights_only=True)
    # 4 samples per epoch shared by 2 ranks at batch 1: 2 iterations per rank and epoch
    assert checkpoint["trainer"]["iteration"] == 4
    assert not any(k.startswith("module.") for k in (*checkpoint["g_network"], *checkpoint["d_network"]))
    logged = log_rows(out / "train_log.csv")  # rank 0 alone writes: one row per iteration
    assert all([s for s, _ in rows] == [1, 2, 3, 4] for rows in logged.values()), logged
    assert sorted(p.name for p in (out / "samples").glob("*.png")) == ["epoch_0001.png", "epoch_0002.png"]
