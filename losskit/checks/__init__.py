"""Guardrails: one small function per loss mistake.

Each ``check_*`` function reads like the mistake it catches and raises :class:`LossInputError`
(the input is certainly wrong) or warns :class:`LossWarning` (the input is very likely a mistake).
Every message says which argument, what was received, why it is wrong and the one-line fix.

Two kinds of checks:

* metadata checks (shapes, dtypes, devices) read no tensor values and always run;
* value checks (ranges, sums, NaN) cost a pass over the data and, on a GPU, a host sync. They obey
  the checks mode: ``"startup"`` (default) runs them on the first :data:`STARTUP_CALLS` calls of
  each loss and then never again, ``"always"`` keeps them on, ``"off"`` turns them off. Set the mode
  with :func:`set_checks`, the :func:`checks` context manager or the ``LOSSKIT_CHECKS`` environment
  variable. Value checks never run while ``torch.compile`` traces a function.

Where torch itself raises for a mistake, the error is also an instance of torch's exception class
(:class:`LossIndexError` is an ``IndexError``, :class:`LossRuntimeError` a ``RuntimeError``), so
existing ``except`` clauses keep working.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import os
import sys
import warnings
from collections import Counter
from collections.abc import Iterator
from types import FrameType

import torch
from torch import Tensor

MODES = ("startup", "always", "off")
STARTUP_CALLS = 8  # value checks per loss function in "startup" mode: enough to see a first step


class LossInputError(ValueError):
    """The input to a loss is certainly wrong; the message names the argument and the fix.

    >>> import losskit.functional as LF
    >>> try:
    ...     LF.mse_loss(torch.zeros(4, 1), torch.zeros(4))  # (N, 1) against (N,)
    ... except LossInputError as error:
    ...     print(error)
    mse_loss: `input` has shape (4, 1) but `target` has shape (4,); they would broadcast to
    (4, 4) ... Fix: make the shapes equal: `input.squeeze(-1)`.
    """


class LossIndexError(LossInputError, IndexError):
    """A class index is out of range (torch raises ``IndexError`` here too).

    >>> import losskit.functional as LF
    >>> try:
    ...     LF.cross_entropy(torch.zeros(2, 3), torch.tensor([0, 3]))  # 3 classes: 0, 1, 2
    ... except IndexError as error:  # torch's class for this mistake still catches it
    ...     print(type(error).__name__, "-", error)
    LossIndexError - cross_entropy: `target` holds a class index outside [0, 3): 3 at index
    (1,) ... Fix: labels must be 0..2 ...
    """


class LossRuntimeError(LossInputError, RuntimeError):
    """A range, dtype or shape error for which torch raises ``RuntimeError``.

    >>> import losskit.functional as LF
    >>> try:
    ...     LF.cross_entropy(torch.zeros(2, 3), torch.tensor([0.0, 1.0]))  # float class indices
    ... except RuntimeError as error:
    ...     print(type(error).__name__, isinstance(error, ValueError))
    LossRuntimeError True
    """


class LossNotImplementedError(LossInputError, NotImplementedError):
    """An input dtype torch has no loss kernel for (torch raises ``NotImplementedError``)."""


class LossTypeError(LossInputError, TypeError):
    """An argument of the wrong Python type where torch raises ``TypeError`` (a ``reduction``
    that is not a string, lengths that are neither integer tensors nor sequences of ints, a
    ``label_smoothing`` that is not a number)."""


class LossWarning(UserWarning):
    """The input to a loss is very likely a mistake; the message names the fix.

    >>> import warnings, losskit.functional as LF
    >>> with warnings.catch_warnings(record=True) as caught, checks("always"):
    ...     warnings.simplefilter("always")
    ...     _ = LF.nll_loss(torch.zeros(4, 5), torch.tensor([0, 1, 2, 3]))  # logits, not logs
    >>> [w.category.__name__ for w in caught]
    ['LossWarning']
    >>> print(caught[0].message)
    nll_loss: `input` (...) does not look like log-probabilities: ... Fix:
    `nll_loss(input.log_softmax(1), target)`, or `cross_entropy(input, target)` on the logits.
    """


def _mode_from_env() -> str:
    mode = os.environ.get("LOSSKIT_CHECKS", "startup").strip().lower() or "startup"
    if mode not in MODES:
        raise LossInputError(
            f"LOSSKIT_CHECKS={mode!r} is not a checks mode. Fix: set it to one of "
            f"{', '.join(MODES)}."
        )
    return mode


_mode = _mode_from_env()
_calls: Counter[str] = Counter()


class _Every:
    """Holds every loss name: :data:`settled` while the checks are off."""

    def __contains__(self, loss: object) -> bool:
        return True

    def add(self, loss: str) -> None:
        """Nothing to add (a thread that counted a call as the mode turned "off")."""


#: The losses whose calls now run no value check (``loss in settled``, a set lookup a fast path
#: makes on every call): those past their startup calls, or every loss in ``"off"`` mode.
settled: set[str] | _Every = _Every() if _mode == "off" else set()


def _settle() -> None:
    """Rebuild :data:`settled` from the mode and the call counts (after a mode change)."""
    global settled
    if _mode == "off":
        settled = _Every()
    else:
        done = _mode == "startup"
        counts = list(_calls.items())  # one C-level copy: another thread may count a call now
        settled = {loss for loss, n in counts if done and n >= STARTUP_CALLS}


def get_checks() -> str:
    """The current checks mode: ``"startup"``, ``"always"`` or ``"off"``.

    >>> with checks("off"):
    ...     get_checks()
    'off'
    >>> get_checks() in MODES
    True
    """
    return _mode


def set_checks(mode: str) -> None:
    """Set the checks mode for the whole process and restart the startup call counts.

    >>> set_checks("always"); get_checks()
    'always'
    >>> set_checks("startup")
    """
    global _mode
    if mode not in MODES:
        raise LossInputError(
            f"set_checks(mode={mode!r}): not a checks mode. Fix: use one of {', '.join(MODES)}."
        )
    _mode = mode
    _calls.clear()
    _settle()


@contextlib.contextmanager
def checks(mode: str) -> Iterator[None]:
    """Use ``mode`` inside a ``with`` block, then restore the previous mode.

    >>> with checks("off"):
    ...     get_checks()
    'off'
    """
    previous, saved_calls = _mode, _calls.copy()
    set_checks(mode)
    try:
        yield
    finally:
        set_checks(previous)
        _calls.update(saved_calls)
        _settle()


def values_enabled(loss: str, *tensors: object) -> bool:
    """Whether this call of ``loss`` runs value checks (counts the call in ``"startup"`` mode).

    ``tensors`` are what the value checks would read: a meta tensor (a shape without data, as
    in a FLOP count or a deferred initialisation) runs none, and the call is not counted; torch
    computes the loss's shape there, and so does losskit.

    >>> with checks("always"):
    ...     values_enabled("mse_loss", torch.zeros(2)), values_enabled("mse_loss",
    ...                                                               torch.zeros(2, device="meta"))
    (True, False)
    """
    if _mode == "startup" and _calls[loss] >= STARTUP_CALLS:  # done: the common case, first
        return False
    if _mode == "off" or _tracing() or _without_data(tensors):
        return False
    if _mode == "always":
        return True
    _calls[loss] += 1
    if _calls[loss] == STARTUP_CALLS:  # this call is the last to run them
        settled.add(loss)
    return _calls[loss] <= STARTUP_CALLS


def _without_data(tensors: tuple[object, ...]) -> bool:
    """Whether any of ``tensors`` is a meta tensor (no values to read)."""
    return any(isinstance(t, Tensor) and t.is_meta for t in tensors)


def index_range_enabled(target: Tensor) -> bool:
    """Class-index range checks on CPU run after the startup calls too (torch raises IndexError
    there on every call, and a CPU check needs no device sync); never under torch.compile."""
    return _mode != "off" and target.device.type == "cpu" and not _tracing()


def _tracing() -> bool:
    """Under torch.compile or a torch.func transform (``vmap`` cannot read values)."""
    return _functorch_active() or _compiling()


_functorch_active = torch._C._are_functorch_transforms_active
_compiling = torch.compiler.is_compiling


# ----------------------------------------------------------------------------------------------
# Message helpers


def describe(t: Tensor) -> str:
    """``shape (3, 7), dtype torch.float32, device cpu`` for a tensor."""
    return f"shape {tuple(t.shape)}, dtype {t.dtype}, device {t.device}"


def not_ignored(target: Tensor, ignore_index: int | None) -> Tensor:
    """Where an integer ``target`` is not ``ignore_index`` (None: nothing is ignored).

    An ``ignore_index`` outside the target dtype's range ignores nothing: ``uint8_target != -100``
    compares in uint8, where -100 wraps to 156, and would hide a real (out-of-range) label 156.
    """
    if ignore_index is not None and not target.is_floating_point() and target.dtype != torch.bool:
        info = torch.iinfo(target.dtype)
        if not info.min <= ignore_index <= info.max:
            ignore_index = None
    if ignore_index is None:
        return torch.ones_like(target, dtype=torch.bool)
    return target != ignore_index


def _first(mask: Tensor, values: Tensor) -> str:
    """Where the first True of ``mask`` is and the value there (error path only)."""
    if values.dim() == 0:
        return f"{values.item()!r} (the 0-d target)"
    idx = tuple(int(i) for i in torch.nonzero(mask)[0].tolist())
    count = int(mask.sum())
    return f"{values[idx].item()!r} at index {idx} ({count} such element{'s' * (count != 1)})"


# The losskit package (this file is losskit/checks/__init__.py) and torch.nn's Modules.
_INTERNAL = (
    os.path.dirname(os.path.dirname(__file__)), os.path.dirname(torch.nn.modules.__file__)
)


def _warn(message: str) -> None:
    """Warn with the caller's line: the first frame outside losskit and torch.nn's Modules."""
    frame: FrameType | None = sys._getframe(1)
    level = 2  # stacklevel 2 is _warn's caller
    while frame is not None and frame.f_code.co_filename.startswith(_INTERNAL):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, LossWarning, stacklevel=level)


# ----------------------------------------------------------------------------------------------
# Metadata checks: always on, never read values


def check_floating_input(loss: str, input: Tensor, *, allow_complex: bool = False) -> None:
    ok = input.is_floating_point() or (allow_complex and input.is_complex())
    if not ok:
        raise LossNotImplementedError(
            f"{loss}: `input` has {describe(input)}, but a loss needs floating-point predictions "
            f"(the model's raw output). Fix: pass the model output, or `input.float()`."
        )


def on_one_device(first: Tensor, *others: Tensor | None) -> bool:
    """Whether every tensor given is on ``first``'s device: the cheap test that decides whether
    :func:`check_same_device` (which builds its message, and exempts 0-d CPU tensors) runs."""
    device = first.device
    for t in others:  # noqa: SIM110 (a plain loop: all() over a generator costs twice as much)
        if t is not None and t.device != device:
            return False
    return True


def check_same_device(loss: str, **tensors: Tensor | None) -> None:
    """Every tensor on the first one's device. A 0-d CPU tensor is exempt: torch treats it as a
    scalar beside tensors on any device (``target=torch.tensor(1.)`` with CUDA inputs)."""
    present = {k: v for k, v in tensors.items()
               if v is not None and not (v.dim() == 0 and v.device.type == "cpu")}
    if not present:
        return
    first = next(iter(present.values())).device
    odd = [k for k, v in present.items() if v.device != first]
    if odd:
        where = ", ".join(f"`{k}` on {v.device}" for k, v in present.items())
        moves = "; ".join(f"`{k} = {k}.to({str(first)!r})`" for k in odd)
        raise LossRuntimeError(
            f"{loss}: tensors are on different devices ({where}). "
            f"Fix: move them to one device, e.g. {moves}."
        )


def check_same_shape(loss: str, input: Tensor, target: Tensor) -> None:
    """Regression losses: different shapes would broadcast silently ((N, 1) vs (N,) -> (N, N)).

    Shapes that would broadcast raise :class:`LossInputError` (torch only warns); shapes that
    cannot broadcast raise :class:`LossRuntimeError`, torch's class for them. The fix suggested
    is one that fits the shapes received.
    """
    if input.shape == target.shape:
        return
    error: type[LossInputError] = LossInputError
    try:
        shape = torch.broadcast_shapes(input.shape, target.shape)
        consequence = (
            f"they would broadcast to {tuple(shape)} and compare every prediction with every "
            f"target, so the loss is wrong and the model does not learn"
        )
    except RuntimeError:
        error = LossRuntimeError
        consequence = "they cannot be compared element by element"
    raise error(
        f"{loss}: `input` has shape {tuple(input.shape)} but `target` has shape "
        f"{tuple(target.shape)}; {consequence}. Fix: {_same_shape_fix(input, target)}."
    )


def _same_shape_fix(input: Tensor, target: Tensor) -> str:
    """A reshape that is right for these two shapes, or what to look at when none is."""
    if input.shape[-1:] == (1,) and input.shape[:-1] == target.shape:
        return "make the shapes equal: `input.squeeze(-1)`"
    if target.shape[-1:] == (1,) and target.shape[:-1] == input.shape:
        return "make the shapes equal: `target.squeeze(-1)`"
    if input.numel() == target.numel():
        return "make the shapes equal, e.g. `input.view_as(target)` (same element count)"
    return (
        f"one prediction per target value is needed, but `input` has {input.numel()} elements "
        f"and `target` {target.numel()}: check the model's output size and the batch"
    )


def check_binary_target_dtype(loss: str, target: Tensor) -> None:
    if not target.is_floating_point():
        raise LossRuntimeError(
            f"{loss}: `target` has {describe(target)}, but binary targets must be floating point "
            f"(0./1. or probabilities). Fix: `target = target.float()`."
        )


def check_binary_target_shape(loss: str, input: Tensor, target: Tensor) -> None:
    if input.shape != target.shape:
        fix = "`input.squeeze(-1)`" if input.shape[-1:] == (1,) else "`target.view_as(input)`"
        raise LossInputError(
            f"{loss}: `target` has shape {tuple(target.shape)} but `input` has shape "
            f"{tuple(input.shape)}; binary losses compare them element by element and torch "
            f"rejects different sizes. Fix: make them equal, e.g. {fix}."
        )


def check_class_weight(
    loss: str,
    weight: Tensor | None,
    num_classes: int,
    input: Tensor,
    *,
    name: str = "weight",
    input_name: str = "input",
    classes: str = "in dim 1 of `input`",
) -> None:
    """Per-class weights: one entry per class, the input's dtype. ``name`` / ``input_name`` are
    the caller's argument names (focal's ``alpha``, linear_cross_entropy's ``class_weight`` and
    ``hidden``); ``classes`` says where the classes are."""
    if weight is None:
        return
    if weight.dim() != 1 or weight.numel() != num_classes:
        raise LossRuntimeError(
            f"{loss}: `{name}` has shape {tuple(weight.shape)}, but class weights need one entry "
            f"per class: shape ({num_classes},) for the {num_classes} classes {classes}. "
            f"Fix: pass a 1-D tensor of length {num_classes}."
        )
    if weight.dtype != input.dtype:
        raise LossRuntimeError(
            f"{loss}: `{name}` has dtype {weight.dtype} but `{input_name}` has {input.dtype}; "
            f"torch needs them equal. Fix: `{name}.to({input_name}.dtype)` (nn.Module losses "
            f"follow `.to(dtype)` of their owner)."
        )


def check_broadcast_weight(loss: str, name: str, weight: Tensor | None, input: Tensor) -> None:
    """``weight`` / ``pos_weight`` of BCE losses must broadcast to the input, not enlarge it."""
    if weight is None:
        return
    try:
        ok = torch.broadcast_shapes(weight.shape, input.shape) == input.shape
    except RuntimeError:
        ok = False
    if not ok:
        hint = f"a shape that broadcasts to {tuple(input.shape)}"
        if name == "pos_weight" and input.dim() == 1:
            hint = "shape (1,), one weight for the positive class of every sample"
        elif name == "pos_weight" and input.dim() == 2:
            hint = f"shape ({input.shape[-1]},), one entry per label in the last dim"
        elif name == "pos_weight" and input.dim() > 2 and input.shape[1] == 1:
            hint = (  # one mask channel: one ratio, not one weight per row or column of pixels
                "one positive weight for the single mask channel, e.g. `pos_weight = "
                "torch.tensor([n_negative / n_positive])` (shape (1,), broadcasts over every "
                "pixel)"
            )
        elif name == "pos_weight" and input.dim() > 2:  # (N, C, d1, ...): labels in dim 1
            ones = ", 1" * (input.dim() - 2)
            hint = (
                f"shape ({input.shape[1]}{ones}), one entry per label in dim 1 that broadcasts "
                f"over the {input.dim() - 2} dims after it, e.g. "
                f"`pos_weight.view({input.shape[1]}{ones})`"
            )
        raise LossRuntimeError(
            f"{loss}: `{name}` has shape {tuple(weight.shape)}, which does not broadcast over "
            f"`input` of shape {tuple(input.shape)}. Fix: use {hint}."
        )
    if name == "pos_weight" and input.dim() > 2 and weight.dim() == 1 and weight.numel() > 1:
        # (W,) broadcasts over the last, spatial dim of (N, C, H, W): it weighs columns of pixels.
        c, ones = input.shape[1], ", 1" * (input.dim() - 2)
        fix = ("one ratio for the single mask channel: `pos_weight = "
               "torch.tensor([n_negative / n_positive])`" if c == 1 else
               f"per-class weights in dim 1: `pos_weight.view({c}{ones})`"
               if weight.numel() == c else f"a ({c}{ones}) tensor, one weight per class")
        _warn(
            f"{loss}: `pos_weight` has shape {tuple(weight.shape)}, which broadcasts over the "
            f"last dim of `input` {tuple(input.shape)}: a spatial dim, so it weighs columns of "
            f"pixels, not classes (dim 1). Fix: {fix}."
        )


# Losses that read a floating target of the input's shape as binary / multi-label 0/1 labels.
BINARY_LABEL_LOSSES = ("focal_loss", "dice_loss", "tversky_loss", "focal_tversky_loss")


def _same_shape_class_target(loss: str, input: Tensor, target: Tensor) -> None:
    """A target of the input's shape where class indices are read: one-hot labels given to
    nll_loss (which has no probability targets), or binary 0/1 labels of an integer dtype given
    to focal/dice (which read only floating same-shape targets as binary labels)."""
    class_dim = 1 if input.dim() >= 2 else 0
    indices = (input.shape[0], *input.shape[2:]) if input.dim() >= 2 else ()
    # argmax over one class is always 0: a one-hot reading needs 2 or more classes
    one_hot_possible = input.dim() >= 2 and input.shape[class_dim] > 1
    if loss in BINARY_LABEL_LOSSES:
        one_hot = f", or `target.argmax({class_dim})` for one-hot class labels"
        raise LossRuntimeError(
            f"{loss}: `target` has {describe(target)}, the same shape as `input`; {loss} reads "
            f"such a target as binary / multi-label 0/1 labels only when it is floating point, "
            f"and otherwise as class indices, which need shape {indices}. Fix: "
            f"`target = target.float()` for binary or multi-label labels"
            f"{one_hot if one_hot_possible else ''}."
        )
    if loss == "lovasz_softmax" and not one_hot_possible:
        raise LossRuntimeError(
            f"{loss}: `target` has {describe(target)}, the same shape as `input`, which has 1 "
            f"class in dim 1: a binary mask. Lovasz-softmax takes class indices of shape "
            f"{indices} and needs 2 or more classes (a softmax over one class is always 1). "
            f"Fix: give the model 2 output channels and pass `target.squeeze(1).long()`, or "
            f"use a binary loss such as `tversky_loss(input, target.float())`."
        )
    raise LossRuntimeError(
        f"{loss}: `target` has {describe(target)}, the same shape as `input`: one-hot labels or "
        f"class probabilities, but {loss} takes one class index per sample, shape {indices}. "
        f"Fix: `target = target.argmax({class_dim})`, or, for class probabilities, "
        f"`cross_entropy` on the logits."
    )


def check_softcap(loss: str, softcap: float | None) -> None:
    """``softcap`` is None or a positive finite number: ``s tanh(x / s)`` with ``s <= 0`` zeroes
    or flips every logit."""
    if softcap is None:
        return
    ok = isinstance(softcap, numbers.Real) and not isinstance(softcap, bool)
    if not (ok and math.isfinite(softcap) and softcap > 0):
        raise LossInputError(
            f"{loss}: softcap={softcap!r}, but the logits become softcap * tanh(logits / softcap), "
            f"so softcap must be a positive finite number (0 zeroes every logit, a negative value "
            f"flips their sign). Fix: pass e.g. softcap=30.0, or softcap=None for no capping."
        )


def check_chunk_size(loss: str, chunk_size: int | None) -> None:
    """``chunk_size`` is None (chosen from the shapes) or a positive number of tokens."""
    if chunk_size is None:
        return
    ok = isinstance(chunk_size, numbers.Integral) and not isinstance(chunk_size, bool)
    if not (ok and chunk_size > 0):
        raise LossInputError(
            f"{loss}: chunk_size={chunk_size!r}, but it counts the tokens per chunk, so it must "
            f"be a positive int. Fix: pass e.g. chunk_size=1024, or chunk_size=None to have it "
            f"chosen from the shapes."
        )


_INDEX_DTYPES = (torch.int64, torch.uint8)


def check_class_target(loss: str, input: Tensor, target: Tensor) -> None:
    """Class-index targets: dtype, (N, 1) targets, (B, T, C) logits, and spatial sizes."""
    if target.dtype in _INDEX_DTYPES:  # the accepted layouts first, in a few metadata reads
        dims = input.dim()
        if dims >= 2 and target.shape == (input.shape[0], *input.shape[2:]):
            return
        if dims == 1 and target.dim() == 0:
            return
    # nll_loss of one sample with one class, (1,) input and (1,) index target: torch computes
    # it, forward and backward (there is no probability target to confuse it with).
    single = (loss == "nll_loss" and input.shape == (1,) and target.shape == (1,)
              and not target.is_floating_point())
    if input.dim() > 0 and target.shape == input.shape and not single:
        _same_shape_class_target(loss, input, target)
    if target.is_floating_point() or target.dtype == torch.bool:
        other = {
            "cross_entropy": "or, for class probabilities, give `target` the same shape as "
            "`input`",
            "focal_loss": "or, for binary / multi-label targets, pass float 0./1. labels of "
            "`input`'s shape",
            "dice_loss": "or, for binary / multi-label targets, pass float 0./1. labels of "
            "`input`'s shape",
        }.get(loss)
        raise LossRuntimeError(
            f"{loss}: `target` has {describe(target)} and a shape that selects class indices "
            f"(`input` has shape {tuple(input.shape)}); class indices must be integers "
            f"(int64). Fix: `target = target.long()`{', ' + other if other else ''}."
        )
    if target.dtype not in (torch.int64, torch.uint8):
        raise LossRuntimeError(
            f"{loss}: `target` has {describe(target)}; torch expects class indices of dtype "
            f"int64 (Long) or uint8. Fix: `target = target.long()`."
        )
    if input.dim() == 0:
        raise LossInputError(
            f"{loss}: `input` is 0-d; expected 1 or more dimensions, (C,) or (N, C, ...). "
            f"Fix: give one score per class."
        )
    if input.dim() == 1:
        # torch's forward also takes a (1,) target here, but its backward then fails with
        # "size mismatch": refuse it up front, with the fix.
        if target.dim() != 0 and not single:
            raise LossInputError(
                f"{loss}: `input` has shape {tuple(input.shape)} (one unbatched sample of "
                f"{input.shape[0]} classes) but `target` has shape {tuple(target.shape)}. Fix: a "
                f"0-d target `target[0]`, or a batch: `input.unsqueeze(0)` with target (1,)."
            )
        return
    if input.dim() == 2 and target.dim() == 2 and target.shape == (input.shape[0], 1):
        raise LossRuntimeError(
            f"{loss}: `target` has shape {tuple(target.shape)} but needs shape "
            f"({input.shape[0]},): one class index per sample. Fix: `target = target.squeeze(1)`."
        )
    if target.shape[:1] != input.shape[:1]:
        raise LossInputError(
            f"{loss}: expected input batch_size ({input.shape[0]}) to match target batch_size "
            f"({target.shape[0] if target.dim() else 'a 0-d target'}); `input` has shape "
            f"{tuple(input.shape)}, `target` {tuple(target.shape)}. Fix: pass matching batches."
        )
    expected = (input.shape[0], *input.shape[2:])
    if target.shape == expected:
        return
    if input.dim() >= 3 and target.shape == input.shape[:-1]:
        c = input.shape[-1]
        if input.dim() == 3:
            what = f"sequence logits (B={input.shape[0]}, T={input.shape[1]}, C={c})"
        else:  # (N, d1, ..., dk, C): channels-last images or volumes
            sizes = ", ".join(f"d{i}={d}" for i, d in enumerate(input.shape[1:-1], 1))
            what = f"channels-last logits (N={input.shape[0]}, {sizes}, C={c})"
        raise LossRuntimeError(
            f"{loss}: `input` has shape {tuple(input.shape)} and `target` {tuple(target.shape)}: "
            f"this looks like {what} with the classes last, but torch reads dim 1 as the class "
            f"dim. Fix: `loss(input.movedim(-1, 1), target)` or "
            f"`loss(input.reshape(-1, {c}), target.reshape(-1))`."
        )
    raise LossRuntimeError(
        f"{loss}: expected target size {list(expected)}, got {list(target.shape)} for `input` of "
        f"shape {tuple(input.shape)} (class dim 1). Fix: `target` must be `input`'s shape without "
        f"dim 1."
    )


# ----------------------------------------------------------------------------------------------
# Value checks: they read tensor values, so callers guard them with `values_enabled`


def _within(t: Tensor, low: float, high: float) -> bool:
    """All of ``t`` in [low, high], from one min/max pass (NaN compares False: not within)."""
    lo, hi = torch.aminmax(t.detach())
    return lo.item() >= low and hi.item() <= high


def check_finite(loss: str, *, allow_neg_inf: bool = False, **tensors: Tensor | None) -> None:
    for name, t in tensors.items():
        if t is None or not (t.is_floating_point() or t.is_complex()):
            continue
        if bool(torch.isfinite(t.sum())):  # one cheap reduction; the exact pass only on failure
            continue
        bad = torch.isposinf(t) if allow_neg_inf else torch.isinf(t)
        bad = bad | torch.isnan(t)
        if bool(bad.any()):
            raise LossRuntimeError(
                f"{loss}: `{name}` holds NaN or Inf: {_first(bad, t)}; {describe(t)}. A "
                f"non-finite loss corrupts every weight after one step. Fix: find where it "
                f"appears (`torch.autograd.set_detect_anomaly(True)`, a lower learning rate, "
                f"gradient clipping, or clean the data)."
            )


def check_class_index_range(
    loss: str, target: Tensor, num_classes: int, ignore_index: int | None
) -> None:
    """Every target is a class in [0, C) or ``ignore_index`` (None: nothing is ignored)."""
    if target.numel() == 0 or _within(target, 0, num_classes - 1):
        return
    bad = ((target < 0) | (target >= num_classes)) & not_ignored(target, ignore_index)
    if num_classes == 0 and bool(bad.any()):
        raise LossIndexError(
            f"{loss}: `input` has no classes (C = 0), so no class index can be right: `target` "
            f"holds {_first(bad, target)}. Fix: give the model's head one output per class (at "
            f"least 2), e.g. `nn.Linear(features, num_classes)`."
        )
    if bool(bad.any()):
        raise LossIndexError(
            f"{loss}: `target` holds a class index outside [0, {num_classes}): "
            f"{_first(bad, target)} (ignore_index={ignore_index}). `input` has {num_classes} "
            f"classes. Fix: labels must be 0..{num_classes - 1} (e.g. `target - 1` for labels "
            f"that start at 1), or mark padding with ignore_index."
        )


def check_not_all_ignored(loss: str, target: Tensor, ignore_index: int | None) -> None:
    """A ``"mean"`` over nothing: an empty batch, or every target equal to ``ignore_index``."""
    if target.numel() == 0:
        _warn(
            f"{loss}: `target` is empty ({tuple(target.shape)}), so the mean is over nothing; "
            f"losskit returns 0 with zero gradient (torch returns NaN). Fix: skip empty batches "
            f"(check the sampler, the filtering or `drop_last`)."
        )
    elif not bool(not_ignored(target, ignore_index).any()):
        _warn(
            f"{loss}: every element of `target` ({tuple(target.shape)}) equals ignore_index="
            f"{ignore_index}, so the mean is over nothing; losskit returns 0 with zero gradient "
            f"(torch returns NaN). Fix: check the padding/masking, or skip such batches."
        )


def rows_are_distributions(input: Tensor, class_dim: int) -> bool:
    """Whether every value of ``input`` is in [0, 1] and it sums to 1 along ``class_dim``: the
    output of a softmax. Tiny inputs (fewer than 16 elements) and one class are never judged."""
    if input.shape[class_dim] < 2 or input.numel() < 16:
        return False
    x = input.detach().float()
    sums = x.sum(class_dim)
    tol = 1e-2 if input.dtype in (torch.float16, torch.bfloat16) else 1e-4
    return _within(x, 0, 1) and bool(((sums - 1).abs() <= tol).all())


def check_not_probabilities(loss: str, input: Tensor, class_dim: int) -> None:
    """Softmax applied before cross-entropy: every row is a distribution already.

    Tiny inputs (fewer than 16 elements) are not judged: a hand-written logit row such as
    ``[1.0, 0.0]`` is a distribution too.
    """
    if rows_are_distributions(input, class_dim):
        _warn(
            f"{loss}: `input` ({describe(input)}) looks like probabilities: every value is in "
            f"[0, 1] and each row sums to 1 along dim {class_dim}. Cross-entropy applies "
            f"log_softmax itself, so a softmax before it squashes the gradients and the model "
            f"learns slowly or not at all. Fix: pass the raw logits (remove the final "
            f"softmax), or use `nll_loss(probs.log(), target)` if you must keep probabilities."
        )


def check_not_sigmoid_output(loss: str, input: Tensor) -> None:
    """Sigmoid applied before BCE-with-logits: every value lies in [0, 1], on both sides of 0.5.

    Raw logits all land in [0, 1] by chance with probability about 2**-n, so small inputs
    (fewer than 16 elements) are not judged. Logits that are all (nearly) equal can lie in
    [0, 1] without any sigmoid: a zero-initialised head gives 0 everywhere, a prior-bias head
    with small weights gives values near its bias. Sigmoid output of an untrained or a trained
    model spreads across 0.5 instead (sigmoid(0) = 0.5), so the check also asks for values
    below and above 0.5. (A sigmoid after a zero head, exactly 0.5 everywhere, is left to
    ``lk.doctor``'s output-activation check: it looks the same as a head biased to 0.5.)
    """
    if input.numel() < 16:
        return
    lo, hi = torch.aminmax(input.detach())
    if bool((lo >= 0) & (hi <= 1) & (lo < 0.5) & (hi > 0.5)):
        _warn(
            f"{loss}: every value of `input` ({describe(input)}) lies in [0, 1], which looks "
            f"like sigmoid output. {loss} applies the sigmoid itself; "
            f"a second sigmoid caps predictions near 0.73 and the model stops learning. Fix: "
            f"pass the raw logits (remove the final sigmoid)."
        )


def check_probability_input(loss: str, input: Tensor) -> None:
    """Raw logits given to BCELoss, which needs probabilities."""
    if input.numel() == 0 or _within(input, 0, 1):
        return
    bad = ~((input >= 0) & (input <= 1))  # NaN counts as bad, as in torch
    if bool(bad.any()):
        raise LossRuntimeError(
            f"{loss}: all elements of input should be between 0 and 1, but `input` holds "
            f"{_first(bad, input)}; {describe(input)}. These look like raw logits. Fix: use "
            f"`binary_cross_entropy_with_logits` / `BCEWithLogitsLoss` on the logits (more "
            f"stable), or apply `torch.sigmoid` first."
        )


def check_binary_target_range(loss: str, target: Tensor) -> None:
    if target.numel() == 0 or _within(target, 0, 1):
        return
    bad = ~((target >= 0) & (target <= 1))
    if bool(bad.any()):
        lo, hi = target.min().item(), target.max().item()
        fix = "`(target + 1) / 2`" if lo == -1 else "`target - target.min()` or one-hot labels"
        raise LossRuntimeError(
            f"{loss}: all elements of target should be between 0 and 1, but `target` holds "
            f"{_first(bad, target)} (range [{lo}, {hi}]). Binary targets are 0/1 labels or "
            f"probabilities. Fix: map the labels to [0, 1], e.g. {fix}."
        )


def check_kl_input_is_log_probabilities(loss: str, input: Tensor) -> None:
    """KL divergence's input is log-probabilities, which are <= 0; a positive value means
    probabilities (a softmax output) or logits were passed."""
    if input.numel() == 0:
        return
    x = input.detach()
    top = x.max()
    if bool(top > 0):
        looks = ("probabilities (every value in [0, 1])" if bool(x.min() >= 0) and bool(top <= 1)
                 else "raw logits")
        _warn(
            f"{loss}: `input` ({describe(input)}) holds {_first(x > 0, x)}, a positive value, "
            f"which log-probabilities never have (log p <= 0); it looks like {looks}. kl_div "
            f"computes target * (log target - input), so the loss and its gradient are wrong. "
            f"Fix: pass `probs.log()` for probabilities, or `logits.log_softmax(dim)` for logits."
        )


def check_kl_target(loss: str, target: Tensor, log_target: bool) -> None:
    """With ``log_target=False`` the target holds probabilities; a negative value is NaN in the
    loss (x log x of a negative) and almost always means log-probabilities were passed."""
    if log_target or target.numel() == 0:
        return
    t = target.detach()
    if bool((t < 0).any()):
        raise LossInputError(
            f"{loss}: `target` holds {_first(t < 0, t)}, a negative value, but with "
            f"log_target=False the target must be probabilities (>= 0); torch returns NaN for it. "
            f"It looks like log-probabilities. Fix: pass `log_target=True`, or `target.exp()`."
        )


def check_label_smoothing_number(loss: str, label_smoothing: object) -> None:
    """``label_smoothing`` must be what torch's op takes as a float: a real number, a NumPy
    scalar, or a 0-d real tensor that needs no gradient."""
    if isinstance(label_smoothing, Tensor):
        number = (label_smoothing.dim() == 0 and not label_smoothing.requires_grad
                  and not label_smoothing.is_complex())
    else:  # NumPy's bool is not a numbers.Real; torch takes it
        kind = type(label_smoothing)
        number = isinstance(label_smoothing, numbers.Real) or (
            kind.__module__ == "numpy" and kind.__name__ in ("bool", "bool_"))
    if not number:
        raise LossTypeError(
            f"{loss}: label_smoothing={label_smoothing!r} is a {type(label_smoothing).__name__}, "
            f"not a number. Fix: pass a float in [0, 1], e.g. label_smoothing=0.1, or 0.0 for "
            f"none."
        )


def check_more_than_one_class(loss: str, input: Tensor, class_dim: int) -> None:
    """Cross-entropy over a single class: softmax of one logit is always 1, so the loss and its
    gradient are 0 whatever the model does."""
    if input.dim() == 0 or input.shape[class_dim] != 1:
        return
    raise LossInputError(
        f"{loss}: `input` ({describe(input)}) has 1 class along dim {class_dim}: the softmax of "
        f"one logit is always 1, so the loss and its gradient are 0 and the model learns "
        f"nothing. Fix: for a yes/no target use `binary_cross_entropy_with_logits("
        f"input.squeeze({class_dim}), target.float())` (one logit per sample), or give the model "
        f"2 outputs (one per class) for cross-entropy; for a real-valued target use a regression "
        f"loss such as `mse_loss`."
    )


def check_not_sigmoid_for_softmax(loss: str, input: Tensor, class_dim: int) -> None:
    """A sigmoid before softmax cross-entropy: every value in [0, 1], on both sides of 0.5 (the
    rule of :func:`check_not_sigmoid_output`), with 3 or more classes. Logits that merely lie
    inside [0, 1] on one side of 0.5 (a zero-initialised head, say), two classes (a barely
    trained 2-class head sits near 0.5 each) and rows that sum to 1 (the softmax check's) are not
    judged."""
    if input.shape[class_dim] < 3 or input.numel() < 16:
        return  # two classes near 0.5 each are what a barely trained head gives
    x = input.detach().float()
    lo, hi = x.min(), x.max()
    sums_to_one = bool(((x.sum(class_dim) - 1).abs() <= 1e-2).all())
    if not sums_to_one and bool((lo >= 0) & (hi <= 1) & (lo < 0.5) & (hi > 0.5)):
        _warn(
            f"{loss}: `input` ({describe(input)}) looks like sigmoid output: every value is in "
            f"[0, 1] (from {lo.item():.3g} to {hi.item():.3g}). Cross-entropy applies "
            f"log_softmax itself; squashing the logits into [0, 1] first caps how confident it "
            f"can get (with {input.shape[class_dim]} classes the loss cannot fall below "
            f"{math.log(math.e + input.shape[class_dim] - 1) - 1:.3g}). Fix: pass the raw "
            f"logits (remove the final sigmoid)."
        )


def check_log_probabilities(loss: str, input: Tensor, class_dim: int) -> None:
    """Raw logits given to NLLLoss: rows of log-probabilities have logsumexp 0."""
    if input.numel() == 0 or input.shape[class_dim] < 2:
        return
    lse = torch.logsumexp(input.detach().float(), dim=class_dim)
    tol = 5e-2 if input.dtype in (torch.float16, torch.bfloat16) else 1e-3
    off = (lse.abs() > tol) & lse.isfinite()
    if bool(off.any()):
        _warn(
            f"{loss}: `input` ({describe(input)}) does not look like log-probabilities: "
            f"logsumexp over dim {class_dim} should be 0 but is {_first(off, lse)}. nll_loss "
            f"expects log_softmax output; raw logits give a loss that can go negative and "
            f"does not train the other classes. Fix: `nll_loss(input.log_softmax({class_dim}), "
            f"target)`, or `cross_entropy(input, target)` on the logits."
        )


def check_soft_target(loss: str, target: Tensor, class_dim: int) -> None:
    """Class-probability targets: non-negative rows that sum to 1."""
    if target.numel() == 0:
        return
    t = target.detach().float()
    sums = t.sum(class_dim)
    tol = 1e-2 if target.dtype in (torch.float16, torch.bfloat16) else 1e-4
    negative = t < 0
    off = (sums - 1).abs() > tol
    if bool(negative.any()) or bool(off.any()):
        what = f"a negative value {_first(negative, t)}" if bool(negative.any()) else (
            f"a row sum of {_first(off, sums)}"
        )
        _warn(
            f"{loss}: `target` has the same shape as `input` ({tuple(target.shape)}), so it is "
            f"read as class probabilities, but it holds {what}. Probability targets are "
            f"non-negative and sum to 1 along dim {class_dim}. Fix: normalise with "
            f"`target / target.sum({class_dim}, keepdim=True)`, or pass class indices of shape "
            f"`input.shape` without dim {class_dim}."
        )

