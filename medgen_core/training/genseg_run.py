"""One end-to-end GenSeg training run that writes the segmenter's weights (the bundle's ``train.json``).

Stage 1 (Pix2Pix pre-training of the searchable generator) then stage 2 (:func:`train_genseg`), then the
selected segmenter state is saved as a CPU ``state_dict`` (``model.pt``), with the generator (``generator.pt``)
and a ``training.json`` note (losses, architecture weights, derived kernels, seconds).

Multi-process (``torchrun``, ``distributed=True``): every rank trains on its own augmentation stream (seed
``seed + 1000 * rank``) and all parameters of the segmenter, generator and discriminator (architecture logits
included) are averaged over ranks every ``sync_every`` outer steps (local SGD / periodic model averaging; the
bilevel step and the validation-based model selection stay per rank; the selected states are averaged at the
end). Rank 0 writes the files.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn

from medgen_core.training.distributed import barrier, resolve_distributed
from medgen_core.training.genseg import GenSegConfig
from medgen_core.training.segmentation import GeneratorSpec, SegBudget, pretrain_searchable_generator, train_genseg
from medgen_core.transforms.seg_augment import ClassicSegAugment

__all__ = ["GenSegRun", "average_parameters"]


def average_parameters(*modules: nn.Module) -> None:
    """Replace every parameter of ``modules`` by its mean over ranks (a collective; no-op without a process group)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    world = dist.get_world_size()
    with torch.no_grad():
        for module in modules:
            for p in module.parameters():
                dist.all_reduce(p.data)
                p.data /= world


class GenSegRun:
    """Train a segmenter with GenSeg end to end on a few labelled slices and save it.

    Args:
        segmenter: the network to train (e.g. ``build_segmenter("unet", 4)``).
        train_image, train_label: ``(N, 1, H, W)`` images in [0, 1] and integer labels.
        val_image, val_label: validation pairs (upper level and model selection).
        budget: :class:`SegBudget` (outer steps, batch, lr, Pix2Pix pre-training steps).
        config: :class:`GenSegConfig` (``num_classes`` must match the labels).
        generator: :class:`GeneratorSpec`.
        output_dir: where ``model.pt``, ``generator.pt`` and ``training.json`` go.
        seed: seed of initialisation, batches and augmentation.
        device: torch device.
        distributed: ``None`` = if a process group is initialised; ``True`` requires one.
        sync_every: parameter-averaging interval under ``torchrun``.
    """

    def __init__(self, segmenter: nn.Module, train_image: torch.Tensor, train_label: torch.Tensor, val_image: torch.Tensor,
                 val_label: torch.Tensor, budget: SegBudget, config: GenSegConfig, generator: GeneratorSpec | None = None,
                 output_dir: str | Path = "runs/genseg", seed: int = 0, device: str | torch.device = "cpu",
                 distributed: bool | None = None, sync_every: int = 10) -> None:
        self.distributed, self.rank, self.world = resolve_distributed(distributed, "GenSegRun")
        if sync_every < 1:
            raise ValueError(f"GenSegRun: sync_every must be >= 1, got {sync_every}.")
        self.segmenter, self.budget, self.config = segmenter, budget, config
        self.spec = GeneratorSpec() if generator is None else generator
        self.data = (train_image, train_label, val_image, val_label)
        self.output_dir, self.seed, self.device, self.sync_every = Path(output_dir), int(seed), torch.device(device), int(sync_every)

    def run(self) -> Path:
        """Train; returns the path of ``model.pt`` (on every rank)."""
        t0 = time.time()
        seed = self.seed + 1000 * self.rank
        x, m, xv, mv = (t.to(self.device) for t in self.data)
        self.segmenter.to(self.device)
        generator, discriminator = pretrain_searchable_generator(x.cpu(), m.cpu(), self.config.num_classes, self.spec,
                                                                 self.budget.pretrain_steps, self.budget.batch_size, self.seed)
        generator, discriminator = generator.to(self.device), discriminator.to(self.device)
        average_parameters(self.segmenter, generator, discriminator)  # identical start on every rank

        def sync(step: int) -> None:
            if self.distributed and step % self.sync_every == 0:
                average_parameters(self.segmenter, generator, discriminator)

        info = train_genseg(self.segmenter, generator, discriminator, x, m, xv, mv, self.budget, self.config,
                            ClassicSegAugment(seed=seed), seed=seed, desc="genseg", on_step=sync)
        average_parameters(self.segmenter, generator, discriminator)
        path = self.output_dir / "model.pt"
        if self.rank == 0:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            for name, module in (("model.pt", self.segmenter), ("generator.pt", generator)):
                state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
                tmp = self.output_dir / f".{name}.tmp"
                torch.save(state, tmp)
                tmp.replace(self.output_dir / name)
            note = {"seconds": time.time() - t0, "world_size": self.world, "steps": self.budget.steps,
                    "pretrain_steps": self.budget.pretrain_steps, "best_val_loss": info["best_val_loss"],
                    "val_history": info["val_history"], "arch_weights": info.get("arch_weights"),
                    "derived_kernels": info.get("derived_kernels")}
            (self.output_dir / "training.json").write_text(json.dumps(note, indent=2) + "\n", encoding="utf-8")
        barrier()
        return path
