"""Does generative augmentation help a downstream model? A small, honest, repeatable experiment.

Task (a stand-in for the user's own task): classify 2D axial MNI152 slices by coarse slice position
(the classes of the diffusion generator). A small MONAI ``Classifier`` is trained on few real slices
per class under each condition, with the same budget, and tested on held-out slices with realistic
acquisition shifts (noise, bias field, contrast) so the task is not trivial:

- ``baseline``: real slices only (generative augmentation off, the default);
- ``real_duplicate``: count-matched control, the same mixing but with duplicates of real training
  slices of the same class instead of synthetic ones (separates "more samples per batch" from "new
  samples");
- ``generative``: :class:`~medgen_core.augmentation.transform.RandGenerativeAugmentd` over a
  sweep of ``prob``, ``mix_ratio_range`` and ``inference_steps``.

Synthetic samples come from a :class:`SyntheticBank` filled once per ``inference_steps`` value by the
generator manager (sampling is by far the most expensive part; every run of a setting draws from the
same bank with its own seed). Metrics: Cohen's kappa, macro F1 and accuracy, mean and SD over seeds.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medgen_core.augmentation.config import AugmentationConfig
from medgen_core.augmentation.manager import CacheStats, GenerativeAugmentationManager, SyntheticBatch
from medgen_core.augmentation.transform import RandGenerativeAugmentd

__all__ = ["ExperimentConfig", "SyntheticBank", "classification_metrics", "run_experiment", "shifted"]


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> dict[str, float]:
    """Accuracy, macro F1 and Cohen's kappa from integer labels."""
    cm = np.zeros((num_classes, num_classes), dtype=np.float64)
    np.add.at(cm, (np.asarray(y_true, int), np.asarray(y_pred, int)), 1)
    n = cm.sum()
    accuracy = float(np.trace(cm) / n)
    tp = np.diag(cm)
    precision = np.divide(tp, cm.sum(0), out=np.zeros_like(tp), where=cm.sum(0) > 0)
    recall = np.divide(tp, cm.sum(1), out=np.zeros_like(tp), where=cm.sum(1) > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(tp), where=(precision + recall) > 0)
    expected = float((cm.sum(0) * cm.sum(1)).sum() / n**2)
    kappa = (accuracy - expected) / (1 - expected) if expected < 1 else 0.0
    return {"accuracy": accuracy, "macro_f1": float(f1.mean()), "kappa": float(kappa)}


