"""GenSeg: the searchable Pix2Pix U-Net (2D/3D shapes, ``derive``, the 3D CPU transposed-convolution guard), mask
augmentation, the finite-difference vs exact hypergradient, the ``lambda_syn`` weighting, and the trainer's
upper-level update (with learning-rate-0 controls) in 2D and 3D."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss

from medgen_core.networks.gan import (
    Pix2PixUNet,
    SearchablePix2PixUNet,
    build_patch_discriminator,
)
from medgen_core.networks.gan.searchable_unet import (
    MixedUpsample,
    transposed_conv_padding,
)
from medgen_core.training.genseg import (
    GenSegConfig,
    GenSegTrainer,
    MaskAugmentParams,
    build_default_segmenter,
    exact_hypergradient,
    finite_difference_hypergradient,
    labels_to_onehot,
    mask_augment,
    pretrain_generator,
    segmentation_train_loss,
)

C = 4  # background, CSF, grey matter, white matter


def _phantom(n: int, size: int, spatial_dims: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    """Nested-ellipse tissue maps (0 outside, 1..3 inwards), randomly deformed, and a noisy image of them in [-1, 1]."""
    axes = torch.meshgrid(*[torch.linspace(-1, 1, size)] * spatial_dims, indexing="ij")
    r = torch.sqrt(sum((1.0 + 0.2 * i) * a**2 for i, a in enumerate(axes)))
    base = torch.where(r < 0.35, 3, torch.where(r < 0.6, 2, torch.where(r < 0.85, 1, 0)))
    label = mask_augment(base[None, None].repeat(n, 1, *[1] * spatial_dims), seed)
    g = torch.Generator().manual_seed(seed)
    image = torch.tensor([-1.0, -0.2, 0.3, 0.8])[label] + 0.05 * torch.randn(label.shape, generator=g)
    return {"image": image.clamp(-1, 1), "label": label}


def _tiny(spatial_dims: int = 2, num_downs: int = 3, features: int = 8):
    torch.manual_seed(0)
    generator = SearchablePix2PixUNet(spatial_dims, C, 1, num_downs=num_downs, features=features)
    discriminator = build_patch_discriminator(spatial_dims, C + 1, features=4, num_layers=2, norm="INSTANCE")
    segmenter = build_default_segmenter(spatial_dims, C, channels=(8, 16), strides=(2,), num_res_units=0)
    return generator, discriminator, segmenter


def _flat(tensors) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


# -- searchable generator -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kernel", range(2, 10))
def test_transposed_conv_padding_doubles_every_size(kernel):
    padding, output_padding = transposed_conv_padding(kernel)
    for conv, shape in ((torch.nn.ConvTranspose2d, (5, 6)), (torch.nn.ConvTranspose3d, (3, 4, 5))):
        y = conv(1, 1, kernel, stride=2, padding=padding, output_padding=output_padding)(torch.zeros(1, 1, *shape))
        assert tuple(y.shape[2:]) == tuple(2 * s for s in shape)


@pytest.mark.parametrize(
    "spatial_dims, num_downs, features, shape",
    [(2, 5, 8, (2, C, 32, 32)), (2, 3, 4, (1, C, 16, 24)), (3, 2, 4, (1, C, 8, 8, 8)), (3, 3, 4, (2, C, 16, 16, 8))],
)
def test_searchable_unet_shapes_and_derive(spatial_dims, num_downs, features, shape):
    net = SearchablePix2PixUNet(spatial_dims, C, 1, num_downs=num_downs, features=features)
    y = net(torch.rand(shape))
    assert y.shape == (shape[0], 1, *shape[2:]) and y.abs().max() <= 1
    arch, weights = net.arch_parameters(), net.weight_parameters()
    assert len(arch) == num_downs and all(a.shape == (3,) and isinstance(a, torch.nn.Parameter) for a in arch)
    assert {id(p) for p in arch}.isdisjoint(id(p) for p in weights)
    assert len(arch) + len(weights) == len(list(net.parameters()))
    assert all(k in (4, 6, 8) for k in net.derive()) and len(net.derive()) == num_downs
    with torch.no_grad():
        arch[0].copy_(torch.tensor([0.0, 0.0, 1.0]))  # outermost level prefers kernel 8
        arch[-1].copy_(torch.tensor([0.0, 2.0, 1.0]))  # innermost prefers kernel 6
    derived = net.derive()
    assert derived[0] == 8 and derived[-1] == 6
    assert torch.allclose(net.mixture_weights().sum(1), torch.ones(num_downs))
    assert any(k.endswith("arch_logits") for k in net.state_dict())


def test_searchable_unet_rejects_bad_arguments():
    with pytest.raises(ValueError, match="spatial_dims"):
        SearchablePix2PixUNet(1, C, 1, num_downs=3, features=4)
    with pytest.raises(ValueError, match="up_kernel_sizes"):
        SearchablePix2PixUNet(2, C, 1, num_downs=3, features=4, up_kernel_sizes=(4, 4))
    with pytest.raises(ValueError, match="divisible by 8"):
        SearchablePix2PixUNet(2, C, 1, num_downs=3, features=4)(torch.rand(1, C, 20, 16))


def test_mixed_upsample_3d_weight_gradient_matches_float64():
    """Guards against PyTorch's CPU oneDNN bug: ConvTranspose3d(k=8, stride 2, padding 3) weight gradients on 4^3 inputs."""
    torch.manual_seed(0)
    up = MixedUpsample(3, 8, 4, (4, 6, 8))
    x = torch.randn(2, 8, 4, 4, 4).contiguous(memory_format=torch.channels_last_3d)
    grads = torch.autograd.grad((up(x) ** 2).sum(), [op.weight for op in up.ops] + [up.arch_logits])
    up64 = up.double()
    ref = torch.autograd.grad((up64(x.double()) ** 2).sum(), [op.weight for op in up64.ops] + [up64.arch_logits])
    for g, r in zip(grads, ref):
        assert torch.allclose(g.double(), r, rtol=1e-4, atol=1e-4 * float(r.abs().max()))


