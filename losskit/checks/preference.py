"""Guardrails of the preference-optimisation losses (:mod:`losskit.losses.preference`).

The classic mistakes: reference log-probabilities that still require grad (the reference model is
trained along with the policy), per-token log-probabilities ``(B, S)`` where per-sequence ones
``(B,)`` are meant, chosen and rejected tensors of different or swapped shapes, "log-probabilities"
that are positive (probabilities, logits or rewards passed instead), a non-positive ``beta``, and
KTO labels that are not boolean. Shape, dtype and device checks read metadata only; the sign and
finiteness checks read values and obey the checks mode (callers guard them with
:func:`losskit.checks.values_enabled`).
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

from losskit.checks import (
    LossInputError,
    LossRuntimeError,
    _first,
    _warn,
    check_finite,
    check_same_device,
    describe,
)

SEQUENCE_LOGPS_FIX = (
    "sum the label tokens' log-probabilities per sequence: `(token_logps * mask).sum(-1)`, or "
    "`losskit.functional.sequence_logps(hidden, weight, labels)`"
)


def check_logps_tensors(loss: str, **tensors: Tensor) -> None:
    """Per-sequence log-probabilities: floating, on one device, each ``(B,)``, all one shape."""
    for name, t in tensors.items():
        if not t.is_floating_point():
            raise LossRuntimeError(
                f"{loss}: `{name}` has {describe(t)}, but log-probabilities are real numbers "
                f"with a gradient. Fix: pass the float log-probabilities of each sequence "
                f"(`{name}.float()` if these already are)."
            )
    check_same_device(loss, **tensors)
    for name, t in tensors.items():
        if t.dim() == 2:
            raise LossInputError(
                f"{loss}: `{name}` has shape {tuple(t.shape)}: per-token log-probabilities "
                f"(batch, sequence), but the loss compares whole sequences and wants one "
                f"log-probability per sequence, shape ({t.shape[0]},). Fix: "
                f"{SEQUENCE_LOGPS_FIX}."
            )
        if t.dim() != 1:
            raise LossInputError(
                f"{loss}: `{name}` has shape {tuple(t.shape)}, but the loss wants one "
                f"log-probability per sequence, shape (batch,). Fix: {SEQUENCE_LOGPS_FIX}."
            )
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"`{k}` {v}" for k, v in shapes.items())
        raise LossInputError(
            f"{loss}: the log-probabilities differ in length ({listed}); entry i of each must "
            f"belong to the same prompt i (a chosen and a rejected answer, scored by the policy "
            f"and by the reference model). Fix: compute them from the same batch of pairs, in "
            f"the same order."
        )


def check_logps_values(loss: str, **tensors: Tensor) -> None:
    """Finite and never positive: a log-probability is at most 0 (value check)."""
    check_finite(loss, **tensors)  # type: ignore[arg-type]  # no key named allow_neg_inf
    for name, t in tensors.items():
        positive = t.detach() > 0
        if not bool(positive.any()):
            continue
        in_unit = bool(((t.detach() >= 0) & (t.detach() <= 1)).all())
        looks = (
            "every value is in [0, 1]: probabilities, not their logarithm. Fix: pass "
            f"`{name}.log()`, or better the summed log-probabilities themselves"
            if in_unit else
            "these look like logits, rewards or scores. Fix: " + SEQUENCE_LOGPS_FIX
        )
        raise LossInputError(
            f"{loss}: `{name}` holds positive values ({_first(positive, t.detach())}), but a "
            f"log-probability is at most 0; {looks}."
        )


def check_reference_detached(loss: str, **refs: Tensor | None) -> None:
    """Reference log-probabilities that require grad: the reference model would be trained."""
    if not torch.is_grad_enabled():
        return
    names = [name for name, t in refs.items() if t is not None and t.requires_grad]
    if not names:
        return
    listed = " and ".join(f"`{n}`" for n in names)
    detached = ", ".join(f"`{n}.detach()`" for n in names)
    _warn(
        f"{loss}: {listed} require{'s' * (len(names) == 1)} grad, so backward also trains the "
        f"reference model (or whatever produced these log-probabilities). The reference must "
        f"stay fixed: the loss measures how far the policy moves away from it. Fix: compute "
        f"them under `torch.no_grad()` (and `ref_model.eval()`), or pass {detached}."
    )


def check_number(loss: str, name: str, value: object) -> None:
    """A setting is a real number (Python or NumPy), not a bool and not a tensor."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return
    raise LossInputError(
        f"{loss}: `{name}`={value!r} ({type(value).__name__}), but it is a fixed setting of the "
        f"loss and must be a real number (a bool or a tensor is not one; a tensor setting would "
        f"also need a device sync per call). Fix: pass a Python number, e.g. "
        f"`{name}=float(x)`."
    )


