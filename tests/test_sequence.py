"""CTC beyond the case table: a brute-force oracle, gradcheck through log_softmax, torch's error
classes on the same bad inputs, dtypes, and each guardrail with its healthy twin."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from cases.sequence import CASES
from torch import nn
from torch.autograd import gradcheck

import losskit as lk
import losskit.functional as LF
from losskit.checks import LossIndexError, LossInputError, LossRuntimeError


def _log_probs(gen, *shape):
    return torch.randn(shape, generator=gen, dtype=torch.float64).log_softmax(-1)


def _batch(gen, t=6, c=5):
    """(T, N=2, C) log-probs, padded targets (-1 after the lengths) and lengths."""
    log_probs = _log_probs(gen, t, 2, c)
    targets = torch.tensor([[1, 2, 3], [4, 4, -1]])
    return log_probs, targets, torch.tensor([t, t - 1]), torch.tensor([3, 2])


# ----------------------------------------------------------------------------------------------
# An oracle independent of torch's kernel: sum over every frame-level path (tiny T and C only)


def _collapse(path, blank):
    """B(path): merge repeated symbols, then drop blanks."""
    out = [s for i, s in enumerate(path) if s != blank and (i == 0 or s != path[i - 1])]
    return tuple(out)


def _brute_force_nll(log_probs, target, blank):
    """-log sum_{pi: B(pi) = target} prod_t p_t(pi_t) for one sample's (T_n, C) log-probs."""
    frames, classes = log_probs.shape
    p = log_probs.exp()
    total = sum(
        math.prod(p[t, s].item() for t, s in enumerate(path))
        for path in itertools.product(range(classes), repeat=frames)
        if _collapse(path, blank) == tuple(target)
    )
    return -math.log(total) if total > 0 else math.inf


@pytest.mark.parametrize("blank", [0, 2])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_matches_brute_force_path_sum(gen, blank, reduction):
    log_probs = _log_probs(gen, 5, 3, 3)  # (T=5, N=3, C=3)
    labels = [l for l in range(3) if l != blank]
    targets = [[labels[0], labels[1], labels[1]], [labels[1]], []]  # a repeat; an empty target
    lengths_in, lengths_tg = (5, 4, 3), tuple(len(t) for t in targets)
    padded = torch.tensor([t + [-1] * (3 - len(t)) for t in targets])  # (N, S=3)
    per_sample = torch.tensor([
        _brute_force_nll(log_probs[:n, i], t, blank)
        for i, (n, t) in enumerate(zip(lengths_in, targets, strict=True))
    ], dtype=torch.float64)
    expected = {
        "none": per_sample,
        "sum": per_sample.sum(),
        "mean": (per_sample / torch.tensor(lengths_tg).clamp(min=1)).mean(),
    }[reduction]
    got = LF.ctc_loss(log_probs, padded, lengths_in, lengths_tg, blank=blank, reduction=reduction)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


def test_zero_infinity_zeroes_the_unalignable_sample(gen):
    log_probs = _log_probs(gen, 4, 2, 3)
    targets = torch.tensor([[1, 1, 2], [1, 2, 1]])  # sample 0 needs 4 frames, has 3
    with pytest.warns(lk.LossWarning, match="sample 0"):
        inf = LF.ctc_loss(log_probs, targets, (3, 4), (3, 3), reduction="none")
    zeroed = LF.ctc_loss(log_probs, targets, (3, 4), (3, 3), reduction="none", zero_infinity=True)
    assert inf[0] == math.inf and zeroed[0] == 0
    assert zeroed[1] == inf[1] == pytest.approx(_brute_force_nll(log_probs[:, 1], [1, 2, 1], 0))


# ----------------------------------------------------------------------------------------------
# Gradients: gradcheck through log_softmax (torch's gradient is the pre-log_softmax one)


def _grid():
    return [pytest.param(c, r, id=f"{c.id}-{r}") for c in CASES for r in c.reductions]