def shifted(images: torch.Tensor, seed: int) -> torch.Tensor:
    """Test-time acquisition shifts at a fixed seed: a smooth multiplicative bias field, a gamma change
    and Rician-like noise. ``images`` ``(N, 1, H, W)`` in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    n, _, h, w = images.shape
    coarse = 1 + 0.25 * (torch.rand(n, 1, 4, 4, generator=g) * 2 - 1)
    bias = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=True)
    gamma = torch.exp((torch.rand(n, 1, 1, 1, generator=g) * 2 - 1) * 0.3)
    x = (images.clamp(0, 1) ** gamma) * bias
    noise = 0.04 * torch.randn(2, n, 1, h, w, generator=g)
    return torch.sqrt((x + noise[0]) ** 2 + noise[1] ** 2).clamp(0, 1)


class SyntheticBank:
    """Pre-generated synthetic images per class, served like a manager (``config``, ``generate``, ``stats``).

    Args:
        images: ``{class_name: (M, 1, H, W)}`` in [0, 1].
        records: ``{class_name: [provenance dict per image]}``.
        config: the augmentation settings of the runs that draw from this bank.
    """

    def __init__(self, images: dict[str, torch.Tensor], records: dict[str, list[dict]], config: AugmentationConfig) -> None:
        self.images, self.records, self.config = images, records, config
        self.stats = CacheStats()

    @classmethod
    def from_manager(cls, manager: GenerativeAugmentationManager, per_class: int, seed: int, batch: int = 16) -> SyntheticBank:
        images: dict[str, torch.Tensor] = {}
        records: dict[str, list[dict]] = {}
        for ci, name in enumerate(manager.config.classes):
            chunks = [manager.generate(name, min(batch, per_class - s), seed=seed + 1000 * ci + s, source="sample") for s in range(0, per_class, batch)]
            images[name] = torch.cat([c.images for c in chunks])
            records[name] = [r for c in chunks for r in c.records]
        return cls(images, records, manager.config)

    def generate(self, class_name: str, n: int = 1, *, generator: torch.Generator | None = None, size: tuple[int, int] | None = None,
                 **_: Any) -> SyntheticBatch:
        pool = self.images[class_name]
        idx = torch.randint(0, pool.shape[0], (n,), generator=generator)
        self.stats.hits += 1
        out = pool[idx]
        if size is not None and tuple(out.shape[-2:]) != tuple(size):
            out = F.interpolate(out, size=size, mode="bilinear", align_corners=False)
        return SyntheticBatch(out, [self.records[class_name][int(i)] for i in idx])


@dataclass
class ExperimentConfig:
    """Budget and sweep of the experiment (defaults: about 15-25 minutes on 2 CPU cores)."""

    train_per_class: int = 6
    image_size: int = 64
    iterations: int = 200
    batch_size: int = 16
    lr: float = 1e-3
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    probs: list[float] = field(default_factory=lambda: [0.3, 0.5, 0.7])
    mix_ratio_ranges: list[list[float]] = field(default_factory=lambda: [[0.1, 0.3], [0.3, 0.5]])
    inference_steps: list[int] = field(default_factory=lambda: [10, 20, 50])
    bank_per_class: int = 48
    control_prob: float = 0.5
    control_mix_ratio_range: list[float] = field(default_factory=lambda: [0.1, 0.3])
    test_shift_seed: int = 1234


def _classifier(num_classes: int, size: int) -> torch.nn.Module:
    from monai.networks.nets import Classifier

    return Classifier(in_shape=(1, size, size), classes=num_classes, channels=(8, 16, 32, 64), strides=(2, 2, 2, 2), num_res_units=0)


def _train_and_test(train_x: torch.Tensor, train_y: torch.Tensor, tests: dict[str, tuple[torch.Tensor, torch.Tensor]], num_classes: int,
                    cfg: ExperimentConfig, seed: int, augment: RandGenerativeAugmentd | None) -> tuple[dict[str, float], int]:
    """Train one classifier; metrics on every test set, keys prefixed by the set's name (``""`` for the main one)."""
    torch.manual_seed(seed)
    net = _classifier(num_classes, cfg.image_size)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    g = torch.Generator().manual_seed(seed)
    synthetic = 0
    for _ in range(cfg.iterations):
        idx = torch.randint(0, train_x.shape[0], (cfg.batch_size,), generator=g)
        x, y = train_x[idx], train_y[idx]
        flip = torch.rand(cfg.batch_size, generator=g) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        if augment is not None:
            batch = augment({"image": x, "label": y})
            x, y = torch.as_tensor(batch["image"]), torch.as_tensor(batch["label"])
            synthetic += int(batch["image"].meta["medgen_synthetic"].sum())
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    net.eval()
    metrics: dict[str, float] = {}
    with torch.no_grad():
        for prefix, (test_x, test_y) in tests.items():
            pred = net(test_x).argmax(1)
            metrics.update({prefix + k: v for k, v in classification_metrics(test_y.numpy(), pred.numpy(), num_classes).items()})
    return metrics, synthetic


