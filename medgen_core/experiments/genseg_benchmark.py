"""The GenSeg benchmark: brain tissue segmentation from 9 labelled MNI152 slices, five methods, paired draws.

Per draw (:func:`~medgen_core.data.tissue_slices.draw_slices`), every method trains a freshly initialised
segmenter (the same initial weights for all methods of a draw) with the same budget (:class:`SegBudget`) and
the same validation-based model selection:

* ``a_plain``: U-Net on the 7 real pairs;
* ``b_classic``: + classic joint spatial / intensity augmentation;
* ``c_separate``: (b) + synthetic pairs from a frozen Pix2Pix (stage 1 only) on augmented real masks;
* ``d_genseg``: GenSeg end to end (stage 1, then stage 2 with the explicit bilevel step), same augmentation;
* ``e_more_labels``: (b) with 30 labelled train slices instead of 7 (same 2 validation slices).

(c) and (d) start from the same stage-1 generator. Every method is scored (Dice, IoU per class;
:func:`~medgen_core.evaluation.segmentation_metrics.segmentation_scores`) on the in-domain test slices, the
anatomy-shift slices and those slices under each acquisition shift. ``results.json`` is rewritten after every
method run, so an interrupted benchmark leaves usable partial results (:mod:`.genseg_report` summarises them).
"""

from __future__ import annotations

import copy
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from medgen_core.data.tissue_slices import (
    ACQUISITION_SHIFTS,
    TISSUE_CLASSES,
    TissueSlices,
    acquisition_shift,
    anatomy_shift_indices,
    draw_slices,
    tissue_slices,
)
from medgen_core.evaluation.segmentation_metrics import segmentation_scores
from medgen_core.training.genseg import GenSegConfig
from medgen_core.training.segmentation import (
    SEGMENTERS,
    GeneratorSpec,
    SegBudget,
    build_segmenter,
    frozen_synthesizer,
    predict_labels,
    pretrain_searchable_generator,
    train_genseg,
    train_segmenter,
)
from medgen_core.transforms.seg_augment import ClassicSegAugment

__all__ = ["METHODS", "GenSegBenchmarkConfig", "TestSets", "build_test_sets", "run_benchmark", "run_draw"]

METHODS = ("a_plain", "b_classic", "c_separate", "d_genseg", "e_more_labels")
METHOD_LABELS = {
    "a_plain": "(a) plain U-Net",
    "b_classic": "(b) + classic augmentation",
    "c_separate": "(c) separate (frozen Pix2Pix)",
    "d_genseg": "(d) GenSeg end to end",
    "e_more_labels": "(e) (b) with 30 labels",
}


@dataclass
class GenSegBenchmarkConfig:
    """Settings of the benchmark; the defaults are the reported ones.

    Args:
        draws: paired draws (seeds ``seed, seed + 1, ...``).
        seed: first draw seed.
        methods: which of :data:`METHODS` to run.
        steps, batch_size, lr, eval_every, pretrain_steps: the budget (:class:`SegBudget`), equal for all methods.
        segmenter: one of :data:`~medgen_core.training.segmentation.SEGMENTERS`.
        channels: segmenter encoder widths.
        lambda_syn: weight of the synthetic loss in (c) and (d).
        upper_params: GenSeg upper level, ``"arch"`` or ``"arch+generator"``.
        lr_arch: Adam learning rate of the architecture logits.
        lr_gen_upper: learning rate of the generator weights at the upper level (``arch+generator``).
        n_train, n_val, n_reference: slices per draw (7 + 2; 30 for ``e_more_labels``).
        generator: size of the mask -> image generator.
        threads: torch CPU threads (1 keeps runs comparable on a shared machine).
    """

    draws: int = 5
    seed: int = 0
    methods: tuple[str, ...] = METHODS
    steps: int = 400
    batch_size: int = 4
    lr: float = 1e-3
    eval_every: int = 50
    pretrain_steps: int = 800
    segmenter: str = "unet"
    channels: tuple[int, ...] = (16, 32, 64, 128)
    lambda_syn: float = 1.0
    upper_params: str = "arch+generator"
    lr_arch: float = 3e-3
    lr_gen_upper: float | None = 2e-4
    n_train: int = 7
    n_val: int = 2
    n_reference: int = 30
    generator: GeneratorSpec = field(default_factory=GeneratorSpec)
    threads: int = 1

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise ValueError(f"GenSegBenchmarkConfig: methods must be a non-empty subset of {list(METHODS)}, got {list(self.methods)}.")
        if self.segmenter not in SEGMENTERS:
            raise ValueError(f"GenSegBenchmarkConfig: segmenter must be one of {list(SEGMENTERS)}, got {self.segmenter!r}.")
        for name in ("draws", "steps", "batch_size", "eval_every", "pretrain_steps", "threads"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"GenSegBenchmarkConfig: {name} must be >= 1, got {getattr(self, name)}.")
        if isinstance(self.generator, dict):
            self.generator = GeneratorSpec(**self.generator)
        self.methods, self.channels = tuple(self.methods), tuple(int(c) for c in self.channels)

    @property
    def budget(self) -> SegBudget:
        return SegBudget(self.steps, self.batch_size, self.lr, self.eval_every, self.pretrain_steps)

    def genseg_config(self, seed: int) -> GenSegConfig:
        return GenSegConfig(num_classes=len(TISSUE_CLASSES), lambda_syn=self.lambda_syn, lr_seg=self.lr, lr_arch=self.lr_arch,
                            lr_gen_upper=self.lr_gen_upper, upper_params=self.upper_params, seed=seed,
                            augment=copy.deepcopy(self.generator.mask_augment))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["generator"]["mask_augment"] = asdict(self.generator.mask_augment)
        return d


