"""Property tests (hypothesis) for the seeds' properties of a loss, in float64:

* non-negative, for every loss;
* zero at a perfect prediction, where the loss has that property (exactly 0 for the regression
  losses at input == target; a limit approached as logits grow for the logit-based losses);
* larger error gives larger loss: monotone in |input - target| for the pointwise regression losses,
  and in the logit of the true class for the classification losses.
"""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import losskit.functional as LF

SETTINGS = settings(max_examples=30, deadline=None, database=None, derandomize=True)
F64 = torch.float64

finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)
unit = st.floats(0.0, 1.0)


def _t(values) -> torch.Tensor:
    return torch.tensor(values, dtype=F64)


def _pairs(left=finite, right=finite, max_size=12):
    """Two equal-length lists of floats."""
    return st.integers(1, max_size).flatmap(
        lambda n: st.tuples(st.lists(left, min_size=n, max_size=n),
                            st.lists(right, min_size=n, max_size=n)))


# Regression losses as (name, call) with their threshold drawn by hypothesis
REGRESSION = st.sampled_from(["mse", "l1", "huber", "smooth_l1"])


def _regression(name: str, threshold: float):
    if name == "mse":
        return lambda x, y: LF.mse_loss(x, y, reduction="none")
    if name == "l1":
        return lambda x, y: LF.l1_loss(x, y, reduction="none")
    if name == "huber":
        return lambda x, y: LF.huber_loss(x, y, reduction="none", delta=max(threshold, 1e-3))
    return lambda x, y: LF.smooth_l1_loss(x, y, reduction="none", beta=threshold)


thresholds = st.floats(0.0, 10.0)


# ----------------------------------------------------------------------------------------------
# Non-negative


@SETTINGS
@given(name=REGRESSION, threshold=thresholds, xy=_pairs())
def test_regression_non_negative(name, threshold, xy):
    x, y = map(_t, xy)
    assert (_regression(name, threshold)(x, y) >= 0).all()


@SETTINGS
@given(xy=_pairs(unit, unit))
def test_bce_non_negative(xy):
    x, y = map(_t, xy)
    assert (LF.binary_cross_entropy(x, y, reduction="none") >= 0).all()


@SETTINGS
@given(xy=_pairs(finite, unit), pos_weight=st.floats(0.0, 10.0))
def test_bce_with_logits_non_negative(xy, pos_weight):
    x, y = map(_t, xy)
    pw = torch.full((x.numel(),), pos_weight, dtype=F64)
    assert (LF.binary_cross_entropy_with_logits(x, y, pos_weight=pw, reduction="none") >= 0).all()


@SETTINGS
@given(xy=_pairs(finite, unit), gamma=st.floats(0.0, 5.0),
       alpha=st.one_of(st.none(), unit))
def test_focal_binary_non_negative(xy, gamma, alpha):
    x, y = map(_t, xy)
    assert (LF.focal_loss(x, y, alpha=alpha, gamma=gamma, reduction="none") >= 0).all()


@st.composite
def _logits_and_labels(draw, max_rows=6, max_classes=6):
    n, c = draw(st.integers(1, max_rows)), draw(st.integers(2, max_classes))
    x = draw(st.lists(finite, min_size=n * c, max_size=n * c))
    y = draw(st.lists(st.integers(0, c - 1), min_size=n, max_size=n))
    return _t(x).reshape(n, c), torch.tensor(y)


@SETTINGS
@given(xy=_logits_and_labels(), smoothing=unit)
def test_cross_entropy_non_negative(xy, smoothing):
    x, y = xy
    assert (LF.cross_entropy(x, y, label_smoothing=smoothing, reduction="none") >= 0).all()
    assert (LF.nll_loss(torch.log_softmax(x, 1), y, reduction="none") >= 0).all()


@SETTINGS
@given(xy=_logits_and_labels(), gamma=st.floats(0.0, 5.0))
def test_focal_multiclass_non_negative(xy, gamma):
    x, y = xy
    assert (LF.focal_loss(x, y, gamma=gamma, reduction="none") >= 0).all()


@SETTINGS
@given(xy=_logits_and_labels(), log_target=st.booleans())
def test_kl_div_non_negative_between_distributions(xy, log_target):
    """Gibbs' inequality: the KL divergence between two distributions is >= 0 (per row)."""
    x = torch.log_softmax(xy[0], 1)
    q = torch.softmax(torch.roll(x, 1, dims=1) * 0.5, 1)  # another distribution of x's shape
    y = torch.log_softmax(torch.roll(x, 1, dims=1) * 0.5, 1) if log_target else q
    rows = LF.kl_div(x, y, reduction="none", log_target=log_target).sum(1)
    assert (rows >= -1e-12).all()


@st.composite
def _segmentation(draw):
    n, c, h = draw(st.integers(1, 3)), draw(st.integers(2, 4)), draw(st.integers(1, 4))
    x = draw(st.lists(st.floats(-30, 30), min_size=n * c * h, max_size=n * c * h))
    y = draw(st.lists(st.integers(0, c - 1), min_size=n * h, max_size=n * h))
    return _t(x).reshape(n, c, h), torch.tensor(y).reshape(n, h)


@SETTINGS
@given(xy=_segmentation(), smooth=st.floats(0.0, 2.0))
def test_dice_in_unit_interval(xy, smooth):
    x, y = xy
    out = LF.dice_loss(x, y, smooth=smooth, reduction="none")
    assert ((out >= -1e-12) & (out <= 1 + 1e-12)).all()