@pytest.mark.parametrize(("case", "reduction"), _grid())
def test_gradcheck_through_log_softmax(case, reduction):
    (log_probs, targets, il, tl), kwargs = case.make(torch.Generator().manual_seed(0))
    scores = log_probs.detach().clone().requires_grad_()  # any scores: log_softmax follows

    def f(x):
        return LF.ctc_loss(x.log_softmax(-1), targets, il, tl, **kwargs, reduction=reduction)

    assert gradcheck(f, (scores,), eps=1e-6, atol=1e-6, rtol=1e-5)


def test_direct_gradient_is_torchs_pre_softmax_gradient(gen):
    """The gradient w.r.t. log_probs is exp(log_probs) - posteriors (torch's, pytorch#52241),
    equal to the true gradient w.r.t. the scores before log_softmax."""
    scores = torch.randn(5, 2, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    targets, il, tl = torch.tensor([[1, 2], [3, 3]]), (5, 4), (2, 2)
    log_probs = scores.log_softmax(2).detach().requires_grad_()
    LF.ctc_loss(log_probs, targets, il, tl, reduction="sum").backward()
    F.ctc_loss(scores.log_softmax(2), targets, il, tl, reduction="sum").backward()
    mask = (torch.arange(5)[:, None] < torch.tensor(il)[None, :])[..., None]  # frames read
    torch.testing.assert_close(log_probs.grad * mask, scores.grad * mask)


def test_no_second_derivative_as_in_torch(gen):
    log_probs, targets, il, tl = _batch(gen)
    for fn in (LF.ctc_loss, F.ctc_loss):
        x = log_probs.clone().requires_grad_()
        (grad,) = torch.autograd.grad(fn(x, targets, il, tl), x, create_graph=True)
        with pytest.raises(RuntimeError, match="not implemented"):
            grad.sum().backward()


# ----------------------------------------------------------------------------------------------
# Arguments, reductions, dtypes


def test_lengths_as_tuples_lists_and_tensors_agree(gen):
    log_probs, targets, il, tl = _batch(gen)
    expected = F.ctc_loss(log_probs, targets, il, tl, reduction="none")
    for kind in (tuple, list):
        got = LF.ctc_loss(log_probs, targets, kind(il.tolist()), kind(tl.tolist()),
                          reduction="none")
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
    got = LF.ctc_loss(log_probs, targets, il.int()[:, None], tl.short(), reduction="none")
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_invalid_reduction_raises_at_call_time(gen):
    module = lk.CTCLoss(reduction="avg")  # constructs, as torch's does
    with pytest.raises(ValueError, match="avg is not a valid value for reduction"):
        module(*_batch(gen))
    with pytest.raises(ValueError, match="avg is not a valid value for reduction"):
        LF.ctc_loss(*_batch(gen), reduction="avg")


def test_module_is_torchs_with_its_argument_order():
    module = lk.CTCLoss(3, "sum", True)
    assert isinstance(module, nn.CTCLoss)
    assert (module.blank, module.reduction, module.zero_infinity) == (3, "sum", True)
    assert repr(lk.CTCLoss()) == repr(nn.CTCLoss()) == "CTCLoss()"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_output_dtype_follows_log_probs(gen, dtype):
    log_probs, targets, il, tl = _batch(gen)
    for reduction in ("none", "mean"):
        ours = LF.ctc_loss(log_probs.to(dtype), targets, il, tl, reduction=reduction)
        theirs = F.ctc_loss(log_probs.to(dtype), targets, il, tl, reduction=reduction)
        assert ours.dtype == theirs.dtype == dtype
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_as_torch(gen, dtype):
    """No CPU kernel for half precision (NotImplementedError); under autocast, float32."""
    log_probs, targets, il, tl = _batch(gen)
    with pytest.raises(NotImplementedError):
        F.ctc_loss(log_probs.to(dtype), targets, il, tl)
    with pytest.raises(NotImplementedError, match=r"log_probs.float\(\)"):
        LF.ctc_loss(log_probs.to(dtype), targets, il, tl)
    with torch.autocast("cpu", dtype=dtype):
        ours = LF.ctc_loss(log_probs.to(dtype), targets, il, tl)
        theirs = F.ctc_loss(log_probs.to(dtype), targets, il, tl)
    assert ours.dtype == theirs.dtype == torch.float32
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


# ----------------------------------------------------------------------------------------------
# Where torch raises, losskit raises an instance of the same class (with its own message)


def _bad_inputs(gen):
    lp, tg, il, tl = _batch(gen)  # T=6, N=2, C=5, padded S=3
    return {
        "input_lengths > T": (lp, tg, torch.tensor([7, 5]), tl),
        "negative input length": (lp, tg, torch.tensor([-1, 5]), tl),
        "negative target length": (lp, tg, il, torch.tensor([-1, 2])),
        "target length > S": (lp, tg, il, torch.tensor([4, 2])),
        "concatenated too short": (lp, torch.tensor([1, 2, 3, 4]), il, tl),
        "input_lengths size": (lp, tg, torch.tensor([6, 5, 4]), tl),
        "target_lengths size": (lp, tg, il, torch.tensor([3, 2, 1])),
        "batch-first": (lp.transpose(0, 1), tg, il, tl),
        "float input_lengths": (lp, tg, il.double(), tl),
        "bool target_lengths": (lp, tg, il, tl.bool()),
        "blank out of range": (lp, tg, il, tl, 5),
        "negative blank": (lp, tg, il, tl, -1),
        "empty batch": (lp[:, :0], tg[:0], il[:0], tl[:0]),
        "no frames": (lp[:0], tg, torch.tensor([0, 0]), tl),
        "4-d log_probs": (lp[None], tg, il, tl),
        "3-d targets": (lp, tg[..., None], il, tl),
        "targets rows": (lp, tg[:1], il, tl),
        "integer log_probs": (lp.long(), tg, il, tl),
        "float tuple lengths": (lp, tg, (6.0, 5.0), (3, 2)),
        "mixed length kinds": (lp, tg, il, (3, 2)),
        "int length, unbatched": (lp[:, 0], tg[0], 6, 3),
        "unbatched, 2 lengths": (lp[:, 0], tg[0], il, tl),
    }


BAD = list(_bad_inputs(torch.Generator()))


@pytest.mark.parametrize("name", BAD)
def test_error_class_matches_torch(gen, name):
    args = _bad_inputs(gen)[name]
    with pytest.raises(Exception) as theirs:
        F.ctc_loss(*args)
    with pytest.raises(LossInputError) as ours:
        LF.ctc_loss(*args)
    assert isinstance(ours.value, type(theirs.value)), (ours.value, theirs.value)
    assert "Fix:" in str(ours.value)


# ----------------------------------------------------------------------------------------------
# Guardrails, each with a healthy twin that stays silent (LossWarning is an error in this suite)


@pytest.fixture(autouse=True)
def _always_check():
    with lk.checks("always"):
        yield


def test_raw_scores_warn_with_log_softmax_fix(gen):
    scores = torch.randn(6, 2, 5, generator=gen)
    _, targets, il, tl = _batch(gen)
    with pytest.warns(lk.LossWarning, match=r"not look like log-probabilities.*log_softmax\(2\)"):
        LF.ctc_loss(scores, targets, il, tl)
    with pytest.warns(lk.LossWarning, match=r"log_softmax\(1\)"):  # unbatched (T, C)
        LF.ctc_loss(scores[:, 0], targets[0], (6,), (3,))
    with pytest.warns(lk.LossWarning, match="probs.log()"):  # softmax, not log_softmax
        LF.ctc_loss(scores.softmax(2), targets, il, tl)


def test_healthy_twin_log_softmax_with_junk_after_input_lengths(gen):
    log_probs = torch.randn(6, 2, 5, generator=gen).log_softmax(2)
    log_probs[5:, 1] = 0.0  # padding frames after input_lengths[1] = 5 are not read
    _, targets, il, tl = _batch(gen)
    LF.ctc_loss(log_probs, targets, il, tl)


def test_batch_first_raises_naming_the_transpose(gen):
    log_probs = _log_probs(gen, 2, 6, 5)  # (N=2, T=6, C): batch first
    targets = torch.tensor([[1, 2, 3], [4, 4, 1]])
    with pytest.raises(LossRuntimeError, match=r"batch-first.*log_probs.transpose\(0, 1\)"):
        LF.ctc_loss(log_probs, targets, (6, 6), (3, 3))
    LF.ctc_loss(log_probs.transpose(0, 1), targets, (6, 6), (3, 3))  # twin: time first


def test_input_lengths_beyond_t_hint_batch_first(gen):
    log_probs = _log_probs(gen, 4, 6, 5)  # (N=4, T=6, C) batch first, lengths (4,) match dim 0
    targets = torch.tensor([[1, 2]] * 6)
    with pytest.raises(LossRuntimeError, match=r"at most 4 .*input_lengths\[0\] = 6.*batch-first"):
        LF.ctc_loss(log_probs, targets, (6,) * 6, (2,) * 6)
    with pytest.raises(LossRuntimeError, match=r"at most 4 .*raw input\.$"):  # no hint
        LF.ctc_loss(log_probs[:, :2], targets[:2], (6, 6), (2, 2))  # 6 > N = 2: not batch-first
    LF.ctc_loss(log_probs.transpose(0, 1), targets[:4], (6,) * 4, (2,) * 4)  # twin: time first


def test_target_longer_than_input_warns_naming_sample_and_zero_infinity(gen):
    log_probs, targets, _, tl = _batch(gen)
    with pytest.warns(lk.LossWarning, match=r"sample 1 .* at least 3 frames.*zero_infinity=True"):
        # sample 1: labels [4, 4] in 2 frames
        LF.ctc_loss(log_probs, targets, torch.tensor([6, 2]), tl)


def test_repeated_labels_need_a_blank_between(gen):
    log_probs, targets, _, tl = _batch(gen)
    with pytest.warns(lk.LossWarning, match="1 adjacent repeated label"):
        short = LF.ctc_loss(log_probs, targets, torch.tensor([6, 2]), tl, reduction="none")
    assert short[1] == math.inf
    # twin: exactly the frames needed (2 labels + 1 repeat = 3): finite, silent
    enough = LF.ctc_loss(log_probs, targets, torch.tensor([6, 3]), tl, reduction="none")
    assert enough[1].isfinite()
    # twin: zero_infinity=True, the user's choice for unalignable samples: silent
    LF.ctc_loss(log_probs, targets, torch.tensor([6, 2]), tl, zero_infinity=True)


def test_required_frames_concatenated_layout():
    from losskit.checks.sequence import required_frames

    targets = torch.tensor([1, 1, 2, 2, 3, 3, 3])  # samples [1, 1, 2], [2], [3, 3, 3]
    assert required_frames(targets, torch.tensor([3, 1, 3])).tolist() == [4, 1, 5]


@pytest.mark.parametrize("layout", ["padded", "concatenated"])
def test_blank_as_label_raises_naming_where(gen, layout):
    log_probs, _, il, tl = _batch(gen)
    if layout == "padded":
        targets, where = torch.tensor([[1, 0, 3], [4, 2, 0]]), r"targets\[0, 1\]"
    else:
        targets, where = torch.tensor([1, 2, 3, 4, 0]), "label 1 of sample 1"
    with pytest.raises(LossInputError, match=rf"blank=0 as a label: at {where}"):
        LF.ctc_loss(log_probs, targets, il, tl)
    with pytest.raises(LossInputError, match=r"blank=4 .*targets\[1, 0\]"):
        LF.ctc_loss(log_probs, torch.tensor([[1, 2, 3], [4, 1, 0]]), il, tl, blank=4)


def test_healthy_twin_blank_as_padding_after_the_lengths(gen):
    log_probs, _, il, tl = _batch(gen)
    LF.ctc_loss(log_probs, torch.tensor([[1, 2, 3], [4, 2, 0]]), il, tl)  # 0 only as padding


@pytest.mark.parametrize("bad", [5, -2])
def test_label_outside_classes_raises_index_error(gen, bad):
    log_probs, _, il, tl = _batch(gen)
    targets = torch.tensor([[1, 2, 3], [4, bad, 1]])
    F.ctc_loss(log_probs, targets, il, tl)  # torch reads out of bounds instead of raising
    with pytest.raises(LossIndexError, match=rf"outside \[0, 5\): {bad} at targets\[1, 1\]"):
        LF.ctc_loss(log_probs, targets, il, tl)
    with lk.checks("startup"):  # on the CPU the label check runs after the startup calls too
        for _ in range(12):
            with pytest.raises(IndexError):
                LF.ctc_loss(log_probs, targets, il, tl)


def test_float_targets_raise(gen):
    log_probs, targets, il, tl = _batch(gen)
    F.ctc_loss(log_probs, targets.double(), il, tl)  # torch truncates silently
    with pytest.raises(LossRuntimeError, match=r"targets.long\(\)"):
        LF.ctc_loss(log_probs, targets.double(), il, tl)
    for dtype in (torch.int32, torch.int16, torch.uint8):  # twin: any integer dtype, as torch
        LF.ctc_loss(log_probs, targets.clamp(min=0).to(dtype), il, tl)


def test_nan_log_probs_raise_but_neg_inf_is_a_log_probability(gen):
    log_probs, targets, il, tl = _batch(gen)
    with pytest.raises(LossRuntimeError, match="`log_probs` holds NaN"):
        LF.ctc_loss(log_probs.index_fill(2, torch.tensor([1]), math.nan), targets, il, tl)
    masked = log_probs.clone()
    masked[:, :, 2] = -math.inf  # class 2 impossible (renormalised): fine
    masked = masked.log_softmax(2)
    LF.ctc_loss(masked, torch.tensor([[1, 3, 4], [4, 4, 1]]), il, tl)


def test_checks_off_leaves_the_metadata_checks(gen):
    log_probs, _, il, tl = _batch(gen)
    blank_inside = torch.tensor([[1, 0, 3], [4, 2, -1]])
    with lk.checks("off"):  # the label check is off: torch's number, whatever it means
        torch.testing.assert_close(LF.ctc_loss(log_probs, blank_inside, il, tl),
                                   F.ctc_loss(log_probs, blank_inside, il, tl), rtol=0, atol=0)
        with pytest.raises(LossRuntimeError, match="batch-first"):
            LF.ctc_loss(log_probs.transpose(0, 1), blank_inside, il, tl)


def test_ctc_reads_labels_in_python_only_up_to_small_targets(monkeypatch):
    """Issue 16, seed 4: past the startup calls, CTC's plain path reads the labels into Python
    lists for at most SMALL_TARGETS (256) entries; a longer target leaves them to the detailed
    checks (a list of 257+ ints costs more than it saves). Both give torch's value."""
    import importlib

    seq_checks = importlib.import_module("losskit.checks.sequence")
    read_sizes = []
    plain = seq_checks.plain_labels_clear
    monkeypatch.setattr(seq_checks, "plain_labels_clear",
                        lambda t, *a: read_sizes.append(t.numel()) or plain(t, *a))
    g = torch.Generator().manual_seed(0)
    lp = torch.randn(600, 1, 5, generator=g, dtype=torch.float64).log_softmax(-1)  # (T, N, C)
    for s in (256, 257):
        targets = (torch.arange(s) % 4 + 1)[None]  # (1, S): 1, 2, 3, 4, 1, ... no repeats
        lengths = torch.tensor([600]), torch.tensor([s])  # tensors: the plain path
        with lk.checks("startup"):
            for _ in range(importlib.import_module("losskit.checks").STARTUP_CALLS + 1):
                got = LF.ctc_loss(lp, targets, *lengths)
        torch.testing.assert_close(got, F.ctc_loss(lp, targets, *lengths), rtol=1e-12, atol=0)
    assert read_sizes == [256], read_sizes