def check_beta(loss: str, beta: float, *, name: str = "beta") -> None:
    """``beta`` scales the log-ratios inside the loss: it must be a positive number."""
    check_number(loss, name, beta)
    if not (beta > 0 and math.isfinite(beta)):
        raise LossInputError(
            f"{loss}: `{name}`={beta!r}, but it must be a positive finite number: it is the "
            f"inverse temperature of the log-ratios (0 makes the loss constant, a negative value "
            f"trains the policy towards the rejected answers). Fix: e.g. {name}=0.1 (DPO, KTO; "
            f"SimPO uses about 2.0)."
        )


def check_label_smoothing(loss: str, label_smoothing: float) -> None:
    """Conservative DPO's flip probability: in [0, 0.5]."""
    check_number(loss, "label_smoothing", label_smoothing)
    if not 0.0 <= label_smoothing <= 0.5:
        raise LossInputError(
            f"{loss}: label_smoothing={label_smoothing!r}, but it is the probability that a "
            f"preference label is flipped and must lie in [0, 0.5] (above 0.5 the loss prefers "
            f"the rejected answers). Fix: e.g. label_smoothing=0.1, or 0.0 for plain DPO."
        )


def check_kl_value(loss: str, kl: Tensor) -> None:
    """KTO's KL estimate is finite: a NaN or Inf reference point turns every term into NaN."""
    if kl.is_floating_point() and not bool(torch.isfinite(kl).all()):
        raise LossRuntimeError(
            f"{loss}: `kl` holds NaN or Inf ({describe(kl)}), but it sets KTO's reference point "
            f"max(0, mean(kl)), so every term of the loss would be NaN. Fix: compute it from "
            f"finite log-ratios of mismatched pairs (check the reference model's outputs), or "
            f"pass kl=None for the reference point 0."
        )


def check_kto_labels(loss: str, labels: Tensor, policy_logps: Tensor) -> None:
    """KTO labels: a bool per example, True for a desirable answer (metadata only)."""
    if labels.dtype != torch.bool:
        raise LossInputError(
            f"{loss}: `labels` has {describe(labels)}, but KTO reads one bool per example: "
            f"True for a desirable answer, False for an undesirable one (a float or integer "
            f"tensor says nothing about which values mean 'desirable'). Fix: `labels.bool()` "
            f"for 0/1 labels, `labels > 0` for -1/+1 labels."
        )
    if labels.shape != policy_logps.shape:
        raise LossInputError(
            f"{loss}: `labels` has shape {tuple(labels.shape)} but `policy_logps` has shape "
            f"{tuple(policy_logps.shape)}; KTO needs one label per sequence. Fix: one bool per "
            f"entry of `policy_logps`, in the same order."
        )


# ----------------------------------------------------------------------------------------------
# The fused path: hidden states and token labels


