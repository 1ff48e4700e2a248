"""``medgen genseg``: the GenSeg benchmark, and brain tissue segmentation with the GenSeg bundle.

    medgen genseg benchmark --out DIR                 # the reported benchmark (5 paired draws, 5 methods; 57 min on one shared CPU thread)
    medgen genseg benchmark --out DIR --draws 1 --steps 50 --pretrain-steps 50     # a quick look
    medgen genseg report --merge DIR1 DIR2 --out DIR  # one report from several (partial) runs, e.g. draws split over processes
    medgen genseg segment t1.nii.gz tissue.nii.gz --bundle brain_tissue_genseg     # label map with provenance

The benchmark writes ``results.json`` (rewritten after every method run, so partial results survive an
interruption), ``results.md`` (the tables, also printed) and ``dice_bars.png`` into ``--out``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from medgen_core.cli._common import add_device_argument, check_device, check_output_path, device_override, non_negative_int
from medgen_core.errors import MedGenError

__all__ = ["register"]

logger = logging.getLogger(__name__)

# The choices and defaults the options show, copied from medgen_core.experiments.genseg_benchmark (METHODS,
# GenSegBenchmarkConfig) and medgen_core.training.segmentation (SEGMENTERS): importing those loads MONAI, which
# would make 'medgen genseg --help' take seconds. tests/test_cli_startup.py keeps the copies equal.
METHODS = ("a_plain", "b_classic", "c_separate", "d_genseg", "e_more_labels")
SEGMENTERS = ("unet", "attention_unet", "basic_unet")
BENCHMARK_DEFAULTS = {"draws": 5, "seed": 0, "steps": 400, "pretrain_steps": 800, "batch_size": 4, "eval_every": 50,
                      "segmenter": "unet", "lambda_syn": 1.0, "upper_params": "arch+generator", "threads": 1}


def register(subparsers: argparse._SubParsersAction) -> None:
    d = argparse.Namespace(**BENCHMARK_DEFAULTS, methods=METHODS)
    p = subparsers.add_parser("genseg", help="GenSeg: benchmark (9 labelled slices, 5 methods) and tissue segmentation",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=("benchmark", "report", "segment"),
                   help="benchmark: run the paired comparison; report: merge results.json files; segment: label a T1 volume")
    p.add_argument("input", nargs="?", type=Path, default=None, help="segment: T1 volume (.nii/.nii.gz, .nrrd, .mha, DICOM)")
    p.add_argument("output", nargs="?", type=Path, default=None, help="segment: output label map (.nii/.nii.gz/.nrrd)")
    p.add_argument("--bundle", default="brain_tissue_genseg", help="segment: segmentation bundle (default brain_tissue_genseg)")
    add_device_argument(p, what="segment: compute device")
    b = p.add_argument_group("benchmark (defaults: the reported settings)")
    b.add_argument("--out", type=Path, default=None, help="benchmark: output folder (results.json, results.md, dice_bars.png)")
    b.add_argument("--draws", type=int, default=d.draws, help=f"paired draws (default {d.draws})")
    b.add_argument("--seed", type=non_negative_int, default=d.seed, help=f"first draw seed, >= 0 (default {d.seed})")
    b.add_argument("--methods", nargs="+", default=list(d.methods), choices=METHODS, help="methods to run (default: all)")
    b.add_argument("--steps", type=int, default=d.steps, help=f"segmenter updates per method (default {d.steps})")
    b.add_argument("--pretrain-steps", type=int, default=d.pretrain_steps, help=f"Pix2Pix stage-1 updates (default {d.pretrain_steps})")
    b.add_argument("--batch-size", type=int, default=d.batch_size, help=f"real pairs per update (default {d.batch_size})")
    b.add_argument("--eval-every", type=int, default=d.eval_every, help=f"validation check interval (default {d.eval_every})")
    b.add_argument("--segmenter", default=d.segmenter, choices=SEGMENTERS, help=f"MONAI segmenter (default {d.segmenter})")
    b.add_argument("--lambda-syn", type=float, default=d.lambda_syn, help=f"synthetic-loss weight (default {d.lambda_syn})")
    b.add_argument("--upper-params", default=d.upper_params, choices=("arch", "arch+generator"),
                   help=f"GenSeg upper-level parameters (default {d.upper_params})")
    b.add_argument("--threads", type=int, default=d.threads, help=f"torch CPU threads (default {d.threads})")
    b.add_argument("--force", action="store_true", help="benchmark: replace results already in --out")
    b.add_argument("--merge", type=Path, nargs="+", default=None, metavar="DIR",
                   help="report: benchmark folders (or results.json files) to merge; the first record of a (draw, method) wins")
    p.add_argument("--progress", default=None, choices=("bar", "json"), help="'json' also prints MEDGEN_PROGRESS lines (for GUIs)")
    p.set_defaults(func=run, _genseg_parser=p)


def run(args: argparse.Namespace) -> int:
    from medgen_core.utils.progress import progress_mode

    with progress_mode(args.progress):
        return {"benchmark": _benchmark, "report": _report, "segment": _segment}[args.action](args)


def _check_benchmark_args(args: argparse.Namespace) -> None:
    if args.input is not None or args.output is not None:
        raise MedGenError("genseg benchmark takes no INPUT/OUTPUT; give the output folder with --out DIR")
    if args.out is None:
        raise MedGenError("genseg benchmark: --out DIR is required (results.json, results.md and dice_bars.png go there)")
    for name in ("draws", "steps", "pretrain_steps", "batch_size", "eval_every", "threads"):
        value = getattr(args, name)
        if value < 1:
            raise MedGenError(f"genseg benchmark: --{name.replace('_', '-')} must be >= 1, got {value}")
    if args.lambda_syn < 0:
        raise MedGenError(f"genseg benchmark: --lambda-syn must be >= 0, got {args.lambda_syn}")
    if args.out.exists() and not args.out.is_dir():
        raise MedGenError(f"{args.out}: --out must be a folder, but a file of that name exists")
    if (args.out / "results.json").exists() and not args.force:
        raise MedGenError(f"{args.out}: already holds results.json from an earlier run; choose another --out or pass --force")


def _benchmark(args: argparse.Namespace) -> int:
    from medgen_core.experiments.genseg_benchmark import METHOD_LABELS, GenSegBenchmarkConfig, run_benchmark
    from medgen_core.experiments.genseg_report import markdown_report, write_bar_chart

    _check_benchmark_args(args)
    config = GenSegBenchmarkConfig(draws=args.draws, seed=args.seed, methods=tuple(dict.fromkeys(args.methods)), steps=args.steps,
                                   pretrain_steps=args.pretrain_steps, batch_size=args.batch_size, eval_every=args.eval_every,
                                   segmenter=args.segmenter, lambda_syn=args.lambda_syn, upper_params=args.upper_params,
                                   threads=args.threads)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    def report(results: dict) -> str:
        text = markdown_report(results, METHOD_LABELS)
        tmp = out / ".results.md.tmp"
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(out / "results.md")
        return text

    def on_record(record: dict, records: list[dict]) -> None:
        dice = record["scores"]
        logger.info("draw %d %s: in-domain Dice %.3f, anatomy %.3f (%.0f s)", record["draw"], record["method"],
                    dice["in_domain"]["dice"]["mean"], dice["anatomy"]["dice"]["mean"], record["seconds"])
        import json

        report(json.loads((out / "results.json").read_text(encoding="utf-8")))

    results = run_benchmark(config, out, on_record=on_record)
    text = report(results)
    write_bar_chart(results, METHOD_LABELS, out / "dice_bars.png")
    print(text)
    print(f"wrote {out / 'results.json'}, {out / 'results.md'}, {out / 'dice_bars.png'} ({results['seconds'] / 60:.1f} min)")
    return 0


def _write_outputs(results: dict, out: Path) -> str:
    """``results.json``, ``results.md`` and ``dice_bars.png`` in ``out`` (atomic); returns the markdown."""
    import json
    import os

    from medgen_core.experiments.genseg_benchmark import METHOD_LABELS
    from medgen_core.experiments.genseg_report import markdown_report, write_bar_chart

    text = markdown_report(results, METHOD_LABELS)
    for name, content in (("results.json", json.dumps(results, indent=4) + "\n"), ("results.md", text)):
        tmp = out / f".{name}.tmp"
        tmp.write_text(content, encoding="utf-8")
        os.replace(tmp, out / name)
    write_bar_chart(results, METHOD_LABELS, out / "dice_bars.png")
    return text


def merge_results(sources: list[Path]) -> dict:
    """One results dict from several ``results.json`` (same settings except draws/seed); duplicates dropped.

    ``complete`` is true when every draw present has every configured method.
    """
    import json

    merged, seen, configs = None, set(), []
    for src in sources:
        path = src / "results.json" if src.is_dir() else src
        if not path.is_file():
            raise MedGenError(f"{src}: no results.json found (expected a benchmark --out folder or a results.json file)")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            records, config = data["records"], dict(data["config"])
        except (ValueError, KeyError, TypeError) as err:
            raise MedGenError(f"{path}: not a GenSeg benchmark results.json ({err})") from err
        for key in ("draws", "seed"):
            config.pop(key, None)
        configs.append(config)
        if configs[0] != config:
            changed = sorted(k for k in config if config.get(k) != configs[0].get(k))
            raise MedGenError(f"{path}: settings differ from {sources[0]} ({', '.join(changed)}); only runs with the same budget can be merged")
        if merged is None:
            merged = {**data, "records": [], "seconds": 0.0, "complete": True, "merged_from": []}
        merged["merged_from"].append(str(path))
        merged["seconds"] += float(data.get("seconds", 0.0))
        for r in records:
            key = (int(r["draw"]), r["method"])
            if key not in seen:
                seen.add(key)
                merged["records"].append(r)
    merged["records"].sort(key=lambda r: (int(r["draw"]), merged["config"]["methods"].index(r["method"])))
    draws = {int(r["draw"]) for r in merged["records"]}
    merged["config"]["draws"] = len(draws)
    methods = set(merged["config"]["methods"])
    # complete = every merged draw has every method (a run stopped after its last full draw still counts)
    merged["complete"] = all({r["method"] for r in merged["records"] if int(r["draw"]) == d} == methods for d in draws)
    return merged


def _report(args: argparse.Namespace) -> int:
    if not args.merge:
        raise MedGenError("genseg report: give the benchmark folders to merge with --merge DIR [DIR ...]")
    if args.out is None:
        raise MedGenError("genseg report: --out DIR is required")
    if args.out.exists() and not args.out.is_dir():
        raise MedGenError(f"{args.out}: --out must be a folder, but a file of that name exists")
    if any((src.resolve() == args.out.resolve()) for src in args.merge):
        raise MedGenError(f"{args.out}: --out is one of the merged folders; refusing to overwrite an input")
    results = merge_results(list(args.merge))
    args.out.mkdir(parents=True, exist_ok=True)
    text = _write_outputs(results, args.out)
    print(text)
    print(f"wrote {args.out / 'results.json'}, {args.out / 'results.md'}, {args.out / 'dice_bars.png'} "
          f"({len(results['records'])} runs from {len(args.merge)} sources)")
    return 0


def _segment(args: argparse.Namespace) -> int:
    from medgen_core.bundles import discover_bundles, get_bundle, run_bundle_inference
    from medgen_core.errors import BundleError
    from medgen_core.io import read_volume

    if args.input is None or args.output is None:
        raise MedGenError("genseg segment needs INPUT and OUTPUT, e.g. medgen genseg segment t1.nii.gz tissue.nii.gz")
    check_output_path(args.input, args.output)
    check_device(args.device)
    read_volume(args.input)  # fail fast with a clear message before loading a model
    bundle = get_bundle(args.bundle)
    if bundle.medgen_task != "segment":
        available = sorted(n for n, b in discover_bundles().items() if b.medgen_task == "segment")
        raise BundleError(f"bundle {bundle.name} is not a segmentation bundle (medgen.action is {bundle.medgen_task!r}); "
                          f"segmentation bundles: {', '.join(available) or 'none'}.")
    out = run_bundle_inference(bundle, args.input, args.output, device_override(args.device))
    result = read_volume(out)
    print(f"wrote {out} {result.shape} ({bundle.name}: tissue labels 0 background, 1 CSF, 2 grey matter, 3 white matter; "
          f"AI-derived); provenance in {out}.generated.json")
    return 0
