"""The one training layer of MedGen: MONAI engines, one learning-rate schedule, one checkpoint/resume path.

Every bundle's ``configs/train.json`` builds a MONAI engine (:class:`monai.engines.SupervisedTrainer` or
:class:`monai.engines.GanTrainer`) whose step is one of the family *iteration functions* (``iteration_update``:
:class:`SupervisedIteration` here, and the GAN, CycleGAN, CVAE and GenSeg steps in their family modules), with
MONAI's handlers plus the few MedGen handlers below. Python callers (the lab, ``medgen cvae train``, the
scripts) build the same engines with :func:`standard_handlers`. Nothing here knows bundles or the CLI.

* **Schedule**: :class:`WarmupCosineSchedule` (a ``LambdaLR`` of :func:`lr_factor`: linear warm-up, a hold at the
  base rate, then cosine or linear decay to ``floor`` of the base rate), stepped by MONAI's ``LrScheduleHandler``
  per iteration or per epoch. The Pix2Pix/CycleGAN "constant, then linear to zero" schedule is the same helper
  with ``hold`` and ``shape="linear"``.
* **Checkpoints**: :class:`TrainingCheckpointSaver` (MONAI's ``CheckpointSaver`` that also saves the engine's
  state, ``checkpoint_epoch=N.pt`` in the run folder, the last ``n_saved`` kept) and :class:`ResumeFromCheckpoint`
  (MONAI's ``CheckpointLoader`` on the newest of those files, read with ``weights_only=True``, falling back to the
  one before when the newest is unreadable, e.g. cut short by a crash). Re-running the same command resumes.
* **Outputs**: :class:`ExportWeights` writes the shipped ``state_dict`` files (CPU tensors, written to a temporary
  file and renamed) when the engine completes; :func:`summary_writer` gives ``TensorBoardStatsHandler`` a writer
  that always appends ``train_log.csv`` (``step,tag,value``) and also writes TensorBoard events when the
  ``tensorboard`` package is installed; :class:`LossCurve` draws ``loss_curve.png`` from that CSV.
* **Reproducibility**: :class:`EpochSeed` reseeds torch, NumPy and the dataset's random transforms at every epoch
  start with ``seed + 1000 * epoch + rank``, so that the data of an epoch is a function of the seed and the epoch
  only: a resumed run sees the data an uninterrupted one would have seen.

Under ``torchrun`` (``multi_gpu_train.json``) the network is wrapped in ``DistributedDataParallel``; checkpoints and
exports unwrap it, so their keys carry no ``module.`` prefix.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import random
import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from monai.handlers import CheckpointLoader, CheckpointSaver, LrScheduleHandler, StatsHandler, TensorBoardStatsHandler
from monai.utils import IgniteInfo, min_version, optional_import

from medgen_core.training.base import atomic_torch_save, cpu_state_dict, load_checkpoint, unwrap

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = [
    "CSVSummaryWriter",
    "EpochSeed",
    "ExportWeights",
    "LossCurve",
    "RandomBatches",
    "ResumeFromCheckpoint",
    "SampleMontage",
    "SupervisedIteration",
    "TrainingCheckpointSaver",
    "WarmupCosineSchedule",
    "atomic_torch_save",
    "checkpoint_files",
    "cpu_state_dict",
    "every",
    "initialise_from",
    "load_checkpoint",
    "logged_terms",
    "lr_factor",
    "mean_of",
    "read_training_log",
    "standard_handlers",
    "summary_writer",
    "to_device",
    "unwrap",
]

logger = logging.getLogger(__name__)

CHECKPOINT_PATTERN = re.compile(r"^checkpoint_(epoch|iteration)=(\d+)\.pt$")


# -- small helpers -------------------------------------------------------------------------------------------


def initialise_from(network: nn.Module, path: str | Path | None) -> nn.Module:
    """Start ``network`` from the weights of another run (a ``state_dict`` file such as ``model.pt``, or a
    ``checkpoint_epoch=N.pt`` whose ``network`` / ``g_network`` entry is used); tensors whose shape differs (e.g. the
    upsampling layer of another scale) keep their initialisation. ``path=None`` or ``""`` returns the network
    unchanged. A resumed run's own checkpoint overrides this (it is loaded when the engine starts)."""
    if path is None or str(path) == "":
        return network
    state = load_checkpoint(Path(path))
    state = next((state[k] for k in ("network", "g_network", "net") if isinstance(state.get(k), dict)), state)
    own = network.state_dict()
    keep = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    skipped = sorted(set(own) - set(keep))
    network.load_state_dict({**own, **keep})
    logger.info("initialised the network from %s (%d tensors; kept their own initialisation: %s)", path, len(keep), skipped or "none")
    return network


