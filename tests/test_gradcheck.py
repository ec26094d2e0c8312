"""``torch.autograd.gradcheck`` (float64, finite differences) for every loss and its options.

Independent of torch's own backward formulas: each analytic gradient, losskit's fused kernels
included, is checked against central differences of losskit's own forward. Inputs keep clear of
kinks (|x - y| = 0 for L1, |x - y| = delta for Huber) so finite differences are valid.
"""

from __future__ import annotations

import oracle
import pytest
import torch
from torch.autograd import gradcheck

import losskit.functional as LF


def _randn(gen, *shape):
    return torch.randn(shape, generator=gen, dtype=torch.float64)


def _rand(gen, *shape):
    return torch.rand(shape, generator=gen, dtype=torch.float64)


def _away_from_kinks(gen, shape, kinks=(0.0,)):
    """(x, y) with every |x - y| at least 0.05 away from each kink."""
    y = _randn(gen, *shape)
    d = (0.2 + 2 * _rand(gen, *shape)) * torch.where(_rand(gen, *shape) > 0.5, 1.0, -1.0)
    for k in kinks:
        close = (d.abs() - k).abs() < 0.05
        d = torch.where(close, d + 0.1 * d.sign(), d)
    return y + d, y


def _leaf(t):
    return t.detach().clone().requires_grad_()


# Each case: id -> gen -> (function of the differentiable tensors, their values)
def _regression(fn, kinks=(0.0,), weighted=False, **options):
    def build(gen):
        kwargs = dict(options)
        x, y = _away_from_kinks(gen, (2, 3), kinks)
        if weighted:
            kwargs["weight"] = _rand(gen, 2, 3) + 0.1
        return (lambda a, b, r: getattr(LF, fn)(a, b, reduction=r, **kwargs)), (x, y)

    return build


def _bce(gen):
    x, y = 0.1 + 0.8 * _rand(gen, 2, 3), _rand(gen, 2, 3)
    w = _rand(gen, 3) + 0.5
    return (lambda a, b, r: LF.binary_cross_entropy(a, b, weight=w, reduction=r)), (x, y)


def _bce_logits(gen):
    x, y = 2 * _randn(gen, 2, 3), _rand(gen, 2, 3)
    w, pw = _rand(gen, 3) + 0.5, 3 * _rand(gen, 3)
    return (lambda a, b, r: LF.binary_cross_entropy_with_logits(
        a, b, weight=w, pos_weight=pw, reduction=r)), (x, y)


def _ce_indices(shape, **options):
    def build(gen):
        kwargs = dict(options)
        num_classes = shape[1] if len(shape) > 1 else shape[0]
        x = _randn(gen, *shape)
        target_shape = (shape[0], *shape[2:]) if len(shape) > 1 else ()
        y = torch.randint(0, num_classes, target_shape, generator=gen)
        if "ignore_index" in kwargs and y.dim():
            y.view(-1)[0] = kwargs["ignore_index"]
        if kwargs.get("weight") == "random":
            kwargs["weight"] = _rand(gen, num_classes) + 0.2
        return (lambda a, r: LF.cross_entropy(a, y, reduction=r, **kwargs)), (x,)

    return build


def _ce_probs(shape, **options):
    def build(gen):
        kwargs = dict(options)
        x = _randn(gen, *shape)
        q = torch.softmax(_randn(gen, *shape), dim=1 if len(shape) > 1 else 0)
        if kwargs.get("weight") == "random":
            kwargs["weight"] = _rand(gen, shape[1] if len(shape) > 1 else shape[0]) + 0.2
        return (lambda a, b, r: LF.cross_entropy(a, b, reduction=r, **kwargs)), (x, q)

    return build


def _nll(gen):
    x = torch.log_softmax(_randn(gen, 4, 3), dim=1)
    y = torch.tensor([0, 2, -1, 1])
    w = _rand(gen, 3) + 0.2
    return (lambda a, r: LF.nll_loss(a, y, weight=w, ignore_index=-1, reduction=r)), (x,)


def _kl(log_target):
    def build(gen):
        x = torch.log_softmax(_randn(gen, 2, 4), dim=1)
        q = torch.softmax(_randn(gen, 2, 4), dim=1)
        y = q.log() if log_target else q
        return (lambda a, b, r: LF.kl_div(
            a, b, reduction="batchmean" if r == "mean" else r, log_target=log_target)), (x, y)

    return build


def _focal_binary(alpha, gamma):
    def build(gen):
        x, y = 2 * _randn(gen, 2, 3), (_rand(gen, 2, 3) > 0.5).double()
        return (lambda a, r: LF.focal_loss(a, y, alpha=alpha, gamma=gamma, reduction=r)), (x,)

    return build


def _focal_multiclass(alpha, gamma, shape=(4, 3)):
    def build(gen):
        num_classes = shape[1]
        x = _randn(gen, *shape)
        y = torch.randint(0, num_classes, (shape[0], *shape[2:]), generator=gen)
        y.view(-1)[0] = -100
        a = _rand(gen, num_classes) + 0.1 if alpha == "tensor" else alpha
        return (lambda t, r: LF.focal_loss(t, y, alpha=a, gamma=gamma, reduction=r)), (x,)

    return build


