"""The small-call fast paths skip no check: past the startup calls, where a call is decided
"common" in a few attribute reads (``plain_class_call``, the direct call of cross-entropy
and NLL, the margin and ranking predicates, the tiny linear+CE path and its ``plain_small_call``,
CTC's ``_direct_ctc`` and Python label test, unbatched cross-entropy), every bad input still
meets the detailed check, also where torch's op is left to refuse it first.

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
    ("linear+CE (N,1) target", LF.linear_cross_entropy, (_x(4, 2), _x(3, 2), Y4),
     (_x(4, 2), _x(3, 2), Y4[:, None]), {}, ("LossRuntimeError", "target.squeeze(1)")),
    ("gaussian negative var before a bad reduction", LF.gaussian_nll_loss,
     (_x(4, 3), _x(4, 3), torch.ones(4, 3)), (_x(4, 3), _x(4, 3), -torch.ones(4, 3)),
     {"reduction": None}, ("LossInputError", "var has negative entry/entries")),
    ("gaussian negative var before a bad target shape", LF.gaussian_nll_loss,
     (_x(4, 3), _x(4, 3), torch.ones(4, 3)), (_x(4, 3), _x(4, 1), -torch.ones(4, 3)), {},
     ("LossInputError", "var has negative entry/entries")),
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


# Tensor lengths (the plain CTC call), the plain linear+CE call and unbatched cross-entropy: each
# bad call breaks one condition of the accept test, or passes it with bad values.
CTC_TG = torch.tensor([[1, 2], [3, 0]])
IL, TL = torch.tensor([6, 6]), torch.tensor([2, 1])


def _ctc_bad(id, bad, error, words, healthy=(CTC_LP, CTC_TG, IL, TL)):
    return (f"ctc plain {id}", LF.ctc_loss, healthy, bad, {}, (error, words))


def _lce_bad(id, bad, kwargs, error, words):
    return (f"linear+CE plain {id}", LF.linear_cross_entropy, (_x(4, 2), _x(3, 2), Y4), bad, kwargs,
            (error, words))


def _ce1_bad(id, fn, bad, error, words):
    healthy = (_logp(5) if fn is LF.nll_loss else _x(5), torch.tensor(3))
    return (f"{fn.__name__} unbatched {id}", fn, healthy, bad, {}, (error, words))


PLAIN_CASES = [
    _ctc_bad("label is the blank", (CTC_LP, torch.tensor([[1, 0], [3, 0]]), IL, TL),
             "LossInputError", "uses the blank index blank=0 as a label"),
    _ctc_bad("label past the classes", (CTC_LP, torch.tensor([[1, 2], [5, 0]]), IL, TL),
             "LossIndexError", "label outside [0, 5): 5"),
    _ctc_bad("negative label", (CTC_LP, torch.tensor([[1, -2], [3, 0]]), IL, TL),
             "LossIndexError", "label outside [0, 5): -2"),
    _ctc_bad("blank=3 used", (CTC_LP, CTC_TG, IL, TL, 3),
             "LossInputError", "uses the blank index blank=3 as a label"),
    _ctc_bad("blank past C", (CTC_LP, CTC_TG, IL, TL, 5), "LossRuntimeError", "blank=5"),
    _ctc_bad("target length past S", (CTC_LP, CTC_TG, IL, torch.tensor([3, 1])),
             "LossRuntimeError", "target_lengths[0] = 3"),
    _ctc_bad("negative target length", (CTC_LP, CTC_TG, IL, torch.tensor([2, -1])),
             "LossRuntimeError", "target_lengths[1] = -1"),
    _ctc_bad("input length past T", (CTC_LP, CTC_TG, torch.tensor([6, 7]), TL),
             "LossRuntimeError", "input_lengths[1] = 7"),
    _ctc_bad("negative input length", (CTC_LP, CTC_TG, torch.tensor([-1, 6]), TL),
             "LossRuntimeError", "input_lengths[0] = -1"),
    _ctc_bad("concatenated lengths off",
             (CTC_LP, torch.tensor([1, 2, 3]), IL, torch.tensor([2, 2])),
             "LossRuntimeError", "sum to 4"),
    _ctc_bad("concatenated blank", (CTC_LP, torch.tensor([1, 0, 3]), IL, TL),
             "LossInputError", "uses the blank index blank=0"),
    _ctc_bad("batch-first log_probs", (CTC_LP.transpose(0, 1), CTC_TG, IL, TL),
             "LossRuntimeError", "log_probs.transpose(0, 1)"),
    _ctc_bad("(T, C) log_probs, 2 samples", (CTC_LP[:, 0], CTC_TG, IL, TL),
             "LossRuntimeError", "input_lengths must be of size batch_size"),
    _ctc_bad("float16 log_probs", (CTC_LP.half(), CTC_TG, IL, TL),
             "LossNotImplementedError", "float32 or float64"),
    _ctc_bad("no frames", (CTC_LP[:0], CTC_TG, torch.tensor([0, 0]), TL),
             "LossRuntimeError", "must not be empty"),
    _ctc_bad("no samples", (CTC_LP[:, :0], CTC_TG[:0], IL[:0], TL[:0]),
             "LossRuntimeError", "must not be empty"),
    _ctc_bad("targets on meta", (CTC_LP, CTC_TG.to("meta"), IL, TL),
             "LossInputError", "`targets.to(log_probs.device)`"),
    _ctc_bad("3 target lengths", (CTC_LP, CTC_TG, IL, torch.tensor([2, 1, 1])),
             "LossRuntimeError", "target_lengths must be of size batch_size"),
    _ctc_bad("float targets", (CTC_LP, CTC_TG.float(), IL, TL),
             "LossRuntimeError", "CTC targets are class indices"),
    _ctc_bad("3 rows of targets", (CTC_LP, torch.tensor([[1, 2], [3, 0], [1, 1]]), IL, TL),
             "LossRuntimeError", "so it needs 2 rows"),
    _ctc_bad("float lengths", (CTC_LP, CTC_TG, IL.float(), TL),
             "LossRuntimeError", "input_lengths must be integral"),
    _ctc_bad("3 input lengths", (CTC_LP, CTC_TG, torch.tensor([6, 6, 6]), TL),
             "LossRuntimeError", "input_lengths must be of size batch_size"),
    # input_lengths past the accept test: torch's op refuses each of these, then the full path
    _ctc_bad("bool input lengths", (CTC_LP, CTC_TG, torch.tensor([True, True]), TL),
             "LossRuntimeError", "torch.bool, device cpu, but input_lengths must be integral"),
    _ctc_bad("input lengths on meta", (CTC_LP, CTC_TG, IL.to("meta"), TL),
             "LossInputError", "`input_lengths.to(log_probs.device)`"),
    _ctc_bad("0-d input length", (CTC_LP, CTC_TG, torch.tensor(6), TL),
             "LossRuntimeError", "it has 1 entries"),
    _ctc_bad("(2, 1) target lengths, label past C", (CTC_LP, CTC_TG + 4, IL, TL[:, None]),
             "LossIndexError", "label outside [0, 5)"),
    _ctc_bad("tensor and tuple lengths", (CTC_LP, CTC_TG, IL, (2, 1)),
             "LossInputError", "both lengths as tensors"),  # a LossTypeError
    _lce_bad("transposed head", (_x(4, 2), _x(2, 3), Y4), {}, "LossRuntimeError",
             "looks transposed"),
    _lce_bad("float64 head", (_x(4, 2), _x(3, 2).double(), Y4), {}, "LossRuntimeError",
             "the head's matmul needs one dtype"),
    _lce_bad("int32 target", (_x(4, 2), _x(3, 2), Y4.int()), {}, "LossRuntimeError",
             "dtype torch.int32"),
    _lce_bad("float target", (_x(4, 2), _x(3, 2), Y4.float()), {}, "LossRuntimeError",
             "class indices must be integers"),
    _lce_bad("short target", (_x(4, 2), _x(3, 2), Y4[:3]), {}, "LossInputError",
             "expected input batch_size (4) to match target batch_size"),
    _lce_bad("one class", (_x(4, 2), _x(1, 2), torch.zeros(4, dtype=torch.long)), {},
             "LossInputError", "one class"),
    _lce_bad("K-dim head, (N,) target", (_x(4, 2), _x(3, 2, 2), Y4), {}, "LossRuntimeError",
             "expected target size [4, 2]"),
    _lce_bad("3-D input", (_x(2, 2, 2), _x(3, 2), Y4.reshape(2, 2)), {}, "LossRuntimeError",
             "input.flatten(0, 1)"),
    _lce_bad("integer input", (torch.ones(4, 2, dtype=torch.long), torch.ones(3, 2).long(), Y4),
             {}, "LossNotImplementedError", "floating-point predictions"),
    _lce_bad("bias of 2", (_x(4, 2), _x(3, 2), Y4), {"linear_bias": torch.zeros(2)},
             "LossRuntimeError", "expected linear_bias shape (3,)"),
    _lce_bad("(3, 1) bias", (_x(4, 2), _x(3, 2), Y4), {"linear_bias": torch.zeros(3, 1)},
             "LossRuntimeError", "`linear_bias.reshape(3,)`"),
    _lce_bad("(3, 1) weight", (_x(4, 2), _x(3, 2), Y4), {"weight": torch.ones(3, 1)},
             "LossRuntimeError", "`weight` has shape (3, 1)"),
    _lce_bad("float64 bias", (_x(4, 2), _x(3, 2), Y4),
             {"linear_bias": torch.zeros(3, dtype=torch.float64)},
             "LossRuntimeError", "the head's matmul needs one dtype"),
    _lce_bad("float64 weight", (_x(4, 2), _x(3, 2), Y4),
             {"weight": torch.ones(3, dtype=torch.float64)},
             "LossRuntimeError", "`weight` has dtype torch.float64"),
    _lce_bad("(1, 3) weight", (_x(4, 2), _x(3, 2), Y4), {"weight": torch.ones(1, 3)},
             "LossRuntimeError", "`weight` has shape (1, 3)"),
    _lce_bad("weight needs grad", (_x(4, 2), _x(3, 2), Y4),
             {"weight": torch.ones(3, requires_grad=True)},
             "LossRuntimeError", "`weight` requires grad"),
    _lce_bad("label_smoothing 1.5", (_x(4, 2), _x(3, 2), Y4), {"label_smoothing": 1.5},
             "LossRuntimeError", "label_smoothing must be between 0.0 and 1.0"),
    _lce_bad("softcap 0", (_x(4, 2), _x(3, 2), Y4), {"softcap": 0.0},
             "LossInputError", "softcap=0.0"),
    _lce_bad("chunk_size 0", (_x(4, 2), _x(3, 2), Y4), {"chunk_size": 0},
             "LossInputError", "chunk_size=0"),
    _lce_bad("bad options", (_x(4, 2), _x(3, 2), Y4), {"options": "chunked"},
             "LossInputError", "expected None or a torch.nn.LinearCrossEntropyOptions"),
    _lce_bad("probabilities with ignore_index", (_x(4, 2), _x(3, 2), _x(4, 3).softmax(1)),
             {"ignore_index": 0}, "LossRuntimeError", "ignore_index cannot be specified"),
    _lce_bad("index past the head, with bias and weight", (_x(4, 2), _x(3, 2), Y4 + 1),
             {"linear_bias": torch.zeros(3), "weight": torch.ones(3)},
             "LossIndexError", "class index outside [0, 3): 3"),
    _ce1_bad("(1,) target", LF.cross_entropy, (_x(5), torch.tensor([3])), "LossInputError",
             "a 0-d target `target[0]`"),
    _ce1_bad("float target", LF.cross_entropy, (_x(5), torch.tensor(3.0)), "LossRuntimeError",
             "class indices must be integers"),
    _ce1_bad("int32 target", LF.cross_entropy, (_x(5), torch.tensor(3, dtype=torch.int32)),
             "LossRuntimeError", "dtype torch.int32"),
    _ce1_bad("one class", LF.cross_entropy, (_x(1), torch.tensor(0)), "LossInputError",
             "1 class along dim 0"),
    _ce1_bad("index past C", LF.cross_entropy, (_x(5), torch.tensor(5)), "LossIndexError",
             "class index outside [0, 5): 5"),
    _ce1_bad("weight of 4", LF.cross_entropy, (_x(5), torch.tensor(3), torch.ones(4)),
             "LossRuntimeError", "`weight` has shape (4,)"),
    _ce1_bad("float64 weight", LF.cross_entropy,
             (_x(5), torch.tensor(3), torch.ones(5, dtype=torch.float64)),
             "LossRuntimeError", "`weight` has dtype torch.float64"),
    _ce1_bad("integer input", LF.cross_entropy, (torch.ones(5, dtype=torch.long), torch.tensor(3)),
             "LossNotImplementedError", "floating-point predictions"),
    _ce1_bad("index past C", LF.nll_loss, (_logp(5), torch.tensor(7)), "LossIndexError",
             "class index outside [0, 5): 7"),
    _ce1_bad("(5,) target", LF.nll_loss, (_logp(5), torch.tensor([0, 1, 2, 3, 4])),
             "LossRuntimeError", "one class index per sample, shape ()"),
]


# The direct class-index call (classification.py, "The direct call"): torch's op runs first,
# and every call it refuses, or that torch's op would compute where losskit refuses, must meet
# the full path.
def _direct_bad(id, fn, bad, error, words, kwargs=None):
    healthy = (_logp(4, 3) if fn is LF.nll_loss else _x(4, 3), Y4)
    return (f"{fn.__name__} direct {id}", fn, healthy, bad, kwargs or {}, (error, words))


DIRECT_CASES = [
    case
    for fn, x in ((LF.cross_entropy, _x(4, 3)), (LF.nll_loss, _logp(4, 3)))
    for case in (
        # torch's op raises for these (RuntimeError, ValueError, IndexError); losskit names them
        _direct_bad("(3, 1) weight", fn, (x, Y4, torch.ones(3, 1)), "LossRuntimeError",
                    "`weight` has shape (3, 1)"),
        _direct_bad("short target", fn, (x, Y4[:3]), "LossInputError",
                    "batch_size (4) to match target batch_size (3)"),
        _direct_bad("long target", fn, (x, torch.tensor([0, 1, 2, 0, 1])), "LossInputError",
                    "batch_size (4) to match target batch_size (5)"),
        _direct_bad("target on meta", fn, (x, Y4.to("meta")), "LossRuntimeError",
                    "`target = target.to('cpu')`"),
        _direct_bad("weight on meta", fn, (x, Y4, torch.ones(3, device="meta")),
                    "LossRuntimeError", "`weight = weight.to('cpu')`"),
        _direct_bad("weight of 2", fn, (x, Y4, torch.ones(2)), "LossRuntimeError",
                    "`weight` has shape (2,)"),
        _direct_bad("float64 weight", fn, (x, Y4, torch.ones(3, dtype=torch.float64)),
                    "LossRuntimeError", "`weight` has dtype torch.float64"),
        _direct_bad("index past C", fn, (x, torch.tensor([0, 3, 1, 2])), "LossIndexError",
                    "class index outside [0, 3): 3 at index (1,)"),
        _direct_bad("negative index", fn, (x, torch.tensor([0, 1, -1, 2])), "LossIndexError",
                    "class index outside [0, 3): -1 at index (2,)"),
        _direct_bad("index past C, ignore_index 3", fn, (x, torch.tensor([3, 4, 1, 2])),
                    "LossIndexError", "4 at index (1,)", {"ignore_index": 3}),
        _direct_bad("0-d target", fn, (x, torch.tensor(1)), "LossInputError",
                    "target batch_size (a 0-d target)"),
        _direct_bad("bad reduction", fn, (x, Y4), "LossInputError", "reduction='avg'",
                    {"reduction": "avg"}),
    )
]
CASES += DIRECT_CASES

_BX, _BY = _x(4, 3), torch.rand(4, 3, generator=torch.Generator().manual_seed(2))
BCE_DIRECT_CASES = [  # binary_cross_entropy_with_logits' direct call
    ("bce logits direct (4, 1) input, (4,) target", LF.binary_cross_entropy_with_logits,
     (_BX, _BY), (_x(4, 1), _BY[:, 0]), {},
     ("LossInputError", "`target` has shape (4,) but `input` has shape (4, 1)")),
    ("bce logits direct int target", LF.binary_cross_entropy_with_logits, (_BX, _BY),
     (_BX, _BY.round().long()), {}, ("LossRuntimeError", "must be floating point")),
    ("bce logits direct target on meta", LF.binary_cross_entropy_with_logits, (_BX, _BY),
     (_BX, _BY.to("meta")), {}, ("LossRuntimeError", "`target = target.to('cpu')`")),
    ("bce logits direct weight that enlarges", LF.binary_cross_entropy_with_logits, (_BX, _BY),
     (_BX, _BY, torch.ones(5, 4, 3)), {}, ("LossRuntimeError", "does not broadcast over")),
    # torch's op broadcasts a larger target silently (it refuses a smaller one)
    ("bce logits direct larger target", LF.binary_cross_entropy_with_logits, (_BX, _BY),
     (_BX[0], _BY), {}, ("LossInputError", "`target` has shape (4, 3) but `input` has shape (3,)")),
    ("bce logits direct short target", LF.binary_cross_entropy_with_logits, (_BX, _BY),
     (_BX, _BY[:3]), {}, ("LossInputError", "`target` has shape (3, 3)")),
]
CASES += BCE_DIRECT_CASES
CASES += PLAIN_CASES


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
    ("ctc concatenated int32, blank=4", LF.ctc_loss, F.ctc_loss,
     (CTC_LP, torch.tensor([1, 2, 3], dtype=torch.int32), torch.tensor([6, 4], dtype=torch.int32),
      torch.tensor([2, 1], dtype=torch.int32), 4), {}),
    ("ctc int16 (N, 1) input lengths", LF.ctc_loss, F.ctc_loss,
     (CTC_LP, torch.tensor([[1, 2], [3, 0]]), torch.tensor([[6], [5]], dtype=torch.int16),
      torch.tensor([2, 1])), {}),
    ("ctc zero_infinity, unalignable", LF.ctc_loss, F.ctc_loss,
     (CTC_LP, torch.tensor([[1, 1], [3, 0]]), torch.tensor([2, 5]), torch.tensor([2, 0])),
     {"zero_infinity": True}),
    ("linear+CE bias weight ignore_index", LF.linear_cross_entropy, F.linear_cross_entropy,
     (_x(5, 3), _x(4, 3), torch.tensor([0, 3, 1, 2, 1])),
     {"linear_bias": _x(4).double(), "weight": torch.rand(4, dtype=torch.float64),
      "ignore_index": 1}),
    ("ce unbatched", LF.cross_entropy, F.cross_entropy, (_x(5), torch.tensor(3)), {}),
    ("ce unbatched weight ls", LF.cross_entropy, F.cross_entropy,
     (_x(5), torch.tensor(1), torch.rand(5)), {"label_smoothing": 0.2}),
    ("nll unbatched", LF.nll_loss, F.nll_loss, (_logp(5), torch.tensor(4)), {}),
]


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("case", HEALTHY, ids=[c[0] for c in HEALTHY])
def test_healthy_call_past_startup_is_torchs(case, reduction: str) -> None:
    _, fn, torch_fn, args, kwargs = case
    x = args[0].double().requires_grad_()
    rest = tuple(a.double() if isinstance(a, torch.Tensor) and a.is_floating_point() else a
                 for a in args[1:])
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


def test_gaussian_negative_var_is_named_before_nan_during_startup() -> None:
    """torch reads the sign before anything else; the startup's NaN check comes after it."""
    x = torch.zeros(2, 3)
    var = torch.tensor([[-1.0, float("nan"), 1.0]] * 2)
    with lk.checks("always"), pytest.raises(CHECKS.LossInputError, match="negative entry"):
        LF.gaussian_nll_loss(x, x, var)
    with pytest.raises(ValueError, match="negative entry"):
        F.gaussian_nll_loss(x, x, var)


