"""The margin losses beyond the case table: hand-written float64 formulas, second derivatives,
legacy arguments, exception classes against torch's on the same bad inputs, dtypes, empty
batches, the registry's mean counts, and each guardrail with a healthy twin that stays silent."""

from __future__ import annotations

import math
import re
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd import gradgradcheck

import losskit as lk
import losskit.functional as LF
from losskit import registry
from losskit.checks import LossInputError, LossRuntimeError
from losskit.checks.margin import LossIndexRuntimeError

REDUCTIONS = ("none", "mean", "sum")


def _randn(gen, *shape):
    return torch.randn(shape, generator=gen, dtype=torch.float64)


def _reduce(per_sample: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "none":
        return per_sample
    return per_sample.sum() if reduction == "sum" else per_sample.mean()


# ----------------------------------------------------------------------------------------------
# Formulas written out plainly (loops, math.log), independent of torch's kernels


def _soft_margin_formula(x, y):
    pairs = zip(x.tolist(), y.tolist(), strict=True)
    return torch.tensor([math.log1p(math.exp(-b * a)) for a, b in pairs], dtype=torch.float64)


def _multilabel_soft_formula(x, y, w):
    rows = []
    for xr, yr in zip(x.tolist(), y.tolist(), strict=True):
        terms = [
            -wc * (yc * math.log(1 / (1 + math.exp(-xc))) + (1 - yc) * math.log(
                1 / (1 + math.exp(xc))))
            for xc, yc, wc in zip(xr, yr, w.tolist(), strict=True)
        ]
        rows.append(sum(terms) / len(xr))
    return torch.tensor(rows, dtype=torch.float64)


def _multilabel_margin_formula(x, y):
    rows = []
    for xr, yr in zip(x.tolist(), y.tolist(), strict=True):
        labels = []
        for j in yr:
            if j == -1:
                break
            labels.append(j)
        others = [i for i in range(len(xr)) if i not in labels]
        total = sum(max(0.0, 1 - (xr[j] - xr[i])) for j in labels for i in others)
        rows.append(total / len(xr))
    return torch.tensor(rows, dtype=torch.float64)


def _multi_margin_formula(x, y, p, margin, w):
    rows = []
    for xr, t in zip(x.tolist(), y.tolist(), strict=True):
        total = sum(w[t].item() * max(0.0, margin - xr[t] + xr[i]) ** p
                    for i in range(len(xr)) if i != t)
        rows.append(total / len(xr))
    return torch.tensor(rows, dtype=torch.float64)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_values_match_the_formulas(gen, reduction):
    x = _randn(gen, 5, 4)
    signs = torch.tensor([[1.0, -1.0, -1.0, 1.0]] * 5, dtype=torch.float64)
    torch.testing.assert_close(
        LF.soft_margin_loss(x, signs, reduction=reduction),
        _reduce(_soft_margin_formula(x.flatten(), signs.flatten()), reduction).reshape(
            x.shape if reduction == "none" else ()))

    y01 = (torch.rand(5, 4, generator=gen) > 0.5).double()
    w = torch.rand(4, generator=gen, dtype=torch.float64) + 0.5
    torch.testing.assert_close(LF.multilabel_soft_margin_loss(x, y01, w, reduction=reduction),
                               _reduce(_multilabel_soft_formula(x, y01, w), reduction))

    lists = torch.tensor([[3, 0, -1, 1], [-1, 2, 2, 2], [0, 1, 2, 3], [2, -1, -1, -1],
                          [1, 3, -1, 0]])
    torch.testing.assert_close(LF.multilabel_margin_loss(x, lists, reduction=reduction),
                               _reduce(_multilabel_margin_formula(x, lists), reduction))

    classes = torch.tensor([0, 3, 1, 1, 2])
    for p, margin in ((1, 1.0), (2, 0.7)):
        torch.testing.assert_close(
            LF.multi_margin_loss(x, classes, p=p, margin=margin, weight=w, reduction=reduction),
            _reduce(_multi_margin_formula(x, classes, p, margin, w), reduction))


# ----------------------------------------------------------------------------------------------
# Second derivatives: soft margin and multi-label soft margin have them; torch has none for the
# two hinge losses, and losskit fails the same way


def test_gradgradcheck_soft_margin(gen):
    x, y = _randn(gen, 3, 4).requires_grad_(), torch.sign(_randn(gen, 3, 4))
    assert gradgradcheck(lambda a: LF.soft_margin_loss(a, y, reduction="sum"), (x,))


def test_gradgradcheck_multilabel_soft_margin(gen):
    x = _randn(gen, 3, 4).requires_grad_()
    y = torch.rand(3, 4, generator=gen, dtype=torch.float64).requires_grad_()
    w = torch.rand(4, generator=gen, dtype=torch.float64) + 0.5
    assert gradgradcheck(lambda a, b: LF.multilabel_soft_margin_loss(a, b, w), (x, y))


@pytest.mark.parametrize(("ours", "theirs", "target"), [
    (LF.multilabel_margin_loss, F.multilabel_margin_loss, torch.tensor([[1, -1, 0], [0, 2, -1]])),
    (LF.multi_margin_loss, F.multi_margin_loss, torch.tensor([1, 2])),
])
def test_hinge_losses_have_no_second_derivative_as_in_torch(gen, ours, theirs, target):
    x = _randn(gen, 2, 3)
    for fn in (theirs, ours):
        leaf = x.clone().requires_grad_()
        (grad,) = torch.autograd.grad(fn(leaf, target), leaf, create_graph=True)
        with pytest.raises(RuntimeError, match=r"derivative for .* is not implemented"):
            torch.autograd.grad(grad.sum(), leaf)


# ----------------------------------------------------------------------------------------------
# Legacy arguments, reductions, Modules

MODULES = ["SoftMarginLoss", "MultiLabelSoftMarginLoss", "MultiLabelMarginLoss", "MultiMarginLoss"]


def _example(name, gen):
    x = _randn(gen, 4, 3)
    if name in ("SoftMarginLoss", "soft_margin_loss"):
        return x, torch.sign(_randn(gen, 4, 3))
    if name in ("MultiLabelSoftMarginLoss", "multilabel_soft_margin_loss"):
        return x, (torch.rand(4, 3, generator=gen) > 0.5).double()
    if name in ("MultiLabelMarginLoss", "multilabel_margin_loss"):
        return x, torch.tensor([[0, -1, 1], [2, 1, -1], [-1, 0, 0], [1, 0, 2]])
    return x, torch.tensor([0, 2, 1, 1])


FUNCTIONS = ["soft_margin_loss", "multilabel_soft_margin_loss", "multilabel_margin_loss",
             "multi_margin_loss"]


@pytest.mark.parametrize("name", FUNCTIONS)
@pytest.mark.parametrize(("legacy", "reduction"), [
    ({"size_average": False}, "sum"), ({"reduce": False}, "none"),
    ({"size_average": True, "reduce": True}, "mean"), ({"reduce": False, "size_average": False},
                                                       "none"),
])
def test_legacy_arguments_override_reduction_and_warn_like_torch(gen, name, legacy, reduction):
    x, y = _example(name, gen)
    with pytest.warns(UserWarning, match="size_average and reduce args will be deprecated"):
        got = getattr(LF, name)(x, y, **legacy, reduction="mean" if reduction != "mean" else "sum")
    torch.testing.assert_close(got, getattr(F, name)(x, y, reduction=reduction), rtol=0, atol=0)


@pytest.mark.parametrize("name", FUNCTIONS)
def test_invalid_reduction_raises_value_error_at_call_time(gen, name):
    x, y = _example(name, gen)
    module = getattr(lk, MODULES[FUNCTIONS.index(name)])(reduction="avg")  # constructs, as torch
    for call in (lambda: getattr(LF, name)(x, y, reduction="avg"), lambda: module(x, y)):
        with pytest.raises(ValueError, match="avg is not a valid value for reduction"):
            call()


def test_module_argument_order_and_buffers_are_torchs():
    w = torch.rand(3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy-argument deprecation warning
        mm = lk.MultiMarginLoss(2, 0.5, w, None, None, "sum")
        mlsm = lk.MultiLabelSoftMarginLoss(w, None, None, "none")
        sm, mlm = lk.SoftMarginLoss(None, None, "sum"), lk.MultiLabelMarginLoss(None, False)
    assert (mm.p, mm.margin, mm.reduction) == (2, 0.5, "sum") and torch.equal(mm.weight, w)
    assert mlsm.reduction == "none" and torch.equal(mlsm.weight, w)
    assert (sm.reduction, mlm.reduction) == ("sum", "none")
    assert list(mm.state_dict()) == list(nn.MultiMarginLoss(weight=w).state_dict()) == ["weight"]
    assert mm.double().weight.dtype == torch.float64
    assert list(lk.MultiMarginLoss().state_dict()) == []


@pytest.mark.parametrize("name", MODULES)
def test_modules_match_functions_and_torch_modules(gen, name):
    x, y = _example(name, gen)
    ours, theirs = getattr(lk, name)(reduction="sum"), getattr(nn, name)(reduction="sum")
    assert isinstance(ours, getattr(nn, name))
    torch.testing.assert_close(ours(x, y), theirs(x, y), rtol=0, atol=0)


# ----------------------------------------------------------------------------------------------
# Exception classes: where torch raises, losskit raises an error of torch's class

x34 = torch.randn(3, 4)
BAD = [  # (id, losskit call, the same call in torch)
    ("sm-int-input", lambda m: m.soft_margin_loss(torch.ones(3, dtype=torch.long), torch.ones(3))),
    ("sm-shapes", lambda m: m.soft_margin_loss(x34, torch.ones(5))),
    ("mlsm-long-input", lambda m: m.multilabel_soft_margin_loss(x34.long(), torch.ones(3, 4))),
    ("mlsm-0d-input", lambda m: m.multilabel_soft_margin_loss(torch.tensor(1.0),
                                                              torch.tensor(1.0))),
    ("mlsm-shapes", lambda m: m.multilabel_soft_margin_loss(x34, torch.ones(5))),
    ("mlsm-weight", lambda m: m.multilabel_soft_margin_loss(x34, torch.ones(3, 4),
                                                            weight=torch.ones(3))),
    ("mlm-long-input", lambda m: m.multilabel_margin_loss(
        x34.long(), torch.zeros(3, 4, dtype=torch.long))),
    ("mlm-int32", lambda m: m.multilabel_margin_loss(x34, torch.zeros(3, 4, dtype=torch.int32))),
    ("mlm-float", lambda m: m.multilabel_margin_loss(x34, torch.zeros(3, 4))),
    ("mlm-uint8", lambda m: m.multilabel_margin_loss(x34, torch.zeros(3, 4, dtype=torch.uint8))),
    ("mlm-shape", lambda m: m.multilabel_margin_loss(x34, torch.zeros(3, 3, dtype=torch.long))),
    ("mlm-(N,)", lambda m: m.multilabel_margin_loss(x34, torch.zeros(3, dtype=torch.long))),
    ("mlm-3d", lambda m: m.multilabel_margin_loss(torch.randn(2, 3, 4),
                                                  torch.zeros(2, 3, 4, dtype=torch.long))),
    ("mlm-range", lambda m: m.multilabel_margin_loss(x34, torch.tensor([[4, -1, 0, 0]] * 3))),
    ("mlm-range-neg", lambda m: m.multilabel_margin_loss(x34, torch.tensor([[-2, -1, 0, 0]] * 3))),
    ("mlm-range-after-pad", lambda m: m.multilabel_margin_loss(
        x34, torch.tensor([[0, -1, 9, 0]] * 3))),
    ("mm-int-input", lambda m: m.multi_margin_loss(x34.long(), torch.tensor([0, 1, 2]))),
    ("mm-p3", lambda m: m.multi_margin_loss(x34, torch.tensor([0, 1, 2]), p=3)),
    ("mm-range", lambda m: m.multi_margin_loss(x34, torch.tensor([0, 4, 1]))),
    ("mm-range-neg", lambda m: m.multi_margin_loss(x34, torch.tensor([0, -1, 1]))),
    ("mm-(N,1)", lambda m: m.multi_margin_loss(x34, torch.tensor([[0], [1], [2]]))),
    ("mm-one-hot", lambda m: m.multi_margin_loss(x34, torch.eye(3, 4, dtype=torch.long))),
    ("mm-batch", lambda m: m.multi_margin_loss(x34, torch.tensor([0, 1]))),
    ("mm-float-target", lambda m: m.multi_margin_loss(x34, torch.tensor([0.0, 1.0, 2.0]))),
    ("mm-int32-target", lambda m: m.multi_margin_loss(x34, torch.tensor([0, 1, 2]).int())),
    ("mm-3d", lambda m: m.multi_margin_loss(torch.randn(2, 3, 4),
                                            torch.zeros(2, 3, dtype=torch.long))),
    ("mm-weight-len", lambda m: m.multi_margin_loss(x34, torch.tensor([0, 1, 2]),
                                                    weight=torch.ones(3))),
    ("mm-weight-2d", lambda m: m.multi_margin_loss(x34, torch.tensor([0, 1, 2]),
                                                   weight=torch.ones(1, 4))),
    ("mm-weight-dtype", lambda m: m.multi_margin_loss(x34, torch.tensor([0, 1, 2]),
                                                      weight=torch.ones(4, dtype=torch.float64))),
]


@pytest.mark.parametrize(("call",), [pytest.param(c, id=i) for i, c in BAD])
def test_bad_input_raises_torchs_exception_class(call):
    with pytest.raises(Exception) as theirs:
        call(F)
    torch_class = type(theirs.value)
    with lk.checks("always"), pytest.raises(LossInputError) as ours:
        call(LF)
    assert isinstance(ours.value, torch_class), (type(ours.value), torch_class)
    assert "Fix:" in str(ours.value)


def test_out_of_range_is_both_index_error_and_torchs_runtime_error():
    for call in (lambda: LF.multi_margin_loss(x34, torch.tensor([0, 4, 1])),
                 lambda: LF.multilabel_margin_loss(x34, torch.tensor([[4, -1, 0, 0]] * 3))):
        with pytest.raises(LossIndexRuntimeError) as error:
            call()
        assert isinstance(error.value, IndexError) and isinstance(error.value, RuntimeError)
        message = str(error.value)
        assert "outside [0, 4)" in message
        assert "4 at index (0, 0)" in message or "4 at index (1,)" in message


def test_index_range_is_checked_on_cpu_after_the_startup_calls():
    with lk.checks("startup"):
        for _ in range(10):
            LF.multi_margin_loss(x34, torch.tensor([0, 1, 2]))
        with pytest.raises(IndexError, match="outside"):
            LF.multi_margin_loss(x34, torch.tensor([0, 4, 1]))


@pytest.mark.parametrize("p", [3, 0, 1.5])
def test_multi_margin_p_is_checked_at_construction_too(p):
    with pytest.raises(LossInputError, match=f"p={p!r}, but only p == 1"):
        lk.MultiMarginLoss(p=p)
    with pytest.raises(ValueError, match="only p == 1 and p == 2 supported"):
        nn.MultiMarginLoss(p=p)
    with pytest.raises(LossInputError, match="weight must be one-dimensional"):
        lk.MultiMarginLoss(weight=torch.ones(1, 3))


def test_multi_margin_p_like_torch_accepts_equal_floats(gen):
    x, y = _example("multi_margin_loss", gen)
    torch.testing.assert_close(LF.multi_margin_loss(x, y, p=2.0), F.multi_margin_loss(x, y, p=2))


# ----------------------------------------------------------------------------------------------
# dtypes, autocast, empty batches, mean counts


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("name", ["soft_margin_loss", "multilabel_soft_margin_loss"])
def test_output_dtype_follows_torch(gen, name, dtype):
    x, y = _example(name, gen)
    ours = getattr(LF, name)(x.to(dtype), y.to(dtype))
    theirs = getattr(F, name)(x.to(dtype), y.to(dtype))
    assert ours.dtype == theirs.dtype == dtype
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", ["multilabel_margin_loss", "multi_margin_loss"])
def test_half_precision_hinge_on_cpu_fails_as_in_torch(gen, name, dtype):
    """Torch has no CPU half kernels for these; losskit adds no checks that hide that."""
    x, y = _example(name, gen)
    for fn in (getattr(F, name), getattr(LF, name)):
        with pytest.raises(NotImplementedError, match="not implemented for"):
            fn(x.to(dtype), y)


def test_autocast_accepts_any_float_class_weight_like_torch(gen):
    x, y = _example("multi_margin_loss", gen)
    w = torch.rand(3, generator=gen).half()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = LF.multi_margin_loss(x.float(), y, weight=w)
        theirs = F.multi_margin_loss(x.float(), y, weight=w)
    assert ours.dtype == theirs.dtype == torch.float32
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["soft_margin_loss", "multilabel_soft_margin_loss"])
def test_empty_batch_of_the_logistic_losses_is_torchs(name):
    """0 for "sum", NaN (0 / 0) for "mean", as torch and losskit's other pointwise losses."""
    x, y = torch.zeros(0, 4, dtype=torch.float64), torch.zeros(0, 4, dtype=torch.float64)
    for reduction in REDUCTIONS:
        torch.testing.assert_close(getattr(LF, name)(x, y, reduction=reduction),
                                   getattr(F, name)(x, y, reduction=reduction), equal_nan=True)
    assert math.isnan(getattr(LF, name)(x, y).item())


@pytest.mark.parametrize(("name", "target"), [
    ("multilabel_margin_loss", torch.zeros(0, 4, dtype=torch.long)),
    ("multi_margin_loss", torch.zeros(0, dtype=torch.long)),
])
def test_empty_batch_of_the_hinge_losses_is_zero_not_uninitialised_memory(name, target):
    x = torch.zeros(0, 4, dtype=torch.float64, requires_grad=True)
    fn = getattr(LF, name)
    assert fn(x, target, reduction="none").shape == (0,)
    total = fn(x, target, reduction="sum")
    assert total.item() == 0.0
    with pytest.warns(lk.LossWarning, match=r"empty batch \(\(0, 4\)\), so the mean is over "
                      r"nothing; losskit returns 0"):
        mean = fn(x, target, reduction="mean")
    assert mean.item() == 0.0
    (grad,) = torch.autograd.grad(mean, x)
    assert grad.shape == (0, 4)


@pytest.mark.parametrize("name", MODULES)
@pytest.mark.parametrize("unbatched", [False, True])
def test_mean_count_is_the_denominator_of_mean(gen, name, unbatched):
    x, y = _example(name, gen)
    if unbatched:
        x, y = x[1], y[1]
    module = getattr(lk, name)()
    record = registry.lookup(module)
    count = record.mean_count(module, x, y)
    mean = getattr(LF, record.name)(x, y, reduction="mean")
    total = getattr(LF, record.name)(x, y, reduction="sum")
    torch.testing.assert_close(mean * count, total)
    per = getattr(LF, record.name)(x, y, reduction="none")
    assert count.item() == per.numel()


def test_records_name_the_kinds():
    kinds = {r.name: (r.input, r.targets) for r in registry.records() if r.family == "margin"}
    assert kinds == {
        "soft_margin_loss": ("scores", ("sign",)),
        "multilabel_soft_margin_loss": ("logits", ("binary",)),
        "multilabel_margin_loss": ("scores", ("label-lists",)),
        "multi_margin_loss": ("scores", ("class-indices",)),
    }


# ----------------------------------------------------------------------------------------------
# Guardrails, each with a healthy twin (warnings are errors in this suite)


def _raises(cls, pattern, call):
    with lk.checks("always"), pytest.raises(cls, match=pattern) as error:
        call()
    return str(error.value)


def test_soft_margin_zero_one_targets_raise(gen):
    x = _randn(gen, 8)
    y01 = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0], dtype=torch.float64)
    message = _raises(LossInputError, r"only 0s and 1s.*Fix: `target = 2 \* target - 1`",
                      lambda: LF.soft_margin_loss(x, y01))
    assert "log(2) with zero gradient" in message
    with lk.checks("always"):  # the fix, applied as written, is silent and gives the ±1 loss
        fixed = LF.soft_margin_loss(x, 2 * y01 - 1)
    torch.testing.assert_close(fixed, _soft_margin_formula(x, 2 * y01 - 1).mean())


