"""Fused cross-entropy (losskit/kernels/cross_entropy.py) against a float64 oracle.

The oracle is ``torch.nn.functional.cross_entropy`` in float64 on the (softcapped) logits, plus the
z-loss term written from its formula and reduced with torch's weights; gradients come from float64
autograd through it. Chunks are shrunk (``CHUNK_BYTES``) so that every case runs several chunks, the
last one short, and some chunks hold only ignored rows.
"""

from __future__ import annotations

import importlib
import itertools

import pytest
import torch
import torch.nn.functional as F

import losskit.kernels as kernels
from losskit.kernels import reference

fused = importlib.import_module("losskit.kernels.cross_entropy")

# dtype -> (rtol, atol as a fraction of the oracle's largest magnitude). float32: float32 rounding
# over a few hundred classes; low precision: the output (and the stored gradient) is rounded to the
# dtype once, 2**-8 for bfloat16 and 2**-11 for float16, with a little headroom.
TOLERANCE = {
    torch.float32: (2e-5, 2e-6),
    torch.bfloat16: (1.6e-2, 8e-3),
    torch.float16: (2e-3, 1e-3),
}


def ce_oracle(x, y, *, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0,
              lse_square_scale=0.0, softcap=None):
    """Float64 cross-entropy with every option, written from the formulas (not losskit's code).

    CE part: torch's own F.cross_entropy; z-loss: ``z * w[y_i] * logsumexp(x_i) ** 2`` per counted
    row, summed (``"sum"``), or divided by ``sum_i w[y_i]`` (``"mean"``), like the CE part.
    """
    x = x.double()
    w = None if weight is None else weight.double()
    if softcap is not None:
        x = softcap * torch.tanh(x / softcap)
    loss = F.cross_entropy(x, y, weight=w, ignore_index=ignore_index, reduction=reduction,
                           label_smoothing=label_smoothing)
    counted = y != ignore_index
    safe_y = torch.where(counted, y, 0)
    w_y = counted.double() if w is None else w[safe_y] * counted
    z_rows = lse_square_scale * w_y * torch.logsumexp(x, dim=1) ** 2
    if reduction == "none":
        return loss + z_rows
    if reduction == "sum":
        return loss + z_rows.sum()
    return loss + z_rows.sum() / w_y.sum()


def assert_close(actual, expected, dtype):
    rtol, atol = TOLERANCE[dtype]
    scale = expected.abs().max().item()
    torch.testing.assert_close(actual.double(), expected, rtol=rtol, atol=atol * max(scale, 1e-3))


def make_case(gen, n=129, c=97, ignored=True):
    """Logits with a spread of magnitudes, targets with ignored rows (a whole chunk of them)."""
    x = torch.randn(n, c, generator=gen) * 3
    y = torch.randint(0, c, (n,), generator=gen)
    if ignored:
        y[10:40] = -100  # rows 16..31 (the second chunk at 16 rows per chunk) are all ignored
        y[::7] = -100
    return x, y


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    """16 rows of 97 classes per chunk: 129 rows make 9 chunks, the last one with a single row."""
    monkeypatch.setattr(fused, "CHUNK_BYTES", 16 * 97 * 4)


def run_both(x0, y, dtype, *, inplace=False, grad_out=None, **opts):
    """(fused loss, fused grad, oracle loss, oracle grad) for the same inputs and upstream grad."""
    x0 = x0.to(dtype)
    leaf = x0.clone().requires_grad_()
    logits = leaf * 1 if inplace else leaf  # in-place needs a non-leaf (a leaf would be clobbered)
    if opts.get("weight") is not None:
        opts["weight"] = opts["weight"].to(dtype)
    loss = fused.cross_entropy(logits, y, inplace=inplace, **opts)
    ref_x = x0.double().requires_grad_()
    ref = ce_oracle(ref_x, y, **opts)
    go = torch.randn(ref.shape, dtype=torch.float64) if grad_out is None else grad_out
    (loss * go.to(dtype)).sum().backward()
    (ref * go).sum().backward()
    return loss, leaf.grad, ref, ref_x.grad


OPTIONS = list(itertools.product(
    ["none", "mean", "sum"],  # reduction
    [0.0, 0.2],  # label_smoothing
    [False, True],  # class weight
    [0.0, 1e-2],  # lse_square_scale
    [None, 4.0],  # softcap
    [False, True],  # inplace
))


