"""Guardrails for the distillation losses (losskit/losses/distillation.py): ``kd_loss``,
``jsd`` and ``linear_kd_loss``.

The classic mistakes of this family: a temperature that is zero or negative, a student and a
teacher over different vocabularies (another tokenizer, a padded head), probabilities (a softmax
already applied) where logits are expected, a teacher whose logits carry a graph (the loss then
backpropagates into the teacher) or the two arguments swapped, and KD at a temperature without the
T^2 factor (the soft-target gradients shrink by 1/T^2). Metadata checks always run; the
``*_values`` checks read the data and run only when ``checks.values_enabled(loss)`` says so.

Log-probabilities in place of logits are *not* a mistake here: ``log_softmax(z)`` is ``z`` minus
one constant per row, and ``softmax(z / T)`` ignores such a shift at every temperature, so the loss
and its gradient are the same (tests/test_distillation.py checks it).
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

from losskit.checks import (
    LossInputError,
    LossNotImplementedError,
    LossRuntimeError,
    _warn,
    _within,
    describe,
)


def _real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_temperature(loss: str, temperature: float) -> None:
    """``temperature`` is a positive finite number: the logits are divided by it."""
    if _real(temperature) and math.isfinite(temperature) and temperature > 0:
        return
    raise LossInputError(
        f"{loss}: temperature={temperature!r}, but both distributions are softmax(logits / "
        f"temperature), so it must be a positive finite number (0 divides by zero, a negative "
        f"value reverses every ranking). Fix: temperature=1.0 for the plain distributions, or "
        f"e.g. temperature=2.0 to soften both."
    )


def check_beta(loss: str, beta: float) -> None:
    """``beta`` of the generalised Jensen-Shannon divergence lies in [0, 1]."""
    if _real(beta) and 0.0 <= beta <= 1.0:
        return
    raise LossInputError(
        f"{loss}: beta={beta!r}, but it is the teacher's weight in the mixture "
        f"beta * teacher + (1 - beta) * student, so it must lie in [0, 1]. Fix: beta=0.5 for the "
        f"symmetric JSD, beta=0.0 for forward KL(teacher || student), beta=1.0 for reverse "
        f"KL(student || teacher)."
    )


def check_divergence(loss: str, divergence: str) -> None:
    if divergence not in ("kl", "jsd"):
        raise LossInputError(
            f"{loss}: divergence={divergence!r} is not one of 'kl', 'jsd'. Fix: "
            f"divergence='kl' for Hinton's KD (as kd_loss), or divergence='jsd' with beta (as jsd)."
        )


def check_logit_pair(loss: str, student: Tensor, teacher: Tensor, what: str = "logits") -> None:
    """Student and teacher scores of one shape ``(*, V)``: the same rows over the same vocab."""
    s_name, t_name = f"student_{what}", f"teacher_{what}"
    if student.dim() == 0:
        raise LossInputError(
            f"{loss}: `{s_name}` is 0-d, but the loss needs a vocabulary dimension (last). "
            f"Fix: pass logits of shape (N, V) or (B, S, V)."
        )
    if student.shape == teacher.shape:
        return
    if student.shape[:-1] == teacher.shape[:-1]:
        shared = min(student.shape[-1], teacher.shape[-1])
        wider = s_name if student.shape[-1] > teacher.shape[-1] else t_name
        raise LossInputError(
            f"{loss}: `{s_name}` has {student.shape[-1]} classes (shape {tuple(student.shape)}) "
            f"but `{t_name}` has {teacher.shape[-1]} (shape {tuple(teacher.shape)}): the two "
            f"distributions must be over the same vocabulary, index by index. Fix: use models "
            f"that share one tokenizer; if one head is only padded (e.g. to a multiple of 64), "
            f"slice the wider one to the shared vocabulary: `{wider}[..., :{shared}]`."
        )
    raise LossInputError(
        f"{loss}: `{s_name}` has shape {tuple(student.shape)} but `{t_name}` has shape "
        f"{tuple(teacher.shape)}: each row of the student is compared with the same row of the "
        f"teacher, so every dimension but the last (the vocabulary) must match. Fix: run both "
        f"models on the same batch (same padding and sequence length), and flatten both the same "
        f"way, e.g. `.reshape(-1, V)`."
    )


def check_floating(loss: str, **tensors: Tensor) -> None:
    """Logits, hidden states and heads are floating point (named in the message)."""
    for name, t in tensors.items():
        if not t.is_floating_point():
            raise LossNotImplementedError(
                f"{loss}: `{name}` has {describe(t)}, but the loss needs floating-point scores "
                f"(the model's raw output, or its hidden states and head). Fix: pass the model "
                f"output, or `{name}.float()`."
            )


def check_not_all_ignored_labels(loss: str, labels: Tensor, ignore_index: int) -> None:
    """A ``"batchmean"`` over nothing: no labels, or every label equal to ``ignore_index``."""
    shape = tuple(labels.shape)
    if labels.numel() == 0:
        _warn(
            f"{loss}: `labels` is empty (shape {shape}), so the mean is over no row; losskit "
            f"returns 0 with zero gradient. Fix: skip empty batches (check the sampler, the "
            f"filtering or `drop_last`)."
        )
    elif not bool((labels != ignore_index).any()):
        _warn(
            f"{loss}: every entry of `labels` (shape {shape}) equals ignore_index="
            f"{ignore_index}, so the mean is over no row; losskit returns 0 with zero gradient. "
            f"Fix: check the padding/masking, or skip such batches."
        )


def check_labels(loss: str, labels: Tensor | None, rows: tuple[int, ...]) -> None:
    """``labels`` (read only to skip ``ignore_index`` rows): integers of shape ``rows``."""
    if labels is None:
        return
    if labels.is_floating_point() or labels.is_complex():
        raise LossRuntimeError(
            f"{loss}: `labels` has {describe(labels)}, but it only marks the rows to skip (those "
            f"equal to ignore_index), so it must hold integer token ids. Fix: `labels.long()`."
        )
    if tuple(labels.shape) != rows:
        raise LossInputError(
            f"{loss}: `labels` has shape {tuple(labels.shape)}, but the logits have rows {rows} "
            f"(every dimension but the vocabulary); one label per row. Fix: pass labels of shape "
            f"{rows}, e.g. the shifted next-token labels flattened the same way as the logits."
        )


def check_teacher_without_grad(loss: str, student: Tensor, teacher: Tensor, name: str) -> None:
    """A teacher that carries a graph: the loss trains it (or the arguments are swapped)."""
    if not (torch.is_grad_enabled() and teacher.requires_grad):
        return
    if not student.requires_grad:
        _warn(
            f"{loss}: `{name}` requires grad but the student's input does not: the arguments "
            f"look swapped, so the teacher would be trained towards the student. Fix: pass the "
            f"model being trained first: {loss}(student, teacher, ...)."
        )
        return
    _warn(
        f"{loss}: `{name}` requires grad ({describe(teacher)}), so the loss backpropagates into "
        f"the teacher as well: it moves towards the student and costs the teacher's activation "
        f"memory. Fix: compute the teacher under `torch.no_grad()`, or pass `{name}.detach()`."
    )


def check_temperature_squared(loss: str, temperature: float, scaled: bool) -> None:
    """KD at a temperature without the T^2 factor: its gradients shrink by 1 / T^2."""
    if scaled or temperature == 1.0:
        return
    _warn(
        f"{loss}: scale_by_temperature_squared=False at temperature={temperature!r}: the soft "
        f"targets' gradients scale as 1/T^2 = {1 / temperature**2:.4g}, so their weight against a "
        f"hard-label loss changes whenever T does (Hinton et al. 2015 multiply by T^2). Fix: "
        f"leave scale_by_temperature_squared=True, or pass temperature=1.0."
    )


def check_not_probabilities_values(loss: str, name: str, logits: Tensor) -> None:
    """A softmax already applied: every row is in [0, 1] and sums to 1 (value check)."""
    if logits.shape[-1] < 2 or logits.numel() < 16:
        return  # a hand-written logit row such as [1.0, 0.0] is a distribution too
    x = logits.detach().float()
    tol = 1e-2 if logits.dtype in (torch.float16, torch.bfloat16) else 1e-4
    if _within(x, 0, 1) and bool(((x.sum(-1) - 1).abs() <= tol).all()):
        _warn(
            f"{loss}: `{name}` ({describe(logits)}) looks like probabilities: every value is in "
            f"[0, 1] and each row sums to 1 along the last dim. The loss applies softmax(x / T) "
            f"itself, and a softmax of probabilities is close to uniform, so the distillation "
            f"signal is lost. Fix: pass the raw logits (no softmax); log_softmax output is fine "
            f"too (softmax ignores the per-row shift)."
        )


def check_heads(loss: str, hidden: Tensor, weight: Tensor, bias: Tensor | None, who: str) -> None:
    """``hidden`` ``(*, H)`` against a head ``weight`` ``(V, H)`` and ``bias`` ``(V,)``."""
    if hidden.dim() == 0 or weight.dim() != 2 or weight.shape[1] != hidden.shape[-1]:
        raise LossInputError(
            f"{loss}: `{who}_hidden` has shape {tuple(hidden.shape)} and `{who}_weight` shape "
            f"{tuple(weight.shape)}, but the logits are `{who}_hidden @ {who}_weight.T`, so the "
            f"head must be (V, H) with H = the hidden states' last dim. Fix: pass the head's "
            f"`nn.Linear.weight` (shape (vocab, hidden)), not its transpose, with hidden states "
            f"of shape (N, H) or (B, S, H)."
        )
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise LossInputError(
            f"{loss}: `{who}_bias` has shape {tuple(bias.shape)}, but the head has "
            f"{weight.shape[0]} rows. Fix: pass the head's `nn.Linear.bias` of shape "
            f"({weight.shape[0]},), or None."
        )
    if weight.dtype != hidden.dtype or (bias is not None and bias.dtype != hidden.dtype):
        raise LossRuntimeError(
            f"{loss}: `{who}_hidden` has dtype {hidden.dtype} but `{who}_weight` {weight.dtype}"
            f"{'' if bias is None else f' and `{who}_bias` {bias.dtype}'}; the head's matmul "
            f"needs one dtype. Fix: `{who}_hidden.to({who}_weight.dtype)`."
        )


def check_same_vocab_heads(loss: str, student_weight: Tensor, teacher_weight: Tensor) -> None:
    """Both heads map to the same vocabulary, index by index."""
    v_s, v_t = student_weight.shape[0], teacher_weight.shape[0]
    if v_s != v_t:
        raise LossInputError(
            f"{loss}: `student_weight` has {v_s} rows (vocabulary) but `teacher_weight` has "
            f"{v_t}: the two distributions must be over the same vocabulary, index by index. "
            f"Fix: use models that share one tokenizer; if one head is only padded, slice both "
            f"to the real vocabulary, e.g. `teacher_weight[:{min(v_s, v_t)}]` and "
            f"`student_weight[:{min(v_s, v_t)}]`."
        )


def check_same_rows(loss: str, student_hidden: Tensor, teacher_hidden: Tensor) -> None:
    """Student and teacher hidden states for the same rows (tokens)."""
    if student_hidden.shape[:-1] != teacher_hidden.shape[:-1]:
        raise LossInputError(
            f"{loss}: `student_hidden` has shape {tuple(student_hidden.shape)} but "
            f"`teacher_hidden` has shape {tuple(teacher_hidden.shape)}: each row (token) of the "
            f"student is compared with the same row of the teacher, so every dimension but the "
            f"last (the hidden size, which may differ) must match. Fix: run both models on the "
            f"same batch, and flatten both the same way, e.g. `.reshape(-1, H)`."
        )
