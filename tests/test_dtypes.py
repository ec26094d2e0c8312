"""Low-precision inputs: float16 / bfloat16 (and float32) against the float64 oracle.

The oracle runs on the very same low-precision values cast up to float64, so the tolerance measures
only the error of computing in low precision, plus the final rounding to the input dtype. The
output dtype must follow the input, as in torch. Logits of magnitude 1e4 must give finite losses.
"""

from __future__ import annotations

import oracle
import pytest
import torch

import losskit.functional as LF

# Per dtype: (rtol, atol) for values and gradients. The output is rounded to the input dtype, whose
# unit roundoff is 2**-24 (f32), 2**-11 (f16) and 2**-8 (bf16); a mean or sum is accumulated in
# float32 inside, so a few roundoffs of headroom suffice.
TOLERANCE = {
    torch.float32: (1e-5, 1e-6),
    torch.float16: (4e-3, 2e-3),
    torch.bfloat16: (3e-2, 1.6e-2),
}
DTYPES = list(TOLERANCE)


def _randn(gen, *shape):
    return torch.randn(shape, generator=gen, dtype=torch.float64)


def _rand(gen, *shape):
    return torch.rand(shape, generator=gen, dtype=torch.float64)


def _idx(gen, c, *shape):
    return torch.randint(0, c, shape, generator=gen)


# case id -> gen -> (losskit call, oracle call, input, target, names of float tensors to cast)
def _cases():
    def pointwise(fn, **kw):
        def build(gen):
            x, y = 2 * _randn(gen, 3, 7), _randn(gen, 3, 7)
            return (lambda a, b, r: getattr(LF, fn)(a, b, reduction=r, **kw),
                    lambda a, b, r: getattr(oracle, fn)(a, b, reduction=r, **kw), x, y)
        return build

    def bce(gen):
        x, y = torch.sigmoid(2 * _randn(gen, 3, 7)), _rand(gen, 3, 7)
        return (lambda a, b, r: LF.binary_cross_entropy(a, b, reduction=r),
                lambda a, b, r: oracle.binary_cross_entropy(a, b, reduction=r), x, y)

    def bce_logits(gen):
        x, y, pw = 3 * _randn(gen, 3, 7), _rand(gen, 3, 7), 3 * _rand(gen, 7)
        return (lambda a, b, r: LF.binary_cross_entropy_with_logits(
                    a, b, reduction=r, pos_weight=pw.to(a.dtype)),
                lambda a, b, r: oracle.binary_cross_entropy_with_logits(
                    a, b, reduction=r, pos_weight=pw.to(a.dtype)), x, y)

    def ce(gen):
        x, y, w = 3 * _randn(gen, 2, 5, 4, 3), _idx(gen, 5, 2, 4, 3), _rand(gen, 5) + 0.2
        y[0, 0] = -100
        kw = {"label_smoothing": 0.1}
        return (lambda a, b, r: LF.cross_entropy(a, b, weight=w.to(a.dtype), reduction=r, **kw),
                lambda a, b, r: oracle.cross_entropy(a, b, weight=w.to(a.dtype), reduction=r,
                                                     **kw), x, y)

    def ce_wide(gen):  # many classes: the row reductions are long
        x, y = 3 * _randn(gen, 6, 1000), _idx(gen, 1000, 6)
        return (lambda a, b, r: LF.cross_entropy(a, b, reduction=r),
                lambda a, b, r: oracle.cross_entropy(a, b, reduction=r), x, y)

    def ce_probs(gen):
        x, q = 3 * _randn(gen, 3, 7), torch.softmax(_randn(gen, 3, 7), 1)
        return (lambda a, b, r: LF.cross_entropy(a, b, reduction=r),
                lambda a, b, r: oracle.cross_entropy(a, b, reduction=r), x, q)

    def nll(gen):
        x, y = torch.log_softmax(2 * _randn(gen, 3, 7), 1), _idx(gen, 7, 3)
        return (lambda a, b, r: LF.nll_loss(a, b, reduction=r),
                lambda a, b, r: oracle.nll_loss(a, b, reduction=r), x, y)

    def kl(gen):
        x, q = torch.log_softmax(_randn(gen, 3, 7), 1), torch.softmax(_randn(gen, 3, 7), 1)
        r_ = {"mean": "batchmean"}
        return (lambda a, b, r: LF.kl_div(a, b, reduction=r_.get(r, r)),
                lambda a, b, r: oracle.kl_div(a, b, reduction=r_.get(r, r)), x, q)

    def focal_binary(gen):
        x, y = 3 * _randn(gen, 3, 7), (_rand(gen, 3, 7) > 0.5).double()
        return (lambda a, b, r: LF.focal_loss(a, b, alpha=0.25, reduction=r),
                lambda a, b, r: oracle.focal_binary(a, b, alpha=0.25, reduction=r), x, y)

    def focal_multi(gen):
        x, y = 3 * _randn(gen, 4, 5), _idx(gen, 5, 4)
        return (lambda a, b, r: LF.focal_loss(a, b, reduction=r),
                lambda a, b, r: oracle.focal_multiclass(a, b, reduction=r), x, y)

    def dice(gen):
        x, y = 2 * _randn(gen, 2, 3, 4, 4), _idx(gen, 3, 2, 4, 4)
        return (lambda a, b, r: LF.dice_loss(a, b, reduction=r),
                lambda a, b, r: oracle.dice(a, b, reduction=r), x, y)

    return {
        "mse": pointwise("mse_loss"),
        "l1": pointwise("l1_loss"),
        "huber": pointwise("huber_loss", delta=0.7),
        "smooth_l1": pointwise("smooth_l1_loss", beta=0.7),
        "bce": bce,
        "bce_logits": bce_logits,
        "cross_entropy": ce,
        "cross_entropy-1000-classes": ce_wide,
        "cross_entropy-probs": ce_probs,
        "nll": nll,
        "kl_div": kl,
        "focal-binary": focal_binary,
        "focal-multiclass": focal_multi,
        "dice": dice,
    }


