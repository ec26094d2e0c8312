"""The Triton kernels on Triton's CPU interpreter, against the float64 oracle.

Triton chooses between compiling and interpreting when ``@triton.jit`` decorates a function (its
own ``tl.sum`` / ``tl.max`` included, at ``import triton``), so ``TRITON_INTERPRET=1`` must be set
before triton is first imported. Each test therefore runs one group of checks in a fresh
``python tests/test_triton_interpret.py GROUP`` subprocess with the variable set; the pytest process
and its other tests are untouched (safe under pytest-xdist). The interpreter is slow, so shapes are
small and ``MAX_BLOCK`` / ``TWO_PASS_BLOCK`` are shrunk to run the two-pass (row longer than a
block) path with a row length (300) that is not a multiple of the block (128). On a machine with
CUDA the same groups also run on the compiled kernels (``test_triton_kernels_compiled_on_cuda``).

Oracle: ``torch.nn.functional.cross_entropy`` in float64 on the same (possibly bf16-rounded) values,
with softcap applied before it and the z-loss added with ``torch.logsumexp``, differentiated by
float64 autograd; for linear+CE the logits are ``hidden @ weight.T + bias`` in float64.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Where the subprocess runs the kernels: "cpu" under the interpreter, or "cuda" (compiled kernels).
DEVICE = os.environ.get("LOSSKIT_TRITON_TEST_DEVICE", "cpu")
GROUPS = ["ce_two_pass", "ce_single_block", "ce_edge_cases", "ce_hostile", "linear_ce"]

# dtype -> (rtol, atol as a fraction of the largest reference value). bf16: inputs are rounded to
# bf16 before the oracle sees them, so what remains is the output's rounding (2^-8 relative) and,
# for linear+CE, the bf16 logits of the chunk matmul.
TOL = {
    "ce": {torch.float32: (1e-5, 1e-6), torch.bfloat16: (1.6e-2, 8e-3),
           torch.float16: (2e-3, 1e-3)},
    "lce": {torch.float32: (1e-4, 1e-5), torch.bfloat16: (5e-2, 3e-2)},
}


def run_group(group, **env_vars):
    """Run one group of checks in a fresh interpreter with ``env_vars`` set; assert it passed."""
    pytest.importorskip(
        "triton", reason="triton is not importable: the Triton kernels are an optional extra"
    )
    env = dict(os.environ, **env_vars)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, __file__, group], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"group {group} failed:\n{proc.stdout}\n{proc.stderr[-4000:]}"
    assert "checks passed" in proc.stdout, proc.stdout


@pytest.mark.parametrize("group", GROUPS)
def test_triton_kernels_under_interpreter(group):
    run_group(group, TRITON_INTERPRET="1", LOSSKIT_TRITON_TEST_DEVICE="cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="compiled kernels need a CUDA device")
@pytest.mark.parametrize("group", GROUPS)
def test_triton_kernels_compiled_on_cuda(group):
    run_group(group, TRITON_INTERPRET="0", LOSSKIT_TRITON_TEST_DEVICE="cuda")


# ---------------------------------------------------------------------------------------------
# Everything below runs in the subprocess (TRITON_INTERPRET=1 on CPU, or compiled on CUDA).


def oracle(x, y, *, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0,
           lse_square_scale=0.0, softcap=None):
    """float64 cross-entropy with z-loss and softcap; ``x`` is a float64 leaf."""
    xs = softcap * torch.tanh(x / softcap) if softcap is not None else x
    w = weight.double() if weight is not None else None
    loss = F.cross_entropy(
        xs, y, w, ignore_index=ignore_index, reduction=reduction, label_smoothing=label_smoothing
    )
    counted = y != ignore_index
    w_y = counted.double() if w is None else w[torch.where(counted, y, 0)] * counted
    if reduction == "mean" and not counted.any():
        loss = xs.sum() * 0.0  # losskit: 0 with zero gradient instead of torch's NaN
    if lse_square_scale:
        z_rows = lse_square_scale * w_y * torch.logsumexp(xs, dim=1) ** 2  # (N,)
        if reduction == "none":
            loss = loss + z_rows
        elif reduction == "sum":
            loss = loss + z_rows.sum()
        elif counted.any():
            loss = loss + z_rows.sum() / w_y.sum()
    return loss


def upstream(loss, seed=1):
    """A random upstream gradient (so backward scaling is exercised), float32."""
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(loss.shape, generator=gen) + 0.5).to(loss.device)


class Checker:
    def __init__(self):
        self.failures = []
        self.count = 0

    def close(self, name, actual, expected, rtol, atol_frac):
        self.count += 1
        expected = expected.detach().double()
        atol = atol_frac * max(float(expected.abs().max()) if expected.numel() else 0.0, 1e-3)
        try:
            torch.testing.assert_close(actual.detach().double(), expected, rtol=rtol, atol=atol)
        except AssertionError as err:
            self.failures.append(f"{name}: {err}")

    def true(self, name, condition, detail=""):
        self.count += 1
        if not condition:
            self.failures.append(f"{name}: {detail}")


def ce_case(chk, tk, name, x, y, dtype, **opts):
    """Values and logits grads of the Triton CE against the oracle for one option set."""
    rtol, atol = TOL["ce"][dtype]
    xa = x.to(dtype).clone().requires_grad_()
    xr = x.to(dtype).double().requires_grad_()
    out = tk.cross_entropy(xa, y, **opts)
    ref = oracle(xr, y, **opts)
    chk.true(f"{name} dtype", out.dtype == dtype and out.shape == ref.shape, f"{out.dtype}")
    chk.close(f"{name} value", out, ref, rtol, atol)
    g = upstream(ref)
    out.backward(g.to(dtype))
    ref.backward(g.double())
    chk.true(f"{name} grad dtype", xa.grad.dtype == dtype, f"{xa.grad.dtype}")
    chk.close(f"{name} grad", xa.grad, xr.grad, rtol, atol)


def data(n=8, c=300, seed=0, ignored=(3, 6)):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, generator=gen) * 3.0  # (N, C)
    y = torch.randint(0, c, (n,), generator=gen)  # (N,)
    y[list(ignored)] = -100
    w = torch.rand(c, generator=gen) + 0.5  # (C,)
    return x.to(DEVICE), y.to(DEVICE), w.to(DEVICE)


OPTION_SETS = [
    ("plain", "mean", {}),
    ("weight", "sum", {"weight": True}),
    ("smoothing", "none", {"label_smoothing": 0.1}),
    ("weight+smoothing", "mean", {"weight": True, "label_smoothing": 0.2}),
    ("zloss+weight", "mean", {"weight": True, "lse_square_scale": 1e-3}),
    ("softcap", "none", {"softcap": 4.0}),
    ("all", "sum", {"weight": True, "label_smoothing": 0.1, "lse_square_scale": 1e-2,
                    "softcap": 5.0}),
]


def run_options(chk, tk, dtypes, sets):
    x, y, w = data()
    for label, reduction, opts in sets:
        opts = dict(opts, reduction=reduction)
        for dtype in dtypes:
            if opts.get("weight") is True or isinstance(opts.get("weight"), torch.Tensor):
                opts["weight"] = w.to(dtype)
            ce_case(chk, tk, f"{label}/{reduction}/{dtype}", x, y, dtype, **opts)


def two_pass(ce_mod):
    ce_mod.MAX_BLOCK = ce_mod.TWO_PASS_BLOCK = 128  # C = 300: blocks of 128, 128, 44


def group_ce_two_pass(chk, tk, ce_mod):
    two_pass(ce_mod)
    run_options(chk, tk, [torch.float32], OPTION_SETS)
    run_options(chk, tk, [torch.bfloat16], [OPTION_SETS[3], OPTION_SETS[6]])


def group_ce_single_block(chk, tk, ce_mod):
    assert ce_mod.MAX_BLOCK >= 512  # the whole row in one block
    run_options(chk, tk, [torch.float32], [OPTION_SETS[0], OPTION_SETS[6]])
    run_options(chk, tk, [torch.bfloat16], [OPTION_SETS[i] for i in (0, 3, 5, 6)])
    run_options(chk, tk, [torch.float16], [OPTION_SETS[6]])


def group_ce_edge_cases(chk, tk, ce_mod):
    two_pass(ce_mod)
    x, y, w = data(n=6, ignored=(2, 4))
    every = torch.full_like(y, -100)
    # 1. every target ignored: 'mean' is 0 with zero gradient (not NaN), 'sum' 0, 'none' zeros.
    for reduction in ["mean", "sum", "none"]:
        xa = x.clone().requires_grad_()
        out = tk.cross_entropy(xa, every, weight=w, reduction=reduction, label_smoothing=0.1)
        out.backward(torch.ones_like(out))
        chk.true(f"all-ignored {reduction} value", bool((out == 0).all()), f"{out}")
        chk.true(f"all-ignored {reduction} grad", bool((xa.grad == 0).all()), f"{xa.grad}")
    # ... and an empty batch: 'mean' 0 (not NaN), 'none' empty; uint8 targets.
    empty = x[:0].clone().requires_grad_()
    out = tk.cross_entropy(empty, y[:0])
    out.backward()
    chk.true("empty mean", out.item() == 0.0 and empty.grad.shape == (0, x.shape[1]), f"{out}")
    chk.true("empty none", tk.cross_entropy(x[:0], y[:0], reduction="none").shape == (0,))
    ce_case(chk, tk, "uint8 target", x[:, :200], torch.where(y < 0, 0, y % 200).to(torch.uint8),
            torch.float32, reduction="sum")
    # 2. ignore_index is a real class (C - 1), and a value that no target takes.
    y_last = torch.where(y == -100, 0, y)  # -100 is out of range once it is not ignored
    y_last[:3] = x.shape[1] - 1
    ce_case(chk, tk, "ignore C-1", x, y_last, torch.float32, ignore_index=x.shape[1] - 1,
            reduction="mean")
    ce_case(chk, tk, "ignore 7 unused", x, y.clamp(min=0) % 5 + 10, torch.float32,
            ignore_index=7, reduction="mean")
    # 3. return_lse: float32 log-sum-exp of the softcapped logits, 0 at ignored rows.
    for dtype in [torch.float32, torch.bfloat16]:
        loss, lse = tk.cross_entropy(x.to(dtype), y, softcap=3.0, return_lse=True)
        xs = x.to(dtype).double()
        ref = torch.logsumexp(3.0 * torch.tanh(xs / 3.0), dim=1) * (y != -100)
        chk.true(f"lse dtype {dtype}", lse.dtype == torch.float32 and lse.shape == y.shape)
        chk.close(f"lse {dtype}", lse, ref, 1e-6, 1e-6)
        chk.close(f"lse loss {dtype}", loss, oracle(xs, y, softcap=3.0), *TOL["ce"][dtype])
    # 4. inplace: the gradient is written over the logits, no second (N, C) buffer.
    for reduction in ["mean", "none"]:
        leaf = x.clone().requires_grad_()
        logits = leaf * 1.0  # a non-leaf, as a matmul's output would be
        out = tk.cross_entropy(logits, y, weight=w, reduction=reduction, inplace=True,
                               lse_square_scale=1e-3)
        xr = x.double().requires_grad_()
        ref = oracle(xr, y, weight=w, reduction=reduction, lse_square_scale=1e-3)
        chk.close(f"inplace {reduction} value", out, ref, *TOL["ce"][torch.float32])
        out.backward(torch.ones_like(out))
        ref.backward(torch.ones_like(ref))
        chk.close(f"inplace {reduction} grad", leaf.grad, xr.grad, *TOL["ce"][torch.float32])
        chk.true(f"inplace {reduction} overwrote logits", torch.equal(logits.detach(), leaf.grad))
    # ... and autograd catches a use of the overwritten logits that needed their old values.
    leaf = x.clone().requires_grad_()
    logits = leaf * 1.0
    other = (logits**2).sum()  # pow saves its input for backward
    loss = tk.cross_entropy(logits, y, inplace=True)
    try:
        (loss + other).backward()
        chk.true("inplace misuse detected", False, "backward ran on overwritten logits")
    except RuntimeError as err:
        chk.true("inplace misuse detected", "modified by an inplace operation" in str(err), err)
    # 5. a strided row (the logits are a column slice of a wider tensor) and a -inf logit.
    wide = torch.cat([x, torch.randn_like(x[:, :7])], dim=1)[:, : x.shape[1]]  # row stride C + 7
    wide[0, 5 if y[0] != 5 else 6] = float("-inf")
    ce_case(chk, tk, "strided rows, -inf logit", wide, y, torch.float32, reduction="none")
    # 6. forward without grad writes no gradient and gives the same value.
    with torch.no_grad():
        out = tk.cross_entropy(x, y, reduction="none")
    chk.close("no-grad value", out, oracle(x.double(), y, reduction="none"), 1e-5, 1e-6)
    # 7. an upstream gradient of exactly 1 (scaling skipped on the device) and a second backward.
    xa = x.clone().requires_grad_()
    xr = x.double().requires_grad_()
    loss = tk.cross_entropy(xa, y, weight=w)
    loss.backward(retain_graph=True)
    oracle(xr, y, weight=w).backward()
    chk.close("upstream 1 grad", xa.grad, xr.grad, *TOL["ce"][torch.float32])
    try:
        loss.backward()
        chk.true("second backward refused", False, "no error")
    except RuntimeError as err:
        chk.true("second backward refused", "fused(False)" in str(err), err)
    # 8. a second derivative is refused (the stored gradient has no graph), never silently wrong.
    xa = x.clone().requires_grad_()
    try:
        torch.autograd.grad(tk.cross_entropy(xa, y), xa, create_graph=True)
        chk.true("create_graph refused", False, "no error")
    except RuntimeError as err:
        chk.true("create_graph refused", "fused(False)" in str(err), err)
    # 9. a label outside [0, C) reads nothing: its row's loss and gradient are NaN, others exact.
    y_bad = torch.where(y == -100, 0, y)
    y_bad[1], y_bad[4] = x.shape[1] + 3, -5
    xa = x.clone().requires_grad_()
    out = tk.cross_entropy(xa, y_bad, reduction="none")
    out.backward(torch.ones_like(out))
    good = torch.ones_like(y_bad, dtype=torch.bool)
    good[[1, 4]] = False
    chk.true("bad label NaN loss", bool(out[~good].isnan().all()), f"{out}")
    chk.true("bad label NaN grad", bool(xa.grad[~good].isnan().all()), "")
    xr = x.double().requires_grad_()
    ref = oracle(xr[good], y_bad[good], reduction="none")
    ref.sum().backward()
    chk.close("bad label: other rows", out[good], ref, *TOL["ce"][torch.float32])
    chk.close("bad label: other grads", xa.grad[good], xr.grad[good], *TOL["ce"][torch.float32])
    # 10. no gradient wanted (torch.no_grad): nothing written over the logits, even with inplace.
    leaf = x.clone().requires_grad_()
    logits = leaf * 1.0
    with torch.no_grad():
        tk.cross_entropy(logits, y, inplace=True)
    chk.true("no_grad inplace untouched", torch.equal(logits.detach(), x), "")
    # 11. 'none' with an inf upstream gradient at an ignored row: that row's gradient is 0.
    xa = x.clone().requires_grad_()
    out = tk.cross_entropy(xa, y, reduction="none")
    go = torch.ones_like(out)
    go[y == -100] = float("inf")
    out.backward(go)
    chk.true("inf upstream at ignored row", bool(xa.grad.isfinite().all()), "")


def group_ce_hostile(chk, tk, ce_mod):
    """Large logits and -inf masks on ignored rows, in one block and in the two-pass path.

    The loss must not lose accuracy with the logits' magnitude (float32 error ~1e-6, not
    |x| * 2^-24), and a -inf (or all -inf) row that is ignored must give a finite loss and a
    zero gradient.
    """
    tight = (2e-6, 2e-6)
    for path in ("single", "two_pass"):
        if path == "two_pass":
            two_pass(ce_mod)
        for offset in (1e4, 1e8):
            # Rows relative to a huge offset: the float32 values are what the oracle sees too.
            x = (torch.randn(4, 300, generator=torch.Generator().manual_seed(7)) + offset).float()
            x[0, :2] = offset  # two tied maxima: the loss of class 0 is near log 2 + ...
            y = torch.tensor([0, 5, -100, -100])
            x[2, 10] = float("-inf")
            x[3] = float("-inf")  # an ignored row that is entirely masked
            for eps in (0.0, 0.1):
                name = f"{path} offset {offset:g} eps {eps}"
                xa = x.to(DEVICE).clone().requires_grad_()
                loss, lse = tk.cross_entropy(xa, y.to(DEVICE), label_smoothing=eps,
                                             reduction="sum", return_lse=True)
                loss.backward()
                xr = x.double().requires_grad_()
                ref = oracle(xr, y, label_smoothing=eps, reduction="sum")
                ref.backward()
                chk.close(f"{name} value", loss, ref, *tight)
                chk.close(f"{name} grad", xa.grad, torch.nan_to_num(xr.grad), *tight)
                chk.true(f"{name} ignored rows: zero grad", bool((xa.grad[2:] == 0).all()), "")
                ref_lse = torch.logsumexp(x.double()[:2], dim=1)
                chk.close(f"{name} lse", lse[:2], ref_lse, 1e-7, 0.0)
                chk.true(f"{name} lse 0 at ignored rows", bool((lse[2:] == 0).all()), f"{lse}")


def lce_case(chk, tk, name, dtype, *, bias, chunk_size, reduction, **opts):
    gen = torch.Generator().manual_seed(3)
    n, d, v = 9, 16, 300
    h = torch.randn(n, d, generator=gen)
    w = torch.randn(v, d, generator=gen) * 0.5
    b = torch.randn(v, generator=gen) * 0.1 if bias else None
    y = torch.randint(0, v, (n,), generator=gen)
    y[[0, 5, 6]] = -100
    h, w, y = h.to(DEVICE), w.to(DEVICE), y.to(DEVICE)
    b = b.to(DEVICE) if bias else None
    if opts.get("class_weight") is True:
        opts["class_weight"] = (torch.rand(v, generator=gen) + 0.5).to(DEVICE, dtype)
    leaves = [t.to(dtype).clone().requires_grad_() for t in (h, w, b) if t is not None]
    refs = [t.to(dtype).double().requires_grad_() for t in (h, w, b) if t is not None]
    out = tk.linear_cross_entropy(
        leaves[0], leaves[1], y, leaves[2] if bias else None, reduction=reduction,
        chunk_size=chunk_size, **opts,
    )
    logits = refs[0] @ refs[1].T + (refs[2] if bias else 0.0)  # (N, V) float64
    cw = opts.pop("class_weight", None)
    ref = oracle(logits, y, weight=cw, reduction=reduction, **opts)
    rtol, atol = TOL["lce"][dtype]
    chk.true(f"{name} dtype", out.dtype == dtype and out.shape == ref.shape, f"{out.dtype}")
    chk.close(f"{name} value", out, ref, rtol, atol)
    g = upstream(ref, seed=2)
    out.backward(g.to(dtype))
    ref.backward(g.double())
    for label, leaf, r in zip(["hidden", "weight", "bias"], leaves, refs, strict=False):
        chk.true(f"{name} grad {label} dtype", leaf.grad.dtype == dtype, f"{leaf.grad.dtype}")
        chk.close(f"{name} grad {label}", leaf.grad, r.grad, rtol, atol)


def group_linear_ce(chk, tk, ce_mod):
    two_pass(ce_mod)
    for dtype in [torch.float32, torch.bfloat16]:
        lce_case(chk, tk, f"lce plain mean {dtype}", dtype, bias=True, chunk_size=4,
                 reduction="mean")
        lce_case(chk, tk, f"lce all-options sum {dtype}", dtype, bias=True, chunk_size=None,
                 reduction="sum", class_weight=True, label_smoothing=0.1, lse_square_scale=1e-2,
                 softcap=6.0)
        lce_case(chk, tk, f"lce none no-bias {dtype}", dtype, bias=False, chunk_size=6,
                 reduction="none", label_smoothing=0.05)
    # grad_weight accumulated in the weight's dtype (the low-memory setting).
    lce_mod = sys.modules["losskit.kernels.triton.linear_cross_entropy"]
    lce_mod.WEIGHT_GRAD_FP32 = False
    lce_case(chk, tk, "lce bf16 weight-grad accumulation", torch.bfloat16, bias=True,
             chunk_size=4, reduction="mean", label_smoothing=0.1)
    lce_mod.WEIGHT_GRAD_FP32 = True
    # return_lse, and only hidden requiring grad (weight frozen).
    gen = torch.Generator().manual_seed(4)
    h, w = torch.randn(5, 8, generator=gen), torch.randn(300, 8, generator=gen)
    y = torch.randint(0, 300, (5,), generator=gen)
    h, w, y = h.to(DEVICE), w.to(DEVICE), y.to(DEVICE)
    ha = h.clone().requires_grad_()
    loss, lse = tk.linear_cross_entropy(ha, w, y, return_lse=True, chunk_size=4)
    hr = h.double().requires_grad_()
    ref_logits = hr @ w.double().T
    chk.close("lce lse", lse, torch.logsumexp(ref_logits, dim=1), 1e-5, 1e-6)
    ref = oracle(ref_logits, y)
    loss.backward()
    ref.backward()
    chk.close("lce frozen-weight grad hidden", ha.grad, hr.grad, *TOL["lce"][torch.float32])
    # An empty batch: 'mean' is 0 and the weight gradient is zeros.
    wa = w.clone().requires_grad_()
    out = tk.linear_cross_entropy(h[:0], wa, y[:0])
    out.backward()
    chk.true("lce empty", out.item() == 0.0 and bool((wa.grad == 0).all()), f"{out}")
    # No gradient wanted (torch.no_grad): the chunked pass computes no gradient at all.
    lce_mod = sys.modules["losskit.kernels.triton.linear_cross_entropy"]
    seen = []
    original = lce_mod._chunked_pass
    lce_mod._chunked_pass = lambda *a: seen.append(a[-1]) or original(*a)
    with torch.no_grad():
        tk.linear_cross_entropy(h, wa, y)
    lce_mod._chunked_pass = original
    chk.true("lce no_grad computes no gradient", seen == [(False, False, False)], f"{seen}")
    # A second derivative is refused, never silently wrong.
    ha = h.clone().requires_grad_()
    try:
        torch.autograd.grad(tk.linear_cross_entropy(ha, wa, y), ha, create_graph=True)
        chk.true("lce create_graph refused", False, "no error")
    except RuntimeError as err:
        chk.true("lce create_graph refused", "fused(False)" in str(err), err)


def main(group):
    import numpy as np

    np.seterr(all="ignore")  # the interpreter evaluates masked-off lanes (-inf - -inf) in numpy
    import losskit.kernels.triton as tk

    ce_mod = sys.modules["losskit.kernels.triton.cross_entropy"]
    chk = Checker()
    globals()[f"group_{group}"](chk, tk, ce_mod)
    for failure in chk.failures:
        print("FAIL", failure)
    if chk.failures:
        sys.exit(1)
    print(f"{group}: {chk.count} checks passed")


if __name__ == "__main__":
    main(sys.argv[1])
