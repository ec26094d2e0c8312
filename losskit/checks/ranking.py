"""Guardrails of the ranking and embedding losses (:mod:`losskit.losses.ranking`).

The classic mistakes: 0/1 labels where a loss reads the sign of a -1/+1 label (torch runs and
the model silently learns the wrong thing), other labels outside {-1, 1}, a triplet or a pair
whose tensors differ in shape (torch broadcasts them, or fails deep inside), and integer
predictions. Shape and dtype checks read metadata only; the label check reads values and obeys
the checks mode (callers guard it with :func:`losskit.checks.values_enabled`).
"""

from __future__ import annotations

from collections import Counter

import torch
from torch import Tensor

from losskit.checks import (
    LossInputError,
    LossNotImplementedError,
    LossRuntimeError,
    _first,
    describe,
)

# What the two labels mean to each loss, and what torch silently does with a 0 label.
_MEANING = {
    "margin_ranking_loss": "1 where `input1` should rank higher, -1 where `input2` should",
    "hinge_embedding_loss": "1 for similar pairs (their distance is pulled to 0), -1 for "
    "dissimilar pairs (pushed beyond margin)",
    "cosine_embedding_loss": "1 for similar pairs (their cosine is pulled to 1), -1 for "
    "dissimilar pairs (pushed below margin)",
}
_ZERO_LABEL = {
    "margin_ranking_loss": "a 0 label gives the constant max(0, margin) with zero gradient, so "
    "those pairs never train",
    "hinge_embedding_loss": "a 0 label gives max(input, margin), which pulls those pairs in to "
    "the margin instead of pushing them beyond it",
    "cosine_embedding_loss": "a 0 label gives a loss of 0, so the dissimilar pairs never train "
    "and the embeddings can collapse to one point",
}
_OTHER_LABEL = {
    "margin_ranking_loss": "scales the ranking term by the label",
    "hinge_embedding_loss": "adds the similar and the dissimilar term for such a label",
    "cosine_embedding_loss": "gives such a pair a loss of 0",
}


def check_floating_inputs(loss: str, *, allow_complex: bool = False, **tensors: Tensor) -> None:
    """Predictions (scores, distances, embeddings) must be floating point.

    torch accepts integer embeddings for some of these losses and computes an integer loss or
    no gradient; complex ones fail inside its kernels (NotImplementedError), integer hinge
    input with ``"mean"`` fails with a RuntimeError: the error classes follow torch's.
    """
    for name, t in tensors.items():
        if t.is_floating_point() or (allow_complex and t.is_complex()):
            continue
        error = LossNotImplementedError if t.is_complex() else LossRuntimeError
        raise error(
            f"{loss}: `{name}` has {describe(t)}, but a loss needs floating-point predictions "
            f"(the model's raw output). Fix: pass the model output, or `{name}.float()`."
        )


def _reference_shape(shapes: dict[str, torch.Size]) -> torch.Size:
    """The shape the odd tensors are compared with: one that already has the shape all of them
    broadcast to (so a one-row tensor is the odd one, not the full batch); else the most common
    one (the first named on a tie), except that a shape S wins over S + (1,), so an extra
    trailing 1 is what is odd."""
    try:  # a tensor that already has the broadcast shape is the reference: the others are odd
        wide = torch.broadcast_shapes(*shapes.values())
        if wide in shapes.values():
            return wide
    except RuntimeError:
        pass
    counts = Counter(shapes.values())
    best = max(counts, key=lambda s: (counts[s], -list(shapes.values()).index(s)))
    for shape in counts:
        if (*shape, 1) == tuple(best):
            return shape
    return best


def _shape_fix(name: str, shape: torch.Size, ref: torch.Size, ref_name: str) -> str:
    if tuple(shape) == (*ref, 1):
        return f"`{name} = {name}.squeeze(-1)`"
    if shape.numel() == ref.numel():
        return f"`{name} = {name}.reshape({tuple(ref)!r})`" if not ref else (
            f"`{name} = {name}.reshape{tuple(ref)}`")
    try:
        if torch.broadcast_shapes(shape, ref) == ref:
            return (
                f"give `{name}` shape {tuple(ref)}, like `{ref_name}` (or pass "
                f"`{name}.expand_as({ref_name})` if its one value really serves every row)"
            )
    except RuntimeError:
        pass
    return f"give `{name}` shape {tuple(ref)}, like `{ref_name}`, one row per row of `{ref_name}`"


