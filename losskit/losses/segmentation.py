"""Segmentation losses: soft Dice, Tversky, focal Tversky and Lovasz-softmax."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from losskit import _reduction, checks, registry
from losskit.checks import LossInputError
from losskit.checks import segmentation as seg_checks
from losskit.losses import _explain as _ex
from losskit.losses._common import (
    HALF,
    result_dtype,
)
from losskit.losses.classification import check_class_indices

__all__ = [
    "DiceLoss",
    "FocalTverskyLoss",
    "LovaszSoftmaxLoss",
    "TverskyLoss",
    "dice_loss",
    "focal_tversky_loss",
    "lovasz_softmax",
    "tversky_loss",
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
    probs, onehot = _probs_and_labels(loss, input, target, ignore_index, reduction)
    dims = [0, *range(2, input.dim())]
    intersection = (probs * onehot).sum(dims)  # (C,)
    denominator = probs.sum(dims) + onehot.sum(dims) + smooth  # (C,)
    dice = _overlap_ratio(2 * intersection + smooth, denominator)
    return _reduction.reduce(1 - dice, reduction).to(result_dtype(input))


def _overlap_ratio(numerator: Tensor, denominator: Tensor) -> Tensor:
    """``numerator / denominator`` per class, 1 where the denominator is 0.

    A class with nothing predicted, nothing labelled and smooth=0 (e.g. every target ignored)
    is 0/0: count it as a perfect match, ratio 1, with zero gradient (the inner where keeps the
    unused branch finite, so its gradient is 0, not NaN)."""
    empty = denominator == 0
    return torch.where(empty, 1.0, numerator / torch.where(empty, 1.0, denominator))


def tversky_loss(
    input: Tensor,
    target: Tensor,
    *,
    alpha: float = 0.3,
    beta: float = 0.7,
    smooth: float = 1.0,
    ignore_index: int | None = None,
    reduction: str = "mean",
) -> Tensor:
    r"""Tversky loss (Salehi et al., 2017): Dice with separate weights on the two errors.

    .. math::
        \mathrm{TI}_c = \frac{\mathrm{TP}_c + s}
                              {\mathrm{TP}_c + \alpha\,\mathrm{FP}_c + \beta\,\mathrm{FN}_c + s},
        \qquad l_c = 1 - \mathrm{TI}_c

    with the soft counts :math:`\mathrm{TP}_c = \sum_i p_{ic} t_{ic}`,
    :math:`\mathrm{FP}_c = \sum_i p_{ic} (1 - t_{ic})`,
    :math:`\mathrm{FN}_c = \sum_i (1 - p_{ic}) t_{ic}` over the batch and every spatial position
    :math:`i`. ``alpha`` weighs false positives and ``beta`` false negatives (Salehi et al.'s
    names; Abraham & Khan swap them): ``beta > alpha`` penalises missed foreground more, the
    usual choice for small lesions. ``alpha = beta = 0.5`` is the soft Dice loss with ``smooth``
    halved: ``tversky_loss(x, y, alpha=0.5, beta=0.5, smooth=s) == dice_loss(x, y, smooth=2 * s)``.
    ``alpha + beta`` need not be 1.

    Inputs as :func:`dice_loss`: ``(N, C, d1, ...)`` logits with ``(N, d1, ...)`` class indices
    (softmax over dim 1, ``ignore_index`` positions left out), or float 0./1. labels of
    ``input``'s shape (sigmoid per element, dim 1 holds the labels).

    Shape: ``"none"`` gives the ``(C,)`` per-class losses; ``"mean"`` / ``"sum"`` reduce them.
    A class with a zero denominator (nothing predicted or labelled, ``smooth=0``) counts as a
    perfect match.

    References: Salehi et al., "Tversky loss function for image segmentation using 3D fully
    convolutional deep networks", MLMI 2017.

    Example:
        >>> x = torch.tensor([[[4.0, -4.0, 4.0]], [[-4.0, 4.0, -4.0]]]).transpose(0, 1)
        >>> y = torch.tensor([[0, 1, 1]])  # (1, 3): pixel 2 is labelled 1, predicted 0
        >>> tversky_loss(x, y, smooth=0.0, reduction="none")
        tensor([0.2310, 0.4118])
    """
    loss = "tversky_loss"
    reduction = _reduction.resolve(reduction)
    seg_checks.check_tversky_weights(loss, alpha, beta)
    index = _tversky_index(loss, input, target, alpha, beta, smooth, ignore_index, reduction)
    return _reduction.reduce(1 - index, reduction).to(result_dtype(input))


def _tversky_index(loss, input, target, alpha, beta, smooth, ignore_index, reduction) -> Tensor:
    """The ``(C,)`` Tversky indices, after the checks."""
    probs, onehot = _probs_and_labels(loss, input, target, ignore_index, reduction,
                                      logits_check=seg_checks.check_not_softmax_before)
    dims = [0, *range(2, input.dim())]
    tp = (probs * onehot).sum(dims)  # (C,)
    fp = probs.sum(dims) - tp  # (C,): sum p (1 - t)
    fn = onehot.sum(dims) - tp  # (C,): sum (1 - p) t
    return _overlap_ratio(tp + smooth, tp + alpha * fp + beta * fn + smooth)


def focal_tversky_loss(
    input: Tensor,
    target: Tensor,
    *,
    alpha: float = 0.3,
    beta: float = 0.7,
    gamma: float = 4 / 3,
    smooth: float = 1.0,
    ignore_index: int | None = None,
    reduction: str = "mean",
) -> Tensor:
    r"""Focal Tversky loss (Abraham & Khan, 2019): the Tversky loss per class raised to
    :math:`1/\gamma`.

    .. math::
        l_c = (1 - \mathrm{TI}_c)^{1/\gamma}

    with :math:`\mathrm{TI}_c` as in :func:`tversky_loss` (same ``alpha`` on false positives,
    ``beta`` on false negatives, ``smooth``, inputs and ``ignore_index``). The exponent follows
    the paper: :math:`1/\gamma` with :math:`\gamma \in [1, 3]` (4/3 in its experiments), an
    exponent below 1 that raises the loss and the gradient of classes that are nearly right
    (small structures). Some code writes :math:`(1 - \mathrm{TI})^{\gamma}` with
    :math:`\gamma < 1` instead (e.g. 0.75 in Yeung et al.'s unified focal loss): pass the
    reciprocal here (losskit warns for ``gamma < 1``). ``gamma = 1`` is :func:`tversky_loss`.
    Where :math:`1 - \mathrm{TI}_c` is 0 the gradient is 0 (the limit), not inf.

    Shape: ``"none"`` gives the ``(C,)`` per-class losses; ``"mean"`` / ``"sum"`` reduce them.

    Departure from the paper: Abraham & Khan name the false-negative weight alpha (0.7) and the
    false-positive weight beta (0.3); losskit keeps Salehi et al.'s names, so its defaults
    ``alpha=0.3, beta=0.7`` are the same weighting.

    References: Abraham & Khan, "A Novel Focal Tversky loss function with improved Attention
    U-Net for lesion segmentation", ISBI 2019.

    Example:
        >>> x = torch.tensor([[[4.0, -4.0, 4.0]], [[-4.0, 4.0, -4.0]]]).transpose(0, 1)
        >>> focal_tversky_loss(x, torch.tensor([[0, 1, 1]]), smooth=0.0, reduction="none")
        tensor([0.3332, 0.5141])
    """
    loss = "focal_tversky_loss"
    reduction = _reduction.resolve(reduction)
    seg_checks.check_tversky_weights(loss, alpha, beta)
    seg_checks.check_focal_tversky_gamma(loss, gamma)
    index = _tversky_index(loss, input, target, alpha, beta, smooth, ignore_index, reduction)
    base = 1 - index  # (C,)
    # At TI = 1 the derivative of base ** (1 / gamma) is inf for gamma > 1, and inf times the
    # zero inner derivative is NaN: select 0 there, from a branch kept finite by the clamp.
    tiny = torch.finfo(base.dtype).tiny
    out = torch.where(base > 0, base.clamp_min(tiny) ** (1 / gamma), 0.0)
    return _reduction.reduce(out, reduction).to(result_dtype(input))


def lovasz_softmax(
    input: Tensor,
    target: Tensor,
    *,
    per_image: bool = False,
    classes: str = "present",
    ignore_index: int | None = None,
    reduction: str = "mean",
) -> Tensor:
    r"""Lovasz-softmax loss (Berman et al., 2018): a convex surrogate of the Jaccard loss (1 - IoU)
    per class, from logits.

    For class :math:`c`, with :math:`p = \mathrm{softmax}(x)` over dim 1 and the pixel errors
    :math:`e_i = |[y_i = c] - p_{ic}|` over the counted pixels, sorted so that
    :math:`e_{\pi_1} \ge e_{\pi_2} \ge \dots`:

    .. math::
        l_c = \sum_k e_{\pi_k}\, g_k, \qquad
        g_k = J(\{\pi_1, \dots, \pi_k\}) - J(\{\pi_1, \dots, \pi_{k-1}\}), \qquad
        J(A) = 1 - \frac{|F_c \setminus A|}{|F_c \cup A|}

    where :math:`F_c` is the set of pixels labelled :math:`c`: :math:`l_c` is the Lovasz
    extension of the Jaccard loss evaluated at the error vector (it equals 1 - IoU when the
    errors are 0/1). The loss averages :math:`l_c` over the classes present in the target
    (``classes="present"``) or all classes (``"all"``). With ``per_image=True`` this is done per
    image and the images are averaged (an image without a counted pixel gives 0), as in the
    paper's per-image variant; otherwise the whole batch is one set of pixels.

    Args:
        input: ``(N, C, d1, ...)`` logits (no softmax: the reference code of the paper takes
            probabilities, losskit takes logits).
        target: ``(N, d1, ...)`` int64 class indices; ``ignore_index`` positions are left out.
        per_image: one loss per image (``(N,)`` for ``"none"``) instead of one over the batch.
        classes: ``"present"`` | ``"all"``.
        reduction: per batch, ``"none"`` gives the ``(C,)`` per-class losses (0 for a class not
            counted), ``"mean"`` their mean over the counted classes, ``"sum"`` their sum; per
            image, ``"none"`` gives the ``(N,)`` per-image losses, ``"mean"`` / ``"sum"`` reduce
            them.

    The loss is piecewise linear in the errors: its gradient is exact where no two errors of a
    class tie (finite differences across a tie see a kink); at a tie the order of the stable sort
    picks one of the one-sided gradients.

    References: Berman, Rannen Triki & Blaschko, "The Lovasz-Softmax loss: A tractable surrogate
    for the optimization of the intersection-over-union measure in neural networks", CVPR 2018.

    Example:
        >>> x = torch.tensor([[[2.0, 0.0, 0.0]], [[0.0, 1.0, 3.0]]]).transpose(0, 1)  # (1, 2, 3)
        >>> lovasz_softmax(x, torch.tensor([[0, 1, 1]]), reduction="none")
        tensor([0.1941, 0.1701])
    """
    loss = "lovasz_softmax"
    reduction = _reduction.resolve(reduction)
    seg_checks.check_lovasz_classes(loss, classes)
    if target.is_floating_point():
        checks.check_floating_input(loss, input)
        raise LossInputError(
            f"{loss}: `target` is {target.dtype} (shape {tuple(target.shape)}); Lovasz-softmax "
            f"takes int64 class indices of shape (N, d1, ...). Fix: `target.argmax(1)` for "
            f"one-hot or probability targets, `target.long()` for float labels."
        )
    probs, onehot = _probs_and_labels(loss, input, target, ignore_index, reduction,
                                      logits_check=seg_checks.check_not_softmax_before)
    n, c, pixels = input.shape[0], input.shape[1], math.prod(input.shape[2:])
    lead, per_set = (n, pixels) if per_image else (1, n * pixels)
    # Pixels in dim 1, classes last: (B, P, C) with B = N per image, 1 for the whole batch.
    p = probs.reshape(n, c, pixels).movedim(1, -1).reshape(lead, per_set, c)
    t = onehot.reshape(n, c, pixels).movedim(1, -1).reshape(lead, per_set, c)
    counted = checks.not_ignored(target, ignore_index).reshape(lead, per_set, 1)  # (B, P, 1)
    errors = t * (1 - p) + (1 - t) * p  # |t - p| for 0/1 t; 0 at ignored pixels (p = t = 0)
    per_class = _lovasz_extension(errors, t, counted)  # (B, C)
    present = t.sum(1) > 0 if classes == "present" else torch.ones_like(per_class, dtype=torch.bool)
    per_class = torch.where(present, per_class, 0.0)
    if not per_image:
        denominator = present.sum().to(per_class.dtype)
        return _reduction.reduce(per_class[0], reduction, denominator).to(result_dtype(input))
    per_img = per_class.sum(1) / present.sum(1).clamp_min(1)  # (N,): an empty image gives 0
    return _reduction.reduce(per_img, reduction).to(result_dtype(input))


def _lovasz_extension(errors: Tensor, fg: Tensor, counted: Tensor) -> Tensor:
    """``(B, C)`` Lovasz extensions of the Jaccard loss at ``errors`` ``(B, P, C)``.

    1. Sort each class's errors in decreasing order (stable); uncounted pixels go last.
    2. The Jaccard loss of the first k sorted pixels, from the running counts of labelled
       pixels: ``J_k = 1 - (|F| - fg_k) / (|F| + bg_k)``, fg_k / bg_k the labelled / unlabelled
       pixels among the first k (Berman et al., Algorithm 1). The union is never 0 at a counted
       pixel: it holds that pixel or a labelled one.
    3. The loss is the errors dotted with the increments ``J_k - J_{k-1}``; uncounted pixels
       have error 0 and add nothing.
    """
    key = torch.where(counted, errors.detach(), -1.0)  # (B, P, C)
    order = key.argsort(dim=1, descending=True, stable=True)
    e = errors.gather(1, order)  # (B, P, C), sorted
    t = fg.gather(1, order)
    total = t.sum(1, keepdim=True)  # (B, 1, C): |F|
    intersection = total - t.cumsum(1)
    union = total + (1 - t).cumsum(1)
    jaccard = 1 - intersection / union.clamp_min(1)
    increments = torch.cat([jaccard[:, :1], jaccard[:, 1:] - jaccard[:, :-1]], dim=1)
    return (e * increments).sum(1)


def _probs_and_labels(
    loss: str,
    input: Tensor,
    target: Tensor,
    ignore_index: int | None,
    reduction: str,
    *,
    logits_check=None,
) -> tuple[Tensor, Tensor]:
    """The checks, then ``(p, t)`` of ``input``'s shape (float32 for half input): softmax
    probabilities and the one-hot target for class indices (zero at ignored positions), or
    sigmoid probabilities and the float labels for a binary / multi-label target.

    ``logits_check(loss, input, class_dim)`` replaces the cross-entropy family's softmax check
    with a message written for the caller's loss (dice keeps the cross-entropy checks)."""
    checks.check_floating_input(loss, input)
    if not checks.on_one_device(input, target):
        checks.check_same_device(loss, input=input, target=target)
    if input.dim() < 2:
        raise LossInputError(
            f"{loss}: `input` has shape {tuple(input.shape)}; expected (N, C, d1, ...) logits "
            f"with the classes in dim 1. Fix: add the batch/class dims, e.g. `input[None, None]`."
        )
    # Half losses compute in float32: the per-class sums over 65,504+ pixels overflow float16.
    x = input.float() if input.dtype in HALF else input
    if target.shape == input.shape and target.is_floating_point():
        if checks.values_enabled(loss, input, target):
            checks.check_finite(loss, input=input, target=target)
            checks.check_binary_target_range(loss, target)
            if logits_check is not None:
                checks.check_not_sigmoid_output(loss, input)
        return torch.sigmoid(x), target.to(x.dtype)
    if target.shape != input.shape:  # same shape: the class-target check explains it
        seg_checks.check_more_than_one_class(loss, input, target)
    if logits_check is None:
        check_class_indices(loss, input, target, None, ignore_index, reduction)
    else:
        _check_class_indices(loss, input, target, ignore_index, reduction, logits_check)
    counted = checks.not_ignored(target, ignore_index).unsqueeze(1)  # (N, 1, d1, ...)
    t = torch.where(counted.squeeze(1), target, 0).long()
    # Ignored positions are selected out, never multiplied by 0: the softmax of a masked
    # (-inf) position is NaN, and NaN * 0 is NaN.
    probs = torch.where(counted, torch.softmax(torch.where(counted, x, 0.0), dim=1), 0.0)
    onehot = F.one_hot(t, input.shape[1]).movedim(-1, 1).to(probs.dtype)  # (N, C, d1, ...)
    return probs, torch.where(counted, onehot, 0.0)


def _check_class_indices(loss, input, target, ignore_index, reduction, logits_check) -> None:
    """Class-index checks of the cross-entropy family with the caller's own softmax check."""
    checks.check_class_target(loss, input, target)
    values = checks.values_enabled(loss, input, target)
    if values or checks.index_range_enabled(target):
        checks.check_class_index_range(loss, target, input.shape[1], ignore_index)
    if values:
        checks.check_finite(loss, allow_neg_inf=True, input=input)
        logits_check(loss, input, 1)
        if reduction == "mean":
            checks.check_not_all_ignored(loss, target, ignore_index)


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


class TverskyLoss(nn.Module):
    """Tversky loss from logits; see :func:`losskit.functional.tversky_loss`.

    >>> loss = TverskyLoss(alpha=0.5, beta=0.5, smooth=0.0)
    >>> loss(torch.zeros(1, 2, 4), torch.tensor([[0, 0, 1, 1]]))
    tensor(0.5000)
    """

    def __init__(
        self,
        alpha: float = 0.3,
        beta: float = 0.7,
        smooth: float = 1.0,
        ignore_index: int | None = None,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        self.alpha, self.beta, self.smooth = alpha, beta, smooth
        self.ignore_index = ignore_index
        self.reduction = reduction

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return tversky_loss(
            input, target, alpha=self.alpha, beta=self.beta, smooth=self.smooth,
            ignore_index=self.ignore_index, reduction=self.reduction,
        )


class FocalTverskyLoss(nn.Module):
    """Focal Tversky loss from logits; see :func:`losskit.functional.focal_tversky_loss`.

    >>> loss = FocalTverskyLoss(gamma=1.0, smooth=0.0)
    >>> loss(torch.zeros(1, 2, 4), torch.tensor([[0, 0, 1, 1]]))
    tensor(0.5000)
    """

    def __init__(
        self,
        alpha: float = 0.3,
        beta: float = 0.7,
        gamma: float = 4 / 3,
        smooth: float = 1.0,
        ignore_index: int | None = None,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        self.alpha, self.beta, self.gamma, self.smooth = alpha, beta, gamma, smooth
        self.ignore_index = ignore_index
        self.reduction = reduction

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return focal_tversky_loss(
            input, target, alpha=self.alpha, beta=self.beta, gamma=self.gamma,
            smooth=self.smooth, ignore_index=self.ignore_index, reduction=self.reduction,
        )


class LovaszSoftmaxLoss(nn.Module):
    """Lovasz-softmax loss from logits; see :func:`losskit.functional.lovasz_softmax`.

    >>> LovaszSoftmaxLoss()(torch.zeros(1, 2, 4), torch.tensor([[0, 0, 1, 1]]))
    tensor(0.5000)
    """

    def __init__(
        self,
        per_image: bool = False,
        classes: str = "present",
        ignore_index: int | None = None,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        self.per_image = per_image
        self.classes = classes
        self.ignore_index = ignore_index
        self.reduction = reduction

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return lovasz_softmax(
            input, target, per_image=self.per_image, classes=self.classes,
            ignore_index=self.ignore_index, reduction=self.reduction,
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
registry.register(registry.LossRecord(
    function=tversky_loss, module=TverskyLoss, family="segmentation", input="logits",
    targets=("class-indices", "binary"),
    summary="1 - Tversky index per class: Dice with separate false-positive / negative weights",
    mean_count=None,  # a ratio of sums over the batch, as Dice
    aliases=("tversky",),
    catalog=(("semantic segmentation", "alpha=0.3, beta=0.7, ignore_index=255"),),
))
registry.register(registry.LossRecord(
    function=focal_tversky_loss, module=FocalTverskyLoss, family="segmentation", input="logits",
    targets=("class-indices", "binary"),
    summary="(1 - Tversky index) ** (1 / gamma) per class: small structures, imbalance",
    mean_count=None,  # a ratio of sums over the batch, as Dice
    aliases=("focal_tversky", "ftl"),
    catalog=(("semantic segmentation", "gamma=4/3, ignore_index=255"),),
))
registry.register(registry.LossRecord(
    function=lovasz_softmax, module=LovaszSoftmaxLoss, family="segmentation", input="logits",
    targets=("class-indices",),
    summary="convex surrogate of 1 - IoU per class (Lovasz extension of the Jaccard loss)",
    mean_count=None,  # a mean over the present classes of sorted, weighted errors
    aliases=("lovasz", "lovasz_softmax_loss"),
    catalog=(("semantic segmentation", "ignore_index=255"),),
))


# Tversky, focal Tversky and Lovasz-softmax: written from the papers' formulas, not the code above.


def _soft_parts(x, y):
    """``(p, t)``: softmax and one-hot for class indices, sigmoid and the labels for float
    targets of ``x``'s shape; and the chain back to the logits, ``dl/dx`` from ``dl/dp``."""
    if y.is_floating_point() and y.shape == x.shape:
        p = torch.sigmoid(x)
        return p, y, lambda g: g * p * (1 - p)
    p = x.softmax(dim=1)
    t = F.one_hot(y, x.shape[1]).movedim(-1, 1).to(x.dtype)
    return p, t, lambda g: p * (g - (p * g).sum(dim=1, keepdim=True))


def _tversky_parts(x, y, alpha, beta, smooth):
    p, t, chain = _soft_parts(x, y)
    dims = [0, *range(2, x.dim())]
    tp, fp, fn = (p * t).sum(dims), (p * (1 - t)).sum(dims), ((1 - p) * t).sum(dims)
    return p, t, chain, tp, fp, fn, (tp + smooth) / (tp + alpha * fp + beta * fn + smooth)


def _tversky_index_gradient(x, y, alpha, beta, smooth):
    """dTI_c/dp_ic = [t D - N ((1 - alpha - beta) t + alpha)] / D^2, N = TP + s, D the
    denominator (TP + alpha FP + beta FN + s = (1 - alpha - beta) TP + alpha P + beta T + s)."""
    _p, t, chain, tp, fp, fn, ti = _tversky_parts(x, y, alpha, beta, smooth)
    shape = [1, -1] + [1] * (x.dim() - 2)
    num = (tp + smooth).view(shape)
    den = (tp + alpha * fp + beta * fn + smooth).view(shape)
    return chain, ti, (t * den - num * ((1 - alpha - beta) * t + alpha)) / den**2


def _tversky_gradient(x, y, alpha=0.3, beta=0.7, smooth=1.0, **kw):
    chain, _, d_ti = _tversky_index_gradient(x, y, alpha, beta, smooth)
    return chain(-d_ti)


def _focal_tversky_gradient(x, y, alpha=0.3, beta=0.7, gamma=4 / 3, smooth=1.0, **kw):
    """(1 - TI)^(1/gamma): times (1/gamma)(1 - TI)^(1/gamma - 1)."""
    chain, ti, d_ti = _tversky_index_gradient(x, y, alpha, beta, smooth)
    outer = (1 - ti) ** (1 / gamma - 1) / gamma
    return chain(-outer.view([1, -1] + [1] * (x.dim() - 2)) * d_ti)


def _tversky_rows(x, y, alpha, beta, smooth):
    p, t, _, tp, fp, fn, ti = _tversky_parts(x, y, alpha, beta, smooth)
    return [("p = softmax(x) over classes", p), ("t = one-hot target", t),
            ("TP_c = sum p t", tp), ("FP_c = sum p (1 - t)", fp), ("FN_c = sum (1 - p) t", fn),
            (f"TI_c = (TP + s) / (TP + alpha FP + beta FN + s), alpha={alpha}, beta={beta}, "
             f"s={smooth}", ti)], ti


def _tversky_steps(x, y, reduction="mean", alpha=0.3, beta=0.7, smooth=1.0):
    rows, ti = _tversky_rows(x, y, alpha, beta, smooth)
    rows.append(("l_c = 1 - TI_c", 1 - ti))
    return rows + _ex.reduce_step(1 - ti, reduction, "classes")


def _focal_tversky_steps(x, y, reduction="mean", alpha=0.3, beta=0.7, gamma=4 / 3, smooth=1.0):
    rows, ti = _tversky_rows(x, y, alpha, beta, smooth)
    rows.append((f"l_c = (1 - TI_c)^(1/gamma), gamma={gamma:.4g}", (1 - ti) ** (1 / gamma)))
    return rows + _ex.reduce_step(rows[-1][1], reduction, "classes")


def _one_pixel_probability_curve(function):
    """Binary, one image of 10 pixels: pixel 0 (target 1) at probability ``t``; 1-4 are
    foreground at logit 2, 5-9 background at -2. One loss call per grid point."""

    def loss(t, **option):
        fixed = torch.tensor([2.0] * 4 + [-2.0] * 5, dtype=t.dtype)
        target = torch.tensor([[[1.0] * 5 + [0.0] * 5]], dtype=t.dtype)
        logit = t.log() - (-t).log1p()  # sigmoid(logit) = t
        return torch.stack([function(torch.cat([v[None], fixed])[None, None], target, **option)
                            for v in logit])

    return loss


def _lovasz_increments(e, t):
    """One class: the errors ``e`` sorted decreasing, and the Jaccard loss's increments
    g_k = J_k - J_(k-1), J_k = 1 - (|F| - fg_k) / (|F| + bg_k) over the first k sorted pixels."""
    order = torch.argsort(e, descending=True, stable=True)
    fg = t[order].cumsum(0)
    bg = (1 - t[order]).cumsum(0)
    jaccard = 1 - (t.sum() - fg) / (t.sum() + bg)
    return order, torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])


def _lovasz_parts(x, y):
    """Pixels as rows: ``p``, ``t`` ``(pixels, C)``, the errors, and per class the increments
    in pixel order ``(pixels, C)``; the present classes ``(C,)``."""
    classes = x.shape[1]
    p = x.softmax(dim=1).movedim(1, -1).reshape(-1, classes)
    t = F.one_hot(y.reshape(-1), classes).to(x.dtype)
    e = (t - p).abs()
    g = torch.zeros_like(e)
    for c in range(classes):
        order, inc = _lovasz_increments(e[:, c], t[:, c])
        g[order, c] = inc
    return p, t, e, g, t.sum(0) > 0


def _lovasz_gradient(x, y, **kw):
    """dl_c/de_i = g at pixel i's rank; de_ic/dp_ic = 1 - 2 t_ic; then the softmax."""
    p, t, _e, g, present = _lovasz_parts(x, y)
    d_p = g * (1 - 2 * t) * present  # (pixels, C)
    d_x = p * (d_p - (p * d_p).sum(1, keepdim=True))
    shape = (x.shape[0], *x.shape[2:], x.shape[1])
    return d_x.reshape(shape).movedim(-1, 1)


def _lovasz_steps(x, y, reduction="mean"):
    p, _t, e, g, present = _lovasz_parts(x, y)
    per_class = (e * g).sum(0)
    rows = [("p = softmax(x), pixels x classes", p), ("e_ic = |[y_i = c] - p_ic|", e),
            ("g_ic: Jaccard increment at pixel i's rank in class c's sorted errors", g),
            ("l_c = sum_i e_ic g_ic", per_class), ("present classes", present)]
    kept = per_class[present]
    if reduction == "mean":
        return [*rows, (f"mean over the {int(present.sum())} present classes", kept.mean())]
    return rows + _ex.reduce_step(torch.where(present, per_class, 0.0), reduction, "classes")


def _lovasz_curve(t, label=1):
    """Two classes, 6 pixels: pixel 0 (labelled ``label``) has logits [0, t]; the others are
    fixed (two labelled 1 at [0, 1.5], [0, 2.5]; three labelled 0 at [0, -1], [0, -2], [0, -3])."""
    fixed = torch.tensor([1.5, 2.5, -1.0, -2.0, -3.0], dtype=t.dtype)
    target = torch.tensor([[label, 1, 1, 0, 0, 0]])
    out = []
    for v in t:
        ones = torch.cat([v[None], fixed])  # (6,): class 1's logits
        out.append(lovasz_softmax(torch.stack([torch.zeros_like(ones), ones])[None], target))
    return torch.stack(out)


_SEG_LOGITS = [[[2.0, -1.0, 0.5, 0.2], [-1.0, 1.0, 0.0, 1.4], [0.3, -0.4, 1.1, -0.6]]]
_SEG_LABELS = torch.tensor([[0, 1, 2, 1]])
_TI_DERIVATIVE = ("dTI_c/dp_ic = [t_ic D_c - N_c ((1 - alpha - beta) t_ic + alpha)] / D_c^2,  "
                  "N_c = TP_c + s, D_c = TP_c + alpha FP_c + beta FN_c + s;  through the softmax: "
                  "dl/dx = p (g - sum_c p_c g_c), g = dl/dp")

registry.describe(tversky_loss, registry.Explain(
    formula="l_c = 1 - (TP_c + s) / (TP_c + alpha FP_c + beta FN_c + s),  TP = sum p t, FP = "
            "sum p (1 - t), FN = sum (1 - p) t,  p = softmax(x) (sigmoid for float targets); "
            "mean over classes",
    latex=r"\ell_c = 1 - \frac{TP_c + s}{TP_c + \alpha FP_c + \beta FN_c + s}",
    derivative="dl_c/dp_ic = -dTI_c/dp_ic,  " + _TI_DERIVATIVE,
    derivative_latex=r"\frac{\partial TI_c}{\partial p_{ic}} = \frac{t_{ic}D_c - N_c"
                     r"\bigl((1-\alpha-\beta)t_{ic} + \alpha\bigr)}{D_c^2}",
    gradient=_tversky_gradient,
    example=_ex.example(_SEG_LOGITS, _SEG_LABELS, alpha=0.3, beta=0.7, smooth=1.0),
    steps=_tversky_steps,
    curve=registry.Curve(
        "probability of one foreground pixel among 10 (binary)",
        _one_pixel_probability_curve(tversky_loss),
        tuple((f"alpha={a}, beta={b}", {"alpha": a, "beta": b})
              for a, b in ((0.5, 0.5), (0.3, 0.7), (0.7, 0.3))), span=(0.01, 0.99)),
    convex=False, bounded_gradient=True,
    robust="yes: every pixel's pull is bounded, but it depends on the whole batch",
    note="not a per-pixel loss: the counts pool the batch (the curve holds 9 pixels fixed). "
         "|dTI_c/dp_ic| <= (1 + max(alpha, |1 - beta|)) / D_c and D_c >= smooth, so the pull is "
         "bounded for smooth > 0 and grows for a tiny class at smooth = 0",
))
registry.describe(focal_tversky_loss, registry.Explain(
    formula="l_c = (1 - TI_c)^(1/gamma),  TI_c as tversky_loss's; mean over classes",
    latex=r"\ell_c = \Bigl(1 - \frac{TP_c + s}{TP_c + \alpha FP_c + \beta FN_c + s}"
          r"\Bigr)^{1/\gamma}",
    derivative="dl_c/dp_ic = -(1/gamma) (1 - TI_c)^(1/gamma - 1) dTI_c/dp_ic,  " + _TI_DERIVATIVE,
    derivative_latex=r"\frac{\partial\ell_c}{\partial p_{ic}} = -\frac{1}{\gamma}"
                     r"(1 - TI_c)^{1/\gamma - 1}\frac{\partial TI_c}{\partial p_{ic}}",
    gradient=_focal_tversky_gradient,
    example=_ex.example(_SEG_LOGITS, _SEG_LABELS, gamma=4 / 3, smooth=1.0),
    steps=_focal_tversky_steps,
    curve=registry.Curve(
        "probability of one foreground pixel among 10 (binary)",
        _one_pixel_probability_curve(focal_tversky_loss),
        tuple((f"gamma={g:.3g}", {"gamma": g}) for g in (1.0, 4 / 3, 2.0, 3.0)),
        span=(0.01, 0.99)),
    convex=False, bounded_gradient=False,
    robust="partly: a class that is nearly right gets a larger pull than Tversky gives it "
           "(the point), and that pull grows without bound as 1 - TI -> 0",
    note="(1 - TI)^(1/gamma - 1) is unbounded as TI -> 1 for gamma > 1 (losskit gives 0 at TI "
         "= 1 exactly, the limit of the loss, not of the gradient)",
))
registry.describe(lovasz_softmax, registry.Explain(
    formula="l_c = sum_k e_(k) g_k,  e_ic = |[y_i = c] - softmax(x_i)_c| sorted decreasing, "
            "g_k = J_k - J_(k-1) the Jaccard loss's increments over the first k pixels; mean "
            "over the present classes",
    latex=r"\ell_c = \sum_k e_{\pi_k} g_k,\ g_k = J(\{\pi_1..\pi_k\}) - J(\{\pi_1..\pi_{k-1}\})",
    derivative="dl_c/de_ic = g at pixel i's rank (piecewise linear in the errors), de_ic/dp_ic "
               "= 1 - 2 [y_i = c];  through the softmax: dl/dx = p (g' - sum_c p_c g'_c)",
    derivative_latex=r"\frac{\partial\ell_c}{\partial e_{ic}} = g_{\mathrm{rank}(i)},\ "
                     r"\frac{\partial e_{ic}}{\partial p_{ic}} = 1 - 2[y_i = c]",
    gradient=_lovasz_gradient,
    example=_ex.example(_SEG_LOGITS, _SEG_LABELS), steps=_lovasz_steps,
    curve=registry.Curve(
        "class-1 logit of one pixel among 6 (2 classes, class-0 logit 0)", _lovasz_curve,
        (("pixel labelled 1", {"label": 1}), ("pixel labelled 0", {"label": 0})),
        span=(-6.0, 6.0)),
    convex=False, bounded_gradient=True,
    robust="partly: every pixel's pull is at most 1 per class, but a wrong label changes the "
           "class's Jaccard increments for every other pixel",
    note="convex in the errors (the Lovasz extension of a submodular loss), not in the logits "
         "(the softmax saturates); the gradient is exact away from ties between errors",
))