@dataclass
class TestSets:
    """Images in [0, 1] and labels of every test set except the per-draw in-domain one."""

    anatomy: TissueSlices
    shifted: dict[str, torch.Tensor]


def build_test_sets() -> TestSets:
    """Anatomy-shift slices and their acquisition-shifted copies (shift ``i`` seeded with ``i``)."""
    anatomy = tissue_slices(anatomy_shift_indices())
    return TestSets(anatomy, {name: acquisition_shift(anatomy.image, name, seed=i) for i, name in enumerate(ACQUISITION_SHIFTS)})


def evaluate(segmenter: torch.nn.Module, in_domain: TissueSlices, tests: TestSets) -> dict[str, dict]:
    """Scores of ``segmenter`` on ``in_domain``, ``anatomy`` and each acquisition shift."""
    sets = {"in_domain": (in_domain.image, in_domain.label), "anatomy": (tests.anatomy.image, tests.anatomy.label)}
    sets.update({name: (img, tests.anatomy.label) for name, img in tests.shifted.items()})
    return {name: segmentation_scores(predict_labels(segmenter, img), lab, TISSUE_CLASSES) for name, (img, lab) in sets.items()}


def run_draw(config: GenSegBenchmarkConfig, draw_index: int, tests: TestSets,
             on_result: Callable[[dict], None] | None = None) -> list[dict]:
    """Train and score every configured method on draw ``draw_index``; returns one record per method."""
    seed = config.seed + draw_index
    draw = draw_slices(seed, config.n_train, config.n_val, config.n_reference)
    train, val, ref, test = (tissue_slices(z) for z in (draw.train, draw.val, draw.reference_train, draw.test))
    budget, classes = config.budget, len(TISSUE_CLASSES)
    torch.manual_seed(seed)
    init_state = build_segmenter(config.segmenter, classes, config.channels).state_dict()
    stage1 = None
    records = []
    for method in config.methods:
        t0 = time.time()
        segmenter = build_segmenter(config.segmenter, classes, config.channels)
        segmenter.load_state_dict(init_state)
        augment = None if method == "a_plain" else ClassicSegAugment(seed=seed)
        extra: dict = {}
        if method in ("c_separate", "d_genseg") and stage1 is None:
            t_pre = time.time()
            stage1 = pretrain_searchable_generator(train.image, train.label, classes, config.generator, budget.pretrain_steps,
                                                   budget.batch_size, seed)
            extra["pretrain_seconds"] = time.time() - t_pre
        if method == "c_separate":
            info = train_segmenter(segmenter, train.image, train.label, val.image, val.label, budget, classes, augment,
                                   synthesize=frozen_synthesizer(stage1[0], classes), lambda_syn=config.lambda_syn,
                                   mask_params=config.generator.mask_augment, seed=seed, desc=f"draw {seed} {method}")
        elif method == "d_genseg":
            generator, discriminator = copy.deepcopy(stage1[0]), copy.deepcopy(stage1[1])
            info = train_genseg(segmenter, generator, discriminator, train.image, train.label, val.image, val.label, budget,
                                config.genseg_config(seed), augment, seed=seed, desc=f"draw {seed} {method}")
        else:
            data = ref if method == "e_more_labels" else train
            info = train_segmenter(segmenter, data.image, data.label, val.image, val.label, budget, classes, augment,
                                   seed=seed, desc=f"draw {seed} {method}")
        record = {"draw": seed, "method": method, "seconds": time.time() - t0, "best_val_loss": info["best_val_loss"],
                  "scores": evaluate(segmenter, test, tests), "slices": asdict(draw), **extra}
        for key in ("arch_weights", "derived_kernels"):
            if key in info:
                record[key] = info[key]
        if "hypergrad_norm" in info and info["hypergrad_norm"]:
            record["mean_hypergrad_norm"] = sum(info["hypergrad_norm"]) / len(info["hypergrad_norm"])
        records.append(record)
        if on_result is not None:
            on_result(record)
    return records


def _write_json_atomic(path: Path, obj: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=4, allow_nan=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def run_benchmark(config: GenSegBenchmarkConfig, out_dir: str | Path,
                  on_record: Callable[[dict, list[dict]], None] | None = None) -> dict:
    """Run every draw; ``<out_dir>/results.json`` (config, records, elapsed seconds) is rewritten after each run.

    ``on_record(record, all_records)`` is called after each method run (e.g. to refresh the report).
    Returns the final ``results.json`` content.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    t0 = time.time()
    results = {"benchmark": "genseg_brain_tissue", "config": config.to_dict(), "records": [], "seconds": 0.0, "complete": False}

    def save(record: dict) -> None:
        results["records"].append(record)
        results["seconds"] = time.time() - t0
        _write_json_atomic(out / "results.json", results)
        if on_record is not None:
            on_record(record, results["records"])

    try:
        tests = build_test_sets()
        for i in range(config.draws):
            run_draw(config, i, tests, on_result=save)
        results["complete"] = True
        results["seconds"] = time.time() - t0
        _write_json_atomic(out / "results.json", results)
    finally:
        torch.set_num_threads(previous_threads)
    return results