@pytest.mark.parametrize("target", [
    torch.tensor([1.0, -1.0, -1.0, 1.0]),  # proper labels
    torch.tensor([1.0, 1.0, 1.0, 1.0]),  # an all-positive batch: {0, 1} and {-1, 1} agree
    torch.tensor([-1, 1, 1, -1]),  # integer -1 / 1 labels (torch promotes them)
])
def test_soft_margin_healthy_targets_stay_silent(target):
    with lk.checks("always"):
        LF.soft_margin_loss(torch.randn(4), target)


@pytest.mark.parametrize("target", [
    torch.tensor([1.0, -1.0, 0.0, 1.0]),  # a 0 among -1 / 1 labels
    torch.tensor([1.0, 2.0, 2.0, 1.0]),  # 1 / 2 class labels
])
def test_soft_margin_other_labels_raise(target):
    _raises(LossInputError, r"outside \{-1, 1\}.*Fix: map the labels to -1/1",
            lambda: LF.soft_margin_loss(torch.randn(4), target))


def test_soft_margin_shape_that_would_broadcast_raises():
    _raises(LossInputError, r"broadcast them to \(3, 3\).*Fix: `input.squeeze\(-1\)`",
            lambda: LF.soft_margin_loss(torch.randn(3, 1), torch.ones(3)))
    with lk.checks("always"):
        LF.soft_margin_loss(torch.randn(3, 1), torch.ones(3, 1))


