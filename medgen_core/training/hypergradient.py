"""Hypergradients of a validation loss through a one-step look-ahead of a trained module (for bilevel training).

Given a lower-level loss ``L_tr(theta, alpha)`` (theta: the module's trainable parameters, alpha: upper-level
parameters it depends on, e.g. a generator's architecture logits) and a validation loss ``L_val(theta)``,
the hypergradient of ``L_val(theta - xi grad_theta L_tr(theta, alpha))`` w.r.t. alpha is computed either by
the DARTS first-order finite difference (two extra backward passes, no Hessian) or exactly by double
back-propagation through the unrolled step (:func:`torch.func.functional_call`), the reference for tests.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn as nn
from torch.func import functional_call

__all__ = ["Forward", "LossFn", "exact_hypergradient", "finite_difference_hypergradient", "grads_or_zeros", "trainable_parameters"]

Forward = Callable[[torch.Tensor], torch.Tensor]
"""The segmenter at some parameter values: image ``(B, 1, *S)`` -> logits ``(B, num_classes, *S)``."""
LossFn = Callable[[Forward], torch.Tensor]
"""A scalar loss computed with a given segmenter forward (see :func:`finite_difference_hypergradient`)."""


def trainable_parameters(module: nn.Module) -> tuple[list[str], list[torch.Tensor]]:
    named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    return [n for n, _ in named], [p for _, p in named]


def _forward_at(module: nn.Module, names: list[str], tensors: Sequence[torch.Tensor]) -> Forward:
    """``module`` evaluated with its trainable parameters replaced by ``tensors`` (buffers are the module's)."""
    params = dict(zip(names, tensors))
    return lambda x: functional_call(module, params, (x,))


def grads_or_zeros(loss: torch.Tensor, inputs: Sequence[torch.Tensor], **kwargs) -> list[torch.Tensor]:
    """``torch.autograd.grad`` with zeros for inputs that ``loss`` does not depend on."""
    if not inputs:
        return []
    if not loss.requires_grad:
        return [torch.zeros_like(t) for t in inputs]
    grads = torch.autograd.grad(loss, list(inputs), allow_unused=True, **kwargs)
    return [torch.zeros_like(t) if g is None else g for t, g in zip(inputs, grads)]


def finite_difference_hypergradient(segmenter: nn.Module, train_loss_fn: LossFn, val_loss_fn: LossFn,
                                    upper_params: Sequence[torch.Tensor], xi: float, eps: float = 0.01,
                                    train_grad: Sequence[torch.Tensor] | None = None) -> tuple[list[torch.Tensor], float]:
    """DARTS finite-difference hypergradient of ``L_val(theta - xi grad_theta L_tr(theta, alpha))`` w.r.t. alpha.

    ``h = -xi [grad_alpha L_tr(theta + r v) - grad_alpha L_tr(theta - r v)] / (2 r)`` with
    ``v = grad_theta' L_val(theta')``, ``theta' = theta - xi grad_theta L_tr(theta)`` and ``r = eps / ||v||``:
    first-order accurate in ``r``, no second derivatives. ``L_val`` must not depend on alpha directly.

    Args:
        segmenter: S; theta = its parameters with ``requires_grad`` (left unchanged).
        train_loss_fn: ``forward -> L_tr``; differentiable w.r.t. ``upper_params`` and deterministic (same synthetic
            batch every call, e.g. one generated tensor whose graph is retained). With ``train_grad`` given it is
            only used for ``grad_alpha``, so the terms that do not depend on alpha may be left out.
        val_loss_fn: ``forward -> L_val``.
        upper_params: alpha (any tensors that ``L_tr`` depends on).
        xi: virtual inner learning rate.
        eps: finite-difference step relative to ``||v||`` (DARTS: 0.01).
        train_grad: ``grad_theta L_tr(theta)`` in ``segmenter.named_parameters()`` order, if already computed.

    Returns:
        ``(h, L_val(theta'))``: one tensor per upper parameter, and the look-ahead validation loss.
    """
    if eps <= 0:
        raise ValueError(f"finite_difference_hypergradient: eps must be > 0, got {eps}.")
    names, params = trainable_parameters(segmenter)
    theta = [p.detach() for p in params]
    if train_grad is None:
        train_grad = grads_or_zeros(train_loss_fn(_forward_at(segmenter, names, params)), params, retain_graph=True)
    # 1. virtual step theta' = theta - xi g and the validation gradient there
    theta_prime = [(t - xi * g.detach()).requires_grad_(True) for t, g in zip(theta, train_grad)]
    val_loss = val_loss_fn(_forward_at(segmenter, names, theta_prime))
    v = grads_or_zeros(val_loss, theta_prime)
    norm = torch.sqrt(sum((vi.double() ** 2).sum() for vi in v)).item() if v else 0.0
    if norm == 0.0 or not upper_params:
        return [torch.zeros_like(a) for a in upper_params], float(val_loss.detach())
    r = eps / norm
    # 2. grad_alpha L_tr at theta +- r v (theta +- r v are constants: only alpha's path is back-propagated)
    plus = grads_or_zeros(train_loss_fn(_forward_at(segmenter, names, [t + r * vi for t, vi in zip(theta, v)])), upper_params,
                  retain_graph=True)
    minus = grads_or_zeros(train_loss_fn(_forward_at(segmenter, names, [t - r * vi for t, vi in zip(theta, v)])), upper_params,
                   retain_graph=True)
    return [-xi * (gp - gm) / (2 * r) for gp, gm in zip(plus, minus)], float(val_loss.detach())


def exact_hypergradient(segmenter: nn.Module, train_loss_fn: LossFn, val_loss_fn: LossFn,
                        upper_params: Sequence[torch.Tensor], xi: float) -> tuple[list[torch.Tensor], float]:
    """Exact hypergradient ``d/d alpha L_val(theta - xi grad_theta L_tr(theta, alpha))`` by double back-propagation.

    The unrolled step is built with ``torch.func.functional_call``; it needs second derivatives of the segmenter
    (memory ~2-3x a training step). Same arguments and return value as :func:`finite_difference_hypergradient`;
    here ``train_loss_fn`` must be the full ``L_tr``.
    """
    names, params = trainable_parameters(segmenter)
    g = grads_or_zeros(train_loss_fn(_forward_at(segmenter, names, params)), params, create_graph=True)
    val_loss = val_loss_fn(_forward_at(segmenter, names, [p - xi * gi for p, gi in zip(params, g)]))
    return grads_or_zeros(val_loss, upper_params, retain_graph=True), float(val_loss.detach())


# -- Pix2Pix stage -------------------------------------------------------------------------------------------