# -- mask augmentation ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("spatial_dims, size", [(2, 32), (3, 12)])
@pytest.mark.parametrize("elastic", [0.0, 0.05])
def test_mask_augment_integer_in_range_and_seeded(spatial_dims, size, elastic):
    labels = _phantom(3, size, spatial_dims)["label"].to(torch.uint8)
    params = MaskAugmentParams(rotation_deg=20, scale=(0.85, 1.15), translation=0.1, elastic_magnitude=elastic)
    out = mask_augment(labels, 7, params)
    assert out.shape == labels.shape and out.dtype == torch.uint8
    assert set(out.unique().tolist()) <= set(labels.unique().tolist()) | {0}
    assert not torch.equal(out, labels)
    assert torch.equal(out, mask_augment(labels, torch.Generator().manual_seed(7), params))
    assert not torch.equal(out, mask_augment(labels, 8, params))
    gen = torch.Generator().manual_seed(7)
    first, second = mask_augment(labels, gen, params), mask_augment(labels, gen, params)
    assert torch.equal(first, out) and not torch.equal(first, second)  # the generator advances


def test_mask_augment_identity_and_validation():
    labels = torch.randint(0, C, (2, 1, 16, 24))
    still = MaskAugmentParams(rotation_deg=0, scale=(1, 1), translation=0)
    assert torch.equal(mask_augment(labels, 0, still), labels)
    with pytest.raises(ValueError, match="integer dtype"):
        mask_augment(labels.float(), 0)
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        mask_augment(labels[:, 0], 0)
    with pytest.raises(ValueError, match="scale"):
        MaskAugmentParams(scale=(1.2, 0.8))


# -- hypergradient --------------------------------------------------------------------------------------------


def _bilevel_problem(upper: str):
    generator, _, segmenter = _tiny()
    train, val = _phantom(2, 32, seed=1), _phantom(2, 32, seed=2)
    syn_label = mask_augment(train["label"], 3)
    syn_image = generator(labels_to_onehot(syn_label, C))
    loss = DiceCELoss(to_onehot_y=True, softmax=True)

    def train_loss_fn(forward):
        return segmentation_train_loss(forward, train["image"], train["label"], syn_image, syn_label, loss, 1.0)[0]

    def val_loss_fn(forward):
        return loss(forward(val["image"]), val["label"])

    params = generator.arch_parameters() + (generator.weight_parameters() if upper == "arch+generator" else [])
    return segmenter, train_loss_fn, val_loss_fn, params


