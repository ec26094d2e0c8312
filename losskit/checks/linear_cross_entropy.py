"""Guardrails of :func:`losskit.functional.linear_cross_entropy`: the shapes of the hidden
states, the head and the target, and the ``options`` argument.

torch 2.13 raises ``RuntimeError`` for each shape error here (``ValueError`` for a batch-size
mismatch); losskit raises the same classes (:class:`LossRuntimeError`, :class:`LossInputError`)
with a message that names the fix for the shapes received.

>>> import losskit.functional as LF
>>> try:
...     LF.linear_cross_entropy(torch.zeros(2, 3, 4), torch.zeros(10, 4), torch.zeros(2, 3).long())
... except RuntimeError as error:  # torch's class for this mistake
...     print(error)
linear_cross_entropy: expected input with dimensionality 1 or 2, got 3... Fix:
`linear_cross_entropy(input.flatten(0, 1), linear_weight, target.flatten(), ...)`...
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from losskit.checks import LossInputError, LossRuntimeError

__all__ = [
    "LossOptionsError",
    "adjust_options",
    "check_head_shape",
    "check_hidden_dims",
    "check_k_dim_batched",
    "check_linear_bias_shape",
    "check_options",
    "check_probabilities_without_ignore_index",
    "check_target_rows",
    "check_weight_not_differentiable",
    "chunk_size_from_options",
]

LOSS = "linear_cross_entropy"


class LossOptionsError(LossInputError, AttributeError):
    """``options`` is not a ``torch.nn.LinearCrossEntropyOptions`` (torch fails there with an
    ``AttributeError`` on ``options._adjust``, so a user's ``except AttributeError`` still
    catches it)."""


def check_options(options: object) -> None:
    """``options`` is None or a ``torch.nn.LinearCrossEntropyOptions``."""
    if options is None or isinstance(options, torch.nn.LinearCrossEntropyOptions):
        return
    raise LossOptionsError(
        f"{LOSS}: `options` is a {type(options).__name__} ({options!r}); expected None or a "
        f"torch.nn.LinearCrossEntropyOptions. Fix: `options=None`, or e.g. "
        f"`options=torch.nn.LinearCrossEntropyOptions(batch_chunk_size=1024)`."
    )


def check_hidden_dims(input: Tensor) -> None:
    """``input`` is ``(in_features,)`` or ``(N, in_features)``, as torch requires.

    A ``(B, T, D)`` input (the LLM layout) is the common case of a wrong rank: the fix flattens
    the batch and time dims of both ``input`` and ``target``.
    """
    if input.dim() in (1, 2):
        return
    got = f"expected input with dimensionality 1 or 2, got {input.dim()}"
    if input.dim() == 0:
        fix = "give one vector of in_features per sample, shape (in_features,) or (N, in_features)"
    else:
        lead = "input.flatten(0, 1)" if input.dim() == 3 else f"input.flatten(0, {input.dim() - 2})"
        fix = (
            f"`{LOSS}({lead}, linear_weight, target.flatten(), ...)`: rows of shape "
            f"({math.prod(input.shape[:-1])}, {input.shape[-1]}) and one class index per row"
        )
    raise LossRuntimeError(
        f"{LOSS}: {got}; `input` has shape {tuple(input.shape)}, but torch's "
        f"linear_cross_entropy takes (in_features,) or (N, in_features) only. Fix: {fix}."
    )


def check_head_shape(input: Tensor, linear_weight: Tensor) -> None:
    """``linear_weight`` is ``(C, in_features)`` or ``(C, d1, ..., dK, in_features)``; a
    transposed ``(in_features, C)`` head is named as such."""
    if linear_weight.dim() < 2:
        raise LossRuntimeError(
            f"{LOSS}: expected linear_weight with dimensionality at least 2, got "
            f"{linear_weight.dim()} (shape {tuple(linear_weight.shape)}). Fix: pass the head's "
            f"weight shaped (num_classes, in_features), as `nn.Linear(in_features, "
            f"num_classes).weight`."
        )
    d = input.shape[-1]
    if linear_weight.shape[-1] == d:
        return
    if linear_weight.dim() == 2 and linear_weight.shape[0] == d:
        fix = (
            f"`linear_weight` looks transposed ({tuple(linear_weight.shape)} is (in_features, "
            f"num_classes)); pass `linear_weight.T`, shaped ({linear_weight.shape[1]}, {d}) as "
            f"`nn.Linear.weight` is"
        )
    else:
        fix = f"the head's weight must end in in_features = input.shape[-1] = {d}"
    raise LossRuntimeError(
        f"{LOSS}: expected equal input and linear_weight last dimensions (in_features), got "
        f"{d} and {linear_weight.shape[-1]}, respectively; `input` has shape "
        f"{tuple(input.shape)}, `linear_weight` {tuple(linear_weight.shape)}. Fix: {fix}."
    )


def check_linear_bias_shape(linear_bias: Tensor | None, logits_classes: tuple[int, ...]) -> None:
    """``linear_bias`` is ``(C, d1, ..., dK)``, the head's shape without in_features."""
    if linear_bias is None or tuple(linear_bias.shape) == logits_classes:
        return
    if linear_bias.numel() == math.prod(logits_classes):
        fix = f"`linear_bias.reshape{logits_classes}`"
    else:
        fix = f"one bias per output of the head, shape {logits_classes}"
    raise LossRuntimeError(
        f"{LOSS}: expected linear_bias shape {logits_classes}, got "
        f"{tuple(linear_bias.shape)}. Fix: {fix}."
    )