def check_same_shapes(loss: str, *, same_dim: bool, **tensors: Tensor) -> None:
    """Tensors compared element by element must have one shape: torch broadcasts different but
    compatible shapes silently ((N, 1) against (N,) pairs every element with every other one).

    ``same_dim``: torch itself raises (RuntimeError) when the numbers of dimensions differ, as
    for margin ranking and triplets; then losskit raises a LossRuntimeError too.
    """
    shapes = {name: t.shape for name, t in tensors.items()}
    if len(set(shapes.values())) == 1:
        return
    ref = _reference_shape(shapes)
    names = list(shapes)
    same = [n for n in names if shapes[n] == ref]
    odd = [n for n in names if shapes[n] != ref]
    try:
        wide = torch.broadcast_shapes(*shapes.values())
        torch_raises = same_dim and len({len(s) for s in shapes.values()}) > 1
    except RuntimeError:
        wide, torch_raises = None, True
    if torch_raises:
        consequence = "torch cannot pair them element by element and raises"
    else:
        consequence = (
            f"torch would broadcast them silently to {tuple(wide)}, pairing elements that do "
            f"not belong together, so the loss is wrong and the model does not learn"
        )
    groups: dict[torch.Size, list[str]] = {}
    for n in odd:
        groups.setdefault(shapes[n], []).append(n)
    what = "; ".join(
        f"{_listing(ns)} {'has' if len(ns) == 1 else 'have'} shape {tuple(shape)}"
        for shape, ns in groups.items()
    )
    fixes = "; ".join(_shape_fix(n, shapes[n], ref, same[0]) for n in odd)
    error = LossRuntimeError if torch_raises else LossInputError
    raise error(
        f"{loss}: {_listing(names)} must have the same shape, but {what} while "
        f"{_listing(same)} {'has' if len(same) == 1 else 'have'} shape {tuple(ref)}; "
        f"{consequence}. Fix: {fixes}."
    )


def _listing(names: list[str]) -> str:
    quoted = [f"`{n}`" for n in names]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} and {quoted[-1]}"


def check_cosine_shapes(loss: str, input1: Tensor, input2: Tensor, target: Tensor) -> None:
    """Pairs of embeddings: ``(N, D)`` inputs with an ``(N,)`` target, or one ``(D,)`` pair with
    a 0-d target."""
    if target.dim() > 1:
        if input1.dim() == target.dim() + 1 and input1.shape[:-1] == target.shape:
            fix = _cosine_dim_fix(input1, target)  # e.g. (B, T, D) pairs with (B, T) labels
        elif target.numel() == max(target.shape):
            fix = f"`target = target.reshape(-1)`, one label per pair, shape ({target.numel()},)"
        else:
            fix = "one label per pair, shape (N,)"
        raise LossRuntimeError(
            f"{loss}: `target` has shape {tuple(target.shape)}, but it needs one label per "
            f"pair: shape (N,) for (N, D) inputs, or 0-d for one (D,) pair (torch: 0D or 1D "
            f"target tensor expected). Fix: {fix}."
        )
    check_same_shapes(loss, same_dim=True, input1=input1, input2=input2)
    if input1.dim() != target.dim() + 1:
        raise LossRuntimeError(
            f"{loss}: `input1` and `input2` have shape {tuple(input1.shape)} and `target` has "
            f"shape {tuple(target.shape)}; cosine_embedding_loss compares (N, D) embeddings "
            f"with an (N,) target, or one (D,) pair with a 0-d target. Fix: "
            f"{_cosine_dim_fix(input1, target)}."
        )
    if target.dim() == 1 and target.shape[0] != input1.shape[0]:
        n, m = input1.shape[0], target.shape[0]
        broadcasts = n == 1 or m == 1
        error = LossInputError if broadcasts else LossRuntimeError
        consequence = (
            f"torch would broadcast them silently to {max(n, m)} pairs" if broadcasts
            else "torch cannot pair them and raises"
        )
        raise error(
            f"{loss}: `target` has {m} label{'s' * (m != 1)} but `input1` and `input2` hold {n} "
            f"pair{'s' * (n != 1)} (shape "
            f"{tuple(input1.shape)}); {consequence}. Fix: one label per pair, `target` of "
            f"shape ({n},)."
        )


def _cosine_dim_fix(input1: Tensor, target: Tensor) -> str:
    d = input1.shape[-1] if input1.dim() else 1
    if input1.dim() >= 3:
        return (
            f"flatten the pairs: `input1.reshape(-1, {d})`, `input2.reshape(-1, {d})` and "
            f"`target.reshape(-1)`"
        )
    if input1.dim() == 2:  # target 0-d
        return f"one label per pair: `target = target.expand({input1.shape[0]})`"
    if input1.dim() == 1:  # target (M,)
        return (
            "a 0-d target for one pair, `target[0]`, or a batch of one pair: "
            "`input1.unsqueeze(0)`, `input2.unsqueeze(0)` with target shape (1,)"
        )
    return "embeddings with a last dimension D, shape (N, D) or (D,)"


UNSIGNED_DTYPES = (torch.uint8, torch.uint16, torch.uint32, torch.uint64)  # cannot hold -1


