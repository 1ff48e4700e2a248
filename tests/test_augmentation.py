"""Generative augmentation: config, LRU generator cache, diffusers backend (tiny offline pipelines),
the training-time batch transform, and provenance on every synthetic sample."""

from __future__ import annotations

import gc
import json
import shutil
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch

from augmentation_testing import save_tiny_ddpm_pipeline, save_tiny_sd_pipeline
from medgen_core.augmentation import AugmentationConfig, DiffusersBackend, GenerativeAugmentationManager
from medgen_core.errors import AugmentationError
from medgen_core.augmentation.transform import PROVENANCE_KEY, RandGenerativeAugmentd, synthetic_mask


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path_factory.mktemp("hf_home")))


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory) -> Path:
    """base_dir with t1_a .. t1_d (tiny DDPM pipelines) and sd_any (a tiny Stable Diffusion pipeline)."""
    base = tmp_path_factory.mktemp("generators")
    first = save_tiny_ddpm_pipeline(base / "t1_a", seed=0)
    for i, name in enumerate(("t1_b", "t1_c", "t1_d"), start=1):
        save_tiny_ddpm_pipeline(base / name, seed=i) if name == "t1_b" else shutil.copytree(first, base / name)
    save_tiny_sd_pipeline(base / "sd_any")
    return base


def _config(**kw) -> AugmentationConfig:
    base = {"modality": "t1", "classes": ["a", "b", "c", "d"], "enabled": True, "inference_steps": 2, "max_models": 3}
    return AugmentationConfig(**{**base, **kw})


# -- config -----------------------------------------------------------------------------------------
def test_config_defaults_off_and_validates(tmp_path) -> None:
    assert AugmentationConfig().enabled is False  # the baseline: off unless switched on
    with pytest.raises(AugmentationError, match=r"prob must be in \[0, 1\], got 1.5"):
        AugmentationConfig(prob=1.5)
    with pytest.raises(AugmentationError, match="mix_ratio_range must be"):
        AugmentationConfig(mix_ratio_range=(0.5, 0.2))
    with pytest.raises(AugmentationError, match=r"unknown augmentation setting\(s\) \['probability'\]"):
        AugmentationConfig.from_dict({"probability": 0.3})
    with pytest.raises(AugmentationError, match="per_class names classes that are not in classes"):
        AugmentationConfig(classes=["a"], per_class={"b": {"prob": 0.1}})


def test_config_from_json_yaml_bundle_and_per_class(tmp_path) -> None:
    settings = {"modality": "t1", "classes": ["gm", "wm"], "enabled": True, "prob": 0.3, "per_class": {"wm": {"prob": 0.7, "strength": 0.2}}}
    (tmp_path / "aug.json").write_text(json.dumps(settings))
    (tmp_path / "aug.yaml").write_text("augmentation:\n" + "".join(f"  {k}: {json.dumps(v)}\n" for k, v in settings.items()))
    (tmp_path / "train.json").write_text(json.dumps({"p": 0.3, "augmentation": {**settings, "prob": "@p"}}))
    for cfg in (AugmentationConfig.from_file(tmp_path / "aug.json"), AugmentationConfig.from_file(tmp_path / "aug.yaml", section="augmentation"),
                AugmentationConfig.from_bundle_config(tmp_path / "train.json")):
        assert cfg.prob == 0.3 and cfg.for_class("gm").prob == 0.3
        assert cfg.for_class("wm").prob == 0.7 and cfg.for_class("wm").strength == 0.2
    assert "t1 MRI of the brain, wm" == AugmentationConfig.from_file(tmp_path / "aug.json").prompt("wm")


# -- manager ----------------------------------------------------------------------------------------
def test_lru_limit_eviction_and_memory_is_freed(model_dirs) -> None:
    manager = GenerativeAugmentationManager(model_dirs, _config(), device="cpu")
    a = manager.get("a")
    unet_ref = weakref.ref(a.pipe.unet)
    del a
    manager.get("b"), manager.get("c")
    assert manager.cached == ["t1_a", "t1_b", "t1_c"] and manager.stats.misses == 3
    manager.get("a")  # hit: a becomes most recently used
    assert manager.cached == ["t1_b", "t1_c", "t1_a"] and manager.stats.hits == 1
    manager.get("d")  # evicts b, the least recently used
    assert manager.cached == ["t1_c", "t1_a", "t1_d"] and manager.stats.evictions == 1
    assert manager.memory_bytes() == 3 * sum(p.numel() * 4 for p in manager.get("c").pipe.unet.parameters())
    manager.clear()
    gc.collect()
    assert unet_ref() is None, "an evicted generator's weights are still referenced"
    assert manager.stats.evictions == 4 and manager.cached == []