@pytest.mark.parametrize("upper", ["arch", "arch+generator"])
def test_finite_difference_hypergradient_matches_exact(upper):
    segmenter, train_loss_fn, val_loss_fn, params = _bilevel_problem(upper)
    before = [p.detach().clone() for p in segmenter.parameters()]
    exact, val_exact = exact_hypergradient(segmenter, train_loss_fn, val_loss_fn, params, xi=1e-3)
    approx, val_fd = finite_difference_hypergradient(segmenter, train_loss_fn, val_loss_fn, params, xi=1e-3, eps=0.01)
    a, b = _flat(approx), _flat(exact)
    cosine = float(F.cosine_similarity(a, b, dim=0))
    assert cosine > 0.9, cosine
    assert 0.8 < float(a.norm() / b.norm()) < 1.25 and float(b.norm()) > 0
    assert val_fd == pytest.approx(val_exact, rel=1e-5)
    assert all(torch.equal(p, q) for p, q in zip(before, segmenter.parameters()))  # theta untouched
    # a precomputed train gradient gives the same answer
    names_params = [p for p in segmenter.parameters() if p.requires_grad]
    g = torch.autograd.grad(train_loss_fn(segmenter), names_params, retain_graph=True)
    again, _ = finite_difference_hypergradient(segmenter, train_loss_fn, val_loss_fn, params, 1e-3, 0.01, train_grad=g)
    assert torch.allclose(_flat(again), a, rtol=1e-3, atol=1e-6 * float(a.abs().max()))


# -- lambda_syn -----------------------------------------------------------------------------------------------


def test_lambda_syn_weights_the_synthetic_gradient_exactly():
    generator, _, segmenter = _tiny()
    real = _phantom(2, 32, seed=1)
    syn_label = mask_augment(real["label"], 4)
    syn_image = generator(labels_to_onehot(syn_label, C)).detach()
    loss = DiceCELoss(to_onehot_y=True, softmax=True)
    params = list(segmenter.parameters())

    def grad(lam: float) -> torch.Tensor:
        total = segmentation_train_loss(segmenter, real["image"], real["label"], syn_image, syn_label, loss, lam)[0]
        return _flat(torch.autograd.grad(total, params))

    real_only = _flat(torch.autograd.grad(loss(segmenter(real["image"]), real["label"]), params))
    syn_only = _flat(torch.autograd.grad(loss(segmenter(syn_image), syn_label), params))
    g0, g1, g2 = grad(0.0), grad(1.0), grad(2.0)
    assert torch.equal(g0, real_only)
    assert torch.allclose(g1 - g0, syn_only, atol=1e-6)
    assert torch.allclose(g2 - g0, 2 * (g1 - g0), atol=1e-6)
    assert torch.allclose(g2, real_only + 2 * syn_only, atol=1e-6)
    assert float(syn_only.norm()) > 1e-3  # the synthetic part is not trivially zero


# -- trainer --------------------------------------------------------------------------------------------------


def _run(config: GenSegConfig, steps: int = 3, spatial_dims: int = 2, size: int = 32, num_downs: int = 3):
    generator, discriminator, segmenter = _tiny(spatial_dims, num_downs=num_downs, features=4 if spatial_dims == 3 else 8)
    arch0 = [a.detach().clone() for a in generator.arch_parameters()]
    w0 = [w.detach().clone() for w in generator.weight_parameters()]
    s0 = [p.detach().clone() for p in segmenter.parameters()]
    trainer = GenSegTrainer(generator, discriminator, segmenter, config)
    train, val = _phantom(2, size, spatial_dims, seed=1), _phantom(2, size, spatial_dims, seed=2)
    stats = [trainer.outer_step(train, val) for _ in range(steps)]
    def changed(before, now) -> float:
        return max(float((a - b.detach()).abs().max()) for a, b in zip(before, now))

    return stats, changed(arch0, generator.arch_parameters()), changed(w0, generator.weight_parameters()), changed(s0, segmenter.parameters())


