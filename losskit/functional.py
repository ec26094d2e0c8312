"""Every loss as a function, with torch.nn.functional's names, signatures and numerics.

Each function runs losskit's guardrails (:mod:`losskit.checks`) and then computes the loss. Where
torch's own kernel already computes exactly the torch semantics at full speed (the pointwise
losses, BCE, NLL, KL, cross-entropy with class probabilities), losskit calls it: re-deriving the
same arithmetic could only lose accuracy or speed. Cross-entropy with class indices goes through
:mod:`losskit.kernels` (fused, never stores the softmax). Focal, dice and linear+cross-entropy are
losskit's own.

Deliberate differences from torch (DESIGN.md, "What bad input gets"): shapes that would broadcast
in a regression loss raise instead of warning; NaN/Inf inputs raise (value checks); a mean over
nothing (every target ignored) is 0 with zero gradient and a :class:`~losskit.LossWarning`, not
NaN; out-of-range class indices raise a :class:`~losskit.checks.LossIndexError` naming the value.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import Tensor

from losskit import _reduction, checks, kernels
from losskit.checks import LossInputError, LossRuntimeError

__all__ = [
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "cross_entropy",
    "dice_loss",
    "focal_loss",
    "huber_loss",
    "kl_div",
    "l1_loss",
    "linear_cross_entropy",
    "mse_loss",
    "nll_loss",
    "smooth_l1_loss",
]


# ----------------------------------------------------------------------------------------------
# Mixed precision: under torch.autocast, torch runs every loss in float32 (losses are on its
# float32 op list): class weights of any float dtype are accepted and the loss is float32. Losses
# that call torch.nn.functional get this from autocast itself; the ones computed here use these.


_HALF = (torch.float16, torch.bfloat16)
_AUTOCAST_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def _autocast(input: Tensor) -> bool:
    """Whether ``torch.autocast`` is on for ``input``'s device (and ``input`` is a float it
    would cast)."""
    return input.dtype in _AUTOCAST_DTYPES and torch.is_autocast_enabled(input.device.type)


def _result_dtype(input: Tensor) -> torch.dtype:
    """The dtype of the loss: float32 under autocast, else ``input``'s."""
    return torch.float32 if _autocast(input) else input.dtype


def _weight_dtype_ref(input: Tensor) -> Tensor:
    """What class weights must match in dtype: ``input``, or a float32 stand-in under autocast."""
    return torch.empty(0, device="meta", dtype=torch.float32) if _autocast(input) else input


def _float32_weight(input: Tensor, weight: Tensor | None) -> Tensor | None:
    """Class weights as autocast would cast them: half-precision weights become float32."""
    if weight is not None and weight.dtype in _HALF and _autocast(input):
        return weight.float()
    return weight


def _no_autocast(input: Tensor):
    """Run a kernel as written (its own float32 math) inside ``torch.autocast``."""
    if _autocast(input):
        return torch.autocast(input.device.type, enabled=False)
    return contextlib.nullcontext()


# ----------------------------------------------------------------------------------------------
# Regression


def _check_regression(loss: str, input: Tensor, target: Tensor, weight: Tensor | None) -> None:
    checks.check_floating_input(loss, input, allow_complex=loss == "l1_loss")
    checks.check_same_device(loss, input=input, target=target, weight=weight)
    checks.check_same_shape(loss, input, target)
    if checks.values_enabled(loss):
        checks.check_finite(loss, input=input, target=target)


def mse_loss(
    input: Tensor,
    target: Tensor,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    weight: Tensor | None = None,
) -> Tensor:
    r"""Mean squared error: :math:`l_i = w_i (x_i - y_i)^2`.

    Args:
        input: predictions, any shape ``(*)``.
        target: same shape as ``input`` (a shape that would broadcast raises).
        weight: optional per-element weights of ``input``'s shape; ``"mean"`` is then
            :math:`\sum_i w_i l_i / \sum_i w_i`.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``.

    Shape: output ``(*)`` for ``"none"``, else a scalar.

    Example:
        >>> mse_loss(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 4.0]))
        tensor(2.)
    """
    reduction = _reduction.resolve(reduction, size_average, reduce, warn=False)
    _check_regression("mse_loss", input, target, weight)
    return F.mse_loss(input, target, size_average, reduce, reduction=reduction, weight=weight)