def test_missing_and_corrupt_generator_directories(model_dirs, tmp_path) -> None:
    base = tmp_path / "base"
    base.mkdir()
    (base / "t1_a").mkdir()
    (base / "t1_a" / "model_index.json").write_text("{not json")
    (base / "t1_b").mkdir()
    manager = GenerativeAugmentationManager(base, _config(), device="cpu")
    with pytest.raises(AugmentationError, match="t1_a: not a loadable diffusers pipeline directory"):
        manager.get("a")
    with pytest.raises(AugmentationError, match="t1_b: not a generator directory any loader recognises"):
        manager.get("b")
    with pytest.raises(AugmentationError, match=r"t1_c: no generator for modality/class 't1_c' \(found: \['t1_a', 't1_b'\]\)"):
        manager.get("c")
    with pytest.raises(AugmentationError, match="generator base directory not found"):
        GenerativeAugmentationManager(tmp_path / "nowhere", _config())


def test_refused_inside_dataloader_workers(model_dirs) -> None:
    manager = GenerativeAugmentationManager(model_dirs, _config(), device="cpu")

    class Probe(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 1

        def __getitem__(self, i: int) -> str:
            try:
                manager.get("a")
            except AugmentationError as err:
                return str(err)
            return "loaded"

    loader = torch.utils.data.DataLoader(Probe(), num_workers=1, batch_size=None, multiprocessing_context="fork")
    assert "in data-loader worker 0" in next(iter(loader))


def test_diffusers_text_to_image_and_image_to_image_are_seeded(model_dirs) -> None:
    backend = DiffusersBackend(model_dirs / "sd_any")
    assert backend.capabilities == ("sample", "vary") and backend.identity.kind == "diffusers"
    assert len(backend.identity.weights_sha256) == 64
    make = lambda s: backend.sample(2, prompt="t1 brain", steps=2, guidance_scale=3.0, generator=torch.Generator().manual_seed(s), size=(32, 32))  # noqa: E731
    x, y, z = make(0), make(0), make(1)
    assert x.shape == (2, 1, 32, 32) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert torch.equal(x, y) and not torch.equal(x, z)
    v = backend.vary(torch.rand(2, 1, 32, 32), strength=0.5, prompt="t1 brain", steps=4, generator=torch.Generator().manual_seed(0))
    assert v.shape == (2, 1, 32, 32)


def test_generate_records_provenance_per_sample(model_dirs) -> None:
    manager = GenerativeAugmentationManager(model_dirs, _config(), device="cpu")
    made = manager.generate("b", 3, seed=7)
    assert made.images.shape == (3, 1, 32, 32) and len(made.records) == 3
    for i, rec in enumerate(made.records):
        assert rec["synthetic"] is True and "AI-generated" in rec["disclosure"]
        assert rec["generator_name"] == "t1_b" and rec["seed"] == 7 and rec["weights_sha256"] == manager.get("b").identity.weights_sha256
        assert rec["parameters"]["class_name"] == "b" and rec["parameters"]["index_in_batch"] == i and rec["parameters"]["steps"] == 2
    again = manager.generate("b", 3, seed=7)
    assert torch.equal(made.images, again.images)


# -- transform --------------------------------------------------------------------------------------
def _batch(n: int = 8, classes=None) -> dict:
    return {"image": torch.rand(n, 1, 32, 32), "label": torch.as_tensor(classes if classes is not None else [i % 4 for i in range(n)])}


def test_transform_only_in_training_and_only_when_enabled(model_dirs) -> None:
    aug = RandGenerativeAugmentd(GenerativeAugmentationManager(model_dirs, _config(prob=1.0, mix_ratio_range=(0.5, 0.5))))
    batch = _batch()
    out = aug.eval()(batch)
    assert torch.equal(out["image"], batch["image"]) and not synthetic_mask(out["image"]).any()
    off = RandGenerativeAugmentd(GenerativeAugmentationManager(model_dirs, _config(enabled=False, prob=1.0)))
    assert not synthetic_mask(off(batch)["image"]).any() and off.manager.stats.misses == 0
    out = aug.train()(batch)
    mask = synthetic_mask(out["image"])
    assert int(mask.sum()) == 4  # ratio 0.5 of 8
    assert torch.equal(out["image"][~mask], batch["image"][~mask]) and not torch.equal(out["image"][mask], batch["image"][mask])
    records = out["image"].meta[PROVENANCE_KEY]
    assert [r is not None for r in records] == mask.tolist()
    for i in torch.nonzero(mask)[:, 0].tolist():  # each synthetic sample came from its own class's generator
        assert records[i]["parameters"]["class_name"] == "abcd"[int(batch["label"][i])]


def test_mix_ratio_prob_and_batch_limit_over_many_batches(model_dirs) -> None:
    aug = RandGenerativeAugmentd(GenerativeAugmentationManager(model_dirs, _config(prob=0.5, mix_ratio_range=(0.1, 0.5), batch_limit=3,
                                                                                      classes=["a"], max_models=1)), class_key=None)
    counts = [int(synthetic_mask(aug(_batch(8))["image"]).sum()) for _ in range(200)]
    augmented = [c for c in counts if c > 0]
    assert 0.38 < aug.batches_augmented / 200 < 0.62  # prob 0.5
    assert max(counts) == 3  # batch_limit
    expected = np.mean([min(3, r * 8) for r in np.linspace(0.1, 0.5, 1001)])
    assert abs(np.mean(augmented) - expected) < 0.35, (np.mean(augmented), expected)
    assert aug.stats()["cache_misses"] == 1 and aug.stats()["cache_hits"] == aug.batches_augmented - 1


def test_add_mode_extends_batch_and_labels_and_is_deterministic(model_dirs) -> None:
    cfg = _config(prob=1.0, mix_ratio_range=(0.25, 0.25), mix_mode="add", seed=3)
    runs = []
    for _ in range(2):
        aug = RandGenerativeAugmentd(GenerativeAugmentationManager(model_dirs, cfg))
        torch.manual_seed(0)
        runs.append(aug(_batch(8)))
    out = runs[0]
    assert out["image"].shape[0] == 10 and out["label"].shape[0] == 10
    assert synthetic_mask(out["image"]).tolist() == [False] * 8 + [True] * 2
    for i in (8, 9):
        assert out["image"].meta[PROVENANCE_KEY][i]["parameters"]["class_name"] == "abcd"[int(out["label"][i])]
    assert torch.equal(runs[0]["image"], runs[1]["image"])  # same seed: same synthetic samples


# -- CLI --------------------------------------------------------------------------------------------
def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    from medgen_core.cli.main import main

    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_generate_dataset_with_manifest_montage_and_provenance(model_dirs, tmp_path, capsys) -> None:
    import csv

    from medgen_core.provenance import verify_provenance

    cfg = tmp_path / "aug.json"
    cfg.write_text(json.dumps({"generators": str(model_dirs), "augmentation": {"modality": "t1", "classes": ["a", "b"], "inference_steps": 2}}))
    code, out, err = _cli(capsys, "augment", "--config", cfg, "--out", tmp_path / "synth", "--n", 5, "--seed", 11)
    assert code == 0, err
    files = sorted((tmp_path / "synth").glob("synthetic_*.nii.gz"))
    assert [f.name for f in files] == [f"synthetic_{i:05d}_{'ab'[i % 2]}.nii.gz" for i in range(5)]
    with open(tmp_path / "synth" / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["class_name"] for r in rows] == ["a", "b", "a", "b", "a"] and all(len(r["pixel_sha256"]) == 64 for r in rows)
    assert (tmp_path / "synth" / "montage.png").stat().st_size > 1000
    for f in files:
        assert verify_provenance(f).status == "intact"
        assert (f.parent / (f.name + ".generated.json")).is_file()


def test_cli_variants_of_a_volume_keep_grid_and_record_the_input(model_dirs, tmp_path, capsys) -> None:
    import nibabel as nib

    from medgen_core.provenance import read_provenance, verify_provenance

    base = tmp_path / "gens"
    base.mkdir()
    (base / "t1").symlink_to(model_dirs / "sd_any", target_is_directory=True)  # one generator for every class
    affine = np.array([[0.9, 0.1, 0, -10], [-0.1, 0.9, 0, 5], [0, 0, 2.0, 3], [0, 0, 0, 1]])
    src = tmp_path / "t1.nii.gz"
    nib.save(nib.Nifti1Image((np.random.default_rng(0).random((32, 32, 3)) * 300).astype(np.float32), affine), str(src))
    code, out, err = _cli(capsys, "augment", "variants", src, "--generators", base, "--config", _write(tmp_path / "c.json", {"classes": ["x"], "inference_steps": 4}),
                          "--k", 2, "--strength", 0.4, "--out", tmp_path / "var")
    assert code == 0, err
    outs = sorted((tmp_path / "var").glob("*.nii.gz"))
    assert [o.name for o in outs] == ["t1_variant1.nii.gz", "t1_variant2.nii.gz"]
    a, b = (nib.load(str(o)) for o in outs)
    assert a.shape == (32, 32, 3) and np.allclose(a.affine, affine, atol=1e-5)
    assert not np.array_equal(a.get_fdata(), b.get_fdata())  # different seeds per variant
    assert 0 <= a.get_fdata().min() and a.get_fdata().max() <= 300 * 1.01
    record = read_provenance(outs[0])["sidecar"]["record"]
    assert record["inputs"][0]["path"].endswith("t1.nii.gz") and record["parameters"]["strength"] == 0.4
    assert verify_provenance(outs[0]).status == "intact"


def test_cli_augment_bad_requests(tmp_path, capsys, model_dirs) -> None:
    code, _, err = _cli(capsys, "augment", "--out", tmp_path / "o")
    assert code == 2 and "give --config (an augmentation config) or --bundle" in err
    code, _, err = _cli(capsys, "augment", "--config", _write(tmp_path / "bad.json", {"classes": ["a"], "prob": 3}), "--generators", model_dirs,
                        "--out", tmp_path / "o")
    assert code == 2 and "prob must be in [0, 1], got 3" in err
    assert not (tmp_path / "o").exists()


def _write(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj))
    return path


