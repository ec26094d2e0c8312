"""Reference cross-entropy and linear+cross-entropy: plain autograd-traced torch ops.

This is the path every fused kernel is measured against and the fallback for whatever the fused
paths do not handle (float64, gradients w.r.t. the class weights, double backward and
``torch.autograd.gradcheck``, tiny inputs). It materialises everything. Without z-loss, softcap,
``return_lse`` or a class weight that requires grad it is torch's own ``F.cross_entropy`` (one
fused op, so small losses cost about what torch's do), with the all-ignored mean set to 0; the
extras are written out op by op.

Per row ``i`` with class weights ``w`` (all ones without ``weight``), smoothing ``eps``, z-loss
coefficient ``z`` and ``lse_i = log sum_c exp(x_ic)`` of the (softcapped) logits:

    l_i = (1 - eps) * w[y_i] * (lse_i - x_{i,y_i})
          + (eps / C) * sum_c w_c * (lse_i - x_ic)
          + z * w[y_i] * lse_i ** 2

and ``l_i = 0`` when ``y_i == ignore_index``. ``"sum"`` is ``sum_i l_i``; ``"mean"`` is
``sum_i l_i / sum_i w[y_i]`` over counted rows (torch's weighted mean; the z-loss term is reduced
with the same weights and the same denominator), and 0 when no row is counted (torch gives NaN).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["cross_entropy", "linear_cross_entropy"]


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    # torch computes half-precision losses internally in float32 (docs/torch-semantics.md).
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def cross_entropy(
    logits: Tensor,
    target: Tensor,
    *,
    weight: Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    lse_square_scale: float = 0.0,
    softcap: float | None = None,
    return_lse: bool = False,
    inplace: bool = False,
    out_dtype: torch.dtype | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """Cross-entropy of ``(N, C)`` logits and ``(N,)`` class indices, all options, plain autograd.

    Formula in the module docstring. ``inplace`` is accepted for signature compatibility and
    ignored. With ``return_lse`` also returns the ``(N,)`` float32 log-sum-exp of the (softcapped)
    logits, detached, 0 at ignored rows.

    >>> x = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    >>> cross_entropy(x, torch.tensor([0, 2]), reduction="none")
    tensor([0.2395, 1.0986])
    """
    del inplace
    out_dtype = out_dtype or logits.dtype
    x = logits.to(_compute_dtype(logits.dtype))  # (N, C)
    w = None if weight is None else weight.to(x.dtype)  # (C,)
    plain = softcap is None and lse_square_scale == 0.0 and not return_lse
    if plain and (w is None or not w.requires_grad):  # torch's op has no class-weight gradient
        loss = torch.nn.functional.cross_entropy(
            x, target, w, ignore_index=ignore_index, reduction=reduction,
            label_smoothing=label_smoothing,
        )
        if reduction == "mean":  # torch's 0 / 0 when nothing is counted; its gradient is 0 there
            loss = torch.where((target != ignore_index).any(), loss, 0.0)
        return loss.to(out_dtype)
    if softcap is not None:
        x = softcap * torch.tanh(x / softcap)
    counted = target != ignore_index  # (N,)
    t = torch.where(counted, target, torch.zeros_like(target)).long()  # (N,) safe to gather
    # Ignored rows are selected out (never multiplied by 0): a -inf or NaN there stays out of the
    # loss and of the gradient.
    x = torch.where(counted[:, None], x, 0.0)  # (N, C)
    m, shifted, log_sum = shifted_log_sum_exp(x)  # (N,) max, (N, C) x - m, (N,)
    lse = torch.where(m == float("inf"), m, m + log_sum)  # (N,) a +inf row: logsumexp = inf
    nll = log_sum - shifted.gather(1, t[:, None]).squeeze(1)  # (N,) lse - x_y, never huge - huge
    w_y = counted.to(x.dtype) if w is None else torch.where(counted, w[t], 0.0)  # (N,)
    loss = (1.0 - label_smoothing) * w_y * nll
    if label_smoothing > 0.0:
        # sum_c w_c (lse - x_c) = W log_sum - sum_c w_c (x_c - max)
        smooth = (
            x.shape[1] * log_sum - shifted.sum(dim=1) if w is None
            else w.sum() * log_sum - shifted @ w
        )
        loss = loss + (label_smoothing / x.shape[1]) * torch.where(counted, smooth, 0.0)
    if lse_square_scale != 0.0:
        loss = loss + lse_square_scale * w_y * lse.square()
    if reduction == "sum":
        loss = loss.sum()
    elif reduction == "mean":
        # No counted row: divide 0 by 1 (loss 0, gradient 0) instead of torch's 0 / 0.
        one = torch.ones((), dtype=x.dtype, device=x.device)
        loss = loss.sum() / torch.where(counted.any(), w_y.sum(), one)
    loss = loss.to(out_dtype)
    if not return_lse:
        return loss
    return loss, torch.where(counted, lse.detach().float(), 0.0)


def shifted_log_sum_exp(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The row max ``m`` (0 for an all -inf row), ``x - m`` and ``log sum_c exp(x_c - m)``.

    ``lse - x_c`` is then ``log_sum - (x - m)_c``: two numbers of the size of the loss, so its
    rounding error does not grow with the logits' magnitude (``lse`` and ``x_c`` of 1e8 would
    cancel to 0 in float32). ``m`` is a constant of the formula (detached): the result does not
    depend on it, and amax's gradient would only add terms that cancel.

    >>> m, shifted, log_sum = shifted_log_sum_exp(torch.tensor([[1e8, 1e8, 0.0]]))
    >>> shifted, log_sum
    (tensor([[ 0.0000e+00,  0.0000e+00, -1.0000e+08]]), tensor([0.6931]))
    """
    m = x.detach().amax(dim=1) if x.shape[1] else x.new_zeros(x.shape[0])  # (N,)
    # An all -inf row keeps -inf below (not -inf - -inf = NaN); +inf and NaN propagate as NaN.
    m = torch.where(m == float("-inf"), 0.0, m)
    shifted = x - m[:, None]  # (N, C)
    return m, shifted, torch.logsumexp(shifted, dim=1)


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
    out_dtype: torch.dtype | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """``cross_entropy(hidden @ weight.T + bias, target)`` with the ``(N, V)`` logits materialised.

    ``chunk_size`` is accepted for signature compatibility and ignored.

    >>> h = torch.eye(2); W = torch.tensor([[2.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    >>> linear_cross_entropy(h, W, torch.tensor([0, 2]), reduction="none")
    tensor([0.2395, 1.0986])
    """
    del chunk_size
    logits = torch.nn.functional.linear(hidden, weight, bias)  # (N, V)
    return cross_entropy(
        logits, target, weight=class_weight, ignore_index=ignore_index, reduction=reduction,
        label_smoothing=label_smoothing, lse_square_scale=lse_square_scale, softcap=softcap,
        return_lse=return_lse, out_dtype=out_dtype,
    )