def l1_loss(
    input: Tensor,
    target: Tensor,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    weight: Tensor | None = None,
) -> Tensor:
    r"""Mean absolute error: :math:`l_i = w_i |x_i - y_i|` (complex input gives a real loss).

    Shapes, ``weight`` and reductions as :func:`mse_loss`.

    Example:
        >>> l1_loss(torch.tensor([1.0, 2.0]), torch.tensor([1.5, 4.0]), reduction="sum")
        tensor(2.5000)
    """
    reduction = _reduction.resolve(reduction, size_average, reduce, warn=False)
    _check_regression("l1_loss", input, target, weight)
    return F.l1_loss(input, target, size_average, reduce, reduction=reduction, weight=weight)


def huber_loss(
    input: Tensor,
    target: Tensor,
    reduction: str = "mean",
    delta: float = 1.0,
    weight: Tensor | None = None,
) -> Tensor:
    r"""Huber loss, quadratic near zero and linear beyond ``delta``.

    .. math::
        l_i = \begin{cases} \tfrac12 d_i^2 & |d_i| < \delta \\
              \delta (|d_i| - \tfrac12 \delta) & \text{otherwise} \end{cases},
        \quad d_i = x_i - y_i

    With ``weight`` (input's shape), ``"mean"`` is :math:`\frac1n \sum_i w_i l_i` (torch divides
    by the element count here, unlike :func:`mse_loss`). ``delta`` must be positive.

    Example:
        >>> huber_loss(torch.tensor([0.0, 3.0]), torch.tensor([0.5, 0.0]), reduction="none")
        tensor([0.1250, 2.5000])
    """
    reduction = _reduction.resolve(reduction)
    _check_regression("huber_loss", input, target, weight)
    return F.huber_loss(input, target, reduction=reduction, delta=delta, weight=weight)


def smooth_l1_loss(
    input: Tensor,
    target: Tensor,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    beta: float = 1.0,
) -> Tensor:
    r"""Smooth L1 loss: :math:`l_i = 0.5 d_i^2 / \beta` if :math:`|d_i| < \beta`, else
    :math:`|d_i| - 0.5 \beta`; equals ``huber_loss(delta=beta) / beta`` and, at ``beta=0``,
    :func:`l1_loss`.

    Example:
        >>> smooth_l1_loss(torch.tensor([0.0, 3.0]), torch.tensor([0.5, 0.0]), reduction="none")
        tensor([0.1250, 2.5000])
    """
    reduction = _reduction.resolve(reduction, size_average, reduce, warn=False)
    _check_regression("smooth_l1_loss", input, target, None)
    return F.smooth_l1_loss(input, target, size_average, reduce, reduction=reduction, beta=beta)


# ----------------------------------------------------------------------------------------------
# Binary and multi-label


def _check_binary(loss: str, input: Tensor, target: Tensor, **weights: Tensor | None) -> None:
    checks.check_floating_input(loss, input)
    checks.check_same_device(loss, input=input, target=target, **weights)
    checks.check_binary_target_dtype(loss, target)
    checks.check_binary_target_shape(loss, input, target)
    for name, w in weights.items():
        checks.check_broadcast_weight(loss, name, w, input)


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
    _check_binary(loss, input, target, weight=weight)
    if checks.values_enabled(loss):
        _check_binary_values(loss, input, target)
    try:
        return F.binary_cross_entropy(input, target, weight, size_average, reduce, reduction)
    except RuntimeError as error:
        if "between 0 and 1" not in str(error):
            raise
        _check_binary_values(loss, input, target)  # raises the detailed error
        raise


def _check_binary_values(loss: str, input: Tensor, target: Tensor) -> None:
    checks.check_finite(loss, target=target)
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
    reduction = _reduction.resolve(reduction, size_average, reduce, warn=False)
    _check_binary(loss, input, target, weight=weight, pos_weight=pos_weight)
    if checks.values_enabled(loss):
        checks.check_finite(loss, input=input, target=target)
        checks.check_not_sigmoid_output(loss, input)
        checks.check_binary_target_range(loss, target)
    return F.binary_cross_entropy_with_logits(
        input, target, weight, size_average, reduce, reduction, pos_weight
    )


# ----------------------------------------------------------------------------------------------
# Multi-class


def _num_classes(input: Tensor) -> int:
    return input.shape[1] if input.dim() >= 2 else input.shape[0]


