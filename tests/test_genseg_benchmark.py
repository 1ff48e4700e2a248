"""GenSeg benchmark: MNI152 tissue labels at 2 mm, paired draws disjoint from the test slices, acquisition shifts,
Dice/IoU on hand-made masks, classic augmentation, one tiny end-to-end benchmark run (JSON + markdown + PNG) and
the CLI's errors on bad arguments."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from medgen_core.cli.main import main
from medgen_core.data.samples import load_mni152_brain_mask, load_mni152_tissue_probabilities, mni152_tissue_labels
from medgen_core.data.tissue_slices import (
    ACQUISITION_SHIFTS,
    SLICE_SIZE,
    TRAIN_Z_RANGE,
    acquisition_shift,
    anatomy_shift_indices,
    draw_slices,
    majority_downsample,
    mni_tissue_volume_2mm,
    tissue_slices,
)
from medgen_core.experiments.genseg_benchmark import GenSegBenchmarkConfig, run_benchmark
from medgen_core.experiments.genseg_report import markdown_report, paired_difference
from medgen_core.evaluation.segmentation_metrics import segmentation_scores
from medgen_core.training.segmentation import build_segmenter
from medgen_core.transforms.seg_augment import ClassicSegAugment, intensity_jitter


def test_tissue_labels_four_classes_and_csf_is_mask_minus_gm_wm() -> None:
    labels = mni152_tissue_labels()
    mask = load_mni152_brain_mask()
    gm, wm = load_mni152_tissue_probabilities()
    assert set(np.unique(labels).tolist()) == {0, 1, 2, 3}
    assert not labels[~mask].any() and (labels[mask] > 0).all()  # background exactly outside the brain mask
    csf = np.clip(1 - gm - wm, 0, 1)
    inside = mask & (csf > gm + 1e-3) & (csf > wm + 1e-3)  # the remainder dominates -> CSF
    assert (labels[inside] == 1).all() and inside.sum() > 1000
    gm_wins = mask & (gm > wm + 1e-3) & (gm > csf + 1e-3)
    assert (labels[gm_wins] == 2).all()


def test_majority_downsample_and_2mm_volume() -> None:
    lab = np.zeros((4, 4, 2), dtype=np.uint8)
    lab[:2, :2, :] = 3
    lab[0, 0, 0] = 1  # one voxel of eight does not change the block's majority
    lab[2:, 2:, :] = 2
    lab[2, 2, :] = 1
    lab[3, 3, :] = 1
    lab[2, 3, :] = 1  # six of eight are 1
    out = majority_downsample(lab, 4)
    assert out.shape == (2, 2, 1) and out[0, 0, 0] == 3 and out[1, 1, 0] == 1 and out[0, 1, 0] == 0
    t1, labels = mni_tissue_volume_2mm()
    assert t1.shape == labels.shape == (98, 116, 94) and 0 <= t1.min() and t1.max() <= 1
    # white matter is brighter than grey matter, which is brighter than CSF, in the T1 template
    means = [t1[labels == c].mean() for c in (1, 2, 3)]
    assert means[0] < means[1] < means[2]


def test_draws_are_paired_nested_and_disjoint_from_test() -> None:
    a, b, other = draw_slices(3), draw_slices(3), draw_slices(4)
    assert a == b and a != other  # a seed fixes the draw (every method sees the same slices)
    assert len(a.train) == 7 and len(a.val) == 2 and len(a.reference_train) == 30
    assert set(a.train) <= set(a.reference_train)
    assert not set(a.val) & set(a.reference_train)
    used = set(a.reference_train) | set(a.val)
    assert not used & set(a.test) and used | set(a.test) == set(range(*TRAIN_Z_RANGE))
    assert not set(anatomy_shift_indices()) & set(range(*TRAIN_Z_RANGE))
    with pytest.raises(ValueError, match="n_reference"):
        draw_slices(0, n_reference=50)
    s = tissue_slices(a.train)
    assert s.image.shape == s.label.shape == (7, 1, *SLICE_SIZE) and s.label.dtype == torch.int64
    assert torch.equal(s.z, torch.tensor(a.train))


def test_each_acquisition_shift_changes_the_image_reproducibly() -> None:
    images = tissue_slices([66, 70]).image
    for name in ACQUISITION_SHIFTS:
        shifted = acquisition_shift(images, name, seed=1)
        assert shifted.shape == images.shape and 0 <= shifted.min() and shifted.max() <= 1
        assert (shifted - images).abs().mean() > 0.005, name
        assert torch.equal(shifted, acquisition_shift(images, name, seed=1)), name
    with pytest.raises(ValueError, match="unknown shift"):
        acquisition_shift(images, "motion")


def test_scores_on_hand_made_masks() -> None:
    target = torch.zeros(2, 1, 4, 4, dtype=torch.long)
    target[0, 0, :2, :2] = 1  # 4 px class 1
    target[1, 0, 2:, :] = 2  # 8 px class 2
    pred = target.clone()
    pred[0, 0, 0, 0] = 0  # class 1: 3 of 4 found
    pred[1, 0, 0, :2] = 2  # class 2: 2 false positives
    s = segmentation_scores(pred, target, ["bg", "one", "two", "three"])
    assert s["dice"]["one"] == pytest.approx(2 * 3 / (3 + 4)) and s["iou"]["one"] == pytest.approx(3 / 4)
    assert s["dice"]["two"] == pytest.approx(2 * 8 / (10 + 8)) and s["iou"]["two"] == pytest.approx(8 / 10)
    assert math.isnan(s["dice"]["three"])  # absent from both: undefined, left out of the mean
    assert s["dice"]["mean"] == pytest.approx((6 / 7 + 16 / 18) / 2)
    perfect = segmentation_scores(target, target, ["bg", "one", "two", "three"])
    assert perfect["dice"]["mean"] == 1.0 and perfect["iou"]["mean"] == 1.0
    with pytest.raises(ValueError, match="differ"):
        segmentation_scores(pred[:1], target, ["bg", "one", "two", "three"])


def test_classic_augmentation_is_joint_and_seeded() -> None:
    s = tissue_slices([40, 41])
    x1, m1 = ClassicSegAugment(seed=5)(s.image, s.label)
    x2, m2 = ClassicSegAugment(seed=5)(s.image, s.label)
    assert torch.equal(x1, x2) and torch.equal(m1, m2)
    assert not torch.equal(m1, s.label) and set(m1.unique().tolist()) <= {0, 1, 2, 3}
    # joint: the image's brain (bright pixels) moves with the label map's foreground
    assert ((x1 > 0.15) == (m1 > 0)).float().mean() > 0.9
    g = torch.Generator().manual_seed(0)
    y = s.scaled().requires_grad_(True)
    out = intensity_jitter(y, g)
    out.sum().backward()
    assert out.shape == y.shape and y.grad.abs().sum() > 0  # differentiable (GenSeg keeps the generator's graph)


@pytest.mark.parametrize("name", ["attention_unet", "basic_unet"])
def test_other_monai_segmenters_by_name(name: str) -> None:
    channels = (8, 8, 16, 16, 32) if name == "basic_unet" else (8, 16, 32, 64)
    net = build_segmenter(name, 4, channels)
    assert net(torch.zeros(1, 1, *SLICE_SIZE)).shape == (1, 4, *SLICE_SIZE)
    with pytest.raises(ValueError, match="unknown segmenter"):
        build_segmenter("vnet", 4)


def test_tiny_benchmark_end_to_end(tmp_path) -> None:
    cfg = GenSegBenchmarkConfig(draws=2, steps=4, pretrain_steps=2, eval_every=2, batch_size=2, channels=(4, 8))
    results = run_benchmark(cfg, tmp_path)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["complete"] and len(saved["records"]) == 10
    assert {r["method"] for r in saved["records"]} == set(cfg.methods)
    for r in saved["records"]:
        assert set(r["scores"]) == {"in_domain", "anatomy", *ACQUISITION_SHIFTS}
        assert 0 <= r["scores"]["in_domain"]["dice"]["mean"] <= 1
    genseg = [r for r in saved["records"] if r["method"] == "d_genseg"]
    assert all(len(r["derived_kernels"]) == cfg.generator.num_downs for r in genseg)
    # same draw -> same test slices for every method; (d) - (b) is a real paired difference
    first = [r for r in saved["records"] if r["draw"] == 0]
    assert len({json.dumps(r["slices"]) for r in first}) == 1
    diff = paired_difference(saved["records"], "d_genseg", "b_classic")["in_domain"]
    by = {(r["draw"], r["method"]): r["scores"]["in_domain"]["dice"]["mean"] for r in saved["records"]}
    assert diff[0] == pytest.approx(np.mean([by[(d, "d_genseg")] - by[(d, "b_classic")] for d in (0, 1)]))
    text = markdown_report(results, {})
    assert "| d_genseg |" in text and "d genseg − b classic" in text and "acq. shift mean" in text


def test_cli_benchmark_writes_outputs_and_refuses_bad_args(tmp_path, capsys) -> None:
    out = tmp_path / "bench"
    args = ["genseg", "benchmark", "--out", str(out), "--draws", "1", "--steps", "2", "--pretrain-steps", "1",
            "--eval-every", "1", "--methods", "a_plain", "b_classic", "--threads", "1"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "Foreground Dice" in printed and "(b) + classic augmentation" in printed
    assert (out / "results.json").is_file() and (out / "results.md").is_file() and (out / "dice_bars.png").is_file()
    assert main(args) == 2  # results already there: refused without --force
    assert "already holds results.json" in capsys.readouterr().err
    # another process's draws (here: the same records relabelled as draw 1) merge into one report; duplicates are
    # dropped and runs with a different budget are refused
    first = json.loads((out / "results.json").read_text())
    second, other = tmp_path / "seed1", tmp_path / "steps3"
    second.mkdir()
    other.mkdir()
    relabelled = {**first, "config": {**first["config"], "seed": 1}, "records": [{**r, "draw": 1} for r in first["records"]]}
    (second / "results.json").write_text(json.dumps(relabelled))
    (other / "results.json").write_text(json.dumps({**first, "config": {**first["config"], "steps": 3}}))
    merged = tmp_path / "merged"
    assert main(["genseg", "report", "--merge", str(out), str(second), str(out), "--out", str(merged)]) == 0
    data = json.loads((merged / "results.json").read_text())
    assert sorted((r["draw"], r["method"]) for r in data["records"]) == [(0, "a_plain"), (0, "b_classic"), (1, "a_plain"), (1, "b_classic")]
    assert "draws [0, 1] (2)" in (merged / "results.md").read_text() and (merged / "dice_bars.png").is_file()
    capsys.readouterr()
    assert main(["genseg", "report", "--merge", str(out), str(other), "--out", str(tmp_path / "m2")]) == 2
    err = capsys.readouterr().err
    assert "settings differ" in err and "(steps)" in err
    assert main(["genseg", "report", "--merge", str(out), "--out", str(out)]) == 2
    assert "refusing to overwrite an input" in capsys.readouterr().err
    assert main(["genseg", "benchmark", "--out", str(tmp_path / "x"), "--steps", "0"]) == 2
    assert "--steps must be >= 1, got 0" in capsys.readouterr().err
    assert main(["genseg", "benchmark"]) == 2
    assert "--out DIR is required" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["genseg", "benchmark", "--out", str(tmp_path / "y"), "--methods", "f_magic"])
    assert main(["genseg", "segment", str(tmp_path / "missing.nii.gz"), str(tmp_path / "out.nii.gz")]) == 2
    assert "missing.nii.gz" in capsys.readouterr().err