# Every combination in float32; bfloat16 on the combinations with every extra on or every one off.
CASES = [(torch.float32, *o) for o in OPTIONS] + [
    (torch.bfloat16, *o) for o in OPTIONS if len({o[1] > 0, o[2], o[3] > 0, o[4] is not None}) == 1
]


@pytest.mark.parametrize(
    ("dtype", "reduction", "eps", "weighted", "z", "softcap", "inplace"), CASES
)
def test_fused_matches_oracle(gen, dtype, reduction, eps, weighted, z, softcap, inplace):
    x, y = make_case(gen)
    w = torch.rand(x.shape[1], generator=gen) + 0.2 if weighted else None
    loss, grad, ref, ref_grad = run_both(
        x, y, dtype, inplace=inplace, weight=w, reduction=reduction, label_smoothing=eps,
        lse_square_scale=z, softcap=softcap,
    )
    assert loss.dtype == dtype and loss.shape == ref.shape
    assert_close(loss, ref, dtype)
    assert_close(grad, ref_grad, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_sequence_shape_flattened(gen, dtype):
    """(3, 423, 300) logits flattened to (1269, 300): 1269 is odd, the chunk is 64 rows."""
    fused.CHUNK_BYTES = 64 * 300 * 4  # restored by the autouse fixture
    x = torch.randn(3, 423, 300, generator=gen).reshape(-1, 300)  # (B*T, V)
    y = torch.randint(0, 300, (3 * 423,), generator=gen)
    y[:100] = -100
    one = torch.tensor(1.0, dtype=torch.float64)  # loss.backward()'s upstream gradient
    loss, grad, ref, ref_grad = run_both(x, y, dtype, grad_out=one, label_smoothing=0.1)
    assert_close(loss, ref, dtype)
    assert_close(grad, ref_grad, dtype)


def test_lse_is_returned_detached_and_zero_at_ignored_rows(gen):
    x, y = make_case(gen)
    x.requires_grad_()
    _, lse = fused.cross_entropy(x, y, softcap=4.0, return_lse=True)
    expected = torch.logsumexp(4.0 * torch.tanh(x.double() / 4.0), dim=1) * (y != -100)
    assert lse.dtype == torch.float32 and not lse.requires_grad
    torch.testing.assert_close(lse.double(), expected.detach(), rtol=1e-6, atol=1e-5)


def test_inplace_overwrites_logits_with_their_gradient(gen):
    x, y = make_case(gen)
    leaf = x.clone().requires_grad_()
    logits = leaf * 1  # (N, C) intermediate, as the output of an lm head would be
    loss = fused.cross_entropy(logits, y, inplace=True, reduction="sum")
    ref_x = x.double().requires_grad_()
    F.cross_entropy(ref_x, y, reduction="sum").backward()
    torch.testing.assert_close(logits.detach().double(), ref_x.grad, rtol=1e-5, atol=1e-6)
    loss.backward()
    torch.testing.assert_close(leaf.grad.double(), ref_x.grad, rtol=1e-5, atol=1e-6)


def test_inplace_spares_leaves_and_is_caught_when_logits_are_saved(gen):
    x, y = make_case(gen)
    leaf = x.clone().requires_grad_()
    fused.cross_entropy(leaf, y, inplace=True).backward()
    assert torch.equal(leaf.detach(), x)  # a leaf is never overwritten
    z = x.clone().requires_grad_()
    logits = torch.exp(z / 10)  # exp saves its output for backward: overwriting it must not pass
    loss = fused.cross_entropy(logits, y, inplace=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_out_of_place_leaves_logits_untouched(gen):
    x, y = make_case(gen)
    leaf = x.clone().requires_grad_()
    fused.cross_entropy(leaf, y, label_smoothing=0.3, softcap=2.0).backward()
    assert torch.equal(leaf.detach(), x)


def test_every_target_ignored_gives_zero_loss_and_zero_gradient(gen):
    x, _ = make_case(gen)
    y = torch.full((x.shape[0],), -100)
    for reduction in ("mean", "sum"):
        leaf = x.clone().requires_grad_()
        loss = fused.cross_entropy(leaf, y, reduction=reduction, label_smoothing=0.1,
                                   lse_square_scale=1e-2)
        loss.backward()
        assert loss.item() == 0.0
        assert torch.count_nonzero(leaf.grad) == 0


def test_uint8_target_noncontiguous_logits_and_no_grad(gen):
    x, y = make_case(gen, n=50, c=40, ignored=False)
    xt = x.T.contiguous().T  # same values, column-major strides
    assert not xt.is_contiguous()
    with torch.no_grad():
        loss = fused.cross_entropy(xt, y.to(torch.uint8), reduction="none", inplace=True)
    assert torch.equal(xt, x)  # no gradient wanted: nothing overwritten
    assert_close(loss, F.cross_entropy(x.double(), y, reduction="none"), torch.float32)


def test_backward_twice_raises(gen):
    x, y = make_case(gen)
    loss = fused.cross_entropy(x.clone().requires_grad_(), y)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match=r"second time.*fused\(False\)"):
        loss.backward()


def _backend_of(logits, **kwargs):
    out = kernels.cross_entropy(logits, torch.zeros(logits.shape[0], dtype=torch.long), **kwargs)
    return type(out.grad_fn).__name__


def test_dispatch_picks_fused_or_reference():
    big = torch.zeros(64, 2048, requires_grad=True)  # 2**17 logits >= MIN_FUSED_ELEMENTS
    tiny = torch.zeros(4, 8, requires_grad=True)
    assert _backend_of(big) == "FusedCrossEntropyBackward"
    assert _backend_of(tiny) != "FusedCrossEntropyBackward"
    assert _backend_of(tiny * 1, inplace=True) == "FusedCrossEntropyBackward"
    assert _backend_of(big.double()) != "FusedCrossEntropyBackward"
    w = torch.ones(2048, requires_grad=True)
    assert _backend_of(big, weight=w) != "FusedCrossEntropyBackward"


def test_reference_path_passes_gradcheck(gen):
    """The float64 fallback supports gradcheck (finite differences) with every option on."""
    x = torch.randn(6, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 4, -100, 2, 2, 1])
    w = torch.rand(5, generator=gen, dtype=torch.float64) + 0.5
    for reduction in ("none", "mean", "sum"):
        fn = lambda a, r=reduction: kernels.cross_entropy(  # noqa: E731
            a, y, weight=w, reduction=r, label_smoothing=0.2, lse_square_scale=0.1, softcap=3.0)
        assert torch.autograd.gradcheck(fn, (x,))
        assert torch.autograd.gradgradcheck(fn, (x,))


