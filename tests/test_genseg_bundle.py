"""GenSeg segmentation outside the benchmark: the slice-by-slice VolumeSegmenter (geometry, in-plane resampling,
orientation), the bundle's train.json (MONAI's GanTrainer for the Pix2Pix stage, then a SupervisedTrainer with the
bilevel step, validation and model selection) that writes the bundle's weights, the GenSegTrainer hooks (synthetic
transform, separate GAN batch), and ``medgen genseg segment`` with the shipped bundle (provenance)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn as nn

from medgen_core.cli.main import main
from medgen_core.data.tissue_slices import mni_tissue_volume_2mm, tissue_slices
from medgen_core.inference.segment import VolumeSegmenter
from medgen_core.io import Volume, read_volume
from medgen_core.networks.gan import SearchablePix2PixUNet, build_patch_discriminator
from medgen_core.provenance import read_provenance, verify_provenance
from medgen_core.training.engines import checkpoint_files, load_checkpoint
from medgen_core.training.genseg import GenSegConfig, GenSegTrainer, ParameterAveraging
from medgen_core.training.segmentation import build_segmenter
from train_testing import log_rows, train


class _Threshold(nn.Module):
    """A 'segmenter' whose logits favour class 1 where the [-1, 1] input is above 0, else class 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([-x, x, torch.zeros_like(x) - 5, torch.zeros_like(x) - 5], 1)


def test_volume_segmenter_keeps_geometry_and_resamples_in_plane() -> None:
    arr = np.zeros((40, 30, 3), dtype=np.float32)
    arr[10:30, 5:25, :] = 100.0  # bright block -> class 1
    vol = Volume(array=arr, affine=np.diag([1.0, 1.0, 2.0, 1.0]), path=None, format="nifti")
    seen = []

    class Spy(_Threshold):
        def forward(self, x):
            seen.append(tuple(x.shape[2:]))
            return super().forward(x)

    out = VolumeSegmenter(Spy(), target_spacing_mm=2.0, size_multiple=8, progress=False)(vol)
    assert out.shape == vol.shape and np.array_equal(out.affine, vol.affine)
    assert seen[0] == (24, 16)  # 40 x 30 px at 1 mm -> 20 x 15 at 2 mm, padded to multiples of 8
    labels = out.array
    assert set(np.unique(labels).tolist()) == {0.0, 1.0}
    assert (labels[12:28, 7:23] == 1).all() and (labels[:8] == 0).all()
    # a flipped storage order (LAS) gives the same labels in its own order
    flipped = Volume(array=arr[::-1].copy(), affine=np.diag([-1.0, 1.0, 2.0, 1.0]), path=None, format="nifti")
    out_f = VolumeSegmenter(_Threshold(), progress=False)(flipped)
    assert np.array_equal(out_f.array[::-1], labels)


def test_trainer_hooks_syn_transform_and_gan_batch() -> None:
    torch.manual_seed(0)
    s = tissue_slices([40, 41])
    g = SearchablePix2PixUNet(2, 4, 1, num_downs=4, features=4)
    d = build_patch_discriminator(2, 5, features=4, num_layers=2, norm="INSTANCE")
    seen = []

    def syn_transform(x: torch.Tensor) -> torch.Tensor:
        seen.append(x.requires_grad)
        return x * 0.5

    trainer = GenSegTrainer(g, d, build_segmenter("unet", 4, (4, 8)), GenSegConfig(lr_arch=0.1), syn_transform=syn_transform)
    batch = {"image": s.scaled(), "label": s.label}
    before = torch.cat([a.detach().clone().reshape(-1) for a in g.arch_parameters()])
    stats = trainer.outer_step(batch, batch, gan_batch={"image": s.scaled(), "label": s.label})
    after = torch.cat([a.detach().reshape(-1) for a in g.arch_parameters()])
    assert seen == [True]  # applied once per outer step, on images that still carry the generator's graph
    assert stats["arch_hypergrad_norm"] > 0 and not torch.equal(before, after)
    with pytest.raises(ValueError, match="gan image"):
        trainer.outer_step(batch, batch, gan_batch={"image": s.scaled()[:1], "label": s.label})


