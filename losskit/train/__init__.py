"""Training: :func:`fit`, its :class:`History`, early stopping, checkpoints and ready-made recipes.

>>> from losskit.train import fit, History, EarlyStopping
"""

from losskit.train.callbacks import EarlyStopping
from losskit.train.history import History
from losskit.train.loop import NonFiniteLossError, fit
from losskit.train.recipes import (
    LOSSES,
    LOSSES_BY_TASK,
    default_loss,
    make_loss,
    make_metrics,
    make_model,
)
from losskit.train.resume import ResumeMismatchError

__all__ = [
    "LOSSES",
    "LOSSES_BY_TASK",
    "EarlyStopping",
    "History",
    "NonFiniteLossError",
    "ResumeMismatchError",
    "default_loss",
    "fit",
    "make_loss",
    "make_metrics",
    "make_model",
]
