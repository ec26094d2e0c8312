"""Guardrails for the likelihood losses (Poisson and Gaussian negative log-likelihood).

Metadata checks (shapes, the reduction's spelling) always run. Value checks (NaN, negative rates,
negative counts, zero variances) run when :func:`losskit.checks.values_enabled` says so; the
negative-variance check runs on every call, because torch checks it on every call anyway.
"""

from __future__ import annotations

import torch
from torch import Tensor

from losskit.checks import (
    LossInputError,
    LossTypeError,
    _first,
    _tracing,
    _warn,
    describe,
    get_checks,
)

__all__ = [
    "LossTypeError",
    "accepted_var_shapes",
    "check_no_negative_counts",
    "check_no_negative_rates",
    "check_no_zero_var",
    "check_reduction_spelling",
    "check_var_not_negative",
    "check_var_shape",
    "var_sign_enabled",
]


def check_reduction_spelling(loss: str, reduction: object) -> None:
    """torch's poisson_nll_loss and gaussian_nll_loss compare ``reduction`` with the three
    strings themselves: a non-string is a ``TypeError`` there, and the deprecated alias
    ``"elementwise_mean"`` (accepted by most other losses) a ``ValueError``."""
    if not isinstance(reduction, str):
        raise LossTypeError(
            f"{loss}: reduction={reduction!r} is a {type(reduction).__name__}, not a string. "
            f"Fix: use one of 'none', 'mean', 'sum'."
        )
    if reduction == "elementwise_mean":
        raise LossInputError(
            f"{loss}: reduction='elementwise_mean' is not a valid value for reduction here "
            f"(torch's {loss} does not take the deprecated alias). Fix: reduction='mean'."
        )


# ----------------------------------------------------------------------------------------------
# GaussianNLL's variance


def accepted_var_shapes(input_shape: torch.Size) -> list[tuple[int, ...]]:
    """The ``var`` shapes torch's gaussian_nll_loss takes for ``input_shape``: the input's own
    shape (one variance per element), the shape without the last dim, and the shape with one dim
    set to 1 (one variance shared along that dim).

    >>> accepted_var_shapes(torch.Size([4, 3]))
    [(4, 3), (4,), (1, 3), (4, 1)]
    """
    shapes = [tuple(input_shape)]
    if len(input_shape) > 0:
        shapes.append(tuple(input_shape[:-1]))
    for dim, size in enumerate(input_shape):
        if size != 1:
            shapes.append((*input_shape[:dim], 1, *input_shape[dim + 1 :]))
    return list(dict.fromkeys(shapes))


def _torch_accepts_var_shape(input_shape: torch.Size, var_shape: torch.Size) -> bool:
    """torch 2.13's rule, verbatim: equal sizes; or var is input without its last dim; or the
    same number of dims where the sizes of var at the mismatched dims add up to 1."""
    if var_shape == input_shape or input_shape[:-1] == var_shape:
        return True
    if len(input_shape) != len(var_shape):
        return False
    return sum(v for i, v in zip(input_shape, var_shape, strict=True) if i != v) == 1


def var_shape_accepted(input: Tensor, var: Tensor) -> bool:
    """Whether torch takes ``var``'s shape for ``input`` (see :func:`check_var_shape`)."""
    return _torch_accepts_var_shape(input.shape, var.shape)


def _var_shape_fix(input: Tensor, var: Tensor) -> str:
    if tuple(var.shape) == (*input.shape, 1):
        return "`var.squeeze(-1)`"
    try:
        if torch.broadcast_shapes(var.shape, input.shape) == input.shape:
            return "`var.expand_as(input)` (one variance per element)"
    except RuntimeError:
        pass
    if var.numel() == input.numel():
        return "`var.view_as(input)`"
    return "predict one variance per element of `input` (a second head of the same shape)"


def check_var_shape(loss: str, input: Tensor, var: Tensor | float) -> None:
    """``var`` has a shape torch takes for ``input``; torch raises ``ValueError`` otherwise."""
    if not isinstance(var, Tensor) or _torch_accepts_var_shape(input.shape, var.shape):
        return
    accepted = ", ".join(str(s) for s in accepted_var_shapes(input.shape))
    raise LossInputError(
        f"{loss}: var is of incorrect size: `var` has shape {tuple(var.shape)} but `input` has "
        f"shape {tuple(input.shape)}. For this input torch takes a var of shape {accepted}: "
        f"the input's shape (one variance per element), without its last dim, or with one dim "
        f"set to 1 (one variance shared along it). Fix: {_var_shape_fix(input, var)}."
    )


