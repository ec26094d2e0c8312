"""What the fused paths do beyond a plain first-order backward, through the public functions.

Second derivatives and a second backward are refused with a message naming ``fused(False)``, whose
reference path then matches torch's float64 second derivative; ``torch.func`` transforms take the
reference path; ``inplace=True`` never overwrites a leaf, a view of one, or a strided view; an
inf upstream gradient at an ignored row gives a finite gradient. Oracle: torch.nn.functional in
float64.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import losskit.functional as LF
from losskit import LossRuntimeError
from losskit.kernels import MIN_FUSED_ELEMENTS, fused

N, C = 64, 2048  # 2**17 logits: the fused path
assert N * C >= MIN_FUSED_ELEMENTS


@pytest.fixture
def case(gen):
    x = torch.randn(N, C, generator=gen) * 2
    y = torch.randint(0, C, (N,), generator=gen)
    y[::5] = -100
    return x, y


def penalty_grads(ce, x, y, mix):
    """d/d(mix) of |d CE(x @ mix, y) / dx|^2, an input-gradient penalty (second order)."""
    x = x.clone().requires_grad_()
    (g,) = torch.autograd.grad(ce(x @ mix, y), x, create_graph=True)
    (dmix,) = torch.autograd.grad(g.square().sum(), mix)
    return dmix


def test_second_derivative_is_refused_then_exact_with_fused_false(case, gen):
    x, y = case
    mix = (torch.eye(C) + 0.01 * torch.randn(C, C, generator=gen)).requires_grad_()
    with pytest.raises(LossRuntimeError, match=r"create_graph=True.*fused\(False\)"):
        penalty_grads(LF.cross_entropy, x, y, mix)
    with fused(False):
        got = penalty_grads(LF.cross_entropy, x, y, mix)
    mix64 = mix.detach().double().requires_grad_()
    want = penalty_grads(F.cross_entropy, x.double(), y, mix64)
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4 * want.abs().max())


def test_linear_cross_entropy_second_derivative_refused(gen):
    h = torch.randn(N, 32, generator=gen, requires_grad=True)
    w = torch.randn(C, 32, generator=gen, requires_grad=True)
    y = torch.randint(0, C, (N,), generator=gen)
    with pytest.raises(LossRuntimeError, match=r"fused\(False\)"):
        torch.autograd.grad(LF.linear_cross_entropy(h, w, y), h, create_graph=True)
    with fused(False):
        (g,) = torch.autograd.grad(LF.linear_cross_entropy(h, w, y), h, create_graph=True)
    g.square().sum().backward()  # second order through the reference path
    assert w.grad is not None and w.grad.isfinite().all()


@pytest.mark.parametrize("fn", ["cross_entropy", "linear_cross_entropy"])
def test_second_backward_refused_then_allowed_with_fused_false(gen, fn):
    h = torch.randn(N, 32, generator=gen, requires_grad=True)
    w = torch.randn(C, 32, generator=gen)
    y = torch.randint(0, C, (N,), generator=gen)

    def loss():
        if fn == "cross_entropy":
            return LF.cross_entropy(h @ w.T, y)
        return LF.linear_cross_entropy(h, w, y)

    out = loss()
    out.backward(retain_graph=True)
    with pytest.raises(LossRuntimeError, match=r"second time.*fused\(False\)"):
        out.backward()
    h.grad = None
    with fused(False):
        out = loss()
    out.backward(retain_graph=True)
    out.backward()
    ref_h = h.detach().double().requires_grad_()
    (2 * F.cross_entropy(ref_h @ w.double().T, y)).backward()
    torch.testing.assert_close(h.grad.double(), ref_h.grad, rtol=1e-4, atol=1e-7)


def test_torch_func_grad_and_vmap_take_the_reference_path(case):
    x, y = case
    got = torch.func.grad(lambda z: LF.cross_entropy(z, y))(x)
    ref_x = x.double().requires_grad_()
    F.cross_entropy(ref_x, y).backward()
    torch.testing.assert_close(got.double(), ref_x.grad, rtol=1e-4, atol=1e-8)
    # Per-sample gradients: vmap over rows of grad of the unbatched loss.
    rows = slice(1, 5)  # counted rows only (rows 0 and 5 are ignored)
    per_row = torch.func.vmap(torch.func.grad(lambda r, t: LF.cross_entropy(r, t)))(
        x[rows], y[rows]
    )
    want = torch.softmax(x[rows].double(), 1) - F.one_hot(y[rows], C).double()
    torch.testing.assert_close(per_row.double(), want, rtol=1e-4, atol=1e-7)


def test_inplace_never_overwrites_a_leaf_or_a_view_of_one(case):
    x, y = case
    leaf = x.clone().requires_grad_()
    LF.cross_entropy(leaf.view(N, C), y, inplace=True).backward()
    assert torch.equal(leaf.detach(), x)  # a view shares the leaf's memory
    row = x[1].clone().requires_grad_()  # (C,) unbatched: LF unsqueezes it into a view
    LF.cross_entropy(row, y[1], inplace=True).backward()
    assert torch.equal(row.detach(), x[1])
    ref = x.double().requires_grad_()
    F.cross_entropy(ref, y).backward()
    torch.testing.assert_close(leaf.grad.double(), ref.grad, rtol=1e-4, atol=1e-8)


@pytest.mark.parametrize("layout", ["padded vocab slice", "transposed"])
def test_inplace_on_strided_logits_is_exact(gen, layout):
    if layout == "padded vocab slice":  # a vocab padded to 2048 and sliced back to 2000
        base = torch.randn(N, C, generator=gen, requires_grad=True)
        make = lambda: (base * 1.0)[:, :2000]  # noqa: E731
    else:
        base = torch.randn(2000, N, generator=gen, requires_grad=True)
        make = lambda: (base * 1.0).t()  # noqa: E731
    y = torch.randint(0, 2000, (N,), generator=gen)
    logits = make()
    loss = LF.cross_entropy(logits, y, inplace=True)
    loss.backward()
    ref_base = base.detach().double().requires_grad_()
    ref_logits = ref_base[:, :2000] if layout == "padded vocab slice" else ref_base.t()
    ref = F.cross_entropy(ref_logits, y)
    ref.backward()
    torch.testing.assert_close(loss.double(), ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(base.grad.double(), ref_base.grad, rtol=1e-4, atol=1e-8)


def test_inf_upstream_gradient_at_ignored_rows_gives_finite_gradient(case, gen):
    x, y = case
    go = torch.ones(N)
    go[y == -100] = float("inf")  # torch's backward never touches ignored rows
    xa = x.clone().requires_grad_()
    LF.cross_entropy(xa, y, reduction="none").backward(go)
    ref = x.double().requires_grad_()
    F.cross_entropy(ref, y, reduction="none").backward(go.double())
    assert xa.grad.isfinite().all()
    torch.testing.assert_close(xa.grad.double(), ref.grad, rtol=1e-4, atol=1e-8)
    h = torch.randn(N, 32, generator=gen, requires_grad=True)
    w = torch.randn(C, 32, generator=gen)
    LF.linear_cross_entropy(h, w, y, reduction="none").backward(go)
    assert h.grad.isfinite().all()
