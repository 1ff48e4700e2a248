"""Segmenter training for the GenSeg comparison: plain, classic augmentation, frozen generator, GenSeg end to end.

All four share one budget (:class:`SegBudget`: segmenter updates, batch size, learning rate) and one model
selection rule (the segmenter state with the lowest validation Dice + CE loss, checked every ``eval_every``
updates), so methods differ only in what the segmenter is trained on:

* :func:`train_segmenter` without ``augment`` / ``synthesize``: plain U-Net on the real pairs;
* with ``augment`` (:class:`~medgen_core.transforms.seg_augment.ClassicSegAugment`): classic augmentation;
* with ``synthesize`` as well (a frozen generator): ``L = L_real + lambda L_syn`` on images generated from
  augmented real masks ("separate" GenSeg baseline);
* :func:`train_genseg`: :class:`~medgen_core.training.genseg.GenSegTrainer` end to end (same augmentation).

Images are ``(N, 1, H, W)`` in [0, 1] at the interface (scaled to [-1, 1] for the networks), labels
``(N, 1, H, W)`` integer class indices.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

import torch
import torch.nn as nn
from monai.losses import DiceCELoss

from medgen_core.networks.gan import SearchablePix2PixUNet, build_patch_discriminator
from medgen_core.training.genseg import GenSegConfig, GenSegTrainer, build_default_segmenter, labels_to_onehot, pretrain_generator
from medgen_core.transforms.mask_augment import MaskAugmentParams, mask_augment
from medgen_core.transforms.seg_augment import ClassicSegAugment, intensity_jitter
from medgen_core.utils.progress import progress

__all__ = [
    "SEGMENTERS",
    "GeneratorSpec",
    "SegBudget",
    "build_segmenter",
    "frozen_synthesizer",
    "predict_labels",
    "pretrain_searchable_generator",
    "train_genseg",
    "train_segmenter",
]

SEGMENTERS = ("unet", "attention_unet", "basic_unet")


def build_segmenter(name: str = "unet", num_classes: int = 4, channels: Sequence[int] = (16, 32, 64, 128),
                    spatial_dims: int = 2) -> nn.Module:
    """A MONAI segmenter by name: ``"unet"`` (:func:`build_default_segmenter`, Swish), ``"attention_unet"``
    (``AttentionUnet``) or ``"basic_unet"`` (``BasicUNet``, Swish); one input channel, ``num_classes`` logits.

    ``channels`` are the encoder widths; every one after the first halves the resolution.
    """
    from monai.networks.nets import AttentionUnet, BasicUNet

    channels = tuple(int(c) for c in channels)
    strides = (2,) * (len(channels) - 1)
    if name == "unet":
        return build_default_segmenter(spatial_dims, num_classes, channels, strides, num_res_units=1)
    if name == "attention_unet":
        return AttentionUnet(spatial_dims, 1, num_classes, channels, strides)
    if name == "basic_unet":
        if len(channels) != 5:
            raise ValueError(f"build_segmenter: basic_unet needs 5 channel widths (4 down-samplings), got {channels}.")
        return BasicUNet(spatial_dims, 1, num_classes, features=(*channels, channels[0]), act="SWISH")
    raise ValueError(f"build_segmenter: unknown segmenter {name!r}; expected one of {list(SEGMENTERS)}.")


@dataclass
class SegBudget:
    """The training budget every method gets.

    Args:
        steps: segmenter updates.
        batch_size: real pairs per update (methods with a generator add as many synthetic pairs).
        lr: Adam learning rate of the segmenter.
        eval_every: validation-loss check (and best-state selection) interval.
        pretrain_steps: Pix2Pix stage-1 updates of the generator (methods with a generator).
    """

    steps: int = 300
    batch_size: int = 4
    lr: float = 1e-3
    eval_every: int = 25
    pretrain_steps: int = 200


@dataclass
class GeneratorSpec:
    """Size of the mask -> image generator (:class:`SearchablePix2PixUNet`) and its PatchGAN discriminator."""

    num_downs: int = 4
    features: int = 16
    disc_features: int = 16
    disc_layers: int = 2
    mask_augment: MaskAugmentParams = field(default_factory=lambda: MaskAugmentParams(elastic_magnitude=0.02))


def _scaled(image01: torch.Tensor) -> torch.Tensor:
    return image01 * 2.0 - 1.0


@torch.no_grad()
def predict_labels(segmenter: nn.Module, image01: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
    """Arg-max labels ``(N, 1, H, W)`` of images ``(N, 1, H, W)`` in [0, 1]."""
    was_training = segmenter.training
    segmenter.eval()
    out = [segmenter(_scaled(image01[i:i + batch_size])).argmax(1, keepdim=True) for i in range(0, image01.shape[0], batch_size)]
    segmenter.train(was_training)
    return torch.cat(out)


class _Selector:
    """Keeps the segmenter state with the lowest validation loss."""

    def __init__(self, segmenter: nn.Module, val_image01: torch.Tensor, val_label: torch.Tensor, loss_fn) -> None:
        self.segmenter, self.x, self.m, self.loss_fn = segmenter, _scaled(val_image01), val_label, loss_fn
        self.best, self.state, self.history = float("inf"), None, []

    @torch.no_grad()
    def check(self, step: int) -> float:
        self.segmenter.eval()
        loss = float(self.loss_fn(self.segmenter(self.x), self.m))
        self.segmenter.train()
        self.history.append({"step": step, "val_loss": loss})
        if loss < self.best:
            self.best, self.state = loss, copy.deepcopy(self.segmenter.state_dict())
        return loss

    def restore(self) -> dict:
        if self.state is not None:
            self.segmenter.load_state_dict(self.state)
        return {"best_val_loss": self.best, "val_history": self.history}


def _batches(n: int, batch_size: int, steps: int, seed: int):
    """Index batches without replacement within each pass over the ``n`` samples."""
    rng = torch.Generator().manual_seed(seed)
    order = torch.empty(0, dtype=torch.long)
    for _ in range(steps):
        if order.numel() < min(batch_size, n):
            order = torch.cat([order, torch.randperm(n, generator=rng)])
        idx, order = order[:min(batch_size, n)], order[min(batch_size, n):]
        yield idx


def train_segmenter(segmenter: nn.Module, image01: torch.Tensor, label: torch.Tensor, val_image01: torch.Tensor,
                    val_label: torch.Tensor, budget: SegBudget, num_classes: int = 4, augment: ClassicSegAugment | None = None,
                    synthesize: Callable[[torch.Tensor], torch.Tensor] | None = None, lambda_syn: float = 1.0,
                    mask_params: MaskAugmentParams | None = None, seed: int = 0, desc: str = "segmenter") -> dict:
    """Train ``segmenter`` (in place) on real pairs, optionally augmented and mixed with synthetic pairs.

    Args:
        segmenter: images ``(B, 1, H, W)`` in [-1, 1] -> logits ``(B, num_classes, H, W)``.
        image01, label: training pairs ``(N, 1, H, W)``.
        val_image01, val_label: validation pairs (model selection only).
        budget: :class:`SegBudget`.
        augment: classic joint augmentation of the real pairs (None: none).
        synthesize: frozen generator, labels ``(B, 1, H, W)`` -> images in [-1, 1]; its images come from
            :func:`mask_augment`-ed real masks and get the differentiable intensity jitter of the synthetic
            path of :func:`train_genseg`.
        lambda_syn: weight of the synthetic loss.
        mask_params: ranges of the mask augmentation.
        seed: seed of batch order, augmentation and synthetic masks.

    Returns:
        ``{"best_val_loss", "val_history", "train_loss"}``; the segmenter holds the selected state.
    """
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    opt = torch.optim.Adam(segmenter.parameters(), lr=budget.lr)
    selector = _Selector(segmenter, val_image01, val_label, loss_fn)
    rng = torch.Generator().manual_seed(seed + 1)
    segmenter.train()
    losses = []
    for step, idx in enumerate(progress(_batches(len(image01), budget.batch_size, budget.steps, seed), desc, total=budget.steps,
                                        leave=False), start=1):
        x, m = image01[idx], label[idx]
        if augment is not None:
            x, m = augment(x, m)
        loss = loss_fn(segmenter(_scaled(x)), m)
        if synthesize is not None and lambda_syn > 0:
            m_syn = mask_augment(label[idx], rng, mask_params)
            with torch.no_grad():
                x_syn = intensity_jitter(synthesize(m_syn), rng)
            loss = loss + lambda_syn * loss_fn(segmenter(x_syn), m_syn)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if step % budget.eval_every == 0 or step == budget.steps:
            selector.check(step)
    return {**selector.restore(), "train_loss": losses}


def pretrain_searchable_generator(image01: torch.Tensor, label: torch.Tensor, num_classes: int, spec: GeneratorSpec,
                                  steps: int, batch_size: int = 4, seed: int = 0) -> tuple[SearchablePix2PixUNet, nn.Module]:
    """GenSeg stage 1: a fresh :class:`SearchablePix2PixUNet` and PatchGAN trained as Pix2Pix on the real pairs."""
    torch.manual_seed(seed)
    generator = SearchablePix2PixUNet(2, num_classes, 1, num_downs=spec.num_downs, features=spec.features)
    discriminator = build_patch_discriminator(2, num_classes + 1, features=spec.disc_features, num_layers=spec.disc_layers,
                                              norm="INSTANCE")
    pretrain_generator(generator, discriminator, _scaled(image01), label, num_classes, steps=steps, batch_size=batch_size,
                       seed=seed)
    return generator, discriminator


def frozen_synthesizer(generator: nn.Module, num_classes: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """Labels ``(B, 1, H, W)`` -> images in [-1, 1] from a frozen copy of ``generator`` (eval mode, no gradients)."""
    frozen = copy.deepcopy(generator).eval().requires_grad_(False)
    return lambda labels: frozen(labels_to_onehot(labels, num_classes))


def train_genseg(segmenter: nn.Module, generator: nn.Module, discriminator: nn.Module, image01: torch.Tensor,
                 label: torch.Tensor, val_image01: torch.Tensor, val_label: torch.Tensor, budget: SegBudget,
                 config: GenSegConfig, augment: ClassicSegAugment | None = None, seed: int = 0,
                 desc: str = "genseg", on_step: Callable[[int], None] | None = None) -> dict:
    """GenSeg end to end: ``budget.steps`` outer steps of :class:`GenSegTrainer` (generator, discriminator,
    segmenter and the generator's architecture trained together; ``generator`` and ``discriminator`` are changed
    in place, typically after :func:`pretrain_searchable_generator`).

    The segmenter's real batch gets ``augment`` (as in :func:`train_segmenter`); the Pix2Pix step and the
    synthetic masks use the un-augmented pairs; synthetic images get :func:`intensity_jitter` (differentiable).
    The validation pairs drive both the upper level and the model selection. ``on_step(step)`` runs after every
    outer step (e.g. parameter averaging across ranks).

    Returns:
        ``{"best_val_loss", "val_history", "train_loss", "arch_weights", "derived_kernels", "hypergrad_norm"}``.
    """
    rng = torch.Generator().manual_seed(seed + 2)
    trainer = GenSegTrainer(generator, discriminator, segmenter, config, syn_transform=partial(intensity_jitter, generator=rng))
    selector = _Selector(segmenter, val_image01, val_label, trainer.seg_loss)
    val = {"image": _scaled(val_image01), "label": val_label}
    losses, hyper = [], []
    for step, idx in enumerate(progress(_batches(len(image01), budget.batch_size, budget.steps, seed), desc, total=budget.steps,
                                        leave=False), start=1):
        x, m = image01[idx], label[idx]
        xa, ma = augment(x, m) if augment is not None else (x, m)
        stats = trainer.outer_step({"image": _scaled(xa), "label": ma}, val, gan_batch={"image": _scaled(x), "label": m})
        losses.append(stats["seg_total"])
        hyper.append(stats["arch_hypergrad_norm"])
        if on_step is not None:
            on_step(step)
        if step % budget.eval_every == 0 or step == budget.steps:
            selector.check(step)
    result = {**selector.restore(), "train_loss": losses, "hypergrad_norm": hyper}
    if hasattr(generator, "mixture_weights"):
        result["arch_weights"] = generator.mixture_weights().detach().tolist()
        result["derived_kernels"] = generator.derive()
    return result