def to_device(batch: Mapping[str, Any], device: Any, keys: Sequence[str]) -> list[torch.Tensor]:
    """``[batch[k].to(device) for k in keys]``, with a clear error for a missing key."""
    missing = [k for k in keys if k not in batch]
    if missing:
        raise KeyError(f"the training batch lacks {missing} (has {sorted(batch)}).")
    return [torch.as_tensor(batch[k]).to(device) for k in keys]


def _rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def every(n: int) -> Callable[[Any, int], bool]:
    """An ignite event filter: true on every ``n``-th event (``StatsHandler(iteration_log=every(25))``)."""
    n = max(int(n), 1)
    return lambda engine, event: event % n == 0


def mean_of(key: str) -> Any:
    """An ignite ``Average`` metric of ``output[key]`` over an evaluator's iterations (e.g. ``key_val_metric``)."""
    from ignite.metrics import Average

    return Average(output_transform=lambda output: float(output[key]))


def logged_terms(output: Any) -> dict[str, float] | None:
    """``output["terms"]``: the scalar loss terms an iteration function reports (the handlers' ``output_transform``)."""
    if isinstance(output, Mapping):
        terms = output.get("terms")
        if terms is None and "loss" in output:
            terms = {"loss": output["loss"]}
        return {k: float(v) for k, v in terms.items()} if terms else None
    return None


# -- schedule ------------------------------------------------------------------------------------------------


def lr_factor(step: int, total: int, warmup: int = 0, hold: int = 0, floor: float = 0.0, shape: str = "cosine") -> float:
    """Multiplier of the base learning rate at ``step`` (0-based) of a run of ``total`` steps.

    ``warmup`` steps rise linearly to 1 (``(step + 1) / warmup``), ``hold`` steps stay at 1, and the rest decay to
    ``floor`` along a half cosine (``shape="cosine"``) or a line (``"linear"``; the decay's first step is already
    below 1, as in the Pix2Pix/CycleGAN schedule ``1 - max(0, epoch + 1 - n) / (n_decay + 1)``). Past ``total`` the
    factor stays at ``floor`` (cosine) or at its last value (linear).
    """
    if shape not in ("cosine", "linear"):
        raise ValueError(f"lr_factor: shape must be 'cosine' or 'linear', got {shape!r}.")
    if step < warmup:
        return (step + 1) / warmup
    start = warmup + hold
    if step < start:
        return 1.0
    if shape == "cosine":
        span = max(total - start, 1)
        t = min(step - start, span) / span
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t))
    span = max(total - start, 0) + 1
    t = min(step - start + 1, span - 1) / span
    return floor + (1.0 - floor) * (1.0 - t)