# Review of the fast paths: messages on the paths around them.


def test_ctc_length_error_past_startup_is_not_chained_to_torchs() -> None:
    """The plain CTC call leaves bad lengths to torch's op; losskit's message replaces torch's
    instead of arriving as "during handling of the above exception"."""
    with lk.checks("startup"):
        for _ in range(STARTUP_CALLS + 1):
            LF.ctc_loss(CTC_LP, CTC_TG, IL, TL)
        with pytest.raises(CHECKS.LossRuntimeError) as info:
            LF.ctc_loss(CTC_LP, CTC_TG, torch.tensor([7, 6]), TL)
    assert "input_lengths[0] = 7" in str(info.value)
    assert info.value.__context__ is None and info.value.__cause__ is None


@pytest.mark.parametrize("blank", [True, 1.0])
def test_ctc_blank_not_an_int_is_torchs_type_error(blank) -> None:
    with pytest.raises(TypeError):  # torch's class
        F.ctc_loss(CTC_LP, CTC_TG, IL, TL, blank=blank)
    with pytest.raises(TypeError) as info:
        LF.ctc_loss(CTC_LP, CTC_TG, IL, TL, blank=blank)
    assert isinstance(info.value, CHECKS.LossInputError)
    assert f"blank={blank!r}" in str(info.value) and "Fix: pass an int" in str(info.value)


