"""What fit prints: a rich progress bar with the running loss, and one table row per epoch."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

_WIDTH = 12  # characters per table column: fits "val_accuracy" and -1.2345e+06


class Reporter:
    """Progress output of one fit; every method but :meth:`note` is a no-op when ``enabled`` is
    False."""

    def __init__(
        self, enabled: bool, epochs: int, console: Console | None = None, *, notes: bool = False
    ) -> None:
        self.enabled, self.epochs, self.notes = enabled, epochs, notes
        self.columns: list[str] | None = None
        self.progress: Progress | None = None
        self.task: TaskID | None = None
        if enabled:
            self.progress = Progress(
                TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"),
                TimeElapsedColumn(),
                console=console or Console(),
                transient=True,
            )
            self.progress.start()

    def print(self, text: str) -> None:
        if self.progress is not None:
            self.progress.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def note(self, text: str) -> None:
        """One line about the run (resuming, restoring): printed even without the progress
        display when ``notes`` is on, since a silent fresh start on a misspelt path costs a run."""
        if self.progress is not None:
            self.print(text)
        elif self.notes:
            print(text, flush=True)

    def start_epoch(self, epoch: int, steps: int) -> None:
        if self.progress is None:
            return
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task(
            "train", total=steps, epoch=epoch, epochs=self.epochs, loss="-"
        )

    def advance(self, done: int, running_loss: float) -> None:
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, completed=done, loss=f"{running_loss:.4f}")

    def end_epoch(self, record: dict[str, Any]) -> None:
        """Print the epoch's table row (and the header before the first row)."""
        if self.progress is None:
            return
        if self.columns is None:
            self.columns = [k for k in record if k != "lr"]
            self.print(" ".join(f"{k:>{max(_WIDTH, len(k))}}" for k in self.columns))
        cells = (_cell(record.get(k), max(_WIDTH, len(k))) for k in self.columns)
        self.print(" ".join(cells))

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def _cell(value: Any, width: int) -> str:
    if value is None:
        return f"{'-':>{width}}"
    if isinstance(value, float):
        text = f"{value:.4f}" if 1e-3 <= abs(value) < 1e6 or value == 0 else f"{value:.4e}"
        return f"{text:>{width}}"
    return f"{value!s:>{width}}"