class WarmupCosineSchedule(torch.optim.lr_scheduler.LambdaLR):
    """The one learning-rate schedule of MedGen: ``lr = base_lr * lr_factor(step, total_steps, warmup, hold, floor, shape)``.

    Step it once per iteration (``LrScheduleHandler(epoch_level=False)``, ``total_steps`` in iterations) or once per
    epoch (``epoch_level=True``, ``total_steps`` in epochs). Its state (``last_epoch``) is checkpointed; the shape
    comes from the arguments, so a resumed run follows the schedule it was started with only if they are the same.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 0, hold_steps: int = 0,
                 floor: float = 0.0, shape: str = "cosine") -> None:
        if total_steps < 1 or warmup_steps < 0 or hold_steps < 0 or not 0.0 <= floor <= 1.0:
            raise ValueError(f"WarmupCosineSchedule: total_steps >= 1, warmup_steps >= 0, hold_steps >= 0 and 0 <= floor <= 1 needed, "
                             f"got {total_steps}, {warmup_steps}, {hold_steps}, {floor}.")
        lr_factor(0, total_steps, shape=shape)  # validates the shape
        super().__init__(optimizer, partial(lr_factor, total=int(total_steps), warmup=int(warmup_steps), hold=int(hold_steps),
                                            floor=float(floor), shape=shape))


# -- data ----------------------------------------------------------------------------------------------------


class RandomBatches(torch.utils.data.Dataset):
    """A dataset of ``num_batches`` random batches (load it with ``DataLoader(batch_size=None)``): each item is a whole
    batch from ``sample()``, drawn with the dataset's own ``torch.Generator``. :class:`EpochSeed` calls :meth:`reseed`
    at every epoch start. Subclasses implement :meth:`sample` (one batch dict) and may extend :meth:`reseed`."""

    def __init__(self, num_batches: int, seed: int = 0) -> None:
        if num_batches < 1:
            raise ValueError(f"{type(self).__name__}: num_batches must be >= 1, got {num_batches}.")
        self.num_batches = int(num_batches)
        self.g = torch.Generator().manual_seed(int(seed))

    def reseed(self, seed: int) -> None:
        """Restart the batch stream from ``seed``."""
        self.g.manual_seed(int(seed))

    def sample(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def __len__(self) -> int:
        return self.num_batches

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < self.num_batches:
            raise IndexError(index)
        return self.sample()


# -- the generic supervised step -----------------------------------------------------------------------------


class SupervisedIteration:
    """The iteration function of the regression families (super-resolution, autoencoder, restoration, diffusion):
    ``inputs, targets, args, kwargs = engine.prepare_batch(batch)``; ``pred = engine.inferer(inputs, engine.network,
    *args, **kwargs)`` (under bfloat16 autocast when ``bf16``; the loss stays in float32); ``loss =
    engine.loss_function(pred, targets)``; one optimiser step. For :class:`~monai.engines.SupervisedTrainer`
    (``iteration_update``): MONAI's own step, plus autocast on any device (MONAI's ``amp`` is CUDA float16 only).

    Returns ``{"image", "label", "pred", "loss", "terms": {loss_name: float}}``.
    """

    def __init__(self, bf16: bool = False, loss_name: str = "loss") -> None:
        self.bf16, self.loss_name = bool(bf16), loss_name

    def __call__(self, engine: Any, batch: Any) -> dict[str, Any]:
        device = engine.state.device
        prepared = engine.prepare_batch(batch, device, engine.non_blocking, **engine.to_kwargs)
        inputs, targets = prepared[0], prepared[1]
        args, kwargs = (tuple(prepared[2]), dict(prepared[3])) if len(prepared) == 4 else ((), {})
        engine.network.train()
        with torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16, enabled=self.bf16):
            pred = engine.inferer(inputs, engine.network, *args, **kwargs)
        loss = engine.loss_function(pred.float(), targets.float())
        engine.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        engine.optimizer.step()
        return {"image": inputs, "label": targets, "pred": pred, "loss": loss.detach(), "terms": {self.loss_name: float(loss.detach())}}


# -- handlers ------------------------------------------------------------------------------------------------


def checkpoint_files(folder: str | Path) -> list[tuple[int, Path]]:
    """``[(epoch or iteration, path)]`` of the ``checkpoint_epoch=N.pt`` / ``checkpoint_iteration=N.pt`` files in
    ``folder``, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(2)), folder / name) for name in os.listdir(folder) if (m := CHECKPOINT_PATTERN.match(name))]
    return sorted(found)


