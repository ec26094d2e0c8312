"""Poisson and Gaussian NLL beyond the case table: guardrails with their healthy twins, torch's
variance-shape rule, legacy arguments, reductions, exception classes, dtypes, empty batches,
second derivatives and the registry's mean count.

The oracle is torch 2.13's own functional (run on the same tensors, in float64 where values are
compared) or a value worked out by hand; exception classes are found by calling torch, not
hard-coded.
"""

from __future__ import annotations

import inspect
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd import gradgradcheck

import losskit as lk
import losskit.functional as LF
from losskit import registry
from losskit.checks.likelihood import accepted_var_shapes

NAN, INF = float("nan"), float("inf")


@pytest.fixture(autouse=True)
def always_checks():
    with lk.checks("always"):
        yield


def _randn(gen, *shape, dtype=torch.float32):
    return torch.randn(shape, generator=gen, dtype=dtype)


def _rand(gen, *shape, dtype=torch.float32):
    return torch.rand(shape, generator=gen, dtype=dtype)


def torch_error(call):
    """The exception class torch raises for the same call, or None when torch accepts it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            call()
    except Exception as error:
        return type(error)
    return None


def assert_raises(call, torch_call, *patterns):
    """A LossInputError (a ValueError) that is also torch's class where torch raises, naming
    every pattern and the fix."""
    expected = torch_error(torch_call)
    with pytest.raises(lk.LossInputError) as info:
        call()
    if expected is not None:
        assert isinstance(info.value, expected), (type(info.value).__mro__, expected)
    message = str(info.value)
    assert "Fix:" in message, message
    for pattern in patterns:
        assert pattern in message, (pattern, message)
    return info.value


def assert_warns(call, *patterns):
    with pytest.warns(lk.LossWarning) as record:
        out = call()
    messages = [str(w.message) for w in record if issubclass(w.category, lk.LossWarning)]
    assert len(messages) == 1, messages
    assert "Fix:" in messages[0], messages[0]
    for pattern in patterns:
        assert pattern in messages[0], (pattern, messages[0])
    return out


def assert_silent(call):
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        out = call()
    assert not record, [str(w.message) for w in record]
    assert torch.isfinite(out).all()
    return out


# ----------------------------------------------------------------------------------------------
# GaussianNLL: negative and zero variances


def test_negative_var_raises_torchs_class_with_the_fix(gen):
    x, y = _randn(gen, 4, 3), _randn(gen, 4, 3)
    var = _rand(gen, 4, 3)
    var[2, 1] = -0.5
    error = assert_raises(lambda: LF.gaussian_nll_loss(x, y, var),
                          lambda: F.gaussian_nll_loss(x, y, var),
                          "var has negative entry/entries", "-0.5", "(2, 1)",
                          "F.softplus(raw) + 1e-6", "log_var.exp()")
    assert isinstance(error, ValueError) and not isinstance(error, RuntimeError)
    assert_raises(lambda: lk.GaussianNLLLoss()(x, y, -1.0),
                  lambda: nn.GaussianNLLLoss()(x, y, -1.0), "var=-1.0", "softplus")


def test_healthy_twin_softplus_variance_is_silent(gen):
    x, y, raw = _randn(gen, 4, 3), _randn(gen, 4, 3), _randn(gen, 4, 3) * 30
    var = F.softplus(raw) + 1e-6  # some entries underflow to 0 before the + 1e-6
    out = assert_silent(lambda: LF.gaussian_nll_loss(x, y, var))
    torch.testing.assert_close(out, F.gaussian_nll_loss(x, y, var))


@pytest.mark.parametrize("mode", ["startup", "off"])
def test_negative_var_raises_in_every_mode_as_torch_does(mode, gen):
    """torch checks the sign on every call; losskit too (its own message unless checks are off,
    where torch's ValueError comes through)."""
    x, y, var = _randn(gen, 3), _randn(gen, 3), -torch.ones(3)
    with lk.checks(mode):
        for _ in range(12):  # past the startup calls
            LF.gaussian_nll_loss(x, y, torch.ones(3))
        with pytest.raises(ValueError, match="var has negative entry/entries") as info:
            LF.gaussian_nll_loss(x, y, var)
    assert ("Fix:" in str(info.value)) == (mode == "startup")


def test_zero_var_warns_and_keeps_torchs_value(gen):
    x, y = _randn(gen, 5), _randn(gen, 5)
    var = torch.relu(_randn(gen, 5))
    var[0] = 0.0
    out = assert_warns(lambda: LF.gaussian_nll_loss(x, y, var), "clamps a zero variance",
                       "eps=1e-06", "softplus")
    torch.testing.assert_close(out, F.gaussian_nll_loss(x, y, var))
    assert_warns(lambda: LF.gaussian_nll_loss(x, y, 0.0), "var=0.0")


def test_healthy_twin_tiny_positive_var_is_silent(gen):
    x, y = _randn(gen, 5), _randn(gen, 5)
    assert_silent(lambda: LF.gaussian_nll_loss(x, y, torch.full((5,), 1e-8)))  # clamped, not 0


# ----------------------------------------------------------------------------------------------
# GaussianNLL: the variance's shape


VAR_SHAPES = [(2, 3, 4), (2, 3), (2, 3, 1), (2, 1, 4), (1, 3, 4), (4,), (3, 4), (1, 1, 4),
              (2, 1, 1), (2, 3, 4, 1), (24,), (), (1,), (2, 3, 5), (1, 1, 1)]


@pytest.mark.parametrize("var_shape", VAR_SHAPES, ids=str)
def test_var_shapes_accepted_exactly_as_torch_accepts_them(var_shape, gen):
    x, y = _randn(gen, 2, 3, 4, dtype=torch.float64), _randn(gen, 2, 3, 4, dtype=torch.float64)
    var = _rand(gen, *var_shape, dtype=torch.float64) + 0.1
    expected = torch_error(lambda: F.gaussian_nll_loss(x, y, var))
    if expected is None:
        for reduction in ("none", "sum"):
            out = assert_silent(lambda r=reduction: LF.gaussian_nll_loss(x, y, var, reduction=r))
            torch.testing.assert_close(out, F.gaussian_nll_loss(x, y, var, reduction=reduction))
        assert var_shape in accepted_var_shapes(x.shape)
    else:
        assert_raises(lambda: LF.gaussian_nll_loss(x, y, var),
                      lambda: F.gaussian_nll_loss(x, y, var), "var is of incorrect size",
                      f"`var` has shape {var_shape}", "(2, 3, 4), (2, 3), (1, 3, 4)")
        assert var_shape not in accepted_var_shapes(x.shape)


@pytest.mark.parametrize(("input_shape", "var_shape", "fix"), [
    ((4, 3), (3,), "`var.expand_as(input)`"),  # a per-feature variance without its batch dim
    ((5,), (5, 1), "`var.squeeze(-1)`"),
    ((4, 3), (12,), "`var.view_as(input)`"),
    ((4, 3), (7,), "second head of the same shape"),
    ((), (1,), "`var.squeeze(-1)`"),
])
def test_misshaped_var_message_names_accepted_shapes_and_a_fix(input_shape, var_shape, fix, gen):
    x, y = _randn(gen, *input_shape), _randn(gen, *input_shape)
    var = _rand(gen, *var_shape) + 0.1
    accepted = ", ".join(str(s) for s in accepted_var_shapes(torch.Size(input_shape)))
    assert_raises(lambda: LF.gaussian_nll_loss(x, y, var),
                  lambda: F.gaussian_nll_loss(x, y, var), accepted, fix)


def test_accepted_var_shapes_by_hand():
    assert accepted_var_shapes(torch.Size([])) == [()]
    assert accepted_var_shapes(torch.Size([3])) == [(3,), (), (1,)]
    assert accepted_var_shapes(torch.Size([4, 1])) == [(4, 1), (4,), (1, 1)]


# ----------------------------------------------------------------------------------------------
# PoissonNLL: rates and counts


def test_negative_rates_with_log_input_false_raise(gen):
    rate, counts = _randn(gen, 6), torch.poisson(torch.full((6,), 2.0), generator=gen)
    assert torch_error(lambda: F.poisson_nll_loss(rate, counts, log_input=False)) is None
    assert_raises(lambda: LF.poisson_nll_loss(rate, counts, log_input=False),
                  lambda: F.poisson_nll_loss(rate, counts, log_input=False),
                  "rates must be >= 0", "log_input=True", "F.softplus(raw)")
    assert_raises(lambda: lk.PoissonNLLLoss(log_input=False)(rate, counts),
                  lambda: nn.PoissonNLLLoss(log_input=False)(rate, counts), "rates must be")


def test_healthy_twins_log_rates_and_zero_rates_are_silent(gen):
    raw, counts = _randn(gen, 6), torch.poisson(torch.full((6,), 2.0), generator=gen)
    out = assert_silent(lambda: LF.poisson_nll_loss(raw, counts))  # negative log-rates are fine
    torch.testing.assert_close(out, F.poisson_nll_loss(raw, counts))
    rate = raw.exp()
    rate[0] = 0.0
    out = assert_silent(lambda: LF.poisson_nll_loss(rate, counts, log_input=False))
    torch.testing.assert_close(out, F.poisson_nll_loss(rate, counts, log_input=False))


def test_negative_counts_warn_and_keep_torchs_value(gen):
    log_rate, counts = _randn(gen, 5), torch.tensor([0.0, 2.0, -1.0, 3.0, 1.0])
    out = assert_warns(lambda: LF.poisson_nll_loss(log_rate, counts), "negative count", "-1.0",
                       "no minimum")
    torch.testing.assert_close(out, F.poisson_nll_loss(log_rate, counts))


def test_healthy_twin_non_integer_counts_are_silent(gen):
    log_rate = _randn(gen, 5)
    counts = torch.tensor([0.0, 0.5, 2.25, 7.0, 1.0])  # averaged counts: legitimate in torch
    for full in (False, True):
        out = assert_silent(lambda f=full: LF.poisson_nll_loss(log_rate, counts, full=f))
        torch.testing.assert_close(out, F.poisson_nll_loss(log_rate, counts, full=full))


# ----------------------------------------------------------------------------------------------
# Both: shapes that would broadcast, NaN/Inf, integer input


def _unit_var(x):
    """var = 1 of the input's dtype (float32 for an integer input)."""
    return torch.ones(x.shape, dtype=x.dtype if x.is_floating_point() else torch.float32)


def _call(name, x, y, **kw):
    if name == "gaussian_nll_loss":
        return LF.gaussian_nll_loss(x, y, _unit_var(x), **kw)
    return LF.poisson_nll_loss(x, y, **kw)


def _torch(name, x, y, **kw):
    if name == "gaussian_nll_loss":
        return F.gaussian_nll_loss(x, y, _unit_var(x), **kw)
    return F.poisson_nll_loss(x, y, **kw)


NAMES = ["poisson_nll_loss", "gaussian_nll_loss"]


@pytest.mark.parametrize("name", NAMES)
def test_target_that_would_broadcast_raises(name, gen):
    x, y = _randn(gen, 4, 1), _rand(gen, 4)
    assert torch_error(lambda: _torch(name, x, y, reduction="none")) is None  # (4, 4) in torch
    error = assert_raises(lambda: _call(name, x, y), lambda: _torch(name, x, y),
                          "(4, 1)", "(4,)", "broadcast to (4, 4)", "input.squeeze(-1)")
    assert not isinstance(error, RuntimeError)
    assert_silent(lambda: _call(name, x.squeeze(-1), y))  # the healthy twin


@pytest.mark.parametrize("name", NAMES)
def test_target_that_cannot_broadcast_raises_torchs_runtime_error(name, gen):
    x, y = _randn(gen, 4), _rand(gen, 5)
    error = assert_raises(lambda: _call(name, x, y), lambda: _torch(name, x, y), "(5,)")
    assert isinstance(error, RuntimeError)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("where", ["input", "target", "var"])
@pytest.mark.parametrize("bad", [NAN, INF])
def test_nan_or_inf_raises(name, where, bad, gen):
    if name == "poisson_nll_loss" and where == "var":
        return  # no var: covered by the other two
    x, y, var = _randn(gen, 3), _rand(gen, 3) * 3, torch.ones(3)
    {"input": x, "target": y, "var": var}[where][1] = bad
    call = (lambda: LF.gaussian_nll_loss(x, y, var)) if name == "gaussian_nll_loss" else (
        lambda: LF.poisson_nll_loss(x, y))
    with pytest.raises(lk.LossInputError, match=f"`{where}` holds NaN or Inf"):
        call()


@pytest.mark.parametrize("name", NAMES)
def test_integer_input_raises(name):
    x, y = torch.ones(3, dtype=torch.long), torch.ones(3)
    assert_raises(lambda: _call(name, x, y), lambda: _torch(name, x, y), "floating-point")


# ----------------------------------------------------------------------------------------------
# Reductions, legacy arguments, exception classes


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("reduction", ["avg", "elementwise_mean", "batchmean", None, 1])
def test_bad_reduction_raises_torchs_class_at_call_time(name, reduction, gen):
    x, y = _randn(gen, 3), _rand(gen, 3)
    expected = torch_error(lambda: _torch(name, x, y, reduction=reduction))
    assert expected in (ValueError, TypeError)
    with pytest.raises(expected) as info:
        _call(name, x, y, reduction=reduction)
    assert isinstance(info.value, lk.LossInputError) and "Fix:" in str(info.value)
    module = registry.get(name).module(reduction=reduction)  # constructs, as torch's does
    args = (x, y, torch.ones(3)) if name == "gaussian_nll_loss" else (x, y)
    with pytest.raises(expected):
        module(*args)


@pytest.mark.parametrize(("size_average", "reduce"), [(False, None), (None, False),
                                                      (True, True), (False, True)])
def test_poisson_legacy_arguments_match_torch(size_average, reduce, gen):
    x, y = _randn(gen, 3, 2, dtype=torch.float64), _rand(gen, 3, 2, dtype=torch.float64) * 4
    with pytest.warns(UserWarning, match="size_average and reduce"):
        ours = LF.poisson_nll_loss(x, y, True, False, size_average, 1e-8, reduce, "sum")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = F.poisson_nll_loss(x, y, True, False, size_average, 1e-8, reduce, "sum")
        module = lk.PoissonNLLLoss(True, False, size_average, 1e-8, reduce, "sum")
        twin = nn.PoissonNLLLoss(True, False, size_average, 1e-8, reduce, "sum")
    assert module.reduction == twin.reduction
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    torch.testing.assert_close(module(x, y), theirs, rtol=0, atol=0)
    with warnings.catch_warnings():  # legacy arguments override even an invalid reduction
        warnings.simplefilter("ignore")
        torch.testing.assert_close(LF.poisson_nll_loss(x, y, reduce=reduce,
                                                       size_average=size_average,
                                                       reduction="avg"), theirs)


def test_module_signatures_and_attributes_match_torch():
    for ours, theirs in ((lk.PoissonNLLLoss, nn.PoissonNLLLoss),
                         (lk.GaussianNLLLoss, nn.GaussianNLLLoss)):
        assert inspect.signature(ours) == inspect.signature(theirs)
        assert list(inspect.signature(ours.forward).parameters) == list(
            inspect.signature(theirs.forward).parameters)
        assert repr(ours()) == repr(theirs())
        assert issubclass(ours, theirs)
    poisson = lk.PoissonNLLLoss(False, True, None, 0.5, None, "sum")
    assert (poisson.log_input, poisson.full, poisson.eps, poisson.reduction) == (
        False, True, 0.5, "sum")
    with pytest.raises(TypeError):
        lk.GaussianNLLLoss(True)  # keyword-only, as in torch
    with pytest.raises(TypeError):
        lk.GaussianNLLLoss(size_average=False)  # no legacy arguments, as in torch
    for ours, theirs in ((LF.poisson_nll_loss, F.poisson_nll_loss),
                         (LF.gaussian_nll_loss, F.gaussian_nll_loss)):
        assert list(inspect.signature(ours).parameters) == list(
            inspect.signature(theirs).parameters)
        assert [p.default for p in inspect.signature(ours).parameters.values()] == [
            p.default for p in inspect.signature(theirs).parameters.values()]


def test_float_var_matches_torch_values_and_gradients(gen):
    x = _randn(gen, 3, 2, dtype=torch.float64).requires_grad_()
    y = _randn(gen, 3, 2, dtype=torch.float64)
    for var, eps in ((2.0, 1e-6), (0.25, 0.5)):  # the second is clamped up to eps
        for reduction in ("none", "mean", "sum"):
            ours = LF.gaussian_nll_loss(x, y, var, eps=eps, reduction=reduction)
            theirs = F.gaussian_nll_loss(x, y, var, eps=eps, reduction=reduction)
            torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=0)
            up = torch.ones_like(ours)
            torch.testing.assert_close(torch.autograd.grad(ours, x, up)[0],
                                       torch.autograd.grad(theirs, x, up)[0])
    # by hand: 0.5 * (log 2 + d^2 / 2), and with full=True + 0.5 log(2 pi)
    d = (x - y).detach()
    torch.testing.assert_close(LF.gaussian_nll_loss(x, y, 2.0, reduction="none"),
                               0.5 * (math.log(2.0) + d**2 / 2))
    torch.testing.assert_close(LF.gaussian_nll_loss(x, y, 2.0, full=True, reduction="none"),
                               0.5 * (math.log(2.0) + d**2 / 2) + 0.5 * math.log(2 * math.pi))


def test_poisson_by_hand():
    x, y = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64), torch.tensor([3.0, 0.0, 1.0],
                                                                              dtype=torch.float64)
    torch.testing.assert_close(LF.poisson_nll_loss(x, y, reduction="none"), x.exp() - y * x)
    stirling = torch.tensor([3 * math.log(3) - 3 + 0.5 * math.log(6 * math.pi), 0.0, 0.0],
                            dtype=torch.float64)  # only where y > 1
    torch.testing.assert_close(LF.poisson_nll_loss(x, y, full=True, reduction="none"),
                               x.exp() - y * x + stirling)
    rate = x.exp()
    torch.testing.assert_close(LF.poisson_nll_loss(rate, y, log_input=False, eps=0.1,
                                                   reduction="none"),
                               rate - y * (rate + 0.1).log())


# ----------------------------------------------------------------------------------------------
# dtypes, empty batches, second derivatives, mean count


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_output_dtype_and_value_follow_torch(name, dtype, gen):
    x, y = _randn(gen, 4, 3).to(dtype), (_rand(gen, 4, 3) * 3).to(dtype)
    ours, theirs = _call(name, x, y), _torch(name, x, y)
    assert ours.dtype == theirs.dtype == dtype
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    reference = _torch(name, x.double(), y.double())
    tol = {torch.float16: 1e-2, torch.bfloat16: 5e-2, torch.float32: 1e-5}[dtype]
    torch.testing.assert_close(ours.double(), reference, rtol=tol, atol=tol)


