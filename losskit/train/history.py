"""Per-epoch training records: the best epoch, CSV/JSON export and the loss-curve plot.

>>> h = History([{"epoch": 1, "train_loss": 1.0, "val_loss": 0.9, "val_accuracy": 0.5},
...              {"epoch": 2, "train_loss": 0.5, "val_loss": 0.6, "val_accuracy": 0.8}])
>>> h.best["epoch"], h.final["val_accuracy"], h.column("train_loss")
(2, 0.8, [1.0, 0.5])
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterable, Iterator
from typing import Any

Record = dict[str, Any]  # epoch, train_loss, val_loss, val_<metric>..., lr, time


class History:
    """The list of per-epoch records a :func:`losskit.fit` run produced.

    Attributes:
        records: one dict per epoch: ``epoch``, ``train_loss``, ``val_loss`` (when validating),
            ``val_<metric>`` for each task metric, ``lr`` and ``time`` (seconds for the epoch).
        monitor: the key that picks :attr:`best` (lower is better): ``val_loss`` when present,
            else ``train_loss``; with early stopping, the stopper's monitor.
        main_metric: the metric key :meth:`plot` draws beside the loss, e.g. ``val_accuracy``.
        best_epoch: set by fit when early stopping decides the best epoch (its ``min_delta`` and
            direction), so :attr:`best`, ``best.pt`` and the restored model agree; None: the
            lowest :attr:`monitor` value.

    >>> h = History(main_metric="val_accuracy")
    >>> h.append({"epoch": 1, "train_loss": 0.9, "val_loss": 0.7, "val_accuracy": 0.6})
    >>> h.append({"epoch": 2, "train_loss": 0.6, "val_loss": 0.8, "val_accuracy": 0.7})
    >>> len(h), h.monitor, h.best["epoch"], h.final["epoch"]  # best: lowest val_loss
    (2, 'val_loss', 1, 2)
    >>> h.keys()
    ['epoch', 'train_loss', 'val_loss', 'val_accuracy']
    >>> History.from_state_dict(h.state_dict()).column("val_accuracy")
    [0.6, 0.7]
    """

    def __init__(
        self,
        records: Iterable[Record] = (),
        *,
        main_metric: str | None = None,
        best_epoch: int | None = None,
        monitor: str | None = None,
    ) -> None:
        self.records: list[Record] = [dict(r) for r in records]
        self.main_metric = main_metric
        self.best_epoch, self._monitor = best_epoch, monitor

    def append(self, record: Record) -> None:
        self.records.append(dict(record))

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records)

    def __getitem__(self, i: int) -> Record:
        return self.records[i]

    def __repr__(self) -> str:
        return f"History({len(self)} epochs, best={self.best})"

    @property
    def monitor(self) -> str:
        if self._monitor is not None:
            return self._monitor
        has_val = any(r.get("val_loss") is not None for r in self.records)
        return "val_loss" if has_val else "train_loss"

    @monitor.setter
    def monitor(self, key: str | None) -> None:
        self._monitor = key

    @property
    def best(self) -> Record | None:
        """The record with the lowest :attr:`monitor` value (the earliest on ties), or None;
        the record of :attr:`best_epoch` when that is set."""
        if self.best_epoch is not None:
            return next((r for r in self.records if r.get("epoch") == self.best_epoch), None)
        key = self.monitor
        finite = [r for r in self.records if _finite(r.get(key))]
        return min(finite, key=lambda r: r[key]) if finite else None

    @property
    def final(self) -> Record | None:
        return self.records[-1] if self.records else None

    def column(self, key: str) -> list[Any]:
        """One value per epoch (None where an epoch lacks ``key``)."""
        return [r.get(key) for r in self.records]

    def keys(self) -> list[str]:
        """Every key used by any record, in first-seen order."""
        return list(dict.fromkeys(k for r in self.records for k in r))

    def to_csv(self, path: str | os.PathLike) -> None:
        """Write one row per epoch with a header of :meth:`keys`."""
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.keys())
            writer.writeheader()
            writer.writerows(self.records)

    def summary(self) -> dict[str, Any]:
        """The final and best records, the monitored key and the epoch count (metrics.json)."""
        return {
            "final": self.final, "best": self.best, "monitor": self.monitor, "epochs": len(self)
        }

    def to_json(self, path: str | os.PathLike) -> None:
        """Write the :meth:`summary` plus every record as JSON (NaN written as null)."""
        payload = {**self.summary(), "main_metric": self.main_metric, "history": self.records}
        with open(path, "w") as f:
            json.dump(_json_safe(payload), f, indent=2)
            f.write("\n")

    def plot(self, path: str | os.PathLike) -> None:
        """Save a PNG of train/val loss per epoch and, beside it, :attr:`main_metric`."""
        from losskit.train.plots import plot_history

        plot_history(self, path)

    # Checkpoints store records as plain lists of dicts (loadable with weights_only=True).
    def state_dict(self) -> dict[str, Any]:
        return {"records": [dict(r) for r in self.records], "main_metric": self.main_metric,
                "best_epoch": self.best_epoch, "monitor": self._monitor}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> History:
        return cls(state["records"], main_metric=state.get("main_metric"),
                   best_epoch=state.get("best_epoch"), monitor=state.get("monitor"))


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj
