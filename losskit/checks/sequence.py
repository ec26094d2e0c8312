"""Guardrails for sequence losses (CTC): layouts, lengths, labels and alignability.

Shapes: ``log_probs`` is ``(T, N, C)`` (time first) or unbatched ``(T, C)``; ``targets`` is padded
``(N, S)`` or the concatenation of every sample's labels, 1-D of ``sum(target_lengths)``;
``input_lengths`` / ``target_lengths`` hold one count per sample, as integer tensors or as
sequences of ints (both the same kind, as torch requires).

The length and label checks read the lengths and ``targets``; they run on every call while those
live on the CPU (:func:`host_checks_enabled`, the rule of cross-entropy's CPU index check), and
with the value checks otherwise. The NaN, raw-score
and alignability checks read ``log_probs`` and obey the checks mode.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from losskit.checks import (
    LossIndexError,
    LossInputError,
    LossNotImplementedError,
    LossRuntimeError,
    LossTypeError,
    _tracing,
    _warn,
    check_finite,
    describe,
    get_checks,
)

Lengths = Tensor | Sequence[int]


def _is_int(value: object) -> bool:
    if isinstance(value, Tensor):
        return value.dim() == 0 and not value.is_floating_point() and value.dtype != torch.bool
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def batch_size(log_probs: Tensor) -> int:
    """``N`` of ``(T, N, C)``; 1 for unbatched ``(T, C)``."""
    return log_probs.shape[1] if log_probs.dim() == 3 else 1


# ----------------------------------------------------------------------------------------------
# Metadata checks


def check_ctc_log_probs(loss: str, log_probs: Tensor, *, autocast: bool) -> None:
    """Floating, ``(T, N, C)`` or ``(T, C)``, not empty; half precision only under autocast on
    the CPU, where torch has no float16/bfloat16 kernel."""
    if not log_probs.is_floating_point() or (
        log_probs.device.type == "cpu"
        and log_probs.dtype in (torch.float16, torch.bfloat16)
        and not autocast
    ):
        raise LossNotImplementedError(
            f"{loss}: `log_probs` has {describe(log_probs)}, but torch's CTC kernel on this "
            f"device takes float32 or float64 log-probabilities. Fix: "
            f"`log_probs.float()` (or run the loss under `torch.autocast`)."
        )
    if log_probs.dim() not in (2, 3):
        raise LossRuntimeError(
            f"{loss}: `log_probs` has shape {tuple(log_probs.shape)}, but CTC expects (T, N, C) "
            f"(time, batch, classes) or unbatched (T, C). Fix: reshape the model output to "
            f"(T, N, C), e.g. `x.permute(1, 0, 2)` for (N, T, C)."
        )
    if log_probs.numel() == 0:
        raise LossRuntimeError(
            f"{loss}: `log_probs` has shape {tuple(log_probs.shape)}: log_probs tensor must not "
            f"be empty (no frames, no samples or no classes). Fix: skip empty batches before "
            f"the loss."
        )


_CPU = torch.device("cpu")


def check_ctc_devices(loss: str, log_probs: Tensor, **others: object) -> None:
    """Targets and lengths on ``log_probs``' device, or on the CPU (torch allows CPU targets
    and lengths beside CUDA scores; cuDNN's CTC even wants them there)."""
    device = log_probs.device
    for name, value in others.items():
        if isinstance(value, Tensor) and value.device != device and value.device != _CPU:
            raise LossInputError(
                f"{loss}: `log_probs` is on {log_probs.device} but `{name}` is on "
                f"{value.device}. Fix: `{name}.to(log_probs.device)` (or keep it on cpu)."
            )


