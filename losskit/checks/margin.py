"""Guardrails for the margin losses (losskit/losses/margin.py): soft margin, multi-label soft
margin, multi-label margin and multi-class margin (hinge) loss.

The classic mistakes of this family are targets in the wrong encoding: {0, 1} labels where soft
margin needs {-1, 1}, multi-hot rows where multi-label margin needs class indices padded with -1,
(N, 1) or one-hot class targets for the multi-class hinge, and a sigmoid before the multi-label
soft margin loss, which applies it itself. Metadata checks always run; the ``*_values`` checks
read the data and run only when ``checks.values_enabled(loss)`` says so.
"""

from __future__ import annotations

import torch
from torch import Tensor

from losskit.checks import (
    LossIndexError,
    LossInputError,
    LossNotImplementedError,
    LossRuntimeError,
    _first,
    _warn,
    _within,
    describe,
)


class LossIndexRuntimeError(LossIndexError, LossRuntimeError):
    """A class index out of range in a margin loss.

    Torch raises ``RuntimeError`` here ("target out of range"), cross-entropy raises
    ``IndexError``; this error is both, so either ``except`` clause catches it.

    >>> [issubclass(LossIndexRuntimeError, c) for c in (IndexError, RuntimeError, ValueError)]
    [True, True, True]
    """


# ----------------------------------------------------------------------------------------------
# Metadata checks


def check_floating_scores(
    loss: str, input: Tensor, *, error: type[LossInputError] = LossNotImplementedError
) -> None:
    """Integer scores. ``error`` is the class torch raises for them in this loss
    (soft margin: ``RuntimeError``; the others: ``NotImplementedError``)."""
    if not input.is_floating_point():
        raise error(
            f"{loss}: `input` has {describe(input)}, but a margin loss needs floating-point "
            f"scores (the model's raw output). Fix: pass the model output, or `input.float()`."
        )


def _broadcasts(a: Tensor, b: Tensor) -> bool:
    try:
        torch.broadcast_shapes(a.shape, b.shape)
    except RuntimeError:
        return False
    return True


def _shape_mismatch(loss: str, input: Tensor, target: Tensor, fix: str) -> LossInputError:
    """Torch broadcasts such shapes silently (losskit raises a LossInputError) or, when they do
    not broadcast, raises RuntimeError (losskit raises a LossRuntimeError)."""
    if _broadcasts(input, target):
        shape = tuple(torch.broadcast_shapes(input.shape, target.shape))
        why = f"torch would broadcast them to {shape} and pair scores with the wrong labels"
        error = LossInputError
    else:
        why, error = "they cannot be compared element by element", LossRuntimeError
    return error(
        f"{loss}: `target` has shape {tuple(target.shape)} but `input` has shape "
        f"{tuple(input.shape)}; {why}. Fix: {fix}."
    )


def check_sign_target_shape(loss: str, input: Tensor, target: Tensor) -> None:
    """Soft margin: one -1 / 1 label per score."""
    if target.shape == input.shape:
        return
    if input.shape[-1:] == (1,) and target.shape == input.shape[:-1]:
        fix = "`input.squeeze(-1)`"
    elif target.numel() == input.numel():
        fix = "`target.view_as(input)`"
    else:
        fix = f"pass one -1 / 1 label per score, shape {tuple(input.shape)}"
    raise _shape_mismatch(loss, input, target, fix)


def check_multilabel_target_shape(loss: str, input: Tensor, target: Tensor) -> None:
    """Multi-label soft margin: one 0/1 target per score; other shapes would broadcast."""
    if input.dim() == 0:
        raise LossIndexError(
            f"{loss}: `input` is 0-d, but it needs one score per label: shape (C,) or (N, C). "
            f"Fix: `input.reshape(1, -1)` for one sample."
        )
    if target.shape == input.shape:
        return
    c = input.shape[-1]
    if not target.is_floating_point() and target.shape == input.shape[:-1]:
        fix = f"for one class index per sample, `target = F.one_hot(target, {c}).float()`"
    else:
        fix = f"pass one 0./1. label per score, shape {tuple(input.shape)}"
    raise _shape_mismatch(loss, input, target, fix)


