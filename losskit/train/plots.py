"""Loss-curve PNGs with matplotlib's Agg backend (no display needed)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from losskit.train.history import History


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)  # a headless backend; keeps a backend the user chose
    import matplotlib.pyplot as plt

    return plt


def _epoch_axis(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers


def plot_history(history: History, path: str | os.PathLike) -> None:
    """Train and validation loss per epoch, and the main metric in a second panel when known."""
    plt = _pyplot()
    metric = history.main_metric if history.main_metric in history.keys() else None  # noqa: SIM118
    panels = 2 if metric else 1
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 4), squeeze=False)
    epochs = history.column("epoch")
    ax = axes[0][0]
    for key, style in (("train_loss", "-o"), ("val_loss", "-s")):
        values = history.column(key)
        if any(v is not None for v in values):
            ax.plot(epochs, [float("nan") if v is None else v for v in values], style, ms=3,
                    label=key.replace("_", " "))
    ax.set(xlabel="epoch", ylabel="loss", title="loss")
    _epoch_axis(ax)
    ax.grid(alpha=0.3)
    ax.legend()
    if metric:
        ax = axes[0][1]
        ax.plot(epochs, history.column(metric), "-s", ms=3, color="C2")
        ax.set(xlabel="epoch", ylabel=metric, title=metric.replace("_", " "))
        _epoch_axis(ax)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_compare(
    histories: Mapping[str, History], path: str | os.PathLike, key: str = "val_loss"
) -> None:
    """Overlay ``key`` per epoch for several runs (e.g. one per loss) in one PNG.

    Losses on different scales (MSE vs L1) are not comparable as values; compare a shared metric
    such as ``val_mae`` for that.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, history in histories.items():
        ax.plot(history.column("epoch"), history.column(key), "-o", ms=3, label=label)
    ax.set(xlabel="epoch", ylabel=key, title=key.replace("_", " "))
    _epoch_axis(ax)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
