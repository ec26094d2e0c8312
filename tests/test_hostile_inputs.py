"""Regression tests for the defects the differential fuzzer (tests/test_fuzz.py) found.

One plain test per defect, each against an independent value: torch.nn.functional in float64 or
a hand-derived number. Each failed on the code before the fix.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import losskit
import losskit.functional as LF
from losskit import kernels
from losskit.checks import LossIndexError, LossRuntimeError

INF = float("inf")
PATHS = ["reference", "fused"]


def _run(path, fn):
    """Run ``fn`` on the reference path, or on the fused kernel whatever the size."""
    if path == "reference":
        with kernels.fused(False):
            return fn()
    saved, kernels.MIN_FUSED_ELEMENTS = kernels.MIN_FUSED_ELEMENTS, 0
    try:
        return fn()
    finally:
        kernels.MIN_FUSED_ELEMENTS = saved


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_neg_inf_logit_on_an_ignored_row_gives_a_finite_loss_and_zero_gradient(path, smoothing):
    # The minimal case, plus an ignored row that is entirely -inf.
    x = torch.tensor([[-INF, 0.0], [1.0, 2.0], [-INF, -INF]])
    y = torch.tensor([-100, 1, -100])
    leaf = x.clone().requires_grad_()
    loss = _run(path, lambda: LF.cross_entropy(leaf * 1, y, label_smoothing=smoothing,
                                               inplace=True, return_lse=True))
    loss[0].backward()
    ref = x[1:2].double().requires_grad_()
    expected = F.cross_entropy(ref, y[1:2], label_smoothing=smoothing)
    expected.backward()
    torch.testing.assert_close(loss[0].double(), expected)
    torch.testing.assert_close(leaf.grad[1].double(), ref.grad[0])
    assert (leaf.grad[[0, 2]] == 0).all()
    assert loss[1][0] == 0 and loss[1][2] == 0  # lse is 0 at ignored rows


@pytest.mark.parametrize("path", PATHS)
def test_linear_cross_entropy_with_neg_inf_bias_on_ignored_rows_is_finite(path):
    h = torch.eye(3, requires_grad=True)
    w = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], requires_grad=True)
    b = torch.tensor([-INF, 0.0])  # class 0 masked for everyone
    y = torch.tensor([-100, 1, -100])
    with losskit.checks("off"):  # the value checks refuse a -inf bias; past them, no NaN
        loss, lse = _run(path, lambda: LF.linear_cross_entropy(
            h, w, y, linear_bias=b, chunk_size=2, return_lse=True, lse_square_scale=1e-4))
    loss.backward()
    # softmax puts all mass on class 1 (logit 1, lse 1): only the z-loss 1e-4 * 1^2 remains
    assert loss.item() == pytest.approx(1e-4, abs=1e-7)
    assert lse.tolist() == [0.0, 1.0, 0.0]
    assert torch.isfinite(h.grad).all() and torch.isfinite(w.grad).all()


def test_focal_loss_gradient_is_zero_not_nan_on_an_ignored_neg_inf_row():
    x = torch.tensor([[-INF, 0.0], [1.0, 2.0]], requires_grad=True)
    loss = LF.focal_loss(x, torch.tensor([-100, 1]), gamma=2.0)
    loss.backward()
    p = 1 / (1 + math.exp(-1.0))  # softmax([1, 2])[1]
    assert loss.item() == pytest.approx((1 - p) ** 2 * -math.log(p), rel=1e-6)
    assert (x.grad[0] == 0).all() and torch.isfinite(x.grad).all()


def test_dice_loss_is_finite_when_an_ignored_position_is_fully_masked():
    x = torch.tensor([[[-INF, 2.0]], [[-INF, 0.0]]]).transpose(0, 1).clone()  # (1, 2, 2)
    x.requires_grad_()
    loss = LF.dice_loss(x, torch.tensor([[-100, 0]]), ignore_index=-100, smooth=1.0)
    loss.backward()
    p0 = 1 / (1 + math.exp(-2.0))  # position 1: softmax([2, 0])[0]
    dice0 = (2 * p0 + 1) / (p0 + 1 + 1)
    dice1 = (0 + 1) / ((1 - p0) + 0 + 1)
    assert loss.item() == pytest.approx(1 - (dice0 + dice1) / 2, rel=1e-6)
    assert (x.grad[..., 0] == 0).all() and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_loss_error_does_not_grow_with_the_logits_magnitude(path, smoothing):
    # Equal top logits: the loss is log 2 (plus smoothing terms) at any offset.
    for offset in (0.0, 1e4, 1e8):
        x = torch.tensor([[offset, offset, 0.0, 0.0]])
        ref = F.cross_entropy(x.double(), torch.tensor([0]), label_smoothing=smoothing)
        loss, lse = _run(path, lambda x=x: LF.cross_entropy(
            x.clone().requires_grad_(), torch.tensor([0]), label_smoothing=smoothing,
            return_lse=True))
        # float32 rounding of the loss itself, not of the logits (2^-24 * 1e8 = 6)
        assert loss.item() == pytest.approx(ref.item(), rel=1e-6, abs=2e-6), offset
        assert lse.item() == pytest.approx(offset + math.log(2 + 2 * math.exp(-offset)),
                                           rel=1e-7)


def test_zero_loss_at_1e8_logits_with_return_lse_is_log_2():
    loss, lse = LF.cross_entropy(torch.tensor([[1e8, 1e8, 0, 0]]), torch.tensor([0]),
                                 return_lse=True)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6)
    assert lse.item() == 1e8


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_zero_classes_with_every_target_ignored_gives_zero_like_torch(path, reduction):
    x = torch.zeros(3, 0, requires_grad=True)
    y = torch.full((3,), -100)
    with losskit.checks("off"):  # "mean" over nothing warns (LossWarning) with checks on
        out = _run(path, lambda: LF.cross_entropy(x, y, reduction=reduction))
    ref = F.cross_entropy(x.detach(), y, reduction=reduction)
    if reduction == "mean":
        assert out.item() == 0 and ref.isnan()  # losskit's documented rule for a mean of nothing
    else:
        torch.testing.assert_close(out, ref)


@pytest.mark.parametrize("loss", ["cross_entropy", "linear_cross_entropy"])
def test_zero_classes_with_a_counted_target_raises_an_index_error_naming_the_fix(loss):
    with losskit.checks("off"), pytest.raises(LossIndexError, match=r"no classes.*Fix"):
        if loss == "cross_entropy":
            LF.cross_entropy(torch.zeros(2, 0), torch.tensor([0, -100]))
        else:
            LF.linear_cross_entropy(torch.zeros(2, 4), torch.zeros(0, 4), torch.tensor([0, 1]))


@pytest.mark.parametrize("path", PATHS)
def test_linear_cross_entropy_with_zero_features_is_the_bias_softmax(path):
    h = torch.zeros(3, 0, requires_grad=True)
    w = torch.zeros(5, 0, requires_grad=True)
    b = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0], requires_grad=True)
    y = torch.tensor([1, 2, 3])
    out = _run(path, lambda: LF.linear_cross_entropy(h, w, y, linear_bias=b))
    out.backward()
    b64 = b.detach().double().requires_grad_()
    ref = F.cross_entropy(b64.expand(3, 5), y)
    ref.backward()
    torch.testing.assert_close(out.double(), ref)
    torch.testing.assert_close(b.grad.double(), b64.grad)


def test_linear_cross_entropy_refuses_0d_hidden_with_a_runtime_error_naming_the_fix():
    with pytest.raises(LossRuntimeError, match=r"dimensionality 1 or 2, got 0.*Fix"):
        LF.linear_cross_entropy(torch.tensor(1.0), torch.zeros(5, 1), torch.tensor(0))


# ----------------------------------------------------------------------------------------------
# Smaller defects (losskit/losses/*.py)


def test_probability_targets_promote_a_class_weight_of_another_float_dtype_like_torch():
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    q = torch.softmax(torch.randn(4, 3, generator=torch.Generator().manual_seed(1)), dim=1)
    w = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    out = LF.cross_entropy(x, q, weight=w)
    ref = F.cross_entropy(x, q, weight=w)  # torch: float32 x float64 -> float64
    assert out.dtype == ref.dtype
    torch.testing.assert_close(out, ref)


def test_nll_loss_of_one_sample_with_one_class_computes_like_torch():
    x = torch.tensor([-0.1], requires_grad=True)
    out = LF.nll_loss(x, torch.tensor([0]))
    out.backward()
    assert out.item() == pytest.approx(0.1) and x.grad.tolist() == [-1.0]


@pytest.mark.parametrize("loss", ["mse_loss", "l1_loss", "huber_loss"])
def test_elementwise_mean_with_weight_is_refused_like_torch(loss):
    x, y, w = torch.randn(3), torch.randn(3), torch.ones(3)
    with pytest.raises(ValueError):
        getattr(F, loss)(x, y, reduction="elementwise_mean", weight=w)
    with pytest.raises(ValueError, match=r"elementwise_mean.*Fix: reduction='mean'"):
        getattr(LF, loss)(x, y, reduction="elementwise_mean", weight=w)


def test_linear_cross_entropy_treats_negative_label_smoothing_as_zero_like_cross_entropy():
    h = torch.randn(4, 3, generator=torch.Generator().manual_seed(2))
    w = torch.randn(5, 3, generator=torch.Generator().manual_seed(3))
    y = torch.tensor([0, 1, 2, 3])
    out = LF.linear_cross_entropy(h, w, y, label_smoothing=-0.1)
    ref = F.cross_entropy((h @ w.T).double(), y, label_smoothing=-0.1)  # torch clamps to 0
    torch.testing.assert_close(out.double(), ref)


@pytest.mark.parametrize("inplace", [False, True])
def test_return_lse_of_a_row_with_plus_inf_is_plus_inf_like_logsumexp(inplace):
    """With the value checks off a +inf logit gets through: the loss is NaN, as torch's, and the
    returned log-sum-exp is torch.logsumexp's +inf (it was NaN: x - max is inf - inf there)."""
    x = torch.tensor([[float("inf"), 0.0, 1.0], [0.5, 0.0, 1.0]])
    expected = torch.logsumexp(x, dim=1)
    with losskit.checks("off"):
        loss, lse = LF.cross_entropy(x.clone(), torch.tensor([1, 2]), reduction="none",
                                     return_lse=True, inplace=inplace)
    assert torch.isnan(loss[0]) and torch.isfinite(loss[1])
    torch.testing.assert_close(lse, expected)
