"""Cases for losskit/losses/sequence.py: (log_probs, targets, input_lengths, target_lengths).

gradcheck is off for every case here: torch's CTC gradient is the one with respect to the scores
before a log_softmax (it returns exp(log_probs) - posteriors; pytorch/pytorch#52241), so finite
differences of log_probs alone disagree with it by design. tests/test_sequence.py runs gradcheck
through log_softmax, for every layout and reduction.
"""

import torch

import losskit as lk
from cases import LossCase, randint, randn


def _ctc(t, input_lengths, target_lengths, c, *, layout="padded", blank=0, repeats=False,
         unbatched=False, length_dtype=torch.int64, **options):
    """log_softmax frames (T, N, C) (or (T, C)), labels avoiding ``blank``, lengths as given.

    ``layout``: "padded" (N, S) with padding -1 after each length, or "concatenated" 1-D.
    ``repeats`` makes every other label equal to the one before it (each needs a blank between).
    """
    def make(gen):
        n, s = len(input_lengths), max(target_lengths)
        scores = randn(gen, t, c) if unbatched else randn(gen, t, n, c)
        log_probs = scores.log_softmax(-1)
        labels = randint(gen, c - 1, n, s)  # (N, S) in [0, C-1)
        labels = labels + (labels >= blank).long()  # skip the blank: [0, C) without blank
        if repeats:
            labels[:, 1::2] = labels[:, 0:-1:2][:, : labels[:, 1::2].shape[1]]
        tl = torch.tensor(target_lengths, dtype=length_dtype)
        if layout == "padded":
            counted = torch.arange(s)[None, :] < tl[:, None]
            targets = torch.where(counted, labels, torch.full_like(labels, -1))
        else:
            targets = torch.cat([row[:k] for row, k in zip(labels, target_lengths, strict=True)])
        kwargs = dict(options)
        if blank:
            kwargs["blank"] = blank
        args = (log_probs, targets, torch.tensor(input_lengths, dtype=length_dtype), tl)
        return args, kwargs

    return make


def _module(made, reduction):
    args, kwargs = made
    return lk.CTCLoss(**kwargs, reduction=reduction), args


def _case(id, make):
    # gradcheck=False: see the module docstring (checked through log_softmax elsewhere)
    return LossCase("ctc_loss", id, make, gradcheck=False, module=_module)


CASES = [
    _case("padded(T6,N3,C5)", _ctc(6, (6, 5, 4), (3, 2, 1), 5)),
    _case("concatenated", _ctc(7, (7, 6, 7, 5), (2, 3, 1, 2), 4, layout="concatenated")),
    _case("unbatched(T,C)-1d", _ctc(5, (5,), (3,), 4, unbatched=True, layout="concatenated")),
    _case("unbatched(T,C)-(1,S)", _ctc(6, (4,), (2,), 3, unbatched=True)),
    _case("repeats", _ctc(8, (8, 7), (4, 3), 4, repeats=True)),
    _case("blank=C-1", _ctc(6, (6, 6, 3), (2, 3, 1), 5, blank=4)),
    _case("blank=2-int32", _ctc(5, (5, 4), (2, 2), 4, blank=2, length_dtype=torch.int32)),
    _case("target-length-0", _ctc(5, (5, 3, 4), (2, 0, 1), 3)),
    # sample 1 has 3 labels in 2 frames: no alignment, inf without zero_infinity
    _case("zero_infinity", _ctc(6, (6, 2, 5), (2, 3, 2), 4, zero_infinity=True)),
]
