"""Cross-entropy of a linear head, computed without the ``[tokens, vocab]`` logits.

torch 2.13's ``F.linear_cross_entropy`` / ``nn.LinearCrossEntropyLoss`` API, run on losskit's
chunked kernels (:mod:`losskit.kernels.linear_cross_entropy`) whatever ``options`` says.
"""

from __future__ import annotations

import math
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from losskit import _reduction, checks, kernels, registry
from losskit.checks import LossInputError, LossRuntimeError
from losskit.checks import linear_cross_entropy as lce_checks
from losskit.losses import _explain as _ex
from losskit.losses._common import (
    REDUCTION_ENUM,
    autocast_on,
    float32_weight,
    has_override,
    holds_dtensor,
    mean_over_nothing_to_zero,
    no_autocast,
    result_dtype,
    weight_dtype_ref,
)
from losskit.losses.classification import count_targets, cross_entropy

__all__ = [
    "LinearCrossEntropyLoss",
    "linear_cross_entropy",
]

LOSS = "linear_cross_entropy"


def linear_cross_entropy(
    input: Tensor,
    linear_weight: Tensor,
    target: Tensor,
    *,
    linear_bias: Tensor | None = None,
    weight: Tensor | None = None,
    reduction: str = "mean",
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    options: torch.nn.LinearCrossEntropyOptions | None = None,
    lse_square_scale: float = 0.0,
    softcap: float | None = None,
    return_lse: bool = False,
    chunk_size: int | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    r"""Cross-entropy of a linear head, ``cross_entropy(linear(input, linear_weight,
    linear_bias), target)``, computed chunk by chunk so the ``(N, C)`` logits never exist whole.

    With logits :math:`z_n = W x_n + b` (:math:`W` = ``linear_weight``), class weights
    :math:`w` and smoothing :math:`\varepsilon`, for a class index :math:`y_n`:

    .. math::
        l_n = (1 - \varepsilon)\, w_{y_n} (-\log p_{n, y_n})
              + \frac{\varepsilon}{C} \sum_c w_c (-\log p_{n,c}),
        \qquad p_n = \mathrm{softmax}(z_n)

    zero where :math:`y_n` is ``ignore_index``; ``"mean"`` divides by :math:`\sum_n w_{y_n}`
    over counted rows. Class probabilities and K-dimensional heads follow
    :func:`losskit.functional.cross_entropy` on the logits.

    Args:
        input: ``(in_features,)`` or ``(N, in_features)`` hidden states.
        linear_weight: ``(C, in_features)`` (``nn.Linear.weight``), or ``(C, d1, ..., dK,
            in_features)`` for a K-dimensional loss (needs a batched ``input``).
        target: class indices (int64/uint8) of shape ``()``, ``(N,)`` or ``(N, d1, ..., dK)``,
            or class probabilities of the logits' shape ``(C,)``, ``(N, C)`` or ``(N, C, d1,
            ..., dK)``.
        linear_bias: optional ``(C,)`` or ``(C, d1, ..., dK)``.
        weight: optional ``(C,)`` class weights of ``input``'s dtype.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``.
        ignore_index: target value that contributes nothing; None means -100 for class indices
            and must stay None for class probabilities.
        label_smoothing: :math:`\varepsilon \in [0, 1]` (a negative value counts as 0).
        options: a ``torch.nn.LinearCrossEntropyOptions`` or None, validated as torch does.
            losskit always runs its own chunked kernel; only ``options.batch_chunk_size``
            is used (as ``chunk_size``), the other fields are torch's kernel's and are ignored.
        lse_square_scale: losskit only: z-loss coefficient :math:`z`, adds
            :math:`z\, w_{y_n} \log^2 \sum_c e^{z_{n,c}}` per counted row.
        softcap: losskit only: if :math:`s > 0`, logits become :math:`s \tanh(z / s)` first.
        return_lse: losskit only: also return the float32 log-sum-exp per row (target's shape).
        chunk_size: losskit only: rows per chunk; by default chosen from the shapes (see
            :mod:`losskit.kernels.linear_cross_entropy`).

    Shape: ``"none"`` gives the target's shape (without the class dim for probabilities), else
    a scalar.

    Departures from torch 2.13 (losskit's mistakes table): a ``"mean"`` over no counted row is 0
    with zero gradient and a LossWarning (torch: NaN); NaN/Inf in ``input``, ``linear_weight`` or
    ``linear_bias`` raise during the value checks; a 1-D ``input`` takes a 0-d target only. Every
    shape error is raised with torch's exception class and a message naming the fix. The
    chunked kernel gives first-order gradients only (a second derivative or a second backward
    raises, naming ``losskit.kernels.fused(False)``; float64 always takes the plain-autograd
    path). K-dimensional heads and class-probability targets materialise the logits and run
    :func:`losskit.functional.cross_entropy` on them.

    Example:
        >>> h = torch.randn(6, 4); W = torch.randn(10, 4); y = torch.tensor([1, 2, 3, -100, 5, 6])
        >>> a = linear_cross_entropy(h, W, y); b = torch.nn.functional.cross_entropy(h @ W.T, y)
        >>> bool(torch.allclose(a, b, atol=1e-5))
        True
    """
    reduction = _reduction.resolve(reduction)
    if options is None and lse_square_scale == 0.0 and softcap is None and not return_lse and (
        chunk_size is None and plain_small_call(input, linear_weight, target, linear_bias, weight)
    ):  # every metadata check holds: see plain_small_call
        return _small(input, input, linear_weight, target, linear_bias, weight=weight,
                      reduction=reduction, ignore_index=-100 if ignore_index is None else
                      ignore_index, label_smoothing=_smoothing(label_smoothing), plain=True)
    if holds_dtensor(input, linear_weight, target, linear_bias, weight):  # FSDP2 / TP heads
        from losskit.distributed import dtensor  # lazily: distributed imports the losses

        return dtensor.linear_cross_entropy(
            linear_cross_entropy, input, linear_weight, target, linear_bias=linear_bias,
            weight=weight, reduction=reduction, ignore_index=ignore_index,
            label_smoothing=label_smoothing, options=options, lse_square_scale=lse_square_scale,
            softcap=softcap, return_lse=return_lse, chunk_size=chunk_size,
        )
    lce_checks.check_options(options)
    checks.check_floating_input(LOSS, input)
    if not checks.on_one_device(input, linear_weight, target, linear_bias, weight):
        checks.check_same_device(
            LOSS, input=input, linear_weight=linear_weight, target=target,
            linear_bias=linear_bias, weight=weight,
        )
    lce_checks.check_hidden_dims(input)
    lce_checks.check_head_shape(input, linear_weight)
    classes = tuple(linear_weight.shape[:-1])  # (C, d1, ..., dK)
    lce_checks.check_linear_bias_shape(linear_bias, classes)
    lce_checks.check_k_dim_batched(input, linear_weight)
    logits_shape = (*input.shape[:-1], *classes)  # (C,), (N, C) or (N, C, d1, ..., dK)
    probabilities = tuple(target.shape) == logits_shape
    if probabilities:
        lce_checks.check_probabilities_without_ignore_index(ignore_index)
    else:
        lce_checks.check_weight_not_differentiable(weight)
    ignore_index = -100 if ignore_index is None else ignore_index
    label_smoothing = _smoothing(label_smoothing)
    checks.check_softcap(LOSS, softcap)
    checks.check_chunk_size(LOSS, chunk_size)
    chunked_in_torch = label_smoothing == 0.0 and target.dtype == torch.int64 and len(classes) == 1
    if options is not None and chunked_in_torch:  # where torch's chunked op reads the options
        lce_checks.adjust_options(options, input, classes[0])
    chunk_size = lce_checks.chunk_size_from_options(options, chunk_size)
    if probabilities or len(classes) > 1:
        return _materialised(
            input, linear_weight, target, linear_bias, logits_shape, weight=weight,
            reduction=reduction, ignore_index=ignore_index, label_smoothing=label_smoothing,
            lse_square_scale=lse_square_scale, softcap=softcap, return_lse=return_lse,
        )
    if classes[0] == 1:  # cross_entropy refuses one class too (checks.check_more_than_one_class)
        raise LossInputError(
            f"{LOSS}: `linear_weight` has shape {tuple(linear_weight.shape)}: one class, so the "
            f"softmax of its one logit is always 1 and the loss and its gradient are 0. Fix: "
            f"for a yes/no target use `binary_cross_entropy_with_logits(F.linear(input, "
            f"linear_weight, linear_bias).squeeze(-1), target.float())`, or a head with 2 rows "
            f"(one per class)."
        )
    return _chunked(
        input, linear_weight, target, linear_bias, weight=weight, reduction=reduction,
        ignore_index=ignore_index, label_smoothing=label_smoothing,
        lse_square_scale=lse_square_scale, softcap=softcap, return_lse=return_lse,
        chunk_size=chunk_size,
    )


def _smoothing(label_smoothing: float) -> float:
    """``label_smoothing`` as torch's cross_entropy reads it: above 1 an error, below 0 zero."""
    if label_smoothing > 1.0:
        raise LossRuntimeError(
            f"{LOSS}: label_smoothing must be between 0.0 and 1.0. Got: {label_smoothing}. "
            f"Fix: use a value such as 0.1."
        )
    return max(label_smoothing, 0.0)


_PLAIN = (Tensor, nn.Parameter)  # the types of a plain call's hidden states and head
_PLAIN_DTYPES = (torch.float32, torch.float64)


def plain_small_call(
    input: Tensor,
    linear_weight: Tensor,
    target: Tensor,
    linear_bias: Tensor | None,
    weight: Tensor | None,
) -> bool:
    """The common small call, decided in a few attribute reads: CPU ``(N, D)`` float32/float64
    hidden states, a ``(C, D)`` head of their dtype with ``C > 1`` and ``N * C`` below one fused
    block, ``(N,)`` int64 class indices, an optional ``(C,)`` bias and an optional ``(C,)``
    class weight (no gradient) of the same dtype; all plain CPU tensors or Parameters (no
    DTensor, no other subclass) and no autocast. The caller also asks for torch's options only
    (no ``options``, z-loss, softcap, lse or chunk size). Such a call passes every metadata
    check (head, bias, K-dim and target shapes; dtypes; devices; class weight) and is the call
    of :func:`_small_plain_call`, so it goes straight to :func:`_small`, whose value checks
    still run.

    >>> plain_small_call(torch.zeros(3, 4), torch.zeros(5, 4), torch.zeros(3).long(), None, None)
    True
    >>> plain_small_call(torch.zeros(3, 4), torch.zeros(4, 5), torch.zeros(3).long(), None, None)
    False
    """
    if not (type(input) in _PLAIN and type(linear_weight) in _PLAIN and type(target) is Tensor
            and input.dim() == 2 and linear_weight.dim() == 2 and target.dim() == 1):
        return False
    n, d = input.shape
    classes = linear_weight.shape[0]
    dtype = input.dtype
    return (
        dtype in _PLAIN_DTYPES and linear_weight.dtype == dtype and target.dtype == torch.int64
        and linear_weight.shape[1] == d and target.shape[0] == n
        and classes > 1 and n * classes < kernels.MIN_FUSED_ELEMENTS
        and input.is_cpu and linear_weight.is_cpu and target.is_cpu
        and not torch._C._is_any_autocast_enabled()
        and (linear_bias is None or (
            type(linear_bias) in _PLAIN and linear_bias.dim() == 1 and linear_bias.is_cpu
            and linear_bias.shape[0] == classes and linear_bias.dtype == dtype))
        and (weight is None or (
            type(weight) is Tensor and weight.dim() == 1 and weight.is_cpu
            and weight.shape[0] == classes and weight.dtype == dtype and not weight.requires_grad))
    )


def _materialised(
    input: Tensor,
    linear_weight: Tensor,
    target: Tensor,
    linear_bias: Tensor | None,
    logits_shape: tuple[int, ...],
    **kwargs,
) -> Tensor | tuple[Tensor, Tensor]:
    """K-dimensional heads and class-probability targets: the logits, then cross_entropy."""
    d = input.shape[-1]
    w = linear_weight.reshape(-1, d)  # (C*d1*...*dK, D)
    b = None if linear_bias is None else linear_bias.reshape(-1)  # (C*d1*...*dK,)
    logits = F.linear(input, w, b).reshape(logits_shape)  # (N, C, d1, ..., dK) or (C,)
    return cross_entropy(logits, target, kwargs.pop("weight"), **kwargs)


def _chunked(
    input: Tensor,
    linear_weight: Tensor,
    target: Tensor,
    linear_bias: Tensor | None,
    *,
    weight: Tensor | None,
    reduction: str,
    ignore_index: int,
    return_lse: bool,
    **kernel_options,
) -> Tensor | tuple[Tensor, Tensor]:
    """A ``(C, D)`` head and class-index targets: losskit's chunked kernel."""
    num_classes = linear_weight.shape[0]
    # (N, D); (1, D) for an unbatched input. N is spelled out: -1 is ambiguous when D = 0.
    h = input.reshape(math.prod(input.shape[:-1]), input.shape[-1])
    if autocast_on(input):  # the head's matmul in autocast's dtype, as nn.Linear would run it
        dtype = torch.get_autocast_dtype(input.device.type)
        h, linear_weight = h.to(dtype), linear_weight.to(dtype)
        linear_bias = None if linear_bias is None else linear_bias.to(dtype)
        weight = float32_weight(input, weight)
    else:
        _check_head_dtype(input, linear_weight, linear_bias)
    lce_checks.check_target_rows(input, target)
    if _small_plain_call(h, linear_weight, linear_bias, target, weight, return_lse,
                         kernel_options):
        return _small(input, h, linear_weight, target, linear_bias, weight=weight,
                      reduction=reduction, ignore_index=ignore_index,
                      label_smoothing=kernel_options["label_smoothing"])
    # The (N, C) logits never exist: check the targets against a stand-in of their metadata.
    logits_meta = torch.empty(
        (*input.shape[:-1], num_classes), device="meta", dtype=input.dtype
    )
    checks.check_class_target(LOSS, logits_meta, target)
    checks.check_class_weight(
        LOSS, weight, num_classes, weight_dtype_ref(input),
        classes="given by dim 0 of `linear_weight`",
    )
    values = checks.values_enabled(LOSS, input, linear_weight, target)
    if values or checks.index_range_enabled(target):
        checks.check_class_index_range(LOSS, target, num_classes, ignore_index)
    if values:
        checks.check_finite(LOSS, input=input, linear_weight=linear_weight, linear_bias=linear_bias)
        if reduction == "mean":
            checks.check_not_all_ignored(LOSS, target, ignore_index)
    out_dtype = result_dtype(input)  # read before no_autocast: float32 under autocast
    with no_autocast(input):
        out = kernels.linear_cross_entropy(
            h, linear_weight, target.reshape(-1).long(), linear_bias, ignore_index=ignore_index,
            reduction=reduction, class_weight=weight, return_lse=return_lse,
            out_dtype=out_dtype, **kernel_options,
        )
    value, lse = cast(tuple[Tensor, Tensor], out) if return_lse else (cast(Tensor, out), None)
    if reduction == "none":
        value = value.reshape(target.shape)
    return (value, lse.reshape(target.shape)) if lse is not None else value


def _small_plain_call(
    h: Tensor,
    linear_weight: Tensor,
    linear_bias: Tensor | None,
    target: Tensor,
    weight: Tensor | None,
    return_lse: bool,
    kernel_options: dict,
) -> bool:
    """A tiny CPU call with torch's options only (no z-loss, softcap, lse, chunk size, autocast
    or tensor subclass), in float32/float64: its logits are smaller than one fused block, so they
    are computed, as torch's own linear_cross_entropy does at that size."""
    return (
        h.is_cpu and h.shape[0] * linear_weight.shape[0] < kernels.MIN_FUSED_ELEMENTS
        and linear_weight.shape[0] > 0  # no class at all: the kernel's own message
        and h.dtype in (torch.float32, torch.float64)
        and not return_lse and kernel_options["lse_square_scale"] == 0.0
        and kernel_options["softcap"] is None and kernel_options["chunk_size"] is None
        and not autocast_on(h) and not has_override(h, linear_weight, linear_bias, target, weight)
        and (weight is None or not weight.requires_grad)
    )


def _small(
    input: Tensor,
    h: Tensor,
    linear_weight: Tensor,
    target: Tensor,
    linear_bias: Tensor | None,
    *,
    weight: Tensor | None,
    reduction: str,
    ignore_index: int,
    label_smoothing: float,
    plain: bool = False,
) -> Tensor:
    """:func:`_small_plain_call`'s path: ``(N, C)`` logits, then torch's cross-entropy op, with
    the checks of the chunked path (CPU index errors explained on torch's error path). A
    :func:`plain_small_call` has passed the metadata checks already."""
    logits = F.linear(h, linear_weight, linear_bias)  # (N, C)
    t = target
    if not plain:
        # the target as given, against the logits' shape as torch would see them ((C,) unbatched)
        checks.check_class_target(LOSS, logits.reshape(*input.shape[:-1], logits.shape[1]),
                                  target)
        t = target.reshape(-1)  # (N,)
        checks.check_class_weight(LOSS, weight, logits.shape[1], logits,
                                  classes="given by dim 0 of `linear_weight`")
    if checks.values_enabled(LOSS, input, linear_weight, target):
        checks.check_class_index_range(LOSS, t, logits.shape[1], ignore_index)
        checks.check_finite(LOSS, input=input, linear_weight=linear_weight,
                            linear_bias=linear_bias)
        if reduction == "mean":
            checks.check_not_all_ignored(LOSS, t, ignore_index)
    try:
        out = torch._C._nn.cross_entropy_loss(
            logits, t.long(), weight, REDUCTION_ENUM[reduction], ignore_index, label_smoothing  # type: ignore[arg-type]  # the op takes the enum
        )
    except (IndexError, RuntimeError):  # the error path: the detailed message, checks on or off
        checks.check_class_index_range(LOSS, t, logits.shape[1], ignore_index)
        raise
    if reduction == "none":
        return out.reshape(target.shape)
    return mean_over_nothing_to_zero(out, t, ignore_index) if reduction == "mean" else out


def _check_head_dtype(input: Tensor, linear_weight: Tensor, linear_bias: Tensor | None) -> None:
    """Outside autocast the head's matmul needs one dtype (torch: RuntimeError)."""
    if linear_weight.dtype == input.dtype and (
        linear_bias is None or linear_bias.dtype == input.dtype
    ):
        return
    got = f"`linear_weight` {linear_weight.dtype}" + (
        "" if linear_bias is None else f", `linear_bias` {linear_bias.dtype}"
    )
    raise LossRuntimeError(
        f"{LOSS}: `input` has dtype {input.dtype} but {got}; the head's matmul needs one "
        f"dtype. Fix: `input.to(linear_weight.dtype)`, or compute the loss under "
        f"`torch.autocast(...)`, which casts both."
    )


class LinearCrossEntropyLoss(nn.LinearCrossEntropyLoss):
    r"""Cross-entropy of a linear head the Module owns (``self.linear``, an ``nn.Linear``),
    without materialising the logits; see :func:`losskit.functional.linear_cross_entropy`.

    ``forward(input, target)``: ``input`` ``(in_features,)`` or ``(N, in_features)``; the head
    ``self.linear.weight`` is stored flat, ``(C * d1 * ... * dK, in_features)``, and read as
    ``(C, *out_features, in_features)``; initialised exactly as torch's
    ``nn.LinearCrossEntropyLoss`` (same seed, same ``state_dict``). The losskit-only options
    ``lse_square_scale``, ``softcap`` and ``chunk_size`` come after torch's, keyword-only.

    >>> _ = torch.manual_seed(0)
    >>> loss = LinearCrossEntropyLoss(4, 10, bias=True)
    >>> h, y = torch.randn(5, 4), torch.tensor([1, 2, 3, 4, 5])
    >>> expected = torch.nn.functional.cross_entropy(loss.linear(h), y)
    >>> bool(torch.allclose(loss(h, y), expected, atol=1e-6))
    True
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        *,
        out_features: tuple[int, ...] = (),
        bias: bool = False,
        device=None,
        dtype=None,
        reduction: str = "mean",
        weight: Tensor | None = None,
        ignore_index: int | None = None,
        label_smoothing: float = 0.0,
        options: torch.nn.LinearCrossEntropyOptions | None = None,
        lse_square_scale: float = 0.0,
        softcap: float | None = None,
        chunk_size: int | None = None,
    ) -> None:
        super().__init__(
            in_features, num_classes, out_features=out_features, bias=bias, device=device,
            dtype=dtype, reduction=reduction, weight=weight, ignore_index=ignore_index,
            label_smoothing=label_smoothing, options=options,
        )
        self.lse_square_scale = lse_square_scale
        self.softcap = softcap
        self.chunk_size = chunk_size

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        head = (self.num_classes, *self.out_features)  # (C, d1, ..., dK)
        bias = self.linear.bias
        return cast(Tensor, linear_cross_entropy(
            input, self.linear.weight.reshape(*head, self.linear.in_features), target,
            linear_bias=None if bias is None else bias.reshape(head), weight=self.weight,
            reduction=self.reduction, ignore_index=self.ignore_index,
            label_smoothing=self.label_smoothing, options=self.options,
            lse_square_scale=self.lse_square_scale, softcap=self.softcap,
            chunk_size=self.chunk_size,
        ))


# ----------------------------------------------------------------------------------------------
# Records


def count_rows_or_targets(loss_fn: Any, *tensors: Tensor) -> Tensor:
    """The denominator of ``"mean"``, from ``(input, target)`` (the Module's forward) or
    ``(input, linear_weight, target)`` (the function's): the class-weighted count of counted
    targets (torch's weighted mean), or the rows of class-probability targets.

    >>> loss = LinearCrossEntropyLoss(4, 3)
    >>> count_rows_or_targets(loss, torch.zeros(3, 4), torch.tensor([1, -100, 2]))
    tensor(2.)
    """
    input, target = tensors[0], tensors[-1]
    if target.is_floating_point():  # (C,) or (N, C, d1, ...): one term per row and position
        return registry.count_full(input, target.numel() // target.shape[min(1, target.dim() - 1)])
    ignore_index = loss_fn.ignore_index
    n = count_targets(
        target, weight=loss_fn.weight, ignore_index=-100 if ignore_index is None else ignore_index
    )
    return n.to(registry.count_full(input, 0).dtype)


registry.register(registry.LossRecord(
    function=linear_cross_entropy, module=LinearCrossEntropyLoss, family="linear_cross_entropy",
    input="hidden", targets=("class-indices", "class-probabilities"),
    summary="cross-entropy of a linear head without the [tokens, vocab] logits (LLM training)",
    mean_count=count_rows_or_targets,
    torch_function=F.linear_cross_entropy, torch_module=nn.LinearCrossEntropyLoss,
    estimates="probabilities",
))


# ----------------------------------------------------------------------------------------------
# What `losskit explain` prints and draws (registry.Explain); the gradients are checked against
# autograd in tests/test_explain.py.


def _lce_steps(h, w, y, reduction="mean", label_smoothing=0.0):
    z = h @ w.T  # (N, C)
    rows = [("logits z = h W^T", z), *_ex.softmax_steps(z, y, label_smoothing)]
    return rows + _ex.reduce_step(rows[-1][1], reduction, "rows")


def _lce_curve(t, **option):
    h = torch.stack([t, torch.zeros_like(t)], dim=1)  # (n, 2): along the true class's row
    w = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]], dtype=t.dtype)  # (C=3, D=2)
    return linear_cross_entropy(h, w, torch.zeros(t.shape[0], dtype=torch.long),
                                reduction="none", **option)


registry.describe(linear_cross_entropy, registry.Explain(
    formula="l = cross_entropy(z, y),  z = h W^T (+ b): cross-entropy of a linear head",
    latex=r"\ell = \log\textstyle\sum_c e^{z_c} - z_y,\ z = W h",
    derivative="dl/dh = (softmax(z) - q) W,  q = (1 - eps) onehot(y) + eps / C  (and dl/dW = "
               "(softmax(z) - q)^T h)",
    derivative_latex=r"\partial\ell/\partial h = (\operatorname{softmax}(z) - q)\,W",
    gradient=lambda h, w, y, label_smoothing=0.0, **kw: (
        _ex.softmax_gradient(h @ w.T, y, label_smoothing) @ w),
    example=_ex.example([[1.0, -0.5], [0.2, 0.8]], [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]],
                        torch.tensor([0, 2])),
    steps=_lce_steps,
    curve=registry.Curve(
        "hidden h along the true class's weight row (W = [e1, e2, 0])", _lce_curve,
        tuple((f"label_smoothing={e}", {"label_smoothing": e}) for e in (0.0, 0.1, 0.3)),
        span=(-6.0, 6.0)),
    convex=True, bounded_gradient=True,
    robust="partly: as cross_entropy (a wrong label's pull is capped, its loss grows linearly)",
    note="convex in h for a fixed W (not jointly in h and W); the gradient's bound scales with W",
))