class TrainingCheckpointSaver(CheckpointSaver):
    """MONAI's :class:`~monai.handlers.CheckpointSaver` that also saves the engine it is attached to (under
    ``"trainer"``: epoch and iteration), so :class:`ResumeFromCheckpoint` can continue the run.

    Files: ``<save_dir>/checkpoint_epoch=N.pt`` (``epoch_level``) or ``checkpoint_iteration=N.pt``, every
    ``save_interval`` epochs or iterations; the newest ``n_saved`` are kept (2: one to fall back to if the newest
    was cut short). Under ``torchrun`` attach it on rank 0 only (the handler lists of ``multi_gpu_train.json``).
    """

    def __init__(self, save_dir: str, save_dict: dict, save_interval: int = 1, epoch_level: bool = True, n_saved: int = 2,
                 name: str | None = None) -> None:
        self._objects = dict(save_dict)
        super().__init__(save_dir=str(save_dir), save_dict=self._objects, name=name, epoch_level=epoch_level,
                         save_interval=int(save_interval), n_saved=int(n_saved))

    def attach(self, engine: Any) -> None:
        self._objects.setdefault("trainer", engine)  # the dict the interval Checkpoint holds: the engine is saved too
        existing = checkpoint_files(self.save_dir)
        kind = "epoch" if self.epoch_level else "iteration"
        if self._interval_checkpoint is not None and existing:  # a resumed run: keep pruning the older files
            self._interval_checkpoint.load_state_dict({"_saved": [(n, p.name) for n, p in existing if p.name.startswith(f"checkpoint_{kind}=")]})
        super().attach(engine)


class ResumeFromCheckpoint:
    """Resume a run from the newest checkpoint in ``checkpoint_dir`` (written by :class:`TrainingCheckpointSaver`),
    through MONAI's :class:`~monai.handlers.CheckpointLoader` (``weights_only=True``) when the engine starts.

    The engine itself is added to ``load_dict`` (its epoch and iteration are restored; ``max_epochs`` stays the one
    of this run). An unreadable newest file (a crash while it was written) is skipped with a warning and the one
    before it is used. Without a checkpoint the run starts from scratch. Attach it on every rank.
    """

    def __init__(self, checkpoint_dir: str | Path, load_dict: Mapping[str, Any], map_location: Any = "cpu", enabled: bool = True) -> None:
        self.checkpoint_dir, self.load_dict, self.enabled = Path(checkpoint_dir), dict(load_dict), bool(enabled)
        self.map_location = str(map_location) if isinstance(map_location, torch.device) else map_location
        self.resumed_from: Path | None = None

    def attach(self, engine: Any) -> None:
        self.load_dict.setdefault("trainer", engine)
        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Any) -> None:
        if not self.enabled:
            return
        for _, path in reversed(checkpoint_files(self.checkpoint_dir)):
            try:
                CheckpointLoader(str(path), self.load_dict, map_location=self.map_location)(engine)
            except (RuntimeError, EOFError, OSError, ValueError) as err:
                if isinstance(err, ValueError) and "larger than" in str(err):
                    raise
                logger.warning("checkpoint %s could not be read (%s: %s); trying the one before", path, type(err).__name__,
                               str(err).splitlines()[0][:200])
                continue
            self.resumed_from = path
            logger.info("resumed from %s at epoch %d, iteration %d", path, engine.state.epoch, engine.state.iteration)
            return