CASES = _cases()


def _value_and_grad(fn, x, y, reduction):
    x = x.detach().clone().requires_grad_()
    out = fn(x, y, reduction)
    upstream = torch.ones_like(out) if out.dim() == 0 else torch.linspace(
        -1, 1, out.numel(), dtype=out.dtype).reshape(out.shape)
    (grad,) = torch.autograd.grad(out, x, upstream)
    return out.detach(), grad


@pytest.mark.parametrize("reduction", ["none", "mean"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", list(CASES))
def test_low_precision_close_to_float64_oracle(name, dtype, reduction, gen):
    lk_fn, ref_fn, x64, y64 = CASES[name](gen)
    x = x64.to(dtype)
    y = y64.to(dtype) if y64.is_floating_point() else y64
    out, grad = _value_and_grad(lk_fn, x, y, reduction)
    assert out.dtype == dtype and grad.dtype == dtype
    ref, ref_grad = _value_and_grad(ref_fn, x.double(), oracle.to64(y), reduction)
    rtol, atol = TOLERANCE[dtype]
    torch.testing.assert_close(out.double(), ref, rtol=rtol, atol=atol)
    scale = ref_grad.abs().max().clamp_min(1e-3)  # gradients of a mean are small: relative to max
    torch.testing.assert_close(grad.double() / scale, ref_grad / scale, rtol=rtol, atol=atol)


HUGE = {
    "cross_entropy": lambda x, gen: (x, _idx(gen, x.shape[1], x.shape[0])),
    "cross_entropy-smoothing": lambda x, gen: (x, _idx(gen, x.shape[1], x.shape[0])),
    "bce_logits": lambda x, gen: (x, (_rand(gen, *x.shape) > 0.5).to(x.dtype)),
    "focal-binary": lambda x, gen: (x, (_rand(gen, *x.shape) > 0.5).to(x.dtype)),
    "focal-multiclass": lambda x, gen: (x, _idx(gen, x.shape[1], x.shape[0])),
}
HUGE_CALLS = {
    "cross_entropy": (LF.cross_entropy, oracle.cross_entropy, {}),
    "cross_entropy-smoothing": (LF.cross_entropy, oracle.cross_entropy, {"label_smoothing": 0.1}),
    "bce_logits": (LF.binary_cross_entropy_with_logits, oracle.binary_cross_entropy_with_logits,
                   {}),
    "focal-binary": (LF.focal_loss, oracle.focal_binary, {}),
    "focal-multiclass": (LF.focal_loss, oracle.focal_multiclass, {}),
}


@pytest.mark.parametrize("dtype", [torch.float32, *DTYPES[1:], torch.float64], ids=str)
@pytest.mark.parametrize("name", list(HUGE))
def test_logits_of_magnitude_1e4_give_finite_losses(name, dtype, gen):
    sign = torch.where(_rand(gen, 4, 6) > 0.5, 1.0, -1.0)
    x = (1e4 * sign * (1 + _rand(gen, 4, 6))).to(dtype)  # |x| in [1e4, 2e4]
    x, y = HUGE[name](x, gen)
    fn, ref_fn, kw = HUGE_CALLS[name]
    x = x.requires_grad_()
    out = fn(x, y, reduction="none", **kw)
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert torch.isfinite(out).all() and torch.isfinite(grad).all()
    ref = ref_fn(x.detach().double(), oracle.to64(y), reduction="none", **kw)
    rtol, atol = TOLERANCE.get(dtype, (1e-7, 1e-7))
    torch.testing.assert_close(out.double(), ref, rtol=rtol, atol=atol)


@pytest.mark.parametrize("binary", [False, True], ids=["multiclass", "binary"])
@pytest.mark.parametrize("dtype", DTYPES[1:], ids=str)
def test_dice_sums_over_large_images_do_not_overflow(dtype, binary, gen):
    """The per-class sums of a 256 x 512 image exceed float16's 65504: dice computes in float32
    and returns the input dtype, like focal and cross-entropy."""
    x64 = _randn(gen, 1, 2, 256, 512)
    y = (_rand(gen, 1, 2, 256, 512) > 0.5).double() if binary else _idx(gen, 2, 1, 256, 512)
    x = x64.to(dtype)
    out = LF.dice_loss(x, y.to(dtype) if binary else y)
    assert out.dtype == dtype and torch.isfinite(out)
    ref = (oracle.dice_binary if binary else oracle.dice)(x.double(), y)
    rtol, atol = TOLERANCE[dtype]
    torch.testing.assert_close(out.double(), ref, rtol=rtol, atol=atol)


MIXED = [  # torch's (inconsistent) promotion rules; losskit must follow them exactly
    ("mse_loss", torch.float32, torch.float64),
    ("mse_loss", torch.float32, torch.int64),
    ("mse_loss", torch.int64, torch.int64),
    ("l1_loss", torch.float16, torch.float32),
    ("huber_loss", torch.float32, torch.float64),
    ("smooth_l1_loss", torch.float32, torch.int64),
    ("kl_div", torch.float32, torch.float64),
    ("binary_cross_entropy_with_logits", torch.float32, torch.float64),
    ("binary_cross_entropy", torch.float32, torch.float64),
    ("binary_cross_entropy", torch.float64, torch.float32),
]


@pytest.mark.parametrize(("fn", "input_dtype", "target_dtype"), MIXED, ids=str)
def test_mixed_dtypes_follow_torch(fn, input_dtype, target_dtype, gen):
    x, y = _rand(gen, 3, 4), (_rand(gen, 3, 4) > 0.5).double()
    if fn == "kl_div":
        x = torch.log_softmax(x, 1)
    x, y = x.to(input_dtype), y.to(target_dtype)
    try:
        ref = getattr(torch.nn.functional, fn)(x, y, reduction="sum")
    except Exception as error:  # torch refuses: losskit raises the same class
        with pytest.raises(type(error)):
            getattr(LF, fn)(x, y, reduction="sum")
        return
    out = getattr(LF, fn)(x, y, reduction="sum")
    assert out.dtype == ref.dtype
    torch.testing.assert_close(out, ref)