@pytest.mark.parametrize("fn", [LF.cross_entropy, LF.nll_loss])
@pytest.mark.parametrize("shape,target", [((0,), torch.tensor(0)),
                                          ((3, 0), torch.tensor([0, 0, 0]))])
def test_no_classes_names_the_head_not_a_label_shift(fn, shape, target) -> None:
    with pytest.raises(IndexError):  # torch's class
        getattr(F, fn.__name__)(torch.zeros(shape), target)
    with lk.checks("always"), pytest.raises(IndexError) as info:
        fn(torch.zeros(shape), target)
    message = str(info.value)
    assert "has no classes (C = 0)" in message and "0..-1" not in message
    assert "Fix: give the model's head one output per class" in message


@pytest.mark.parametrize("fn", [LF.cross_entropy, LF.nll_loss])
def test_unbatched_weight_shape_names_dim_0(fn) -> None:
    with pytest.raises(RuntimeError) as info:
        fn(_logp(5), torch.tensor(2), torch.rand(3))
    assert "for the 5 classes in dim 0 of `input`" in str(info.value)
    with pytest.raises(RuntimeError) as info:
        fn(_logp(2, 5), torch.tensor([2, 1]), torch.rand(3))
    assert "for the 5 classes in dim 1 of `input`" in str(info.value)