def test_reference_matches_oracle(gen):
    """The fallback path itself, on the options the fused path is tested with."""
    x, y = make_case(gen)
    w = torch.rand(x.shape[1], generator=gen, dtype=torch.float64) + 0.2
    for reduction in ("none", "mean", "sum"):
        opts = dict(weight=w, reduction=reduction, label_smoothing=0.3, lse_square_scale=0.05,
                    softcap=5.0)
        torch.testing.assert_close(reference.cross_entropy(x.double(), y, **opts),
                                   ce_oracle(x, y, **opts))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_huge_page_gradient_buffer_matches_oracle_and_accumulates(gen, monkeypatch, dtype):
    """Every gradient buffer goes through the mmap path; two backwards accumulate into .grad."""
    memory = importlib.import_module("losskit.kernels.memory")
    monkeypatch.setattr(memory, "HUGEPAGE_MIN_BYTES", 0)
    x, y = make_case(gen)
    loss, grad, ref, ref_grad = run_both(x, y, dtype, label_smoothing=0.1, reduction="sum")
    assert_close(loss, ref, dtype)
    assert_close(grad, ref_grad, dtype)
    leaf = x.to(dtype).clone().requires_grad_()
    for _ in range(2):
        fused.cross_entropy(leaf, y, reduction="sum").backward()
    ref_x = x.double().requires_grad_()
    F.cross_entropy(ref_x, y, reduction="sum").backward()
    assert_close(leaf.grad, 2 * ref_x.grad, dtype)


def test_huge_page_buffer_is_plain_tensor(monkeypatch):
    memory = importlib.import_module("losskit.kernels.memory")
    monkeypatch.setattr(memory, "HUGEPAGE_MIN_BYTES", 0)
    buf = memory.empty((3, 5), dtype=torch.float16, device=torch.device("cpu"))
    assert buf.shape == (3, 5) and buf.dtype == torch.float16 and buf.is_contiguous()
    buf.fill_(2.0)
    torch.testing.assert_close(buf * 3, torch.full((3, 5), 6.0, dtype=torch.float16))