def _dice(smooth, ignore_index=None):
    def build(gen):
        x = _randn(gen, 2, 3, 2, 2)
        y = torch.randint(0, 3, (2, 2, 2), generator=gen)
        if ignore_index is not None:
            y[0, 0, 0] = ignore_index
        return (lambda a, r: LF.dice_loss(
            a, y, smooth=smooth, ignore_index=ignore_index, reduction=r)), (x,)

    return build


def _dice_binary(gen):
    x, y = _randn(gen, 2, 2, 3), (_rand(gen, 2, 2, 3) > 0.5).double()
    return (lambda a, r: LF.dice_loss(a, y, reduction=r)), (x,)


def _linear_ce(gen):
    h, w, b = _randn(gen, 5, 3), _randn(gen, 6, 3), _randn(gen, 6)
    y = torch.tensor([0, 5, -100, 2, 3])
    return (lambda hh, ww, bb, r: LF.linear_cross_entropy(hh, ww, y, linear_bias=bb, reduction=r,
                                                          label_smoothing=0.1)), (h, w, b)


CASES = {
    "mse": _regression("mse_loss"),
    "mse-weight": _regression("mse_loss", weighted=True),
    "l1": _regression("l1_loss"),
    "huber-delta0.5": _regression("huber_loss", kinks=(0.0, 0.5), delta=0.5),
    "huber-weight": _regression("huber_loss", kinks=(0.0, 1.0), weighted=True),
    "smooth_l1-beta0.5": _regression("smooth_l1_loss", kinks=(0.0, 0.5), beta=0.5),
    "smooth_l1-beta0": _regression("smooth_l1_loss", beta=0.0),
    "bce-weight": _bce,
    "bce_logits-weight-pos_weight": _bce_logits,
    "ce-(C,)": _ce_indices((4,)),
    "ce-(N,C)-weight-ignore-ls": _ce_indices((4, 3), weight="random", ignore_index=-1,
                                             label_smoothing=0.2),
    "ce-(N,C,d)-weight-ignore-ls": _ce_indices((2, 3, 2), weight="random", ignore_index=2,
                                               label_smoothing=0.1),
    "ce-z_loss-softcap": _ce_indices((4, 3), lse_square_scale=1e-2, softcap=3.0),
    "ce-probs-weight-ls": _ce_probs((3, 4), weight="random", label_smoothing=0.2),
    "ce-probs-(N,C,d)": _ce_probs((2, 3, 2)),
    "nll-weight-ignore": _nll,
    "kl": _kl(False),
    "kl-log_target": _kl(True),
    "focal-binary": _focal_binary(None, 2.0),
    "focal-binary-alpha-gamma0.5": _focal_binary(0.25, 0.5),
    "focal-binary-gamma0": _focal_binary(0.25, 0.0),
    "focal-multiclass": _focal_multiclass(None, 2.0),
    "focal-multiclass-alpha-tensor": _focal_multiclass("tensor", 1.5),
    "focal-multiclass-alpha-float-(N,C,d)": _focal_multiclass(0.5, 2.0, shape=(2, 3, 2)),
    "dice": _dice(1.0),
    "dice-smooth0-ignore": _dice(0.0, ignore_index=255),
    "dice-binary": _dice_binary,
    "linear_cross_entropy": _linear_ce,
}


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("name", list(CASES))
def test_gradcheck(name, reduction, gen):
    fn, tensors = CASES[name](gen)
    leaves = tuple(_leaf(t) for t in tensors)
    assert gradcheck(lambda *ts: fn(*ts, reduction), leaves, eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("gamma", [0.01, 0.5, 0.9])
def test_focal_fractional_gamma_gives_finite_gradient_when_p_t_rounds_to_1(gamma):
    """0 < gamma < 1: d/du u**gamma is inf at u = 1 - p_t = 0, which float32 reaches for a
    confidently correct example (logit 30). The gradient there is 0, and the rest of the batch
    keeps its own: compare with the float64 oracle, where p_t does not round to 1."""
    multi = (torch.tensor([[30.0, 0.0, 0.0], [0.5, 1.0, -1.0]]), torch.tensor([0, 2]),
             oracle.focal_multiclass)
    binary = (torch.tensor([30.0, -30.0, 0.7, -0.3]), torch.tensor([1.0, 0.0, 1.0, 0.0]),
              oracle.focal_binary)
    for x, y, reference in (multi, binary):
        x32 = x.clone().requires_grad_()
        (grad,) = torch.autograd.grad(LF.focal_loss(x32, y, gamma=gamma), x32)
        x64 = x.double().requires_grad_()
        (ref,) = torch.autograd.grad(reference(x64, oracle.to64(y), gamma=gamma), x64)
        assert torch.isfinite(grad).all(), grad
        torch.testing.assert_close(grad.double(), ref, rtol=1e-5, atol=1e-6)
        assert grad[0].abs().max() < 1e-6  # the saturated example: flat loss, zero gradient
