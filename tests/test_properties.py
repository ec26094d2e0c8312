"""Property tests (hypothesis) for the seeds' properties of a loss, in float64:

* non-negative, for every loss;
* zero at a perfect prediction, where the loss has that property (exactly 0 for the regression
  losses at input == target; a limit approached as logits grow for the logit-based losses);
* larger error gives larger loss: monotone in |input - target| for the pointwise regression losses,
  in the logit of the true class for the classification losses, in the distance of a probability
  from its target for BCE, in the target's log-probability for NLL, along a path away from the
  target distribution for KL, and in the overlap with the mask for Dice (whose minimum at a
  perfect prediction is checked against its closed form, smooth included).
"""

from __future__ import annotations

import math

import torch
from hypothesis import assume, given, settings
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
def _logits_and_labels(draw, max_rows=6, max_classes=6, values=finite):
    n, c = draw(st.integers(1, max_rows)), draw(st.integers(2, max_classes))
    x = draw(st.lists(values, min_size=n * c, max_size=n * c))
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


@st.composite
def _probability_moves(draw, max_size=8):
    """Targets y in [0, 1] and two predictions on the same side of y, ``far`` further away:
    p = y + t (1 - y) upwards or p = y - t y downwards, with t_near < t_far < 1."""
    n = draw(st.integers(1, max_size))
    y, near, far = [], [], []
    for _ in range(n):
        target = draw(st.one_of(st.sampled_from([0.0, 1.0]), unit))
        up = draw(st.booleans()) if 0.0 < target < 1.0 else target == 0.0
        room = 1.0 - target if up else target  # distance to the end of [0, 1] on that side
        if room < 1e-2:  # too little room to move: take the other side
            up, room = not up, target if up else 1.0 - target
        t_near = draw(st.floats(0.0, 0.9))
        t_far = draw(st.floats(t_near + 0.05, 0.99))
        sign = 1.0 if up else -1.0
        y.append(target)
        near.append(target + sign * t_near * room)
        far.append(target + sign * t_far * room)
    return _t(y), _t(near), _t(far)


@SETTINGS
@given(moves=_probability_moves())
def test_bce_rises_as_probability_moves_away_from_target(moves):
    """BCE(p, y) = -(y ln p + (1 - y) ln(1 - p)) has derivative (p - y) / (p (1 - p)) in p: it
    grows strictly as p leaves y on either side (inside (0, 1), away from the log clamp)."""
    y, near, far = moves
    before = LF.binary_cross_entropy(near, y, reduction="none")
    after = LF.binary_cross_entropy(far, y, reduction="none")
    assert (after > before).all(), (y, near, far, before, after)


# Logits within +-10: p_y stays at least e^-20 away from 1, so ln p_y never rounds to 0.
@SETTINGS
@given(xy=_logits_and_labels(values=st.floats(-10.0, 10.0)), step=st.floats(0.1, 10.0))
def test_nll_rises_as_target_log_probability_falls(xy, step):
    """Lowering the target's logit by ``step`` and renormalising lowers ln p_y: the NLL rises by
    ln(p_y / p'_y) = step - ln((e^{x_y} + S) / (e^{x_y - step} + S)), S the other classes' mass,
    which lies in (0, step]."""
    x, y = xy
    worse = x.clone()
    worse[torch.arange(x.shape[0]), y] -= step
    before = LF.nll_loss(torch.log_softmax(x, 1), y, reduction="none")
    after = LF.nll_loss(torch.log_softmax(worse, 1), y, reduction="none")
    assert ((after > before) & (after - before <= step + 1e-12)).all(), (before, after)


@SETTINGS
@given(xy=_logits_and_labels(values=st.floats(-5.0, 5.0)), log_target=st.booleans(),
       data=st.data())
def test_kl_div_rises_as_input_moves_away_from_target(xy, log_target, data):
    """p_t = (1 - t) q + t r moves from the target q towards another distribution r. KL(q || p_t)
    is 0 at t = 0, strictly convex in t (-ln is) and so strictly increasing on [0, 1)."""
    n, c = xy[0].shape
    q = torch.softmax(xy[0], 1)  # target rows, every class present
    other = data.draw(st.lists(st.floats(-5.0, 5.0), min_size=n * c, max_size=n * c))
    r = torch.softmax(_t(other).reshape(n, c), 1)
    assume(((r - q).abs().amax(1) > 1e-2).all())
    t_near = data.draw(st.floats(0.0, 0.9))
    t_far = data.draw(st.floats(t_near + 0.05, 0.99))
    target = q.log() if log_target else q

    def kl(t: float) -> torch.Tensor:  # one value per row
        p = (1 - t) * q + t * r
        return LF.kl_div(p.log(), target, reduction="none", log_target=log_target).sum(1)

    assert (kl(0.0).abs() < 1e-12).all()
    assert (kl(t_near) < kl(t_far)).all()


