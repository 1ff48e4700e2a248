"""GenSeg: a mask -> image generator trained in the loop of a segmenter, for ultra-low-data segmentation.

Reference: Zhang et al., "Generative AI enables medical image segmentation in ultra low-data regimes" (GenSeg;
code ``importZL/semantic_segmentation``). The published Betty wiring never updates the generator's architecture
(see ``/work/shared/generative-references.md`` §0.1), so the bilevel step is written out explicitly here (§1.5).

Symbols: G_{W,alpha} = mask -> image generator with weights W and architecture logits alpha
(:class:`~medgen_core.networks.gan.searchable_unet.SearchablePix2PixUNet`), D = conditional PatchGAN,
S_theta = segmenter, A = mask augmenter (:func:`mask_augment`), L_seg = Dice + cross-entropy.

One outer step (:meth:`GenSegTrainer.outer_step`):

I.   Pix2Pix on the real pairs, alpha fixed: ``W <- W - eta_W grad_W [GAN + lambda_L1 |G(m) - x|_1]``; D step.
II.  Segmenter: ``m' = A(m)``, ``x' = G(m')`` (graph to G kept), ``L_tr(theta, alpha) = L_seg(S(x), m) +
     lambda_syn L_seg(S(x'), m')``, ``theta <- theta - eta_theta Adam(g)`` with ``g = grad_theta L_tr``.
III. Upper level: alpha (and W with ``upper_params="arch+generator"``) descend the validation loss after a
     one-step look-ahead ``theta' = theta - xi g(theta, alpha)``. Its hypergradient
     ``-xi (d^2 L_tr / d alpha d theta) grad_theta' L_val(theta')`` is approximated by the finite difference
     ``-xi [grad_alpha L_tr(theta + r v) - grad_alpha L_tr(theta - r v)] / (2 r)``, ``v = grad_theta' L_val``,
     ``r = fd_eps / ||v||`` (DARTS; two extra backward passes, no Hessian), then ``alpha <- Adam(h)``.

Batches are dicts with ``"image"`` ``(B, 1, *S)`` in [-1, 1] (the generator ends in ``tanh``) and ``"label"``
``(B, 1, *S)`` integer class indices, 0 = background.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.losses import DiceCELoss, PatchAdversarialLoss
from monai.networks.nets import UNet

from medgen_core.training.hypergradient import Forward, exact_hypergradient, finite_difference_hypergradient, grads_or_zeros, trainable_parameters
from medgen_core.transforms.mask_augment import MaskAugmentParams, mask_augment

__all__ = [
    "BestState",
    "GenSegConfig",
    "GenSegIteration",
    "GenSegReport",
    "GenSegTrainer",
    "PairBatches",
    "ParameterAveraging",
    "SegmentationValidation",
    "average_parameters",
    "MaskAugmentParams",
    "build_default_segmenter",
    "exact_hypergradient",
    "finite_difference_hypergradient",
    "labels_to_onehot",
    "mask_augment",
    "pix2pix_step",
    "pretrain_generator",
    "scaled",
    "segmentation_train_loss",
    "syn_jitter",
]

logger = logging.getLogger(__name__)

UPPER_PARAMS = ("arch", "arch+generator")
HYPERGRADIENTS = ("finite_difference", "exact")


# mask augmentation lives in medgen_core.transforms.mask_augment (re-exported here)


def labels_to_onehot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(N, 1, *S)`` class indices -> ``(N, num_classes, *S)`` float one-hot (the generator's input)."""
    return F.one_hot(labels[:, 0].long(), num_classes).movedim(-1, 1).float()


# -- losses and hypergradients -------------------------------------------------------------------------------


