"""Task metrics: which torchmetrics suit which task, fed with a model's raw output.

================== ========================================================================
task               metrics (names as they appear in the history, prefixed with ``val_``)
================== ========================================================================
multiclass         accuracy (micro), precision, recall, f1 (macro), auroc (macro), ece
binary             accuracy, precision, recall, f1, auroc, ece (threshold 0.5)
multilabel         accuracy, precision, recall, f1, auroc (macro over labels), ece (all labels)
regression         mae, rmse (in the target's original unit when ``target_std`` is given)
language-modelling token_accuracy (ignoring target -100), perplexity = exp(mean token NLL)
================== ========================================================================

ECE is the expected calibration error with 15 equal-width confidence bins (L1 norm).
The model's output is turned into probabilities according to what the loss expects it to be
(:func:`output_kind`): logits for most losses, probabilities for ``BCELoss``, log-probabilities for
``NLLLoss``. The class dimension is dim 1 (``(N, C)`` or ``(N, C, T)``), as for the losses.

>>> m = TaskMetrics("multiclass", num_outputs=3)
>>> logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 2.0], [0.0, 2.0, 0.0]])
>>> m.update(logits, torch.tensor([0, 1, 2, 2]))
>>> m.compute()["accuracy"]
0.75
"""

from __future__ import annotations

from typing import Any

import torch
import torchmetrics
from torch import Tensor
from torchmetrics import classification as tmc
from torchmetrics import regression as tmr
from torchmetrics.text import Perplexity

from losskit import registry

TASKS = ("multiclass", "binary", "multilabel", "regression", "language-modelling")
MAIN_METRIC = {
    "multiclass": "accuracy",
    "binary": "accuracy",
    "multilabel": "f1",
    "regression": "mae",
    "language-modelling": "token_accuracy",
}
GREATER_IS_BETTER = {
    "accuracy": True, "precision": True, "recall": True, "f1": True, "auroc": True,
    "ece": False, "mae": False, "rmse": False, "token_accuracy": True, "perplexity": False,
}
IGNORE_INDEX = -100
ECE_BINS = 15


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"task={task!r} is not a known task. Fix: use one of {', '.join(TASKS)}.")


def output_kind(loss_fn: object) -> str:
    """What the model's output is for ``loss_fn``: ``"logits"``, ``"probabilities"`` or
    ``"log-probabilities"``, from the loss's registry record (its ``input`` kind).

    A loss that applies its own activation (``recipes``' sigmoid-BCE and log-softmax-NLL) declares
    it with an ``output_kind`` attribute, which wins. Unknown losses and losses whose input is
    neither probabilities nor log-probabilities count as taking logits.

    >>> import losskit as lk
    >>> output_kind(lk.CrossEntropyLoss()), output_kind(lk.BCELoss()), output_kind(lk.NLLLoss())
    ('logits', 'probabilities', 'log-probabilities')
    """
    declared = getattr(loss_fn, "output_kind", None)
    if isinstance(declared, str):
        return declared
    record = registry.lookup(loss_fn)
    if record is not None and record.input in ("probabilities", "log-probabilities"):
        return record.input
    return "logits"


def infer_task(loss_fn: object, target: Tensor) -> str | None:
    """The task implied by a loss and a target batch, or None when it cannot be told.

    The loss's registry record says what its target is: real values give ``regression``, binary
    labels ``binary`` (``(N,)`` or ``(N, 1)``) or ``multilabel``; class-index targets give
    ``multiclass`` (``(N,)``) or ``language-modelling`` (``(N, T)``). A loss losskit does not know
    gets a task only from integer class-index targets, so a custom loss never gets metrics that do
    not fit its targets. A loss that takes hidden states (linear+cross-entropy: the logits exist
    only inside the loss) or embeddings (SupCon takes class indices, but its output holds no
    class scores) gets no task: classification metrics on them would be meaningless.

    >>> import losskit as lk
    >>> infer_task(lk.CrossEntropyLoss(), torch.tensor([0, 2]))
    'multiclass'
    >>> infer_task(lk.MSELoss(), torch.zeros(2, 1)), infer_task(lk.BCELoss(), torch.zeros(2, 1))
    ('regression', 'binary')
    >>> print(infer_task(lambda x, y: (x - y).abs().mean(), torch.zeros(2, 1)))
    None
    """
    record = registry.lookup(loss_fn)
    if record is not None and record.input in ("hidden", "embeddings"):
        return None  # the model outputs hidden states or embeddings, not class scores
    kinds = record.targets if record is not None else ("class-indices",)
    if kinds[0] in ("real", "counts"):
        return "regression"
    if not target.is_floating_point():
        if "class-indices" not in kinds:
            return None
        return "language-modelling" if target.dim() >= 2 else "multiclass"
    if "binary" in kinds:
        return "binary" if target.dim() <= 1 or target.shape[-1] == 1 else "multilabel"
    return None  # e.g. probability targets for cross-entropy: no standard metric set