@st.composite
def _masks_and_predictions(draw):
    """A mask (n, h) of c classes, a labelling ``pred`` of it, and ``better``: ``pred`` with
    at least one of its wrong positions set to the mask's class."""
    n, c, h = draw(st.integers(1, 3)), draw(st.integers(2, 4)), draw(st.integers(2, 6))
    mask = torch.tensor(draw(st.lists(st.integers(0, c - 1), min_size=n * h, max_size=n * h)))
    pred = torch.tensor(draw(st.lists(st.integers(0, c - 1), min_size=n * h, max_size=n * h)))
    wrong = (pred != mask).nonzero().flatten().tolist()
    if not wrong:  # make one position wrong, so there is something to correct
        pred[0] = (mask[0] + 1) % c
        wrong = [0]
    fix = draw(st.lists(st.sampled_from(wrong), min_size=1, unique=True))
    better = pred.clone()
    better[fix] = mask[fix]
    return c, mask.reshape(n, h), pred.reshape(n, h), better.reshape(n, h)


def _confident(labels: torch.Tensor, c: int, scale: float) -> torch.Tensor:
    """Logits (n, c, h): ``scale`` at the labelled class, 0 elsewhere."""
    return scale * torch.nn.functional.one_hot(labels, c).movedim(-1, 1).to(F64)


@SETTINGS
@given(case=_masks_and_predictions(), scale=st.floats(1.5, 20.0), smooth=st.floats(0.0, 2.0))
def test_dice_falls_as_overlap_with_the_mask_grows(case, scale, smooth):
    """Moving a position's prediction from a wrong class w to the mask's class k (probability
    a for the predicted class, b < a for the others): class k's intersection and prediction sum
    both grow by a - b, which raises (2 I + s) / (P + T + s) because 2 I <= P + T; class w's
    prediction sum falls with its intersection unchanged. So the mean Dice loss falls strictly."""
    c, mask, pred, better = case
    worse_loss = LF.dice_loss(_confident(pred, c, scale), mask, smooth=smooth)
    better_loss = LF.dice_loss(_confident(better, c, scale), mask, smooth=smooth)
    assert better_loss < worse_loss


@SETTINGS
@given(case=_masks_and_predictions(), scale=st.floats(1.5, 20.0),
       smooth=st.one_of(st.just(0.0), st.floats(1e-2, 2.0)))  # not ~b M: the limit is 0 or 1
def test_dice_at_a_perfect_prediction_is_the_closed_form_minimum(case, scale, smooth):
    """Logits ``scale`` at the mask's class: a = e^scale / (e^scale + C - 1) there, b = 1 /
    (e^scale + C - 1) elsewhere. For class k with T_k of M positions, I_k = a T_k and
    P_k = a T_k + b (M - T_k), so l_k = 1 - (2 a T_k + s) / (a T_k + b (M - T_k) + T_k + s); 0 as
    scale grows, except for a class absent from the mask with smooth = 0, whose 0 / (b M) stays
    at loss 1. It is below the loss of any other labelling at the same scale."""
    c, mask, pred, _ = case
    perfect = LF.dice_loss(_confident(mask, c, scale), mask, smooth=smooth, reduction="none")
    z = math.exp(scale) + c - 1
    a, b, m = math.exp(scale) / z, 1 / z, mask.numel()
    expected = []
    for k in range(c):
        t_k = int((mask == k).sum())
        denominator = a * t_k + b * (m - t_k) + t_k + smooth
        expected.append(1 - (2 * a * t_k + smooth) / denominator)
    torch.testing.assert_close(perfect, _t(expected), rtol=1e-12, atol=1e-15)
    assert perfect.mean() < LF.dice_loss(_confident(pred, c, scale), mask, smooth=smooth)
    absent = sum(int((mask == k).sum()) == 0 for k in range(c))
    limit = absent / c if smooth == 0 else 0.0  # the scale -> infinity limit of the closed form
    assert abs(LF.dice_loss(_confident(mask, c, 60.0), mask, smooth=smooth) - limit) < 1e-12