def _check_class_indices(
    loss: str,
    input: Tensor,
    target: Tensor,
    weight: Tensor | None,
    ignore_index: int | None,
    reduction: str,
    *,
    weight_name: str = "weight",
) -> None:
    """Metadata checks, then value checks; the index range check also runs outside the startup
    calls on CPU, where torch checks it too and it costs no sync."""
    checks.check_class_target(loss, input, target)
    checks.check_class_weight(
        loss, weight, _num_classes(input), _weight_dtype_ref(input), name=weight_name
    )
    values = checks.values_enabled(loss)
    if values or checks.index_range_enabled(target):
        checks.check_class_index_range(loss, target, _num_classes(input), ignore_index)
    if values:
        class_dim = 1 if input.dim() >= 2 else 0
        checks.check_finite(loss, allow_neg_inf=True, input=input)
        if loss == "nll_loss":
            checks.check_log_probabilities(loss, input, class_dim)
        else:
            checks.check_not_probabilities(loss, input, class_dim)
        if reduction == "mean":
            checks.check_not_all_ignored(loss, target, ignore_index)


def _flatten_classes(input: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """(C,) / (N, C) / (N, C, d1, ...) logits -> (M, C); targets -> (M,) int64."""
    if input.dim() == 1:
        x = input.unsqueeze(0)  # (1, C)
    elif input.dim() == 2:
        x = input  # (N, C)
    else:
        x = input.movedim(1, -1).reshape(-1, input.shape[1])  # (N*d1*..., C)
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
    reduction = _reduction.resolve(reduction, size_average, reduce)
    checks.check_floating_input(loss, input)
    checks.check_same_device(loss, input=input, target=target, weight=weight)
    if label_smoothing > 1.0:
        raise LossRuntimeError(
            f"cross_entropy: label_smoothing must be between 0.0 and 1.0. Got: {label_smoothing}."
            f" Fix: use a value such as 0.1."
        )
    label_smoothing = max(label_smoothing, 0.0)  # torch treats a negative value as 0
    checks.check_softcap(loss, softcap)
    if target.shape == input.shape:
        return _cross_entropy_probabilities(
            input, target, weight, ignore_index, reduction, label_smoothing,
            extras=lse_square_scale != 0.0 or softcap is not None or return_lse or inplace,
        )
    weight = _float32_weight(input, weight)
    _check_class_indices(loss, input, target, weight, ignore_index, reduction)
    x, t = _flatten_classes(input, target)
    out_dtype = _result_dtype(input)
    with _no_autocast(input):
        out = kernels.cross_entropy(
            x, t, weight=weight, ignore_index=ignore_index, reduction=reduction,
            label_smoothing=label_smoothing, lse_square_scale=lse_square_scale, softcap=softcap,
            return_lse=return_lse, inplace=inplace, out_dtype=out_dtype,
        )
    value, lse = out if return_lse else (out, None)
    if reduction == "none":
        value = value.reshape(target.shape)
    return (value, lse.reshape(target.shape)) if return_lse else value


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
    weight = _float32_weight(input, weight)
    checks.check_class_weight(loss, weight, _num_classes(input), _weight_dtype_ref(input))
    if checks.values_enabled(loss):
        class_dim = 1 if input.dim() >= 2 else 0
        checks.check_finite(loss, allow_neg_inf=True, input=input)
        checks.check_finite(loss, target=target)
        checks.check_soft_target(loss, target, class_dim)
        checks.check_not_probabilities(loss, input, class_dim)
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
    reduction = _reduction.resolve(reduction, size_average, reduce, warn=False)
    checks.check_floating_input(loss, input)
    checks.check_same_device(loss, input=input, target=target, weight=weight)
    weight = _float32_weight(input, weight)
    _check_class_indices(loss, input, target, weight, ignore_index, reduction)
    out = F.nll_loss(input, target, weight, size_average, ignore_index, reduce, reduction)
    if reduction == "mean":
        # torch gives NaN for a mean over nothing; the gradient is already 0 there.
        counted = checks.not_ignored(target, ignore_index)
        out = torch.where(counted.any(), out, torch.zeros_like(out))
    return out


def kl_div(
    input: Tensor,
    target: Tensor,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    log_target: bool = False,
) -> Tensor:
    r"""Kullback-Leibler divergence :math:`D(q \,\|\, p)` from log-probabilities :math:`x = \log p`.

    .. math::
        l_i = q_i (\log q_i - x_i) \quad (\text{0 where } q_i = 0), \qquad
        l_i = e^{y_i} (y_i - x_i) \text{ with } \texttt{log\_target}, \; y = \log q

    ``"batchmean"`` divides the sum by ``input.size(0)`` (the true KL per sample); ``"mean"``
    divides by the element count (torch warns about it on every call).

    Example:
        >>> p = torch.tensor([[0.5, 0.5]]); q = torch.tensor([[0.9, 0.1]])
        >>> kl_div(p.log(), q, reduction="batchmean")
        tensor(0.3681)
    """
    loss = "kl_div"
    reduction = _reduction.resolve(
        reduction, size_average, reduce, extra=("batchmean",), warn=False
    )
    checks.check_floating_input(loss, input)
    checks.check_same_device(loss, input=input, target=target)
    if checks.values_enabled(loss):
        checks.check_finite(loss, allow_neg_inf=True, input=input)
        checks.check_finite(loss, allow_neg_inf=log_target, target=target)
    return F.kl_div(input, target, size_average, reduce, reduction, log_target)


# ----------------------------------------------------------------------------------------------
# Beyond torch.nn




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
    checks.check_same_device(loss, input=input, target=target, alpha=alpha_t)
    if target.shape == input.shape and target.is_floating_point():
        return _binary_focal(input, target, alpha, gamma, reduction)
    alpha_t = _float32_weight(input, alpha_t)
    _check_class_indices(loss, input, target, alpha_t, ignore_index, reduction,
                         weight_name="alpha")
    x = input.float() if input.dtype in _HALF else input  # half losses compute in float32
    logp = F.log_softmax(x, dim=1 if input.dim() >= 2 else 0)
    counted = checks.not_ignored(target, ignore_index)
    t = torch.where(counted, target, 0).long()
    logp_t = logp.gather(1 if input.dim() >= 2 else 0, t.unsqueeze(1 if input.dim() >= 2 else 0))
    logp_t = logp_t.squeeze(1 if input.dim() >= 2 else 0)  # target's shape
    out = -_focal_factor(1 - logp_t.exp(), gamma) * logp_t
    if alpha_t is not None:
        out = out * alpha_t[t].to(out.dtype)
    elif alpha is not None:
        out = out * alpha
    out = torch.where(counted, out, torch.zeros_like(out))
    return _reduction.reduce(out, reduction, counted.sum().to(out.dtype)).to(_result_dtype(input))


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
    if checks.values_enabled(loss):
        checks.check_finite(loss, input=input, target=target)
        checks.check_not_sigmoid_output(loss, input)
        checks.check_binary_target_range(loss, target)
    if alpha is not None and not isinstance(alpha, Tensor) and not 0 <= alpha <= 1:
        raise LossInputError(
            f"focal_loss: alpha={alpha} for binary targets weighs positives by alpha and "
            f"negatives by 1 - alpha, so it must lie in [0, 1]. Fix: e.g. alpha=0.25."
        )
    dtype = _result_dtype(input)
    if input.dtype in _HALF:  # half losses compute in float32 (1e4 logits overflow the gradient)
        input, target = input.float(), target.float()
    ce = F.binary_cross_entropy_with_logits(input, target, reduction="none")  # -log p_t
    p = torch.sigmoid(input)
    one_minus_pt = p + target - 2 * p * target  # p (1 - y) + (1 - p) y
    out = ce * _focal_factor(one_minus_pt, gamma)
    if alpha is not None:
        out = out * (alpha * target + (1 - alpha) * (1 - target))
    return _reduction.reduce(out, reduction).to(dtype)


def dice_loss(
    input: Tensor,
    target: Tensor,
    *,
    smooth: float = 1.0,
    ignore_index: int | None = None,
    reduction: str = "mean",
) -> Tensor:
    r"""Soft Dice loss for segmentation, from logits, one term per class.

    .. math::
        \mathrm{dice}_c = \frac{2 \sum_i p_{ic} t_{ic} + s}{\sum_i p_{ic} + \sum_i t_{ic} + s},
        \qquad l_c = 1 - \mathrm{dice}_c

    where :math:`i` runs over the batch and every spatial position, :math:`s` is ``smooth``.
    Multi-class: ``input`` ``(N, C, d1, ...)`` logits, ``target`` ``(N, d1, ...)`` class indices,
    :math:`p = \mathrm{softmax}(x)` over dim 1 and :math:`t` the one-hot target; positions whose
    target equals ``ignore_index`` are left out. Binary / multi-label: ``target`` floating with
    ``input``'s shape, :math:`p = \sigma(x)`, dim 1 holds the labels.

    Shape: ``"none"`` gives the ``(C,)`` per-class losses; ``"mean"`` / ``"sum"`` reduce them.

    Example:
        >>> x = torch.tensor([[[4.0, -4.0]], [[-4.0, 4.0]]]).transpose(0, 1)  # (1, 2, 2)
        >>> dice_loss(x, torch.tensor([[0, 1]]), smooth=0.0)
        tensor(0.0003)
    """
    loss = "dice_loss"
    reduction = _reduction.resolve(reduction)
    checks.check_floating_input(loss, input)
    checks.check_same_device(loss, input=input, target=target)
    if input.dim() < 2:
        raise LossInputError(
            f"dice_loss: `input` has shape {tuple(input.shape)}; expected (N, C, d1, ...) logits "
            f"with the classes in dim 1. Fix: add the batch/class dims, e.g. `input[None, None]`."
        )
    # Half losses compute in float32: the per-class sums over 65,504+ pixels overflow float16.
    x = input.float() if input.dtype in _HALF else input
    if target.shape == input.shape and target.is_floating_point():
        if checks.values_enabled(loss):
            checks.check_finite(loss, input=input, target=target)
            checks.check_binary_target_range(loss, target)
        probs, onehot = torch.sigmoid(x), target.to(x.dtype)
    else:
        _check_class_indices(loss, input, target, None, ignore_index, reduction)
        counted = checks.not_ignored(target, ignore_index)  # (N, d1, ...)
        t = torch.where(counted, target, 0).long()
        probs = torch.softmax(x, dim=1)  # (N, C, d1, ...)
        onehot = F.one_hot(t, input.shape[1]).movedim(-1, 1).to(probs.dtype)  # (N, C, d1, ...)
        mask = counted.unsqueeze(1).to(probs.dtype)  # (N, 1, d1, ...)
        probs, onehot = probs * mask, onehot * mask
    dims = [0, *range(2, input.dim())]
    intersection = (probs * onehot).sum(dims)  # (C,)
    denominator = probs.sum(dims) + onehot.sum(dims) + smooth  # (C,)
    # A class with nothing predicted, nothing labelled and smooth=0 (e.g. every target ignored)
    # is 0/0: count it as a perfect match, dice 1, with zero gradient (the inner where keeps
    # the unused branch finite, so its gradient is 0, not NaN).
    empty = denominator == 0
    dice = (2 * intersection + smooth) / torch.where(empty, 1.0, denominator)
    dice = torch.where(empty, 1.0, dice)
    return _reduction.reduce(1 - dice, reduction).to(_result_dtype(input))


def linear_cross_entropy(
    hidden: Tensor,
    weight: Tensor,
    target: Tensor,
    bias: Tensor | None = None,
    *,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    class_weight: Tensor | None = None,
    lse_square_scale: float = 0.0,
    softcap: float | None = None,
    return_lse: bool = False,
    chunk_size: int | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    r"""Cross-entropy of a linear head, ``cross_entropy(hidden @ weight.T + bias, target)``,
    computed chunk by chunk so the ``[tokens, vocab]`` logits never exist whole.

    Args:
        hidden: ``(N, D)`` or ``(B, T, D)`` activations.
        weight: ``(V, D)`` head weight (as ``nn.Linear.weight``).
        target: ``(N,)`` or ``(B, T)`` class indices.
        bias: optional ``(V,)``.
        class_weight: optional ``(V,)`` class weights (``weight`` of :func:`cross_entropy`).
        chunk_size: tokens per chunk; by default chosen from the shapes (see
            :mod:`losskit.kernels.linear_cross_entropy`).
        Other arguments as :func:`cross_entropy`.

    Shape: ``"none"`` gives ``target``'s shape, else a scalar.

    Example:
        >>> h = torch.randn(6, 4); W = torch.randn(10, 4); y = torch.tensor([1, 2, 3, -100, 5, 6])
        >>> a = linear_cross_entropy(h, W, y); b = cross_entropy(h @ W.T, y)
        >>> bool(torch.allclose(a, b, atol=1e-5))
        True
    """
    loss = "linear_cross_entropy"
    reduction = _reduction.resolve(reduction)
    checks.check_floating_input(loss, hidden)
    checks.check_same_device(
        loss, hidden=hidden, weight=weight, target=target, bias=bias, class_weight=class_weight
    )
    if weight.dim() != 2 or hidden.shape[-1] != weight.shape[1]:
        raise LossInputError(
            f"linear_cross_entropy: `hidden` has shape {tuple(hidden.shape)} and `weight` "
            f"{tuple(weight.shape)}; expected weight (V, D) with D = hidden.shape[-1] = "
            f"{hidden.shape[-1]}. Fix: pass the head's `nn.Linear.weight`, shaped "
            f"(out_features, in_features)."
        )
    if bias is not None and bias.shape != (weight.shape[0],):
        raise LossInputError(
            f"linear_cross_entropy: `bias` has shape {tuple(bias.shape)}; expected "
            f"({weight.shape[0]},). Fix: pass the head's `nn.Linear.bias`."
        )
    if _autocast(hidden):  # the head's matmul in autocast's dtype, as nn.Linear would run it
        dtype = torch.get_autocast_dtype(hidden.device.type)
        hidden, weight = hidden.to(dtype), weight.to(dtype)
        bias = None if bias is None else bias.to(dtype)
        class_weight = _float32_weight(hidden, class_weight)
    elif weight.dtype != hidden.dtype or (bias is not None and bias.dtype != hidden.dtype):
        got = f"`weight` {weight.dtype}" + ("" if bias is None else f", `bias` {bias.dtype}")
        raise LossRuntimeError(
            f"linear_cross_entropy: `hidden` has dtype {hidden.dtype} but {got}; the head's "
            f"matmul needs one dtype. Fix: `hidden.to(weight.dtype)`, or compute the loss under "
            f"`torch.autocast(...)`, which casts both."
        )
    if label_smoothing > 1.0 or label_smoothing < 0.0:
        raise LossRuntimeError(
            f"linear_cross_entropy: label_smoothing must be between 0.0 and 1.0. Got: "
            f"{label_smoothing}. Fix: use a value such as 0.1."
        )
    checks.check_softcap(loss, softcap)
    checks.check_chunk_size(loss, chunk_size)
    h = hidden.reshape(-1, hidden.shape[-1])  # (N, D)
    if target.shape != hidden.shape[:-1]:
        raise LossInputError(
            f"linear_cross_entropy: `target` has shape {tuple(target.shape)}; expected "
            f"{tuple(hidden.shape[:-1])} (`hidden`'s shape without its last dim). Fix: one class "
            f"index per row of `hidden`."
        )
    # The (N, V) logits never exist: check the targets against a stand-in of their metadata.
    logits_meta = torch.empty((h.shape[0], weight.shape[0]), device="meta", dtype=hidden.dtype)
    checks.check_class_target(loss, logits_meta, target.reshape(-1))
    checks.check_class_weight(
        loss, class_weight, weight.shape[0], _weight_dtype_ref(hidden), name="class_weight",
        input_name="hidden", classes="given by the rows of `weight` (V, D)",
    )
    values = checks.values_enabled(loss)
    if values or checks.index_range_enabled(target):
        checks.check_class_index_range(loss, target, weight.shape[0], ignore_index)
    if values:
        checks.check_finite(loss, hidden=hidden, weight=weight, bias=bias)
        if reduction == "mean":
            checks.check_not_all_ignored(loss, target, ignore_index)
    out_dtype = _result_dtype(hidden)
    with _no_autocast(hidden):
        out = kernels.linear_cross_entropy(
            h, weight, target.reshape(-1).long(), bias, ignore_index=ignore_index,
            reduction=reduction, label_smoothing=label_smoothing, class_weight=class_weight,
            lse_square_scale=lse_square_scale, softcap=softcap, return_lse=return_lse,
            chunk_size=chunk_size, out_dtype=out_dtype,
        )
    value, lse = out if return_lse else (out, None)
    if reduction == "none":
        value = value.reshape(target.shape)
    return (value, lse.reshape(target.shape)) if return_lse else value
