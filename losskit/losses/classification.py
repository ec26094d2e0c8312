"""Multi-class losses over a class dimension: cross-entropy, NLL, focal loss and Poly-1."""

from __future__ import annotations

import math
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from losskit import _reduction, checks, kernels, registry
from losskit.checks import LossInputError, LossRuntimeError
from losskit.checks import segmentation as seg_checks
from losskit.losses import _explain as _ex
from losskit.losses._common import (
    HALF,
    OP_ERRORS,
    REDUCTION_ENUM,
    any_autocast,
    autocast_on,
    compiling,
    float32_weight,
    functorch_active,
    has_override,
    holds_dtensor,
    mean_over_nothing_to_zero,
    no_autocast,
    op_runs_directly,
    result_dtype,
    weight_dtype_ref,
)

__all__ = [
    "CrossEntropyLoss",
    "FocalLoss",
    "NLLLoss",
    "Poly1CrossEntropyLoss",
    "cross_entropy",
    "focal_loss",
    "nll_loss",
    "poly1_cross_entropy",
]


def _num_classes(input: Tensor) -> int:
    return input.shape[1] if input.dim() >= 2 else input.shape[0]


def plain_class_call(input: Tensor, target: Tensor, weight: Tensor | None) -> bool:
    """The common call in a few attribute reads: ``(N, C)`` float32/float64 logits with ``(N,)``
    int64 indices, or one unbatched ``(C,)`` row with a 0-d int64 index; an optional ``(C,)``
    class weight of the logits' dtype; all plain tensors (no DTensor or other subclass) on one
    device.
    Such a call passes every metadata check of class-index losses (floating input, devices,
    target layout and dtype, weight shape and dtype, under autocast too), so those checks run
    only when this says no.

    >>> plain_class_call(torch.zeros(5), torch.tensor(2), None)  # unbatched
    True
    >>> plain_class_call(torch.zeros(5), torch.tensor([2]), None)  # (1,) target: not plain
    False
    """
    if not (type(input) is Tensor and type(target) is Tensor  # no DTensor, no subclass
            and target.dtype == torch.int64 and input.dtype in _TORCH_OP_DTYPES
            and target.device == input.device):
        return False
    dims = input.dim()
    if not ((dims == 2 and target.dim() == 1 and target.shape[0] == input.shape[0])
            or (dims == 1 and target.dim() == 0)):
        return False
    return weight is None or (
        type(weight) is Tensor and weight.dim() == 1 and weight.shape[0] == input.shape[-1]
        and weight.dtype == input.dtype == torch.float32 and weight.device == input.device
    )


# ----------------------------------------------------------------------------------------------
# The direct call. Past the startup calls, cross_entropy and nll_loss call torch's op at once on
# the common call; the test is written out in each (it runs on every step, and a Python call
# costs as much as a few of its reads). Each read settles a rule of the full path that torch's
# op would not enforce the same way:
#
# * plain tensors and no __torch_function__ mode: a subclass's override must run, and a DTensor
#   (which disables its __torch_function__) goes to losskit's sharded path;
# * CPU float32/float64 logits and int64 indices, (N, C) with (N,) or (C,) with () (torch
#   computes a (1,) target for (C,) and then fails in backward);
# * no value check due (`loss in checks.settled`), no autocast, no tracer (torch.compile would
#   meet the op's error while tracing, outside the fallback below; torch.func needs no speed);
# * cross-entropy only: 2 or more classes (one is refused; none is the kernels' rule), fewer
#   than kernels.MIN_FUSED_ELEMENTS logits (losskit's own kernel would run torch's op there too),
#   no class weight that needs a gradient (losskit's kernel gives it; torch's op refuses it),
#   and none of losskit's extras.
#
# Every other mistake of such a call (a target of another length or device; a class weight of
# another shape, dtype or device; an index out of range) makes torch's op raise one of its
# errors (OP_ERRORS), and the call goes on to the full path, which names the mistake. Any other
# exception (a non-reentrant checkpoint's recomputation stop, an interrupt) passes through. A
# mean over no counted target is 0 (torch's is NaN), read once from the value; for one
# unweighted target (unbatched) the mean is the sum, which is already 0 when it is ignored.
# tests/test_fast_paths.py holds a bad call for each rule.

_MEAN, _SUM = REDUCTION_ENUM["mean"], REDUCTION_ENUM["sum"]
_REAL = (float, int)  # a label_smoothing of another type takes the full path, which checks it


def check_class_indices(
    loss: str,
    input: Tensor,
    target: Tensor,
    weight: Tensor | None,
    ignore_index: int | None,
    reduction: str,
    *,
    weight_name: str = "weight",
    range_on_error: bool = False,
    plain: bool = False,
) -> None:
    """Metadata checks, then value checks. The index range check also runs outside the startup
    calls on CPU, where torch checks it too and it costs no sync; with ``range_on_error`` the
    caller's CPU kernel raises for an out-of-range index itself, and the caller runs
    :func:`explain_index_error` on that error path instead (no pass over the targets per call)."""
    if not plain:  # see plain_class_call
        checks.check_class_target(loss, input, target)
        if weight is not None:
            checks.check_class_weight(
                loss, weight, _num_classes(input), weight_dtype_ref(input), name=weight_name,
                classes=f"in dim {1 if input.dim() >= 2 else 0} of `input`",
            )
    values = checks.values_enabled(loss, input, target)
    if values or (not range_on_error and checks.index_range_enabled(target)):
        checks.check_class_index_range(loss, target, _num_classes(input), ignore_index)
    if values:
        class_dim = 1 if input.dim() >= 2 else 0
        checks.check_finite(loss, allow_neg_inf=True, input=input)
        if loss == "nll_loss":
            checks.check_log_probabilities(loss, input, class_dim)
        elif loss == "dice_loss":  # a softmax, not a log_softmax: the overlap losses' message
            seg_checks.check_not_softmax_before(loss, input, class_dim)
            checks.check_not_sigmoid_for_softmax(loss, input, class_dim)
        else:
            checks.check_not_probabilities(loss, input, class_dim)
            checks.check_not_sigmoid_for_softmax(loss, input, class_dim)
        if reduction == "mean":
            checks.check_not_all_ignored(loss, target, ignore_index)