def test_multilabel_margin_multi_hot_raises_with_a_conversion_that_works(gen):
    x = _randn(gen, 3, 5)
    multi_hot = torch.tensor([[0, 1, 1, 0, 0], [1, 0, 0, 0, 1], [0, 0, 0, 0, 0]])
    message = _raises(LossInputError, "looks like multi-hot labels",
                      lambda: LF.multilabel_margin_loss(x, multi_hot))
    code = re.search(r"`(target = torch\.where.*?)`", message).group(1)
    namespace = {"torch": torch, "target": multi_hot}
    exec(code, namespace)
    lists = namespace["target"]
    assert lists.tolist() == [[2, 1, -1, -1, -1], [4, 0, -1, -1, -1], [-1, -1, -1, -1, -1]]
    with lk.checks("always"):
        got = LF.multilabel_margin_loss(x, lists)
    torch.testing.assert_close(got, _multilabel_margin_formula(x, lists).mean())


@pytest.mark.parametrize("target", [
    torch.tensor([[1, 0, -1, -1], [0, -1, 1, 1]]),  # label lists of classes 0 and 1, padded
    torch.tensor([[1, 0], [0, 1]]),  # C = 2: both classes listed, no padding needed
    torch.tensor([[3, 2, 1, 0], [2, -1, 0, 0]]),  # every class listed; junk after the -1
])
def test_multilabel_margin_healthy_label_lists_stay_silent(target):
    with lk.checks("always"):
        LF.multilabel_margin_loss(torch.randn(target.shape, dtype=torch.float64), target)


