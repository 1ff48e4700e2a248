"""Label-map randomisation (medgen_core.transforms.label_randomisation) and the held-out label constructions
(medgen_core.data.tissue_label_constructions): determinism per seed, ranges, identical deformation of the
labels and the image, each construction's rule, the gaps that keep the held-out settings out of training,
and the real MNI probability slices with the Pix2Pix training script's chain."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from medgen_core.data.tissue_label_constructions import (
    HELDOUT_DILATION_RADIUS,
    HELDOUT_SMOOTH_SIGMA,
    HELDOUT_THRESHOLD,
    argmax_labels,
    coarse_argmax_labels,
    kmeans_labels,
    morphology_labels,
    smoothed_argmax_labels,
    threshold_labels,
)
from medgen_core.transforms.label_randomisation import (
    RandLabelMorphologyd,
    RandMergeTissueClassd,
    RandTissueLabelsd,
    disk_dilate,
    label_randomisation,
)


def _probs(h: int = 64, w: int = 72) -> torch.Tensor:
    """A toy brain: ``(4, h, w)`` brain mask, CSF, GM, WM probabilities that vary smoothly (WM in the centre)."""
    y, x = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    r = torch.sqrt(x**2 + (1.2 * y) ** 2)
    brain = (r < 0.85).float()
    wm = torch.sigmoid((0.35 - r) * 20) * brain
    gm = torch.sigmoid((0.6 - r) * 20) * brain * (1 - wm)
    csf = (1 - wm - gm).clamp(0, 1) * brain
    return torch.stack([brain, csf, gm, wm])


def _sample(seed: int = 0) -> dict[str, torch.Tensor]:
    p = _probs()
    g = torch.Generator().manual_seed(seed)
    target = (p[2] * 0.4 + p[3] * 0.9 + p[1] * 0.15 + 0.02 * torch.randn(p.shape[1:], generator=g)) * p[0] * 2 - 1
    return {"probs": p, "target": target.clamp(-1, 1)[None]}


def test_chain_is_deterministic_per_seed_and_in_range():
    outs = []
    for seed in (3, 3, 4):
        chain = label_randomisation(keep=("label",))
        chain.set_random_state(seed)
        outs.append([chain(_sample()) for _ in range(6)])
    for a, b in zip(outs[0], outs[1]):
        assert torch.equal(torch.as_tensor(a["image"]), torch.as_tensor(b["image"]))
        assert torch.equal(torch.as_tensor(a["target"]), torch.as_tensor(b["target"]))
    assert any(not torch.equal(torch.as_tensor(a["image"]), torch.as_tensor(c["image"])) for a, c in zip(outs[0], outs[2]))
    for d in outs[0]:
        image, label, target = torch.as_tensor(d["image"]), torch.as_tensor(d["label"]), torch.as_tensor(d["target"])
        assert set(d) == {"image", "target", "label"}
        assert image.shape == (4, 64, 72) and target.shape == (1, 64, 72) and image.dtype == torch.float32
        assert torch.equal(image.sum(0), torch.ones(64, 72)) and set(image.unique().tolist()) <= {0.0, 1.0}
        assert torch.equal(image.argmax(0), label[0]) and label.dtype == torch.int64
        assert int(label.min()) >= 0 and int(label.max()) <= 3
        assert float(target.min()) >= -1.0 - 1e-6 and float(target.max()) <= 1.0 + 1e-6


def test_labels_and_image_are_deformed_identically():
    p = _probs()
    d = {"probs": p, "target": (2 * p[3] - 1)[None]}  # the image is a channel of the probabilities
    chain = label_randomisation(elastic_prob=1.0, elastic_magnitude=(2.0, 3.0), flip_prob=0.5, merge_prob=0.0, keep=("probs", "label"))
    chain.set_random_state(0)
    moved = 0.0
    for _ in range(4):
        out = chain(dict(d))
        probs, target = torch.as_tensor(out["probs"]), torch.as_tensor(out["target"])
        assert torch.allclose(target[0], 2 * probs[3] - 1, atol=1e-5)
        moved = max(moved, float((probs[3] - p[3]).abs().max()))
        inside = torch.as_tensor(out["label"])[0] > 0
        assert torch.equal(inside, probs[0] >= 0.5)  # the labels follow the deformed brain...
    assert moved > 0.2  # ...and the deformation really moved the tissue


def test_tissue_label_constructions_follow_their_rules():
    p = _probs()
    t = RandTissueLabelsd()
    brain = p[0] >= 0.5
    t.params = {"construction": "argmax", "smooth_sigma": 0.0, "log_weights": [0.0, 0.0, 0.0], "thresholds": [0.5, 0.5], "wm_first": True,
                "intensity_sigma": 0.5, "intensity_thresholds": [0.3, 0.6]}
    lab = t.labels(p, None)[0]
    assert torch.equal(lab, torch.from_numpy(argmax_labels(p.numpy())).long())
    t.params.update(construction="argmax", log_weights=[0.0, 0.0, 2.0])  # a heavy WM weight grows WM
    assert int((t.labels(p, None)[0] == 3).sum()) > int((lab == 3).sum())
    t.params.update(construction="threshold", thresholds=[0.35, 0.35], wm_first=True)
    assert torch.equal(t.labels(p, None)[0], torch.from_numpy(threshold_labels(p.numpy(), 0.35)).long())
    t.params.update(construction="threshold", thresholds=[0.9, 0.1], wm_first=False)  # GM first at 0.1: little WM
    lab_gm = t.labels(p, None)[0]
    assert torch.equal(lab_gm[(p[2] >= 0.1) & brain], torch.full_like(lab_gm[(p[2] >= 0.1) & brain], 2))
    target = _sample()["target"]
    t.params.update(construction="intensity", intensity_sigma=0.5, intensity_thresholds=[0.3, 0.6])
    lab_i = t.labels(p, target)[0]
    assert torch.equal(lab_i > 0, brain) and set(lab_i[brain].unique().tolist()) == {1, 2, 3}
    with pytest.raises(ValueError, match="needs the image"):
        t.labels(p, None)
    with pytest.raises(ValueError, match=r"\(4, \*S\)"):
        t.labels(p[:3], None)
    with pytest.raises(ValueError, match="construction_weights"):
        RandTissueLabelsd(construction_weights=(1.0, 0.0))


def test_default_ranges_leave_out_the_heldout_settings():
    t, m = RandTissueLabelsd(), RandLabelMorphologyd()
    assert not any(lo <= HELDOUT_THRESHOLD <= hi for lo, hi in t.threshold_ranges)
    assert not any(lo <= HELDOUT_SMOOTH_SIGMA <= hi for lo, hi in t.smooth_sigma_ranges)
    assert HELDOUT_DILATION_RADIUS not in m.radii
    assert t.intensity_sigma_range[0] > 0  # a clustering of the raw (unsmoothed) image is never reproduced
    t.set_random_state(0)
    draws = []
    for _ in range(300):
        t.randomize()
        draws += t.params["thresholds"]
        assert t.params["smooth_sigma"] == 0.0 or not 1.0 < t.params["smooth_sigma"] < 2.0
    assert min(abs(np.array(draws) - HELDOUT_THRESHOLD)) > 0.05 - 1e-9


def test_morphology_keeps_the_brain_outline():
    lab = torch.from_numpy(argmax_labels(_probs().numpy())).long()[None]
    grown = RandLabelMorphologyd.apply(lab, 3, 2, dilate=True)
    assert torch.equal(grown > 0, lab > 0) and int((grown == 3).sum()) > int((lab == 3).sum())
    ref = morphology_labels(lab[0].numpy(), 3, 2, dilate=True)  # the scipy version used for the held-out set
    assert np.array_equal(grown[0].numpy(), ref)
    shrunk = RandLabelMorphologyd.apply(lab, 2, 1, dilate=False)
    assert torch.equal(shrunk > 0, lab > 0) and int((shrunk == 2).sum()) < int((lab == 2).sum())
    assert set(shrunk.unique().tolist()) <= {0, 1, 2, 3}
    assert torch.equal(lab, torch.from_numpy(argmax_labels(_probs().numpy())).long()[None])  # input untouched
    merged = RandMergeTissueClassd(prob=1.0, merges=((1, 2),))(dict(label=lab))["label"]
    assert not (merged == 1).any() and torch.equal(merged > 0, lab > 0)


def test_disk_dilate_matches_scipy():
    rng = np.random.default_rng(0)
    for shape, radius in (((20, 23), 1), ((20, 23), 3), ((9, 10, 11), 2)):
        m = rng.random(shape) > 0.93
        grid = np.stack(np.meshgrid(*[np.arange(-radius, radius + 1)] * len(shape), indexing="ij"))
        ref = ndimage.binary_dilation(m, (grid**2).sum(0) <= radius**2)
        assert np.array_equal(disk_dilate(torch.from_numpy(m), radius).numpy(), ref)


def test_heldout_constructions_on_a_toy_volume():
    p = _probs(24, 26)[:, :, :, None].repeat(1, 1, 1, 6).numpy()  # (4, 24, 26, 6)
    brain = p[0] >= 0.5
    assert set(np.unique(threshold_labels(p, 0.35))) <= {0, 1, 2, 3}
    image = np.select([p[3] > 0.5, p[2] > 0.5, brain], [0.9, 0.6, 0.3], 0.0) + 0.01 * np.random.default_rng(0).standard_normal(brain.shape)
    km = kmeans_labels(image, brain)
    assert np.array_equal(km, np.select([p[3] > 0.5, p[2] > 0.5, brain], [3, 2, 1], 0))  # dark -> bright = CSF, GM, WM
    smooth = smoothed_argmax_labels(p, 1.5)
    assert np.array_equal(smooth > 0, brain) and (smooth != argmax_labels(p)).any()
    coarse = coarse_argmax_labels(p, 2)
    assert coarse.shape == brain.shape and np.array_equal(coarse[::2, ::2, ::2], coarse[1::2, 1::2, 1::2])
    with pytest.raises(ValueError, match="expected probabilities"):
        argmax_labels(p[:2])
    with pytest.raises(ValueError, match="kmeans_labels"):
        kmeans_labels(image, np.zeros_like(brain))


def test_training_chain_on_real_mni_slices():
    from medgen_core.data.translation import tissue_probability_slices

    data = tissue_probability_slices([60, 120], (192, 224))
    assert len(data) == 2 and data[0]["probs"].shape == (4, 192, 224) and data[0]["target"].shape == (1, 192, 224)
    p = data[0]["probs"]
    assert torch.allclose((p[1] + p[2] + p[3])[p[0] > 0.5], torch.ones(1), atol=1e-5)  # CSF = 1 - GM - WM in the brain
    chain = label_randomisation()
    chain.set_random_state(1)
    out = chain(data[1])
    assert set(out) == {"image", "target"} and out["image"].shape == (4, 192, 224)
