r"""The training loop behind ``fit``: small and exact.

What "exact" means here:

* **Loss normalisation.** Every reported loss, train and validation alike, is the per-sample
  (per-token, per-weight) mean over the whole epoch, :math:`\sum_b s_b / \sum_b n_b` with
  :math:`(s_b, n_b)` = :func:`losskit.distributed.loss_sum_and_count` of batch ``b``, not a mean of
  batch means.
* **Gradient accumulation.** Each micro-batch backpropagates its loss *sum* :math:`s_k`. After the
  ``grad_accum_steps`` micro-batches of an optimizer step, the step's (sum, count) pair is summed
  over ranks with one all-reduce and every gradient is multiplied by :math:`W / \sum_{r,k} n_{r,k}`
  (``W`` = world size, undoing DDP's gradient averaging). The update is therefore that of the mean
  over one batch ``grad_accum_steps x world_size`` times larger, also when micro-batches hold
  different numbers of non-ignored targets. (The gradients are rescaled after accumulation rather
  than the losses before backward, because the count is only known once all micro-batches are
  seen and losses with class weights need the input to count.)
* **Resume.** The shuffling order of epoch ``e`` is a function of ``(seed, e)`` only
  (``DistributedSampler(seed=seed)`` with ``set_epoch(e)``), and each checkpoint stores the model,
  optimizer, scheduler, RNG states, early-stopping state and history, so a run resumed from epoch
  ``k``'s checkpoint continues exactly like the uninterrupted run (CPU, same settings).

Under ``torchrun`` (``WORLD_SIZE`` > 1) ``fit`` initialises the default process group when
nobody has (gloo on CPU, NCCL on CUDA), wraps the model in ``DistributedDataParallel``, shards the
training set with ``DistributedSampler`` and the validation set without padding, sums losses and
gathers torchmetrics states over ranks, and prints and writes files on rank 0 only. ``batch_size``
is per rank. Checkpoints hold the unwrapped model, so they resume on any number of ranks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import math
import os
import random
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence, Sized
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import (
    DataLoader,
    Dataset,
    DistributedSampler,
    IterableDataset,
    Sampler,
    TensorDataset,
)

from losskit import distributed as D
from losskit.train import checkpoint as ckpt
from losskit.train.callbacks import EarlyStopping
from losskit.train.contrastive import min_batch_rows
from losskit.train.history import History
from losskit.train.progress import Reporter
from losskit.train.resume import (
    apply_new_lr,
    check_model,
    check_settings,
    data_signature,
    loss_signature,
)

CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"
_CHECKPOINT_KEYS = ("epoch", "model", "optimizer", "scheduler", "rng", "history", "sampler",
                    "global_step")


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or Inf; training stopped before applying that step.

    Attributes: ``value``, ``epoch``, ``step`` (in the epoch), ``global_step``, ``lr``,
    ``checkpoint`` (the kept checkpoint's path, or None), ``saved_epoch`` (its epoch, 0 when none
    completed), ``amp``. :meth:`text` words the message for fit's arguments or the CLI's flags.
    """

    def __init__(self, *, value: float, epoch: int, step: int, global_step: int, lr: float,
                 checkpoint: str | None, saved_epoch: int, amp: bool) -> None:
        self.value, self.epoch, self.step, self.global_step = value, epoch, step, global_step
        self.lr, self.checkpoint, self.saved_epoch, self.amp = lr, checkpoint, saved_epoch, amp
        super().__init__(self.text())

    def text(self, *, cli: bool = False) -> str:
        """The message; ``cli=True`` names ``--lr``, ``--resume`` and ``--amp``."""
        if self.checkpoint and self.saved_epoch:
            again = "--resume with a lower --lr" if cli else "fit(..., lr=..., resume=True)"
            kept = (f"The last good checkpoint, {self.checkpoint} (after epoch "
                    f"{self.saved_epoch}), is kept; {again} continues from it.")
        elif self.checkpoint:
            kept = "No epoch had completed, so there is no checkpoint to go back to."
        else:
            kept = "No checkpoint was written (out=None)."
        lr = f"{self.lr:g}"
        lower = f"lower --lr (now {lr})" if cli else f"lower the learning rate (lr={lr})"
        amp = (", or drop --amp" if cli else ", or try amp=False") if self.amp else ""
        return (
            f"fit: the training loss is {self.value} at epoch {self.epoch}, step {self.step} "
            f"(optimizer step {self.global_step} overall); training stopped before applying this "
            f"step. {kept} Fix: {lower}, or check the data for NaN/Inf{amp}."
        )