def check_blank_in_range(loss: str, blank: int, num_classes: int) -> None:
    """``blank`` an int (or a 0-d integer tensor, as torch takes) in ``[0, C)``; a bool or float
    is torch's TypeError."""
    if not _is_int(blank):
        raise LossTypeError(
            f"{loss}: blank={blank!r} ({type(blank).__name__}), but blank must be an int: the "
            f"index of the blank class in `log_probs`' last dim. Fix: pass an int such as "
            f"blank=0 (the default) or blank={num_classes - 1}."
        )
    if not 0 <= int(blank) < num_classes:
        raise LossRuntimeError(
            f"{loss}: blank={blank}, but blank must be in label range [0, {num_classes}): "
            f"`log_probs` has {num_classes} classes in its last dim, the blank one of them. "
            f"Fix: pass the blank's index, e.g. blank=0 or blank={num_classes - 1}."
        )


def check_lengths_kind(loss: str, input_lengths: Lengths, target_lengths: Lengths) -> None:
    """Both lengths integer tensors, or both sequences of ints (torch raises TypeError else)."""
    for name, lengths in (("input_lengths", input_lengths), ("target_lengths", target_lengths)):
        if isinstance(lengths, Tensor):
            if lengths.is_floating_point() or lengths.is_complex() or lengths.dtype == torch.bool:
                raise LossRuntimeError(
                    f"{loss}: `{name}` has {describe(lengths)}, but {name} must be integral: "
                    f"one frame or label count per sample. Fix: `{name}.long()` (or round "
                    f"first, if the counts were computed in floating point)."
                )
        elif not (isinstance(lengths, Sequence) and all(_is_int(v) for v in lengths)):
            raise LossTypeError(
                f"{loss}: `{name}` is {lengths!r}, but lengths must be a 1-D integer tensor or "
                f"a tuple/list of ints, one per sample. Fix: e.g. "
                f"`torch.tensor({name}, dtype=torch.long)` with integer counts."
            )
    if isinstance(input_lengths, Tensor) != isinstance(target_lengths, Tensor):
        kinds = ", ".join(
            f"`{n}` is a {'tensor' if isinstance(v, Tensor) else type(v).__name__}"
            for n, v in (("input_lengths", input_lengths), ("target_lengths", target_lengths))
        )
        other = "target_lengths" if isinstance(input_lengths, Tensor) else "input_lengths"
        raise LossTypeError(
            f"{loss}: {kinds}; torch takes both lengths as tensors or both as sequences of "
            f"ints. Fix: `{other} = torch.as_tensor({other}, dtype=torch.long)`."
        )


def _numel(lengths: Lengths) -> int:
    return lengths.numel() if isinstance(lengths, Tensor) else len(lengths)


def check_lengths_batch(
    loss: str, log_probs: Tensor, input_lengths: Lengths, target_lengths: Lengths
) -> None:
    """One length per sample; (N, T, C) log-probs are caught by ``input_lengths`` matching dim 0."""
    n, count = batch_size(log_probs), _numel(input_lengths)
    shape = tuple(log_probs.shape)
    if count != n:
        if log_probs.dim() == 3 and count == log_probs.shape[0]:
            raise LossRuntimeError(
                f"{loss}: `input_lengths` has {count} entries, which matches dim 0 of "
                f"`log_probs` {shape} but not dim 1: log_probs looks batch-first (N, T, C), "
                f"while CTC expects time first, (T, N, C). Fix: "
                f"`log_probs.transpose(0, 1)` (the model's (N, T, C) output -> (T, N, C))."
            )
        layout = "(T, N, C)" if log_probs.dim() == 3 else "unbatched (T, C), so N = 1"
        raise LossRuntimeError(
            f"{loss}: input_lengths must be of size batch_size: it has {count} entries but "
            f"`log_probs` {shape} is {layout} with N = {n}. Fix: one input length per sample."
        )
    if _numel(target_lengths) != n:
        raise LossRuntimeError(
            f"{loss}: target_lengths must be of size batch_size: it has "
            f"{_numel(target_lengths)} entries but the batch has N = {n} samples (`log_probs` "
            f"{shape}). Fix: one target length per sample."
        )


def check_ctc_targets(loss: str, log_probs: Tensor, targets: Tensor) -> None:
    """Integer labels, padded ``(N, S)`` or concatenated 1-D."""
    if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
        raise LossRuntimeError(
            f"{loss}: `targets` has {describe(targets)}, but CTC targets are class indices "
            f"(torch would silently truncate them to integers). Fix: `targets.long()`, after "
            f"rounding if the labels were computed in floating point."
        )
    n = batch_size(log_probs)
    if targets.dim() not in (1, 2):
        raise LossRuntimeError(
            f"{loss}: `targets` has shape {tuple(targets.shape)}, but CTC expects 1 to 2 "
            f"dimensions: padded ({n}, S) or all label sequences concatenated, 1-D. Fix: "
            f"`targets.reshape({n}, -1)` if it holds one padded row per sample."
        )
    if targets.dim() == 2 and targets.shape[0] != n:
        raise LossRuntimeError(
            f"{loss}: padded `targets` has shape {tuple(targets.shape)}, but the batch has "
            f"N = {n} samples (`log_probs` {tuple(log_probs.shape)}), so it needs {n} rows. "
            f"Fix: one row of labels per sample, or concatenate them into a 1-D tensor."
        )


# ----------------------------------------------------------------------------------------------
# Checks that read the lengths and the labels (cheap on the CPU; see the module docstring)


def host_checks_enabled(*values: Tensor | Sequence[int]) -> bool:
    """Whether the length and label checks run on every call: everything they read is on the CPU
    (torch reads the lengths on the host anyway, so no device sync), the mode is not ``"off"``
    and nothing is being traced. Otherwise they run with the value checks."""
    for v in values:  # a plain loop: all() over a generator costs a microsecond more here
        if isinstance(v, Tensor) and not v.is_cpu:
            return False
    return get_checks() != "off" and not _tracing()


def as_lengths(lengths: Lengths, device: torch.device) -> Tensor:
    """The lengths as a 1-D int64 tensor on ``device`` (for the checks; torch gets the original)."""
    if isinstance(lengths, Tensor):
        return lengths.reshape(-1).to(device=device, dtype=torch.long)
    return torch.tensor([int(v) for v in lengths], dtype=torch.long, device=device)


def _count(mask: Tensor, word: str) -> str:
    """``"3 such labels"`` / ``"1 such label"`` for the True entries of ``mask``."""
    n = int(mask.sum())
    return f"{n} such {word}{'s' * (n != 1)}"


def _sample(index: Tensor) -> int:
    return int(torch.nonzero(index)[0, 0])


#: Up to this many target entries, :func:`small_lengths_and_labels_clear` reads them in Python
#: (a few microseconds) rather than running the dozen tensor ops of the general test.
SMALL_TARGETS = 256


def _as_list(lengths: Lengths) -> list[int]:
    if isinstance(lengths, Tensor):
        return (lengths if lengths.dim() == 1 else lengths.reshape(-1)).tolist()
    return [int(v) for v in lengths]


def small_lengths_and_labels_clear(
    log_probs: Tensor, targets: Tensor, input_lengths: Lengths, target_lengths: Lengths,
    blank: int,
) -> bool:
    """:func:`lengths_and_labels_clear` for CPU targets of at most :data:`SMALL_TARGETS`
    entries, on Python lists (the lengths as given, tensor or sequence), with the builtins
    ``min`` / ``max`` / ``in`` doing the loops. Any doubt returns False, and the detailed checks
    run."""
    frames, classes = log_probs.shape[0], log_probs.shape[-1]
    il, tl = _as_list(input_lengths), _as_list(target_lengths)
    if not (il and tl) or min(il) < 0 or max(il) > frames or min(tl) < 0:
        return False
    rows: Any = targets.tolist()  # a list of ints, or of lists for (N, S)
    if targets.dim() == 2:  # (N, S) padded: the first target_lengths[n] entries are labels
        if len(tl) != targets.shape[0] or max(tl) > targets.shape[1]:
            return False
        labels: list[int] = []
        for row, n in zip(rows, tl, strict=True):  # `+=` in a loop: faster than a comprehension
            labels += row[:n]
    elif sum(tl) == targets.numel():  # 1-D concatenated: every entry is a label
        labels = rows if targets.dim() == 1 else [rows]
    else:
        return False
    return not labels or (min(labels) >= 0 and max(labels) < classes and blank not in labels)


