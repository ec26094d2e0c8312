"""Losses inside ``torch.autocast``: torch runs them in float32, and so must losskit.

Oracle: the same torch.nn.functional loss under the same autocast (float32 result), and float64
torch on the bf16-rounded inputs for the values. Covers the paths losskit computes itself (the
cross-entropy kernels, focal, linear+CE) and the class-weight checks, which must accept float32
weights next to bf16 activations as torch does.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import losskit.functional as LF
from losskit import LossRuntimeError
from losskit.kernels import MIN_FUSED_ELEMENTS

BF16 = torch.bfloat16
SIZES = {"reference": (16, 10), "fused": (64, MIN_FUSED_ELEMENTS // 64)}


def amp():
    return torch.autocast("cpu", dtype=BF16)


@pytest.mark.parametrize("path", SIZES)
@pytest.mark.parametrize("weighted", [False, True])
def test_cross_entropy_under_autocast_is_float32_like_torch(gen, path, weighted):
    n, c = SIZES[path]
    x = (torch.randn(n, c, generator=gen) * 3).to(BF16)
    y = torch.randint(0, c, (n,), generator=gen)
    y[::3] = -100
    w = torch.rand(c, generator=gen) + 0.5 if weighted else None  # float32, as a buffer would be
    xa, xt = x.clone().requires_grad_(), x.clone().requires_grad_()
    with amp():
        got = LF.cross_entropy(xa, y, weight=w, label_smoothing=0.1)
        want = F.cross_entropy(xt, y, weight=w, label_smoothing=0.1)
    assert got.dtype == want.dtype == torch.float32
    ref = F.cross_entropy(x.double(), y, weight=None if w is None else w.double(),
                          label_smoothing=0.1)
    torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-6)
    got.backward()
    want.backward()
    assert xa.grad.dtype == xt.grad.dtype == BF16
    torch.testing.assert_close(xa.grad.float(), xt.grad.float(), rtol=1.6e-2, atol=1e-3 / n)


def test_nll_and_focal_accept_float32_class_weights_under_autocast(gen):
    x = torch.randn(8, 3, generator=gen).to(BF16)
    y = torch.randint(0, 3, (8,), generator=gen)
    w = torch.rand(3, generator=gen) + 0.5
    logp = x.float().log_softmax(1).to(BF16)
    with amp():
        nll = LF.nll_loss(logp, y, weight=w)
        want = F.nll_loss(logp, y, weight=w)
        focal = LF.focal_loss(x, y, alpha=w, gamma=0.0)  # gamma 0: weighted CE, summed / count
    assert nll.dtype == want.dtype == torch.float32
    torch.testing.assert_close(nll, want)
    assert focal.dtype == torch.float32
    ce = F.cross_entropy(x.double(), y, weight=w.double(), reduction="sum") / len(y)
    torch.testing.assert_close(focal.double(), ce, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("path", SIZES)
def test_linear_cross_entropy_under_autocast_matmul_in_bf16_loss_in_float32(gen, path):
    n, v = SIZES[path]
    h = torch.randn(n, 32, generator=gen).requires_grad_()  # float32 activations and head
    w = (torch.randn(v, 32, generator=gen) * 0.3).requires_grad_()
    y = torch.randint(0, v, (n,), generator=gen)
    with amp():
        got = LF.linear_cross_entropy(h, w, y)
    assert got.dtype == torch.float32
    logits = h.detach().to(BF16) @ w.detach().to(BF16).T  # the bf16 matmul autocast runs
    ref = F.cross_entropy(logits.double(), y)
    torch.testing.assert_close(got.double(), ref, rtol=1e-4, atol=1e-5)
    got.backward()
    assert h.grad.dtype == w.grad.dtype == torch.float32  # cast back like autocast's linear
    # Values: float64 autograd through the same bf16-rounded operands. dh = G @ W runs in bf16
    # (as autocast's linear backward does), so allow bf16 rounding of the largest entry.
    h64 = h.detach().to(BF16).double().requires_grad_()
    F.cross_entropy(h64 @ w.detach().to(BF16).double().T, y).backward()
    torch.testing.assert_close(h.grad.double(), h64.grad, rtol=2e-2,
                               atol=1e-2 * h64.grad.abs().max().item())
    h2, w2 = h.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    with amp():
        F.cross_entropy(F.linear(h2, w2), y).backward()
    torch.testing.assert_close(w.grad, w2.grad, rtol=2e-2, atol=2e-2 * w2.grad.abs().max())


def test_linear_cross_entropy_dtype_mismatch_outside_autocast_names_the_fix():
    with pytest.raises(LossRuntimeError, match=r"`input` has dtype torch.bfloat16.*Fix:"):
        LF.linear_cross_entropy(torch.randn(4, 8).to(BF16), torch.randn(10, 8),
                                torch.randint(0, 10, (4,)))


def test_class_weight_check_under_autocast_ignores_the_default_dtype(gen):
    x = torch.randn(8, 3, generator=gen).to(BF16)
    y = torch.randint(0, 3, (8,), generator=gen)
    w = torch.rand(3, generator=gen) + 0.5
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        with amp():
            got = LF.cross_entropy(x, y, weight=w)
    finally:
        torch.set_default_dtype(previous)
    ref = F.cross_entropy(x.double(), y, weight=w.double())
    torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("path", SIZES)
def test_linear_cross_entropy_of_bf16_operands_under_autocast_is_float32(gen, path):
    """Operands already bf16 (a bf16 model): autocast still gives a float32 loss, as torch's
    own cross-entropy does there, and its value is the float64 loss of the same bf16 logits."""
    n, v = SIZES[path]
    h = torch.randn(n, 32, generator=gen).to(BF16)
    w = (torch.randn(v, 32, generator=gen) * 0.3).to(BF16)
    y = torch.randint(0, v, (n,), generator=gen)
    with amp():
        got = LF.linear_cross_entropy(h, w, y)
        torch_dtype = F.cross_entropy(h @ w.T, y).dtype
    assert got.dtype == torch_dtype == torch.float32
    ref = F.cross_entropy((h @ w.T).double(), y)  # the bf16 logits, float64 loss
    torch.testing.assert_close(got.double(), ref, rtol=1e-4, atol=1e-5)
