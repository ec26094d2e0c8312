"""Chunked linear + cross-entropy (losskit/kernels/linear_cross_entropy.py) against the unfused
float64 computation: ``cross_entropy(hidden @ weight.T + bias, target)`` with every logit
materialised, gradients for hidden, weight and bias from float64 autograd."""

from __future__ import annotations

import importlib
import itertools
import warnings

import pytest
import torch
from test_kernels_cross_entropy import TOLERANCE, assert_close, ce_oracle

import losskit.kernels as kernels

chunked = importlib.import_module("losskit.kernels.linear_cross_entropy")

N, D, V = 45, 16, 50  # 27 counted tokens: with chunk_size=8 the last chunk holds 3


def make_case(gen, dtype):
    hidden = torch.randn(N, D, generator=gen).to(dtype)
    weight = (torch.randn(V, D, generator=gen) * 0.5).to(dtype)
    bias = torch.randn(V, generator=gen).to(dtype)
    target = torch.randint(0, V, (N,), generator=gen)
    target[::4] = -100
    target[8:16] = -100  # a run of ignored tokens, dropped before the matmuls
    return hidden, weight, bias, target


def unfused(hidden, weight, bias, target, class_weight=None, **opts):
    logits = hidden.double() @ weight.double().T  # (N, V)
    if bias is not None:
        logits = logits + bias.double()
    return ce_oracle(logits, target, weight=class_weight, **opts)


OPTIONS = list(itertools.product(
    ["none", "mean", "sum"],  # reduction
    [0.0, 0.2],  # label_smoothing
    [False, True],  # class weight
    [(0.0, None), (1e-2, 4.0)],  # (lse_square_scale, softcap)
    # (bias, chunk_size): without bias the default rule (one chunk: the 27 counted tokens' logits
    # are tiny), with bias chunk_size=8 (4 chunks, the last with 3 tokens)
    [(False, None), (True, 8)],
))
CASES = [(torch.float32, *o) for o in OPTIONS] + [
    (torch.bfloat16, *o) for o in OPTIONS if o[1] > 0 and o[2] and o[4][0]
]


@pytest.mark.parametrize(("dtype", "reduction", "eps", "weighted", "extras", "layout"), CASES)
def test_chunked_matches_unfused(gen, dtype, reduction, eps, weighted, extras, layout):
    with_bias, chunk = layout
    hidden, weight, bias, target = make_case(gen, dtype)
    bias = bias if with_bias else None
    cw = torch.rand(V, generator=gen).to(dtype) + 0.2 if weighted else None
    z, softcap = extras
    opts = dict(reduction=reduction, label_smoothing=eps, lse_square_scale=z, softcap=softcap)
    params = [p.clone().requires_grad_() for p in (hidden, weight) + ((bias,) if with_bias else ())]
    refs = [p.detach().double().requires_grad_() for p in params]
    loss, lse = chunked.linear_cross_entropy(
        params[0], params[1], target, params[2] if with_bias else None, class_weight=cw,
        chunk_size=chunk, return_lse=True, **opts,
    )
    ref = unfused(refs[0], refs[1], refs[2] if with_bias else None, target,
                  None if cw is None else cw.double(), **opts)
    go = torch.randn(ref.shape, generator=gen, dtype=torch.float64) * 1.5
    (loss * go.to(dtype)).sum().backward()
    (ref * go).sum().backward()
    assert loss.dtype == dtype and loss.shape == ref.shape
    assert_close(loss, ref, dtype)
    for p, r in zip(params, refs, strict=True):
        assert p.grad.dtype == dtype
        assert_close(p.grad, r.grad, dtype)
    assert lse.dtype == torch.float32 and not lse.requires_grad
    logits = refs[0].detach() @ refs[1].detach().T + (refs[2].detach() if with_bias else 0)
    if softcap is not None:
        logits = softcap * torch.tanh(logits / softcap)
    rtol, atol = TOLERANCE[dtype]
    torch.testing.assert_close(lse.double(), torch.logsumexp(logits, 1) * (target != -100),
                               rtol=rtol, atol=20 * atol)