# ---------------------------------------------------------------------------------------------
# Arguments -> devices, data loaders, optimizer.


def _resolve_device(device: str | torch.device) -> torch.device:
    if device == "auto":
        if torch.cuda.is_available():
            index = int(os.environ.get("LOCAL_RANK", 0)) if D.is_distributed() else None
            return torch.device("cuda", index) if index is not None else torch.device("cuda")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(
            f"device={device!r} is not a device. Fix: use 'auto', 'cpu', 'cuda' or 'cuda:0'."
        ) from e
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but CUDA is not available here. Fix: device='cpu'.")
    return resolved


def _as_dataset(data: Any, name: str) -> Dataset | DataLoader:
    """A DataLoader as given, a Dataset as given, or a pair of tensors as a TensorDataset;
    checked to have a length and at least one row."""
    if isinstance(data, (DataLoader, Dataset)):
        dataset = data.dataset if isinstance(data, DataLoader) else data
        if isinstance(dataset, IterableDataset):
            raise TypeError(
                f"{name} is an IterableDataset ({type(dataset).__name__}), which has no length or "
                f"index, so fit cannot shard, shuffle by seed or resume it exactly. Fix: use a "
                f"map-style Dataset (__len__ and __getitem__), e.g. a TensorDataset of its rows."
            )
        if len(cast(Sized, dataset)) == 0:  # map-style (checked above): it has __len__
            raise ValueError(f"{name} has 0 rows. Fix: pass a non-empty {name} set.")
        return data
    is_pair = isinstance(data, (tuple, list)) and len(data) == 2
    if is_pair and all(isinstance(t, Tensor) for t in data):
        inputs, targets = data
        if inputs.shape[0] != targets.shape[0]:
            raise ValueError(
                f"{name}=(inputs, targets) have {inputs.shape[0]} and {targets.shape[0]} rows. "
                f"Fix: give one target row per input row."
            )
        if inputs.shape[0] == 0:
            raise ValueError(
                f"{name}=(inputs, targets) has 0 rows. Fix: pass a non-empty {name} set."
            )
        return TensorDataset(inputs, targets)
    raise TypeError(
        f"{name} must be a (inputs, targets) pair of tensors, a Dataset or a DataLoader; got "
        f"{type(data).__name__}. Fix: e.g. fit(model, loss_fn, (x, y))."
    )


class _Shard(Sampler[int]):
    """Rows ``rank, rank + world, ...``: every validation row on exactly one rank, no padding."""

    def __init__(self, n: int, rank: int, world: int) -> None:
        self.indices = range(rank, n, world)

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class _Batches(Sampler[list[int]]):
    """``sampler``'s indices in batches of ``batch_size``; a last batch smaller than
    ``min_rows`` joins the one before it (a contrastive loss needs 2 rows: a 1-row batch has
    no negative), so the batch count is ``ceil(n / batch_size)`` or one less."""

    def __init__(self, sampler: Sampler[int], batch_size: int, min_rows: int) -> None:
        self.sampler, self.batch_size, self.min_rows = sampler, batch_size, min_rows

    def __iter__(self):
        indices = list(self.sampler)
        starts = list(range(0, len(indices), self.batch_size))
        if len(starts) > 1 and len(indices) - starts[-1] < self.min_rows:
            starts.pop()  # the short tail joins the previous batch
        ends = [*starts[1:], len(indices)]
        return iter([indices[a:b] for a, b in zip(starts, ends, strict=True)])

    def __len__(self) -> int:
        n = len(cast(Sized, self.sampler))
        count = math.ceil(n / self.batch_size)
        return count - 1 if count > 1 and n - (count - 1) * self.batch_size < self.min_rows \
            else count


def _epoch_sampler(loader: DataLoader) -> Any:
    """The sampler that orders the rows: inside the batch sampler when there is one (fit's
    :class:`_Batches`; ``loader.sampler`` is then torch's unused default)."""
    return getattr(loader.batch_sampler, "sampler", loader.sampler)