def check_sign_target_dtype(loss: str, target: Tensor) -> None:
    """A bool target is 0/1 labels (False/True); an unsigned one cannot hold -1 at all (uint8
    -1 wraps to 255, which margin ranking reads as a label of 255); the losses need -1/+1."""
    if target.dtype in UNSIGNED_DTYPES:
        raise LossInputError(
            f"{loss}: `target` has {describe(target)}, an unsigned type that cannot hold the "
            f"label -1 (-1 wraps to {torch.iinfo(target.dtype).max}), but {loss} needs labels "
            f"in {{-1, 1}}: {_MEANING[loss]}. Fix: `target = 2 * target.float() - 1` for 0/1 "
            f"labels, or `target.float()` if they are already -1/1 in a signed type."
        )
    if target.dtype != torch.bool:
        return
    # torch raises for bool labels in margin ranking (RuntimeError) and accepts them elsewhere.
    error = LossRuntimeError if loss == "margin_ranking_loss" else LossInputError
    raise error(
        f"{loss}: `target` has {describe(target)}: True/False labels, which mean 1/0, but "
        f"{loss} needs labels in {{-1, 1}}: {_MEANING[loss]}. Fix: "
        f"`target = 2 * target.float() - 1`."
    )


def check_sign_target_values(loss: str, target: Tensor) -> None:
    """Labels must be -1 or 1. 0/1 labels get their own message: torch runs without an error,
    and the model silently learns the wrong thing."""
    if target.numel() == 0:
        return
    t = target.detach()
    signs = (t == 1) | (t == -1)
    if bool(signs.all()):
        return
    zero = t == 0
    if bool((zero | (t == 1)).all()):
        raise LossInputError(
            f"{loss}: `target` holds 0/1 labels ({_count(zero, 'zero')}), "
            f"but {loss} needs labels in {{-1, 1}}: {_MEANING[loss]}. torch runs without an "
            f"error, but {_ZERO_LABEL[loss]}: the model silently trains the wrong thing. "
            f"Fix: `target = 2 * target - 1`."
        )
    lo, hi = t.min().item(), t.max().item()
    one_two = bool(((t == 1) | (t == 2)).all())
    fix = (
        "`target = 2 * target - 3` for 1/2 labels where 2 is the positive label, "
        "`3 - 2 * target` where 1 is" if one_two
        else "`target = torch.where(target == positive_label, 1.0, -1.0)`"
    )
    raise LossInputError(
        f"{loss}: `target` holds {_first(~signs, t)} outside {{-1, 1}} (range [{lo}, {hi}]); "
        f"{loss} needs labels in {{-1, 1}}: {_MEANING[loss]}; torch silently "
        f"{_OTHER_LABEL[loss]}. Fix: map the labels to -1/1, e.g. {fix}."
    )


def _count(mask: Tensor, what: str) -> str:
    """``3 zeros, the first at index (1,)`` (error path only)."""
    count, first = int(mask.sum()), tuple(int(i) for i in torch.nonzero(mask)[0].tolist())
    return f"{count} {what}{'s' * (count != 1)}, the first at index {first}"


def check_positive_margin(loss: str, margin: float) -> None:
    """Triplet losses need ``margin > 0`` (torch raises ValueError)."""
    if margin <= 0:  # as torch: a NaN margin passes
        raise LossInputError(
            f"{loss}: margin={margin!r}, but a triplet loss needs margin > 0: with 0 the loss "
            f"is 0 as soon as the negative is as far as the positive, so nothing separates "
            f"them (torch: margin must be greater than 0). Fix: pass e.g. margin=1.0 (the "
            f"default), on the scale of the distances."
        )


def check_same_ndim(loss: str, **tensors: Tensor) -> None:
    """A triplet with a custom distance function: torch only asks for one number of dimensions
    (the function decides what else fits)."""
    dims = {name: t.dim() for name, t in tensors.items()}
    if len(set(dims.values())) == 1:
        return
    what = ", ".join(f"`{n}` {d}-D {tuple(tensors[n].shape)}" for n, d in dims.items())
    raise LossRuntimeError(
        f"{loss}: {_listing(list(dims))} must have the same number of dimensions, but got "
        f"{what}. Fix: give all three the same layout, e.g. (N, D) each, one positive and one "
        f"negative per anchor."
    )


def check_plain_reduction(loss: str, reduction: str) -> None:
    """triplet_margin_with_distance_loss checks ``reduction`` itself and, unlike the other torch
    losses, does not accept the deprecated alias ``"elementwise_mean"`` (ValueError)."""
    if reduction == "elementwise_mean":
        raise LossInputError(
            f"{loss}: reduction='elementwise_mean': elementwise_mean is not a valid value for "
            f"reduction here (torch's triplet_margin_with_distance_loss has no deprecated "
            f"alias). Fix: reduction='mean'."
        )