def var_sign_enabled() -> bool:
    """The negative-variance check runs on every call unless checks are off or a function is
    traced: torch reads ``var`` on every call for the same check, so this adds no sync."""
    return get_checks() != "off" and not _tracing()


_VAR_FIX = (
    "Fix: predict a positive variance, e.g. `var = F.softplus(raw) + 1e-6` or "
    "`var = log_var.exp()` from an unconstrained head"
)


def check_var_not_negative(loss: str, var: Tensor | float) -> None:
    """A variance is >= 0; torch raises ``ValueError("var has negative entry/entries")``."""
    if isinstance(var, float):
        if var < 0:
            raise LossInputError(
                f"{loss}: var has negative entry/entries: var={var!r}, but a variance is "
                f"positive. {_VAR_FIX}; if `var` holds standard deviations, pass `std ** 2`."
            )
        return
    if not isinstance(var, Tensor) or var.numel() == 0:
        return
    negative = var.detach() < 0
    if bool(negative.any()):
        raise LossInputError(
            f"{loss}: var has negative entry/entries: `var` holds {_first(negative, var)}; "
            f"{describe(var)}. A variance is positive; a raw linear head can output any sign. "
            f"{_VAR_FIX}; if `var` holds standard deviations, pass `std ** 2`."
        )


def check_no_zero_var(loss: str, var: Tensor | float, eps: float) -> None:
    """A variance of exactly 0 (a ReLU head, an underflowed softplus): torch clamps it to ``eps``
    without a word, so the term is ``(x - y)^2 / (2 eps)``, huge, and a dead ReLU never recovers."""
    if isinstance(var, Tensor) and var.is_floating_point() and var.numel() > 0:
        zero = var.detach() == 0
        if not bool(zero.any()):
            return
        where = f"`var` holds {_first(zero, var)}"
    elif isinstance(var, float) and var == 0:
        where = "var=0.0"
    else:
        return
    _warn(
        f"{loss}: {where}; torch clamps a zero variance to eps={eps} without a word, so that "
        f"element's loss is (input - target)^2 / (2 * {eps}) and its gradient explodes (a ReLU "
        f"variance head stuck at 0 never recovers). {_VAR_FIX}."
    )


# ----------------------------------------------------------------------------------------------
# PoissonNLL's rates and counts


def check_no_negative_rates(loss: str, input: Tensor) -> None:
    """``log_input=False``: the input is the rate itself, which is >= 0 (log of a negative rate
    plus eps is NaN)."""
    if input.numel() == 0:
        return
    negative = input.detach() < 0
    if bool(negative.any()):
        raise LossInputError(
            f"{loss}: with log_input=False, `input` is the Poisson rate itself and rates must be "
            f">= 0, but `input` holds {_first(negative, input)}; {describe(input)}. "
            f"log(rate + eps) of a negative rate is NaN. Fix: pass the raw model output with "
            f"log_input=True (the default: input is read as log-rate), or make the rate "
            f"non-negative with `F.softplus(raw)` or `raw.exp()`."
        )


def check_no_negative_counts(loss: str, target: Tensor) -> None:
    """Poisson targets count events: a negative target makes the loss unbounded below (the rate
    runs to 0 or infinity). Non-integer targets are fine (torch takes them; e.g. averaged
    counts)."""
    if target.numel() == 0 or not (target.is_floating_point() or target.is_signed()):
        return
    negative = target.detach() < 0
    if bool(negative.any()):
        _warn(
            f"{loss}: `target` holds a negative count: {_first(negative, target)}; "
            f"{describe(target)}. Poisson targets count events (>= 0); with a negative target "
            f"the loss has no minimum and the predicted rate runs off. Fix: pass the raw counts "
            f"(not standardised or log-transformed ones); for real-valued targets use "
            f"`gaussian_nll_loss` or `mse_loss`."
        )