def test_zero_d_target_out_of_range_is_named_without_an_empty_index() -> None:
    with pytest.raises(IndexError) as info:
        LF.cross_entropy(_x(5), torch.tensor(7))
    assert "7 (the 0-d target)" in str(info.value) and "index ()" not in str(info.value)


# The direct class-index call past the startup: what torch's op alone would get wrong.


def _past_startup(fn, x, target, **kwargs) -> None:
    for _ in range(STARTUP_CALLS + 1):
        fn(x.detach(), target, **kwargs)


@pytest.mark.parametrize("fn", [LF.cross_entropy, LF.nll_loss])
def test_direct_mean_over_no_counted_target_is_zero_and_zero_weight_stays_nan(fn) -> None:
    x = _logp(3, 4).double().requires_grad_()
    with lk.checks("startup"):
        _past_startup(fn, x, torch.tensor([0, 1, 2]))
        ignored = fn(x, torch.tensor([-100, -100, -100]))  # torch: 0 / 0 = NaN
        assert ignored.item() == 0.0
        (grad,) = torch.autograd.grad(ignored, x)
        assert torch.equal(grad, torch.zeros_like(x))
        # counted targets of zero total class weight: torch's NaN stands (not "nothing counted")
        weight = torch.zeros(4, dtype=torch.float64)
        ours = fn(x, torch.tensor([0, 1, 2]), weight)
        theirs = getattr(F, fn.__name__)(x, torch.tensor([0, 1, 2]), weight)
    assert theirs.isnan() and ours.isnan()