def test_multilabel_margin_float_multi_hot_names_the_conversion():
    message = _raises(LossRuntimeError, "dtype int64", lambda: LF.multilabel_margin_loss(
        torch.randn(2, 4), torch.tensor([[0.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]])))
    assert "torch.arange(4, device=target.device)" in message


def test_multilabel_margin_class_index_target_names_the_padding(gen):
    x, labels = _randn(gen, 3, 4), torch.tensor([2, 0, 3])
    message = _raises(LossRuntimeError, "inconsistent target size",
                      lambda: LF.multilabel_margin_loss(x, labels))
    code = re.search(r"`(target = F\.pad.*?)`", message).group(1)
    namespace = {"F": F, "target": labels}
    exec(code, namespace)
    padded = namespace["target"]
    assert padded.tolist() == [[2, -1, -1, -1], [0, -1, -1, -1], [3, -1, -1, -1]]
    with lk.checks("always"):  # one label per row: the same as the multi-class hinge over C
        torch.testing.assert_close(LF.multilabel_margin_loss(x, padded),
                                   LF.multi_margin_loss(x, labels))


def test_multi_margin_target_guardrails_and_twins():
    _raises(LossRuntimeError, r"needs shape \(3,\).*`target = target.squeeze\(1\)`",
            lambda: LF.multi_margin_loss(x34, torch.tensor([[0], [1], [3]])))
    _raises(LossIndexRuntimeError, r"outside \[0, 4\): 4 at index \(1,\)",
            lambda: LF.multi_margin_loss(x34, torch.tensor([0, 4, 1])))
    with lk.checks("always"):
        LF.multi_margin_loss(x34, torch.tensor([0, 3, 1]))  # C - 1 is a class
        LF.multi_margin_loss(x34[0], torch.tensor(3))  # unbatched: a 0-d target