def plain_labels_clear(targets: Tensor, target_lengths: Tensor, classes: int, blank: int) -> bool:
    """For the common CTC call (``losses.sequence._direct_ctc``: CPU tensors, as many padded
    rows as lengths) with at most :data:`SMALL_TARGETS` targets: whether every counted label is
    in ``[0, C)`` and not ``blank``, read in Python lists. The lengths are left to torch's CTC
    op, which raises for each bad one (negative, past ``T`` or ``S``, a concatenation that does
    not add up); the caller runs the detailed checks on that error path. False (any doubt)
    means: run the detailed checks now.

    >>> plain_labels_clear(torch.tensor([[1, 2], [3, 0]]), torch.tensor([2, 1]), 4, 0)
    True
    >>> plain_labels_clear(torch.tensor([[1, 2], [3, 0]]), torch.tensor([2, 2]), 4, 0)
    False
    """
    labels = targets.tolist()
    if targets.dim() == 2:  # (N, S) padded: the first target_lengths[n] entries are labels
        rows, labels = labels, []
        # as many rows as lengths (the caller's test); `+=`: see above
        for row, n in zip(rows, target_lengths.tolist()):  # noqa: B905
            labels += row[:n]
    return not labels or (min(labels) >= 0 and max(labels) < classes and blank not in labels)


def lengths_and_labels_clear(
    log_probs: Tensor, targets: Tensor, input_lengths: Tensor, target_lengths: Tensor, blank: int
) -> bool:
    """Whether every length and counted label is valid, in a few ops and one read: the detailed
    checks below (which name the sample and the fix) then need not run. Any doubt returns False."""
    frames, classes = log_probs.shape[0], log_probs.shape[-1]
    if targets.dim() == 2:  # (N, S) padded: only positions j < target_lengths[n] are labels
        if target_lengths.numel() != targets.shape[0]:
            return False
        j = torch.arange(targets.shape[1], device=targets.device)
        counted = j[None, :] < target_lengths[:, None]  # (N, S)
        too_long = target_lengths > targets.shape[1]
    else:  # 1-D concatenated: every entry is a label; the lengths must add up to them
        counted, too_long = None, target_lengths.sum() != targets.numel()
    label_bad = (targets < 0) | (targets >= classes) | (targets == blank)
    if counted is not None:
        label_bad = label_bad & counted
    flags = torch.stack([
        (input_lengths < 0).any(), (input_lengths > frames).any(),
        (target_lengths < 0).any(), too_long.any(), label_bad.any(),
    ])
    return not bool(flags.any())


def check_input_lengths_range(loss: str, log_probs: Tensor, input_lengths: Tensor) -> None:
    frames = log_probs.shape[0]
    if bool((input_lengths < 0).any()):
        n = _sample(input_lengths < 0)
        raise LossRuntimeError(
            f"{loss}: Expected input_lengths to have value at least 0, but input_lengths[{n}] "
            f"= {int(input_lengths[n])}. Fix: lengths count frames, so they are >= 0."
        )
    if bool((input_lengths > frames).any()):
        n = _sample(input_lengths > frames)
        value = int(input_lengths[n])
        hint = ""
        if log_probs.dim() == 3 and value <= log_probs.shape[1]:
            hint = (
                " If the model output is batch-first (N, T, C), `log_probs.transpose(0, 1)` "
                "gives the expected (T, N, C)."
            )
        raise LossRuntimeError(
            f"{loss}: Expected input_lengths to have value at most {frames} (T, dim 0 of "
            f"`log_probs` {tuple(log_probs.shape)}), but input_lengths[{n}] = {value}. Fix: "
            f"count the frames of the model output (after any downsampling), not of the raw "
            f"input.{hint}"
        )