@pytest.mark.parametrize("name", NAMES)
def test_empty_batch_follows_torch(name):
    x, y = torch.zeros(0, 3), torch.zeros(0, 3)
    assert torch.isnan(_call(name, x, y)) and torch.isnan(_torch(name, x, y))  # 0 / 0, as torch
    assert _call(name, x, y, reduction="sum").item() == 0.0
    assert _call(name, x, y, reduction="none").shape == (0, 3)


def test_second_derivatives_match_finite_differences(gen):
    x = _randn(gen, 3, 2, dtype=torch.float64).requires_grad_()
    y = (_rand(gen, 3, 2, dtype=torch.float64) * 4 + 1.5).requires_grad_()
    assert gradgradcheck(lambda a, b: LF.poisson_nll_loss(a, b, full=True), (x, y))
    rate = (_rand(gen, 3, 2, dtype=torch.float64) + 0.5).requires_grad_()
    assert gradgradcheck(lambda a: LF.poisson_nll_loss(a, y.detach(), log_input=False), (rate,))
    target = _randn(gen, 3, 2, dtype=torch.float64).requires_grad_()
    var = (_rand(gen, 3, dtype=torch.float64) + 0.2).requires_grad_()
    assert gradgradcheck(lambda a, b, v: LF.gaussian_nll_loss(a, b, v, reduction="sum"),
                         (x, target, var))


def test_mean_count_is_the_denominator_of_mean(gen):
    x, y, var = _randn(gen, 4, 3), _randn(gen, 4, 3), _rand(gen, 4) + 0.1
    record = registry.get("GaussianNLLLoss")
    module = lk.GaussianNLLLoss()
    count = record.mean_count(module, x, y, var)
    torch.testing.assert_close(LF.gaussian_nll_loss(x, y, var, reduction="sum") / count,
                               module(x, y, var))
    record = registry.get("poisson_nll_loss")
    count = record.mean_count(lk.PoissonNLLLoss(), x, y.abs())
    torch.testing.assert_close(LF.poisson_nll_loss(x, y.abs(), reduction="sum") / count,
                               LF.poisson_nll_loss(x, y.abs()))
    assert (record.input, record.targets) == ("values", ("counts",))
    assert registry.lookup(nn.GaussianNLLLoss()).targets == ("real",)
