"""What a resumed run must share with the run it continues, and the error when it does not.

A checkpoint records the settings that decide what is trained on what: the seed (shuffling order,
and with :mod:`losskit.data` the train/validation split), the batch size and accumulation steps,
the task, the loss (its class and settings), a fingerprint of the train and validation data, and,
implicitly, the model's parameter names and shapes. ``fit(resume=True)`` compares them with the
new call before loading anything and raises :class:`ResumeMismatchError` on the first difference:
continuing would silently mix two different trainings in one history (or train on rows that were
validation rows before).

The learning rate is the exception: lowering it is the usual reason to resume (after a NaN, say),
so a new ``lr`` is applied to the restored optimizer (and its scheduler's base rates) and the
history's ``lr`` column shows the change.

>>> sig = loss_signature(torch.nn.CrossEntropyLoss(label_smoothing=0.1))
>>> sig["class"], sig["label_smoothing"]
('CrossEntropyLoss', 0.1)
"""

from __future__ import annotations

import hashlib
from collections.abc import Sized
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

_HASH_LIMIT = 1 << 30  # bytes: larger tensor datasets are compared by row count only

_WHY = {
    "seed": "the seed fixes the shuffling order (and, for losskit.data, the train/validation "
            "split), so the run would not continue the same training",
    "batch_size": "the optimizer steps would change size mid-run",
    "grad_accum_steps": "the optimizer steps would change size mid-run",
    "task": "the metrics would change mid-history",
    "loss": "the history would mix two losses' values",
    "data": "the training or validation rows differ, so validation rows could end up in training",
    "model": "the checkpoint's weights do not fit this model",
}


class ResumeMismatchError(ValueError):
    """``resume=True`` with a setting that differs from the checkpoint's run.

    Attributes: ``setting`` (fit's argument, or ``"model"`` / ``"data"``), ``stored`` and ``new``
    (the two values), ``detail`` (for model and data: what differs), ``out`` (the run directory).
    """

    def __init__(self, setting: str, stored: Any, new: Any, out: str, detail: str = "") -> None:
        self.setting, self.stored, self.new = setting, stored, new
        self.out, self.detail = out, detail
        self.why = _WHY[setting]
        if setting in ("model", "data") or detail:
            what = {"model": "the model", "data": "the data"}.get(setting, setting)
            text = (f"fit(resume=True): {what} differs from the run in {out}: {detail}; "
                    f"{self.why}. Fix: resume with the same {what}, or pass a new out= to "
                    f"start a new run.")
        else:
            before, now = (_loss_text(stored, new), _loss_text(new, stored)) if setting == "loss" \
                else (repr(stored), repr(new))
            text = (f"fit(resume=True): {setting}={now} but the run in {out} used "
                    f"{setting}={before}; {self.why}. Fix: resume with {setting}={before}, or "
                    f"pass a new out= to start a new run.")
        super().__init__(text)


def _loss_text(sig: dict[str, Any], other: dict[str, Any]) -> str:
    """``Class(setting=value, ...)`` with the settings that differ from ``other``'s."""
    if sig.get("class") != other.get("class"):
        return f"{sig.get('class')}()"
    diff = [f"{k}={v!r}" for k, v in sig.items() if k != "class" and other.get(k) != v]
    return f"{sig['class']}({', '.join(diff)})"


def loss_signature(loss_fn: Any) -> dict[str, Any]:
    """The loss's class and its plain settings (numbers, strings; buffers as lists)."""
    sig: dict[str, Any] = {"class": type(loss_fn).__qualname__}
    for k, v in sorted(vars(loss_fn).items()):
        if k.startswith("_") or k in ("training", "reduction"):
            continue  # fit does the reduction itself
        if v is None or isinstance(v, (bool, int, float, str)):
            sig[k] = v
    if isinstance(loss_fn, nn.Module):
        for k, b in loss_fn.named_buffers():
            if b is not None and b.numel() <= 1024:
                sig[k] = b.detach().cpu().flatten().tolist()
    return sig