def test_direct_cross_entropy_keeps_the_class_weight_gradient() -> None:
    """torch's op refuses a class weight that requires grad; losskit's kernel gives its gradient
    (dL/dw_c for the weighted mean, derived by hand)."""
    x, y = _x(4, 3).double(), Y4
    weight = torch.tensor([0.5, 2.0, 1.0], dtype=torch.float64, requires_grad=True)
    with lk.checks("startup"):
        _past_startup(LF.cross_entropy, x, y)
        loss = LF.cross_entropy(x, y, weight)
    (grad,) = torch.autograd.grad(loss, weight)
    nll = -x.log_softmax(1)[torch.arange(4), y]  # (N,)
    w_y = weight.detach()[y]
    expected = torch.stack([  # d/dw_c of sum_n w_yn l_n / sum_n w_yn
        ((y == c) * (nll * w_y.sum() - (w_y * nll).sum())).sum() / w_y.sum() ** 2
        for c in range(3)
    ])
    torch.testing.assert_close(grad, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("fn", [LF.cross_entropy, LF.nll_loss])
def test_direct_call_under_vmap_and_compile_reads_no_value(fn) -> None:
    """Past the startup, a tracer takes the full path: the mean's NaN test must not read the
    value under vmap, nor break a full-graph compile; both give torch's numbers."""
    x = _logp(4, 3).double()
    torch_fn = getattr(F, fn.__name__)
    with lk.checks("startup"):
        _past_startup(fn, x, Y4)
        per_sample = torch.func.vmap(torch.func.grad(fn))(x, Y4)
        compiled = torch.compile(lambda a, b: fn(a, b), fullgraph=True, backend="eager")
        value = compiled(x, Y4)
    expected = torch.func.vmap(torch.func.grad(torch_fn))(x, Y4)
    torch.testing.assert_close(per_sample, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(value, torch_fn(x, Y4), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("fn", [LF.cross_entropy, LF.nll_loss])
def test_direct_call_matches_torch_on_random_calls(fn) -> None:
    """Randomised differential past the startup: batch sizes from 0, 1 to 3 classes, unbatched
    rows, ignored targets, class weights, label smoothing, every reduction; float64 values and
    gradients equal torch's (a mean over no counted target is losskit's 0)."""
    gen = torch.Generator().manual_seed(10)
    torch_fn = getattr(F, fn.__name__)
    with lk.checks("startup"):
        _past_startup(fn, _logp(4, 3), Y4)
        for _ in range(200):
            classes = int(torch.randint(1 if fn is LF.nll_loss else 2, 6, (), generator=gen))
            batch = int(torch.randint(0, 5, (), generator=gen))
            unbatched = bool(torch.rand((), generator=gen) < 0.2)
            shape = (classes,) if unbatched else (batch, classes)
            x = (torch.randn(shape, generator=gen, dtype=torch.float64) * 3).requires_grad_()
            target = torch.randint(0, classes, shape[:-1], generator=gen)
            ignore = int(torch.randint(-1, classes, (), generator=gen))  # -1: the default's place
            kwargs = {"reduction": ("none", "mean", "sum")[int(torch.randint(0, 3, (),
                                                                              generator=gen))]}
            if ignore >= 0:
                kwargs["ignore_index"] = ignore
            if torch.rand((), generator=gen) < 0.5:
                kwargs["weight"] = torch.rand(classes, generator=gen, dtype=torch.float64) + 0.1
            if fn is LF.cross_entropy and torch.rand((), generator=gen) < 0.5:
                kwargs["label_smoothing"] = float(torch.rand((), generator=gen))
            ours = fn(x, target, **kwargs)
            theirs = torch_fn(x, target, **kwargs)
            if kwargs["reduction"] == "mean" and theirs.isnan():  # nothing counted: losskit's 0
                assert ours.item() == 0.0, (shape, kwargs)
                continue
            (g_ours,) = torch.autograd.grad(ours.sum(), x)
            (g_theirs,) = torch.autograd.grad(theirs.sum(), x)
            torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(g_ours, g_theirs, rtol=1e-12, atol=1e-12)


def test_direct_call_leaves_a_dtensor_to_the_sharded_path(one_process_mesh) -> None:
    """A DTensor disables ``__torch_function__``, so only its type tells it apart: past the
    startup, cross-entropy must still reach losskit's vocab-parallel path and give torch's value
    (batched logits sharded on the classes, an unbatched row on dim 0); NLL, which has no
    sharded path, raises torch's error as torch does."""
    from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_tensor

    with lk.checks("startup"):
        _past_startup(LF.cross_entropy, _x(4, 3), Y4)
        _past_startup(LF.nll_loss, _logp(4, 3), Y4)
        for x, target, dim in ((_x(4, 3).double(), Y4, 1), (_x(5).double(), torch.tensor(3), 0)):
            out = LF.cross_entropy(distribute_tensor(x, one_process_mesh, [Shard(dim)]), target)
            if isinstance(out, DTensor):
                out = out.full_tensor()
            torch.testing.assert_close(out, F.cross_entropy(x, target), rtol=1e-12, atol=1e-12)
        # DTensor targets too: torch's op would take both and shard the batch; losskit refuses
        # logits sharded on the batch dim
        x = _x(4, 3).double()
        replicated = distribute_tensor(Y4, one_process_mesh, [Replicate()])
        out = LF.cross_entropy(distribute_tensor(x, one_process_mesh, [Shard(1)]), replicated)
        assert type(out) is torch.Tensor  # losskit's sharded path returns the full loss
        torch.testing.assert_close(out, F.cross_entropy(x, Y4), rtol=1e-12, atol=1e-12)
        with pytest.raises(CHECKS.LossInputError, match="is a DTensor with placements"):
            LF.cross_entropy(distribute_tensor(x, one_process_mesh, [Shard(0)]),
                             distribute_tensor(Y4, one_process_mesh, [Shard(0)]))
        sharded = distribute_tensor(_logp(4, 3).double(), one_process_mesh, [Shard(1)])
        with pytest.raises(RuntimeError, match=r"mixed torch\.Tensor and DTensor"):
            F.nll_loss(sharded, Y4)
        with pytest.raises(RuntimeError, match=r"mixed torch\.Tensor and DTensor"):
            LF.nll_loss(sharded, Y4)


CHECKPOINT_CALLS = [
    ("cross_entropy", lambda a: LF.cross_entropy(a, Y4), _x(4, 3)),
    ("nll_loss", lambda a: LF.nll_loss(a.log_softmax(1), Y4, torch.tensor([0.5, 2.0, 1.0],
                                                                         dtype=a.dtype)),
     _x(4, 3)),
    ("CrossEntropyLoss", lambda a: lk.CrossEntropyLoss(label_smoothing=0.1)(a, Y4), _x(4, 3)),
    ("ctc_loss", lambda a: LF.ctc_loss(a.log_softmax(2), CTC_TG, IL, TL), _x(6, 2, 5)),
]


@pytest.mark.parametrize("mode", ["startup", "off"])
@pytest.mark.parametrize("case", CHECKPOINT_CALLS, ids=[c[0] for c in CHECKPOINT_CALLS])
def test_direct_call_inside_a_non_reentrant_checkpoint(case, mode) -> None:
    """Review: the recomputation of a non-reentrant checkpoint stops by raising from inside the
    op (a plain Exception); the direct path must let it through, not retry on the full path.
    The gradient is the one computed without the checkpoint."""
    from torch.utils.checkpoint import checkpoint

    _, fn, x = case
    x = x.double().requires_grad_()
    with lk.checks(mode):
        for _ in range(STARTUP_CALLS + 1):
            fn(x.detach())
        (expected,) = torch.autograd.grad(fn(x), x)
        (got,) = torch.autograd.grad(checkpoint(fn, x, use_reentrant=False), x)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


COMPILED_BAD = [
    ("short target", (_x(4, 3), Y4[:3]), "LossInputError", "target batch_size (3)"),
    ("weight of 2", (_x(4, 3), Y4, torch.ones(2)), "LossRuntimeError", "`weight` has shape (2,)"),
    ("float64 weight", (_x(4, 3), Y4, torch.ones(3, dtype=torch.float64)), "LossRuntimeError",
     "`weight` has dtype torch.float64"),
]


@pytest.mark.parametrize("fn", [LF.cross_entropy, LF.nll_loss])
@pytest.mark.parametrize("case", COMPILED_BAD, ids=[c[0] for c in COMPILED_BAD])
def test_compiled_bad_call_past_startup_keeps_losskits_message(fn, case) -> None:
    """Review: torch.compile meets an op's error while tracing (outside the direct path's
    fallback) or inside the compiled graph; past the startup a compiled bad call must still
    get the full path's guardrail."""
    _, bad, error, words = case
    with lk.checks("startup"):
        _past_startup(fn, _logp(4, 3), Y4)
        compiled = torch.compile(fn, backend="eager")
        with pytest.raises(getattr(CHECKS, error)) as info:
            compiled(*bad)
    assert words in str(info.value)


def test_direct_cross_entropy_refuses_what_the_full_path_refuses() -> None:
    """Review: an option the full path cannot use must not be accepted on the direct path."""
    with lk.checks("startup"):
        _past_startup(LF.cross_entropy, _x(4, 3), Y4)
        with pytest.raises(TypeError):
            LF.cross_entropy(_x(4, 3), Y4, lse_square_scale=None)


def test_settled_follows_the_checks_mode_and_its_restore() -> None:
    """``checks.settled`` (the direct paths' test that no value check is due) must follow every
    mode change: "always" runs the value checks on every call, past the startup too; leaving the
    block restores the counts, so a loss past its startup calls runs none again; "off" runs none
    from the first call."""
    nan = torch.tensor([[float("nan"), 0.0, 1.0]])
    with lk.checks("startup"):
        _past_startup(LF.cross_entropy, _x(4, 3), Y4)
        assert "cross_entropy" in CHECKS.settled
        with lk.checks("always"):
            assert "cross_entropy" not in CHECKS.settled
            with pytest.raises(CHECKS.LossInputError, match="NaN"):
                LF.cross_entropy(nan, torch.tensor([0]))
        assert "cross_entropy" in CHECKS.settled
        assert LF.cross_entropy(nan, torch.tensor([0])).isnan()  # torch's NaN: no check due
    with lk.checks("off"):
        assert "a loss never called" in CHECKS.settled
    with lk.checks("startup"):
        assert "cross_entropy" not in CHECKS.settled  # a new mode restarts the counts
        with pytest.raises(CHECKS.LossInputError, match="NaN"):
            LF.cross_entropy(nan, torch.tensor([0]))


def test_mode_switch_while_another_thread_counts_calls() -> None:
    """Review: leaving ``with losskit.checks(...)`` rebuilds ``checks.settled`` from the call
    counts while another thread may be counting a first call; the switch must never raise."""
    import sys
    import threading
    import time

    stop, errors = threading.Event(), []

    def calls() -> None:
        x, y = _x(4, 3), Y4
        while not stop.is_set():
            try:
                LF.cross_entropy(x, y)
                LF.nll_loss(x.log_softmax(1), y)
                LF.mse_loss(x, x)
            except Exception as error:  # reported below
                errors.append(error)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    worker = threading.Thread(target=calls, daemon=True)
    worker.start()
    try:
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            with lk.checks("always"):
                pass
    finally:
        stop.set()
        worker.join()
        sys.setswitchinterval(interval)
    assert not errors


@pytest.mark.parametrize("mode", ["startup", "always", "off"])
@pytest.mark.parametrize("value", [None, "0.1", [0.1], 0.1j])
def test_label_smoothing_not_a_number_is_named(value, mode) -> None:
    """Review: torch's op takes a float; losskit names the argument, in every mode and on the
    first call as on later ones (a TypeError, torch's class)."""
    with pytest.raises(TypeError):
        F.cross_entropy(_x(4, 3), Y4, label_smoothing=value)
    with lk.checks(mode):
        for _ in range(STARTUP_CALLS + 2):
            with pytest.raises(TypeError) as info:
                LF.cross_entropy(_x(4, 3), Y4, label_smoothing=value)
            assert isinstance(info.value, CHECKS.LossTypeError)
            assert f"label_smoothing={value!r}" in str(info.value) and "Fix" in str(info.value)


CHAIN_CASES = [
    ("cross_entropy", lambda t: LF.cross_entropy(_x(4, 3), t)),
    ("nll_loss", lambda t: LF.nll_loss(_logp(4, 3), t)),
    ("CrossEntropyLoss", lambda t: lk.CrossEntropyLoss(label_smoothing=0.1)(_x(4, 3), t)),
    ("NLLLoss", lambda t: lk.NLLLoss()(_logp(4, 3), t)),
    ("cross_entropy unbatched", lambda t: LF.cross_entropy(_x(3), t[1])),
]


@pytest.mark.parametrize("case", CHAIN_CASES, ids=[c[0] for c in CHAIN_CASES])
def test_index_out_of_range_past_startup_is_not_chained(case) -> None:
    """Review: past the startup, torch's op finds the bad index first; losskit's message must
    replace its IndexError, not arrive as "during handling of the above exception"."""
    _, call = case
    with lk.checks("startup"):
        for _ in range(STARTUP_CALLS + 1):
            call(Y4)
        with pytest.raises(IndexError) as info:
            call(torch.tensor([0, 3, 1, 2]))
    assert isinstance(info.value, CHECKS.LossIndexError)
    assert "outside [0, 3): 3" in str(info.value)
    assert info.value.__context__ is None and info.value.__cause__ is None


def test_direct_bce_with_logits_matches_torch_on_random_calls() -> None:
    """Randomised differential past the startup: shapes from empty to 3-D, targets of the
    input's dtype or float64 (the full path), class and positive weights (the full path), every
    reduction; float64 values and gradients equal torch's."""
    gen = torch.Generator().manual_seed(11)
    fn, torch_fn = LF.binary_cross_entropy_with_logits, F.binary_cross_entropy_with_logits
    with lk.checks("startup"):
        _past_startup(fn, _BX, _BY)
        for _ in range(150):
            dims = int(torch.randint(0, 4, (), generator=gen))
            shape = tuple(int(n) for n in torch.randint(0, 4, (dims,), generator=gen))
            x = (torch.randn(shape, generator=gen, dtype=torch.float64) * 4).requires_grad_()
            target = torch.rand(shape, generator=gen, dtype=torch.float64)
            kwargs = {"reduction": ("none", "mean", "sum")[int(torch.randint(0, 3, (),
                                                                              generator=gen))]}
            if 0 < dims <= 2 and torch.rand((), generator=gen) < 0.3:  # a class dim
                kwargs["pos_weight"] = torch.rand(shape[-1:], generator=gen,
                                                  dtype=torch.float64) + 0.5
            if torch.rand((), generator=gen) < 0.3:
                kwargs["weight"] = torch.rand(shape, generator=gen, dtype=torch.float64)
            ours, theirs = fn(x, target, **kwargs), torch_fn(x, target, **kwargs)
            if theirs.isnan().any():  # the mean of an empty input: torch's NaN, kept
                assert ours.isnan().all() and x.numel() == 0
                continue
            (g_ours,) = torch.autograd.grad(ours.sum(), x)
            (g_theirs,) = torch.autograd.grad(theirs.sum(), x)
            torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(g_ours, g_theirs, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("value", [torch.tensor(0.1), torch.tensor(1), torch.tensor(True),
                                   "numpy bool", "numpy float32"])
def test_label_smoothing_torch_takes_is_taken(value) -> None:
    """Review round 3: torch's op takes a 0-d tensor without gradient and NumPy scalars as a
    float; so does losskit, on the first call and past the startup, with torch's value."""
    import numpy as np

    value = {"numpy bool": np.True_, "numpy float32": np.float32(0.1)}.get(value, value)
    expected = F.cross_entropy(_x(4, 3), Y4, label_smoothing=value)
    with lk.checks("startup"):
        for _ in range(STARTUP_CALLS + 2):
            got = LF.cross_entropy(_x(4, 3), Y4, label_smoothing=value)
            torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("value", [torch.tensor([0.1]), torch.tensor(0.1, requires_grad=True)])
def test_label_smoothing_tensor_torch_refuses_is_named(value) -> None:
    with pytest.raises(TypeError):
        F.cross_entropy(_x(4, 3), Y4, label_smoothing=value)
    with pytest.raises(CHECKS.LossTypeError, match="label_smoothing="):
        LF.cross_entropy(_x(4, 3), Y4, label_smoothing=value)


@pytest.mark.parametrize("rows", [16, 512])  # torch's op, then losskit's chunked kernel
@pytest.mark.parametrize("fn", [LF.cross_entropy, LF.nll_loss])
def test_torchs_error_re_raised_keeps_no_reference_to_the_logits(fn, rows) -> None:
    """Review round 3: re-raising torch's own error (checks off, an index out of range) must not
    leave a cycle through the loss's frame that keeps the logits alive until a GC pass."""
    import gc
    import weakref

    target = torch.zeros(rows, dtype=torch.long)
    target[3] = 200
    enabled = gc.isenabled()
    gc.disable()
    try:
        with lk.checks("off"):
            x = torch.randn(rows, 200)
            ref = weakref.ref(x)
            with pytest.raises((IndexError, RuntimeError)):  # the kernel's: a RuntimeError
                fn(x, target)
            del x
        assert ref() is None
    finally:
        if enabled:
            gc.enable()


@pytest.mark.parametrize(("fn", "label_smoothing"), [(LF.cross_entropy, 0.0),
                                                     (LF.cross_entropy, 0.3), (LF.nll_loss, 0.0)])
def test_direct_unbatched_mean_is_torchs_bit_for_bit(fn, label_smoothing) -> None:
    """One unweighted target: the direct call asks torch for its sum, which equals torch's mean
    bit for bit (a division by 1) and is 0 with a zero gradient where the target is ignored
    (torch: 0 / 0)."""
    kwargs = {"label_smoothing": label_smoothing} if label_smoothing else {}
    torch_fn = getattr(F, fn.__name__)
    with lk.checks("startup"):
        _past_startup(fn, _logp(5), torch.tensor(3), **kwargs)
        for dtype in (torch.float32, torch.float64):
            x = (_x(5) * 3).to(dtype).requires_grad_()
            ours, theirs = fn(x, torch.tensor(3), **kwargs), torch_fn(x, torch.tensor(3), **kwargs)
            assert torch.equal(ours, theirs)
            assert torch.equal(torch.autograd.grad(ours, x)[0], torch.autograd.grad(theirs, x)[0])
            ignored = fn(x, torch.tensor(3), ignore_index=3, **kwargs)
            assert torch_fn(x, torch.tensor(3), ignore_index=3, **kwargs).isnan()
            assert ignored.item() == 0.0
            assert torch.equal(torch.autograd.grad(ignored, x)[0], torch.zeros_like(x))
