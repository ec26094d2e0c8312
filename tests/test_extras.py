"""Poly-1 cross-entropy, Tversky, focal Tversky and Lovasz-softmax beyond their case tables:
identities with losses they generalise, values known by hand, and each guardrail with its
healthy twin (a correct, similar input that must stay silent).

The float64 formula references are in tests/cases/classification.py and segmentation.py.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F

import losskit as lk
import losskit.functional as LF


@pytest.fixture(autouse=True)
def always_checks():
    with lk.checks("always"):
        yield


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _silent(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error", lk.LossWarning)
        return fn(*args, **kwargs)


def _seg(seed=0, n=2, c=3, h=4, w=5, dtype=torch.float64):
    g = _gen(seed)
    x = torch.randn(n, c, h, w, generator=g, dtype=dtype)  # (N, C, H, W) logits
    return x, torch.randint(0, c, (n, h, w), generator=g)  # (N, H, W) int64


# ----------------------------------------------------------------------------------------------
# Poly-1


@pytest.mark.parametrize("options", [{}, {"label_smoothing": 0.2}, {"ignore_index": 1},
                                     {"weight": "w"}])
def test_poly1_with_epsilon_0_is_cross_entropy(options):
    x = torch.randn(8, 4, generator=_gen(), dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 4, (8,), generator=_gen(1))
    if options.get("weight"):
        options = {"weight": torch.tensor([1.0, 2.0, 0.5, 3.0], dtype=torch.float64)}
    ours = LF.poly1_cross_entropy(x, y, epsilon=0.0, **options)
    theirs = F.cross_entropy(x, y, **options)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
    g1, = torch.autograd.grad(ours, x)
    g2, = torch.autograd.grad(theirs, x)
    torch.testing.assert_close(g1, g2, rtol=1e-12, atol=1e-12)


def test_poly1_adds_epsilon_times_one_minus_p_t_by_hand():
    # Two classes, logits (ln 3, 0): p_t = 3/4 for class 0. CE = ln(4/3), poly = 2 * (1/4).
    x = torch.tensor([[math.log(3.0), 0.0]], dtype=torch.float64)
    got = LF.poly1_cross_entropy(x, torch.tensor([0]), epsilon=2.0)
    assert got.item() == pytest.approx(math.log(4 / 3) + 0.5, abs=1e-12)


def test_poly1_epsilon_below_minus_one_raises_and_minus_one_is_fine():
    x, y = torch.randn(6, 3, generator=_gen()), torch.randint(0, 3, (6,), generator=_gen(1))
    with pytest.raises(lk.LossInputError, match=r"epsilon=-1.5.*Fix: use epsilon >= -1"):
        LF.poly1_cross_entropy(x, y, epsilon=-1.5)
    _silent(LF.poly1_cross_entropy, x, y, epsilon=-1.0)


def test_poly1_softmax_before_warns_and_logits_are_silent():
    logits = torch.randn(16, 5, generator=_gen())
    y = torch.randint(0, 5, (16,), generator=_gen(1))
    with pytest.warns(lk.LossWarning, match=r"poly1_cross_entropy: `input`.*probabilities"):
        LF.poly1_cross_entropy(logits.softmax(1), y)
    _silent(LF.poly1_cross_entropy, logits, y)


def test_poly1_index_out_of_range_raises_and_ignore_index_is_fine():
    x = torch.randn(4, 3, generator=_gen())
    with pytest.raises(lk.LossInputError, match=r"outside \[0, 3\).*Fix:"):
        LF.poly1_cross_entropy(x, torch.tensor([0, 1, 3, 2]))
    _silent(LF.poly1_cross_entropy, x, torch.tensor([0, 1, -100, 2]))


def test_poly1_every_target_ignored_is_zero_with_zero_gradient():
    x = torch.randn(3, 4, generator=_gen(), requires_grad=True)
    with pytest.warns(lk.LossWarning, match="ignore_index"):
        out = LF.poly1_cross_entropy(x, torch.full((3,), -100))
    out.backward()
    assert out.item() == 0 and not x.grad.any()


@pytest.mark.parametrize("smoothing", [0.0, 0.3])
def test_poly1_class_weight_that_requires_grad_gets_the_formulas_gradient(smoothing):
    """As losskit's cross_entropy: a learnable class weight gets its gradient (torch's nll_loss
    raises). Oracle: the Poly-1 formula written out in float64 and differentiated by autograd."""
    g = _gen(3)
    x = torch.randn(6, 4, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 3, 2, -100, 1, 3])
    w = torch.tensor([0.5, 2.0, 1.0, 3.0], dtype=torch.float64, requires_grad=True)
    got = LF.poly1_cross_entropy(x, y, weight=w, epsilon=1.5, label_smoothing=smoothing)
    got.backward()
    xr, wr = x.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    keep = y != -100
    logp, t = xr[keep].log_softmax(1), y[keep]  # (M, C), (M,)
    w_t = wr[t]
    ce = (1 - smoothing) * w_t * -logp.gather(1, t[:, None]).squeeze(1)
    ce = ce + smoothing / 4 * (-logp * wr).sum(1)
    p_smooth = (1 - smoothing) * logp.exp().gather(1, t[:, None]).squeeze(1) + smoothing / 4
    ref = (ce + 1.5 * w_t * (1 - p_smooth)).sum() / w_t.sum()
    ref.backward()
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(w.grad, wr.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(x.grad, xr.grad, rtol=1e-10, atol=1e-12)
    assert w.grad.abs().min() > 0  # every class is a target: a real gradient everywhere


def test_poly1_label_smoothing_outside_0_1_raises():
    with pytest.raises(lk.LossInputError, match=r"label_smoothing=1.5.*Fix:"):
        LF.poly1_cross_entropy(torch.zeros(2, 3), torch.tensor([0, 1]), label_smoothing=1.5)


# ----------------------------------------------------------------------------------------------
# Tversky and focal Tversky


@pytest.mark.parametrize("binary", [False, True])
def test_tversky_with_alpha_beta_half_is_dice_with_smooth_doubled(binary):
    x, y = _seg()
    if binary:
        y = (torch.rand(x.shape, generator=_gen(2), dtype=torch.float64) > 0.5).double()
    x.requires_grad_(True)
    for smooth in (0.0, 1.0):
        ours = LF.tversky_loss(x, y, alpha=0.5, beta=0.5, smooth=smooth, reduction="none")
        dice = LF.dice_loss(x, y, smooth=2 * smooth, reduction="none")
        torch.testing.assert_close(ours, dice, rtol=1e-12, atol=1e-12)
        g1, = torch.autograd.grad(ours.sum(), x)
        g2, = torch.autograd.grad(dice.sum(), x)
        torch.testing.assert_close(g1, g2, rtol=1e-10, atol=1e-12)


def test_tversky_beta_above_alpha_penalises_a_missed_pixel_more_by_hand():
    # One image, two pixels labelled 1; hard predictions (logits +-30): pixel 0 predicted 0.
    # Class 1: TP = 1, FN = 1, FP = 0, so l_1 = 1 - 1 / (1 + beta) with smooth = 0.
    x = torch.tensor([[[30.0, -30.0]], [[-30.0, 30.0]]], dtype=torch.float64).transpose(0, 1)
    label = torch.tensor([[1, 1]])
    fn_heavy = LF.tversky_loss(x, label, alpha=0.3, beta=0.7, smooth=0.0, reduction="none")
    fp_heavy = LF.tversky_loss(x, label, alpha=0.7, beta=0.3, smooth=0.0, reduction="none")
    assert fn_heavy[1].item() == pytest.approx(1 - 1 / 1.7, abs=1e-9)
    assert fp_heavy[1].item() == pytest.approx(1 - 1 / 1.3, abs=1e-9)
    # Class 0: TP = 0, FP = 1, FN = 0: l_0 = 1 - 0 / alpha = 1 either way.
    assert fn_heavy[0].item() == pytest.approx(1.0) and fp_heavy[0].item() == pytest.approx(1.0)


@pytest.mark.parametrize("fn", [LF.tversky_loss, LF.focal_tversky_loss])
@pytest.mark.parametrize(("alpha", "beta", "words"), [
    (-0.1, 0.7, "must be >= 0"), (0.0, 0.0, "TP / TP = 1")])
def test_tversky_weights_that_do_not_measure_overlap_raise(fn, alpha, beta, words):
    x, y = _seg()
    with pytest.raises(lk.LossInputError, match=words) as caught:
        fn(x, y, alpha=alpha, beta=beta)
    assert "Fix:" in str(caught.value)
    _silent(fn, x, y, alpha=1.0, beta=0.0)  # twin: precision-only weighting is legal
    _silent(fn, x, y, alpha=0.4, beta=0.9)  # and alpha + beta need not be 1


@pytest.mark.parametrize("fn", [LF.tversky_loss, LF.focal_tversky_loss, LF.lovasz_softmax])
def test_softmax_before_an_overlap_loss_warns_and_logits_are_silent(fn):
    x, y = _seg(dtype=torch.float32)
    with pytest.warns(lk.LossWarning, match=rf"{fn.__name__}: .*capped|cap") as caught:
        fn(x.softmax(1), y)
    message = str(caught[0].message)
    assert "takes logits" in message and "Fix: pass the raw logits" in message
    assert ("Berman" in message) == (fn is LF.lovasz_softmax)
    _silent(fn, x, y)


def test_sigmoid_before_binary_tversky_warns_and_logits_are_silent():
    x = torch.randn(2, 1, 4, 4, generator=_gen())
    y = (torch.rand(2, 1, 4, 4, generator=_gen(1)) > 0.7).float()
    with pytest.warns(lk.LossWarning, match="sigmoid"):
        LF.tversky_loss(x.sigmoid(), y)
    _silent(LF.tversky_loss, x, y)


def test_focal_tversky_with_gamma_1_is_tversky():
    x, y = _seg()
    torch.testing.assert_close(LF.focal_tversky_loss(x, y, gamma=1.0, reduction="none"),
                               LF.tversky_loss(x, y, reduction="none"), rtol=1e-12, atol=0)


def test_focal_tversky_gamma_below_1_warns_with_the_reciprocal():
    x, y = _seg()
    with pytest.warns(lk.LossWarning, match=r"gamma=0.75.*Fix: .*pass gamma=1.333"):
        LF.focal_tversky_loss(x, y, gamma=0.75)
    _silent(LF.focal_tversky_loss, x, y, gamma=4 / 3)
    with pytest.raises(lk.LossInputError, match=r"gamma=0.*must be > 0"):
        LF.focal_tversky_loss(x, y, gamma=0.0)


def test_focal_tversky_gradient_at_a_perfect_class_is_zero_not_nan():
    # Class 2 never labelled, smooth=0 and every pixel ignored for it: TI = 1 exactly.
    x = torch.randn(1, 3, 4, generator=_gen(), dtype=torch.float64, requires_grad=True)
    y = torch.full((1, 4), 255)
    with pytest.warns(lk.LossWarning, match="ignore_index"):
        out = LF.focal_tversky_loss(x, y, smooth=0.0, ignore_index=255)
    out.backward()
    assert out.item() == 0 and torch.isfinite(x.grad).all() and not x.grad.any()


# ----------------------------------------------------------------------------------------------
# Lovasz-softmax


def _iou(pred, label, c):
    inter = ((pred == c) & (label == c)).sum().item()
    union = ((pred == c) | (label == c)).sum().item()
    return inter / union


def test_lovasz_on_hard_predictions_is_one_minus_iou():
    """The Lovasz extension agrees with the set function on 0/1 errors (Berman et al., eq. 8):
    with saturated logits (probabilities exactly 0 and 1) the loss of class c is 1 - IoU_c."""
    g = _gen(3)
    label = torch.randint(0, 3, (1, 6, 5), generator=g)
    pred = torch.randint(0, 3, (1, 6, 5), generator=g)
    logits = F.one_hot(pred, 3).movedim(-1, 1).double() * 2000 - 1000  # (1, 3, 6, 5)
    got = LF.lovasz_softmax(logits, label, classes="all", reduction="none")
    want = torch.tensor([1 - _iou(pred, label, c) for c in range(3)], dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_lovasz_per_image_of_one_image_equals_the_batch_loss():
    x, y = _seg(n=1)
    torch.testing.assert_close(LF.lovasz_softmax(x, y, per_image=True),
                               LF.lovasz_softmax(x, y), rtol=1e-12, atol=0)


def test_lovasz_present_leaves_absent_classes_out_of_the_mean():
    x, y = _seg(c=4)
    y = y.clamp(max=2)  # class 3 absent
    per_class = LF.lovasz_softmax(x, y, reduction="none")
    assert per_class[3] == 0
    torch.testing.assert_close(LF.lovasz_softmax(x, y), per_class[:3].mean())
    everything = LF.lovasz_softmax(x, y, classes="all", reduction="none")
    torch.testing.assert_close(LF.lovasz_softmax(x, y, classes="all"), everything.mean())


def test_lovasz_float_target_raises_naming_the_conversion():
    x, y = _seg()
    onehot = F.one_hot(y, 3).movedim(-1, 1).double()
    with pytest.raises(lk.LossInputError, match=r"int64 class indices.*Fix: `target.argmax\(1\)`"):
        LF.lovasz_softmax(x, onehot)
    _silent(LF.lovasz_softmax, x, onehot.argmax(1))


def test_lovasz_unknown_classes_raises():
    x, y = _seg()
    with pytest.raises(lk.LossInputError, match=r"classes='some'.*Fix:"):
        LF.lovasz_softmax(x, y, classes="some")


def test_lovasz_index_out_of_range_raises_and_ignored_255_is_fine():
    x, y = _seg()
    bad = y.clone()
    bad[0, 0, 0] = 255
    with pytest.raises(lk.LossInputError, match=r"outside \[0, 3\).*Fix:"):
        LF.lovasz_softmax(x, bad)
    _silent(LF.lovasz_softmax, x, bad, ignore_index=255)


# ----------------------------------------------------------------------------------------------
# An independent implementation: MONAI's Tversky loss (alpha on false positives, beta on false
# negatives, as Salehi et al. and losskit)


def test_tversky_matches_monai():
    """One test for the three settings: importing MONAI costs several seconds of CPU, paid once."""
    monai_losses = pytest.importorskip("monai.losses")
    for alpha, beta, smooth in [(0.3, 0.7, 1.0), (0.5, 0.5, 1e-5), (1.0, 0.2, 0.0)]:
        x, y = _seg(c=4)
        x.requires_grad_(True)
        theirs = monai_losses.TverskyLoss(
            to_onehot_y=True, softmax=True, alpha=alpha, beta=beta, smooth_nr=smooth,
            smooth_dr=smooth, batch=True, reduction="none")(x, y[:, None])  # (C, 1, 1)
        ours = LF.tversky_loss(x, y, alpha=alpha, beta=beta, smooth=smooth, reduction="none")
        torch.testing.assert_close(ours, theirs.reshape(-1), rtol=1e-10, atol=1e-12)
        g1, = torch.autograd.grad(ours.sum(), x)
        g2, = torch.autograd.grad(theirs.sum(), x)
        torch.testing.assert_close(g1, g2, rtol=1e-9, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# Binary masks and one-class inputs on the overlap losses (review round 4)

OVERLAP = ["dice_loss", "tversky_loss", "focal_tversky_loss"]  # with a binary (float) path


def _mask(seed=0, dtype=torch.float64):
    g = _gen(seed)
    x = torch.randn(2, 1, 4, 5, generator=g, dtype=dtype)  # (N, 1, H, W) one logit per pixel
    return x, torch.rand(2, 1, 4, 5, generator=g) > 0.5  # (N, 1, H, W) bool mask


@pytest.mark.parametrize("fn", OVERLAP)
@pytest.mark.parametrize("as_int", [True, False])
def test_integer_binary_mask_of_the_inputs_shape_gets_the_float_fix(fn, as_int):
    x, mask = _mask()
    target = mask.long() if as_int else mask
    with pytest.raises(lk.LossInputError, match=r"target\.float\(\)") as info:
        getattr(LF, fn)(x, target)
    assert "argmax" not in str(info.value)  # argmax(1) of one channel is all 0
    fixed = _silent(getattr(LF, fn), x, target.float())  # the fix, run
    torch.testing.assert_close(fixed, getattr(LF, fn)(x, mask.double()))


@pytest.mark.parametrize("fn", [*OVERLAP, "lovasz_softmax"])
def test_integer_one_hot_target_gets_argmax_and_the_fix_runs(fn):
    x, y = _seg()
    one_hot = F.one_hot(y, 3).movedim(-1, 1)  # (N, C, H, W) int64
    with pytest.raises(lk.LossInputError, match=r"target\.argmax\(1\)"):
        getattr(LF, fn)(x, one_hot)
    torch.testing.assert_close(getattr(LF, fn)(x, one_hot.argmax(1)), getattr(LF, fn)(x, y))


def test_lovasz_binary_mask_of_the_inputs_shape_names_two_channels_not_argmax():
    x, mask = _mask()
    for target in (mask, mask.long()):
        with pytest.raises(lk.LossInputError, match=r"2 output channels") as info:
            LF.lovasz_softmax(x, target)
        assert "argmax" not in str(info.value)
    x2 = torch.cat([-x, x], dim=1)  # the fix: 2 channels, the mask as class indices
    _silent(LF.lovasz_softmax, x2, mask.squeeze(1).long())


@pytest.mark.parametrize("fn", [*OVERLAP, "lovasz_softmax"])
@pytest.mark.parametrize("all_zero", [False, True])
def test_one_class_logits_with_index_masks_raise(fn, all_zero):
    """A 0/1 index mask with one logit channel: 1s are out of range, and an all-0 mask gave a
    constant 0 loss with zero gradient (softmax over one class is 1)."""
    x, mask = _mask()
    index = torch.zeros(2, 4, 5, dtype=torch.long) if all_zero else mask.squeeze(1).long()
    fix = r"2 output channels" if fn == "lovasz_softmax" else r"target\.unsqueeze\(1\)\.float\(\)"
    with pytest.raises(lk.LossInputError, match=r"1 class in dim 1.*" + fix) as info:
        getattr(LF, fn)(x, index)
    assert "labels must be 0..0" not in str(info.value)


def test_binary_path_fix_of_a_one_class_index_mask_learns_dice_by_hand():
    """The healthy twin and the named fix: (N, 1, H, W) logits with the float mask give the
    binary Dice of sigmoid(x), with a non-zero gradient."""
    x, mask = _mask()
    x.requires_grad_()
    got = _silent(LF.dice_loss, x, mask.squeeze(1).long().unsqueeze(1).float())
    got.backward()
    p, t = torch.sigmoid(x.detach()), mask.double()
    ref = 1 - (2 * (p * t).sum() + 1) / (p.sum() + t.sum() + 1)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    assert x.grad.abs().sum() > 0
    for fn in ("tversky_loss", "focal_tversky_loss"):
        _silent(getattr(LF, fn), x.detach(), mask.double())


@pytest.mark.parametrize("fn", ["tversky_loss", "focal_tversky_loss"])
@pytest.mark.parametrize("bad", [{"alpha": math.nan}, {"beta": math.nan}, {"alpha": math.inf}])
def test_tversky_weights_that_are_not_finite_raise(fn, bad):
    x, y = _seg()
    with pytest.raises(lk.LossInputError, match=r"must be finite.*Fix:"):
        getattr(LF, fn)(x, y, **bad)


def test_dice_softmax_warning_describes_dice_not_cross_entropy():
    x, y = _seg()
    with pytest.warns(lk.LossWarning, match=r"dice_loss takes logits and applies the softmax") as w:
        LF.dice_loss(x.softmax(1), y)
    assert not any("Cross-entropy" in str(r.message) for r in w)
    _silent(LF.dice_loss, x, y)
