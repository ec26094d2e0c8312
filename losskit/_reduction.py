"""Reductions ``"none" | "mean" | "sum"`` in one place.

Every loss resolves its ``reduction`` argument here (including torch's legacy ``size_average`` /
``reduce`` pair and the deprecated ``"elementwise_mean"`` alias) and reduces through :func:`reduce`.
Nobody else parses these strings.

Weighted means (see docs/reductions-and-weights.md):

    none : l                       (shape of the per-element loss)
    sum  : sum_i w_i l_i
    mean : sum_i w_i l_i / sum_i w_i     when a denominator is given (cross-entropy / NLL style)
           sum_i w_i l_i / numel         otherwise (torch's pointwise losses, BCE with ``weight``)
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from losskit.checks import LossInputError

REDUCTIONS = ("none", "mean", "sum")

_LEGACY_WARNING = (
    "size_average and reduce args will be deprecated, please use reduction='sum' instead."
)


def legacy_reduction(size_average: bool | None, reduce: bool | None) -> str:
    """Map torch's legacy ``size_average`` / ``reduce`` pair to a reduction string, as torch does.

    ``reduce=False`` -> ``"none"`` (whatever ``size_average``), else ``size_average=False`` ->
    ``"sum"``, else ``"mean"``; warns like torch.

    >>> import warnings
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")
    ...     [legacy_reduction(*args) for args in [(False, None), (None, False), (True, True)]]
    ['sum', 'none', 'mean']
    """
    warnings.warn(_LEGACY_WARNING, UserWarning, stacklevel=3)
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    if not reduce:
        return "none"
    return "mean" if size_average else "sum"


def resolve(
    reduction: str,
    size_average: bool | None = None,
    reduce: bool | None = None,
    *,
    extra: tuple[str, ...] = (),
    warn: bool = True,
) -> str:
    """Return the effective reduction; raise ``LossInputError`` (a ValueError) for a bad one.

    ``extra`` lists loss-specific values (``("batchmean",)`` for ``kl_div``). ``warn=False`` skips
    the legacy-argument warning for callers that pass the legacy arguments on to torch, which warns.

    >>> resolve("sum")
    'sum'
    >>> resolve("avg")
    Traceback (most recent call last):
    ...
    losskit.checks.LossInputError: reduction='avg': avg is not a valid value for reduction. ...
    """
    if size_average is not None or reduce is not None:
        if not warn:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return legacy_reduction(size_average, reduce)
        return legacy_reduction(size_average, reduce)
    if reduction == "elementwise_mean":
        warnings.warn(
            "reduction='elementwise_mean' is deprecated, please use reduction='mean' instead.",
            UserWarning,
            stacklevel=3,
        )
        return "mean"
    if reduction in REDUCTIONS or reduction in extra:
        return reduction
    valid = ", ".join(repr(r) for r in REDUCTIONS + extra)
    raise LossInputError(
        f"reduction={reduction!r}: {reduction} is not a valid value for reduction. "
        f"Fix: use one of {valid}."
    )


def reduce(loss: Tensor, reduction: str, denominator: Tensor | None = None) -> Tensor:
    """Reduce a per-element ``loss`` (already multiplied by its weights).

    ``denominator`` (0-d) replaces ``numel`` for ``"mean"``. A zero denominator means nothing was
    counted, so the weighted sum is 0 too: dividing by 1 instead gives 0 with a zero gradient, not
    NaN (losskit's rule for "mean over nothing"), without a host sync.

    >>> l = torch.tensor([1.0, 2.0, 3.0])
    >>> reduce(l, "mean"), reduce(l, "sum"), reduce(l, "mean", torch.tensor(2.0))
    (tensor(2.), tensor(6.), tensor(3.))
    """
    if reduction == "none":
        return loss
    total = loss.sum()
    if reduction == "sum":
        return total
    if denominator is None:
        return total / loss.numel()
    return total / torch.where(denominator == 0, torch.ones_like(denominator), denominator)