@pytest.mark.parametrize("ignore_index", [0, 96, 7])
@pytest.mark.parametrize(("eps", "weighted", "inplace"), [(0.0, False, False), (0.2, True, True)])
def test_custom_ignore_index(gen, ignore_index, eps, weighted, inplace):
    """An ignore_index that is also a valid class (first, last, middle): its rows drop out."""
    x, y = make_case(gen, ignored=False)
    y[::5] = ignore_index
    w = torch.rand(x.shape[1], generator=gen) + 0.2 if weighted else None
    for reduction in ("none", "mean", "sum"):
        loss, grad, ref, ref_grad = run_both(
            x, y, torch.float32, inplace=inplace, weight=w, reduction=reduction,
            label_smoothing=eps, ignore_index=ignore_index,
        )
        assert_close(loss, ref, torch.float32)
        assert_close(grad, ref_grad, torch.float32)


def _graph_names(t):
    """Names of every autograd node behind ``t``."""
    names, stack = set(), [t.grad_fn]
    while stack:
        node = stack.pop()
        if node is not None and type(node).__name__ not in names:
            names.add(type(node).__name__)
            stack.extend(n for n, _ in node.next_functions)
    return names


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_k_dim_logits_reach_the_fused_kernel_through_lf(gen, reduction):
    """(N, C, d1, d2) logits go through LF.cross_entropy's flattening into the fused kernel."""
    LF = importlib.import_module("losskit.functional")
    x0 = torch.randn(4, 50, 20, 20, generator=gen) * 3  # 80000 logits: above MIN_FUSED_ELEMENTS
    y = torch.randint(0, 50, (4, 20, 20), generator=gen)
    y[:, :3] = -100
    w = torch.rand(50, generator=gen) + 0.2
    x = x0.clone().requires_grad_()
    loss = LF.cross_entropy(x, y, weight=w, label_smoothing=0.1, reduction=reduction)
    assert any(name.startswith("FusedCrossEntropy") for name in _graph_names(loss))
    ref_x = x0.double().requires_grad_()
    ref = F.cross_entropy(ref_x, y, weight=w.double(), label_smoothing=0.1, reduction=reduction)
    go = torch.randn(ref.shape, generator=gen, dtype=torch.float64)
    (loss * go.float()).sum().backward()
    (ref * go).sum().backward()
    assert loss.shape == ref.shape
    assert_close(loss, ref, torch.float32)
    assert_close(x.grad, ref_x.grad, torch.float32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("inplace", [False, True])
def test_large_vocabulary(gen, dtype, inplace):
    """(3, 7, 32000) flattened: long row reductions in float32 and bfloat16."""
    x = (torch.randn(3, 7, 32000, generator=gen) * 4).reshape(-1, 32000)
    y = torch.randint(0, 32000, (21,), generator=gen)
    y[4] = -100
    loss, grad, ref, ref_grad = run_both(x, y, dtype, inplace=inplace, label_smoothing=0.1,
                                         lse_square_scale=1e-3, reduction="none")
    assert_close(loss, ref, dtype)
    assert_close(grad, ref_grad, dtype)


def test_negative_z_loss_scale_matches_the_oracle(gen):
    """lse_square_scale < 0 is accepted like any other value; its gradient term must follow
    (a `z > 0` test in place of `z != 0` would drop it)."""
    x = torch.randn(12, 9, generator=gen)
    y = torch.randint(0, 9, (12,), generator=gen)
    logits = x.clone().requires_grad_()
    ref = x.double().requires_grad_()
    fused.cross_entropy(logits, y, lse_square_scale=-1e-2).backward()
    expected = ce_oracle(ref, y, lse_square_scale=-1e-2)
    expected.backward()
    assert_close(logits.grad, ref.grad, torch.float32)


def test_an_upstream_gradient_off_the_cpu_is_never_read():
    """Issue 16, seed 4: `_is_one` reads only a 0-d CPU upstream gradient (reading a device
    tensor is a sync). A meta tensor holds no value: reading it would raise, so False here
    means it was not read. A 0-d CPU 1 is read and is one."""
    is_one = importlib.import_module("losskit.kernels.cross_entropy")._is_one
    assert is_one(torch.tensor(1.0, device="meta")) is False
    assert is_one(torch.tensor(1.0)) is True and is_one(torch.tensor(2.0)) is False