def test_only_requested_gradients_and_frozen_head(gen):
    """A frozen head (weight without grad) still gives the hidden gradient, and no dW is built."""
    hidden, weight, _, target = make_case(gen, torch.float32)
    h = hidden.clone().requires_grad_()
    h_ref = hidden.double().requires_grad_()
    chunked.linear_cross_entropy(h, weight, target, chunk_size=8).backward()
    unfused(h_ref, weight, None, target).backward()
    assert weight.grad is None
    assert_close(h.grad, h_ref.grad, torch.float32)


def test_every_token_ignored(gen):
    hidden, weight, bias, _ = make_case(gen, torch.float32)
    target = torch.full((N,), -100)
    params = [p.clone().requires_grad_() for p in (hidden, weight, bias)]
    loss = chunked.linear_cross_entropy(*params[:2], target, params[2], chunk_size=8)
    loss.backward()
    assert loss.item() == 0.0
    assert all(torch.count_nonzero(p.grad) == 0 for p in params)


def test_upstream_gradient_scales_scalar_loss(gen):
    """``(2.5 * loss).backward()`` scales the gradients computed in the forward."""
    hidden, weight, _, target = make_case(gen, torch.float32)
    h = hidden.clone().requires_grad_()
    (2.5 * chunked.linear_cross_entropy(h, weight, target)).backward()
    h_ref = hidden.double().requires_grad_()
    (2.5 * unfused(h_ref, weight, None, target)).backward()
    assert_close(h.grad, h_ref.grad, torch.float32)


def test_chunk_rule(monkeypatch):
    """The largest power of two of tokens whose float32 logits fit in CHUNK_BYTES, in [16, N]."""
    assert chunked.chunk_tokens(4096, 32000) == 512  # 64 MiB / (4 * 32000) = 524 -> 512
    assert chunked.chunk_tokens(100, 64) == 100  # everything fits: one chunk
    assert chunked.chunk_tokens(1000, 10**8) == 16  # floor of MIN_CHUNK
    assert chunked.chunk_tokens(4096, 16777) == 512  # 64 MiB / (4 * 16777) = 1000.0 -> 512
    monkeypatch.setattr(chunked, "CHUNK_BYTES", 4 * 50 * 20)  # room for 20 rows of 50
    assert chunked.chunk_tokens(27, 50) == 16  # rounded down to a power of two


def test_dispatch_reaches_chunked_path(gen):
    hidden = torch.randn(64, 32, generator=gen, requires_grad=True)
    weight = torch.randn(1024, 32, generator=gen)  # 64 * 1024 = MIN_FUSED_ELEMENTS logits
    loss = kernels.linear_cross_entropy(hidden, weight, torch.zeros(64, dtype=torch.long))
    assert type(loss.grad_fn).__name__ == "ChunkedLinearCrossEntropyBackward"
    loss64 = kernels.linear_cross_entropy(hidden.double(), weight.double(),
                                          torch.zeros(64, dtype=torch.long))
    assert type(loss64.grad_fn).__name__ != "ChunkedLinearCrossEntropyBackward"


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize(("n", "ignored"), [(17, 0), (27, 10)])  # 17 counted tokens either way
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_last_chunk_of_one_token(gen, reduction, n, ignored, dtype):
    """chunk_size=8 over 17 counted tokens: chunks of 8, 8 and 1 (a (1, V) chunk), with and
    without ignored tokens dropped first; values and all three gradients against float64."""
    hidden = torch.randn(n, D, generator=gen).to(dtype)
    weight = (torch.randn(V, D, generator=gen) * 0.5).to(dtype)
    bias = torch.randn(V, generator=gen).to(dtype)
    target = torch.randint(0, V, (n,), generator=gen)
    target[1:2 * ignored:2] = -100  # `ignored` tokens, every other one
    assert int((target != -100).sum()) == 17
    params = [p.clone().requires_grad_() for p in (hidden, weight, bias)]
    refs = [p.detach().double().requires_grad_() for p in params]
    loss = chunked.linear_cross_entropy(params[0], params[1], target, params[2], chunk_size=8,
                                        reduction=reduction, label_smoothing=0.1)
    ref = unfused(*refs, target, reduction=reduction, label_smoothing=0.1)
    go = torch.randn(ref.shape, generator=gen, dtype=torch.float64)
    (loss * go.to(dtype)).sum().backward()
    (ref * go).sum().backward()
    assert_close(loss, ref, dtype)
    for p, r in zip(params, refs, strict=True):
        assert_close(p.grad, r.grad, dtype)