def check_k_dim_batched(input: Tensor, linear_weight: Tensor) -> None:
    """A K-dimensional head ``(C, d1, ..., dK, D)`` needs a batched ``(N, D)`` input."""
    if linear_weight.dim() == 2 or input.dim() == 2:
        return
    raise LossRuntimeError(
        f"{LOSS}: K-dimensional loss defined by linear_weight shape "
        f"{tuple(linear_weight.shape)} requires batched input, (N, {input.shape[-1]}), got "
        f"unbatched input with shape {tuple(input.shape)}. Fix: `input.unsqueeze(0)` and "
        f"`target.unsqueeze(0)`."
    )


def check_probabilities_without_ignore_index(ignore_index: int | None) -> None:
    """Class-probability targets take no ``ignore_index`` (torch: it must stay None)."""
    if ignore_index is None:
        return
    raise LossRuntimeError(
        f"{LOSS}: ignore_index cannot be specified when target contains probabilities (got "
        f"ignore_index={ignore_index}; `target` has the logits' shape, so it is read as class "
        f"probabilities). Fix: leave ignore_index=None, and give rows to skip a zero target "
        f"with reduction='sum'."
    )


def check_target_rows(input: Tensor, target: Tensor) -> None:
    """Class-index targets: one per row of ``input`` (``(N,)``, or ``()`` for a 1-D input).

    A ``(B, T)`` target beside a flattened ``(B*T, D)`` input gets the fix ``target.flatten()``.
    torch raises ``ValueError`` for a batch-size mismatch and ``RuntimeError`` for a 2-D target
    of the right batch size (multi-target); so does losskit. ``(N, 1)`` targets and the dtype are
    left to :func:`losskit.checks.check_class_target`.
    """
    if input.dim() == 1:
        if target.dim() != 0:
            raise LossInputError(
                f"{LOSS}: `input` has shape {tuple(input.shape)} (one unbatched sample) but "
                f"`target` has shape {tuple(target.shape)}; an unbatched input takes a 0-d "
                f"class index. Fix: `target.reshape(())` for one label, or a batch: "
                f"`input.unsqueeze(0)` with a target of shape (1,)."
            )
        return
    n = input.shape[0]
    if (target.dim() == 1 and target.shape[0] == n) or tuple(target.shape) == (n, 1):
        return
    if target.dim() >= 2 and target.numel() == n:
        fix = "`target.flatten()` (flattened in the same order as `input`)"
    else:
        fix = f"one class index per row of `input`, a target of shape ({n},)"
    error = LossRuntimeError if target.dim() >= 1 and target.shape[0] == n else LossInputError
    raise error(
        f"{LOSS}: `input` has shape {tuple(input.shape)}, {n} rows, but `target` has shape "
        f"{tuple(target.shape)}; expected input batch_size ({n}) to match target batch_size, "
        f"one class index per row: shape ({n},). Fix: {fix}."
    )


def check_weight_not_differentiable(weight: Tensor | None) -> None:
    """Class weights that require grad with class-index targets: torch's ``nll_loss`` has no
    gradient for them and raises."""
    if weight is None or not (weight.requires_grad and torch.is_grad_enabled()):
        return
    raise LossRuntimeError(
        f"{LOSS}: `weight` requires grad, but with class-index targets torch's cross-entropy is "
        f"not differentiable with respect to argument 'weight'. Fix: `weight.detach()`, or "
        f"class-probability targets (the logits' shape), where the weight gets a gradient."
    )


def chunk_size_from_options(options, chunk_size: int | None) -> int | None:
    """losskit's ``chunk_size`` from ``options.batch_chunk_size`` (the only field that maps).

    ``options.batch_chunk_size`` set and ``chunk_size`` None: rows per chunk. Both set and
    different: an error, as torch raises for two disagreeing chunk sizes. torch's
    ``chunking_method`` heuristic is not applied: losskit's own rule
    (:func:`losskit.kernels.linear_cross_entropy.chunk_tokens`) picks the chunk otherwise.
    """
    given = None if options is None else options.batch_chunk_size
    if given is None or chunk_size in (None, given):
        return given if chunk_size is None else chunk_size
    raise LossInputError(
        f"{LOSS}: chunk_size={chunk_size} and options.batch_chunk_size={given} give different "
        f"chunk sizes; pass only one. Fix: drop `chunk_size`, or build the options with "
        f"batch_chunk_size={chunk_size}."
    )


def adjust_options(options, input: Tensor, num_classes: int) -> None:
    """Run torch's own call-time validation of ``options`` (it raises ``ValueError`` when
    ``batch_chunk_size`` and ``chunking_method`` disagree), with losskit's message."""
    n = input.shape[0] if input.dim() == 2 else 1
    try:
        options._adjust(n, input.shape[-1], num_classes, input.dtype, input.device)
    except ValueError as error:
        raise LossInputError(
            f"{LOSS}: `options` is invalid for these shapes: {error} Fix: set either "
            f"batch_chunk_size or chunking_method (chunking_method=None to use "
            f"batch_chunk_size)."
        ) from error