# ----------------------------------------------------------------------------------------------
# Zero at a perfect prediction


@SETTINGS
@given(name=REGRESSION, threshold=thresholds, x=st.lists(finite, min_size=1, max_size=12))
def test_regression_zero_at_perfect_prediction(name, threshold, x):
    x = _t(x)
    assert (_regression(name, threshold)(x, x.clone()) == 0).all()


@SETTINGS
@given(y=st.lists(st.sampled_from([0.0, 1.0]), min_size=1, max_size=12))
def test_bce_zero_at_perfect_prediction(y):
    y = _t(y)
    assert (LF.binary_cross_entropy(y.clone(), y, reduction="none") == 0).all()


@SETTINGS
@given(y=st.lists(st.sampled_from([0.0, 1.0]), min_size=1, max_size=12),
       scale=st.floats(1.0, 20.0))
def test_logit_losses_approach_zero_as_logits_grow(y, scale):
    """BCE-with-logits and binary focal at logits s (2y - 1): decreasing in s, ~0 at s = 40."""
    y = _t(y)
    sign = 2 * y - 1
    for fn in (LF.binary_cross_entropy_with_logits, LF.focal_loss):
        near = fn(scale * sign, y, reduction="none")
        far = fn(2 * scale * sign, y, reduction="none")
        assert (far < near).all()
        assert (fn(40 * sign, y, reduction="none") < 1e-15).all()


@SETTINGS
@given(xy=_logits_and_labels(), margin=st.floats(1.5, 20.0))  # (1, 0) rows look like softmax
def test_cross_entropy_approaches_zero_with_confident_correct_logits(xy, margin):
    """-log softmax(x)_y with x = margin at the true class, 0 elsewhere: (C-1) e^-margin."""
    x, y = xy
    n, c = x.shape
    confident = torch.zeros(n, c, dtype=F64)
    confident[torch.arange(n), y] = margin
    out = LF.cross_entropy(confident, y, reduction="none")
    torch.testing.assert_close(out, torch.full((n,), math.log1p((c - 1) * math.exp(-margin)),
                                               dtype=F64))
    confident[torch.arange(n), y] = 50.0
    assert (LF.cross_entropy(confident, y, reduction="none") < 1e-18).all()
    assert (LF.focal_loss(confident, y, reduction="none") < 1e-18).all()


@SETTINGS
@given(xy=_logits_and_labels(), log_target=st.booleans())
def test_kl_div_zero_when_input_is_log_target(xy, log_target):
    logq = torch.log_softmax(xy[0], 1)
    target = logq.clone() if log_target else logq.exp()
    out = LF.kl_div(logq, target, reduction="sum", log_target=log_target)
    assert abs(out.item()) < 1e-12


@SETTINGS
@given(xy=_segmentation(), smooth=st.floats(0.01, 2.0))
def test_dice_zero_at_confident_correct_logits(xy, smooth):
    _, y = xy
    x = 60.0 * torch.nn.functional.one_hot(y, xy[0].shape[1]).movedim(-1, 1).to(F64)
    assert (LF.dice_loss(x, y, smooth=smooth, reduction="none").abs() < 1e-12).all()


# ----------------------------------------------------------------------------------------------
# Larger error gives larger loss


@SETTINGS
@given(name=REGRESSION, threshold=thresholds, t=finite, d=st.floats(1e-3, 100.0),
       k=st.floats(1.0, 10.0), negative=st.booleans())
def test_regression_monotone_in_error(name, threshold, t, d, k, negative):
    """|d2| >= |d1| (same sign) gives loss(t + d2, t) >= loss(t + d1, t); strictly when the
    errors differ by more than rounding."""
    sign = -1.0 if negative else 1.0
    fn = _regression(name, threshold)
    target = _t([t])
    small = fn(_t([t + sign * d]), target)
    large = fn(_t([t + sign * d * k]), target)
    assert large >= small
    if d * (k - 1) > 1e-9 * max(1.0, abs(t)) * 1e3:
        assert large > small


@SETTINGS
@given(xy=_logits_and_labels(), step=st.floats(0.1, 10.0))
def test_class_losses_fall_as_true_logit_rises(xy, step):
    x, y = xy
    rows = torch.arange(x.shape[0])
    better = x.clone()
    better[rows, y] += step
    for fn in (LF.cross_entropy, LF.focal_loss):
        before, after = fn(x, y, reduction="none"), fn(better, y, reduction="none")
        # strictly lower unless the loss already rounds to 0 in float64
        assert ((after < before) | (before < 1e-300)).all()
        assert (after <= before).all()


@SETTINGS
@given(y=st.lists(st.sampled_from([0.0, 1.0]), min_size=1, max_size=12),
       x=st.floats(-30.0, 30.0), step=st.floats(0.1, 10.0))
def test_bce_with_logits_rises_as_logit_moves_away_from_target(y, x, step):
    y = _t(y)
    away = -(2 * y - 1)  # direction of a worse logit
    logits = torch.full_like(y, x)
    before = LF.binary_cross_entropy_with_logits(logits, y, reduction="none")
    after = LF.binary_cross_entropy_with_logits(logits + step * away, y, reduction="none")
    assert (after > before).all()