def explain_index_error(
    loss: str, input: Tensor, target: Tensor, ignore_index: int | None
) -> None:
    """On the error path of a kernel that raised (torch's ``IndexError: Target 3 is out of
    bounds``, or a gather's ``RuntimeError``): raise losskit's detailed
    :class:`~losskit.checks.LossIndexError` when an index is out of range, as the check before
    the call would have; return (the caller re-raises) when the error is about something else."""
    if checks.index_range_enabled(target):
        checks.check_class_index_range(loss, target, _num_classes(input), ignore_index)


def _flatten_classes(input: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """(C,) / (N, C) / (N, C, d1, ...) logits -> (M, C); targets -> (M,) int64."""
    if input.dim() == 1:
        x = input.unsqueeze(0)  # (1, C)
    elif input.dim() == 2:
        x = input  # (N, C)
    else:  # rows counted from the target: -1 is ambiguous when C = 0
        x = input.movedim(1, -1).reshape(target.numel(), input.shape[1])  # (N*d1*..., C)
    return x, target.reshape(-1).long()  # (M,)


def cross_entropy(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    size_average: bool | None = None,
    ignore_index: int = -100,
    reduce: bool | None = None,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    *,
    lse_square_scale: float = 0.0,
    softcap: float | None = None,
    return_lse: bool = False,
    inplace: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    r"""Cross-entropy between logits and class indices or class probabilities.

    With class indices :math:`y_n`, smoothing :math:`\varepsilon` and class weights :math:`w`:

    .. math::
        l_n = (1 - \varepsilon)\, w_{y_n} (-\log p_{n, y_n})
              + \frac{\varepsilon}{C} \sum_c w_c (-\log p_{n,c}),
        \qquad p_n = \mathrm{softmax}(x_n)

    zero for ignored targets; ``"mean"`` divides by :math:`\sum_n w_{y_n}` over non-ignored
    :math:`n` (by their count without ``weight``), and is 0 when every target is ignored. With
    class probabilities :math:`q` (``target.shape == input.shape``):
    :math:`l_n = -\sum_c w_c q'_{n,c} \log p_{n,c}` with :math:`q' = (1 - \varepsilon) q +
    \varepsilon / C`, and ``"mean"`` divides by the number of rows.

    Args:
        input: logits ``(C,)``, ``(N, C)`` or ``(N, C, d1, ...)``: the class dim is 1.
        target: class indices (int64/uint8) of shape ``()``, ``(N,)`` or ``(N, d1, ...)``, or
            class probabilities of ``input``'s shape.
        weight: ``(C,)`` class weights of ``input``'s dtype.
        ignore_index: target value that contributes nothing (class indices only).
        label_smoothing: :math:`\varepsilon \in [0, 1]`.
        lse_square_scale: z-loss coefficient :math:`z`; adds :math:`z \log^2 \sum_c e^{x_{n,c}}`
            per counted target, weighted like the loss (class indices only).
        softcap: if set to :math:`s > 0`, logits become :math:`s \tanh(x / s)` first.
        return_lse: also return the per-target log-sum-exp (float32, target's shape).
        inplace: let the fused kernel overwrite ``input`` with its gradient (saves one
            ``[N, C]`` buffer; ``input`` must not be used afterwards).

    Shape: ``"none"`` gives the target's shape (without the class dim for probabilities);
    ``"mean"`` / ``"sum"`` a scalar.

    Example:
        >>> x = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
        >>> cross_entropy(x, torch.tensor([0, 2]), reduction="none")
        tensor([0.2395, 1.0986])
        >>> cross_entropy(x, torch.tensor([0, -100]))
        tensor(0.2395)
    """
    loss = "cross_entropy"
    enum = REDUCTION_ENUM.get(reduction) if type(reduction) is str else None
    if (enum is not None and size_average is None and reduce is None  # the direct call (above)
            and type(label_smoothing) in _REAL and 0.0 <= label_smoothing <= 1.0
            and lse_square_scale == 0.0 and softcap is None
            and not return_lse and not inplace
            and type(input) is Tensor and type(target) is Tensor
            and (weight is None or (type(weight) is Tensor and not weight.requires_grad))
            and input.is_cpu and target.dtype is torch.int64 and input.dtype in _TORCH_OP_DTYPES
            and loss in checks.settled and (rows := target.dim()) == input.dim() - 1 < 2
            and input.shape[-1] >= 2 and input.numel() < kernels.MIN_FUSED_ELEMENTS
            and not has_override(input, target, weight) and not any_autocast()
            and not functorch_active() and not compiling()):
        if enum == _MEAN and not rows and weight is None:
            enum = _SUM  # one target, unweighted: its mean is its sum, and 0 (not 0/0) if ignored
        try:
            direct = torch._C._nn.cross_entropy_loss(input, target, weight, enum, ignore_index,  # type: ignore[arg-type]  # the op takes the enum
                                                     label_smoothing)
        except OP_ERRORS:
            pass  # the full path below names the mistake, or raises the op's error again
        else:
            if enum == _MEAN and math.isnan(direct.item()):
                return mean_over_nothing_to_zero(direct, target, ignore_index)
            return direct
    reduction = _reduction.resolve(reduction, size_average, reduce)
    checks.check_label_smoothing_number(loss, label_smoothing)
    plain = plain_class_call(input, target, weight)
    if not plain and holds_dtensor(input, target, weight):  # sharded logits
        from losskit.distributed import dtensor  # lazily: distributed imports the losses

        return dtensor.cross_entropy(
            cross_entropy, input, target, weight, ignore_index=ignore_index, reduction=reduction,
            label_smoothing=label_smoothing, lse_square_scale=lse_square_scale, softcap=softcap,
            return_lse=return_lse, inplace=inplace,
        )
    if not plain:
        checks.check_floating_input(loss, input)
    checks.check_more_than_one_class(loss, input, 1 if input.dim() >= 2 else 0)
    if not plain and not checks.on_one_device(input, target, weight):
        checks.check_same_device(loss, input=input, target=target, weight=weight)
    if label_smoothing > 1.0:
        raise LossRuntimeError(
            f"cross_entropy: label_smoothing must be between 0.0 and 1.0. Got: {label_smoothing}."
            f" Fix: use a value such as 0.1."
        )
    label_smoothing = max(label_smoothing, 0.0)  # torch treats a negative value as 0
    if softcap is not None:
        checks.check_softcap(loss, softcap)
    if not plain and target.shape == input.shape:
        return _cross_entropy_probabilities(
            input, target, weight, ignore_index, reduction, label_smoothing,
            extras=lse_square_scale != 0.0 or softcap is not None or return_lse or inplace,
        )
    if weight is not None:
        weight = float32_weight(input, weight)
    # inplace may overwrite the logits chunk by chunk before a later chunk meets a bad index:
    # check the indices first there.
    check_class_indices(loss, input, target, weight, ignore_index, reduction,
                        range_on_error=not inplace, plain=plain)
    extras = lse_square_scale != 0.0 or softcap is not None or return_lse or inplace
    try:
        if not extras and _torch_op_computes(input, target, weight):
            torch_out = torch._C._nn.cross_entropy_loss(
                input, target, weight, REDUCTION_ENUM[reduction], ignore_index, label_smoothing  # type: ignore[arg-type]  # the op takes the enum
            )
            return mean_over_nothing_to_zero(torch_out, target, ignore_index) if (
                reduction == "mean") else torch_out
        out = _cross_entropy_kernel(
            input, target, weight, ignore_index, reduction, label_smoothing,
            lse_square_scale=lse_square_scale, softcap=softcap, return_lse=return_lse,
            inplace=inplace,
        )
    except (IndexError, RuntimeError) as error:
        torch_error = error
    else:
        value, lse = cast(tuple[Tensor, Tensor], out) if return_lse else (cast(Tensor, out), None)
        if reduction == "none":
            value = value.reshape(target.shape)
        return (value, lse.reshape(target.shape)) if lse is not None else value
    # losskit's message for an index out of range, raised outside the `except` so that it does
    # not arrive chained to torch's error; torch's own error otherwise
    explain_index_error(loss, input, target, ignore_index)
    try:
        raise torch_error
    finally:  # the traceback holds this frame: break the cycle that would keep the logits
        del torch_error


_TORCH_OP_DTYPES = (torch.float32, torch.float64)


def _torch_op_computes(input: Tensor, target: Tensor, weight: Tensor | None) -> bool:
    """Whether torch's own ``cross_entropy_loss`` op is what losskit would run for this call.

    The kernel dispatch would pick the reference (small input, float64, a fused-off block, a
    ``torch.func`` transform), which is torch's op on the flattened logits; here the op runs on
    the logits as given, without the flattening, dtype and autocast steps around it. Half
    precision (upcast to float32 first by the reference), autocast, a class weight that needs a
    gradient and tensor subclasses (whose override must run) keep the kernel path.
    """
    return (
        input.dtype in _TORCH_OP_DTYPES
        and _num_classes(input) > 0  # no class at all: the kernels' rule, not torch's
        and (weight is None or not weight.requires_grad)
        and not has_override(input, target, weight)
        and not autocast_on(input)
        # a small CPU input always takes the reference out of place: decided without the dispatch
        and ((input.is_cpu and input.numel() < kernels.MIN_FUSED_ELEMENTS)
             or kernels.runs_reference(input, weight))
    )


def _cross_entropy_kernel(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None,
    ignore_index: int,
    reduction: str,
    label_smoothing: float,
    **options,
) -> Tensor | tuple[Tensor, Tensor]:
    """Class-index cross-entropy through :func:`losskit.kernels.cross_entropy` (any backend)."""
    x, t = _flatten_classes(input, target)
    out_dtype = result_dtype(input)  # float32 under autocast: read before turning it off
    with no_autocast(input):
        return kernels.cross_entropy(
            x, t, weight=weight, ignore_index=ignore_index, reduction=reduction,
            label_smoothing=label_smoothing, out_dtype=out_dtype, **options,
        )


def _cross_entropy_probabilities(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None,
    ignore_index: int,
    reduction: str,
    label_smoothing: float,
    *,
    extras: bool,
) -> Tensor:
    loss = "cross_entropy"
    if not target.is_floating_point():
        raise LossRuntimeError(
            f"cross_entropy: `target` has the same shape as `input` ({tuple(input.shape)}), so it "
            f"is read as class probabilities, but it is {target.dtype}; expected floating point "
            f"type for target with class probabilities. Fix: for one-hot labels use "
            f"`target.argmax(dim={1 if input.dim() >= 2 else 0})` (class indices), or "
            f"`target.float()` for probabilities."
        )
    if ignore_index >= 0:
        raise LossRuntimeError(
            f"cross_entropy: ignore_index={ignore_index} is not supported for floating point "
            f"target (class probabilities). Fix: drop ignore_index, or zero the rows to ignore "
            f"and use reduction='sum'."
        )
    if extras:
        raise LossInputError(
            "cross_entropy: lse_square_scale, softcap, return_lse and inplace apply to class-index "
            "targets only, but `target` holds class probabilities. Fix: pass class indices, or "
            "drop these options."
        )
    weight = float32_weight(input, weight)
    # Class probabilities: torch promotes a class weight of another float dtype (the index path
    # needs them equal), so only the weight's length is checked against the input here.
    floating = weight is not None and weight.is_floating_point()
    dtype_ref = weight if floating and weight is not None else weight_dtype_ref(input)
    checks.check_class_weight(loss, weight, _num_classes(input), dtype_ref)
    if checks.values_enabled(loss, input, target):
        class_dim = 1 if input.dim() >= 2 else 0
        checks.check_finite(loss, allow_neg_inf=True, input=input)
        checks.check_finite(loss, target=target)
        checks.check_soft_target(loss, target, class_dim)
        checks.check_not_probabilities(loss, input, class_dim)
        checks.check_not_sigmoid_for_softmax(loss, input, class_dim)
    return F.cross_entropy(
        input, target, weight, reduction=reduction, label_smoothing=label_smoothing
    )


def nll_loss(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    size_average: bool | None = None,
    ignore_index: int = -100,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> Tensor:
    r"""Negative log-likelihood of class indices: :math:`l_n = -w_{y_n} x_{n, y_n}`.

    ``input`` holds log-probabilities (``log_softmax`` output) of shape ``(C,)``, ``(N, C)`` or
    ``(N, C, d1, ...)``; ``target`` class indices ``()``, ``(N,)`` or ``(N, d1, ...)``.
    ``"mean"`` divides by :math:`\sum_n w_{y_n}` over non-ignored :math:`n`, and is 0 (not NaN)
    when every target is ignored.

    Example:
        >>> logp = torch.tensor([[0.25, 0.75], [0.5, 0.5]]).log()
        >>> nll_loss(logp, torch.tensor([1, 0]))
        tensor(0.4904)
    """
    loss = "nll_loss"
    enum = REDUCTION_ENUM.get(reduction) if type(reduction) is str else None
    if (enum is not None and size_average is None and reduce is None  # the direct call: see
            and type(input) is Tensor and type(target) is Tensor  # above cross_entropy
            and (weight is None or type(weight) is Tensor)
            and input.is_cpu and target.dtype is torch.int64 and input.dtype in _TORCH_OP_DTYPES
            and loss in checks.settled and (rows := target.dim()) == input.dim() - 1 < 2
            and not has_override(input, target, weight) and not any_autocast()
            and not functorch_active() and not compiling()):
        if enum == _MEAN and not rows and weight is None:
            enum = _SUM  # one target, unweighted: its mean is its sum, and 0 (not 0/0) if ignored
        try:
            out = torch._C._nn.nll_loss_nd(input, target, weight, enum, ignore_index)  # type: ignore[arg-type]  # the op takes the enum
        except OP_ERRORS:
            pass  # the full path below names the mistake, or raises the op's error again
        else:
            if enum == _MEAN and math.isnan(out.item()):
                return mean_over_nothing_to_zero(out, target, ignore_index)
            return out
    reduction = _reduction.resolve(reduction, size_average, reduce, warn=False)
    plain = plain_class_call(input, target, weight)
    if not plain:
        checks.check_floating_input(loss, input)
        if not checks.on_one_device(input, target, weight):
            checks.check_same_device(loss, input=input, target=target, weight=weight)
        if weight is not None:
            weight = float32_weight(input, weight)
    check_class_indices(loss, input, target, weight, ignore_index, reduction, range_on_error=True,
                        plain=plain)
    torch_error: Exception | None = None
    try:
        if op_runs_directly(size_average, reduce, input, target, weight):
            # torch's own op; its Python wrapper adds nothing after the checks.
            out = torch._C._nn.nll_loss_nd(
                input, target, weight, REDUCTION_ENUM[reduction], ignore_index  # type: ignore[arg-type]  # the op takes the enum
            )
        else:
            out = F.nll_loss(input, target, weight, size_average, ignore_index, reduce, reduction)
    except (IndexError, RuntimeError) as error:
        torch_error = error
    if torch_error is not None:  # explained outside the `except`: not chained to torch's error
        explain_index_error(loss, input, target, ignore_index)
        try:
            raise torch_error
        finally:  # the traceback holds this frame: break the cycle that would keep the input
            torch_error = None
    if reduction == "mean":
        # torch gives NaN for a mean over nothing; the gradient is already 0 there.
        out = mean_over_nothing_to_zero(out, target, ignore_index)
    return out


def focal_loss(
    input: Tensor,
    target: Tensor,
    *,
    alpha: float | Tensor | None = None,
    gamma: float = 2.0,
    reduction: str = "mean",
    ignore_index: int = -100,
) -> Tensor:
    r"""Focal loss (Lin et al., 2017), from logits: cross-entropy scaled down on easy examples.

    .. math::
        l = -\alpha_t (1 - p_t)^\gamma \log p_t

    Binary / multi-label (``target`` floating, same shape as ``input``): :math:`p = \sigma(x)`,
    :math:`p_t = p y + (1 - p)(1 - y)`, :math:`\alpha_t = \alpha y + (1 - \alpha)(1 - y)` (no
    :math:`\alpha_t` when ``alpha`` is None); ``"mean"`` divides by the element count.

    Multi-class (``target`` int64 class indices, ``input`` ``(N, C)`` or ``(N, C, d1, ...)``):
    :math:`p_t = \mathrm{softmax}(x)_{y}`, :math:`\alpha_t` = ``alpha`` (a float) or
    ``alpha[y]`` (a ``(C,)`` tensor); ignored targets give 0 and ``"mean"`` divides by the
    number of non-ignored targets. ``gamma = 0`` gives (weighted) cross-entropy.

    References: Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017.

    Example:
        >>> x = torch.tensor([3.0, -3.0]); y = torch.tensor([1.0, 1.0])
        >>> focal_loss(x, y, reduction="none")
        tensor([1.0928e-04, 2.7663e+00])
    """
    loss = "focal_loss"
    reduction = _reduction.resolve(reduction)
    if gamma < 0:
        raise LossInputError(f"focal_loss: gamma={gamma} is negative. Fix: use gamma >= 0 (2.0).")
    checks.check_floating_input(loss, input)
    alpha_t = alpha if isinstance(alpha, Tensor) else None
    if not checks.on_one_device(input, target, alpha_t):
        checks.check_same_device(loss, input=input, target=target, alpha=alpha_t)
    if target.shape == input.shape and target.is_floating_point():
        return _binary_focal(input, target, alpha, gamma, reduction)
    alpha_t = float32_weight(input, alpha_t)
    check_class_indices(loss, input, target, alpha_t, ignore_index, reduction,
                         weight_name="alpha")
    class_dim = 1 if input.dim() >= 2 else 0
    x = input.float() if input.dtype in HALF else input  # half losses compute in float32
    counted = checks.not_ignored(target, ignore_index)
    # Ignored positions are selected out before anything reads them (a -inf logit there times a
    # zero weight would make the gradient NaN): their loss and gradient are exactly 0.
    x = torch.where(counted.unsqueeze(class_dim), x, 0.0)
    logp = F.log_softmax(x, dim=class_dim)
    t = torch.where(counted, target, 0).long()
    logp_t = logp.gather(class_dim, t.unsqueeze(class_dim)).squeeze(class_dim)  # target's shape
    out = -_focal_factor(1 - logp_t.exp(), gamma) * logp_t
    if alpha_t is not None:
        out = out * alpha_t[t].to(out.dtype)
    elif alpha is not None:
        out = out * alpha
    out = torch.where(counted, out, torch.zeros_like(out))
    return _reduction.reduce(out, reduction, counted.sum().to(out.dtype)).to(result_dtype(input))


def _focal_factor(one_minus_pt: Tensor, gamma: float) -> Tensor:
    """``(1 - p_t) ** gamma``, with the base clamped above 0: for 0 < gamma < 1 the derivative
    ``gamma * 0 ** (gamma - 1)`` is inf where ``p_t`` rounds to 1, and inf times the zero inner
    derivative is NaN. The clamp's own gradient is 0 there, so the gradient is 0, as it should be
    (the loss is flat at a perfect prediction)."""
    return one_minus_pt.clamp_min(torch.finfo(one_minus_pt.dtype).tiny) ** gamma


def _binary_focal(
    input: Tensor, target: Tensor, alpha: float | Tensor | None, gamma: float, reduction: str
) -> Tensor:
    loss = "focal_loss"
    if checks.values_enabled(loss, input, target):
        checks.check_finite(loss, input=input, target=target)
        checks.check_not_sigmoid_output(loss, input)
        checks.check_binary_target_range(loss, target)
    if alpha is not None and not isinstance(alpha, Tensor) and not 0 <= alpha <= 1:
        raise LossInputError(
            f"focal_loss: alpha={alpha} for binary targets weighs positives by alpha and "
            f"negatives by 1 - alpha, so it must lie in [0, 1]. Fix: e.g. alpha=0.25."
        )
    dtype = result_dtype(input)
    if input.dtype in HALF:  # half losses compute in float32 (1e4 logits overflow the gradient)
        input, target = input.float(), target.float()
    ce = F.binary_cross_entropy_with_logits(input, target, reduction="none")  # -log p_t
    p = torch.sigmoid(input)
    one_minus_pt = p + target - 2 * p * target  # p (1 - y) + (1 - p) y
    out = ce * _focal_factor(one_minus_pt, gamma)
    if alpha is not None:
        out = out * (alpha * target + (1 - alpha) * (1 - target))
    return _reduction.reduce(out, reduction).to(dtype)


def poly1_cross_entropy(
    input: Tensor,
    target: Tensor,
    *,
    epsilon: float = 1.0,
    weight: Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> Tensor:
    r"""Poly-1 cross-entropy (Leng et al., 2022): cross-entropy plus :math:`\varepsilon (1 - p_t)`.

    Cross-entropy is the series :math:`\sum_{j \ge 1} (1 - p_t)^j / j`; Poly-1 raises the
    first coefficient by :math:`\varepsilon`, so the gradient pushes harder on the target class
    (:math:`\varepsilon > 0`) or softer (:math:`-1 \le \varepsilon < 0`). With class indices
    :math:`y_n`, label smoothing :math:`s` and class weights :math:`w`:

    .. math::
        l_n = \mathrm{CE}_n + \varepsilon\, w_{y_n} (1 - \tilde p_{n}), \qquad
        \tilde p_n = \sum_c q_{n,c}\, p_{n,c} = (1 - s)\, p_{n, y_n} + s / C

    where :math:`\mathrm{CE}_n` is :func:`cross_entropy`'s per-target loss (same ``weight``,
    ``label_smoothing`` and ``ignore_index``), :math:`p_n = \mathrm{softmax}(x_n)` and
    :math:`q_n = (1 - s)\,\mathrm{onehot}(y_n) + s / C` the smoothed label, as the paper's
    code does. Ignored targets give 0; ``"mean"`` divides by :math:`\sum_n w_{y_n}` over the
    non-ignored :math:`n` (their count without ``weight``), as cross-entropy, and is 0 when every
    target is ignored. :math:`\varepsilon = 0` is cross-entropy.

    Args:
        input: logits ``(C,)``, ``(N, C)`` or ``(N, C, d1, ...)``: the class dim is 1.
        target: int64 class indices ``()``, ``(N,)`` or ``(N, d1, ...)``.
        epsilon: :math:`\varepsilon \ge -1` (the paper's best is 1 for ImageNet
            classification; -1 removes the first term of the series).
        weight: ``(C,)`` class weights; the poly term of target :math:`n` is weighted by
            :math:`w_{y_n}`, like its cross-entropy.
        ignore_index: target value that contributes nothing.
        reduction: ``"none"`` (the target's shape) | ``"mean"`` | ``"sum"``.
        label_smoothing: :math:`s \in [0, 1]`.

    Departure from the paper's code: class weights and ``ignore_index`` follow torch's
    cross-entropy (the paper's TensorFlow snippet has neither).

    References: Leng et al., "PolyLoss: A Polynomial Expansion Perspective of Classification
    Loss Functions", ICLR 2022.

    Example:
        >>> x = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
        >>> poly1_cross_entropy(x, torch.tensor([0, 2]), reduction="none")
        tensor([0.4526, 1.7653])
    """
    loss = "poly1_cross_entropy"
    reduction = _reduction.resolve(reduction)
    checks.check_floating_input(loss, input)
    class_dim = 1 if input.dim() >= 2 else 0
    checks.check_more_than_one_class(loss, input, class_dim)
    checks.check_same_device(loss, input=input, target=target, weight=weight)
    _check_poly1_options(epsilon, label_smoothing)
    weight = float32_weight(input, weight)
    check_class_indices(loss, input, target, weight, ignore_index, reduction)
    x = input.float() if input.dtype in HALF else input  # half losses compute in float32
    w = None if weight is None else weight.to(x.dtype)
    counted = checks.not_ignored(target, ignore_index)  # target's shape
    # Ignored positions are selected out before anything reads them, as in focal_loss.
    x = torch.where(counted.unsqueeze(class_dim), x, 0.0)
    t = torch.where(counted, target, 0).long()
    # losskit's own cross_entropy, not torch's: it gives a class weight that requires grad its
    # gradient (torch's nll_loss raises). The checks above already ran on these inputs.
    with no_autocast(input), checks.checks("off"):
        ce = cast(Tensor, cross_entropy(  # no return_lse: one tensor
            x, t, w, reduction="none", label_smoothing=label_smoothing))
        logp_t = F.log_softmax(x, dim=class_dim).gather(
            class_dim, t.unsqueeze(class_dim)).squeeze(class_dim)  # target's shape
    # 1 - p~ = (1 - s)(1 - p_t) + s (1 - 1/C); -expm1 keeps 1 - p_t exact when p_t is tiny.
    num_classes = _num_classes(input)
    one_minus = (1 - label_smoothing) * -torch.expm1(logp_t)
    one_minus = one_minus + label_smoothing * (1 - 1 / num_classes)
    w_t = torch.ones_like(ce) if w is None else w[t]
    out = torch.where(counted, ce + epsilon * w_t * one_minus, 0.0)
    denominator = (w_t * counted).sum()
    return _reduction.reduce(out, reduction, denominator).to(result_dtype(input))


def _check_poly1_options(epsilon: float, label_smoothing: float) -> None:
    if epsilon < -1:
        raise LossInputError(
            f"poly1_cross_entropy: epsilon={epsilon} is below -1. Poly-1 is cross-entropy with "
            f"the coefficient of the first term of its series in (1 - p_t) changed from 1 to "
            f"1 + epsilon; below -1 that coefficient is negative, and the loss is smallest at "
            f"p_t = -1/epsilon = {-1 / epsilon:.3g}, not at p_t = 1, so the model is trained "
            f"away from confident correct predictions. Fix: use epsilon >= -1 (the paper's "
            f"default is 1.0; 0 is cross-entropy)."
        )
    if not 0.0 <= label_smoothing <= 1.0:
        raise LossInputError(
            f"poly1_cross_entropy: label_smoothing={label_smoothing} must lie in [0, 1] (the "
            f"mass spread evenly over the classes). Fix: use a value such as 0.1."
        )


class CrossEntropyLoss(nn.CrossEntropyLoss):
    """Cross-entropy on logits with class indices or probabilities; see
    :func:`losskit.functional.cross_entropy`.

    Beyond torch's arguments, keyword-only ``lse_square_scale`` (z-loss) and ``softcap``.

    >>> loss = CrossEntropyLoss(ignore_index=0, label_smoothing=0.1)
    >>> loss(torch.zeros(3, 4), torch.tensor([0, 1, 2]))
    tensor(1.3863)
    """

    def __init__(
        self,
        weight: Tensor | None = None,
        size_average: bool | None = None,
        ignore_index: int = -100,
        reduce: bool | None = None,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
        *,
        lse_square_scale: float = 0.0,
        softcap: float | None = None,
    ) -> None:
        super().__init__(weight, size_average, ignore_index, reduce, reduction, label_smoothing)
        self.lse_square_scale = lse_square_scale
        self.softcap = softcap

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return cast(Tensor, cross_entropy(
            input,
            target,
            self.weight,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            label_smoothing=self.label_smoothing,
            lse_square_scale=self.lse_square_scale,
            softcap=self.softcap,
        ))


class NLLLoss(nn.NLLLoss):
    """Negative log-likelihood of class indices; see :func:`losskit.functional.nll_loss`.

    >>> NLLLoss()(torch.tensor([[0.2, 0.8]]).log(), torch.tensor([1]))
    tensor(0.2231)
    """

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return nll_loss(
            input, target, self.weight, ignore_index=self.ignore_index, reduction=self.reduction
        )


class FocalLoss(nn.Module):
    """Focal loss from logits, binary/multi-label or multi-class; see
    :func:`losskit.functional.focal_loss`. A tensor ``alpha`` is a buffer.

    >>> FocalLoss(gamma=0.0)(torch.zeros(2, 3), torch.tensor([0, 1]))
    tensor(1.0986)
    """

    def __init__(
        self,
        alpha: float | Tensor | None = None,
        gamma: float = 2.0,
        reduction: str = "mean",
        ignore_index: int = -100,
    ) -> None:
        super().__init__()
        if isinstance(alpha, Tensor):
            self.register_buffer("alpha", alpha)
        else:
            self.alpha = alpha
        self.gamma = gamma
        self.reduction = reduction
        self.ignore_index = ignore_index

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return focal_loss(
            input,
            target,
            alpha=self.alpha,
            gamma=self.gamma,
            reduction=self.reduction,
            ignore_index=self.ignore_index,
        )


class Poly1CrossEntropyLoss(nn.Module):
    """Poly-1 cross-entropy on logits and class indices; see
    :func:`losskit.functional.poly1_cross_entropy`. A ``weight`` is a buffer.

    >>> Poly1CrossEntropyLoss(epsilon=0.0)(torch.zeros(2, 3), torch.tensor([0, 1]))
    tensor(1.0986)
    """

    def __init__(
        self,
        epsilon: float = 1.0,
        weight: Tensor | None = None,
        ignore_index: int = -100,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        self.weight: Tensor | None
        self.register_buffer("weight", weight)
        self.epsilon = epsilon
        self.ignore_index = ignore_index
        self.reduction = reduction
        self.label_smoothing = label_smoothing

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return poly1_cross_entropy(
            input,
            target,
            epsilon=self.epsilon,
            weight=self.weight,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            label_smoothing=self.label_smoothing,
        )


# ----------------------------------------------------------------------------------------------
# Records


def count_targets(
    target: Tensor, *, weight: Tensor | None = None, ignore_index: int | None = -100
) -> Tensor:
    r"""The denominator of cross-entropy's / NLL's ``"mean"``, from the class-index targets alone.

    :math:`\sum_i w_{y_i}` over the :math:`i` with :math:`y_i \neq` ``ignore_index`` (their
    number when ``weight`` is None), as a 0-d float tensor on ``target``'s device. Known before
    the forward pass, so a loop can all-reduce the step's total early
    (:func:`losskit.distributed.global_denominator`).

    Example:
        >>> y = torch.tensor([0, -100, 2, 1])
        >>> count_targets(y), count_targets(y, weight=torch.tensor([1.0, 2.0, 3.0]))
        (tensor(3.), tensor(6.))
    """
    counted = checks.not_ignored(target, ignore_index)  # target's shape
    if weight is None:
        return counted.sum().to(torch.get_default_dtype())
    safe = torch.where(counted, target, torch.zeros_like(target)).long()
    return (weight[safe] * counted).sum().to(torch.promote_types(weight.dtype, torch.float32))


def _count_indices(input: Tensor, target: Tensor, weight: Tensor | None, ignore_index) -> Tensor:
    n = count_targets(target, weight=weight, ignore_index=ignore_index)
    return n.to(torch.promote_types(torch.promote_types(n.dtype, input.dtype), torch.float32))


def _count_classes(loss_fn: Any, input: Tensor, target: Tensor) -> Tensor:
    """Rows for probability targets; the weighted non-ignored targets for class indices."""
    if target.is_floating_point() and target.shape == input.shape:
        class_dim = 1 if input.dim() >= 2 else 0
        return registry.count_full(input, input.numel() // max(input.shape[class_dim], 1))
    return _count_indices(input, target, loss_fn.weight, loss_fn.ignore_index)


def _count_focal(loss_fn: nn.Module, input: Tensor, target: Tensor) -> Tensor:
    """Elements for binary targets; non-ignored targets for class indices (alpha does not count)."""
    if target.is_floating_point() and target.shape == input.shape:
        return registry.count_full(input, input.numel())
    return _count_indices(input, target, None, loss_fn.ignore_index)


registry.register(registry.LossRecord(
    function=cross_entropy, module=CrossEntropyLoss, family="classification", input="logits",
    targets=("class-indices", "class-probabilities"),
    summary="multi-class cross-entropy on logits, class indices or class probabilities",
    mean_count=_count_classes, torch_function=F.cross_entropy,
    torch_module=nn.CrossEntropyLoss, cli="cross-entropy", estimates="probabilities",
))
registry.register(registry.LossRecord(
    function=nll_loss, module=NLLLoss, family="classification", input="log-probabilities",
    targets=("class-indices",), summary="negative log-likelihood of log_softmax output",
    mean_count=_count_classes, torch_function=F.nll_loss, torch_module=nn.NLLLoss, cli="nll",
    estimates="probabilities",
))
registry.register(registry.LossRecord(
    function=focal_loss, module=FocalLoss, family="classification", input="logits",
    targets=("class-indices", "binary"),
    summary="cross-entropy scaled down on easy examples (dense detection, imbalance)",
    mean_count=_count_focal, cli="focal",
))


# ----------------------------------------------------------------------------------------------
# What `losskit explain` prints and draws (registry.Explain); the gradients are checked against
# autograd in tests/test_explain.py.

_LOGITS, _LABELS = [[2.0, 1.0, 0.1], [0.5, 2.5, 0.3]], torch.tensor([0, 2])


def _ce_steps(z, y, reduction="mean", label_smoothing=0.0):
    rows = _ex.softmax_steps(z, y, label_smoothing)
    return rows + _ex.reduce_step(rows[-1][1], reduction, "rows")


def _nll_steps(logp, y, reduction="mean"):
    rows = [("log p_y picked per row", logp.gather(1, y[:, None])[:, 0])]
    rows.append(("l = -log p_y", -rows[0][1]))
    return rows + _ex.reduce_step(rows[-1][1], reduction, "rows")


def _focal_steps(x, y, reduction="mean", gamma=2.0):
    p = torch.sigmoid(x)
    pt = p * y + (1 - p) * (1 - y)
    rows = [("p = sigmoid(x)", p), ("p_t = p y + (1 - p)(1 - y)", pt),
            (f"(1 - p_t)^gamma, gamma={gamma}", (1 - pt) ** gamma), ("-log p_t", -pt.log()),
            ("l = -(1 - p_t)^gamma log p_t", -((1 - pt) ** gamma) * pt.log())]
    return rows + _ex.reduce_step(rows[-1][1], reduction)


def _focal_gradient(x, y, gamma=2.0, **kw):
    """Binary focal loss without alpha: dl/dx = (2y - 1) p (1 - p) dl/dp_t."""
    p = torch.sigmoid(x)
    pt = p * y + (1 - p) * (1 - y)
    dl_dpt = gamma * (1 - pt) ** (gamma - 1) * pt.log() - (1 - pt) ** gamma / pt
    return (2 * y - 1) * p * (1 - p) * dl_dpt


def _nll_curve(t):
    """Rows of log-probabilities: the true class at ``t``, the rest share ``1 - e^t``."""
    rest = ((1 - t.exp()) / 2).log()[:, None]
    rows = torch.cat([t[:, None], rest, rest], dim=1)
    return nll_loss(rows, torch.zeros(t.shape[0], dtype=torch.long), reduction="none")


def _rows_curve(function):
    def loss(t, **option):
        return function(_ex.true_class_rows(t), torch.zeros(t.shape[0], dtype=torch.long),
                        reduction="none", **option)
    return loss


registry.describe(cross_entropy, registry.Explain(
    formula="l = -log softmax(z)_y = logsumexp(z) - z_y;  with label smoothing eps: "
            "(1 - eps)(lse - z_y) + eps (lse - mean_c z_c)",
    latex=r"\ell = (1-\varepsilon)\bigl(\log\textstyle\sum_c e^{z_c} - z_y\bigr) + "
          r"\varepsilon\bigl(\log\sum_c e^{z_c} - \tfrac1C\sum_c z_c\bigr)",
    derivative="dl/dz_c = softmax(z)_c - q_c,  q = (1 - eps) onehot(y) + eps / C",
    derivative_latex=r"\partial\ell/\partial z_c = \operatorname{softmax}(z)_c - q_c",
    gradient=lambda z, y, label_smoothing=0.0, **kw: _ex.softmax_gradient(z, y, label_smoothing),
    example=_ex.example(_LOGITS, _LABELS, label_smoothing=0.1), steps=_ce_steps,
    curve=registry.Curve(
        "true-class logit z_0 (3 classes, the others at 0)", _rows_curve(cross_entropy),
        tuple((f"label_smoothing={e}", {"label_smoothing": e}) for e in (0.0, 0.1, 0.3)),
        span=(-6.0, 6.0)),
    convex=True, bounded_gradient=True,
    robust="partly: a wrong label's pull per logit is capped at 1, but its loss grows linearly",
))
registry.describe(nll_loss, registry.Explain(
    formula="l = -x_y  (x: log-probabilities, log_softmax output)", latex=r"\ell = -x_y",
    derivative="dl/dx_c = -1 if c = y else 0  (the softmax part lives in log_softmax before it)",
    derivative_latex=r"\partial\ell/\partial x_c = -\mathbb 1[c = y]",
    gradient=lambda x, y, **kw: -torch.nn.functional.one_hot(y, x.shape[1]).to(x.dtype),
    example=_ex.example(torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]]).log().double(),
                        _LABELS),
    steps=_nll_steps,
    curve=registry.Curve("log-probability of the true class x_y (3 classes)", _nll_curve,
                         span=(-5.0, -0.01)),
    convex=True, bounded_gradient=True,
    robust="partly: with log_softmax before it, it is cross_entropy: a wrong label's pull is "
           "capped at 1, but its loss grows linearly",
    note="linear in its input; the curve of log_softmax + NLL is cross_entropy's",
))
registry.describe(focal_loss, registry.Explain(
    formula="l = -alpha_t (1 - p_t)^gamma log p_t;  binary: p = sigmoid(x), p_t = p y + "
            "(1 - p)(1 - y); multi-class: p_t = softmax(x)_y",
    latex=r"\ell = -\alpha_t (1 - p_t)^\gamma \log p_t",
    derivative="binary, no alpha: dl/dx = (2y - 1) p (1 - p) [gamma (1 - p_t)^(gamma - 1) "
               "log p_t - (1 - p_t)^gamma / p_t]",
    derivative_latex=r"\frac{\partial\ell}{\partial x} = (2y-1)p(1-p)\Bigl[\gamma(1-p_t)"
                     r"^{\gamma-1}\log p_t - \frac{(1-p_t)^\gamma}{p_t}\Bigr]",
    gradient=_focal_gradient,
    example=_ex.example([2.0, -1.0, 0.5], [1.0, 0.0, 1.0], gamma=2.0), steps=_focal_steps,
    curve=registry.Curve(
        "logit x (binary, target y = 1)",
        lambda t, **o: focal_loss(t, torch.ones_like(t), reduction="none", **o),
        tuple((f"gamma={g}", {"gamma": g}) for g in (0.0, 1.0, 2.0, 5.0)), span=(-6.0, 6.0)),
    convex=False, bounded_gradient=True,
    robust="partly: easy examples are scaled down, a confidently wrong one keeps its full pull",
    note="the derivative shown and checked is the binary form without alpha (alpha_t scales it); "
         "the multi-class form is the same with p_t = softmax(x)_y through the softmax",
))
registry.register(registry.LossRecord(
    function=poly1_cross_entropy, module=Poly1CrossEntropyLoss, family="classification",
    input="logits", targets=("class-indices",),
    summary="cross-entropy + epsilon * (1 - p_t): PolyLoss's first term, tunable per task",
    mean_count=_count_classes, estimates=None, aliases=("poly1", "polyloss", "poly_loss"),
    catalog=(("multi-class classification", "epsilon=1.0"),
             ("imbalanced classification", "epsilon=1.0, weight=w")),
))


def _poly1_steps(z, y, reduction="mean", epsilon=1.0, label_smoothing=0.0):
    rows = _ex.softmax_steps(z, y, label_smoothing)
    ce = rows[-1][1]
    p_t = z.softmax(dim=1).gather(1, y[:, None])[:, 0]
    s, classes = label_smoothing, z.shape[1]
    miss = (1 - s) * (1 - p_t) + s * (1 - 1 / classes)
    rows += [("p_t = softmax(z)_y", p_t), ("1 - p~ = (1 - s)(1 - p_t) + s (1 - 1/C)", miss),
             (f"l = CE + epsilon (1 - p~), epsilon={epsilon}", ce + epsilon * miss)]
    return rows + _ex.reduce_step(rows[-1][1], reduction, "rows")


def _poly1_gradient(z, y, epsilon=1.0, label_smoothing=0.0, **kw):
    """CE's softmax(z) - q, plus epsilon (1 - s) d(-p_t)/dz = -epsilon (1 - s) p_t (onehot - p)."""
    p = z.softmax(dim=1)
    onehot = torch.nn.functional.one_hot(y, z.shape[1]).to(z.dtype)
    p_t = (p * onehot).sum(dim=1, keepdim=True)
    poly = -epsilon * (1 - label_smoothing) * p_t * (onehot - p)
    return _ex.softmax_gradient(z, y, label_smoothing) + poly


registry.describe(poly1_cross_entropy, registry.Explain(
    formula="l = CE + epsilon (1 - p~),  p~ = (1 - s) softmax(z)_y + s / C  (s: label smoothing)",
    latex=r"\ell = \mathrm{CE} + \varepsilon\,(1 - \tilde p),\ \tilde p = (1-s)\,"
          r"\operatorname{softmax}(z)_y + s/C",
    derivative="dl/dz_c = softmax(z)_c - q_c - epsilon (1 - s) p_y ([c = y] - p_c)",
    derivative_latex=r"\partial\ell/\partial z_c = p_c - q_c - \varepsilon(1-s)\,p_y"
                     r"(\mathbb 1[c=y] - p_c)",
    gradient=_poly1_gradient,
    example=_ex.example(_LOGITS, _LABELS, epsilon=1.0), steps=_poly1_steps,
    curve=registry.Curve(
        "true-class logit z_0 (3 classes, the others at 0)", _rows_curve(poly1_cross_entropy),
        tuple((f"epsilon={e}", {"epsilon": e}) for e in (-1.0, 0.0, 1.0, 4.0)),
        span=(-6.0, 6.0)),
    convex=False, bounded_gradient=True,
    robust="partly: as cross_entropy; the poly term's pull epsilon p_y (1 - p_y) vanishes on a "
           "confidently wrong example, so a wrong label keeps CE's capped pull",
    note="along the true-class logit the curvature is p(1 - p)(1 - epsilon (1 - 2p)) with "
         "p = p_y: convex for -1 <= epsilon <= 1, not for epsilon > 1 (dips where p < 1/2)",
))
