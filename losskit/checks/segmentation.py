"""Guardrails for the overlap losses of losskit/losses/segmentation.py (Tversky, focal Tversky,
Lovasz-softmax).

The classic mistakes of this family: a softmax before a loss that applies it itself (the
reference Lovasz-softmax code takes probabilities, losskit's takes logits, as every other losskit
segmentation loss); Tversky weights that are negative or both 0 (the index then no longer
measures overlap); and a focal-Tversky exponent written in the other paper's convention.
Metadata and option checks always run; the softmax check reads the data and runs only when
``checks.values_enabled(loss)`` says so.
"""

from __future__ import annotations

import math

from torch import Tensor

from losskit.checks import LossInputError, _warn, describe, rows_are_distributions

__all__ = [
    "check_focal_tversky_gamma",
    "check_lovasz_classes",
    "check_more_than_one_class",
    "check_not_softmax_before",
    "check_tversky_weights",
]


def check_not_softmax_before(loss: str, input: Tensor, class_dim: int) -> None:
    """Softmax output passed where logits are expected: every row is already a distribution.

    A second softmax of values in [0, 1] caps each probability at ``e / (e + C - 1)``, so the
    overlap can never be complete and the loss never reaches 0."""
    if not rows_are_distributions(input, class_dim):
        return
    c = input.shape[class_dim]
    cap = math.e / (math.e + c - 1)
    origin = (" (the reference Lovasz-softmax code of Berman et al. takes probabilities; "
              "losskit's takes logits, like its other segmentation losses)"
              if loss == "lovasz_softmax" else "")
    _warn(
        f"{loss}: `input` ({describe(input)}) looks like probabilities: every value is in "
        f"[0, 1] and each pixel's values sum to 1 along dim {class_dim}. {loss} takes logits and "
        f"applies the softmax itself{origin}; a second softmax caps every probability at "
        f"{cap:.3g} with {c} classes, so the predicted regions stay blurred and the loss cannot "
        f"reach 0. Fix: pass the raw logits (remove the final softmax)."
    )


def check_more_than_one_class(loss: str, input: Tensor, target: Tensor) -> None:
    """Class-index targets with one class in ``input``: the softmax over one class is 1, so a
    0/1 mask read as indices has 1s out of range and an all-0 mask gives a constant loss."""
    if input.shape[1] != 1:
        return
    binary = (
        "pass `target.unsqueeze(1).float()` (the binary path: a sigmoid of the one logit, "
        "labels of `input`'s shape), or "
        if loss != "lovasz_softmax" else
        "use a binary loss such as `tversky_loss(input, target.unsqueeze(1).float())`, or "
    )
    raise LossInputError(
        f"{loss}: `input` ({describe(input)}) has 1 class in dim 1, and `target` "
        f"({describe(target)}) holds class indices: the softmax over one class is always 1, so "
        f"the loss is constant with zero gradient (and a 0/1 mask's 1s are out of range). "
        f"Fix: for a binary mask {binary}give the model 2 output channels (one per class)."
    )


def check_tversky_weights(loss: str, alpha: float, beta: float) -> None:
    """alpha (false positives) and beta (false negatives) must be finite, >= 0 and not both 0."""
    if not (math.isfinite(alpha) and math.isfinite(beta)):
        raise LossInputError(
            f"{loss}: alpha={alpha}, beta={beta}: the weights of the false positives (alpha) "
            f"and false negatives (beta) must be finite numbers; NaN or inf makes the Tversky "
            f"index NaN or 0 whatever the prediction. Fix: e.g. alpha=0.3, beta=0.7 "
            f"(Salehi et al.), or alpha=beta=0.5 for Dice."
        )
    if alpha < 0 or beta < 0:
        raise LossInputError(
            f"{loss}: alpha={alpha}, beta={beta}: the weights of the false positives (alpha) "
            f"and false negatives (beta) must be >= 0; a negative one rewards that error. "
            f"Fix: e.g. alpha=0.3, beta=0.7 to penalise missed foreground more (Salehi et al.), "
            f"or alpha=beta=0.5 for Dice."
        )
    if alpha == 0 and beta == 0:
        raise LossInputError(
            f"{loss}: alpha=0 and beta=0: the Tversky index is then TP / TP = 1 whatever the "
            f"prediction, so the loss is 0 and nothing is learned. Fix: give the errors weight, "
            f"e.g. alpha=0.3, beta=0.7 (Salehi et al.), or alpha=beta=0.5 for Dice."
        )


def check_focal_tversky_gamma(loss: str, gamma: float) -> None:
    """gamma > 0; below 1 it is very likely the other paper's exponent (1 / gamma here)."""
    if not gamma > 0:
        raise LossInputError(
            f"{loss}: gamma={gamma} must be > 0 (the loss is (1 - TI) ** (1 / gamma)). "
            f"Fix: use gamma=4/3 (Abraham & Khan's choice), or 1 for the plain Tversky loss."
        )
    if gamma < 1:
        _warn(
            f"{loss}: gamma={gamma} gives the exponent 1 / gamma = {1 / gamma:.3g} > 1, the "
            f"opposite of what focal Tversky is for: both conventions in use apply an exponent "
            f"below 1, Abraham & Khan's (1 - TI) ** (1 / gamma) with gamma in [1, 3] (losskit's) "
            f"and (1 - TI) ** gamma with gamma < 1 (e.g. Yeung et al.'s unified focal loss). "
            f"Fix: if you copied gamma={gamma} from code of the second form, pass "
            f"gamma={1 / gamma:.4g}; gamma=1 is the plain Tversky loss."
        )


def check_lovasz_classes(loss: str, classes: object) -> None:
    if classes not in ("present", "all"):
        raise LossInputError(
            f"{loss}: classes={classes!r} is not one of 'present', 'all'. 'present' averages "
            f"the classes that occur in the (image's) target, 'all' every class. Fix: "
            f"classes='present' (the paper's default)."
        )
