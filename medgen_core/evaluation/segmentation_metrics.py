"""Dice and IoU per class of label maps, with MONAI's ``DiceMetric`` and ``MeanIoU``.

A test set of slices is scored as one image (all its pixels pooled), so a class missing from a few slices
does not produce undefined per-slice scores. Background is excluded; the foreground mean is the mean over the
other classes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.metrics import DiceMetric, MeanIoU

__all__ = ["segmentation_scores"]


def _onehot_pooled(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(N, 1, H, W)`` labels -> ``(1, C, N, H, W)`` one-hot: the N slices as one image."""
    if labels.dim() < 3 or labels.shape[1] != 1:
        raise ValueError(f"segmentation_scores: labels must be (N, 1, *S), got {tuple(labels.shape)}.")
    onehot = F.one_hot(labels[:, 0].long(), num_classes).movedim(-1, 0).float()  # (C, N, *S)
    return onehot[None]


def segmentation_scores(pred: torch.Tensor, target: torch.Tensor, class_names: Sequence[str]) -> dict[str, dict[str, float]]:
    """Dice and IoU per foreground class and their mean, over all pixels of the set.

    Args:
        pred: predicted labels ``(N, 1, *S)``, integers ``0..C-1``.
        target: true labels, same shape.
        class_names: the C class names, background first.

    Returns:
        ``{"dice": {name: value, ..., "mean": m}, "iou": {...}}`` without the background class; a class absent
        from both prediction and target gets NaN (left out of the mean).
    """
    if pred.shape != target.shape:
        raise ValueError(f"segmentation_scores: pred {tuple(pred.shape)} and target {tuple(target.shape)} differ.")
    c = len(class_names)
    if int(pred.max()) >= c or int(target.max()) >= c or int(pred.min()) < 0 or int(target.min()) < 0:
        raise ValueError(f"segmentation_scores: labels must lie in [0, {c}) for classes {list(class_names)}.")
    p, t = _onehot_pooled(pred, c), _onehot_pooled(target, c)
    out: dict[str, dict[str, float]] = {}
    for key, metric in (("dice", DiceMetric(include_background=False, reduction="none", ignore_empty=False)),
                        ("iou", MeanIoU(include_background=False, reduction="none", ignore_empty=False))):
        values = metric(p, t)[0].tolist()
        # both empty: MONAI returns 1 with ignore_empty=False; report NaN instead (undefined)
        present = [(p[0, i + 1].sum() + t[0, i + 1].sum()).item() > 0 for i in range(c - 1)]
        values = [v if ok else float("nan") for v, ok in zip(values, present)]
        scores = dict(zip(class_names[1:], values))
        valid = [v for v in values if v == v]
        scores["mean"] = sum(valid) / len(valid) if valid else float("nan")
        out[key] = scores
    return out