class ExportWeights:
    """When the engine completes, write each module's ``state_dict`` (CPU tensors, DDP unwrapped) to
    ``output_dir/<file name>`` through a temporary file, after running ``before`` (callables ``engine -> None``,
    e.g. fitting a CVAE's observation model). ``modules``: ``{file name: module}``. Rank 0 only under ``torchrun``."""

    def __init__(self, output_dir: str | Path, modules: Mapping[str, nn.Module], before: Sequence[Callable[[Any], Any]] = ()) -> None:
        self.output_dir, self.modules, self.before = Path(output_dir), dict(modules), list(before)
        self.written: list[Path] = []

    def attach(self, engine: Any) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Any) -> None:
        for fn in self.before:
            fn(engine)
        for name, module in self.modules.items():
            self.written.append(atomic_torch_save(cpu_state_dict(module), self.output_dir / name))
        logger.info("exported %s", ", ".join(str(p) for p in self.written))


class EpochSeed:
    """At every epoch start, seed torch, NumPy, ``random`` and the random transforms of ``dataset`` (one dataset or a
    list; ``reseed`` or MONAI's ``set_rnd``) with ``seed + 1000 * epoch + rank`` (plus the dataset's index in the
    list). Attach it on every rank, first."""

    def __init__(self, seed: int = 0, dataset: Any = None) -> None:
        self.seed, self.dataset = int(seed), dataset

    def attach(self, engine: Any) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def __call__(self, engine: Any) -> None:
        from monai.data.utils import set_rnd

        s = self.seed + 1000 * int(engine.state.epoch) + _rank()
        torch.manual_seed(s)
        np.random.seed(s % 2**32)
        random.seed(s)
        datasets = self.dataset if isinstance(self.dataset, (list, tuple)) else [self.dataset]
        for i, ds in enumerate(d for d in datasets if d is not None):
            if hasattr(ds, "reseed"):
                ds.reseed(s + i)
            else:
                set_rnd(ds, (s + i) % 2**32)


class CSVSummaryWriter:
    """A ``SummaryWriter`` stand-in for ``TensorBoardStatsHandler``: every ``add_scalar`` appends ``step,tag,value`` to
    ``path`` (created on first use, header once); also forwards to a real TensorBoard writer when given."""

    FIELDS = ("step", "tag", "value")

    def __init__(self, path: str | Path, tensorboard: Any = None) -> None:
        self.path, self.tensorboard = Path(path), tensorboard

    def add_scalar(self, tag: str, scalar_value: float, global_step: int | None = None, *args: Any, **kwargs: Any) -> None:
        new = not self.path.exists()
        if new:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            if new:
                w.writerow(self.FIELDS)
            w.writerow([global_step if global_step is not None else "", tag, float(scalar_value)])
        if self.tensorboard is not None:
            self.tensorboard.add_scalar(tag, scalar_value, global_step)

    def flush(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.flush()

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()


def summary_writer(log_dir: str | Path, csv_name: str = "train_log.csv") -> CSVSummaryWriter:
    """The writer for ``TensorBoardStatsHandler(summary_writer=...)``: ``log_dir/train_log.csv``, plus TensorBoard event
    files in ``log_dir`` when ``tensorboard`` is installed (``pip install tensorboard``)."""
    import importlib.util

    tb = None
    if importlib.util.find_spec("tensorboard") is not None:
        from torch.utils.tensorboard import SummaryWriter

        tb = SummaryWriter(log_dir=str(log_dir))
    return CSVSummaryWriter(Path(log_dir) / csv_name, tb)


def read_training_log(path: str | Path) -> dict[str, list[tuple[int, float]]]:
    """``{tag: [(step, value), ...]}`` from a :class:`CSVSummaryWriter` file."""
    out: dict[str, list[tuple[int, float]]] = {}
    with Path(path).open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            out.setdefault(row["tag"], []).append((int(row["step"]) if row["step"] else 0, float(row["value"])))
    return out


class LossCurve:
    """When the engine completes, plot every tag of the CSV log against its step (log scale) into a PNG."""

    def __init__(self, writer: CSVSummaryWriter, path: str | Path, title: str = "training") -> None:
        self.writer, self.path, self.title = writer, Path(path), title

    def attach(self, engine: Any) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Any) -> None:
        if not self.writer.path.is_file():
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        data = read_training_log(self.writer.path)
        fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
        for tag, points in sorted(data.items()):
            steps, values = zip(*points)
            ax.plot(steps, np.abs(values) + 1e-12, label=tag)
        ax.set_xlabel("iteration")
        ax.set_yscale("log")
        ax.set_title(self.title)
        ax.legend(fontsize=7)
        fig.tight_layout()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".tmp-{self.path.stem}-", suffix=".png")
        os.close(fd)
        fig.savefig(tmp)
        plt.close(fig)
        os.replace(tmp, self.path)


