"""``medgen cvae``: the signal CVAE for ABR-like records (200-sample signal, 6 static parameters, 6 peaks).

    medgen cvae simulate --n 4000 --seed 0 --output train.npz          # simulated ABR dataset (.npz or .csv)
    medgen cvae train --data train.npz --val val.npz --out runs/joint --mode joint --epochs 50
    medgen cvae sample --bundle abr_joint_cvae --n 100 --seed 0 --output samples.npz          # joint: from noise
    medgen cvae sample --bundle abr_joint_cvae --mode legacy --static params.csv --n 5 --output legacy.csv
    medgen cvae sample --model runs/joint --n 100 --output samples.npz                       # a model you trained
    medgen cvae evaluate --bundle abr_joint_cvae --data heldout.npz --out eval/              # metrics.json + PNGs

Training data may be your own CSV/NPZ (format: :mod:`medgen_core.data.abr_dataset`). ``--model DIR`` is
a ``medgen cvae train`` output folder (``model.pt`` + ``model_config.json``); ``--bundle`` loads the
bundle's weights after checking their sha256. Every generated file gets a ``.generated.json`` sidecar.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from medgen_core.cli._common import (
    add_device_argument,
    check_device,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    resolve_device,
)
from medgen_core.data.abr_dataset import PEAK_NAMES, STATIC_NAMES, SignalDataError, load_abr_dataset

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("cvae", help="signal CVAE (ABR): simulate data, train, sample (joint / legacy), evaluate",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cvae_command", metavar="ACTION", required=True)
    sim = sub.add_parser("simulate", help="write a simulated ABR dataset (.npz or .csv) with a provenance sidecar")
    sim.add_argument("--n", type=positive_int, default=4000, help="records (>= 1)")
    sim.add_argument("--seed", type=non_negative_int, default=0)
    sim.add_argument("--output", type=Path, required=True, help="dataset file (.npz or .csv)")
    sim.set_defaults(func=_simulate)

    tr = sub.add_parser("train", help="train a CVAE on a dataset file (checkpoints: re-running resumes)")
    tr.add_argument("--data", type=Path, required=True, help="training records (.npz or .csv)")
    tr.add_argument("--val", type=Path, default=None, help="validation records (loss logged per epoch)")
    tr.add_argument("--out", type=Path, required=True, help="output folder (model.pt, model_config.json, checkpoint.pt, train_log.csv, loss_curve.png)")
    tr.add_argument("--mode", choices=("joint", "legacy"), default="joint")
    tr.add_argument("--epochs", type=positive_int, default=50)
    tr.add_argument("--batch-size", type=positive_int, default=64)
    tr.add_argument("--lr", type=positive_float, default=1e-3)
    tr.add_argument("--latent-dim", type=positive_int, default=32)
    tr.add_argument("--hidden", type=positive_int, default=256)
    tr.add_argument("--max-beta", type=non_negative_float, default=0.005, help="final KL weight")
    tr.add_argument("--warmup-epochs", type=non_negative_int, default=10, help="epochs of the linear beta warm-up")
    tr.add_argument("--static-weight", type=non_negative_float, default=1.0)
    tr.add_argument("--peak-weight", type=non_negative_float, default=1.0)
    tr.add_argument("--seed", type=non_negative_int, default=0)
    tr.add_argument("--no-resume", action="store_true", help="start again even if a checkpoint exists")
    add_device_argument(tr, default="cpu")
    tr.set_defaults(func=_train)

    for name, helptext in (("sample", "generate records (joint: from noise; legacy: given static parameters)"),
                           ("evaluate", "reconstruction errors, MMD vs held-out split halves, calibration, peak errors; JSON + PNGs")):
        sp = sub.add_parser(name, help=helptext)
        src = sp.add_mutually_exclusive_group(required=True)
        src.add_argument("--bundle", default=None, help="bundle name or folder (e.g. abr_joint_cvae)")
        src.add_argument("--model", type=Path, default=None, help="a 'medgen cvae train' output folder")
        sp.add_argument("--mode", choices=("joint", "legacy"), default="joint")
        sp.add_argument("--seed", type=non_negative_int, default=0)
        add_device_argument(sp, default="cpu")
        if name == "sample":
            sp.add_argument("--n", type=positive_int, default=16, help="records (joint) or records per parameter set (legacy)")
            sp.add_argument("--static", type=Path, default=None, help="legacy: CSV with columns " + ", ".join(STATIC_NAMES))
            sp.add_argument("--output", type=Path, required=True, help="output file (.npz or .csv)")
            sp.add_argument("--no-noise", action="store_true", help="decoder means instead of samples of the full generative model")
            sp.set_defaults(func=_sample)
        else:
            sp.add_argument("--data", type=Path, required=True, help="held-out records (.npz or .csv)")
            sp.add_argument("--n", type=positive_int, default=None, help="generated records (default: half the held-out set)")
            sp.add_argument("--out", type=Path, required=True, help="folder for metrics.json and the PNGs")
            sp.set_defaults(func=_evaluate)


def _check_output(path: Path, inputs: tuple[Path | None, ...] = ()) -> None:
    from medgen_core.inference.cvae_outputs import OUTPUT_SUFFIXES

    if not any(path.name.lower().endswith(s) for s in OUTPUT_SUFFIXES):
        raise SignalDataError(f"{path}: unsupported output format {path.suffix or '(none)'!r}; expected one of {', '.join(OUTPUT_SUFFIXES)}")
    for item in inputs:
        if item is not None and path.exists() and item.exists() and path.resolve() == item.resolve():
            raise SignalDataError(f"{path}: output is an input file; refusing to overwrite an input")


def _simulate(args: argparse.Namespace) -> int:
    _check_output(args.output)
    if args.n < 1:
        raise SignalDataError(f"--n must be >= 1, got {args.n}")
    from medgen_core import __version__
    from medgen_core.data.abr_simulator import simulate_abr_dataset
    from medgen_core.inference.cvae_outputs import SIMULATION_DISCLOSURE, write_abr_records
    from medgen_core.provenance import GenerationMetadata

    data = simulate_abr_dataset(args.n, args.seed)

    meta = GenerationMetadata.create(generator_name="abr_simulator", generator_version=__version__, task="abr_simulation",
                                     parameters={"n": args.n, "static_names": list(STATIC_NAMES), "peak_names": list(PEAK_NAMES)}, seed=args.seed)
    meta.disclosure = SIMULATION_DISCLOSURE
    write_abr_records(data, args.output, meta)
    print(f"wrote {len(data)} simulated records to {args.output} (+ {args.output.name}.generated.json)")
    return 0


def _train(args: argparse.Namespace) -> int:
    from medgen_core.networks.cvae import SignalCVAE
    from medgen_core.provenance import sha256_file
    from medgen_core.training.cvae import CVAETrainingConfig, train_cvae

    check_device(args.device)
    args.device = resolve_device(args.device)
    train = load_abr_dataset(args.data)
    val = load_abr_dataset(args.val) if args.val is not None else None
    net = SignalCVAE(signal_length=train.signals.shape[1], num_static=train.static.shape[1], latent_dim=args.latent_dim,
                     hidden=args.hidden, joint_generation=args.mode == "joint")
    config = CVAETrainingConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, max_beta=args.max_beta, warmup_epochs=args.warmup_epochs,
                                static_weight=args.static_weight, peak_weight=args.peak_weight, seed=args.seed)
    try:
        model_path = train_cvae(net, train, config, args.out, val_data=val, device=args.device, resume=not args.no_resume)
    except ValueError as err:
        raise SignalDataError(f"{args.out}: {err}") from err
    (args.out / "model_config.json").write_text(json.dumps(net.hyperparameters(), indent=2) + "\n", encoding="utf-8")
    print(f"trained {args.mode} CVAE for {args.epochs} epochs on {len(train)} records -> {model_path} (sha256 {sha256_file(model_path)})")
    return 0


def _sample(args: argparse.Namespace) -> int:
    check_device(args.device)
    args.device = resolve_device(args.device)
    _check_output(args.output, (args.static,))
    if args.n < 1:
        raise SignalDataError(f"--n must be >= 1, got {args.n}")
    from medgen_core.bundles.cvae import load_cvae
    from medgen_core.inference.cvae_outputs import generate_abr_samples

    net, prov = load_cvae(args.bundle, args.model, args.mode, args.device)
    path = generate_abr_samples(net, args.mode, args.n, args.seed, args.output, static_file=args.static,
                                observation_noise=not args.no_noise, **prov)
    print(f"wrote {args.mode} samples to {path} (+ {path.name}.generated.json)")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    import torch

    from medgen_core.data.abr_simulator import time_axis_ms
    from medgen_core.evaluation.signal_metrics import (calibration, mmd_report, peak_errors, plot_calibration, plot_signals,
                                                        reconstruction_errors)
    from medgen_core.inference.cvae_sampling import sample_joint, sample_legacy
    from medgen_core.provenance import sha256_file
    from medgen_core.training.cvae import normalized_tensors

    check_device(args.device)
    args.device = resolve_device(args.device)
    heldout = load_abr_dataset(args.data)
    from medgen_core.bundles.cvae import load_cvae

    net, prov = load_cvae(args.bundle, args.model, args.mode, args.device)
    n = args.n or max(len(heldout) // 2, 2)
    gen = sample_joint(net, n, args.seed) if args.mode == "joint" else sample_legacy(net, heldout.static, 1, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"mode": args.mode, "generator": prov, "heldout": str(args.data), "heldout_sha256": sha256_file(args.data), "seed": args.seed}
    report["mmd"] = mmd_report(gen.signals, gen.static, heldout.signals, heldout.static, seed=args.seed)
    report["calibration"] = calibration(heldout.static, gen.static, STATIC_NAMES) if args.mode == "joint" else {}
    with torch.no_grad():
        t = normalized_tensors(net, heldout, next(net.parameters()).device)
        mu, _ = net.encode(t["signal"], t["static"])
        sig, stat, peaks, logits = net.decode(mu, t["static"])
        recon_signal, recon_static, recon_peaks = (v.cpu().numpy() for v in net.denormalize(sig, stat, peaks))
    report["reconstruction"] = reconstruction_errors(heldout.signals, recon_signal, heldout.static, recon_static, STATIC_NAMES)
    if heldout.peaks is not None and net.num_peaks:
        present = torch.sigmoid(logits).cpu().numpy() >= 0.5
        report["peaks_from_posterior_mean"] = peak_errors(recon_peaks, present, heldout.peaks, heldout.peak_mask, PEAK_NAMES)
    (args.out / "metrics.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if args.mode == "joint":
        plot_calibration(heldout.static, gen.static, STATIC_NAMES, args.out / "calibration.png", "static parameters: held-out vs generated")
    k = min(6, len(heldout), len(gen))
    plot_signals(time_axis_ms(heldout.signals.shape[1]), {"held-out": heldout.signals[:k], f"generated ({args.mode})": gen.signals[:k]},
                 args.out / "signals.png")
    m = report["mmd"]
    print(f"MMD^2 generated vs held-out {m['mmd2_generated_vs_heldout']:.5f}, held-out A vs B {m['mmd2_heldout_a_vs_b']:.5f}, "
          f"ratio {m['ratio']:.2f} ({'<=' if m['passes_2x'] else '>'} 2); signal RMSE {report['reconstruction']['signal_rmse']:.4f} uV -> {args.out}")
    return 0
