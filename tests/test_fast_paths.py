"""The small-call fast paths skip no check: past the startup calls, where a call is decided
"common" in a few attribute reads (``plain_class_call``, the margin and ranking predicates, the
tiny linear+CE path, CTC's Python length test), every bad input still meets the detailed check.

Oracles: each bad call raises the guardrail written for its mistake (class and the words that
name it, written here by hand); healthy calls past the startup give torch's values and gradients.
"""

from __future__ import annotations

import importlib

import pytest
import torch
import torch.nn.functional as F

import losskit as lk
import losskit.functional as LF

CHECKS = importlib.import_module("losskit.checks")  # `lk.checks` is the context manager
STARTUP_CALLS = CHECKS.STARTUP_CALLS


def _logp(*shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0)).log_softmax(-1)


def _x(*shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(1))


Y4 = torch.tensor([0, 2, 1, 2])
SIGNS = torch.tensor([1.0, -1.0, 1.0, -1.0])
CTC_LP = _logp(6, 2, 5)  # (T, N, C)

# (id, function, healthy args, bad args, the bad call's kwargs, (error class, words of its
# message)): the healthy call runs past the startup, then the bad one must raise the guardrail
# that names the mistake.
CASES = [
    ("nll float target", LF.nll_loss, (_logp(4, 3), Y4), (_logp(4, 3), Y4.float()), {},
     ("LossRuntimeError", 'class indices must be integers')),
    ("nll (N,1) target", LF.nll_loss, (_logp(4, 3), Y4), (_logp(4, 3), Y4[:, None]), {},
     ("LossRuntimeError", 'target.squeeze(1)')),
    ("nll short target", LF.nll_loss, (_logp(4, 3), Y4), (_logp(4, 3), Y4[:3]), {},
     ("LossInputError", 'batch_size (4) to match target batch_size (3)')),
    ("nll int32 target", LF.nll_loss, (_logp(4, 3), Y4), (_logp(4, 3), Y4.int()), {},
     ("LossRuntimeError", 'dtype torch.int32')),
    ("nll weight length", LF.nll_loss, (_logp(4, 3), Y4, torch.ones(3)),
     (_logp(4, 3), Y4, torch.ones(4)), {},
     ("LossRuntimeError", '`weight` has shape (4,)')),
    ("nll weight dtype", LF.nll_loss, (_logp(4, 3), Y4, torch.ones(3)),
     (_logp(4, 3), Y4, torch.ones(3, dtype=torch.float64)), {},
     ("LossRuntimeError", '`weight` has dtype torch.float64')),
    ("nll integer input", LF.nll_loss, (_logp(4, 3), Y4), (torch.ones(4, 3, dtype=torch.long), Y4),
     {},
     ("LossNotImplementedError", 'floating-point predictions')),
    ("ce float target", LF.cross_entropy, (_x(4, 3), Y4), (_x(4, 3), Y4.float()), {},
     ("LossRuntimeError", 'class indices must be integers')),
    ("ce weight length", LF.cross_entropy, (_x(4, 3), Y4, torch.ones(3)),
     (_x(4, 3), Y4, torch.ones(2)), {},
     ("LossRuntimeError", '`weight` has shape (2,)')),
    ("ce one class", LF.cross_entropy, (_x(4, 3), Y4), (_x(4, 1), torch.zeros(4, dtype=torch.long)),
     {},
     ("LossInputError", '1 class along dim 1')),
    ("multi_margin p=3", LF.multi_margin_loss, (_x(4, 3), Y4), (_x(4, 3), Y4), {"p": 3},
     ("LossInputError", 'p=3')),
    ("multi_margin float target", LF.multi_margin_loss, (_x(4, 3), Y4), (_x(4, 3), Y4.float()),
     {},
     ("LossRuntimeError", 'dtype int64')),
    ("multi_margin (N,1) target", LF.multi_margin_loss, (_x(4, 3), Y4), (_x(4, 3), Y4[:, None]),
     {},
     ("LossRuntimeError", 'target.squeeze(1)')),
    ("multi_margin 2-D weight", LF.multi_margin_loss, (_x(4, 3), Y4),
     (_x(4, 3), Y4, 1, 1.0, torch.ones(1, 3)), {},
     ("LossInputError", 'one-dimensional')),
    ("multilabel float target", LF.multilabel_margin_loss,
     (_x(4, 3), torch.tensor([[0, -1, 0]] * 4)), (_x(4, 3), torch.ones(4, 3)), {},
     ("LossRuntimeError", 'padded with -1')),
    ("multilabel 3-D input", LF.multilabel_margin_loss,
     (_x(4, 3), torch.tensor([[0, -1, 0]] * 4)),
     (_x(2, 2, 3), torch.tensor([[[0, -1, 0]] * 2] * 2)), {},
     ("LossRuntimeError", 'takes (C,) or (N, C) scores')),
    ("hinge bool target", LF.hinge_embedding_loss, (_x(4).abs(), SIGNS),
     (_x(4).abs(), SIGNS > 0), {},
     ("LossInputError", 'True/False labels')),
    ("hinge (N,1) target", LF.hinge_embedding_loss, (_x(4).abs(), SIGNS),
     (_x(4).abs(), SIGNS[:, None]), {},
     ("LossInputError", 'broadcast them silently to (4, 4)')),
    ("hinge integer input", LF.hinge_embedding_loss, (_x(4).abs(), SIGNS),
     (torch.ones(4, dtype=torch.long), SIGNS), {},
     ("LossRuntimeError", 'floating-point predictions')),
    ("ranking uint8 target", LF.margin_ranking_loss, (_x(4), _x(4), SIGNS),
     (_x(4), _x(4), torch.ones(4, dtype=torch.uint8)), {},
     ("LossInputError", 'cannot hold the label -1')),
    ("ranking (1,) input2", LF.margin_ranking_loss, (_x(4), _x(4), SIGNS),
     (_x(4), _x(1), SIGNS), {},
     ("LossInputError", '`input2` has shape (1,)')),
    ("cosine 2-D target", LF.cosine_embedding_loss, (_x(4, 3), _x(4, 3), SIGNS),
     (_x(4, 3), _x(4, 3), SIGNS[:, None]), {},
     ("LossRuntimeError", 'one label per pair')),
    ("cosine short target", LF.cosine_embedding_loss, (_x(4, 3), _x(4, 3), SIGNS),
     (_x(4, 3), _x(4, 3), SIGNS[:3]), {},
     ("LossRuntimeError", 'has 3 labels')),
    ("cosine (1,D) input2", LF.cosine_embedding_loss, (_x(4, 3), _x(4, 3), SIGNS),
     (_x(4, 3), _x(1, 3), SIGNS), {},
     ("LossInputError", '`input2` has shape (1, 3)')),
    ("gaussian negative var", LF.gaussian_nll_loss, (_x(4, 3), _x(4, 3), torch.ones(4, 3)),
     (_x(4, 3), _x(4, 3), -torch.ones(4, 3)), {},
     ("LossInputError", 'var has negative entry/entries: `var` holds -1.0')),
    ("gaussian negative var, wrong size", LF.gaussian_nll_loss,
     (_x(4, 3), _x(4, 3), torch.ones(4, 3)), (_x(4, 3), _x(4, 3), -torch.ones(2, 3)), {},
     ("LossInputError", 'var has negative entry/entries')),
    ("gaussian negative float var", LF.gaussian_nll_loss, (_x(4, 3), _x(4, 3), 1.0),
     (_x(4, 3), _x(4, 3), -1.0), {},
     ("LossInputError", 'var=-1.0')),
    ("linear+CE index past the head", LF.linear_cross_entropy, (_x(4, 2), _x(3, 2), Y4),
     (_x(4, 2), _x(3, 2), torch.tensor([0, 1, 3, 2])), {},
     ("LossIndexError", 'linear_cross_entropy: `target` holds a class index outside [0, 3): 3')),
    ("linear+CE negative index", LF.linear_cross_entropy, (_x(4, 2), _x(3, 2), Y4),
     (_x(4, 2), _x(3, 2), torch.tensor([0, 1, -3, 2])), {},
     ("LossIndexError", 'linear_cross_entropy: `target` holds a class index outside [0, 3): -3')),
    ("linear+CE weight length", LF.linear_cross_entropy, (_x(4, 2), _x(3, 2), Y4),
     (_x(4, 2), _x(3, 2), Y4), {"weight": torch.ones(2)},
     ("LossRuntimeError", '`weight` has shape (2,)')),
    ("ctc label is the blank", LF.ctc_loss,
     (CTC_LP, torch.tensor([[1, 2], [3, 0]]), (6, 6), (2, 1)),
     (CTC_LP, torch.tensor([[1, 0], [3, 0]]), (6, 6), (2, 1)), {},
     ("LossInputError", 'uses the blank index blank=0 as a label')),
    ("ctc label past the classes", LF.ctc_loss,
     (CTC_LP, torch.tensor([[1, 2], [3, 0]]), (6, 6), (2, 1)),
     (CTC_LP, torch.tensor([[1, 5], [3, 0]]), (6, 6), (2, 1)), {},
     ("LossIndexError", 'label outside [0, 5): 5')),
    ("ctc target length past S", LF.ctc_loss,
     (CTC_LP, torch.tensor([[1, 2], [3, 0]]), (6, 6), (2, 1)),
     (CTC_LP, torch.tensor([[1, 2], [3, 0]]), (6, 6), (3, 1)), {},
     ("LossRuntimeError", 'target_lengths[0] = 3')),
    ("ctc input length past T", LF.ctc_loss,
     (CTC_LP, torch.tensor([[1, 2], [3, 0]]), (6, 6), (2, 1)),
     (CTC_LP, torch.tensor([[1, 2], [3, 0]]), (7, 6), (2, 1)), {},
     ("LossRuntimeError", 'input_lengths[0] = 7')),
    ("ctc negative length (tensors)", LF.ctc_loss,
     (CTC_LP, torch.tensor([[1, 2], [3, 0]]), torch.tensor([6, 6]), torch.tensor([2, 1])),
     (CTC_LP, torch.tensor([[1, 2], [3, 0]]), torch.tensor([6, 6]), torch.tensor([2, -1])), {},
     ("LossRuntimeError", 'target_lengths[1] = -1')),
    ("ctc concatenated lengths off", LF.ctc_loss,
     (CTC_LP, torch.tensor([1, 2, 3]), (6, 6), (2, 1)),
     (CTC_LP, torch.tensor([1, 2, 3]), (6, 6), (2, 2)), {},
     ("LossRuntimeError", 'sum to 4')),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_call_past_startup_meets_its_guardrail(case) -> None:
    _, fn, healthy, bad, kwargs, (error, words) = case
    with lk.checks("startup"):
        for _ in range(STARTUP_CALLS + 1):
            fn(*healthy)
        with pytest.raises(getattr(CHECKS, error)) as info:
            fn(*bad, **kwargs)
    assert words in str(info.value)
    assert "Fix" in str(info.value)


HEALTHY = [
    ("nll weighted", LF.nll_loss, F.nll_loss, (_logp(5, 4), torch.tensor([0, 3, 1, 2, 1]),
                                               torch.rand(4)), {"ignore_index": 1}),
    ("ce", LF.cross_entropy, F.cross_entropy, (_x(5, 4), torch.tensor([0, 3, 1, 2, 1])), {}),
    ("multi_margin p=2", LF.multi_margin_loss, F.multi_margin_loss,
     (_x(5, 4), torch.tensor([0, 3, 1, 2, 1])), {"p": 2, "margin": 0.5}),
    ("multilabel", LF.multilabel_margin_loss, F.multilabel_margin_loss,
     (_x(2, 4), torch.tensor([[3, 0, -1, 1], [1, -1, 0, 0]])), {}),
    ("hinge", LF.hinge_embedding_loss, F.hinge_embedding_loss, (_x(4).abs(), SIGNS),
     {"margin": 0.7}),
    ("ranking", LF.margin_ranking_loss, F.margin_ranking_loss, (_x(4), _x(4).flip(0), SIGNS),
     {"margin": 0.2}),
    ("cosine", LF.cosine_embedding_loss, F.cosine_embedding_loss,
     (_x(4, 3), _x(4, 3).flip(0), SIGNS), {"margin": 0.1}),
    ("cosine one pair", LF.cosine_embedding_loss, F.cosine_embedding_loss,
     (_x(3), _x(3).flip(0), torch.tensor(-1.0)), {}),
    ("gaussian shared var", LF.gaussian_nll_loss, F.gaussian_nll_loss,
     (_x(4, 3), _x(4, 3).flip(0), torch.rand(4, 1) + 0.1), {}),
    ("linear+CE", LF.linear_cross_entropy, F.linear_cross_entropy,
     (_x(5, 3), _x(4, 3), torch.tensor([0, 3, -100, 2, 1])), {"label_smoothing": 0.1}),
    ("linear+CE all ignored", LF.linear_cross_entropy, None,
     (_x(2, 3), _x(4, 3), torch.tensor([-100, -100])), {}),
    ("ctc", LF.ctc_loss, F.ctc_loss,
     (CTC_LP, torch.tensor([[1, 2], [3, 0]]), torch.tensor([6, 5]), torch.tensor([2, 1])), {}),
]


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("case", HEALTHY, ids=[c[0] for c in HEALTHY])
def test_healthy_call_past_startup_is_torchs(case, reduction: str) -> None:
    _, fn, torch_fn, args, kwargs = case
    x = args[0].double().requires_grad_()
    rest = tuple(a.double() if a.is_floating_point() else a for a in args[1:])
    with lk.checks("startup"):
        # warm up on counted targets: the startup's all-ignored warning is not the point here
        warm = rest if torch_fn is not None else (rest[0], torch.tensor([0, 1]))
        for _ in range(STARTUP_CALLS + 1):
            fn(x.detach(), *warm, **kwargs, reduction=reduction)
        ours = fn(x, *rest, **kwargs, reduction=reduction)
    (g_ours,) = torch.autograd.grad(ours.sum(), x)
    if torch_fn is None:  # every target ignored: losskit's documented 0 (torch: NaN)
        expected = torch.zeros(2, dtype=x.dtype) if reduction == "none" else torch.zeros(())
        torch.testing.assert_close(ours, expected.to(x.dtype), rtol=0, atol=0)
        assert torch.equal(g_ours, torch.zeros_like(x))
        return
    theirs = torch_fn(x, *rest, **kwargs, reduction=reduction)
    (g_theirs,) = torch.autograd.grad(theirs.sum(), x)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(g_ours, g_theirs, rtol=1e-12, atol=1e-12)
