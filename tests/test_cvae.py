"""Signal CVAE (ABR): simulator physiology, dataset files, losses, joint/legacy switch, trainer resume,
sampling determinism, provenance of outputs, the CLI and the shipped bundle."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medgen_core.cli.main import main
from medgen_core.data.abr_dataset import PEAK_NAMES, STATIC_NAMES, ABRDataset, SignalDataError, load_abr_dataset, save_abr_csv, save_abr_npz
from medgen_core.data.abr_simulator import expected_peaks, simulate_abr_dataset, time_axis_ms
from medgen_core.errors import ImageWriteError
from medgen_core.inference.cvae_outputs import generate_abr_samples
from medgen_core.inference.cvae_sampling import sample_joint, sample_legacy, static_grid
from medgen_core.losses.cvae import BetaWarmup, CVAELossWeights, cvae_loss, kl_divergence, masked_mse
from medgen_core.networks.cvae import SignalCVAE
from medgen_core.provenance import read_provenance, verify_provenance
from medgen_core.training.cvae import CVAEBatches, CVAETrainingConfig, train_cvae
from medgen_core.training.engines import checkpoint_files, load_checkpoint
from train_testing import log_rows

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "monai_bundles" / "abr_joint_cvae"
NORMAL = [30.0, 0.0, 80.0, 11.1, 5.0, 2000.0]  # 30-year-old woman, 80 dB nHL, 11.1/s, normal hearing


def tiny_net(joint: bool = True) -> SignalCVAE:
    torch.manual_seed(0)
    return SignalCVAE(latent_dim=4, channels=(4, 4, 8), hidden=16, joint_generation=joint)


@pytest.fixture(scope="module")
def data() -> ABRDataset:
    return simulate_abr_dataset(96, seed=3)


# -- simulator ------------------------------------------------------------------------------------
def test_latency_decreases_with_intensity_and_grows_with_age() -> None:
    grid = static_grid(np.array(NORMAL), 2, np.arange(20.0, 91.0, 10.0))
    peaks, mask = expected_peaks(grid)
    wave_v = peaks[:, 2]
    assert mask[:, 2].all(), "wave V must be present from 20 dB nHL up in normal hearing"
    assert np.all(np.diff(wave_v) < 0), f"wave V latency must fall as intensity rises, got {wave_v}"
    assert 5.3 < wave_v[-2] < 5.9 and 7.5 < wave_v[0] < 8.3  # textbook: ~5.6 ms at 80 dB, ~8 ms at 20 dB
    old = expected_peaks(static_grid(np.array(NORMAL), 0, [30.0, 70.0]))[0]
    assert old[1, 2] > old[0, 2] + 0.1  # 40 years add about 0.16 ms to wave V


def test_peaks_absent_below_threshold_are_masked() -> None:
    loss = static_grid(np.array([50.0, 1.0, 40.0, 21.1, 30.0, 2000.0]), 2, [40.0, 90.0])  # SL 10 dB and 60 dB
    peaks, mask = expected_peaks(loss)
    assert mask[0].tolist() == [False, False, True, False, False, True]  # only wave V at 10 dB SL
    assert np.isnan(peaks[0, [0, 1, 3, 4]]).all() and np.isfinite(peaks[0, [2, 5]]).all()
    assert mask[1].all()
    sim = simulate_abr_dataset(400, seed=1)
    sl = sim.static[:, 2] - sim.static[:, 4]
    assert not sim.peak_mask[sl <= 35, 0].any() and sim.peak_mask[sl > 35, 0].all()  # wave I needs > 35 dB SL
    assert np.isnan(sim.peaks[~sim.peak_mask]).all() and np.isfinite(sim.peaks[sim.peak_mask]).all()


def test_simulated_waveform_peaks_at_the_recorded_wave_v_latency() -> None:
    sim = simulate_abr_dataset(300, seed=2)
    t = time_axis_ms()
    strong = sim.peak_mask[:, 2] & (sim.peaks[:, 5] > 0.35)
    assert strong.sum() > 30
    found = []
    for sig, lat in zip(sim.signals[strong], sim.peaks[strong, 2]):
        window = (t > lat - 1.0) & (t < lat + 1.0)
        found.append(t[window][np.argmax(sig[window])])
    err = np.abs(np.array(found) - sim.peaks[strong, 2])
    assert np.median(err) < 0.15, f"median |argmax - latency_V| = {np.median(err):.3f} ms"
    assert 0.03 < float(np.std(sim.signals[:, :20])) < 0.3  # noise present, microvolt scale
    again = simulate_abr_dataset(300, seed=2)
    assert np.array_equal(again.signals, sim.signals)


# -- dataset files ----------------------------------------------------------------------------------
def test_npz_and_csv_round_trip(data: ABRDataset, tmp_path: Path) -> None:
    for path in (save_abr_npz(data, tmp_path / "d.npz"), save_abr_csv(data, tmp_path / "d.csv")):
        back = load_abr_dataset(path)
        np.testing.assert_allclose(back.signals, data.signals, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(back.static, data.static, rtol=1e-5)
        assert np.array_equal(back.peak_mask, data.peak_mask)
        np.testing.assert_allclose(back.peaks[back.peak_mask], data.peaks[data.peak_mask], rtol=1e-5)


def test_malformed_files_give_clear_errors(data: ABRDataset, tmp_path: Path) -> None:
    good = save_abr_csv(data.subset(slice(0, 3)), tmp_path / "good.csv")
    rows = list(csv.reader(good.open()))
    no_age = tmp_path / "no_age.csv"
    with no_age.open("w", newline="") as f:
        csv.writer(f).writerows([[c for c in row[1:]] for row in rows])
    with pytest.raises(SignalDataError, match=r"no_age.csv: missing column\(s\) age_years"):
        load_abr_dataset(no_age)
    rows[2][7] = "abc"
    bad_value = tmp_path / "bad_value.csv"
    with bad_value.open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    with pytest.raises(SignalDataError, match=r"bad_value.csv: row 3, column 'latency_III_ms': 'abc' is not a number"):
        load_abr_dataset(bad_value)
    np.savez(tmp_path / "no_static.npz", signals=data.signals)
    with pytest.raises(SignalDataError, match=r"no_static.npz: NPZ lacks array\(s\) \['static'\]"):
        load_abr_dataset(tmp_path / "no_static.npz")
    np.savez(tmp_path / "short.npz", signals=data.signals[:, :150], static=data.static)
    with pytest.raises(SignalDataError, match=r"short.npz: signals have 150 samples; expected 200"):
        load_abr_dataset(tmp_path / "short.npz")
    nan = data.signals.copy()
    nan[5, 3] = np.nan
    np.savez(tmp_path / "nan.npz", signals=nan, static=data.static)
    with pytest.raises(SignalDataError, match=r"nan.npz: signals has NaN/Inf values \(first in record 5\)"):
        load_abr_dataset(tmp_path / "nan.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(SignalDataError, match="junk.npz: cannot be read as NPZ"):
        load_abr_dataset(tmp_path / "junk.npz")
    with pytest.raises(SignalDataError, match=r"data.txt: unsupported dataset format '.txt'"):
        (tmp_path / "data.txt").write_text("x")
        load_abr_dataset(tmp_path / "data.txt")


# -- losses -----------------------------------------------------------------------------------------
def test_masked_peak_loss_ignores_absent_peaks() -> None:
    pred = torch.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    target = torch.tensor([[0.0, float("nan")], [3.0, float("nan")]])
    mask = torch.tensor([[True, False], [True, False]])
    loss = masked_mse(pred, target, mask)
    assert loss.item() == pytest.approx(0.5)  # (1^2 + 0^2) / 2 present entries
    loss.backward()
    assert torch.isfinite(pred.grad).all() and pred.grad[:, 1].abs().sum() == 0
    assert masked_mse(pred, target, torch.zeros_like(mask)).item() == 0.0


def test_kl_and_loss_terms() -> None:
    mu, logvar = torch.zeros(3, 4), torch.zeros(3, 4)
    assert kl_divergence(mu, logvar).item() == 0.0
    assert kl_divergence(torch.ones(3, 4), logvar).item() == pytest.approx(2.0)  # 0.5 * 4 dims * 1^2
    sig, stat = torch.zeros(2, 8), torch.ones(2, 3)
    peaks, mask = torch.zeros(2, 2), torch.tensor([[True, False], [False, False]])
    outputs = (torch.ones(2, 8), torch.zeros(2, 3), torch.ones(2, 2), torch.zeros(2, 2))
    w = CVAELossWeights(static=2.0, peak=3.0, presence=0.0)
    joint = cvae_loss(outputs, torch.ones(2, 4), torch.zeros(2, 4), sig, stat, peaks, mask, beta=0.5, weights=w, joint=True)
    assert joint["signal_mse"].item() == 1.0 and joint["static_mse"].item() == 1.0 and joint["peak_mse"].item() == 1.0
    assert joint["loss"].item() == pytest.approx(1.0 + 2.0 * 1.0 + 0.5 * 2.0 + 3.0 * 1.0)
    legacy = cvae_loss(outputs, torch.ones(2, 4), torch.zeros(2, 4), sig, stat, peaks, mask, beta=0.5, weights=w, joint=False)
    assert legacy["static_mse"].item() == 0.0 and legacy["loss"].item() == pytest.approx(1.0 + 1.0 + 3.0)


def test_beta_warmup() -> None:
    beta = BetaWarmup(max_beta=0.02, warmup_epochs=10)
    assert [beta(e) for e in (0, 5, 10, 40)] == pytest.approx([0.0, 0.01, 0.02, 0.02])
    assert BetaWarmup(0.3, 0)(0) == 0.3
    with pytest.raises(ValueError, match="max_beta"):
        BetaWarmup(-1.0)


# -- network modes ----------------------------------------------------------------------------------
def test_joint_and_legacy_modes() -> None:
    net = tiny_net(joint=True).eval()
    z = torch.randn(3, 4)
    a, b = torch.zeros(3, 6), torch.ones(3, 6)
    with torch.no_grad():
        joint_a, joint_b = net.decode(z, a), net.decode(z, b)
        assert torch.equal(joint_a[0], joint_b[0]) and torch.equal(joint_a[1], joint_b[1])  # joint ignores given parameters
        assert joint_a[0].shape == (3, 200) and joint_a[2].shape == (3, 6) and joint_a[3].shape == (3, 6)
        net.joint_generation = False
        legacy_a, legacy_b = net.decode(z, a), net.decode(z, b)
    assert not net.joint_generation and net.hyperparameters()["joint_generation"] is False
    assert torch.equal(legacy_a[1], a) and torch.equal(legacy_b[1], b)  # static passes through
    assert not torch.allclose(legacy_a[0], legacy_b[0])  # the signal depends on the condition
    with pytest.raises(ValueError, match="legacy mode"):
        net.decode(z, None)
    packed = net(net.pack(torch.randn(2, 200), torch.randn(2, 6)))
    assert packed.shape == (2, 1, 200 + 6 + 12)
    with pytest.raises(ValueError, match="joint mode"):
        sample_legacy(tiny_net(joint=True), np.zeros((1, 6)))
    with pytest.raises(ValueError, match="legacy mode"):
        sample_joint(tiny_net(joint=False), 2)


# -- training ---------------------------------------------------------------------------------------
def test_training_validates_each_epoch_and_resumes(data: ABRDataset, tmp_path: Path) -> None:
    cfg = CVAETrainingConfig(epochs=1, batch_size=32, checkpoint_every=1, warmup_epochs=2, max_beta=0.01)
    first = tiny_net()
    train_cvae(first, data, cfg, tmp_path, val_data=data.subset(slice(0, 16)))
    assert [n for n, _ in checkpoint_files(tmp_path)] == [1] and (tmp_path / "loss_curve.png").is_file()
    weights_after_one = {k: v.detach().clone() for k, v in load_checkpoint(tmp_path / "checkpoint_epoch=1.pt")["network"].items()}
    cfg2 = CVAETrainingConfig(epochs=2, batch_size=32, checkpoint_every=1, warmup_epochs=2, max_beta=0.01)
    second = tiny_net()
    steps = len(CVAEBatches(second, data, 32))
    train_cvae(second, data, cfg2, tmp_path, val_data=data.subset(slice(0, 16)))  # resumes after epoch 1
    assert load_checkpoint(tmp_path / "checkpoint_epoch=2.pt")["trainer"]["iteration"] == 2 * steps
    logged = log_rows(tmp_path / "train_log.csv")
    assert [s for s, _ in logged["loss"]] == list(range(1, 2 * steps + 1))  # one row per iteration, continued after the resume
    assert [s for s, _ in logged["val_loss"]] == [steps, 2 * steps] and all(np.isfinite(v) for _, v in logged["val_loss"])
    betas = dict(logged["beta"])  # linear warm-up over 2 epochs, per fractional epoch: 0 at the start, 0.005 half-way, 0.01 from epoch 2
    assert betas[1] == pytest.approx(0.0) and betas[steps + 1] == pytest.approx(0.005)
    assert any(not torch.equal(v, second.state_dict()[k]) for k, v in weights_after_one.items())  # epoch 2 trained on top of epoch 1
    assert float(second.signal_noise_spectrum.sum()) > 0  # observation model fitted
    assert float(second.prior_weights.sum()) == pytest.approx(1.0) and int((second.prior_weights > 0).sum()) >= 1
    state = torch.load(tmp_path / "model.pt", map_location="cpu", weights_only=True)
    assert torch.equal(state["signal_noise_spectrum"], second.signal_noise_spectrum.cpu())
    with pytest.raises(ValueError, match="the network expects"):
        train_cvae(SignalCVAE(signal_length=96, latent_dim=4, hidden=16), data, cfg, tmp_path / "other")


# -- sampling and outputs ---------------------------------------------------------------------------
def test_sampling_is_deterministic_with_a_seed(data: ABRDataset) -> None:
    net = tiny_net()
    net.set_normalization(torch.as_tensor(data.signals), torch.as_tensor(data.static))
    net.signal_noise_spectrum.fill_(1.0)
    a, b, c = sample_joint(net, 5, seed=7), sample_joint(net, 5, seed=7), sample_joint(net, 5, seed=8)
    assert np.array_equal(a.signals, b.signals) and np.array_equal(a.static, b.static)
    assert not np.allclose(a.signals, c.signals)
    assert (a.static >= net.static_min.numpy() - 1e-5).all() and (a.static <= net.static_max.numpy() + 1e-5).all()
    net.joint_generation = False
    given = np.array([NORMAL, [60.0, 1.0, 40.0, 51.1, 20.0, 1000.0]], dtype=np.float32)
    legacy = sample_legacy(net, given, n=3, seed=1)
    assert legacy.signals.shape == (6, 200) and np.array_equal(legacy.static, np.repeat(given, 3, axis=0))
    assert np.array_equal(sample_legacy(net, given, n=3, seed=1).signals, legacy.signals)


def test_outputs_carry_provenance(data: ABRDataset, tmp_path: Path) -> None:
    net = tiny_net()
    net.set_normalization(torch.as_tensor(data.signals), torch.as_tensor(data.static))
    out = generate_abr_samples(net, "joint", 4, 0, tmp_path / "s.npz", generator_name="abr_joint_cvae", generator_version="0.1.0",
                               weights_sha256="0" * 64)
    side = read_provenance(out)["sidecar"]
    assert side["ai_generated"] is True and side["record"]["task"] == "abr_joint_generation" and side["record"]["seed"] == 0
    assert side["record"]["parameters"]["num_records"] == 4 and "Not for diagnostic use" in side["disclosure"]
    assert verify_provenance(out).status == "intact"
    assert load_abr_dataset(out).signals.shape == (4, 200)
    params = tmp_path / "params.csv"
    params.write_text(",".join(STATIC_NAMES) + "\n" + ",".join(str(v) for v in NORMAL) + "\n")
    net.joint_generation = False
    csv_out = generate_abr_samples(net, "legacy", 2, 0, tmp_path / "legacy.csv", static_file=params)
    record = read_provenance(csv_out)["sidecar"]["record"]
    assert record["inputs"][0]["role"] == "static_parameters" and verify_provenance(csv_out).status == "intact"
    with pytest.raises(ImageWriteError, match="is an input of this run"):
        generate_abr_samples(net, "legacy", 2, 0, params, static_file=params)
    assert params.read_text().startswith("age_years")  # the input is untouched
    with csv_out.open("a") as f:
        f.write("tampered\n")
    assert verify_provenance(csv_out).status == "modified"


# -- CLI --------------------------------------------------------------------------------------------
def test_cli_simulate_train_sample_evaluate(tmp_path: Path, capsys) -> None:
    train, val = tmp_path / "train.npz", tmp_path / "val.csv"
    assert main(["cvae", "simulate", "--n", "64", "--seed", "0", "--output", str(train)]) == 0
    assert main(["cvae", "simulate", "--n", "24", "--seed", "1", "--output", str(val)]) == 0
    assert verify_provenance(train).status == "intact"
    run = tmp_path / "run"
    assert main(["cvae", "train", "--data", str(train), "--val", str(val), "--out", str(run), "--epochs", "1", "--latent-dim", "4",
                 "--hidden", "16", "--batch-size", "32"]) == 0
    assert json.loads((run / "model_config.json").read_text())["joint_generation"] is True
    out = tmp_path / "samples.csv"
    assert main(["cvae", "sample", "--model", str(run), "--n", "5", "--seed", "3", "--output", str(out)]) == 0
    assert len(load_abr_dataset(out)) == 5 and verify_provenance(out).status == "intact"
    assert main(["cvae", "sample", "--model", str(run), "--mode", "legacy", "--static", str(val), "--output", str(tmp_path / "x.npz")]) == 2
    assert "trained in joint mode" in capsys.readouterr().err
    assert main(["cvae", "sample", "--model", str(run), "--n", "2", "--output", str(tmp_path / "x.txt")]) == 2
    assert main(["cvae", "evaluate", "--model", str(run), "--data", str(val), "--out", str(tmp_path / "eval")]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["mmd"]["mmd2_heldout_a_vs_b"] > 0 and metrics["reconstruction"]["signal_rmse"] > 0
    assert (tmp_path / "eval" / "calibration.png").is_file() and (tmp_path / "eval" / "signals.png").is_file()
    assert main(["cvae", "train", "--data", str(tmp_path / "missing.npz"), "--out", str(run)]) == 2
    assert "missing.npz: file not found" in capsys.readouterr().err


# -- the shipped bundle -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def legacy_net() -> SignalCVAE:
    from medgen_core.bundles.cvae import load_cvae

    return load_cvae(str(BUNDLE), None, "legacy")[0]


def test_legacy_sampling_honours_the_given_static_parameters(legacy_net: SignalCVAE) -> None:
    """Generated wave V latency follows the simulator's latency-intensity function for the given parameters."""
    intensities = np.arange(30.0, 91.0, 10.0)
    grid = static_grid(np.array(NORMAL), 2, intensities)
    gen = sample_legacy(legacy_net, grid, n=40, seed=0)
    latency_v = np.nanmean(gen.peaks[:, 2].reshape(len(intensities), 40), axis=1)
    want = expected_peaks(grid)[0][:, 2]
    assert np.all(np.diff(latency_v) < 0), f"generated wave V latency must fall with intensity: {latency_v}"
    assert np.abs(latency_v - want).max() < 0.25, f"generated {latency_v} vs simulator {want}"
    # and a hearing loss leaves only wave V at 40 dB nHL (15 dB SL), as the simulator says
    loss = sample_legacy(legacy_net, np.array([[50.0, 1.0, 40.0, 21.1, 25.0, 2000.0]]), n=40, seed=1)
    assert loss.peak_mask[:, 0].mean() < 0.1 and loss.peak_mask[:, 1].mean() < 0.1 and loss.peak_mask[:, 2].mean() > 0.9


