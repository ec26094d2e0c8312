"""linear_cross_entropy against torch 2.13's own F.linear_cross_entropy / nn.LinearCrossEntropyLoss:
signatures, a float64 differential test over random shapes and options, torch's OpInfo/ModuleInfo
samples and error inputs, second derivatives, dtypes, and the family's guardrails."""

from __future__ import annotations

import inspect
import math

import pytest
import torch
import torch.nn.functional as F
from test_guardrails import assert_raises, assert_silent
from torch import nn

import losskit as lk
import losskit.functional as LF
from losskit.kernels import fused

TORCH_PARAMS = 9  # torch's parameters come first; losskit's extras follow


def _params(fn):
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


def test_signatures_are_torchs_then_losskit_extras():
    ours, theirs = _params(LF.linear_cross_entropy), _params(F.linear_cross_entropy)
    assert ours[:TORCH_PARAMS] == theirs
    extras = [(n, k) for n, k, _ in ours[TORCH_PARAMS:]]
    assert extras == [(n, inspect.Parameter.KEYWORD_ONLY) for n in
                      ("lse_square_scale", "softcap", "return_lse", "chunk_size")]
    ours, theirs = _params(lk.LinearCrossEntropyLoss), _params(nn.LinearCrossEntropyLoss)
    assert ours[: len(theirs)] == theirs
    assert [n for n, _, _ in ours[len(theirs):]] == ["lse_square_scale", "softcap", "chunk_size"]
    assert issubclass(lk.LinearCrossEntropyLoss, nn.LinearCrossEntropyLoss)


@pytest.mark.parametrize("kwargs", [{}, {"bias": True}, {"out_features": (2, 3), "bias": True}])
def test_module_initialises_its_head_exactly_as_torch(kwargs):
    torch.manual_seed(7)
    theirs = nn.LinearCrossEntropyLoss(5, 4, **kwargs, weight=torch.rand(4))
    torch.manual_seed(7)
    ours = lk.LinearCrossEntropyLoss(5, 4, **kwargs, weight=torch.rand(4))
    a, b = ours.state_dict(), theirs.state_dict()
    assert list(a) == list(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert repr(ours) == repr(theirs)


# ----------------------------------------------------------------------------------------------
# Differential test: random shapes and options, float64, values and gradients


def _draw(seed: int):
    """One random call: (args, kwargs) for both functions, and which tensors are differentiated."""
    g = torch.Generator().manual_seed(seed)

    def pick(options):
        return options[int(torch.randint(len(options), (1,), generator=g))]

    n, d, c = pick([None, 1, 3, 7]), pick([1, 3, 5]), pick([2, 5, 9])
    k = pick([(), (), (2,), (3, 2)]) if n is not None else ()
    batch = () if n is None else (n,)
    h = torch.randn(*batch, d, generator=g, dtype=torch.float64)
    w = torch.randn(c, *k, d, generator=g, dtype=torch.float64)
    kwargs = {"reduction": pick(["none", "mean", "sum"])}
    if pick([False, True]):
        kwargs["linear_bias"] = torch.randn(c, *k, generator=g, dtype=torch.float64)
    if pick([False, True]):
        kwargs["weight"] = torch.rand(c, generator=g, dtype=torch.float64) + 0.2
    kwargs["label_smoothing"] = pick([0.0, 0.0, 0.15, 1.0])
    probabilities = pick([False, False, True])
    logits_shape = (*batch, c, *k)
    if probabilities:
        y = torch.softmax(torch.randn(logits_shape, generator=g, dtype=torch.float64),
                          dim=len(batch))
    else:
        y = torch.randint(0, c, (*batch, *k), generator=g)
        ignore = pick([None, None, 0, -1])
        if ignore is not None:
            kwargs["ignore_index"] = ignore
        if y.dim() > 0:  # one ignored target, never all: the mean over nothing is a departure
            y.view(-1)[:1] = -100 if ignore is None else ignore
        y.view(-1)[-1] = 1  # at least one counted target (ignore_index is never 1)
    differentiated = ["input", "linear_weight", "linear_bias"]
    if probabilities:
        differentiated.append("weight")  # torch's soft-target path differentiates it
    return (h, w, y), kwargs, differentiated


def _grads(fn, args, kwargs, differentiated, upstream_seed):
    args = [a.clone().requires_grad_(i < 2) if a.is_floating_point() and i < 2 else a
            for i, a in enumerate(args)]
    kwargs = {key: (v.clone().requires_grad_(key in differentiated)
                    if isinstance(v, torch.Tensor) else v) for key, v in kwargs.items()}
    out = fn(*args, **kwargs)
    wanted = args[:2] + [kwargs[key] for key in ("linear_bias", "weight")
                         if key in kwargs and kwargs[key].requires_grad]
    upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(upstream_seed),
                           dtype=out.dtype)
    return out, torch.autograd.grad(out, wanted, upstream)