def check_target_lengths_range(loss: str, targets: Tensor, target_lengths: Tensor) -> None:
    if bool((target_lengths < 0).any()):
        n = _sample(target_lengths < 0)
        raise LossRuntimeError(
            f"{loss}: Expected target_lengths to have value at least 0, but target_lengths[{n}] "
            f"= {int(target_lengths[n])}. Fix: lengths count labels, so they are >= 0."
        )
    if targets.dim() == 2:
        width = targets.shape[1]
        if bool((target_lengths > width).any()):
            n = _sample(target_lengths > width)
            raise LossRuntimeError(
                f"{loss}: target_lengths[{n}] = {int(target_lengths[n])}, but padded `targets` "
                f"{tuple(targets.shape)} has only {width} labels per row. Fix: pad `targets` "
                f"to the longest target length, or correct target_lengths."
            )
    elif int(target_lengths.sum()) != targets.numel():
        raise LossRuntimeError(
            f"{loss}: concatenated (1-D) `targets` has {targets.numel()} labels, but "
            f"target_lengths sum to {int(target_lengths.sum())}. Fix: `targets` must hold "
            f"exactly the labels of every sample one after another; for one padded row per "
            f"sample pass a 2-D (N, S) tensor."
        )


def _label_positions(targets: Tensor, target_lengths: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(labels, sample, position) of every counted label, padding excluded (1-D each)."""
    if targets.dim() == 2:  # (N, S): position j of row n counts if j < target_lengths[n]
        j = torch.arange(targets.shape[1], device=targets.device)
        counted = j[None, :] < target_lengths[:, None]  # (N, S)
        sample, position = torch.nonzero(counted, as_tuple=True)
        return targets[counted], sample, position
    sample = torch.repeat_interleave(  # (sum L,): which sample each label belongs to
        torch.arange(target_lengths.numel(), device=targets.device), target_lengths
    )
    starts = torch.cumsum(target_lengths, 0) - target_lengths  # (N,)
    position = torch.arange(targets.numel(), device=targets.device) - starts[sample]
    return targets.reshape(-1), sample, position


def check_ctc_labels(
    loss: str, targets: Tensor, target_lengths: Tensor, num_classes: int, blank: int
) -> None:
    """Every counted label is a class in [0, C) other than ``blank``."""
    labels, sample, position = _label_positions(targets, target_lengths.to(targets.device))
    if labels.numel() == 0:
        return
    where = "targets[{n}, {j}]" if targets.dim() == 2 else "label {j} of sample {n}"
    outside = (labels < 0) | (labels >= num_classes)
    if bool(outside.any()):
        i = _sample(outside)
        at = where.format(n=int(sample[i]), j=int(position[i]))
        raise LossIndexError(
            f"{loss}: `targets` holds a label outside [0, {num_classes}): {int(labels[i])} at "
            f"{at} ({_count(outside, 'label')}); `log_probs` has {num_classes} classes. "
            f"Fix: labels must be 0..{num_classes - 1}, the blank excluded; padding goes after "
            f"target_lengths[n] in each row, where it is not read."
        )
    is_blank = labels == blank
    if bool(is_blank.any()):
        i = _sample(is_blank)
        at = where.format(n=int(sample[i]), j=int(position[i]))
        raise LossInputError(
            f"{loss}: `targets` uses the blank index blank={blank} as a label: at {at} "
            f"({_count(is_blank, 'label')}, inside target_lengths). The blank means "
            f"'no label at this frame', so the target cannot be emitted as written. Fix: "
            f"reserve index {blank} for the blank (e.g. `targets + 1` with C + 1 classes when "
            f"blank=0), or pass blank= the index your vocabulary keeps for it; padding after "
            f"target_lengths[n] may use any value."
        )


# ----------------------------------------------------------------------------------------------
# Value checks on log_probs: callers guard them with `values_enabled`


def _valid_frames(log_probs: Tensor, input_lengths: Tensor) -> Tensor:
    """(T, N) mask of frames t < input_lengths[n] (T, 1 for unbatched input)."""
    t = torch.arange(log_probs.shape[0], device=log_probs.device)
    return t[:, None] < input_lengths.to(log_probs.device)[None, :]


def check_finite_frames(loss: str, log_probs: Tensor, input_lengths: Tensor) -> None:
    """NaN or +inf in the frames CTC reads (t < input_lengths[n]); torch never reads the padding
    frames after them, so a NaN there (say from a masked log_softmax) is harmless."""
    valid = _valid_frames(log_probs, input_lengths)  # (T, N)
    lp = log_probs if log_probs.dim() == 3 else log_probs.unsqueeze(1)  # (T, N, C)
    read = lp.masked_fill(~valid.unsqueeze(-1), 0.0)
    check_finite(loss, allow_neg_inf=True, log_probs=read.reshape(log_probs.shape))


def check_ctc_log_probabilities(loss: str, log_probs: Tensor, input_lengths: Tensor) -> None:
    """Raw scores or probabilities instead of log_softmax output: each frame's exp sums to 1."""
    class_dim = log_probs.dim() - 1
    lse = torch.logsumexp(log_probs.detach().float(), dim=class_dim)  # (T, N) or (T,)
    lse = lse.reshape(log_probs.shape[0], -1)  # (T, N)
    tol = 5e-2 if log_probs.dtype in (torch.float16, torch.bfloat16) else 1e-3
    off = (lse.abs() > tol) & lse.isfinite() & _valid_frames(log_probs, input_lengths)
    if bool(off.any()):
        t, n = (int(i) for i in torch.nonzero(off)[0])
        at = f"frame {t}" + (f" of sample {n}" if log_probs.dim() == 3 else "")
        _warn(
            f"{loss}: `log_probs` ({describe(log_probs)}) does not look like log-probabilities: "
            f"logsumexp over the class dim {class_dim} should be 0 at every frame but is "
            f"{lse[t, n].item():.4g} at {at} ({_count(off, 'frame')}). CTC reads it as "
            f"log-probabilities, and torch's CTC gradient assumes a log_softmax in front, so "
            f"raw scores give a wrong loss and wrong gradients. Fix: "
            f"`log_probs = scores.log_softmax({class_dim})` on the model's raw scores (or "
            f"`probs.log()` for probabilities)."
        )


def required_frames(targets: Tensor, target_lengths: Tensor) -> Tensor:
    """Frames each sample needs: its labels plus one blank between each pair of equal
    neighbours, ``L_n + #{j : y_{n,j} = y_{n,j+1}}`` (``(N,)`` int64).

    >>> required_frames(torch.tensor([[1, 1, 2, 2], [3, 1, 0, 0]]), torch.tensor([4, 2]))
    tensor([6, 2])
    """
    target_lengths = target_lengths.to(targets.device)
    labels, sample, _ = _label_positions(targets, target_lengths)
    repeat = (labels[1:] == labels[:-1]) & (sample[1:] == sample[:-1])  # neighbours in a sample
    repeats = torch.zeros_like(target_lengths).index_add_(0, sample[1:], repeat.long())
    return target_lengths + repeats


def check_targets_fit_inputs(
    loss: str, targets: Tensor, input_lengths: Tensor, target_lengths: Tensor
) -> None:
    """A target needing more frames than its input has: no alignment exists, the loss is inf."""
    needed = required_frames(targets, target_lengths)
    frames = input_lengths.to(needed.device)
    short = needed > frames
    if bool(short.any()):
        n = _sample(short)
        repeats = int(needed[n] - target_lengths[n])
        _warn(
            f"{loss}: sample {n} has target length {int(target_lengths[n])} with {repeats} "
            f"adjacent repeated label{'s' * (repeats != 1)} (each needs a blank between), so "
            f"it needs at least {int(needed[n])} frames, but input_lengths[{n}] = "
            f"{int(frames[n])} ({_count(short, 'sample')}). No alignment exists: its loss "
            f"is inf, and so is the batch's 'mean' or 'sum'. Fix: give the model more frames "
            f"(less downsampling), drop such samples, or pass zero_infinity=True to zero their "
            f"loss and gradient."
        )
