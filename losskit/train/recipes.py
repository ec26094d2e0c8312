"""Ready-made models and losses for the built-in tasks (what ``losskit train`` uses).

Every model returns raw scores (logits) and every loss here takes them: losses that need
probabilities or log-probabilities apply the activation themselves, so one model fits every loss
of its task:

* ``"bce"`` is :class:`SigmoidBCELoss`: ``BCELoss(sigmoid(x), y)``. Same value as
  ``"bce-with-logits"`` up to BCE's clamp of each log term at -100 (a logit beyond about +-100
  saturates: the loss stops growing and the gradient vanishes), which is why BCE-with-logits is
  the default.
* ``"nll"`` is :class:`LogSoftmaxNLLLoss`: ``NLLLoss(log_softmax(x, dim=1), y)``, which equals
  cross-entropy.

>>> from losskit import data
>>> d = data.load("iris")
>>> model, loss = make_model(d, hidden=8), make_loss(default_loss(d.task), d)
>>> x, y = d.train[:5]
>>> tuple(model(x).shape), loss(model(x), y).dim()
((5, 3), 0)
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import losskit as lk
from losskit import registry
from losskit.data import TaskData, TwoViewDigits
from losskit.train import contrastive

_DEFAULT = {
    "multiclass": "cross-entropy",
    "binary": "bce-with-logits",
    "multilabel": "bce-with-logits",
    "regression": "mse",
    "language-modelling": "cross-entropy",
    "contrastive": "info_nce",
}
# What each task's targets are, in the registry's words: a loss fits a task when its record
# takes that target kind and names a CLI name.
_TARGET_KIND = {
    "multiclass": "class-indices",
    "binary": "binary",
    "multilabel": "binary",
    "regression": "real",
    "language-modelling": "class-indices",
}


def _fitting(task: str) -> tuple[str, ...]:
    if task == "contrastive":  # the records say which losses learn embeddings from views
        names = [r.cli or r.name for r in registry.records() if contrastive.fits(r)]
    else:
        names = [r.cli for r in registry.records() if r.cli and _TARGET_KIND[task] in r.targets]
    return tuple(sorted(names, key=lambda n: n != _DEFAULT[task]))  # the default first


LOSSES_BY_TASK: dict[str, tuple[str, ...]] = {task: _fitting(task) for task in _DEFAULT}
LOSSES: tuple[str, ...] = tuple(dict.fromkeys(n for ns in LOSSES_BY_TASK.values() for n in ns))


class SigmoidBCELoss(lk.BCELoss):
    """``BCELoss`` on ``sigmoid(input)``: binary cross-entropy for a model that outputs logits.

    .. math:: l = -[y \\log \\sigma(x) + (1 - y) \\log(1 - \\sigma(x))]  (each log clamped at -100)

    >>> x, y = torch.tensor([0.5, -2.0]), torch.tensor([1.0, 0.0])
    >>> # (log(1 + e^-0.5) + log(1 + e^-2)) / 2 = (0.4741 + 0.1269) / 2
    >>> SigmoidBCELoss()(x, y)
    tensor(0.3005)
    """

    output_kind = "logits"  # what losskit.metrics should make of the model's output

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return super().forward(torch.sigmoid(input), target)


class LogSoftmaxNLLLoss(lk.NLLLoss):
    """``NLLLoss`` on ``log_softmax(input, dim=1)``: cross-entropy written the two-step way.

    >>> LogSoftmaxNLLLoss()(torch.zeros(2, 4), torch.tensor([1, 3]))
    tensor(1.3863)
    """

    output_kind = "logits"

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        class_dim = 1 if input.dim() >= 2 else 0
        return super().forward(F.log_softmax(input, dim=class_dim), target)


class MLP(nn.Sequential):
    """``Linear -> ReLU -> Linear -> ReLU -> Linear``: ``(N, F)`` to ``(N, outputs)``."""

    def __init__(self, features: int, outputs: int, hidden: int) -> None:
        super().__init__(
            nn.Linear(features, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, outputs),
        )


class TokenModel(nn.Module):
    """Next-token scores from the current token: embedding, an MLP, and a vocabulary head.

    Input ``(B, T)`` int64 tokens; output ``(B, V, T)`` logits, the class dimension at dim 1 as
    cross-entropy wants it for a ``(B, T)`` target.
    """

    def __init__(self, vocab: int, hidden: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, hidden)
        self.mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU())
        self.head = nn.Linear(hidden, vocab)

    def forward(self, tokens: Tensor) -> Tensor:
        h = self.mlp(self.embed(tokens))  # (B, T, H)
        return self.head(h).transpose(1, 2)  # (B, T, V) -> (B, V, T)


def _check_task(task: str) -> None:
    if task not in LOSSES_BY_TASK:
        raise ValueError(
            f"task={task!r} is not a known task. Fix: use one of {', '.join(LOSSES_BY_TASK)}."
        )


def default_loss(task: str) -> str:
    """The loss to start with for a task.

    >>> default_loss("regression"), default_loss("binary")
    ('mse', 'bce-with-logits')
    """
    _check_task(task)
    return _DEFAULT[task]


def make_model(data: TaskData, *, hidden: int = 128, seed: int = 0) -> nn.Module:
    """A small model for ``data``'s task, initialised from ``seed`` (the global RNG is untouched).

    An :class:`MLP` for tables (``(N, F) -> (N, num_outputs)``); a :class:`TokenModel` for
    language modelling (``(B, T) -> (B, V, T)``); an
    :class:`~losskit.train.contrastive.EmbeddingMLP` for the contrastive task
    (``(B, 2, F) -> (B, 2, num_outputs)``, unit rows).
    """
    _check_task(data.task)
    if hidden < 1:
        raise ValueError(f"hidden={hidden!r} must be a positive layer width. Fix: e.g. hidden=128.")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if data.task == "language-modelling":
            return TokenModel(data.num_features, hidden)
        if data.task == "contrastive":
            return contrastive.EmbeddingMLP(data.num_features, data.num_outputs, hidden)
        return MLP(data.num_features, data.num_outputs, hidden)


def fit_task(data: TaskData) -> str | None:
    """The ``task=`` to give ``fit`` for ``data``: its task, or None for the contrastive task,
    whose metric (:func:`make_metrics`) is passed explicitly rather than chosen by task.

    >>> from losskit import data
    >>> fit_task(data.load("iris")), fit_task(data.load("digits-contrastive"))
    ('multiclass', None)
    """
    return None if data.task == "contrastive" else data.task


def make_loss(name: str, data: TaskData) -> nn.Module:
    """The losskit loss module called ``name``, set up for ``data``'s task.

    :data:`LOSSES_BY_TASK` lists the names that fit each task.

    Raises ValueError for an unknown name or a loss that does not fit the task, naming the ones
    that do.
    """
    _check_task(data.task)
    fitting = LOSSES_BY_TASK[data.task]
    if name not in fitting:
        known = "" if name in LOSSES else f" is not a losskit recipe loss ({', '.join(LOSSES)}) and"
        raise ValueError(
            f"loss={name!r}{known} does not fit the {data.task} task of dataset {data.name!r}. "
            f"Fix: use one of {', '.join(fitting)}."
        )
    record = registry.get(name)
    if data.task == "contrastive":
        return contrastive.make_loss(record)
    module: type[nn.Module] = record.module
    # A recipe model outputs logits: a loss that wants probabilities or log-probabilities gets
    # the activation applied inside the loss (see the module docstring).
    wrappers: dict[str, type[nn.Module]] = {
        "probabilities": SigmoidBCELoss, "log-probabilities": LogSoftmaxNLLLoss}
    wrapper = wrappers.get(record.input)
    if wrapper is not None:
        if not issubclass(wrapper, module):  # a new loss on probabilities needs its own wrapper
            raise NotImplementedError(f"no logits wrapper for {module.__name__}")
        module = wrapper
    takes = inspect.signature(module).parameters
    kwargs = {"ignore_index": data.ignore_index} if "ignore_index" in takes else {}
    return module(**kwargs)


def doctor_gap(name: str, data: TaskData) -> str | None:
    """Why the doctor cannot judge loss ``name`` on ``data``'s task, or None when it can.

    >>> from losskit import data
    >>> d = data.load("digits-contrastive")
    >>> doctor_gap("info_nce", d) is None, doctor_gap("supcon_loss", d) is None
    (True, False)
    """
    if data.task != "contrastive":
        return None
    return contrastive.doctor_gap(registry.get(name))


def make_metrics(data: TaskData, model: nn.Module | None = None) -> Any:
    """``fit``'s ``metrics=`` for ``data``: regression errors in the target's original unit,
    the k-NN accuracy of the contrastive task's embeddings.

    The built-in and CSV regression targets are standardised, so the MAE and RMSE fit would
    compute are in standard deviations; this returns a
    :class:`~losskit.metrics.TaskMetrics` that multiplies them by ``data.target_std``. The
    contrastive task gets two :class:`~losskit.train.knn.KNNAccuracy` (so it needs ``model``,
    which embeds the clean training images they vote with): ``knn_accuracy`` classifies the
    augmented view of each validation image, ``knn_accuracy_clean`` the clean image. The first
    is the one that shows learning: an untrained encoder already places clean digits near
    their class (about 0.93 at seed 0), but not shifted, noisy ones (about 0.27). Other tasks
    get None (fit picks their metrics).

    >>> from losskit import data
    >>> d = data.load("diabetes")
    >>> make_metrics(d).target_std == d.target_std, make_metrics(data.load("iris"))
    (True, None)
    """
    if data.task == "contrastive":
        if model is None:
            raise ValueError("make_metrics on the contrastive task needs model=: the k-NN "
                             "accuracy embeds the training images with it. Fix: "
                             "make_metrics(data, model).")
        train = data.train
        if not isinstance(train, TwoViewDigits):
            raise TypeError(f"make_metrics: the contrastive task's train split must be a "
                            f"TwoViewDigits; got {type(train).__name__}. Fix: build the task with "
                            f"losskit.data.load('digits-contrastive').")
        reference = contrastive.embed_reference(model, train.images, train.labels)
        from losskit.train.knn import KNNAccuracy

        # Validation view 1 is augmented, view 0 clean (see data._digits_contrastive).
        return {"knn_accuracy": KNNAccuracy(reference, view=1),
                "knn_accuracy_clean": KNNAccuracy(reference, view=0)}
    if data.task != "regression":
        return None
    from losskit.metrics import TaskMetrics

    return TaskMetrics("regression", data.num_outputs, target_std=data.target_std)