SEEDS = range(200)


@pytest.mark.parametrize("seed", SEEDS)
def test_differential_against_torch_float64(seed):
    args, kwargs, differentiated = _draw(seed)
    ours = _grads(LF.linear_cross_entropy, args, kwargs, differentiated, seed)
    theirs = _grads(F.linear_cross_entropy, args, kwargs, differentiated, seed)
    torch.testing.assert_close(ours[0], theirs[0], rtol=1e-10, atol=1e-12)
    assert len(ours[1]) == len(theirs[1])
    for a, b in zip(ours[1], theirs[1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("seed", range(8))
def test_differential_float32_fused_path_against_torch_float64(seed):
    """The chunked kernel (float32, above the reference's size threshold) vs torch in float64."""
    g = torch.Generator().manual_seed(seed)
    n, d, c = 300, 16, 257
    h, w = torch.randn(n, d, generator=g), torch.randn(c, d, generator=g) / 4
    b, cw = torch.randn(c, generator=g), torch.rand(c, generator=g) + 0.5
    y = torch.randint(0, c, (n,), generator=g)
    y[::7] = -100
    kwargs = dict(reduction=["none", "mean", "sum"][seed % 3], label_smoothing=0.1 * (seed % 2))
    out = []
    for fn, dtype in ((LF.linear_cross_entropy, torch.float32), (F.linear_cross_entropy,
                                                                    torch.float64)):
        hh, ww, bb = (t.to(dtype).requires_grad_() for t in (h, w, b))
        loss = fn(hh, ww, y, linear_bias=bb, weight=cw.to(dtype), chunk_size=64, **kwargs) \
            if fn is LF.linear_cross_entropy else fn(hh, ww, y, linear_bias=bb,
                                                     weight=cw.to(dtype), **kwargs)
        grads = torch.autograd.grad(loss, (hh, ww, bb), torch.ones_like(loss))
        out.append((loss, grads))
    (a, ga), (e, ge) = out
    torch.testing.assert_close(a.double(), e, rtol=1e-5, atol=1e-5)
    for x, z in zip(ga, ge, strict=True):
        torch.testing.assert_close(x.double(), z, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# torch's own test material (OpInfo / ModuleInfo samples and error inputs)

common = pytest.importorskip("torch.testing._internal.common_methods_invocations",
                             reason="needs expecttest")


def _op(variant=""):
    return next(op for op in common.op_db
                if op.name == "nn.functional.linear_cross_entropy"
                and op.variant_test_name == variant)


def test_opinfo_samples_match_torch():
    op, checked = _op(), 0
    for sample in op.sample_inputs("cpu", torch.float64, requires_grad=True):
        args = (sample.input, *sample.args)
        with lk.checks("off"):
            ours = LF.linear_cross_entropy(*args, **sample.kwargs)
        theirs = F.linear_cross_entropy(*args, **sample.kwargs)
        torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12, equal_nan=True)
        leaves = [t for t in args if t.requires_grad]
        ga = torch.autograd.grad(ours.sum(), leaves, allow_unused=True)
        gb = torch.autograd.grad(theirs.sum(), leaves, allow_unused=True)
        for a, b in zip(ga, gb, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
        checked += 1
    assert checked >= 100


def test_opinfo_error_inputs_raise_torchs_class():
    op, checked = _op(), 0
    for error in op.error_inputs("cpu"):
        sample = error.sample_input
        with pytest.raises(error.error_type):
            LF.linear_cross_entropy(sample.input, *sample.args, **sample.kwargs)
        checked += 1
    assert checked > 0


def test_moduleinfo_samples_match_torch():
    modules = pytest.importorskip("torch.testing._internal.common_modules")
    info = next(m for m in modules.module_db if m.name == "nn.LinearCrossEntropyLoss")
    samples = list(info.module_inputs_func(info, device="cpu", dtype=torch.float64,
                                           requires_grad=True, training=True))
    for sample in samples[::9]:  # every 9th of ~860: all option combinations still appear
        c = sample.constructor_input
        torch.manual_seed(0)
        theirs = nn.LinearCrossEntropyLoss(*c.args, **c.kwargs)
        torch.manual_seed(0)
        ours = lk.LinearCrossEntropyLoss(*c.args, **c.kwargs)
        x, y = sample.forward_input.args
        with lk.checks("off"):
            a = ours(x, y)
        b = theirs(x, y)
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, equal_nan=True)
        ga = torch.autograd.grad(a.sum(), [x, ours.linear.weight])
        gb = torch.autograd.grad(b.sum(), [x, theirs.linear.weight])
        for p, q in zip(ga, gb, strict=True):
            torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# Second derivatives (torch's reference path has them; float64 runs losskit's plain autograd)


@pytest.mark.parametrize("shape", [((4, 3), (5, 3)), ((3, 4), (5, 2, 4))], ids=["2-D", "K-dim"])
def test_gradgradcheck(shape, gen):
    (hs, ws) = shape
    h = torch.randn(hs, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(ws, generator=gen, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, ws[0], (hs[0], *ws[1:-1]), generator=gen)
    y.view(-1)[0] = -100
    assert torch.autograd.gradgradcheck(
        lambda a, b: LF.linear_cross_entropy(a, b, y, label_smoothing=0.1), (h, w))


# ----------------------------------------------------------------------------------------------
# Reductions, dtypes, empty batches, legacy arguments


def test_invalid_reduction_raises_at_call_time_not_construction(gen):
    module = lk.LinearCrossEntropyLoss(3, 4, reduction="avg")  # torch constructs it too
    h, y = torch.randn(2, 3, generator=gen), torch.tensor([0, 1])
    for call in (lambda: module(h, y),
                 lambda: LF.linear_cross_entropy(h, module.linear.weight, y, reduction="avg")):
        with pytest.raises(ValueError, match="avg is not a valid value for reduction"):
            call()


def test_no_legacy_size_average_or_reduce_as_in_torch():
    for fn in (LF.linear_cross_entropy, F.linear_cross_entropy):
        with pytest.raises(TypeError):
            fn(torch.zeros(2, 3), torch.zeros(4, 3), torch.tensor([0, 1]), size_average=True)
    with pytest.raises(TypeError):
        lk.LinearCrossEntropyLoss(3, 4, reduce=False)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_output_dtype_follows_torch(dtype, gen):
    h = torch.randn(6, 8, generator=gen).to(dtype)
    w = (torch.randn(5, 8, generator=gen) / 3).to(dtype)
    y = torch.randint(0, 5, (6,), generator=gen)
    for reduction in ("none", "mean", "sum"):
        ours = LF.linear_cross_entropy(h, w, y, reduction=reduction)
        theirs = F.linear_cross_entropy(h, w, y, reduction=reduction)
        assert ours.dtype == theirs.dtype == dtype
        torch.testing.assert_close(ours.float(), theirs.float(), rtol=2e-2, atol=2e-2)


def test_empty_batch(gen):
    h, w = torch.zeros(0, 3), torch.randn(4, 3, generator=gen)
    y = torch.zeros(0, dtype=torch.long)
    for reduction in ("none", "sum"):  # torch's empty result and 0
        torch.testing.assert_close(LF.linear_cross_entropy(h, w, y, reduction=reduction),
                                   F.linear_cross_entropy(h, w, y, reduction=reduction))
    with lk.checks("always"), pytest.warns(lk.LossWarning, match="empty"):  # 0, not NaN
        assert LF.linear_cross_entropy(h, w, y).item() == 0.0


def test_weight_requiring_grad_with_class_indices_raises_like_torch(gen):
    h, w, y = torch.randn(3, 2, generator=gen), torch.randn(4, 2, generator=gen), torch.tensor(
        [0, 1, 3])
    cw = torch.rand(4, generator=gen, requires_grad=True)
    assert_raises(lambda: LF.linear_cross_entropy(h, w, y, weight=cw),
                  lambda: F.linear_cross_entropy(h, w, y, weight=cw), "weight.detach()")
    assert_silent(lambda: LF.linear_cross_entropy(h, w, y, weight=cw.detach()))


def test_second_derivative_on_the_chunked_path_names_the_fix(gen):
    h = torch.randn(512, 32, generator=gen, requires_grad=True)
    w = torch.randn(300, 32, generator=gen, requires_grad=True)
    y = torch.randint(0, 300, (512,), generator=gen)
    with pytest.raises(RuntimeError, match=r"fused\(False\)"):
        torch.autograd.grad(LF.linear_cross_entropy(h, w, y), h, create_graph=True)
    with fused(False):
        (g,) = torch.autograd.grad(LF.linear_cross_entropy(h, w, y), h, create_graph=True)
    (e,) = torch.autograd.grad(F.linear_cross_entropy(h, w, y), h)
    torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-7)


# ----------------------------------------------------------------------------------------------
# options


def test_options_are_validated_like_torch(gen):
    h, w = torch.randn(8, 4, generator=gen), torch.randn(6, 4, generator=gen)
    y = torch.arange(8) % 6
    assert_raises(lambda: LF.linear_cross_entropy(h, w, y, options="chunked"),
                  lambda: F.linear_cross_entropy(h, w, y, options="chunked"),
                  "LinearCrossEntropyOptions", "str")
    bad = nn.LinearCrossEntropyOptions(batch_chunk_size=3, chunking_method="aspect_ratio")
    assert_raises(lambda: LF.linear_cross_entropy(h, w, y, options=bad),
                  lambda: F.linear_cross_entropy(h, w, y, options=bad), "pass only one")
    expected = F.cross_entropy(h @ w.T, y)
    for options in (nn.LinearCrossEntropyOptions(), nn.LinearCrossEntropyOptions(
            batch_chunk_size=3, acc_policy="accurate")):
        torch.testing.assert_close(assert_silent(
            lambda o=options: LF.linear_cross_entropy(h, w, y, options=o)), expected)


def test_options_batch_chunk_size_is_losskits_chunk_size(gen, monkeypatch):
    from losskit import kernels

    seen = {}
    real = kernels.linear_cross_entropy

    def spy(*args, **kwargs):
        seen["chunk_size"] = kwargs["chunk_size"]
        return real(*args, **kwargs)

    monkeypatch.setattr(kernels, "linear_cross_entropy", spy)
    # 8 x 8192 logits: one fused block or more, so the chunked kernel runs (smaller calls
    # compute their logits, as torch does)
    h, w = torch.randn(8, 4, generator=gen), torch.randn(8192, 4, generator=gen)
    y = torch.arange(8) % 6
    LF.linear_cross_entropy(h, w, y, options=nn.LinearCrossEntropyOptions(batch_chunk_size=3))
    assert seen["chunk_size"] == 3
    LF.linear_cross_entropy(h, w, y, options=nn.LinearCrossEntropyOptions())
    assert seen["chunk_size"] is None  # torch's chunking heuristic is not used: losskit's rule
    assert_raises(lambda: LF.linear_cross_entropy(
        h, w, y, chunk_size=4, options=nn.LinearCrossEntropyOptions(batch_chunk_size=3)),
        None, "chunk_size=4", "batch_chunk_size=3")


# ----------------------------------------------------------------------------------------------
# Guardrails and their healthy twins


def test_sequence_shaped_input_raises_torchs_class_with_the_flatten_fix(gen):
    h, w = torch.randn(2, 5, 4, generator=gen), torch.randn(7, 4, generator=gen)
    y = torch.randint(0, 7, (2, 5), generator=gen)
    assert_raises(lambda: LF.linear_cross_entropy(h, w, y),
                  lambda: F.linear_cross_entropy(h, w, y),
                  "got 3", "(2, 5, 4)", "input.flatten(0, 1)", "target.flatten()")
    out = assert_silent(lambda: LF.linear_cross_entropy(h.flatten(0, 1), w, y.flatten()))
    torch.testing.assert_close(out, F.linear_cross_entropy(h.flatten(0, 1), w, y.flatten()))


def test_transposed_head_names_the_transpose(gen):
    h, w = torch.randn(6, 4, generator=gen), torch.randn(4, 7, generator=gen)  # (D, C)
    y = torch.randint(0, 7, (6,), generator=gen)
    assert_raises(lambda: LF.linear_cross_entropy(h, w, y),
                  lambda: F.linear_cross_entropy(h, w, y),
                  "looks transposed", "linear_weight.T", "(7, 4)")
    assert_silent(lambda: LF.linear_cross_entropy(h, w.T, y))


@pytest.mark.parametrize(("n", "shape"), [(6, (6, 1, 1)), (6, (3, 2)), (4, (1, 4))])
def test_multi_dim_targets_get_torchs_class(n, shape, gen):
    h, w = torch.randn(n, 4, generator=gen), torch.randn(7, 4, generator=gen)
    y = torch.randint(0, 7, shape, generator=gen)
    assert_raises(lambda: LF.linear_cross_entropy(h, w, y),
                  lambda: F.linear_cross_entropy(h, w, y), "target.flatten()", f"({n},)")
    assert_silent(lambda: LF.linear_cross_entropy(h, w, y.flatten()))


@pytest.mark.parametrize("name", ["bias", "kdim-unbatched", "probabilities-ignore_index",
                                  "weight-dim", "label_smoothing"])
def test_torchs_errors_keep_torchs_class_and_name_the_fix(name, gen):
    h, w = torch.randn(4, 3, generator=gen), torch.randn(5, 3, generator=gen)
    y = torch.randint(0, 5, (4,), generator=gen)
    k = torch.randn(5, 2, 3, generator=gen)
    calls = {
        "bias": ((h, w, y), {"linear_bias": torch.randn(5, 1)}),
        "kdim-unbatched": ((h[0], k, torch.tensor([0, 1])), {}),
        "probabilities-ignore_index": ((h, w, torch.rand(4, 5)), {"ignore_index": -100}),
        "weight-dim": ((h, torch.randn(3), y), {}),
        "label_smoothing": ((h, w, y), {"label_smoothing": 1.5}),
    }
    args, kwargs = calls[name]
    assert_raises(lambda: LF.linear_cross_entropy(*args, **kwargs),
                  lambda: F.linear_cross_entropy(*args, **kwargs))


def test_flat_k_dim_bias_names_the_reshape(gen):
    h, w = torch.randn(4, 3, generator=gen), torch.randn(5, 2, 3, generator=gen)
    y = torch.randint(0, 5, (4, 2), generator=gen)
    b = torch.randn(10, generator=gen)  # nn.Linear's flat bias
    assert_raises(lambda: LF.linear_cross_entropy(h, w, y, linear_bias=b),
                  lambda: F.linear_cross_entropy(h, w, y, linear_bias=b), "reshape(5, 2)")
    assert_silent(lambda: LF.linear_cross_entropy(h, w, y, linear_bias=b.reshape(5, 2)))


def test_module_forward_takes_input_and_target_only(gen):
    loss = lk.LinearCrossEntropyLoss(3, 5, bias=True)
    h, y = torch.randn(4, 3, generator=gen), torch.randint(0, 5, (4,), generator=gen)
    with pytest.raises(TypeError):
        loss(h, loss.linear.weight, y)  # the old losskit API passed the head to forward
    expected = F.cross_entropy(loss.linear(h), y)
    torch.testing.assert_close(loss(h, y), expected, rtol=1e-6, atol=1e-6)
    assert math.isfinite(loss(h, y).item())
