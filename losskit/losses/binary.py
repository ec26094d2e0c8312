"""Binary and multi-label cross-entropy, on probabilities or on logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from losskit import _reduction, checks, registry
from losskit.losses import _explain as _ex
from losskit.losses._common import (
    OP_ERRORS,
    REDUCTION_ENUM,
    any_autocast,
    compiling,
    functorch_active,
    has_override,
    op_runs_directly,
)

__all__ = [
    "BCELoss",
    "BCEWithLogitsLoss",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
]


def _check_binary(
    loss: str, input: Tensor, target: Tensor, weight: Tensor | None,
    pos_weight: Tensor | None = None,
) -> None:
    """Every metadata check of the binary losses, in one call: each check function runs only
    when its cheap condition fails (small losses cost about a Python call per check)."""
    checks.check_floating_input(loss, input)
    device = input.device
    if (
        target.device != device or (weight is not None and weight.device != device)
        or (pos_weight is not None and pos_weight.device != device)
    ):
        checks.check_same_device(
            loss, input=input, target=target, weight=weight, pos_weight=pos_weight
        )
    if not target.is_floating_point():
        checks.check_binary_target_dtype(loss, target)
    if input.shape != target.shape:
        checks.check_binary_target_shape(loss, input, target)
    if weight is not None:
        checks.check_broadcast_weight(loss, "weight", weight, input)
    if pos_weight is not None:
        checks.check_broadcast_weight(loss, "pos_weight", pos_weight, input)


def binary_cross_entropy(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> Tensor:
    r"""Binary cross-entropy on probabilities.

    .. math::
        l_i = -w_i \left[ y_i \max(\log x_i, -100) + (1 - y_i) \max(\log(1 - x_i), -100) \right]

    Each log is clamped at -100 before multiplying by the target, as in torch, so ``x=0, y=1``
    gives 100 and ``x=0, y=0`` gives 0. Prefer :func:`binary_cross_entropy_with_logits` on logits:
    it is more stable.

    Args:
        input: probabilities in [0, 1], shape ``(*)`` (raw logits raise).
        target: same shape, floating, in [0, 1].
        weight: broadcasts to ``input``; ``"mean"`` still divides by the element count.

    Example:
        >>> x, y = torch.tensor([0.5, 1.0]), torch.tensor([1.0, 0.0])
        >>> binary_cross_entropy(x, y, reduction="none")
        tensor([  0.6931, 100.0000])
    """
    loss = "binary_cross_entropy"
    reduction = _reduction.resolve(reduction, size_average, reduce, warn=False)
    _check_binary(loss, input, target, weight)
    if checks.values_enabled(loss, input, target):
        _check_binary_values(loss, input, target)
    try:
        if weight is None and op_runs_directly(size_average, reduce, input, target):
            # torch's own op; its Python wrapper would only re-check the sizes.
            return torch._C._nn.binary_cross_entropy(input, target, None, REDUCTION_ENUM[reduction])  # type: ignore[arg-type]  # torch's stub says str; the op takes the reduction enum
        return F.binary_cross_entropy(input, target, weight, size_average, reduce, reduction)
    except RuntimeError as error:
        if "between 0 and 1" not in str(error):
            raise
        _check_binary_values(loss, input, target)  # raises the detailed error
        raise


def _check_binary_values(loss: str, input: Tensor, target: Tensor) -> None:
    checks.check_finite(loss, input=input, target=target)  # NaN first: it is not a "logit"
    checks.check_probability_input(loss, input)
    checks.check_binary_target_range(loss, target)


def binary_cross_entropy_with_logits(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    pos_weight: Tensor | None = None,
) -> Tensor:
    r"""Binary cross-entropy on logits, for binary and multi-label classification.

    .. math::
        l_i = w_i \left[ (1 - y_i)\, x_i + (1 + (p_c - 1) y_i)\, \mathrm{softplus}(-x_i) \right]

    with softplus computed stably (logits of ±1000 give 1000 / 0, never inf).

    Args:
        input: logits ``(*)``, e.g. ``(N,)`` binary or ``(N, C)`` multi-label.
        target: same shape, floating, in [0, 1].
        weight: broadcasts to ``input``.
        pos_weight: weight of positive targets, broadcasting over the class (last) dim, e.g.
            ``(C,)``; ``n_negative / n_positive`` per class balances a skewed label.

    Example:
        >>> x = torch.tensor([[2.0, -1.0]]); y = torch.tensor([[1.0, 0.0]])
        >>> binary_cross_entropy_with_logits(x, y, reduction="none")
        tensor([[0.1269, 0.3133]])
    """
    loss = "binary_cross_entropy_with_logits"
    enum = REDUCTION_ENUM.get(reduction) if type(reduction) is str else None
    # The direct call (losses/classification.py explains the pattern). Past the startup calls,
    # CPU float32/float64 logits and a target of the same shape and dtype, without `weight` or
    # `pos_weight` (whose broadcast losskit checks), go to torch's op at once. The shape test
    # is the one torch's op would not make (it broadcasts a target larger than the input); a
    # smaller target, or one on another device, makes the op raise, which sends the call to
    # the full path and its message.
    if (enum is not None and size_average is None and reduce is None
            and weight is None and pos_weight is None
            and type(input) is Tensor and type(target) is Tensor and input.is_cpu
            and input.dtype in _LOGIT_DTYPES and target.dtype is input.dtype
            and loss in checks.settled and input.shape == target.shape
            and not has_override(input, target) and not any_autocast()
            and not functorch_active() and not compiling()):
        try:
            return torch.binary_cross_entropy_with_logits(input, target, None, None, enum)
        except OP_ERRORS:
            pass  # the full path below names the mistake, or raises the op's error again
    reduction = _reduction.resolve(reduction, size_average, reduce, warn=False)
    _check_binary(loss, input, target, weight, pos_weight)
    if checks.values_enabled(loss, input, target):
        checks.check_finite(loss, input=input, target=target)
        checks.check_not_sigmoid_output(loss, input)
        checks.check_binary_target_range(loss, target)
    if op_runs_directly(size_average, reduce, input, target, weight, pos_weight):
        return torch.binary_cross_entropy_with_logits(
            input, target, weight, pos_weight, REDUCTION_ENUM[reduction]
        )
    return F.binary_cross_entropy_with_logits(
        input, target, weight, size_average, reduce, reduction, pos_weight
    )


_LOGIT_DTYPES = (torch.float32, torch.float64)


class BCELoss(nn.BCELoss):
    """Binary cross-entropy on probabilities; see :func:`losskit.functional.binary_cross_entropy`.

    >>> BCELoss()(torch.tensor([0.5]), torch.tensor([1.0]))
    tensor(0.6931)
    """

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return binary_cross_entropy(input, target, weight=self.weight, reduction=self.reduction)


class BCEWithLogitsLoss(nn.BCEWithLogitsLoss):
    """Binary cross-entropy on logits with ``weight`` and ``pos_weight`` buffers; see
    :func:`losskit.functional.binary_cross_entropy_with_logits`.

    >>> BCEWithLogitsLoss(pos_weight=torch.tensor([3.0]))(torch.zeros(2, 1), torch.ones(2, 1))
    tensor(2.0794)
    """

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return binary_cross_entropy_with_logits(
            input, target, self.weight, reduction=self.reduction, pos_weight=self.pos_weight
        )


# ----------------------------------------------------------------------------------------------
# Records

registry.register(registry.LossRecord(
    function=binary_cross_entropy, module=BCELoss, family="binary", input="probabilities",
    targets=("binary",), summary="binary cross-entropy on probabilities (after a sigmoid)",
    mean_count=registry.count_elements, torch_function=F.binary_cross_entropy,
    torch_module=nn.BCELoss, cli="bce", estimates="probabilities",
))
registry.register(registry.LossRecord(
    function=binary_cross_entropy_with_logits, module=BCEWithLogitsLoss, family="binary",
    input="logits", targets=("binary",),
    summary="binary / multi-label cross-entropy on logits, stable for any logit",
    mean_count=registry.count_elements, torch_function=F.binary_cross_entropy_with_logits,
    torch_module=nn.BCEWithLogitsLoss, cli="bce-with-logits", estimates="probabilities",
))


# ----------------------------------------------------------------------------------------------
# What `losskit explain` prints and draws (registry.Explain); the gradients are checked against
# autograd in tests/test_explain.py.


def _bce_steps(p, y, reduction="mean"):
    rows = [("log p", p.log()), ("log(1 - p)", (1 - p).log()),
            ("l = -(y log p + (1 - y) log(1 - p))", -(y * p.log() + (1 - y) * (1 - p).log()))]
    return rows + _ex.reduce_step(rows[-1][1], reduction)


def _bce_logits_steps(x, y, reduction="mean"):
    # softplus(-x) = log(1 + e^-x) = -log sigmoid(x), written stably as torch does.
    softplus = x.clamp(min=0) - x + (1 + (-x.abs()).exp()).log()
    rows = [("p = sigmoid(x)", torch.sigmoid(x)), ("-log p = softplus(-x)", softplus),
            ("l = (1 - y) x + softplus(-x)", (1 - y) * x + softplus)]
    return rows + _ex.reduce_step(rows[-1][1], reduction)


def _ones_target(function):
    def loss(t, y=1.0, **option):
        return function(t, torch.full_like(t, y), reduction="none", **option)
    return loss


registry.describe(binary_cross_entropy, registry.Explain(
    formula="l = -(y log p + (1 - y) log(1 - p))  (each log clamped at -100, as torch)",
    latex=r"\ell = -\bigl(y \log p + (1 - y)\log(1 - p)\bigr)",
    derivative="dl/dp = (p - y) / (p (1 - p))",
    derivative_latex=r"\partial\ell/\partial p = \frac{p - y}{p(1 - p)}",
    gradient=lambda p, y, **kw: (p - y) / (p * (1 - p)),
    example=_ex.example([0.9, 0.2, 0.6], [1.0, 0.0, 0.0]), steps=_bce_steps,
    curve=registry.Curve("predicted probability p (target y)", _ones_target(binary_cross_entropy),
                         (("y=1", {"y": 1.0}), ("y=0.9", {"y": 0.9})), span=(0.02, 0.98)),
    convex=True, bounded_gradient=False,
    robust="no: a confident wrong probability costs without bound (-log p)",
    note="the gradient blows up as p nears 0 or 1; BCE with logits cancels the sigmoid's "
         "p (1 - p) and is the stable choice",
))
registry.describe(binary_cross_entropy_with_logits, registry.Explain(
    formula="l = -(y log sigmoid(x) + (1 - y) log(1 - sigmoid(x)))"
            " = (1 - y) x + softplus(-x);  with pos_weight c: c y softplus(-x) + (1 - y)(x + "
            "softplus(-x))",
    latex=r"\ell = (1 - y)\,x + \bigl(1 + (c - 1)y\bigr)\operatorname{softplus}(-x)",
    derivative="dl/dx = sigmoid(x) - y  (with pos_weight c: (1 + (c - 1) y)(sigmoid(x) - 1) + "
               "1 - y)",
    derivative_latex=r"\partial\ell/\partial x = \sigma(x) - y",
    gradient=lambda x, y, pos_weight=None, **kw: (
        torch.sigmoid(x) - y if pos_weight is None
        else (1 + (pos_weight - 1) * y) * (torch.sigmoid(x) - 1) + 1 - y),
    example=_ex.example([2.0, -1.0, 0.5], [1.0, 0.0, 0.0]), steps=_bce_logits_steps,
    curve=registry.Curve(
        "logit x (target y = 1)", _ones_target(binary_cross_entropy_with_logits),
        tuple((f"pos_weight={c}", {"pos_weight": torch.tensor(c, dtype=torch.float64)})
              for c in (1.0, 3.0)), span=(-6.0, 6.0)),
    convex=True, bounded_gradient=True,
    robust="partly: a wrong label's pull is capped at 1, but its loss grows linearly",
))