def test_bundle_inference_writes_samples_with_provenance(tmp_path: Path) -> None:
    from medgen_core.bundles.runner import run_bundle_inference

    params = tmp_path / "params.csv"
    params.write_text(",".join(STATIC_NAMES) + "\n" + ",".join(str(v) for v in NORMAL) + "\n")
    out = run_bundle_inference(BUNDLE, params, tmp_path / "legacy.npz", overrides={"mode": "legacy", "num_samples": 3, "device": "$torch.device('cpu')"})
    got = load_abr_dataset(out)
    assert got.signals.shape == (3, 200) and np.allclose(got.static, NORMAL)
    record = read_provenance(out)["sidecar"]["record"]
    assert record["bundle_id"].startswith("abr_joint_cvae@") and len(record["weights_sha256"]) == 64
    assert verify_provenance(out).status == "intact"
    joint = run_bundle_inference(BUNDLE, params, tmp_path / "joint.csv", overrides={"num_samples": 4, "device": "$torch.device('cpu')"})
    assert len(load_abr_dataset(joint)) == 4 and read_provenance(joint)["sidecar"]["record"]["task"] == "abr_joint_generation"
    assert set(PEAK_NAMES) <= set(next(csv.reader(joint.open())))
    image = run_bundle_inference(BUNDLE, params, tmp_path / "joint.nii.gz", overrides={"num_samples": 3, "device": "$torch.device('cpu')"})
    from medgen_core.io import read_volume

    volume = read_volume(image)  # waveforms only, one row per record, 0.05 ms per pixel
    assert volume.shape == (3, 200, 1) and volume.spacing[1] == pytest.approx(0.05) and verify_provenance(image).status == "intact"


