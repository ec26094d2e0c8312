r"""Margin classification losses: soft margin (logistic on ±1 labels), multi-label soft margin,
multi-label margin (hinge over label lists) and multi-class margin (hinge over class indices).

Each function runs its guardrails (:mod:`losskit.checks.margin`) and then calls torch's own
``torch.nn.functional`` twin, which is the contract. Deliberate departures from torch, each
documented on its function: target shapes that would broadcast raise; NaN/Inf inputs raise (value
checks); an empty batch gives 0 with zero gradient (and, for ``"mean"``, a LossWarning) where
torch's multi-label and multi-class margin kernels return uninitialised memory.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from losskit import _reduction, checks, registry
from losskit.checks import LossRuntimeError
from losskit.checks import margin as margin_checks
from losskit.losses import _explain as _ex
from losskit.losses._common import REDUCTION_ENUM, autocast_on, op_runs_directly

__all__ = [
    "MultiLabelMarginLoss",
    "MultiLabelSoftMarginLoss",
    "MultiMarginLoss",
    "SoftMarginLoss",
    "multi_margin_loss",
    "multilabel_margin_loss",
    "multilabel_soft_margin_loss",
    "soft_margin_loss",
]


def soft_margin_loss(
    input: Tensor,
    target: Tensor,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> Tensor:
    r"""Two-class logistic loss on labels :math:`y \in \{-1, 1\}`:
    :math:`l_i = \log(1 + e^{-y_i x_i})`; ``"mean"`` divides by the number of elements.

    Args:
        input: scores, any shape ``(*)``.
        target: labels -1 / 1, same shape as ``input`` (a shape that would broadcast raises;
            other labels raise in the value checks, {0, 1} with the fix ``2 * target - 1``).
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``.

    Shape: output ``(*)`` for ``"none"``, else a scalar.

    Example:
        >>> soft_margin_loss(torch.tensor([2.0, -1.0]), torch.tensor([1.0, 1.0]), reduction="none")
        tensor([0.1269, 1.3133])
    """
    loss = "soft_margin_loss"
    reduction = _reduction.resolve(reduction, size_average, reduce, warn=False)
    margin_checks.check_floating_scores(loss, input, error=LossRuntimeError)
    if not checks.on_one_device(input, target):
        checks.check_same_device(loss, input=input, target=target)
    margin_checks.check_sign_target_shape(loss, input, target)
    if checks.values_enabled(loss, input, target):
        checks.check_finite(loss, input=input, target=target)
        margin_checks.check_sign_target(loss, target)
    return F.soft_margin_loss(input, target, size_average, reduce, reduction)


def multilabel_soft_margin_loss(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> Tensor:
    r"""Multi-label one-versus-all logistic loss, averaged over the labels of each sample:

    .. math::
        l_n = -\frac{1}{C} \sum_{c} w_c \left[ y_{n,c} \log \sigma(x_{n,c})
              + (1 - y_{n,c}) \log \sigma(-x_{n,c}) \right]

    Args:
        input: logits ``(C,)`` or ``(N, C)`` (labels in the last dim), no sigmoid.
        target: 0./1. labels (or probabilities) of ``input``'s shape; other shapes raise
            (torch would broadcast them).
        weight: per-label weights broadcasting to ``input``, typically ``(C,)``.
        reduction: ``"mean"`` divides :math:`\sum_n l_n` by the number of samples.

    Shape: output ``(N,)`` (``()`` for ``(C,)`` input) for ``"none"``, else a scalar.

    Example:
        >>> x = torch.tensor([[2.0, -1.0], [0.0, 3.0]]); y = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
        >>> multilabel_soft_margin_loss(x, y, reduction="none")
        tensor([0.2201, 0.3709])
    """
    loss = "multilabel_soft_margin_loss"
    reduction = _reduction.resolve(reduction, size_average, reduce, warn=False)
    checks.check_floating_input(loss, input)
    if not checks.on_one_device(input, target, weight):
        checks.check_same_device(loss, input=input, target=target, weight=weight)
    margin_checks.check_multilabel_target_shape(loss, input, target)
    checks.check_broadcast_weight(loss, "weight", weight, input)
    if checks.values_enabled(loss, input, target):
        checks.check_finite(loss, input=input, target=target)
        checks.check_not_sigmoid_output(loss, input)
        checks.check_binary_target_range(loss, target)
    return F.multilabel_soft_margin_loss(input, target, weight, size_average, reduce, reduction)


def multilabel_margin_loss(
    input: Tensor,
    target: Tensor,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> Tensor:
    r"""Multi-label hinge loss: each of the sample's labels must beat each other class by 1.

    .. math::
        l_n = \frac{1}{C} \sum_{j \in Y_n} \sum_{i \notin Y_n} \max(0, 1 - (x_{n,j} - x_{n,i}))

    where :math:`Y_n` holds the entries of row :math:`n` of ``target`` before its first -1.

    Args:
        input: scores ``(C,)`` or ``(N, C)``.
        target: int64 of ``input``'s shape: each row lists the sample's class indices and is
            padded with -1 (``[3, 0, -1, 1]`` means classes 3 and 0). Multi-hot 0/1 rows raise
            in the value checks, with the conversion.
        reduction: ``"mean"`` divides :math:`\sum_n l_n` by the number of samples.

    Shape: output ``(N,)`` (``()`` for ``(C,)`` input) for ``"none"``, else a scalar. An empty
    batch gives 0 with zero gradient, and a LossWarning for ``"mean"`` (torch returns
    uninitialised memory).

    Example:
        >>> x = torch.tensor([[0.1, 0.2, 0.4, 0.8]]); y = torch.tensor([[3, 0, -1, 1]])
        >>> multilabel_margin_loss(x, y)
        tensor(0.8500)
    """
    loss = "multilabel_margin_loss"
    if not (size_average is None and reduce is None and type(reduction) is str
            and reduction in REDUCTION_ENUM):  # the common call: no parse
        reduction = _reduction.resolve(reduction, size_average, reduce, warn=False)
    # The common call, (N, C) float scores with int64 label lists of that shape on one device,
    # passes every metadata check below: decided in a few attribute reads.
    fast = (input.dim() == 2 and target.dtype == torch.int64 and target.shape == input.shape
            and input.shape[0] > 0 and input.is_floating_point()
            and ((input.is_cpu and target.is_cpu) or target.device == input.device))
    if not fast:
        checks.check_floating_input(loss, input)
        if not checks.on_one_device(input, target):
            checks.check_same_device(loss, input=input, target=target)
        margin_checks.check_label_lists(loss, input, target)
    values = checks.values_enabled(loss, input, target)
    if input.dim() > 0 and values:
        margin_checks.check_label_list_range(loss, target, input.shape[-1])
    if values:
        checks.check_finite(loss, input=input)
        margin_checks.check_not_multi_hot(loss, target)
    if not fast and _is_empty_batch(input):
        return _empty_batch(loss, input, reduction)
    try:
        if op_runs_directly(size_average, reduce, input, target):
            return torch._C._nn.multilabel_margin_loss(input, target, REDUCTION_ENUM[reduction])  # type: ignore[arg-type]  # the op takes the enum
        return F.multilabel_margin_loss(input, target, size_average, reduce, reduction)
    except RuntimeError:
        # torch checks the range itself on the CPU, so the detailed check runs only when
        # torch refused (after the startup calls): the same LossIndexRuntimeError and message.
        if input.dim() > 0 and checks.index_range_enabled(target):
            margin_checks.check_label_list_range(loss, target, input.shape[-1])
        raise


def multi_margin_loss(
    input: Tensor,
    target: Tensor,
    p: int = 1,
    margin: float = 1.0,
    weight: Tensor | None = None,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> Tensor:
    r"""Multi-class hinge loss: the target class must beat every other class by ``margin``.

    .. math::
        l_n = \frac{1}{C} \sum_{i \ne y_n} w_{y_n} \max(0, \mathrm{margin} - x_{n,y_n}
              + x_{n,i})^p

    Args:
        input: scores ``(C,)`` or ``(N, C)``.
        target: int64 class indices in [0, C): ``()`` for ``(C,)`` input, ``(N,)`` for
            ``(N, C)``.
        p: 1 (hinge) or 2 (squared hinge).
        margin: the required gap between the target score and the others.
        weight: ``(C,)`` class weights of ``input``'s dtype, applied by the target's class.
        reduction: ``"mean"`` divides :math:`\sum_n l_n` by the number of samples.

    Shape: output ``(N,)`` for ``"none"``, else a scalar. An empty batch gives 0 with zero
    gradient, and a LossWarning for ``"mean"`` (torch returns uninitialised memory).

    Example:
        >>> x = torch.tensor([[0.1, 0.2, 0.4, 0.8]]); y = torch.tensor([3])
        >>> multi_margin_loss(x, y)
        tensor(0.3250)
        >>> multi_margin_loss(x, y, p=2, margin=0.5)
        tensor(0.0025)
    """
    loss = "multi_margin_loss"
    if not (size_average is None and reduce is None and type(reduction) is str
            and reduction in REDUCTION_ENUM):  # the common call: no parse
        reduction = _reduction.resolve(reduction, size_average, reduce, warn=False)
    # The common call, (N, C) float scores, (N,) int64 indices on one device, no class weight
    # and p of 1 or 2, passes every metadata check below: decided in a few attribute reads.
    fast = (weight is None and input.dim() == 2 and target.dtype == torch.int64
            and target.dim() == 1 and target.shape[0] == input.shape[0] > 0
            and input.is_floating_point()
            and ((input.is_cpu and target.is_cpu) or target.device == input.device)
            and (p == 1 or p == 2))
    if not fast:
        margin_checks.check_p(loss, p)
        margin_checks.check_margin_weight(loss, weight, None)
        checks.check_floating_input(loss, input)
        if not checks.on_one_device(input, target, weight):
            checks.check_same_device(loss, input=input, target=target, weight=weight)
        margin_checks.check_class_index_target(loss, input, target)
        if input.dim() > 0:
            margin_checks.check_margin_weight(loss, weight, input, autocast=autocast_on(input))
    values = checks.values_enabled(loss, input, target)
    if input.dim() > 0 and values:
        margin_checks.check_class_index_range(loss, target, input.shape[-1])
    if values:
        checks.check_finite(loss, input=input)
    if not fast and _is_empty_batch(input):
        return _empty_batch(loss, input, reduction)
    try:
        if op_runs_directly(size_average, reduce, input, target, weight):
            return torch._C._nn.multi_margin_loss(input, target, p, margin, weight,
                                                  REDUCTION_ENUM[reduction])  # type: ignore[arg-type]  # the op takes the enum
        return F.multi_margin_loss(input, target, p, margin, weight, size_average, reduce,
                                   reduction)
    except RuntimeError:  # torch checks the range on the CPU: the detailed message after it
        if input.dim() > 0 and checks.index_range_enabled(target):
            margin_checks.check_class_index_range(loss, target, input.shape[-1])
        raise


def _is_empty_batch(input: Tensor) -> bool:
    return input.dim() == 2 and input.shape[0] == 0 and input.shape[1] > 0


def _empty_batch(loss: str, input: Tensor, reduction: str) -> Tensor:
    """(0, C) scores: "none" -> (0,); "sum" and "mean" -> 0 with zero gradient ("mean" warns,
    as for cross-entropy's mean over nothing). Torch returns uninitialised memory here."""
    per_sample = input.sum(-1)  # (0,)
    if reduction == "none":
        return per_sample
    if reduction == "mean":
        margin_checks.warn_empty_batch(loss, input)
    return per_sample.sum()


class SoftMarginLoss(nn.SoftMarginLoss):
    """Logistic loss on -1 / 1 labels; see :func:`losskit.functional.soft_margin_loss`.

    >>> SoftMarginLoss()(torch.tensor([2.0, -1.0]), torch.tensor([1.0, -1.0]))
    tensor(0.2201)
    """

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return soft_margin_loss(input, target, reduction=self.reduction)


class MultiLabelSoftMarginLoss(nn.MultiLabelSoftMarginLoss):
    """Multi-label logistic loss with a ``weight`` buffer; see
    :func:`losskit.functional.multilabel_soft_margin_loss`.

    >>> MultiLabelSoftMarginLoss()(torch.zeros(2, 3), torch.ones(2, 3))
    tensor(0.6931)
    """

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return multilabel_soft_margin_loss(
            input, target, weight=self.weight, reduction=self.reduction
        )


class MultiLabelMarginLoss(nn.MultiLabelMarginLoss):
    """Multi-label hinge loss over label lists padded with -1; see
    :func:`losskit.functional.multilabel_margin_loss`.

    >>> MultiLabelMarginLoss()(torch.tensor([[0.1, 0.2, 0.4, 0.8]]), torch.tensor([[3, 0, -1, 1]]))
    tensor(0.8500)
    """

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return multilabel_margin_loss(input, target, reduction=self.reduction)


class MultiMarginLoss(nn.MultiMarginLoss):
    """Multi-class hinge loss with ``p``, ``margin`` and a ``weight`` buffer; see
    :func:`losskit.functional.multi_margin_loss`. ``p`` and a non-1-D ``weight`` are checked
    at construction, as torch does.

    >>> MultiMarginLoss(margin=0.5)(torch.tensor([[0.1, 0.2, 0.4, 0.8]]), torch.tensor([3]))
    tensor(0.0250)
    """

    def __init__(
        self,
        p: int = 1,
        margin: float = 1.0,
        weight: Tensor | None = None,
        size_average=None,
        reduce=None,
        reduction: str = "mean",
    ) -> None:
        margin_checks.check_p("MultiMarginLoss", p)
        margin_checks.check_margin_weight("MultiMarginLoss", weight, None)
        super().__init__(p, margin, weight, size_average, reduce, reduction)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return multi_margin_loss(
            input, target, p=self.p, margin=self.margin, weight=self.weight,
            reduction=self.reduction,
        )


# ----------------------------------------------------------------------------------------------
# Records


def _count_samples(loss_fn: nn.Module, input: Tensor, *tensors: Tensor) -> Tensor:
    """``"mean"`` divides by the number of samples: every dim of ``input`` but the last
    (the labels / classes); 1 for an unbatched ``(C,)`` input."""
    samples = input.numel() // max(input.shape[-1], 1) if input.dim() else 1
    return registry.count_full(input, samples)


registry.register(registry.LossRecord(
    function=soft_margin_loss, module=SoftMarginLoss, family="margin", input="scores",
    targets=("sign",), summary="two-class logistic loss on scores and -1 / 1 labels",
    mean_count=registry.count_elements, torch_function=F.soft_margin_loss,
    torch_module=nn.SoftMarginLoss, estimates="log-odds",
))
registry.register(registry.LossRecord(
    function=multilabel_soft_margin_loss, module=MultiLabelSoftMarginLoss, family="margin",
    input="logits", targets=("binary",),
    summary="multi-label logistic loss on logits, averaged over the labels of each sample",
    mean_count=_count_samples, torch_function=F.multilabel_soft_margin_loss,
    torch_module=nn.MultiLabelSoftMarginLoss, estimates="probabilities",
))
registry.register(registry.LossRecord(
    function=multilabel_margin_loss, module=MultiLabelMarginLoss, family="margin",
    input="scores", targets=("label-lists",),
    summary="multi-label hinge: each label's score beats every other class by 1",
    mean_count=_count_samples, torch_function=F.multilabel_margin_loss,
    torch_module=nn.MultiLabelMarginLoss,
))
registry.register(registry.LossRecord(
    function=multi_margin_loss, module=MultiMarginLoss, family="margin", input="scores",
    targets=("class-indices",),
    summary="multi-class hinge (SVM): the target's score beats every other class by a margin",
    mean_count=_count_samples, torch_function=F.multi_margin_loss,
    torch_module=nn.MultiMarginLoss,
))



# ----------------------------------------------------------------------------------------------
# What `losskit explain` prints and draws (registry.Explain); the gradients are checked against
# autograd in tests/test_explain.py.

_SCORES = [[0.1, 0.2, 0.4, 0.8], [0.5, 0.1, 0.3, 0.2]]


def _soft_margin_steps(x, y, reduction="mean"):
    rows = [("margin y x", y * x), ("l = log(1 + exp(-y x))", F.softplus(-y * x))]
    return rows + _ex.reduce_step(rows[-1][1], reduction)


def _ml_soft_steps(x, y, reduction="mean"):
    per = -(y * F.logsigmoid(x) + (1 - y) * F.logsigmoid(-x))
    rows = [("-(y log sigmoid(x) + (1 - y) log sigmoid(-x)) per label", per),
            (f"l per sample = mean over the {x.shape[1]} labels", per.mean(dim=1))]
    return rows + _ex.reduce_step(rows[-1][1], reduction, "samples")


def _label_sets(y):
    """Per sample: the labels before the first -1 (torch's rule)."""
    sets = []
    for row in y.tolist():
        labels = []
        for c in row:
            if c < 0:
                break
            labels.append(c)
        sets.append(labels)
    return sets


def _multilabel_margin_terms(x, y):
    """Per sample: [(j, i, 1 - (x_j - x_i))] for each label j and non-label i."""
    terms = []
    for n, labels in enumerate(_label_sets(y)):
        others = [i for i in range(x.shape[1]) if i not in labels]
        terms.append([(j, i, 1 - (x[n, j] - x[n, i])) for j in labels for i in others])
    return terms


def _multilabel_margin_steps(x, y, reduction="mean"):
    rows, losses = [], []
    for n, pairs in enumerate(_multilabel_margin_terms(x, y)):
        hinges = torch.stack([h.clamp(min=0) for _, _, h in pairs])
        rows.append((f"sample {n}: max(0, 1 - (x_j - x_i)) for (j, i) in "
                     f"{[(j, i) for j, i, _ in pairs]}", hinges))
        losses.append(hinges.sum() / x.shape[1])
    rows.append((f"l per sample = sum / C (C = {x.shape[1]})", torch.stack(losses)))
    return rows + _ex.reduce_step(rows[-1][1], reduction, "samples")


def _multilabel_margin_gradient(x, y, **kw):
    grad = torch.zeros_like(x)
    for n, pairs in enumerate(_multilabel_margin_terms(x, y)):
        for j, i, h in pairs:
            if h > 0:
                grad[n, j] -= 1 / x.shape[1]
                grad[n, i] += 1 / x.shape[1]
    return grad


def _multi_margin_hinges(x, y, p=1, margin=1.0):
    h = margin - x.gather(1, y[:, None]) + x  # (N, C)
    others = torch.ones_like(x, dtype=torch.bool).scatter(1, y[:, None], False)
    return h, others


def _multi_margin_steps(x, y, reduction="mean", p=1, margin=1.0):
    h, others = _multi_margin_hinges(x, y, p, margin)
    terms = torch.where(others, h.clamp(min=0) ** p, 0.0)
    rows = [("h_i = margin - x_y + x_i", h), (f"max(0, h_i)^{p}, i != y", terms),
            (f"l per sample = sum / C (C = {x.shape[1]})", terms.sum(dim=1) / x.shape[1])]
    return rows + _ex.reduce_step(rows[-1][1], reduction, "samples")


def _multi_margin_gradient(x, y, p=1, margin=1.0, **kw):
    h, others = _multi_margin_hinges(x, y, p, margin)
    g = torch.where(others & (h > 0), p * h.clamp(min=0) ** (p - 1), 0.0) / x.shape[1]
    return g - torch.zeros_like(x).scatter(1, y[:, None], g.sum(dim=1, keepdim=True))


def _one_row_curve(function, target, width):
    def loss(t, **option):
        rest = torch.zeros(t.shape[0], width - 1, dtype=t.dtype)
        rows = torch.cat([t[:, None], rest], dim=1)
        return function(rows, target.expand(t.shape[0], *target.shape[1:]), reduction="none",
                        **option)
    return loss


registry.describe(soft_margin_loss, registry.Explain(
    formula="l = log(1 + exp(-y x)),  y in {-1, 1}", latex=r"\ell = \log(1 + e^{-y x})",
    derivative="dl/dx = -y sigmoid(-y x)",
    derivative_latex=r"\partial\ell/\partial x = -y\,\sigma(-y x)",
    gradient=lambda x, y, **kw: -y * torch.sigmoid(-y * x),
    example=_ex.example([2.0, -1.0, 0.5], [1.0, 1.0, -1.0]), steps=_soft_margin_steps,
    curve=registry.Curve("margin y x", lambda t: soft_margin_loss(t, torch.ones_like(t),
                                                                  reduction="none"),
                         span=(-6.0, 6.0)),
    convex=True, bounded_gradient=True,
    robust="partly: a wrong label's pull is capped at 1, but its loss grows linearly",
))
registry.describe(multilabel_soft_margin_loss, registry.Explain(
    formula="l = -(1/C) sum_c [y_c log sigmoid(x_c) + (1 - y_c) log sigmoid(-x_c)]",
    latex=r"\ell = -\tfrac1C\sum_c \bigl[y_c\log\sigma(x_c) + (1 - y_c)\log\sigma(-x_c)\bigr]",
    derivative="dl/dx_c = (sigmoid(x_c) - y_c) / C",
    derivative_latex=r"\partial\ell/\partial x_c = (\sigma(x_c) - y_c)/C",
    gradient=lambda x, y, **kw: (torch.sigmoid(x) - y) / x.shape[1],
    example=_ex.example([[2.0, -1.0, 0.5], [0.0, 1.5, -2.0]], [[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]),
    steps=_ml_soft_steps,
    curve=registry.Curve("logit x of a label with y = 1 (C = 1)",
                         _one_row_curve(multilabel_soft_margin_loss,
                                        torch.ones(1, 1, dtype=torch.float64), 1),
                         span=(-6.0, 6.0)),
    convex=True, bounded_gradient=True,
    robust="partly: as BCE with logits, averaged over the labels",
))
registry.describe(multilabel_margin_loss, registry.Explain(
    formula="l = (1/C) sum_{j in labels} sum_{i not in labels} max(0, 1 - (x_j - x_i))",
    latex=r"\ell = \tfrac1C\sum_{j\in Y}\sum_{i\notin Y}\max(0, 1 - (x_j - x_i))",
    derivative="dl/dx_j = -(1/C) #{i not in labels: 1 - (x_j - x_i) > 0} for a label j; "
               "dl/dx_i = +(1/C) #{labels j: 1 - (x_j - x_i) > 0} for a non-label i",
    derivative_latex=r"\partial\ell/\partial x_k = \tfrac1C\bigl(\#\{\text{active pairs with "
                     r"} k \notin Y\} - \#\{\text{active pairs with } k \in Y\}\bigr)",
    gradient=_multilabel_margin_gradient,
    example=_ex.example(_SCORES, torch.tensor([[3, 0, -1, 1], [1, -1, 0, 0]])),
    steps=_multilabel_margin_steps,
    curve=registry.Curve("score gap x_label - x_other (C = 2)",
                         _one_row_curve(multilabel_margin_loss, torch.tensor([[0, -1]]), 2)),
    convex=True, bounded_gradient=True,
    robust="yes: a pair's pull is 1/C whatever the gap",
))
registry.describe(multi_margin_loss, registry.Explain(
    formula="l = (1/C) sum_{i != y} w_y max(0, margin - x_y + x_i)^p",
    latex=r"\ell = \tfrac1C\sum_{i\ne y} w_y\max(0, m - x_y + x_i)^p",
    derivative="dl/dx_i = (w_y/C) p h_i^(p-1) [h_i > 0] for i != y, h_i = margin - x_y + x_i; "
               "dl/dx_y = -(sum of those)",
    derivative_latex=r"\partial\ell/\partial x_i = \tfrac{w_y}{C}\,p\,h_i^{p-1}\mathbb 1[h_i>0],"
                     r"\ \partial\ell/\partial x_y = -\sum_{i\ne y}\partial\ell/\partial x_i",
    gradient=_multi_margin_gradient,
    example=_ex.example(_SCORES, torch.tensor([3, 0])), steps=_multi_margin_steps,
    curve=registry.Curve(
        "true-class score x_0 (3 classes, the others at 0)",
        _one_row_curve(multi_margin_loss, torch.tensor([0]), 3),
        (("p=1", {}), ("p=2", {"p": 2}), ("p=1, margin=2", {"margin": 2.0}))),
    convex=True, bounded_gradient=False,
    robust="yes for p=1 (pull capped at 1); no for p=2 (squared hinge)",
    note="bounded gradient only for p=1; shown for the default p=1 with no class weight",
))