# -- experiment harness -----------------------------------------------------------------------------
def test_classification_metrics_match_hand_computed_values() -> None:
    from medgen_core.experiments.augmentation import classification_metrics

    y_true = np.array([0, 0, 0, 1, 1, 2])
    y_pred = np.array([0, 0, 1, 1, 2, 2])
    m = classification_metrics(y_true, y_pred, 3)
    assert m["accuracy"] == pytest.approx(4 / 6)
    # per-class F1: 0.8, 0.5, 2/3
    assert m["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    pe = (3 * 2 + 2 * 2 + 1 * 2) / 36
    assert m["kappa"] == pytest.approx((4 / 6 - pe) / (1 - pe))
    assert classification_metrics(y_true, y_true, 3)["kappa"] == 1.0


def test_experiment_harness_runs_every_condition_and_writes_reports(model_dirs, tmp_path) -> None:
    from medgen_core.experiments.augmentation import ExperimentConfig, run_experiment

    g = torch.Generator().manual_seed(0)
    labels = torch.arange(4).repeat_interleave(6)
    images = (torch.rand(24, 1, 32, 32, generator=g) * 0.3 + labels[:, None, None, None] * 0.2).clamp(0, 1)
    base = tmp_path / "gens"
    base.mkdir()
    (base / "t1").symlink_to(model_dirs / "t1_a", target_is_directory=True)
    manager = GenerativeAugmentationManager(base, _config(classes=["a", "b", "c", "d"]))
    cfg = ExperimentConfig(train_per_class=2, image_size=32, iterations=6, batch_size=8, seeds=[0, 1], probs=[1.0], mix_ratio_ranges=[[0.5, 0.5]],
                           inference_steps=[2], bank_per_class=3)
    result = run_experiment(images, labels, ["a", "b", "c", "d"], manager, tmp_path / "exp", cfg, progress=False)
    conditions = [s["condition"] for s in result["summary"]]
    assert conditions == ["baseline", "real_duplicate", "generative p=1.0 mix=[0.5,0.5] steps=2"]
    runs = {(r["condition"], r["seed"]): r for r in result["runs"]}
    assert runs[("baseline", 0)]["synthetic_samples"] == 0
    assert runs[("generative", 0)]["synthetic_samples"] == 6 * 4  # prob 1, half of every batch of 8, 6 iterations
    assert runs[("real_duplicate", 1)]["synthetic_samples"] > 0
    assert all(-1 <= s["kappa"] <= 1 and s["runs"] == 2 for s in result["summary"])
    by_name = {s["condition"]: s for s in result["summary"]}
    assert by_name["baseline"]["kappa_delta"] == 0.0 and by_name["baseline"]["kappa_delta_sd"] == 0.0
    gen = by_name["generative p=1.0 mix=[0.5,0.5] steps=2"]
    paired = [runs[("generative", s)]["kappa"] - runs[("baseline", s)]["kappa"] for s in (0, 1)]
    assert gen["kappa_delta"] == pytest.approx(np.mean(paired)) and gen["kappa_delta_sd"] == pytest.approx(np.std(paired, ddof=1))
    assert (tmp_path / "exp" / "results.png").stat().st_size > 1000
    assert "| baseline |" in (tmp_path / "exp" / "results.md").read_text()
    assert json.loads((tmp_path / "exp" / "results.json").read_text())["num_test_slices"] == 16


def test_cli_experiment_runs_the_stand_in_task_with_the_shipped_ddpm_bundle(tmp_path, capsys) -> None:
    """``medgen augment experiment`` on the MNI152 slices with the real DDPM bundle, at a tiny budget."""
    code, out, err = _cli(capsys, "augment", "experiment", "--bundle", "brain_slice_ddpm", "--out", str(tmp_path / "exp"), "--seeds", "0",
                          "--probs", "1.0", "--mix-ranges", "0.5,0.5", "--steps-sweep", "2", "--iterations", "3", "--bank-per-class", "2")
    assert code == 0, err
    result = json.loads((tmp_path / "exp" / "results.json").read_text())
    assert result["classes"] == ["inferior", "lower_middle", "upper_middle", "superior"]
    assert result["generator"] == "brain_slice_ddpm"
    assert [s["condition"] for s in result["summary"]] == ["baseline", "real_duplicate", "generative p=1.0 mix=[0.5,0.5] steps=2"]
    runs = {r["condition"]: r for r in result["runs"]}
    assert runs["generative"]["synthetic_samples"] == 3 * 8  # prob 1: half of every batch of 16, 3 iterations
    assert result["num_unseen_test_slices"] == 28 and 0 <= runs["baseline"]["unseen_accuracy"] <= 1  # the held-out slab z=76..103
    assert "| baseline |" in out and "generator-unseen slab" in out


def test_cli_experiment_bad_arguments(tmp_path, capsys) -> None:
    code, _, err = _cli(capsys, "augment", "experiment", "--bundle", "brain_slice_ddpm")
    assert code == 2 and "--out" in err
    with pytest.raises(SystemExit):
        _cli(capsys, "augment", "experiment", "--bundle", "brain_slice_ddpm", "--out", str(tmp_path), "--mix-ranges", "0.6,0.2")
    assert "0 <= LO <= HI <= 1" in capsys.readouterr().err


@pytest.mark.parametrize("bundle, source", [("brain_slice_ddpm", "sample"), ("brain_slice_ddpm", "vary"), ("brain_tissue_to_t1_pix2pix", "labels")])
def test_transform_with_the_shipped_bundles_as_generators(tmp_path, bundle, source) -> None:
    """The batch transform over the MONAI-diffusion and translation backends (real bundles, real weights)."""
    from medgen_core.bundles import get_bundle
    from medgen_core.bundles.generators import bundle_loaders

    info = get_bundle(bundle)
    base = tmp_path / "gens"
    base.mkdir()
    (base / "t1").symlink_to(info.path, target_is_directory=True)
    classes = ["inferior", "superior"]
    cfg = _config(classes=classes, prob=1.0, mix_ratio_range=(0.5, 0.5), inference_steps=2, strength=0.3, source=source)
    aug = RandGenerativeAugmentd(GenerativeAugmentationManager(base, cfg, device="cpu", loaders=bundle_loaders()), class_key="class",
                                 label_key="seg" if source == "labels" else None)
    g = torch.Generator().manual_seed(0)
    seg = torch.randint(0, 4, (4, 1, 64, 64), generator=g)
    image = torch.rand(4, 1, 64, 64, generator=g)
    batch = aug({"image": image, "class": torch.tensor([0, 1, 0, 1]), "seg": seg})
    mask = synthetic_mask(batch["image"])
    assert int(mask.sum()) == 2 and batch["image"].shape == (4, 1, 64, 64)
    assert torch.equal(batch["image"][~mask], image[~mask])  # real samples untouched
    assert not torch.allclose(batch["image"][mask], image[mask])
    assert 0 <= float(batch["image"].min()) and float(batch["image"].max()) <= 1
    expected = {v["sha256"] for v in info.metadata["medgen"]["variants"].values()} if "variants" in info.metadata["medgen"] else None
    for i in np.nonzero(mask.numpy())[0]:
        record = batch["image"].meta[PROVENANCE_KEY][i]
        assert record["generator_name"] == bundle and record["task"] == f"augment_{source}"
        assert record["bundle_id"] == info.bundle_id and record["disclosure"].startswith("AI-generated")
        if expected:
            assert record["weights_sha256"] in expected