def test_every_token_ignored_with_the_default_chunk_rule(gen):
    """No counted token: zero kept rows, and the default chunk rule must still give a chunk of
    at least 1 (range() with step 0 raises)."""
    hidden, weight, _, _ = make_case(gen, torch.float32)
    h = hidden.clone().requires_grad_()
    loss = chunked.linear_cross_entropy(h, weight, torch.full((N,), -100))
    loss.backward()
    assert loss.item() == 0.0 and torch.count_nonzero(h.grad) == 0


def test_upstream_gradient_of_exactly_two(gen):
    """The backward skips the multiplication only for an upstream gradient of exactly 1."""
    hidden, weight, _, target = make_case(gen, torch.float32)
    h = hidden.clone().requires_grad_()
    (2.0 * chunked.linear_cross_entropy(h, weight, target)).backward()
    h_ref = hidden.double().requires_grad_()
    (2.0 * unfused(h_ref, weight, None, target)).backward()
    assert_close(h.grad, h_ref.grad, torch.float32)


def test_chunk_rule_gives_one_token_chunks_for_one_token():
    """The rule's range is [16, N] clipped below at 1 (docstring): one token is a chunk of one
    (the logits buffer is (chunk, V): a chunk of 2 allocates a row that is never used)."""
    assert chunked.chunk_tokens(1, 50) == 1
    assert chunked.chunk_tokens(1, 10**8) == 1
    assert chunked.chunk_tokens(0, 50) == 1  # no token: still a valid range() step


def test_chunk_logits_fill_the_shared_buffer_when_hidden_is_narrower_than_a_chunk(gen):
    """D = 2 < chunk = 4 tokens: each chunk's (4, V) logits go into the first rows of the
    shared buffer, never a resized `out=` (torch warns when it resizes one); values and the
    hidden gradient against float64."""
    hidden = torch.randn(10, 2, generator=gen, dtype=torch.float64)
    weight = torch.randn(5, 2, generator=gen, dtype=torch.float64)
    target = torch.randint(0, 5, (10,), generator=gen)
    h = hidden.float().requires_grad_()
    ref = hidden.clone().requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss = chunked.linear_cross_entropy(h, weight.float(), target, chunk_size=4)
        loss.backward()
    expected = unfused(ref, weight, None, target)
    expected.backward()
    assert_close(loss, expected, torch.float32)
    assert_close(h.grad, ref.grad, torch.float32)


def test_upstream_gradient_of_two_while_compiling_is_not_taken_for_one(gen, monkeypatch):
    """Under torch.compile `_is_one` must answer False without reading the value (no .item()
    in a graph), so the upstream gradient is always multiplied in. is_compiling() is patched to
    True in eager mode (a real compile costs seconds); the gradient of 2 * loss against float64."""
    hidden = torch.randn(6, 3, generator=gen, dtype=torch.float64)
    weight = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    target = torch.randint(0, 5, (6,), generator=gen)
    h = hidden.float().requires_grad_()
    ref = hidden.clone().requires_grad_()
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    (2 * chunked.linear_cross_entropy(h, weight.float(), target, chunk_size=4)).backward()
    (2 * unfused(ref, weight, None, target)).backward()
    assert_close(h.grad, ref.grad, torch.float32)
