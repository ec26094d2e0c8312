"""Float64 references for every loss, independent of losskit's code.

The torch.nn losses are thin wrappers over ``torch.nn.functional`` run in float64 (torch is the
contract). Focal and dice loss have no torch twin, so their references are written straight from
the formulas, as slowly and plainly as possible (loops over classes, no fused tricks).

Every reference takes and returns float64; ``to64`` casts a low-precision input first.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def to64(t: Tensor | None) -> Tensor | None:
    """Cast a floating tensor to float64 (integer class indices are left alone)."""
    if t is None or not t.is_floating_point():
        return t
    return t.double()


def _reduce(loss: Tensor, reduction: str, denominator: Tensor | float | None = None) -> Tensor:
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    if denominator is None:
        return loss.mean()
    return loss.sum() / denominator


# ----------------------------------------------------------------------------------------------
# torch.nn.functional in float64


def _torch64(fn):
    def ref(input: Tensor, target: Tensor, **kwargs) -> Tensor:
        kwargs = {k: to64(v) if isinstance(v, Tensor) else v for k, v in kwargs.items()}
        return fn(to64(input), to64(target), **kwargs)

    ref.__name__ = f"ref_{fn.__name__}"
    return ref


mse_loss = _torch64(F.mse_loss)
l1_loss = _torch64(F.l1_loss)
huber_loss = _torch64(F.huber_loss)
smooth_l1_loss = _torch64(F.smooth_l1_loss)
binary_cross_entropy = _torch64(F.binary_cross_entropy)
binary_cross_entropy_with_logits = _torch64(F.binary_cross_entropy_with_logits)
cross_entropy = _torch64(F.cross_entropy)
nll_loss = _torch64(F.nll_loss)
kl_div = _torch64(F.kl_div)
poisson_nll_loss = _torch64(F.poisson_nll_loss)


def gaussian_nll_loss(input: Tensor, target: Tensor, var: Tensor | float, **kwargs) -> Tensor:
    return F.gaussian_nll_loss(to64(input), to64(target), to64(var) if isinstance(var, Tensor)
                               else var, **kwargs)


def ctc_loss(log_probs: Tensor, targets: Tensor, input_lengths, target_lengths, **kwargs) -> Tensor:
    """F.ctc_loss in float64 (four arguments: log-probs, labels and the two lengths)."""
    return F.ctc_loss(to64(log_probs), targets, input_lengths, target_lengths, **kwargs)


def _torch64_3(fn):
    """The same for losses of three tensors (pairs of scores or embeddings, triplets)."""
    def ref(a: Tensor, b: Tensor, c: Tensor, **kwargs) -> Tensor:
        return fn(to64(a), to64(b), to64(c), **kwargs)

    ref.__name__ = f"ref_{fn.__name__}"
    return ref


hinge_embedding_loss = _torch64(F.hinge_embedding_loss)
margin_ranking_loss = _torch64_3(F.margin_ranking_loss)
cosine_embedding_loss = _torch64_3(F.cosine_embedding_loss)
triplet_margin_loss = _torch64_3(F.triplet_margin_loss)
triplet_margin_with_distance_loss = _torch64_3(F.triplet_margin_with_distance_loss)
soft_margin_loss = _torch64(F.soft_margin_loss)
multilabel_soft_margin_loss = _torch64(F.multilabel_soft_margin_loss)
multilabel_margin_loss = _torch64(F.multilabel_margin_loss)
multi_margin_loss = _torch64(F.multi_margin_loss)


# ----------------------------------------------------------------------------------------------
# Focal loss (Lin et al., 2017), from the formula


def focal_binary(
    input: Tensor,
    target: Tensor,
    *,
    alpha: float | None = None,
    gamma: float = 2.0,
    reduction: str = "mean",
) -> Tensor:
    """Binary / multi-label focal loss from logits.

    FL = -alpha_t (1 - p_t)^gamma log p_t, p = sigmoid(x), p_t = p y + (1 - p)(1 - y),
    alpha_t = alpha y + (1 - alpha)(1 - y). For soft targets "log p_t" is read as the binary
    cross-entropy -[y log p + (1 - y) log(1 - p)] (torchvision's convention); for 0/1 targets the
    two readings are the same number. "mean" divides by the element count.
    """
    x, y = to64(input), to64(target)
    p = torch.sigmoid(x)
    log_p, log_1mp = F.logsigmoid(x), F.logsigmoid(-x)  # log p, log(1 - p), stable
    ce = -(y * log_p + (1 - y) * log_1mp)
    p_t = p * y + (1 - p) * (1 - y)
    loss = (1 - p_t) ** gamma * ce
    if alpha is not None:
        loss = (alpha * y + (1 - alpha) * (1 - y)) * loss
    return _reduce(loss, reduction)


def focal_binary_literal(input: Tensor, target: Tensor, *, alpha=None, gamma=2.0) -> Tensor:
    """The paper's formula term by term, log(p_t) included, for 0/1 targets (per element)."""
    x, y = to64(input), to64(target)
    p = 1 / (1 + torch.exp(-x))
    p_t = torch.where(y == 1, p, 1 - p)
    alpha_t = 1.0 if alpha is None else torch.where(y == 1, alpha, 1 - alpha)
    return -alpha_t * (1 - p_t) ** gamma * torch.log(p_t)


def focal_multiclass(
    input: Tensor,
    target: Tensor,
    *,
    alpha: float | Tensor | None = None,
    gamma: float = 2.0,
    reduction: str = "mean",
    ignore_index: int = -100,
) -> Tensor:
    """Multi-class focal loss from logits (N, C, d1, ...) and class indices (N, d1, ...).

    FL_n = -alpha[y_n] (1 - p_{n, y_n})^gamma log p_{n, y_n}, p = softmax over dim 1; ignored
    positions give 0 and "mean" divides by the number of non-ignored positions.
    """
    x = to64(input)
    class_dim = 1 if x.dim() >= 2 else 0
    logp = torch.log_softmax(x, dim=class_dim)
    logp = logp.movedim(class_dim, -1).reshape(-1, x.shape[class_dim])  # (M, C)
    flat = target.reshape(-1)  # (M,)
    terms = []
    for n in range(flat.numel()):
        y = int(flat[n])
        if y == ignore_index:
            terms.append(logp.new_zeros(()))
            continue
        lp = logp[n, y]
        a = 1.0 if alpha is None else (alpha[y] if isinstance(alpha, Tensor) else alpha)
        terms.append(-a * (1 - lp.exp()) ** gamma * lp)
    loss = torch.stack(terms).reshape(target.shape)
    count = int((flat != ignore_index).sum())
    return _reduce(loss, reduction, max(count, 1))  # mean over nothing: 0 (losskit's rule)


# ----------------------------------------------------------------------------------------------
# Soft Dice loss, from the formula


def dice(
    input: Tensor,
    target: Tensor,
    *,
    smooth: float = 1.0,
    ignore_index: int | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Multi-class soft Dice from logits (N, C, d1, ...) and class indices (N, d1, ...).

    p = softmax over dim 1, t = one-hot target; per class c, summing over batch and spatial
    positions i whose target is not ignore_index:
    dice_c = (2 sum_i p_ic t_ic + smooth) / (sum_i p_ic + sum_i t_ic + smooth), loss_c = 1 - dice_c.
    "none" gives the (C,) per-class losses, "mean" their mean, "sum" their sum.
    """
    x = to64(input)
    num_classes = x.shape[1]
    rows = x.movedim(1, -1).reshape(-1, num_classes)  # (M, C)
    y = target.reshape(-1)  # (M,)
    keep = torch.ones_like(y, dtype=torch.bool) if ignore_index is None else y != ignore_index
    # Ignored positions are dropped before the softmax: their logits (e.g. all -inf) play no part.
    p, y = torch.softmax(rows[keep], dim=1), y[keep]
    losses = []
    for c in range(num_classes):
        t_c = (y == c).double()
        inter = (p[:, c] * t_c).sum()
        dice_c = (2 * inter + smooth) / (p[:, c].sum() + t_c.sum() + smooth)
        losses.append(1 - dice_c)
    return _reduce(torch.stack(losses), reduction)


def dice_binary(input: Tensor, target: Tensor, *, smooth: float = 1.0, reduction="mean") -> Tensor:
    """Binary / multi-label soft Dice: p = sigmoid(x), float targets of input's shape, dim 1 the
    labels; one term per label as in :func:`dice`."""
    x, t = to64(input), to64(target)
    p = torch.sigmoid(x).movedim(1, -1).reshape(-1, x.shape[1])  # (M, C)
    t = t.movedim(1, -1).reshape(-1, x.shape[1])  # (M, C)
    dice_c = (2 * (p * t).sum(0) + smooth) / (p.sum(0) + t.sum(0) + smooth)  # (C,)
    return _reduce(1 - dice_c, reduction)