def test_train_json_writes_weights_and_note(tmp_path) -> None:
    """3 outer steps after 2 Pix2Pix steps, validated after every step (eval_every 1): the segmenter of the lowest
    validation loss is exported, with the generator and training.json."""
    tr, va = tissue_slices([30, 40, 50]), tissue_slices([35, 45])
    tiny = {"network_def#channels": [4, 8], "network_def#strides": [2], "train_image": tr.image, "train_label": tr.label, "val_image": va.image,
            "val_label": va.label, "steps": 3, "pretrain_steps": 2, "batch_size": 2, "eval_every": 1, "log_every": 1, "output_dir": str(tmp_path)}
    w = train("brain_tissue_genseg", tiny)
    segmenter = w.parser.get_parsed_content("segmenter")
    state = torch.load(tmp_path / "model.pt", map_location="cpu", weights_only=True)
    assert set(state) == set(segmenter.state_dict())
    note = json.loads((tmp_path / "training.json").read_text())
    history = [h["val_loss"] for h in note["val_history"]]
    assert note["steps"] == 3 and [h["step"] for h in note["val_history"]] == [1, 2, 3] and len(note["derived_kernels"]) == 4
    assert note["best_val_loss"] == min(history)
    best = w.parser.get_parsed_content("validate#handlers#0")
    assert all(torch.equal(state[k], v.cpu()) for k, v in best.state.items())  # the selected state, not the last one
    assert (tmp_path / "generator.pt").is_file() and [n for n, _ in checkpoint_files(tmp_path / "pretrain")] == [1]
    assert {"seg_total", "g_l1", "arch_hypergrad_norm"} <= set(log_rows(tmp_path / "train_log.csv"))
    ckpt = load_checkpoint(checkpoint_files(tmp_path)[-1][1])
    assert ckpt["trainer"]["iteration"] == 3 and ckpt["genseg"]["step"] == 3 and ckpt["best"]["best"] == pytest.approx(min(history))
    with pytest.raises(ValueError, match="every must be >= 1"):
        ParameterAveraging([segmenter], every=0)


def test_cli_segment_with_bundle_marks_output_ai_derived(tmp_path, capsys) -> None:
    t1, labels = mni_tissue_volume_2mm()
    src = tmp_path / "t1_slab.nii.gz"
    nib.save(nib.Nifti1Image(t1[:, :, 40:43], np.diag([2.0, 2.0, 2.0, 1.0])), str(src))
    out = tmp_path / "tissue.nii.gz"
    assert main(["genseg", "segment", str(src), str(out), "--device", "cpu"]) == 0
    assert "AI-derived" in capsys.readouterr().out
    result = read_volume(out)
    assert result.shape == (98, 116, 3) and set(np.unique(result.array).tolist()) <= {0.0, 1.0, 2.0, 3.0}
    record = read_provenance(out)["sidecar"]["record"]
    assert record["task"] == "segmentation_brain_tissue" and "AI-derived" in record["parameters"]["output_kind"]
    assert record["disclosure"].startswith("AI-derived label map") and "synthetic image" not in record["disclosure"]
    assert nib.load(str(out)).header["descrip"].item().startswith(b"AI-DERIVED brain_tissue_genseg")
    assert verify_provenance(out).status == "intact"
    # the brain is found: background agrees with the reference mask on most pixels
    assert ((result.array > 0) == (labels[:, :, 40:43] > 0)).mean() > 0.8
    assert main(["genseg", "segment", str(src), str(src)]) == 2  # never overwrite the input
    assert "refusing to overwrite an input" in capsys.readouterr().err
    assert main(["genseg", "segment", str(src), str(tmp_path / "x.nii.gz"), "--bundle", "brain_slice_ddpm"]) == 2
    assert "not a segmentation bundle" in capsys.readouterr().err
