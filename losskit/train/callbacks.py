"""Early stopping on a monitored value, with the best weights kept for restoring.

>>> stop = EarlyStopping(patience=2)
>>> [stop.update(v, epoch=e) for e, v in enumerate([1.0, 0.8, 0.9, 0.85], start=1)]
[False, False, False, True]
>>> stop.best_epoch, stop.best
(2, 0.8)
"""

from __future__ import annotations

import copy
import math
from typing import Any

from torch import Tensor, nn

# Which direction is better, by the monitored name's last ``_`` part (``val_token_accuracy``).
LOWER_IS_BETTER = ("loss", "error", "mae", "mse", "rmse", "ece", "perplexity")
HIGHER_IS_BETTER = ("accuracy", "acc", "f1", "precision", "recall", "auroc", "auc")


def infer_mode(monitor: str) -> str | None:
    """``"min"`` or ``"max"`` for a metric name, None when the name does not tell.

    >>> infer_mode("val_loss"), infer_mode("val_token_accuracy"), infer_mode("val_score")
    ('min', 'max', None)
    """
    last = monitor.lower().rsplit("_", 1)[-1]
    if last in LOWER_IS_BETTER:
        return "min"
    if last in HIGHER_IS_BETTER:
        return "max"
    return None


class EarlyStopping:
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs.

    Args:
        patience: epochs without improvement before stopping (>= 1).
        min_delta: the smallest change in the better direction that counts as an improvement.
        monitor: the history key to watch (``val_loss`` by default; fit falls back to
            ``train_loss`` when there is no validation set). fit raises when the key is not
            logged, naming the keys that are.
        mode: ``"min"`` (lower is better) or ``"max"``; None infers it from the name (loss,
            error, mae, rmse, ece, perplexity: min; accuracy, f1, precision, recall, auroc: max).
        restore_best: load the weights of the best epoch into the model when training ends.

    >>> model = torch.nn.Linear(2, 1)
    >>> stop = EarlyStopping(patience=1, min_delta=0.01)
    >>> with torch.no_grad():
    ...     _ = model.bias.fill_(1.0)
    >>> stop.update(0.50, epoch=1, model=model)  # best so far: weights kept
    False
    >>> with torch.no_grad():
    ...     _ = model.bias.fill_(2.0)
    >>> stop.update(0.495, epoch=2, model=model)  # better by less than min_delta: a bad epoch
    True
    >>> stop.restore(model), model.bias.item(), stop.best_epoch
    (True, 1.0, 1)
    """

    def __init__(
        self,
        patience: int = 5,
        *,
        min_delta: float = 0.0,
        monitor: str = "val_loss",
        mode: str | None = None,
        restore_best: bool = True,
    ) -> None:
        if not isinstance(patience, int) or isinstance(patience, bool) or patience < 1:
            raise ValueError(
                f"EarlyStopping patience={patience!r} must be a positive int (epochs without "
                f"improvement). Fix: e.g. patience=5."
            )
        if min_delta < 0:
            raise ValueError(f"EarlyStopping min_delta={min_delta!r} must be >= 0. Fix: e.g. 0.0.")
        mode = mode if mode is not None else infer_mode(monitor)
        if mode not in ("min", "max"):
            raise ValueError(
                f"EarlyStopping mode={mode!r} for monitor={monitor!r}: cannot tell whether lower "
                f"or higher is better. Fix: pass mode='min' (a loss or error) or mode='max' "
                f"(accuracy, F1, ...)."
            )
        self.patience, self.min_delta, self.monitor = patience, min_delta, monitor
        self.mode, self.restore_best = mode, restore_best
        self.best = math.inf if mode == "min" else -math.inf
        self.best_epoch = 0
        self.bad_epochs = 0
        self.stopped = False
        self.best_state: dict[str, Tensor] | None = None

    @classmethod
    def from_arg(cls, arg: EarlyStopping | int | None) -> EarlyStopping | None:
        """``fit``'s ``early_stopping`` argument: None, a patience, or an instance."""
        if arg is None or isinstance(arg, EarlyStopping):
            return arg
        if isinstance(arg, int) and not isinstance(arg, bool):
            return cls(patience=arg)
        raise ValueError(
            f"early_stopping={arg!r} must be None, a patience (int) or an EarlyStopping. "
            f"Fix: e.g. early_stopping=5."
        )

    def update(self, value: float, *, epoch: int, model: nn.Module | None = None) -> bool:
        """Record an epoch's value; keep the model's weights when it is the best so far.

        Returns True when training should stop.
        """
        if self.mode == "min":
            improved = value < self.best - self.min_delta
        else:
            improved = value > self.best + self.min_delta
        if math.isfinite(value) and improved:
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
            if model is not None and self.restore_best:
                self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            self.bad_epochs += 1
        self.stopped = self.bad_epochs >= self.patience
        return self.stopped

    def restore(self, model: nn.Module) -> bool:
        """Load the best weights into ``model``; False when there is nothing to restore."""
        if not self.restore_best or self.best_state is None:
            return False
        model.load_state_dict(self.best_state)
        return True

    def state_dict(self) -> dict[str, Any]:
        return {
            "best": self.best, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs,
            "stopped": self.stopped, "best_state": copy.copy(self.best_state),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch = state["best"], state["best_epoch"]
        self.bad_epochs, self.stopped = state["bad_epochs"], state["stopped"]
        self.best_state = state["best_state"]