def check_label_lists(loss: str, input: Tensor, target: Tensor) -> None:
    """Multi-label margin: ``target`` is int64 class indices of ``input``'s shape, each row
    listing the sample's labels and padded with -1."""
    c = input.shape[-1] if input.dim() else 1
    convert = (
        f"`target = torch.where(target.bool(), torch.arange({c}, device=target.device), -1)"
        f".sort(dim=-1, descending=True).values`"
    )
    if input.dim() > 2:
        raise LossRuntimeError(
            f"{loss}: `input` has shape {tuple(input.shape)}, but {loss} takes (C,) or (N, C) "
            f"scores. Fix: flatten the leading dims, `input.reshape(-1, {c})` and "
            f"`target.reshape(-1, {c})`."
        )
    if target.is_floating_point() or target.dtype == torch.bool:
        multi_hot = (
            f" If it holds multi-hot 0/1 labels, list the indices of the ones and pad with -1: "
            f"{convert}, or use `multilabel_soft_margin_loss`, which takes multi-hot targets."
            if target.shape == input.shape else ""
        )
        raise LossRuntimeError(
            f"{loss}: `target` has {describe(target)}, but {loss} expects class indices of dtype "
            f"int64 (Long): each row lists the sample's labels, padded with -1.{multi_hot} "
            f"Fix: integer class indices, `target.long()`."
        )
    if target.dtype != torch.int64:
        raise LossRuntimeError(
            f"{loss}: `target` has {describe(target)}; torch expects dtype int64 (Long) here. "
            f"Fix: `target = target.long()`."
        )
    if target.shape == input.shape:
        return
    if input.dim() == 2 and target.shape == input.shape[:1]:
        fix = (
            f"for one label per sample, pad each with -1: "
            f"`target = F.pad(target.unsqueeze(1), (0, {c - 1}), value=-1)`, or use "
            f"`multi_margin_loss`"
        )
    else:
        fix = f"give `target` the shape of `input`, {tuple(input.shape)}"
    raise LossRuntimeError(
        f"{loss}: inconsistent target size: `target` has shape {tuple(target.shape)} for `input` "
        f"of shape {tuple(input.shape)}; {loss} needs one row of {c} class indices (padded "
        f"with -1) per sample. Fix: {fix}."
    )


def check_class_index_target(loss: str, input: Tensor, target: Tensor) -> None:
    """Multi-class margin: one int64 class index per sample, ``(N,)`` for ``(N, C)`` scores."""
    if input.dim() > 2:
        c = input.shape[-1]
        raise LossRuntimeError(
            f"{loss}: `input` has shape {tuple(input.shape)}, but {loss} takes (C,) or (N, C) "
            f"scores. Fix: flatten the leading dims, `input.reshape(-1, {c})` and "
            f"`target.reshape(-1)`."
        )
    n = input.shape[0] if input.dim() == 2 else 1
    if input.dim() == 2 and target.shape == input.shape:
        raise LossRuntimeError(
            f"{loss}: `target` has {describe(target)}, the shape of `input`: one-hot labels, but "
            f"{loss} takes one class index per sample, shape ({n},). Fix: "
            f"`target = target.argmax(1)`, or `multilabel_margin_loss` for several labels per "
            f"sample."
        )
    if target.is_floating_point() or target.dtype != torch.int64:
        raise LossRuntimeError(
            f"{loss}: `target` has {describe(target)}; class indices must have dtype int64 "
            f"(Long). Fix: `target = target.long()`."
        )
    if input.dim() == 2 and target.shape == (n, 1):
        raise LossRuntimeError(
            f"{loss}: `target` has shape {tuple(target.shape)} but needs shape ({n},): one class "
            f"index per sample. Fix: `target = target.squeeze(1)`."
        )
    if target.numel() != n or target.dim() > 1:
        raise LossRuntimeError(
            f"{loss}: `target` has shape {tuple(target.shape)}, but `input` of shape "
            f"{tuple(input.shape)} needs one class index per sample, shape ({n},). Fix: pass "
            f"matching batches."
        )


def check_p(loss: str, p: object) -> None:
    """``p`` is the exponent of the hinge: torch supports 1 and 2 only."""
    if p != 1 and p != 2:
        raise LossInputError(
            f"{loss}: p={p!r}, but only p == 1 (hinge) and p == 2 (squared hinge) are "
            f"supported. Fix: pass p=1 or p=2."
        )


def check_margin_weight(
    loss: str, weight: Tensor | None, input: Tensor | None, *, autocast: bool = False
) -> None:
    """Class weights: 1-D (torch: ValueError), one per class and the scores' dtype
    (torch: RuntimeError; under ``torch.autocast`` any float dtype, as autocast casts both).
    With ``input=None`` (a Module's constructor) only the dim is known."""
    if weight is None:
        return
    if weight.dim() != 1:
        raise LossInputError(
            f"{loss}: `weight` has shape {tuple(weight.shape)}, but weight must be "
            f"one-dimensional: one entry per class. Fix: `weight.reshape(-1)`."
        )
    if input is None:
        return
    c = input.shape[-1] if input.dim() else 1
    if weight.numel() != c:
        raise LossRuntimeError(
            f"{loss}: inconsistent weight size: `weight` has shape {tuple(weight.shape)}, but "
            f"`input` has {c} classes in its last dim. Fix: pass a 1-D tensor of length {c}."
        )
    if weight.dtype != input.dtype and not (autocast and weight.is_floating_point()):
        raise LossRuntimeError(
            f"{loss}: `weight` has dtype {weight.dtype} but `input` has {input.dtype}; torch "
            f"needs them equal. Fix: `weight.to(input.dtype)`."
        )