def test_multi_gpu_train_config_under_torchrun_two_cpu_processes(tmp_path: Path) -> None:
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr", "127.0.0.1", "--master_port", str(port),
        "-m", "monai.bundle", "run", "--config_file", "['configs/train.json','configs/multi_gpu_train.json']",
        "--meta_file", "configs/metadata.json", "--bundle_root", ".", "--epochs", "1", "--num_train", "64", "--num_val", "16",
        "--network_def#latent_dim", "4", "--network_def#hidden", "16", "--batch_size", "16", "--train_config#prior_components", "2",
        "--train_config#checkpoint_every", "1", "--log_every", "1", "--output_dir", str(out),
    ]  # fmt: skip
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=BUNDLE, env=env, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=240)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    state = torch.load(out / "model.pt", map_location="cpu", weights_only=True)
    assert not any(k.startswith(("module.", "net.")) for k in state)
    SignalCVAE(latent_dim=4, hidden=16).load_state_dict(state, strict=True)
    shards = json.loads((out / "data_shards.json").read_text())
    rank0, rank1 = set(shards["shards"]["0"]), set(shards["shards"]["1"])
    assert shards["world_size"] == 2 and len(rank0) == len(rank1) == 32 and not rank0 & rank1
    logged = log_rows(out / "train_log.csv")  # rank 0 alone writes
    assert [s for s, _ in logged["loss"]] == [1, 2] and [s for s, _ in logged["val_loss"]] == [2]