class TaskMetrics:
    """The standard metric set of a task, updated batch by batch and computed as floats.

    Args:
        task: one of :data:`TASKS`.
        num_outputs: classes (multiclass), labels (multilabel), vocabulary (language-modelling);
            ignored for binary and regression.
        output: what the model emits, see :func:`output_kind`.
        target_std: regression targets were standardised with this std; MAE and RMSE are
            multiplied by it to report them in the original unit.

    Under ``torch.distributed`` ``compute()`` gathers the states of every rank (torchmetrics'
    ``sync_on_compute``), so every rank must call it.
    """

    def __init__(
        self, task: str, num_outputs: int = 1, *, output: str = "logits", target_std: float = 1.0
    ) -> None:
        _check_task(task)
        if output not in ("logits", "probabilities", "log-probabilities"):
            raise ValueError(
                f"output={output!r} must be 'logits', 'probabilities' or 'log-probabilities'."
            )
        self.task, self.num_outputs, self.output = task, num_outputs, output
        self.target_std = target_std
        made = self._make(task, num_outputs)
        self.names = list(made)  # report in this order (MetricCollection sorts its keys)
        metrics: dict[str, torchmetrics.Metric | torchmetrics.MetricCollection] = dict(made)
        self.metrics = torchmetrics.MetricCollection(metrics, compute_groups=False)

    @staticmethod
    def _make(task: str, n: int) -> dict[str, torchmetrics.Metric]:
        if task == "multiclass":
            kw: dict[str, Any] = {"num_classes": n, "ignore_index": IGNORE_INDEX}
            return {
                "accuracy": tmc.MulticlassAccuracy(average="micro", **kw),
                "precision": tmc.MulticlassPrecision(average="macro", **kw),
                "recall": tmc.MulticlassRecall(average="macro", **kw),
                "f1": tmc.MulticlassF1Score(average="macro", **kw),
                "auroc": tmc.MulticlassAUROC(average="macro", **kw),
                "ece": tmc.MulticlassCalibrationError(n_bins=ECE_BINS, **kw),
            }
        if task == "binary":
            return {
                "accuracy": tmc.BinaryAccuracy(),
                "precision": tmc.BinaryPrecision(),
                "recall": tmc.BinaryRecall(),
                "f1": tmc.BinaryF1Score(),
                "auroc": tmc.BinaryAUROC(),
                "ece": tmc.BinaryCalibrationError(n_bins=ECE_BINS),
            }
        if task == "multilabel":
            return {
                "accuracy": tmc.MultilabelAccuracy(num_labels=n, average="micro"),
                "precision": tmc.MultilabelPrecision(num_labels=n, average="macro"),
                "recall": tmc.MultilabelRecall(num_labels=n, average="macro"),
                "f1": tmc.MultilabelF1Score(num_labels=n, average="macro"),
                "auroc": tmc.MultilabelAUROC(num_labels=n, average="macro"),
                "ece": tmc.BinaryCalibrationError(n_bins=ECE_BINS),  # fed every label flattened
            }
        if task == "regression":
            return {"mae": tmr.MeanAbsoluteError(), "rmse": tmr.MeanSquaredError(squared=False)}
        return {
            "token_accuracy": tmc.MulticlassAccuracy(
                num_classes=n, average="micro", ignore_index=IGNORE_INDEX
            ),
            "perplexity": Perplexity(ignore_index=IGNORE_INDEX),
        }

    def to(self, device: torch.device | str) -> TaskMetrics:
        self.metrics.to(device)
        return self

    def reset(self) -> None:
        self.metrics.reset()

    def _probabilities(self, output: Tensor, softmax: bool) -> Tensor:
        if self.output == "probabilities":
            return output
        if self.output == "log-probabilities":
            return output.exp()
        return output.softmax(dim=1) if softmax else output.sigmoid()

    @torch.no_grad()
    def update(self, output: Tensor, target: Tensor) -> None:
        """Add a batch: ``output`` is the model's raw output, ``target`` what the loss gets."""
        output = output.detach().float()
        if self.task == "regression":
            self.metrics.update(output.reshape(-1), target.reshape(-1).float())
        elif self.task == "binary":
            p = self._probabilities(output, softmax=False).reshape(-1)  # (N,)
            self.metrics.update(p, target.reshape(-1).long())
        elif self.task == "multilabel":
            p = self._probabilities(output, softmax=False)  # (N, L)
            t = target.long()
            for name, metric in self.metrics.items():
                if name == "ece":
                    metric.update(p.reshape(-1), t.reshape(-1))
                else:
                    metric.update(p, t)
        elif self.task == "multiclass":
            self.metrics.update(self._probabilities(output, softmax=True), target)
        else:  # language-modelling: output (B, V, T) or (B*T, V); target (B, T) or (B*T,)
            p = self._probabilities(output, softmax=True)
            self.metrics["token_accuracy"].update(p, target)
            logp = p.clamp_min(1e-30).log().movedim(1, -1)  # class dim last: (B, T, V)
            if logp.dim() == 2:
                logp, target = logp.unsqueeze(0), target.unsqueeze(0)  # (1, B*T, V)
            self.metrics["perplexity"].update(logp, target)

    def compute(self) -> dict[str, float]:
        """The metrics over every batch since the last reset, as Python floats."""
        computed = self.metrics.compute()
        values = {name: float(computed[name]) for name in self.names}
        if self.task == "regression":
            values = {name: v * self.target_std for name, v in values.items()}
        return values