# ----------------------------------------------------------------------------------------------
# Value checks: the callers guard them with `checks.values_enabled` (index ranges also with
# `checks.index_range_enabled`, as torch checks them on every CPU call)


def check_sign_target(loss: str, target: Tensor) -> None:
    """Soft margin: labels are -1 or 1. {0, 1} labels get their own message: a 0 target gives
    the constant ``log 2`` and no gradient, so every negative sample is silently ignored."""
    if target.numel() == 0:
        return
    t = target.detach()
    signs = (t == 1) | (t == -1)
    if bool(signs.all()):
        return
    if bool(((t == 0) | (t == 1)).all()):
        raise LossInputError(
            f"{loss}: `target` ({describe(target)}) holds only 0s and 1s, but soft margin "
            f"labels are -1 and 1: a 0 label adds the constant log(2) with zero gradient, so "
            f"the negative samples teach the model nothing. Fix: `target = 2 * target - 1`."
        )
    raise LossInputError(
        f"{loss}: `target` holds {_first(~signs, t)} outside {{-1, 1}}; soft margin labels are "
        f"-1 and 1, and torch silently scales the margin by any other value. Fix: map the "
        f"labels to -1/1, e.g. `target = torch.where(target == positive_label, 1.0, -1.0)`."
    )


def check_label_list_range(loss: str, target: Tensor, num_classes: int) -> None:
    """Multi-label margin: every entry is a class in [0, C) or the -1 padding (torch checks
    the entries after the first -1 too)."""
    if target.numel() == 0 or _within(target, -1, num_classes - 1):
        return
    bad = (target < -1) | (target >= num_classes)
    raise LossIndexRuntimeError(
        f"{loss}: `target` holds a class index outside [0, {num_classes}) that is not the -1 "
        f"padding: {_first(bad, target)}. `input` has {num_classes} classes. Fix: labels must "
        f"be 0..{num_classes - 1} (e.g. `target - 1` for labels that start at 1), and pad each "
        f"row with -1."
    )


def check_not_multi_hot(loss: str, target: Tensor) -> None:
    """Multi-label margin given multi-hot rows: only 0s and 1s and no -1. A real label list
    without padding names all C classes, so with C >= 3 it holds an index above 1."""
    c = target.shape[-1] if target.dim() else 1
    if c < 3 or target.numel() == 0 or not _within(target, 0, 1):
        return
    raise LossInputError(
        f"{loss}: `target` ({describe(target)}) holds only 0s and 1s and no -1 padding: this "
        f"looks like multi-hot labels (1 = the sample has that label). {loss} reads each row as "
        f"a list of class indices ended by -1, so it would train classes 0 and 1 only. Fix: list "
        f"the indices of the ones and pad with -1, `target = torch.where(target.bool(), "
        f"torch.arange({c}, device=target.device), -1).sort(dim=-1, descending=True).values`, "
        f"or use `multilabel_soft_margin_loss(input, target.float())`."
    )


def check_class_index_range(loss: str, target: Tensor, num_classes: int) -> None:
    """Multi-class margin: every class index in [0, C) (no ignore_index in this loss)."""
    if target.numel() == 0 or _within(target, 0, num_classes - 1):
        return
    bad = (target < 0) | (target >= num_classes)
    raise LossIndexRuntimeError(
        f"{loss}: `target` holds a class index outside [0, {num_classes}): "
        f"{_first(bad, target)}. `input` has {num_classes} classes. Fix: labels must be "
        f"0..{num_classes - 1} (e.g. `target - 1` for labels that start at 1)."
    )


def warn_empty_batch(loss: str, input: Tensor) -> None:
    """``"mean"`` over an empty batch: a mean over nothing (metadata only, so it always runs)."""
    _warn(
        f"{loss}: `input` is an empty batch ({tuple(input.shape)}), so the mean is over nothing; "
        f"losskit returns 0 with zero gradient (torch returns uninitialised memory). Fix: skip "
        f"empty batches (check the sampler, the filtering or `drop_last`)."
    )