@pytest.mark.parametrize("hypergradient", ["finite_difference", "exact"])
def test_outer_steps_move_the_architecture_and_lr_zero_freezes_it(hypergradient):
    stats, d_arch, d_w, d_seg = _run(GenSegConfig(num_classes=C, hypergradient=hypergradient))
    assert d_arch > 1e-4 and d_w > 0 and d_seg > 0
    assert all(s["arch_hypergrad_norm"] > 0 for s in stats)
    assert all(math.isfinite(v) for s in stats for v in s.values())
    # control: the same run with the upper-level learning rate at 0 leaves alpha exactly as it was
    stats, d_arch, d_w, d_seg = _run(GenSegConfig(num_classes=C, hypergradient=hypergradient, lr_arch=0.0))
    assert d_arch == 0.0 and d_w > 0 and d_seg > 0 and all(s["arch_hypergrad_norm"] > 0 for s in stats)


def test_upper_level_updates_generator_weights_only_with_arch_plus_generator():
    # Pix2Pix stage off (lr_gen = 0): W can only move through the upper level
    _, _, d_w, _ = _run(GenSegConfig(num_classes=C, lr_gen=0.0, upper_params="arch"), steps=2)
    assert d_w == 0.0
    _, d_arch, d_w, _ = _run(GenSegConfig(num_classes=C, lr_gen=0.0, lr_gen_upper=1e-3, upper_params="arch+generator"), steps=2)
    assert d_w > 1e-4 and d_arch > 0


def test_lambda_zero_gives_no_upper_update():
    stats, d_arch, _, _ = _run(GenSegConfig(num_classes=C, lambda_syn=0.0), steps=2)
    assert d_arch == 0.0 and all(s["seg_syn"] == 0.0 for s in stats)


@pytest.mark.parametrize("hypergradient", ["finite_difference", "exact"])
def test_outer_step_3d(hypergradient):
    stats, d_arch, d_w, d_seg = _run(GenSegConfig(num_classes=C, hypergradient=hypergradient), steps=2, spatial_dims=3,
                                     size=16, num_downs=2)
    keys = {"g_gan", "g_l1", "d_real", "d_fake", "seg_total", "seg_real", "seg_syn", "val_lookahead", "arch_hypergrad_norm"}
    assert set(stats[-1]) == keys
    assert all(torch.isfinite(torch.tensor(list(s.values()))).all() for s in stats)
    assert d_arch > 1e-4 and d_w > 0 and d_seg > 0


def test_pretrain_generator_reduces_l1():
    generator, discriminator, _ = _tiny()
    data = _phantom(4, 32, seed=5)
    history = pretrain_generator(generator, discriminator, data["image"], data["label"], C, steps=30, batch_size=2)
    assert len(history) == 30
    assert sum(h["g_l1"] for h in history[-5:]) < sum(h["g_l1"] for h in history[:5])
    assert all(a.abs().max() == 0 for a in generator.arch_parameters())  # alpha fixed in stage 1


def test_config_and_trainer_validation():
    with pytest.raises(ValueError, match="upper_params"):
        GenSegConfig(upper_params="generator")
    with pytest.raises(ValueError, match="hypergradient"):
        GenSegConfig(hypergradient="neumann")
    with pytest.raises(ValueError, match="lambda_syn"):
        GenSegConfig(lambda_syn=-1.0)
    plain = Pix2PixUNet(2, C, 1, num_downs=3, features=4, norm="instance", dropout=0.0)
    discriminator = build_patch_discriminator(2, C + 1, features=4, num_layers=2, norm="INSTANCE")
    with pytest.raises(ValueError, match="architecture parameters"):
        GenSegTrainer(plain, discriminator, None, GenSegConfig(num_classes=C))
    segmenter = build_default_segmenter(2, C, channels=(8, 16), strides=(2,), num_res_units=0)
    trainer = GenSegTrainer(plain, discriminator, segmenter, GenSegConfig(num_classes=C, upper_params="arch+generator"))
    batch = _phantom(2, 32, seed=1)
    assert set(trainer.outer_step(batch, batch)) >= {"seg_total", "val_lookahead"}
    bad = {"image": batch["image"], "label": batch["label"] + C}
    with pytest.raises(ValueError, match="labels must lie"):
        trainer.outer_step(bad, batch)