def _train_loader(data: Dataset | DataLoader, batch_size: int, seed: int,
                  min_rows: int = 1) -> DataLoader:
    if isinstance(data, DataLoader):
        if D.world_size() > 1 and not isinstance(data.sampler, DistributedSampler):
            raise ValueError(
                "train is a DataLoader without a DistributedSampler, but fit runs on "
                f"{D.world_size()} ranks, so every rank would train on all of it. Fix: pass the "
                "Dataset (fit shards it) or give the DataLoader a DistributedSampler."
            )
        return data
    # One sampler for one and many processes: the order of epoch e depends on (seed, e) only.
    sampler: DistributedSampler = DistributedSampler(
        data, num_replicas=D.world_size(), rank=D.rank(), shuffle=True, seed=seed, drop_last=False
    )
    return DataLoader(data, batch_sampler=_Batches(sampler, batch_size, min_rows))


def _val_loader(data: Dataset | DataLoader, batch_size: int, min_rows: int = 1) -> DataLoader:
    if isinstance(data, DataLoader):
        return data
    sampler = _Shard(len(cast(Sized, data)), D.rank(), D.world_size())
    return DataLoader(data, batch_sampler=_Batches(sampler, batch_size, min_rows))


def _make_optimizer(optimizer: Any, model: nn.Module, lr: float) -> torch.optim.Optimizer:
    if optimizer is None:
        return torch.optim.AdamW(model.parameters(), lr=lr)
    if isinstance(optimizer, torch.optim.Optimizer):
        return optimizer
    if callable(optimizer):
        return optimizer(model.parameters())
    raise TypeError(
        f"optimizer must be None, a torch.optim.Optimizer or a callable params -> Optimizer; got "
        f"{type(optimizer).__name__}. Fix: e.g. optimizer=lambda p: torch.optim.SGD(p, lr=0.1)."
    )


def _make_scheduler(scheduler: Any, optimizer: torch.optim.Optimizer) -> Any:
    if scheduler is None or hasattr(scheduler, "state_dict"):
        return scheduler
    if callable(scheduler):
        return scheduler(optimizer)
    raise TypeError(
        f"scheduler must be None, an LR scheduler or a callable optimizer -> scheduler; got "
        f"{type(scheduler).__name__}."
    )


def _autocast(device: torch.device, amp: bool) -> Callable[[], contextlib.AbstractContextManager]:
    """bfloat16 autocast where the device has it, else a no-op (with a warning when asked for)."""
    if not amp:
        return contextlib.nullcontext
    supported = device.type == "cpu" or (device.type == "cuda" and torch.cuda.is_bf16_supported())
    if not supported:
        warnings.warn(f"fit: amp=True but {device} has no bfloat16 autocast; training in float32.",
                      stacklevel=3)
        return contextlib.nullcontext
    return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _maybe_init_process_group() -> bool:
    """Join the job when torchrun launched us and nobody set up the group; True if we did."""
    if D.is_distributed() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    import torch.distributed as dist

    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend=backend)
    return True


# ---------------------------------------------------------------------------------------------
# The loop.