def segmentation_train_loss(forward: Forward, image: torch.Tensor, label: torch.Tensor, syn_image: torch.Tensor | None,
                            syn_label: torch.Tensor | None, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                            lambda_syn: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``L_tr = L_seg(S(x), m) + lambda_syn L_seg(S(x'), m')``; returns ``(L_tr, L_real, L_syn)``.

    Real and synthetic batches go through the segmenter separately so that ``lambda_syn`` weights them exactly,
    whatever the normalisation and batch sizes. With ``lambda_syn == 0`` (or no synthetic batch) the synthetic
    forward is skipped and ``L_syn`` is 0.
    """
    l_real = loss_fn(forward(image), label)
    if lambda_syn == 0 or syn_image is None:
        return l_real, l_real, torch.zeros_like(l_real)
    l_syn = loss_fn(forward(syn_image), syn_label)
    return l_real + lambda_syn * l_syn, l_real, l_syn


def pix2pix_step(generator: nn.Module, discriminator: nn.Module, opt_g: torch.optim.Optimizer,
                 opt_d: torch.optim.Optimizer, condition: torch.Tensor, target: torch.Tensor,
                 adversarial: PatchAdversarialLoss, lambda_l1: float, gen_params: Sequence[torch.Tensor]) -> dict[str, float]:
    """One Pix2Pix update (as :class:`~medgen_core.training.pix2pix.Pix2PixIteration`): D on real/fake pairs, then G.

    Only ``gen_params`` receive gradients in the G step (so the discriminator and alpha stay untouched).
    ``condition`` ``(B, C, *S)`` one-hot masks, ``target`` ``(B, 1, *S)`` images in [-1, 1].
    """
    fake = generator(condition)
    # 1. discriminator: real pairs -> 1, fake pairs -> 0 (fakes detached), one call on both halves
    logits = discriminator(torch.cat([torch.cat([condition, target], 1), torch.cat([condition, fake.detach()], 1)], 0))[-1]
    real_logits, fake_logits = logits.chunk(2, dim=0)
    d_real = adversarial(real_logits, target_is_real=True, for_discriminator=True)
    d_fake = adversarial(fake_logits, target_is_real=False, for_discriminator=True)
    opt_d.zero_grad(set_to_none=True)
    (0.5 * (d_real + d_fake)).backward()
    opt_d.step()
    # 2. generator: fool D and stay close to the target in L1; gradients go to gen_params only
    g_gan = adversarial(discriminator(torch.cat([condition, fake], 1))[-1], target_is_real=True, for_discriminator=False)
    g_l1 = (fake - target).abs().mean()
    opt_g.zero_grad(set_to_none=True)
    (g_gan + lambda_l1 * g_l1).backward(inputs=list(gen_params))
    opt_g.step()
    return {"g_gan": float(g_gan.detach()), "g_l1": float(g_l1.detach()), "d_real": float(d_real.detach()),
            "d_fake": float(d_fake.detach())}


def _weight_params(generator: nn.Module) -> list[nn.Parameter]:
    if hasattr(generator, "weight_parameters"):
        return list(generator.weight_parameters())
    return list(generator.parameters())


def _adam_gan(params: Sequence[torch.Tensor], lr: float) -> torch.optim.Adam:
    return torch.optim.Adam(params, lr=lr, betas=(0.5, 0.999))


def pretrain_generator(generator: nn.Module, discriminator: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                       num_classes: int, steps: int = 300, batch_size: int = 4, lr: float = 2e-4, lambda_l1: float = 100.0,
                       seed: int = 0, device: str | torch.device = "cpu",
                       optimizers: tuple[torch.optim.Optimizer, torch.optim.Optimizer] | None = None) -> list[dict[str, float]]:
    """GenSeg stage 1: plain Pix2Pix (mask -> image) on the few labelled pairs; alpha stays fixed.

    Args:
        generator: G (:class:`SearchablePix2PixUNet` or any one-hot -> image network).
        discriminator: PatchGAN with ``num_classes + 1`` input channels (instance norm recommended).
        images: ``(N, 1, *S)`` in [-1, 1].
        labels: ``(N, 1, *S)`` integer class indices.
        num_classes: classes including background.
        steps: updates (a few hundred for ~10 pairs).
        batch_size: pairs per step, drawn at random with replacement-free shuffling per epoch.
        lr: Adam learning rate (beta1 = 0.5) when ``optimizers`` is not given.
        lambda_l1: weight of the L1 term.
        seed: seed of the batch order.
        device: torch device.
        optimizers: ``(opt_g, opt_d)`` to continue with (e.g. :class:`GenSegTrainer`'s).

    Returns:
        The loss dict of every step.
    """
    if images.shape[0] != labels.shape[0] or images.shape[2:] != labels.shape[2:]:
        raise ValueError(f"pretrain_generator: images {tuple(images.shape)} and labels {tuple(labels.shape)} do not match.")
    device = torch.device(device)
    generator.to(device).train()
    discriminator.to(device).train()
    gen_params = _weight_params(generator)
    opt_g, opt_d = optimizers if optimizers is not None else (_adam_gan(gen_params, lr), _adam_gan(discriminator.parameters(), lr))
    adversarial = PatchAdversarialLoss(criterion="bce", reduction="mean")
    rng = torch.Generator().manual_seed(seed)
    n, order, history = images.shape[0], torch.empty(0, dtype=torch.long), []
    for _ in range(steps):
        if order.numel() < min(batch_size, n):
            order = torch.cat([order, torch.randperm(n, generator=rng)])
        idx, order = order[: min(batch_size, n)], order[min(batch_size, n):]
        condition = labels_to_onehot(labels[idx], num_classes).to(device)
        history.append(pix2pix_step(generator, discriminator, opt_g, opt_d, condition, images[idx].to(device),
                                    adversarial, lambda_l1, gen_params))
    return history


# -- the trainer ---------------------------------------------------------------------------------------------


def build_default_segmenter(spatial_dims: int, num_classes: int, channels: Sequence[int] = (16, 32, 64, 128),
                            strides: Sequence[int] = (2, 2, 2), num_res_units: int = 1, act: str = "SWISH") -> UNet:
    """GenSeg's segmenter stand-in: MONAI ``UNet`` with one input channel and ``num_classes`` logits.

    The activation is smooth (Swish) rather than MONAI's default PReLU: with a piecewise-linear segmenter
    ``grad_alpha L_tr`` jumps wherever a perturbation ``theta +- r v`` crosses a kink, and the finite-difference
    hypergradient then disagrees with the exact one (cosine 0.3-0.9 measured on this UNet, against 1.000 with Swish).
    """
    return UNet(spatial_dims=spatial_dims, in_channels=1, out_channels=num_classes, channels=channels, strides=strides,
                num_res_units=num_res_units, act=act)


@dataclass
class GenSegConfig:
    """Settings of :class:`GenSegTrainer`.

    Args:
        num_classes: segmentation classes including background (MNI152 tissues: 4).
        lambda_syn: weight of the synthetic-data loss in ``L_tr`` (paper: 1).
        lr_seg: Adam learning rate of the segmenter.
        lr_gen: Adam learning rate (beta1 0.5) of G's weights and of D in the Pix2Pix stage.
        lr_arch: Adam learning rate (beta1 0.5) of the architecture logits (DARTS: 3e-4). 0 freezes them.
        lr_gen_upper: Adam learning rate of G's weights at the upper level (``"arch+generator"``); ``None`` = lr_gen.
        arch_weight_decay: Adam weight decay of the architecture logits (DARTS: 1e-3).
        lambda_l1: L1 weight of the Pix2Pix loss (paper: 100).
        upper_params: ``"arch"`` (alpha only) or ``"arch+generator"`` (alpha and all of G's weights).
        hypergradient: ``"finite_difference"`` (DARTS, default) or ``"exact"`` (double back-propagation).
        xi: virtual inner learning rate of the look-ahead; ``None`` = lr_seg.
        fd_eps: finite-difference step, relative to the norm of the validation gradient.
        seed: seed of the mask augmentation.
        augment: mask-augmentation ranges.
    """

    num_classes: int = 4
    lambda_syn: float = 1.0
    lr_seg: float = 1e-3
    lr_gen: float = 2e-4
    lr_arch: float = 3e-4
    lr_gen_upper: float | None = None
    arch_weight_decay: float = 0.0
    lambda_l1: float = 100.0
    upper_params: str = "arch"
    hypergradient: str = "finite_difference"
    xi: float | None = None
    fd_eps: float = 0.01
    seed: int = 0
    augment: MaskAugmentParams = field(default_factory=MaskAugmentParams)

    def __post_init__(self) -> None:
        if self.upper_params not in UPPER_PARAMS:
            raise ValueError(f"GenSegConfig: upper_params must be one of {UPPER_PARAMS}, got {self.upper_params!r}.")
        if self.hypergradient not in HYPERGRADIENTS:
            raise ValueError(f"GenSegConfig: hypergradient must be one of {HYPERGRADIENTS}, got {self.hypergradient!r}.")
        if self.num_classes < 2:
            raise ValueError(f"GenSegConfig: num_classes must be >= 2, got {self.num_classes}.")
        for name in ("lambda_syn", "lr_seg", "lr_gen", "lr_arch", "arch_weight_decay", "lambda_l1"):
            if getattr(self, name) < 0:
                raise ValueError(f"GenSegConfig: {name} must be >= 0, got {getattr(self, name)}.")
        if self.fd_eps <= 0:
            raise ValueError(f"GenSegConfig: fd_eps must be > 0, got {self.fd_eps}.")
        if isinstance(self.augment, dict):
            self.augment = MaskAugmentParams(**self.augment)

    @property
    def virtual_lr(self) -> float:
        """xi, the look-ahead learning rate."""
        return self.lr_seg if self.xi is None else self.xi


class GenSegTrainer:
    """GenSeg stage 2: generator, discriminator and segmenter trained together, with the explicit bilevel step.

    Args:
        generator: G, one-hot masks ``(B, num_classes, *S)`` -> images ``(B, 1, *S)``; with ``upper_params="arch"``
            it must provide ``arch_parameters()`` and ``weight_parameters()`` (:class:`SearchablePix2PixUNet`).
        discriminator: conditional PatchGAN on ``cat(one-hot, image)`` (``num_classes + 1`` channels; instance
            norm recommended since real and fake pairs share one forward).
        segmenter: S, images ``(B, 1, *S)`` -> logits ``(B, num_classes, *S)``; ``None`` builds
            :func:`build_default_segmenter` with ``generator.spatial_dims``. Prefer smooth activations and avoid
            dropout and batch norm in S: the finite differences assume a deterministic, differentiable S.
        config: :class:`GenSegConfig`.
        device: torch device.
        syn_transform: optional differentiable ``(B, 1, *S) -> (B, 1, *S)`` map applied to every synthetic batch
            before the segmenter (e.g. :func:`~medgen_core.transforms.seg_augment.intensity_jitter`), drawn once
            per outer step so the finite differences see the same batch.

    Example::

        g = SearchablePix2PixUNet(2, 4, 1, num_downs=5, features=32)
        d = build_patch_discriminator(2, 5, features=32, norm="INSTANCE")
        trainer = GenSegTrainer(g, d, None, GenSegConfig(num_classes=4))
        trainer.pretrain(images, labels, steps=300)
        for _ in range(steps):
            trainer.outer_step({"image": x, "label": m}, {"image": x_val, "label": m_val})
    """

    def __init__(self, generator: nn.Module, discriminator: nn.Module, segmenter: nn.Module | None,
                 config: GenSegConfig | None = None, device: str | torch.device = "cpu",
                 syn_transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        self.config = cfg = GenSegConfig() if config is None else config
        self.syn_transform = syn_transform
        self.device = torch.device(device)
        has_arch = hasattr(generator, "arch_parameters")
        if cfg.upper_params == "arch" and not (has_arch and list(generator.arch_parameters())):
            raise ValueError(
                f"GenSegTrainer: upper_params='arch' needs a generator with architecture parameters "
                f"(SearchablePix2PixUNet), got {type(generator).__name__}; use upper_params='arch+generator'."
            )
        if segmenter is None:
            if not hasattr(generator, "spatial_dims"):
                raise ValueError("GenSegTrainer: segmenter=None needs generator.spatial_dims; pass a segmenter.")
            segmenter = build_default_segmenter(generator.spatial_dims, cfg.num_classes)
        self.generator, self.discriminator, self.segmenter = (m.to(self.device).train() for m in (generator, discriminator, segmenter))
        self.arch_params = list(generator.arch_parameters()) if has_arch else []
        self.weight_params = _weight_params(generator)
        self.upper_params = self.arch_params + (self.weight_params if cfg.upper_params == "arch+generator" else [])
        self.seg_params = trainable_parameters(self.segmenter)[1]
        self.opt_g = _adam_gan(self.weight_params, cfg.lr_gen)
        self.opt_d = _adam_gan(self.discriminator.parameters(), cfg.lr_gen)
        self.opt_seg = torch.optim.Adam(self.seg_params, lr=cfg.lr_seg)
        self.opt_upper = []
        if self.arch_params:
            self.opt_upper.append(torch.optim.Adam(self.arch_params, lr=cfg.lr_arch, betas=(0.5, 0.999),
                                                   weight_decay=cfg.arch_weight_decay))
        if cfg.upper_params == "arch+generator":
            lr = cfg.lr_gen if cfg.lr_gen_upper is None else cfg.lr_gen_upper
            self.opt_upper.append(_adam_gan(self.weight_params, lr))
        self.adversarial = PatchAdversarialLoss(criterion="bce", reduction="mean")
        self.seg_loss = DiceCELoss(to_onehot_y=True, softmax=True)
        self.rng = torch.Generator().manual_seed(cfg.seed)
        self.step = 0

    def _batch(self, batch: dict[str, torch.Tensor], name: str) -> tuple[torch.Tensor, torch.Tensor]:
        if "image" not in batch or "label" not in batch:
            raise ValueError(f"GenSegTrainer: {name} batch needs keys 'image' and 'label', got {sorted(batch)}.")
        image, label = batch["image"].to(self.device).float(), batch["label"].to(self.device).long()
        if image.shape[0] != label.shape[0] or image.shape[2:] != label.shape[2:] or label.shape[1] != 1:
            raise ValueError(f"GenSegTrainer: {name} image {tuple(image.shape)} and label {tuple(label.shape)} do not match.")
        if label.min() < 0 or label.max() >= self.config.num_classes:
            raise ValueError(f"GenSegTrainer: {name} labels must lie in [0, {self.config.num_classes}), "
                             f"got [{int(label.min())}, {int(label.max())}].")
        return image, label

    def pretrain(self, images: torch.Tensor, labels: torch.Tensor, steps: int = 300, batch_size: int = 4,
                 seed: int | None = None) -> list[dict[str, float]]:
        """Stage 1 (:func:`pretrain_generator`) with this trainer's G/D optimisers, so Adam's state carries over."""
        return pretrain_generator(self.generator, self.discriminator, images, labels, self.config.num_classes, steps,
                                  batch_size, lambda_l1=self.config.lambda_l1,
                                  seed=self.config.seed if seed is None else seed, device=self.device,
                                  optimizers=(self.opt_g, self.opt_d))

    def synthesize(self, labels: torch.Tensor) -> torch.Tensor:
        """``G(one_hot(labels))`` ``(B, 1, *S)`` in [-1, 1], with the graph to G."""
        return self.generator(labels_to_onehot(labels, self.config.num_classes))

    def outer_step(self, train_batch: dict[str, torch.Tensor], val_batch: dict[str, torch.Tensor],
                   gan_batch: dict[str, torch.Tensor] | None = None) -> dict[str, float]:
        """One GenSeg outer step (module docstring I-III); returns the losses and the hypergradient norm.

        ``train_batch`` feeds the segmenter (it may be classically augmented); ``gan_batch`` (default: the same)
        feeds the Pix2Pix step and, through :func:`mask_augment`, the synthetic masks.
        """
        cfg = self.config
        x, m = self._batch(train_batch, "train")
        x_val, m_val = self._batch(val_batch, "val")
        x_gan, m_gan = (x, m) if gan_batch is None else self._batch(gan_batch, "gan")
        # I. Pix2Pix on the real pairs; alpha fixed (only W and D are stepped)
        stats = pix2pix_step(self.generator, self.discriminator, self.opt_g, self.opt_d,
                             labels_to_onehot(m_gan, cfg.num_classes), x_gan, self.adversarial, cfg.lambda_l1,
                             self.weight_params)
        # II. segmenter loss on real + synthetic pairs; x_syn keeps its graph to W and alpha (no detach)
        m_syn = mask_augment(m_gan, self.rng, cfg.augment)
        x_syn = self.synthesize(m_syn) if cfg.lambda_syn > 0 else None
        if x_syn is not None and self.syn_transform is not None:
            x_syn = self.syn_transform(x_syn)
        l_tr, l_real, l_syn = segmentation_train_loss(self.segmenter, x, m, x_syn, m_syn, self.seg_loss, cfg.lambda_syn)
        g = grads_or_zeros(l_tr, self.seg_params)  # frees S's graph only; x_syn's graph to G stays for step III
        # III. hypergradient at the current theta (before it moves): look-ahead theta' = theta - xi g
        val_loss, hyper = float("nan"), None
        if self.upper_params and x_syn is not None:
            def val_loss_fn(forward: Forward) -> torch.Tensor:
                return self.seg_loss(forward(x_val), m_val)
            if cfg.hypergradient == "finite_difference":
                def syn_loss_fn(forward: Forward) -> torch.Tensor:  # L_real has no alpha-gradient: left out
                    return cfg.lambda_syn * self.seg_loss(forward(x_syn), m_syn)
                hyper, val_loss = finite_difference_hypergradient(self.segmenter, syn_loss_fn, val_loss_fn,
                                                                  self.upper_params, cfg.virtual_lr, cfg.fd_eps, train_grad=g)
            else:
                def train_loss_fn(forward: Forward) -> torch.Tensor:
                    return segmentation_train_loss(forward, x, m, x_syn, m_syn, self.seg_loss, cfg.lambda_syn)[0]
                hyper, val_loss = exact_hypergradient(self.segmenter, train_loss_fn, val_loss_fn, self.upper_params,
                                                      cfg.virtual_lr)
        # II (cont.). theta <- Adam(g)
        for p, gi in zip(self.seg_params, g):
            p.grad = gi.detach()
        self.opt_seg.step()
        self.opt_seg.zero_grad(set_to_none=True)
        # III (cont.). alpha (and W) <- Adam(h)
        hyper_norm = 0.0
        if hyper is not None:
            for p, h in zip(self.upper_params, hyper):
                p.grad = h.detach().clone()
            for opt in self.opt_upper:
                opt.step()
            for opt in self.opt_upper:
                opt.zero_grad(set_to_none=True)
            arch = hyper[: len(self.arch_params)]
            hyper_norm = math.sqrt(sum(float((h.double() ** 2).sum()) for h in arch)) if arch else 0.0
        self.step += 1
        stats.update(seg_total=float(l_tr.detach()), seg_real=float(l_real.detach()), seg_syn=float(l_syn.detach()),
                     val_lookahead=val_loss, arch_hypergrad_norm=hyper_norm)
        return stats


# -- the bundle's engine: MONAI SupervisedTrainer with the bilevel step ----------------------------------------


def scaled(image01: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] -> [-1, 1] (the generator's and the segmenters' range)."""
    return image01 * 2.0 - 1.0


class PairBatches:
    """``num_batches`` batches of labelled pairs, drawn without replacement within each pass over the ``N`` pairs
    (a new permutation when a pass is used up), like the benchmark's batches; ``{"image": (B, 1, H, W) in [0, 1],
    "label": (B, 1, H, W)}``, or with ``pix2pix`` the generator's pairs ``{"image": one-hot masks, "target": images in
    [-1, 1]}``. Load with ``DataLoader(batch_size=None)``; :class:`~medgen_core.training.engines.EpochSeed` reseeds it."""

    def __init__(self, image01: torch.Tensor, label: torch.Tensor, batch_size: int, num_batches: int, num_classes: int = 4,
                 pix2pix: bool = False, seed: int = 0) -> None:
        image01, label = torch.as_tensor(image01).float(), torch.as_tensor(label).long()
        if image01.shape[0] != label.shape[0] or image01.shape[2:] != label.shape[2:] or image01.dim() != 4 or label.shape[1] != 1:
            raise ValueError(f"PairBatches: images {tuple(image01.shape)} and labels {tuple(label.shape)} must be (N, 1, H, W) pairs.")
        if int(label.min()) < 0 or int(label.max()) >= num_classes:
            raise ValueError(f"PairBatches: labels must lie in [0, {num_classes}), got [{int(label.min())}, {int(label.max())}].")
        self.image01, self.label, self.num_classes, self.pix2pix = image01, label, int(num_classes), bool(pix2pix)
        self.batch_size, self.num_batches = int(batch_size), max(int(num_batches), 1)
        self.g = torch.Generator().manual_seed(int(seed))
        self.order = torch.empty(0, dtype=torch.long)

    def reseed(self, seed: int) -> None:
        self.g.manual_seed(int(seed))
        self.order = torch.empty(0, dtype=torch.long)

    def __len__(self) -> int:
        return self.num_batches

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < self.num_batches:
            raise IndexError(index)
        n, b = self.image01.shape[0], min(self.batch_size, self.image01.shape[0])
        if self.order.numel() < b:
            self.order = torch.cat([self.order, torch.randperm(n, generator=self.g)])
        idx, self.order = self.order[:b], self.order[b:]
        if self.pix2pix:
            return {"image": labels_to_onehot(self.label[idx], self.num_classes), "target": scaled(self.image01[idx])}
        return {"image": self.image01[idx], "label": self.label[idx]}


def syn_jitter(seed: int = 0) -> Callable[[torch.Tensor], torch.Tensor]:
    """The differentiable intensity jitter of the synthetic batches (:func:`~medgen_core.transforms.seg_augment.intensity_jitter`),
    drawing from its own generator seeded ``seed + 2`` (as the benchmark's :func:`~medgen_core.training.segmentation.train_genseg`)."""
    from functools import partial

    from medgen_core.transforms.seg_augment import intensity_jitter

    return partial(intensity_jitter, generator=torch.Generator().manual_seed(int(seed) + 2))


class GenSegIteration:
    """The GenSeg outer step as a MONAI ``iteration_update`` (:class:`~monai.engines.SupervisedTrainer` whose network is
    the segmenter): the real batch is classically augmented (``augment``) for the segmenter, the un-augmented pairs
    feed the Pix2Pix step and the synthetic masks, and the validation pairs drive the upper level
    (:meth:`GenSegTrainer.outer_step`). ``state_dict``/``load_state_dict`` cover the GenSeg optimisers (G, D, segmenter,
    upper level), so a checkpoint resumes all of them. Logged terms: the outer step's statistics."""

    def __init__(self, genseg: GenSegTrainer, val_image01: torch.Tensor, val_label: torch.Tensor, augment: Any = None) -> None:
        self.genseg, self.augment = genseg, augment
        self.val = {"image": scaled(torch.as_tensor(val_image01).float()), "label": torch.as_tensor(val_label).long()}

    def __call__(self, engine: Any, batch: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        x, m = batch["image"], batch["label"]
        xa, ma = self.augment(x, m) if self.augment is not None else (x, m)
        stats = self.genseg.outer_step({"image": scaled(xa), "label": ma}, self.val, gan_batch={"image": scaled(x), "label": m})
        return {"loss": torch.tensor(stats["seg_total"]), "terms": {k: float(v) for k, v in stats.items() if math.isfinite(float(v))}}

    def _optimizers(self) -> dict[str, torch.optim.Optimizer]:
        g = self.genseg
        return {"opt_g": g.opt_g, "opt_d": g.opt_d, "opt_seg": g.opt_seg, **{f"opt_upper_{i}": o for i, o in enumerate(g.opt_upper)}}

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.genseg.step, **{k: o.state_dict() for k, o in self._optimizers().items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.genseg.step = int(state["step"])
        for k, o in self._optimizers().items():
            o.load_state_dict(state[k])


class SegmentationValidation:
    """The evaluator's step: Dice + cross-entropy of the segmenter (``engine.network``, eval mode) on a batch
    ``{"image": [0, 1], "label"}``. Returns ``{"loss": float}``."""

    def __init__(self) -> None:
        self.loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)

    @torch.no_grad()
    def __call__(self, engine: Any, batch: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        net = engine.network
        was_training = net.training
        net.eval()
        x, m = batch["image"].to(engine.state.device), batch["label"].to(engine.state.device)
        loss = float(self.loss_fn(net(scaled(x)), m))
        net.train(was_training)
        return {"loss": loss}


class BestState:
    """An evaluator handler keeping the segmenter state with the lowest ``metric`` (the GenSeg model selection) and every
    validation value (``history``, at trainer step ``epoch * steps_per_epoch``); :meth:`restore` (an ``ExportWeights`` ``before`` callable) loads the best state back
    before ``model.pt`` is written. ``state_dict``/``load_state_dict`` make it part of the trainer's checkpoint."""

    def __init__(self, module: nn.Module, metric: str = "val_loss", steps_per_epoch: int = 1) -> None:
        self.module, self.metric, self.steps_per_epoch = module, metric, int(steps_per_epoch)
        self.best, self.state, self.history = float("inf"), None, []

    def attach(self, engine: Any) -> None:
        from medgen_core.training.engines import Events

        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Any) -> None:
        value = float(engine.state.metrics[self.metric])
        self.history.append({"step": int(engine.state.epoch) * self.steps_per_epoch, self.metric: value})
        if value < self.best:
            self.best = value
            self.state = {k: v.detach().clone() for k, v in self.module.state_dict().items()}

    def restore(self, engine: Any = None) -> None:
        if self.state is not None:
            self.module.load_state_dict(self.state)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "history": [[h["step"], h[self.metric]] for h in self.history], "state": self.state or {}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best = float(state["best"])
        self.history = [{"step": int(s), self.metric: float(v)} for s, v in state["history"]]
        self.state = dict(state["state"]) or None


def average_parameters(*modules: nn.Module) -> None:
    """Replace every parameter of ``modules`` by its mean over ranks (a collective; no-op without a process group)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    world = dist.get_world_size()
    with torch.no_grad():
        for module in modules:
            for p in module.parameters():
                dist.all_reduce(p.data)
                p.data /= world


class ParameterAveraging:
    """Multi-process GenSeg (local SGD / periodic model averaging): every rank trains on its own augmentation stream, and
    the parameters of ``modules`` (segmenter, generator with its architecture logits, discriminator) are averaged over
    ranks when the engine starts, every ``every`` iterations and when it completes. Attach it on every rank."""

    def __init__(self, modules: Sequence[nn.Module], every: int = 10) -> None:
        if every < 1:
            raise ValueError(f"ParameterAveraging: every must be >= 1, got {every}.")
        self.modules, self.every = list(modules), int(every)

    def attach(self, engine: Any) -> None:
        from medgen_core.training.engines import Events

        engine.add_event_handler(Events.STARTED, self)
        engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.every), self)
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Any) -> None:
        average_parameters(*self.modules)


class GenSegReport:
    """When the engine completes, write ``training.json``: seconds, steps, the best validation loss and its history,
    and the generator's architecture weights and derived kernels."""

    def __init__(self, output_dir: str | Path, best: BestState, generator: nn.Module, steps: int, pretrain_steps: int) -> None:
        self.output_dir, self.best, self.generator, self.steps, self.pretrain_steps = Path(output_dir), best, generator, steps, pretrain_steps
        self.t0 = None

    def attach(self, engine: Any) -> None:
        from medgen_core.training.engines import Events

        engine.add_event_handler(Events.STARTED, self.started)
        engine.add_event_handler(Events.COMPLETED, self)

    def started(self, engine: Any) -> None:
        import time

        self.t0 = time.time()

    def __call__(self, engine: Any) -> None:
        import json
        import os
        import time

        from medgen_core.training.distributed import rank_and_world_size

        g = self.generator
        note = {"seconds": time.time() - (self.t0 or time.time()), "world_size": rank_and_world_size()[1], "steps": self.steps,
                "pretrain_steps": self.pretrain_steps, "best_val_loss": self.best.best, "val_history": self.best.history,
                "arch_weights": g.mixture_weights().detach().tolist() if hasattr(g, "mixture_weights") else None,
                "derived_kernels": g.derive() if hasattr(g, "derive") else None}
        self.output_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.output_dir / ".training.json.tmp"
        tmp.write_text(json.dumps(note, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, self.output_dir / "training.json")