def test_multi_margin_weight_guardrails_and_twins():
    y = torch.tensor([0, 3, 1])
    _raises(LossRuntimeError, r"shape \(3,\), but `input` has 4 classes.*length 4",
            lambda: LF.multi_margin_loss(x34, y, weight=torch.ones(3)))
    _raises(LossRuntimeError, "dtype torch.float64 but `input` has torch.float32",
            lambda: LF.multi_margin_loss(x34, y, weight=torch.ones(4, dtype=torch.float64)))
    with lk.checks("always"):
        LF.multi_margin_loss(x34, y, weight=torch.ones(4))
        lk.MultiMarginLoss(weight=torch.ones(4))(x34, y)


def test_multilabel_soft_margin_sigmoid_output_warns(gen):
    probs = torch.sigmoid(_randn(gen, 4, 5))
    y = (torch.rand(4, 5, generator=gen) > 0.5).double()
    with lk.checks("always"), pytest.warns(lk.LossWarning, match=(
            "multilabel_soft_margin_loss applies the sigmoid itself")):
        LF.multilabel_soft_margin_loss(probs, y)


@pytest.mark.parametrize("make", [
    lambda g: 3 * _randn(g, 4, 5),  # raw logits
    lambda g: torch.zeros(4, 5, dtype=torch.float64),  # a zero-initialised head
    lambda g: torch.sigmoid(_randn(g, 2, 3)),  # too few values to judge
])
def test_multilabel_soft_margin_healthy_logits_stay_silent(gen, make):
    x = make(gen)
    with lk.checks("always"):
        LF.multilabel_soft_margin_loss(x, torch.ones_like(x))