def check_hidden_and_labels(loss: str, hidden: Tensor, labels: Tensor, weight: Tensor,
                            names: tuple[str, str]) -> None:
    """``hidden`` ``(B, S, H)`` floating, ``labels`` ``(B, S)`` integer, head ``(V, H)``."""
    h_name, y_name = names
    if not hidden.is_floating_point():
        raise LossRuntimeError(
            f"{loss}: `{h_name}` has {describe(hidden)}, but hidden states are floating point "
            f"(the model's last hidden layer). Fix: pass the hidden states, or "
            f"`{h_name}.float()`."
        )
    if hidden.dim() != 3:
        raise LossInputError(
            f"{loss}: `{h_name}` has shape {tuple(hidden.shape)}, but it must be (batch, "
            f"sequence, hidden). Fix: `{h_name}.unsqueeze(0)` for one sequence, or pass the "
            f"last hidden layer before the head (not the logits)."
        )
    if weight.dim() != 2 or weight.shape[1] != hidden.shape[2]:
        raise LossInputError(
            f"{loss}: `weight` has shape {tuple(weight.shape)} but `{h_name}` has hidden size "
            f"{hidden.shape[2]}; the head must be (vocab, hidden), as `nn.Linear.weight`. Fix: "
            f"pass `lm_head.weight` (transpose it if it is stored as (hidden, vocab))."
        )
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise LossInputError(
            f"{loss}: `{y_name}` has {describe(labels)}, but labels are token ids. Fix: "
            f"`{y_name}.long()`."
        )
    if tuple(labels.shape) != tuple(hidden.shape[:2]):
        raise LossInputError(
            f"{loss}: `{y_name}` has shape {tuple(labels.shape)} but `{h_name}` has shape "
            f"{tuple(hidden.shape)}; each position needs the label its hidden state predicts, "
            f"shape {tuple(hidden.shape[:2])}. Fix: shift once for a causal model: "
            f"`hidden[:, :-1]` with `labels[:, 1:]`, padding marked with ignore_index."
        )


def check_pair_not_swapped(loss: str, hidden_chosen: Tensor, hidden_rejected: Tensor,
                           labels_chosen: Tensor, labels_rejected: Tensor) -> None:
    """Chosen labels given with rejected hidden states (and the other way round)."""
    c, r = tuple(hidden_chosen.shape[:2]), tuple(hidden_rejected.shape[:2])
    if (c != r and hidden_chosen.dim() == hidden_rejected.dim() == 3
            and tuple(labels_chosen.shape) == r and tuple(labels_rejected.shape) == c):
        raise LossInputError(
            f"{loss}: `labels_chosen` has shape {tuple(labels_chosen.shape)}, the shape of "
            f"`hidden_rejected` {tuple(hidden_rejected.shape)}, and `labels_rejected` has "
            f"shape {tuple(labels_rejected.shape)}, that of `hidden_chosen` "
            f"{tuple(hidden_chosen.shape)}: the labels are swapped, so each answer would be "
            f"scored on the other one's tokens. Fix: pass labels_chosen=<chosen token ids>, "
            f"labels_rejected=<rejected token ids>."
        )
    if hidden_chosen.shape[0] != hidden_rejected.shape[0]:
        raise LossInputError(
            f"{loss}: `hidden_chosen` holds {hidden_chosen.shape[0]} sequences but "
            f"`hidden_rejected` holds {hidden_rejected.shape[0]}; row i of each must answer "
            f"the same prompt i. Fix: one chosen and one rejected answer per prompt, in the "
            f"same order."
        )


def check_every_answer_scored(loss: str, labels: Tensor, ignore_index: int, name: str) -> None:
    """Each answer has a scored token (value check): an empty one has log-probability 0."""
    empty = (labels == ignore_index).all(dim=1)  # (B,)
    if bool(empty.any()):
        row = int(empty.nonzero()[0, 0])
        raise LossInputError(
            f"{loss}: `{name}` row {row} has no token to score (every label is "
            f"ignore_index={ignore_index}; {int(empty.sum())} such rows), so that answer's "
            f"log-probability is 0, probability 1: the pair compares nothing (and ORPO's odds "
            f"are infinite). Fix: label the answer's tokens (only the prompt and padding are "
            f"ignore_index), or drop the pair."
        )
