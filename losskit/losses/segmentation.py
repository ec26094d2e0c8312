"""Segmentation losses: soft Dice."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from losskit import _reduction, checks, registry
from losskit.checks import LossInputError
from losskit.losses import _explain as _ex
from losskit.losses._common import (
    HALF,
    result_dtype,
)
from losskit.losses.classification import check_class_indices

__all__ = [
    "DiceLoss",
    "dice_loss",
]


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
    if not checks.on_one_device(input, target):
        checks.check_same_device(loss, input=input, target=target)
    if input.dim() < 2:
        raise LossInputError(
            f"dice_loss: `input` has shape {tuple(input.shape)}; expected (N, C, d1, ...) logits "
            f"with the classes in dim 1. Fix: add the batch/class dims, e.g. `input[None, None]`."
        )
    # Half losses compute in float32: the per-class sums over 65,504+ pixels overflow float16.
    x = input.float() if input.dtype in HALF else input
    if target.shape == input.shape and target.is_floating_point():
        if checks.values_enabled(loss):
            checks.check_finite(loss, input=input, target=target)
            checks.check_binary_target_range(loss, target)
        probs, onehot = torch.sigmoid(x), target.to(x.dtype)
    else:
        check_class_indices(loss, input, target, None, ignore_index, reduction)
        counted = checks.not_ignored(target, ignore_index).unsqueeze(1)  # (N, 1, d1, ...)
        t = torch.where(counted.squeeze(1), target, 0).long()
        # Ignored positions are selected out, never multiplied by 0: the softmax of a masked
        # (-inf) position is NaN, and NaN * 0 is NaN.
        probs = torch.where(counted, torch.softmax(torch.where(counted, x, 0.0), dim=1), 0.0)
        onehot = F.one_hot(t, input.shape[1]).movedim(-1, 1).to(probs.dtype)  # (N, C, d1, ...)
        onehot = torch.where(counted, onehot, 0.0)
    dims = [0, *range(2, input.dim())]
    intersection = (probs * onehot).sum(dims)  # (C,)
    denominator = probs.sum(dims) + onehot.sum(dims) + smooth  # (C,)
    # A class with nothing predicted, nothing labelled and smooth=0 (e.g. every target ignored)
    # is 0/0: count it as a perfect match, dice 1, with zero gradient (the inner where keeps
    # the unused branch finite, so its gradient is 0, not NaN).
    empty = denominator == 0
    dice = (2 * intersection + smooth) / torch.where(empty, 1.0, denominator)
    dice = torch.where(empty, 1.0, dice)
    return _reduction.reduce(1 - dice, reduction).to(result_dtype(input))


class DiceLoss(nn.Module):
    """Soft Dice loss for segmentation from logits; see :func:`losskit.functional.dice_loss`.

    >>> DiceLoss(smooth=0.0)(torch.zeros(1, 2, 4), torch.tensor([[0, 0, 1, 1]]))
    tensor(0.5000)
    """

    def __init__(
        self, smooth: float = 1.0, ignore_index: int | None = None, reduction: str = "mean"
    ) -> None:
        super().__init__()
        self.smooth = smooth
        self.ignore_index = ignore_index
        self.reduction = reduction

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return dice_loss(
            input,
            target,
            smooth=self.smooth,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
        )


# ----------------------------------------------------------------------------------------------
# Records

registry.register(registry.LossRecord(
    function=dice_loss, module=DiceLoss, family="segmentation", input="logits",
    targets=("class-indices", "binary"),
    summary="1 - soft Dice per class: overlap-based, insensitive to class imbalance",
    mean_count=None,  # a ratio of sums over the batch, not a mean of per-element terms
))


# ----------------------------------------------------------------------------------------------
# What `losskit explain` prints and draws (registry.Explain); the gradients are checked against
# autograd in tests/test_explain.py.


def _dice_parts(x, y, smooth):
    """Multi-class: softmax probabilities, one-hot target, and the per-class sums ``(C,)``."""
    p = x.softmax(dim=1)  # (N, C, d1, ...)
    t = F.one_hot(y, x.shape[1]).movedim(-1, 1).to(x.dtype)
    dims = [0, *range(2, x.dim())]
    inter, total_p, total_t = (p * t).sum(dims), p.sum(dims), t.sum(dims)
    return p, t, inter, total_p, total_t


def _dice_steps(x, y, reduction="mean", smooth=1.0):
    p, t, inter, total_p, total_t = _dice_parts(x, y, smooth)
    dice = (2 * inter + smooth) / (total_p + total_t + smooth)
    rows = [("p = softmax(x) over classes", p), ("t = one-hot target", t),
            ("I_c = sum p t", inter), ("P_c = sum p", total_p), ("T_c = sum t", total_t),
            ("dice_c = (2 I_c + s) / (P_c + T_c + s)", dice), ("l_c = 1 - dice_c", 1 - dice)]
    return rows + _ex.reduce_step(1 - dice, reduction, "classes")


def _dice_gradient(x, y, smooth=1.0, **kw):
    """Through the softmax: dl/dx = p (g - sum_c p_c g_c), g = dl/dp."""
    p, t, inter, total_p, total_t = _dice_parts(x, y, smooth)
    shape = [1, -1] + [1] * (x.dim() - 2)
    den = (total_p + total_t + smooth).view(shape)
    g = (2 * inter + smooth).view(shape) / den**2 - 2 * t / den  # d(sum_c l_c) / dp
    return p * (g - (p * g).sum(dim=1, keepdim=True))


def _dice_curve(t, smooth=1.0):
    """Binary, one image of 10 pixels: pixel 0 (target 1) moves; 1-4 are foreground at logit 2,
    5-9 background at -2. One loss call per grid point (Dice pools over the batch)."""
    fixed = torch.tensor([2.0] * 4 + [-2.0] * 5, dtype=t.dtype)
    target = torch.tensor([[[1.0] * 5 + [0.0] * 5]], dtype=t.dtype)
    return torch.stack([dice_loss(torch.cat([v[None], fixed])[None, None], target,
                                  smooth=smooth) for v in t])


registry.describe(dice_loss, registry.Explain(
    formula="l_c = 1 - (2 sum_i p_ic t_ic + s) / (sum_i p_ic + sum_i t_ic + s),  p = softmax(x) "
            "(sigmoid for binary targets), t one-hot, s = smooth; mean over classes",
    latex=r"\ell_c = 1 - \frac{2\sum_i p_{ic}t_{ic} + s}{\sum_i p_{ic} + \sum_i t_{ic} + s}",
    derivative="dl_c/dp_ic = (2 I_c + s) / D_c^2 - 2 t_ic / D_c,  D_c = P_c + T_c + s;  "
               "through the softmax: dl/dx = p (g - sum_c p_c g_c)",
    derivative_latex=r"\frac{\partial\ell_c}{\partial p_{ic}} = \frac{2I_c + s}{D_c^2} - "
                     r"\frac{2t_{ic}}{D_c}",
    gradient=_dice_gradient,
    example=_ex.example([[[2.0, -1.0, 0.5], [-1.0, 1.0, 0.0]]], torch.tensor([[0, 1, 1]]),
                        smooth=1.0),
    steps=_dice_steps,
    curve=registry.Curve("logit of one foreground pixel among 10 (binary)", _dice_curve,
                         tuple((f"smooth={s}", {"smooth": s}) for s in (0.0, 1.0, 10.0)),
                         span=(-6.0, 6.0)),
    convex=False, bounded_gradient=True,
    robust="yes: every pixel's pull is bounded, but a pixel's pull depends on the whole batch",
    note="not a per-pixel loss: the ratio pools the batch, so one pixel's gradient depends on "
         "every other (the curve holds 9 pixels fixed)",
))