class SampleMontage:
    """After every epoch, write ``output_dir/samples/epoch_NNNN.png``: the titled 2D images ``columns(batch)`` returns
    (e.g. input / output / target, values in [0, 1]) for a fixed ``batch``, with the networks in eval mode and no
    gradients. ``networks``: the modules to switch to eval mode (they are switched back). Rank 0 only."""

    def __init__(self, output_dir: str | Path, batch: Mapping[str, Any], columns: Callable[[Mapping[str, Any]], Sequence[tuple[str, torch.Tensor]]],
                 networks: Sequence[nn.Module] = (), device: Any = "cpu") -> None:
        self.output_dir, self.batch, self.columns, self.networks, self.device = Path(output_dir), batch, columns, list(networks), device

    def attach(self, engine: Any) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Any) -> None:
        from medgen_core.utils.figures import save_montage

        modes = [n.training for n in self.networks]
        for n in self.networks:
            n.eval()
        with torch.no_grad():
            batch = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in self.batch.items()}
            cols = self.columns(batch)
        for n, mode in zip(self.networks, modes):
            n.train(mode)
        save_montage([(name, t.float().cpu().numpy()) for name, t in cols], self.output_dir / "samples" / f"epoch_{engine.state.epoch:04d}.png",
                     title=f"epoch {engine.state.epoch}", vmax=1.0)


def standard_handlers(output_dir: str | Path, checkpoint_dict: Mapping[str, Any], exports: Mapping[str, nn.Module],
                      lr_scheduler: Any = None, lr_epoch_level: bool = False, seed: int = 0, dataset: Any = None,
                      log_every: int = 25, resume: bool = True, before_export: Sequence[Callable[[Any], Any]] = (),
                      title: str = "training", extra: Sequence[Any] = (), save_interval: int = 1) -> list[Any]:
    """The handlers every MedGen train.json lists, for Python callers, in the same order: on every rank
    :class:`EpochSeed`, :class:`ResumeFromCheckpoint`, ``LrScheduleHandler`` (if ``lr_scheduler``), ``extra``; then the
    rank-0 ones: ``StatsHandler``, ``TensorBoardStatsHandler`` (:func:`summary_writer`), :class:`TrainingCheckpointSaver`
    (every ``save_interval`` epochs), :class:`ExportWeights`, :class:`LossCurve`."""
    writer = summary_writer(output_dir)
    handlers: list[Any] = [EpochSeed(seed, dataset), ResumeFromCheckpoint(output_dir, checkpoint_dict, enabled=resume)]
    if lr_scheduler is not None:
        handlers.append(LrScheduleHandler(lr_scheduler, print_lr=False, epoch_level=lr_epoch_level))
    handlers += list(extra)
    if _rank() == 0:
        handlers += [
            StatsHandler(tag_name="train", output_transform=logged_terms, iteration_log=every(log_every), name="medgen.training"),
            TensorBoardStatsHandler(summary_writer=writer, output_transform=logged_terms, iteration_log=every(log_every)),
            TrainingCheckpointSaver(str(output_dir), dict(checkpoint_dict), save_interval=save_interval),
            ExportWeights(output_dir, exports, before_export),
            LossCurve(writer, Path(output_dir) / "loss_curve.png", title),
        ]
    return handlers