def data_signature(data: Dataset | DataLoader | None) -> dict[str, Any] | None:
    """Row count and, for tensor datasets of at most 1 GiB (``_HASH_LIMIT``), a content hash of
    the rows (order included); a larger tensor dataset is compared by its row count only."""
    if data is None:
        return None
    dataset = data.dataset if isinstance(data, DataLoader) else data
    sig: dict[str, Any] = {"rows": len(cast(Sized, dataset)), "sha1": None}
    if isinstance(dataset, TensorDataset):
        tensors = dataset.tensors
        if sum(t.numel() * t.element_size() for t in tensors) <= _HASH_LIMIT:
            h = hashlib.sha1()
            for t in tensors:
                h.update(str((tuple(t.shape), t.dtype)).encode())
                h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes()
                         if t.numel() else b"")
            sig["sha1"] = h.hexdigest()
    return sig


def check_settings(stored: dict[str, Any], new: dict[str, Any], out: str) -> None:
    """Raise :class:`ResumeMismatchError` on the first setting that differs (missing: skipped)."""
    for key in ("seed", "batch_size", "grad_accum_steps", "task", "loss"):
        if key not in stored:
            continue
        if key == "batch_size" and stored.get("world_size", 1) != new["world_size"]:
            # batch_size is per rank and a checkpoint resumes on any number of ranks: what must
            # stay is the global batch.
            was, now = (stored["batch_size"] * stored.get("world_size", 1),
                        new["batch_size"] * new["world_size"])
            if was == now:
                continue
            raise ResumeMismatchError(
                "batch_size", stored["batch_size"], new["batch_size"], out,
                f"batch_size={new['batch_size']} on {new['world_size']} rank(s) is a global batch "
                f"of {now}; the run used {stored['batch_size']} on {stored.get('world_size', 1)} "
                f"(global {was})",
            )
        if stored[key] != new[key]:
            raise ResumeMismatchError(key, stored[key], new[key], out)
    for part in ("train", "val") if "data" in stored else ():
        before, now = stored["data"][part], new["data"][part]
        if before == now:
            continue
        if before is None or now is None:
            had, has = ("no", "one") if before is None else ("a", "none")
            detail = f"the run had {had} {part} set, now {has}"
        elif before["rows"] != now["rows"]:
            detail = f"{part} had {before['rows']} rows, now {now['rows']}"
        else:
            detail = f"{part} has the same {now['rows']} rows count but different values or order"
        raise ResumeMismatchError("data", before, now, out, detail)


def check_model(stored: dict[str, Tensor], model: nn.Module, out: str) -> None:
    """Raise :class:`ResumeMismatchError` naming the first parameter whose name or shape differs."""
    current = model.state_dict()
    for name in dict.fromkeys([*stored, *current]):
        if name not in current or name not in stored:
            where = "the checkpoint" if name in stored else "this model"
            detail = f"{name!r} exists only in {where}"
        elif tuple(stored[name].shape) != tuple(current[name].shape):
            detail = (f"{name!r} has shape {tuple(stored[name].shape)} in the checkpoint and "
                      f"{tuple(current[name].shape)} in this model")
        else:
            continue
        raise ResumeMismatchError("model", None, None, out, detail)


def apply_new_lr(optimizer: torch.optim.Optimizer, scheduler: Any, old: float, new: float) -> None:
    """Give the restored optimizer learning rate ``new`` in place of ``old``.

    Each group's current rate is scaled by ``new / old`` (so a scheduler's progress is kept) and
    the scheduler's base rates become ``new``.
    """
    for group in optimizer.param_groups:
        group["lr"] = group["lr"] * new / old if old else new
        if "initial_lr" in group:
            group["initial_lr"] = new
    if scheduler is not None and hasattr(scheduler, "base_lrs"):
        scheduler.base_lrs = [new for _ in scheduler.base_lrs]