def run_experiment(images: torch.Tensor, labels: torch.Tensor, class_names: list[str], manager: GenerativeAugmentationManager,
                   out_dir: str | Path, cfg: ExperimentConfig | None = None, progress: bool = True,
                   unseen: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict[str, Any]:
    """Run every condition over ``cfg.seeds``; write ``results.json``, ``results.md`` and ``results.png``.

    Args:
        images: all real slices ``(N, 1, H, W)`` in [0, 1]; labels ``(N,)`` class indices into ``class_names``.
            Per seed, ``train_per_class`` of each class train the classifier, the rest (shifted) test it.
        manager: generator manager whose config lists ``class_names`` (its own prob/ratio are ignored).
        unseen: optional second test set ``(images, labels)`` of slices the generator never saw in training
            (shifted the same way); its metrics get the prefix ``unseen_``. The main test slices may have
            been in the generator's training data, so only this set is free of that leak.
    """
    from tqdm import tqdm

    cfg = cfg or ExperimentConfig()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    size = (cfg.image_size, cfg.image_size)
    images = F.interpolate(images.float(), size=size, mode="bilinear", align_corners=False)
    unseen_x = F.interpolate(unseen[0].float(), size=size, mode="bilinear", align_corners=False) if unseen is not None else None
    k = len(class_names)
    rows: list[dict[str, Any]] = []
    settings = list(itertools.product(cfg.probs, [tuple(r) for r in cfg.mix_ratio_ranges], cfg.inference_steps))
    total = len(cfg.seeds) * (2 + len(settings))
    bar = tqdm(total=total, desc="augmentation experiment", disable=not progress)
    banks: dict[int, SyntheticBank] = {}
    for steps in cfg.inference_steps:
        manager.config = AugmentationConfig(**{**manager.config.to_dict(), "inference_steps": steps, "classes": class_names})
        banks[steps] = SyntheticBank.from_manager(manager, cfg.bank_per_class, seed=77)
    for seed in cfg.seeds:
        rng = np.random.default_rng(seed)
        train_idx = np.concatenate([rng.choice(np.nonzero(labels.numpy() == c)[0], cfg.train_per_class, replace=False) for c in range(k)])
        test_idx = np.setdiff1d(np.arange(labels.shape[0]), train_idx)
        tx, ty = images[train_idx], labels[train_idx]
        tests = {"": (shifted(images[test_idx], cfg.test_shift_seed), labels[test_idx])}
        if unseen is not None:
            tests["unseen_"] = (shifted(unseen_x, cfg.test_shift_seed), unseen[1])
        base = AugmentationConfig(classes=class_names, enabled=True, seed=seed)

        def record(condition: str, metrics: dict[str, float], synthetic: int, **extra: Any) -> None:
            rows.append({"condition": condition, "seed": seed, **extra, **metrics, "synthetic_samples": synthetic})
            bar.update(1)

        record("baseline", *_train_and_test(tx, ty, tests, k, cfg, seed, None))
        real = {name: tx[ty == c] for c, name in enumerate(class_names)}
        control_cfg = AugmentationConfig(**{**base.to_dict(), "prob": cfg.control_prob, "mix_ratio_range": cfg.control_mix_ratio_range})
        control = SyntheticBank(real, {n: [{"real_duplicate": True}] * v.shape[0] for n, v in real.items()}, control_cfg)
        record("real_duplicate", *_train_and_test(tx, ty, tests, k, cfg, seed, RandGenerativeAugmentd(control)),
               prob=cfg.control_prob, mix_ratio_range=list(cfg.control_mix_ratio_range))
        for prob, ratio, steps in settings:
            bank = banks[steps]
            bank.config = AugmentationConfig(**{**base.to_dict(), "prob": prob, "mix_ratio_range": ratio, "inference_steps": steps})
            record("generative", *_train_and_test(tx, ty, tests, k, cfg, seed, RandGenerativeAugmentd(bank)),
                   prob=prob, mix_ratio_range=list(ratio), inference_steps=steps)
    bar.close()
    summary = summarise(rows)
    result = {"config": asdict(cfg), "classes": class_names, "num_test_slices": int(labels.shape[0] - k * cfg.train_per_class),
              "num_unseen_test_slices": int(unseen[1].shape[0]) if unseen is not None else 0,
              "generator": banks[cfg.inference_steps[0]].records[class_names[0]][0].get("generator_name"), "runs": rows, "summary": summary}
    (out_dir / "results.json").write_text(json.dumps(result, indent=4) + "\n", encoding="utf-8")
    (out_dir / "results.md").write_text(markdown_table(summary) + "\n", encoding="utf-8")
    plot_summary(summary, out_dir / "results.png")
    return result


def _key(row: dict[str, Any]) -> str:
    if row["condition"] == "generative":
        lo, hi = row["mix_ratio_range"]
        return f"generative p={row['prob']} mix=[{lo},{hi}] steps={row['inference_steps']}"
    return row["condition"]


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and SD over seeds of each condition's kappa, macro F1 and accuracy, and the paired difference
    to the baseline run of the same seed (``kappa_delta``: same real training slices, same test set)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(_key(r), []).append(r)
    baseline = {r["seed"]: r for r in groups.get("baseline", [])}
    out = []
    for name, rs in groups.items():
        entry: dict[str, Any] = {"condition": name, "runs": len(rs)}
        for m in ("kappa", "macro_f1", "accuracy", "unseen_accuracy", "unseen_kappa"):
            if m not in rs[0]:
                continue
            v = np.array([r[m] for r in rs])
            entry[m] = float(v.mean())
            entry[f"{m}_sd"] = float(v.std(ddof=1)) if len(v) > 1 else 0.0
        deltas = np.array([r["kappa"] - baseline[r["seed"]]["kappa"] for r in rs if r["seed"] in baseline])
        if len(deltas):
            entry["kappa_delta"] = float(deltas.mean())
            entry["kappa_delta_sd"] = float(deltas.std(ddof=1)) if len(deltas) > 1 else 0.0
            entry["kappa_delta_positive_seeds"] = int((deltas > 0).sum())
        if "unseen_accuracy" in rs[0]:
            d = np.array([r["unseen_accuracy"] - baseline[r["seed"]]["unseen_accuracy"] for r in rs if r["seed"] in baseline])
            if len(d):
                entry["unseen_accuracy_delta"] = float(d.mean())
                entry["unseen_accuracy_delta_sd"] = float(d.std(ddof=1)) if len(d) > 1 else 0.0
        out.append(entry)
    return out


def markdown_table(summary: list[dict[str, Any]]) -> str:
    unseen = any("unseen_accuracy" in s for s in summary)
    head = "| condition | Cohen's kappa | paired kappa difference to baseline (seeds > 0) | macro F1 | accuracy |"
    head += " accuracy on generator-unseen slab (paired difference) |" if unseen else ""
    lines = [head + " runs |", "|---" * (head.count("|")) + "|"]
    for s in summary:
        delta = (f"{s['kappa_delta']:+.3f} ± {s['kappa_delta_sd']:.3f} ({s['kappa_delta_positive_seeds']}/{s['runs']})"
                 if "kappa_delta" in s and s["condition"] != "baseline" else "")
        row = (f"| {s['condition']} | {s['kappa']:.3f} ± {s['kappa_sd']:.3f} | {delta} | {s['macro_f1']:.3f} ± {s['macro_f1_sd']:.3f} | "
               f"{s['accuracy']:.3f} ± {s['accuracy_sd']:.3f} |")
        if unseen:
            d = (f" ({s['unseen_accuracy_delta']:+.3f} ± {s['unseen_accuracy_delta_sd']:.3f})"
                 if "unseen_accuracy_delta" in s and s["condition"] != "baseline" else "")
            row += f" {s['unseen_accuracy']:.3f} ± {s['unseen_accuracy_sd']:.3f}{d} |"
        lines.append(row + f" {s['runs']} |")
    return "\n".join(lines)


def plot_summary(summary: list[dict[str, Any]], png: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, dax) = plt.subplots(1, 2, figsize=(11, max(2.5, 0.32 * len(summary) + 1)), dpi=100, sharey=True,
                                  gridspec_kw={"width_ratios": [3, 2]})
    y = np.arange(len(summary))
    colours = ["tab:grey" if s["condition"] == "baseline" else "tab:orange" if s["condition"] == "real_duplicate" else "tab:blue" for s in summary]
    kappa = np.array([s["kappa"] for s in summary])
    sd = np.array([s["kappa_sd"] for s in summary])
    ax.barh(y, kappa, xerr=sd, color=colours)
    ax.set_yticks(y, [s["condition"] for s in summary], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(max(-1.0, float((kappa - sd).min()) - 0.05), min(1.0, float((kappa + sd).max()) + 0.02))
    ax.set_xlabel("Cohen's kappa (mean ± SD over seeds)")
    ax.axvline(summary[0]["kappa"], color="k", lw=0.8, ls="--")
    deltas = [s.get("kappa_delta", 0.0) for s in summary]
    dax.barh(y, deltas, xerr=[s.get("kappa_delta_sd", 0.0) for s in summary], color=colours)
    dax.axvline(0, color="k", lw=0.8)
    dax.set_xlabel("paired kappa difference to baseline (same seed)")
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)
    return png