@dataclasses.dataclass(eq=False)
class _Loop:
    """One fit call's state; methods in the order they run."""

    model: nn.Module
    ddp: Any  # the DistributedDataParallel wrapper of `model` under torch.distributed, else None
    loss_fn: Any  # a loss Module (whose state fit checkpoints) or any callable
    optimizer: torch.optim.Optimizer
    device: torch.device
    out: str | None
    scheduler: Any  # a torch LR scheduler or None
    stopper: EarlyStopping | None
    metrics: Any  # a torchmetrics MetricCollection, TaskMetrics, or None
    auto_metrics: bool
    task: str | None
    main_metric: str | None
    history: History
    settings: dict[str, Any]
    batch_size: int
    grad_accum_steps: int
    autocast: Callable[[], contextlib.AbstractContextManager]
    amp: bool
    shuffle_seed: int
    params: list[Tensor]
    last_saved_epoch: int
    reporter: Reporter
    train: Any  # what fit was given: Dataset, DataLoader or (inputs, targets)
    val: Any
    train_loader: DataLoader = dataclasses.field(init=False)  # set by _run before the epochs
    val_loader: DataLoader | None = dataclasses.field(init=False, default=None)
    global_step: int = 0
    lr_note: str | None = None  # set when a resumed run changes the learning rate

    def batches(self, loader: DataLoader) -> Iterable[tuple[Tensor, Tensor]]:
        for batch in loader:
            if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
                raise ValueError(
                    f"fit expects every batch to be an (inputs, targets) pair; got a "
                    f"{type(batch).__name__}. Fix: make the Dataset return (input, target)."
                )
            x, y = batch
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def forward_loss(self, model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        with self.autocast():
            out = model(x)
        if out.dtype in (torch.float16, torch.bfloat16):
            out = out.float()  # the loss and its reduction run in float32
        loss_sum, count = D.loss_sum_and_count(self.loss_fn, out, y)
        return out, loss_sum, count

    def train_epoch(self, epoch: int) -> float:
        self.model.train()
        loader, k, world = self.train_loader, self.grad_accum_steps, D.world_size()
        n_batches = len(loader)
        epoch_sum = epoch_count = 0.0
        pending: Tensor | None = None  # (2,): loss sum, count of this step's micro-batches
        step = 0
        self.reporter.start_epoch(epoch, n_batches)
        for i, (x, y) in enumerate(self.batches(loader)):
            last = (i + 1) % k == 0 or i + 1 == n_batches
            # DDP all-reduces gradients on the step's last micro-batch only.
            no_sync = self.ddp is not None and not last
            with self.ddp.no_sync() if no_sync else contextlib.nullcontext():
                _, loss_sum, count = self.forward_loss(self.ddp or self.model, x, y)
                loss_sum.backward()
            pair = torch.stack([loss_sum.detach().to(count.dtype), count])
            pending = pair if pending is None else pending + pair
            if not last:
                continue
            step += 1
            self.global_step += 1
            total_sum, total_count = D.all_reduce_sum_(pending).tolist()  # one sync per step
            pending = None
            if not math.isfinite(total_sum):
                raise self._nonfinite_error(total_sum, epoch, step)
            self.average_unsynced_grads(world)
            scale = world / total_count if total_count != 0 else 0.0  # all ignored: gradient 0
            for p in self.params:
                if p.grad is not None:
                    p.grad.mul_(scale)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            epoch_sum, epoch_count = epoch_sum + total_sum, epoch_count + total_count
            self.reporter.advance(i + 1, epoch_sum / epoch_count if epoch_count else math.nan)
        return epoch_sum / epoch_count if epoch_count else math.nan

    def average_unsynced_grads(self, world: int) -> None:
        """Average over the ranks the gradients DDP does not: stepped parameters outside the
        model (a loss's learned temperature). DDP averages the model's; the step's scale then
        treats both alike."""
        if self.ddp is None:
            return
        inside = {id(p) for p in self.model.parameters()}
        for p in self.params:
            if id(p) not in inside:
                if p.grad is None:  # every rank must join the collective
                    p.grad = torch.zeros_like(p)
                D.all_reduce_sum_(p.grad).div_(world)

    def _nonfinite_error(self, value: float, epoch: int, step: int) -> NonFiniteLossError:
        return NonFiniteLossError(
            value=value, epoch=epoch, step=step, global_step=self.global_step,
            lr=self.optimizer.param_groups[0]["lr"],
            checkpoint=os.path.join(self.out, CHECKPOINT) if self.out else None,
            saved_epoch=self.last_saved_epoch, amp=self.amp,
        )

    @torch.no_grad()
    def evaluate(self) -> tuple[float, dict[str, float]]:
        self.model.eval()
        acc_dtype = torch.float64 if self.device.type != "mps" else torch.float32
        totals = torch.zeros(2, dtype=acc_dtype, device=self.device)
        if self.val_loader is None:
            raise RuntimeError("losskit bug: evaluate() called without a validation loader")
        for x, y in self.batches(self.val_loader):
            out, loss_sum, count = self.forward_loss(self.model, x, y)
            totals += torch.stack([loss_sum.to(acc_dtype), count.to(acc_dtype)])
            self.update_metrics(out, y)
        total_sum, total_count = D.all_reduce_sum_(totals).tolist()
        values = {}
        if self.metrics is not None:
            values = {f"val_{k}": v for k, v in self.compute_metrics().items()}
            self.metrics.reset()
        return (total_sum / total_count if total_count else math.nan), values

    def update_metrics(self, out: Tensor, y: Tensor) -> None:
        if self.auto_metrics:  # first validation batch: pick the task's metrics once
            from losskit.metrics import MAIN_METRIC, TaskMetrics, infer_task, output_kind

            self.auto_metrics = False
            task = self.task or infer_task(self.loss_fn, y)
            if task is not None:
                outputs = out.shape[1] if out.dim() > 1 else 1
                self.metrics = TaskMetrics(task, outputs, output=output_kind(self.loss_fn))
                self.metrics.to(self.device)
                self.main_metric = f"val_{MAIN_METRIC[task]}"
        if self.metrics is not None:
            self.metrics.update(out, y)

    def compute_metrics(self) -> dict[str, float]:
        values = self.metrics.compute()  # TaskMetrics gives floats, a MetricCollection tensors
        return {k: float(v) for k, v in values.items()}

    def checkpoint_state(self, epoch: int) -> dict[str, Any]:
        return {
            "format": ckpt.FORMAT,
            "epoch": epoch,
            "model": self.model.state_dict(),
            "loss": self.loss_fn.state_dict() if isinstance(self.loss_fn, nn.Module) else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "rng": ckpt.rng_state(),
            "history": self.history.state_dict(),
            "early_stopping": self.stopper.state_dict() if self.stopper is not None else None,
            "sampler": {"seed": self.shuffle_seed, "next_epoch": epoch + 1},
            "global_step": self.global_step,
            "settings": self.settings,
        }

    def restore(self, state: dict[str, Any]) -> int:
        """Check the checkpoint's settings against this run's, load it; return its epoch."""
        if self.out is None:
            raise RuntimeError("losskit bug: restore() called for a run without an output folder")
        stored = state.get("settings", {})
        check_settings(stored, self.settings, self.out)
        check_model(state["model"], self.model, self.out)
        self.model.load_state_dict(state["model"])
        if state.get("loss") is not None:  # a loss's learnable parameters and buffers
            self.loss_fn.load_state_dict(state["loss"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.stopper is not None and state["early_stopping"] is not None:
            self.stopper.load_state_dict(state["early_stopping"])
        self.history = History.from_state_dict(state["history"])
        self.main_metric = self.history.main_metric or self.main_metric
        self.shuffle_seed = state["sampler"]["seed"]
        self.global_step = state["global_step"]
        ckpt.set_rng_state(state["rng"])
        old_lr, new_lr = stored.get("lr"), self.settings["lr"]
        if old_lr is not None and new_lr is not None and old_lr != new_lr:
            # A new lr is the usual reason to resume (after a NaN): apply it, say so; the
            # history's lr column shows it from the next epoch on.
            apply_new_lr(self.optimizer, self.scheduler, old_lr, new_lr)
            self.lr_note = (f"lr={new_lr:g} replaces the run's lr={old_lr:g} from epoch "
                            f"{state['epoch'] + 1} on")
        return state["epoch"]

    def save(self, epoch: int, improved: bool) -> None:
        """Rank 0 writes the best weights, the history files and, last, the checkpoint.

        The checkpoint is the commit point: a kill before its rename resumes from the previous
        epoch, which re-runs this one and rewrites the other files identically.
        """
        if not self.out or D.rank() != 0:
            return
        if improved:
            ckpt.save_atomic({"epoch": epoch, "model": self.model.state_dict()},
                             os.path.join(self.out, BEST))
        self.history.to_csv(os.path.join(self.out, "history.csv"))
        self.history.to_json(os.path.join(self.out, "metrics.json"))
        ckpt.save_atomic(self.checkpoint_state(epoch), os.path.join(self.out, CHECKPOINT))
        self.last_saved_epoch = epoch


def fit(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    train: Any,
    val: Any = None,
    *,
    epochs: int = 10,
    optimizer: Any = None,
    lr: float = 1e-3,
    batch_size: int = 64,
    metrics: Any = None,
    task: str | None = None,
    grad_accum_steps: int = 1,
    amp: bool = False,
    device: str | torch.device = "auto",
    out: str | os.PathLike | None = None,
    resume: bool = False,
    early_stopping: EarlyStopping | int | None = None,
    seed: int | None = None,
    progress: bool = True,
    scheduler: Any = None,
    callbacks: Sequence[Callable[[dict[str, Any]], None]] = (),
) -> History:
    """Train ``model`` to minimise ``loss_fn`` on ``train``; validate on ``val`` after each epoch.

    Args:
        model: any ``nn.Module``; moved to ``device``. With early stopping it ends holding the
            best epoch's weights.
        loss_fn: a losskit (or ``torch.nn``) loss module; reductions are done by fit (see module
            doc), so its ``reduction`` setting is not used. Its own learnable parameters, when
            the optimizer steps them, get the mean's gradient like the model's, and its state is
            checkpointed.
        train, val: an ``(inputs, targets)`` pair of tensors, a Dataset of such pairs, or a
            DataLoader (used as given: then shuffling and resume exactness are yours).
        epochs: the total number of epochs (a resumed run counts the ones already done).
        optimizer: None (AdamW with ``lr``), an Optimizer over ``model``'s parameters, or a
            callable ``params -> Optimizer``.
        lr: learning rate of the default optimizer.
        batch_size: rows per micro-batch and per rank.
        metrics: None picks torchmetrics by ``task`` (see :mod:`losskit.metrics`), a
            :class:`~losskit.metrics.TaskMetrics`, a mapping ``name -> torchmetrics.Metric`` fed
            ``(output, target)``, or ``{}`` for none. Computed on validation only.
        task: the task for default metrics; inferred from the loss and targets when None.
        grad_accum_steps: micro-batches per optimizer step (exact, see module doc).
        amp: bfloat16 autocast for the forward pass where supported; the loss runs in float32.
        device: ``"auto"`` (CUDA if available, else CPU), or any torch device.
        out: directory for ``checkpoint.pt`` (every epoch), ``best.pt``, ``history.csv``,
            ``metrics.json`` and ``loss_curve.png``. None writes nothing.
        resume: continue from ``out/checkpoint.pt`` when it exists (else start fresh, saying
            so). The seed, batch size, accumulation steps, task, loss, data and model shapes
            must equal the checkpoint's run (see :mod:`losskit.train.resume`); a different
            ``lr`` is applied to the restored optimizer and shows in the history's lr column.
        early_stopping: None, a patience in epochs, or an :class:`EarlyStopping`.
        seed: seeds Python, numpy and torch at the start and the shuffling order (0 when None,
            leaving the global generators untouched).
        progress: print a progress bar and an epoch table (rank 0 only). False prints only the
            one-line notes about resuming and restoring the best weights.
        scheduler: None, an LR scheduler on ``optimizer``, or a callable ``optimizer ->
            scheduler``; stepped once per epoch and checkpointed. ``ReduceLROnPlateau`` is stepped
            with the epoch's ``val_loss`` (``train_loss`` without a validation set).
        callbacks: callables given each epoch's record after its checkpoint is written.

    Returns:
        The :class:`History` of every epoch, including those before a resume.

    Raises:
        NonFiniteLossError: the training loss became NaN/Inf (names the epoch and step).
        ResumeMismatchError: ``resume=True`` with settings that differ from the checkpoint's.

    Example:
        >>> torch.manual_seed(0)
        <torch._C.Generator object at ...>
        >>> x = torch.randn(256, 4); y = (x[:, 0] > 0).long()
        >>> model = torch.nn.Linear(4, 2)
        >>> h = fit(model, torch.nn.CrossEntropyLoss(), (x, y), (x, y), epochs=20, lr=0.05,
        ...         seed=0, progress=False)
        >>> h.final["val_accuracy"] > 0.9, h.final["val_loss"] < h[0]["val_loss"]
        (True, True)
    """
    _check_arguments(epochs, batch_size, grad_accum_steps, lr, resume, out, task)
    _check_batch_rows(loss_fn, batch_size)
    created_group = _maybe_init_process_group()
    try:
        history = _fit(**locals())
        if created_group:  # leave together: rank 0 may still be writing the run's files
            torch.distributed.barrier()
        return history
    finally:
        if created_group:
            # DDP's reducer (in reference cycles with the wrapped model) holds the group: free it
            # first, or the group outlives destroy_process_group and its threads abort the exit.
            gc.collect()
            torch.distributed.destroy_process_group()


def _check_batch_rows(loss_fn: Any, batch_size: int) -> None:
    """A contrastive loss's rows are each other's negatives: a batch needs 2 of them."""
    need = min_batch_rows(loss_fn)
    if batch_size < need:
        raise ValueError(
            f"fit: batch_size={batch_size!r}, but {type(loss_fn).__name__} compares each row "
            f"with the other rows of its batch (its negatives), so a batch needs at least "
            f"{need} rows. Fix: batch_size={need} or more (e.g. 64)."
        )


def _check_arguments(
    epochs: Any, batch_size: Any, k: Any, lr: Any, resume: bool, out: Any, task: Any
) -> None:
    for name, value in (("epochs", epochs), ("batch_size", batch_size), ("grad_accum_steps", k)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"fit: {name}={value!r} must be a positive int. Fix: e.g. {name}=1.")
    if not (isinstance(lr, (int, float)) and lr >= 0 and math.isfinite(lr)):
        raise ValueError(f"fit: lr={lr!r} must be a finite number >= 0. Fix: e.g. lr=1e-3.")
    if task is not None:
        from losskit.metrics import TASKS

        if task not in TASKS:
            raise ValueError(f"fit: task={task!r} is not a task. Fix: use one of "
                             f"{', '.join(TASKS)}, or task=None to infer it from the loss.")
    if resume and out is None:
        raise ValueError(
            "fit: resume=True needs out= (the directory holding checkpoint.pt). Fix: pass the "
            "out directory of the run to resume."
        )


def _resolve_metrics(metrics: Any, device: torch.device) -> tuple[Any, str | None]:
    """The metrics object and the history key of its main metric (None: decided later)."""
    if metrics is None:
        return None, None  # chosen from the task at the first validation batch
    if isinstance(metrics, Mapping) and not metrics:
        return None, ""  # {}: no metrics
    # Imported here: torchmetrics takes seconds to import and a run without metrics skips it.
    import torchmetrics

    from losskit.metrics import MAIN_METRIC, TaskMetrics

    if isinstance(metrics, TaskMetrics):
        return metrics.to(device), f"val_{MAIN_METRIC[metrics.task]}"
    if isinstance(metrics, Mapping):
        return torchmetrics.MetricCollection(dict(metrics)).to(device), f"val_{next(iter(metrics))}"
    raise TypeError(
        f"metrics must be None, a TaskMetrics, or a mapping name -> torchmetrics.Metric; got "
        f"{type(metrics).__name__}. Fix: e.g. metrics={{'acc': MulticlassAccuracy(10)}}."
    )


def _fit(**a: Any) -> History:
    train = _as_dataset(a["train"], "train")
    val = _as_dataset(a["val"], "val") if a["val"] is not None else None
    device = _resolve_device(a["device"])
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)
    if a["seed"] is not None:
        _seed_everything(a["seed"])
    model: nn.Module = a["model"].to(device)
    loss_fn = a["loss_fn"]
    if isinstance(loss_fn, nn.Module):
        loss_fn = loss_fn.to(device)
    optimizer = _make_optimizer(a["optimizer"], model, a["lr"])
    optimizer.zero_grad(set_to_none=True)
    out = os.fspath(a["out"]) if a["out"] is not None else None
    if out and D.rank() == 0:
        os.makedirs(out, exist_ok=True)
    metrics, main_metric = _resolve_metrics(a["metrics"], device)
    # What a resumed run must share with this one (see losskit.train.resume).
    settings = {
        "batch_size": a["batch_size"], "grad_accum_steps": a["grad_accum_steps"],
        "world_size": D.world_size(), "seed": a["seed"], "task": a["task"],
        "loss": loss_signature(loss_fn),
        # Hashing the data costs a pass over it: only for a run that writes checkpoints.
        "data": {"train": data_signature(train), "val": data_signature(val)} if out else None,
        "lr": a["lr"] if a["optimizer"] is None else None,  # fit's lr only drives its own AdamW
    }
    loop = _Loop(
        model=model, ddp=None, loss_fn=loss_fn, optimizer=optimizer, device=device, out=out,
        scheduler=_make_scheduler(a["scheduler"], optimizer),
        stopper=EarlyStopping.from_arg(a["early_stopping"]),
        metrics=metrics, auto_metrics=a["metrics"] is None, task=a["task"],
        main_metric=main_metric, history=History(), settings=settings,
        batch_size=a["batch_size"], grad_accum_steps=a["grad_accum_steps"],
        autocast=_autocast(device, a["amp"]), amp=a["amp"],
        shuffle_seed=a["seed"] if a["seed"] is not None else 0,
        params=_stepped_params(model, loss_fn, optimizer), last_saved_epoch=0,
        reporter=Reporter(a["progress"] and D.rank() == 0, a["epochs"], notes=D.rank() == 0),
        train=train, val=val,
    )
    try:
        return _run(loop, a)
    finally:
        loop.reporter.close()
        loop.ddp = None  # the DDP wrapper holds the process group (see fit)


def _stepped_params(model: nn.Module, loss_fn: Any, optimizer: torch.optim.Optimizer) -> list:
    """Every tensor whose gradient fit rescales by ``W / count``: the optimizer's parameters
    (a loss's own learnable ones included) and the model's and loss's trainable ones."""
    found = [p for g in optimizer.param_groups for p in g["params"]]
    found += [p for p in model.parameters() if p.requires_grad]
    if isinstance(loss_fn, nn.Module):
        found += [p for p in loss_fn.parameters() if p.requires_grad]
    return list({id(p): p for p in found}.values())


def _monitored_key(monitor: str, record: dict[str, Any]) -> str:
    """The record key early stopping watches; ``val_loss`` falls back to ``train_loss``
    without a validation set, any other missing key is an error."""
    if monitor in record:
        return monitor
    if monitor == "val_loss" and "val_loss" not in record:
        return "train_loss"
    logged = [k for k in record if k not in ("epoch", "time", "lr")]
    raise ValueError(
        f"EarlyStopping monitor={monitor!r} is not among the logged metrics: {', '.join(logged)}. "
        f"Fix: monitor one of them, e.g. EarlyStopping(monitor='val_loss')."
    )


def _run(loop: _Loop, a: dict[str, Any]) -> History:
    start = 1
    path = os.path.join(loop.out, CHECKPOINT) if loop.out else None
    if a["resume"] and path and os.path.exists(path):
        done = loop.restore(ckpt.load(path, map_location=loop.device, required=_CHECKPOINT_KEYS))
        loop.last_saved_epoch = done
        start = done + 1
        loop.reporter.note(f"resuming from {path} after epoch {done}")
        if loop.lr_note:
            loop.reporter.note(loop.lr_note)
    elif a["resume"]:
        loop.reporter.note(f"no checkpoint at {path}; starting from scratch")
    if loop.out and D.rank() == 0:
        ckpt.remove_stale_temps(loop.out, CHECKPOINT)
        ckpt.remove_stale_temps(loop.out, BEST)
    if D.world_size() > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [loop.device.index] if loop.device.type == "cuda" else None
        loop.ddp = DDP(loop.model, device_ids=ids)
    rows = min_batch_rows(loop.loss_fn)
    loop.train_loader = _train_loader(loop.train, loop.batch_size, loop.shuffle_seed, rows)
    loop.val_loader = _val_loader(loop.val, loop.batch_size, rows) if loop.val is not None \
        else None
    stopped = loop.stopper is not None and loop.stopper.stopped
    for epoch in range(start, a["epochs"] + 1):
        if stopped:
            break
        t0 = time.perf_counter()
        sampler = _epoch_sampler(loop.train_loader)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        record: dict[str, Any] = {"epoch": epoch, "train_loss": loop.train_epoch(epoch)}
        if loop.val_loader is not None:
            record["val_loss"], values = loop.evaluate()
            record.update(values)
        record["lr"] = loop.optimizer.param_groups[0]["lr"]
        record["time"] = time.perf_counter() - t0
        loop.history.main_metric = loop.main_metric or None
        loop.history.append(record)
        if isinstance(loop.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            loop.scheduler.step(record["val_loss" if "val_loss" in record else "train_loss"])
        elif loop.scheduler is not None:
            loop.scheduler.step()
        if loop.stopper is not None:
            key = _monitored_key(loop.stopper.monitor, record)
            stopped = loop.stopper.update(record[key], epoch=epoch, model=loop.model)
            # The stopper's best (its min_delta and direction) is the run's best everywhere:
            # the restored model, best.pt and metrics.json.
            loop.history.best_epoch = loop.stopper.best_epoch or None
            loop.history.monitor = key
        best = loop.history.best
        loop.save(epoch, improved=best is not None and best["epoch"] == epoch)
        loop.reporter.end_epoch(record)
        for callback in a["callbacks"]:
            callback(record)
    if loop.stopper is not None and loop.stopper.restore(loop.model):
        loop.reporter.note(f"restored the weights of epoch {loop.stopper.best_epoch} "
                            f"(best {loop.stopper.monitor})")
    if loop.out and D.rank() == 0 and len(loop.history):
        loop.history.to_json(os.path.join(loop.out, "metrics.json"))
        loop.history.plot(os.path.join(loop.out, "loss_curve.png"))
    return loop.history