def test_multilabel_soft_margin_targets_outside_unit_interval_raise(gen):
    x = _randn(gen, 2, 3)
    _raises(LossInputError, r"between 0 and 1.*`\(target \+ 1\) / 2`",
            lambda: LF.multilabel_soft_margin_loss(x, torch.tensor([[1.0, -1.0, 1.0]] * 2)))
    with lk.checks("always"):  # probabilities are fine
        LF.multilabel_soft_margin_loss(x, torch.tensor([[0.9, 0.1, 0.5]] * 2))


def test_multilabel_soft_margin_class_indices_name_one_hot():
    _raises(LossRuntimeError, r"`target = F.one_hot\(target, 4\).float\(\)`",
            lambda: LF.multilabel_soft_margin_loss(x34, torch.tensor([0, 3, 1])))
    _raises(LossInputError, r"broadcast them to \(3, 4\)",
            lambda: LF.multilabel_soft_margin_loss(x34, torch.ones(3, 1)))


@pytest.mark.parametrize("name", FUNCTIONS)
def test_nan_and_inf_raise_in_value_checks_only(gen, name):
    x, y = _example(name, gen)
    for bad in (math.nan, math.inf):
        x_bad = x.clone()
        x_bad[1, 2] = bad
        _raises(LossRuntimeError, "`input` holds NaN or Inf",
                lambda x_bad=x_bad: getattr(LF, name)(x_bad, y))
        with lk.checks("off"):  # value checks off: torch's result (NaN, or inf, or finite)
            torch.testing.assert_close(getattr(LF, name)(x_bad, y), getattr(F, name)(x_bad, y),
                                       equal_nan=True)
