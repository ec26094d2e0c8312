"""Benchmark harness for the losses: time and peak memory against torch, ratio tables.

One family is a list of *variants* (torch eager, ``torch.compile``, losskit, the machine's floor)
that each build their inputs and return a ``step()`` doing one forward+backward. The harness:

* times each variant in its own fresh process (:func:`time_fresh`), so that the allocator state,
  caches and compiled graphs one variant leaves behind cannot slow or speed another. A fresh
  process is forked from a ``forkserver`` that has imported torch and losskit but never run an op
  (as clean as a new interpreter, without paying torch's import per variant). Variants alternate
  over ``rounds`` (A, B, A, B, ...: machine noise that drifts hits them alike), each child runs a
  warm-up and then its timed repeats, and the median over all of a variant's repeats is kept;
  ``torch.compile``'s first call is timed separately as the compile time;
* measures each variant's peak memory in a fresh Python process: peak RSS minus a floor taken
  after the inputs (and for linear+CE the gradients) are allocated, so the number is what the
  step adds;
* prints each ratio next to its target (issue 4) and can append the rows, with the machine, torch
  version and date, to a Markdown file (``benchmarks/results.md``).

``losskit bench`` runs a quick version (small shapes, no compile, no memory); the scripts in
``benchmarks/`` run the full sizes, one command each (see their docstrings). Example (tiny, for
the doctest):

>>> fam = FAMILIES["elementwise"]
>>> rows = time_family(fam, fam.quick[0], repeats=1, warmup=0, compile_=False,
...                    names=["mse_loss torch"])
>>> rows[0].name, rows[0].seconds > 0, rows[0].cpu > 0
('mse_loss torch', True, True)
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import datetime
import importlib
import importlib.util
import json
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any, cast

import torch
import torch.nn.functional as F

# ----------------------------------------------------------------------------------------------
# Variants


@dataclasses.dataclass
class Case:
    """One variant's inputs, built: ``step()`` runs forward+backward; sizes in bytes."""

    step: Callable[[], object]
    input_bytes: int
    grad_bytes: int


@dataclasses.dataclass
class Variant:
    name: str
    build: Callable[[dict], Case]  # size dict -> Case
    compiled: bool = False  # first call compiles: timed apart, memory skipped


@dataclasses.dataclass
class Target:
    """``numerator / denominator <= bound`` (times or extra memory, by variant name)."""

    label: str
    numerator: str
    denominator: str | None  # None: the numerator's memory in units of the size's "unit" bytes
    bound: float
    kind: str = "time"  # "time" | "memory"


@dataclasses.dataclass
class Family:
    name: str
    variants: list[Variant]
    targets: list[Target]
    full: list[dict]  # sizes for the benchmark scripts
    quick: list[dict]  # sizes for `losskit bench`
    requires: str | None = None  # an optional package it needs; "all" skips it when missing


def _nbytes(*tensors: torch.Tensor) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _dtype(size: dict) -> torch.dtype:
    return getattr(torch, size.get("dtype", "float32"))


# Cross-entropy on materialised logits -----------------------------------------------------------


def _ce_inputs(size: dict):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(size["N"], size["C"], generator=gen).to(_dtype(size)).requires_grad_()
    y = torch.randint(0, size["C"], (size["N"],), generator=gen)
    return x, y


def _ce_step(loss_fn: Callable) -> Callable[[dict], Case]:
    def build(size: dict) -> Case:
        x, y = _ce_inputs(size)

        def step():
            x.grad = None
            loss_fn(x, y).backward()

        return Case(step, _nbytes(x), 0)

    return build


def _ce_compiled(size: dict) -> Case:
    fn = torch.compile(F.cross_entropy)
    return _ce_step(fn)(size)


def _past_startup_checks(name: str, *args) -> None:
    """Call ``LF.<name>(*args)`` (tiny inputs) until losskit's startup value checks are done.

    The targets compare losskit "once startup checks are done" (docs/design.md); running
    the big step that many times would only make the benchmark slower.
    """
    import losskit.functional as LF

    checks = importlib.import_module("losskit.checks")  # `losskit.checks` is also a function
    for _ in range(checks.STARTUP_CALLS + 1):
        getattr(LF, name)(*args)


def _ce_losskit(inplace: bool) -> Callable[[dict], Case]:
    def build(size: dict) -> Case:
        import losskit.functional as LF

        _past_startup_checks("cross_entropy", torch.randn(4, 3), torch.tensor([0, 1, 2, 0]))
        x, y = _ce_inputs(size)
        if not inplace:

            def step():
                x.grad = None
                cast(torch.Tensor, LF.cross_entropy(x, y)).backward()

            return Case(step, _nbytes(x), 0)
        # In place needs non-leaf logits (as an lm head's output is). They are made once, by an op
        # that is not a view (an in-place write into a view re-routes its backward through the
        # base), and the step stops the backward at them, as a leaf's ``.backward()`` does.
        logits = x.detach() * 1.0
        logits.requires_grad_()
        logits = logits * 1.0  # (N, C), non-leaf

        def step_inplace():
            torch.autograd.grad(LF.cross_entropy(logits, y, inplace=True), logits)

        return Case(step_inplace, _nbytes(logits), 0)

    return build


def _copy_floor(size: dict) -> Case:
    """One read of the logits and one write of a gradient: the memory-bandwidth floor."""
    x, _ = _ce_inputs(size)
    out = torch.empty_like(x)
    return Case(lambda: out.copy_(x.detach()), _nbytes(x), 0)


def _softmax_floor(size: dict) -> Case:
    """torch's fused softmax over the logits into a reused buffer: one ``exp`` per logit, one read
    and one write; no kernel made of torch ops that evaluates each exp once can beat it."""
    x, _ = _ce_inputs(size)
    out = torch.empty_like(x)
    return Case(lambda: torch._softmax(x.detach(), 1, False, out=out), _nbytes(x), 0)


CROSS_ENTROPY = Family(
    "cross_entropy",
    [
        Variant("torch eager", _ce_step(F.cross_entropy)),
        Variant("torch.compile", _ce_compiled, compiled=True),
        Variant("losskit", _ce_losskit(inplace=False)),
        Variant("losskit inplace", _ce_losskit(inplace=True)),
        Variant("copy floor", _copy_floor),
        Variant("softmax floor", _softmax_floor),
    ],
    [
        Target("time vs torch.compile", "losskit", "torch.compile", 0.35),
        Target("time vs torch.compile (inplace)", "losskit inplace", "torch.compile", 0.35),
        Target("time vs eager", "losskit", "torch eager", 0.20),
        Target("time vs eager (inplace)", "losskit inplace", "torch eager", 0.20),
        Target("time vs copy floor", "losskit", "copy floor", 2.0),
        Target("time vs copy floor (inplace)", "losskit inplace", "copy floor", 2.0),
        Target("softmax floor vs copy floor (info)", "softmax floor", "copy floor", float("inf")),
        Target("time vs softmax floor (inplace, info)", "losskit inplace", "softmax floor",
               float("inf")),
        Target("extra memory / logits (out of place)", "losskit", None, 1.0, "memory"),
        Target("extra memory / logits (inplace)", "losskit inplace", None, 0.05, "memory"),
        Target("extra memory / logits (torch eager, info)", "torch eager", None, float("inf"),
               "memory"),
    ],
    full=[{"N": 8192, "C": 32000, "dtype": "float32"},
          {"N": 8192, "C": 32000, "dtype": "bfloat16"}],
    quick=[{"N": 1024, "C": 8000, "dtype": "float32"}],
)


# Linear + cross-entropy -------------------------------------------------------------------------


def _lce_inputs(size: dict):
    gen = torch.Generator().manual_seed(0)
    dt = _dtype(size)
    h = (torch.randn(size["N"], size["D"], generator=gen)).to(dt).requires_grad_()
    w = (torch.randn(size["V"], size["D"], generator=gen) / size["D"] ** 0.5).to(dt)
    w.requires_grad_()
    y = torch.randint(0, size["V"], (size["N"],), generator=gen)
    return h, w, y


def _lce_step(loss_fn: Callable) -> Callable[[dict], Case]:
    def build(size: dict) -> Case:
        h, w, y = _lce_inputs(size)

        def step():
            h.grad = w.grad = None
            loss_fn(h, w, y).backward()

        return Case(step, _nbytes(h, w), _nbytes(h, w))

    return build


def _lce_eager(h, w, y):
    return F.cross_entropy(h @ w.T, y)


def _lce_compiled(size: dict) -> Case:
    return _lce_step(torch.compile(_lce_eager))(size)


def _lce_torch_chunked(h, w, y):
    return F.linear_cross_entropy(h, w, y, options=torch.nn.LinearCrossEntropyOptions())


def _lce_losskit(h, w, y):
    import losskit.functional as LF

    return LF.linear_cross_entropy(h, w, y)


def _lce_losskit_build(size: dict) -> Case:
    _past_startup_checks("linear_cross_entropy", torch.randn(4, 2), torch.randn(3, 2),
                         torch.tensor([0, 1, 2, 0]))
    return _lce_step(_lce_losskit)(size)


def _three_matmuls(size: dict) -> Case:
    """``h @ W.T``, ``G @ W``, ``G.T @ h``: the matmuls any linear+CE must run, into buffers."""
    h, w, _ = _lce_inputs(size)
    h, w = h.detach(), w.detach()
    logits = torch.empty(size["N"], size["V"], dtype=h.dtype)
    dh, dw = torch.empty_like(h), torch.empty_like(w)

    def step():
        torch.mm(h, w.T, out=logits)
        torch.mm(logits, w, out=dh)
        torch.mm(logits.T, h, out=dw)

    return Case(step, _nbytes(h, w), _nbytes(h, w))


LINEAR_CROSS_ENTROPY = Family(
    "linear_cross_entropy",
    [
        Variant("torch eager", _lce_step(_lce_eager)),
        Variant("torch.compile", _lce_compiled, compiled=True),
        Variant("torch F.linear_cross_entropy chunked", _lce_step(_lce_torch_chunked)),
        Variant("losskit", _lce_losskit_build),
        Variant("3 matmuls", _three_matmuls),
    ],
    [
        Target("time vs 3 matmuls", "losskit", "3 matmuls", 1.15),
        Target("time vs torch eager (issue's estimate)", "losskit", "torch eager", 0.65),
        Target("3 matmuls vs torch eager (info)", "3 matmuls", "torch eager", float("inf")),
        Target("extra memory vs torch chunked", "losskit", "torch F.linear_cross_entropy chunked",
               1.0, "memory"),
    ],
    full=[{"N": 4096, "D": 512, "V": 32000, "dtype": "float32"}],
    quick=[{"N": 1024, "D": 256, "V": 8000, "dtype": "float32"}],
)
if not hasattr(F, "linear_cross_entropy"):  # torch < 2.13
    LINEAR_CROSS_ENTROPY.variants = [
        v for v in LINEAR_CROSS_ENTROPY.variants if "chunked" not in v.name
    ]


# Elementwise losses -------------------------------------------------------------------------------


def _ew_build(name: str, library: str) -> Callable[[dict], Case]:
    def build(size: dict) -> Case:
        import losskit.functional as LF

        gen = torch.Generator().manual_seed(0)
        n = size["numel"]
        if name == "binary_cross_entropy":
            x = torch.rand(n, generator=gen).clamp_(0.01, 0.99).requires_grad_()
            y = torch.rand(n, generator=gen)
        else:
            x = torch.randn(n, generator=gen).requires_grad_()
            y = torch.randn(n, generator=gen)
        fn = getattr(F if library == "torch" else LF, name)
        if library == "losskit":
            _past_startup_checks(name, x.detach()[:8], y[:8])

        def step():
            x.grad = None
            fn(x, y).backward()

        return Case(step, _nbytes(x, y), 0)

    return build


_EW = ["mse_loss", "l1_loss", "huber_loss", "binary_cross_entropy"]
ELEMENTWISE = Family(
    "elementwise",
    [Variant(f"{n} {lib}", _ew_build(n, lib)) for n in _EW for lib in ("torch", "losskit")],
    [Target(f"{n} time vs eager", f"{n} losskit", f"{n} torch", 1.10) for n in _EW],
    full=[{"numel": 20_000_000}],
    quick=[{"numel": 1_000_000}],
)


# Contrastive (NT-Xent) ----------------------------------------------------------------------------


def _nt_xent_torch(z1, z2, t=0.1):
    """NT-Xent in plain torch, as usually written by hand: the full (2B, 2B) matrix."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)  # (2B, D)
    sim = (z @ z.T / t).fill_diagonal_(float("-inf"))  # (2B, 2B)
    b = z1.shape[0]
    positives = torch.cat([torch.arange(b, 2 * b), torch.arange(b)])
    return F.cross_entropy(sim, positives)


def _contrastive_build(chunk: int | None, library: str) -> Callable[[dict], Case]:
    def build(size: dict) -> Case:
        import losskit.functional as LF

        gen = torch.Generator().manual_seed(0)
        z1 = torch.randn(size["B"], size["D"], generator=gen).requires_grad_()
        z2 = torch.randn(size["B"], size["D"], generator=gen).requires_grad_()
        fn: Callable[..., Any]
        if library == "torch":
            fn = _nt_xent_torch
        else:
            _past_startup_checks("info_nce", torch.randn(4, 3), torch.randn(4, 3))
            def fn(a, b):
                return LF.info_nce(a, b, chunk_size=chunk)

        def step():
            z1.grad = z2.grad = None
            fn(z1, z2).backward()

        return Case(step, _nbytes(z1, z2), _nbytes(z1, z2))

    return build


# A Hugging Face causal LM's training step (losskit.integrations.transformers) -------------------


def _hf_build(fused: bool) -> Callable[[dict], Case]:
    """One forward+backward of a ``layers``-deep Llama with the full ``V`` vocabulary on
    ``(B, T)`` tokens: its own loss (logits, then ``F.cross_entropy``) or ``fuse_loss``'s."""

    def build(size: dict) -> Case:
        import transformers

        from losskit.integrations.transformers import fuse_loss

        torch.manual_seed(0)
        heads = max(1, size["D"] // 64)
        config = transformers.LlamaConfig(
            vocab_size=size["V"], hidden_size=size["D"], intermediate_size=2 * size["D"],
            num_hidden_layers=size["layers"], num_attention_heads=heads,
            num_key_value_heads=heads, max_position_embeddings=size["T"],
            tie_word_embeddings=False,
        )
        model = transformers.LlamaForCausalLM(config).train()
        if fused:
            fuse_loss(model)
            _past_startup_checks("linear_cross_entropy", torch.randn(4, 2), torch.randn(3, 2),
                                 torch.tensor([0, 1, 2, 0]))
        gen = torch.Generator().manual_seed(0)
        ids = torch.randint(size["V"], (size["B"], size["T"]), generator=gen)
        params = list(model.parameters())

        def step():
            model.zero_grad(set_to_none=True)
            model(input_ids=ids, labels=ids).loss.backward()

        return Case(step, _nbytes(*params), _nbytes(*params))

    return build


CONTRASTIVE = Family(
    "contrastive",
    [
        Variant("torch NT-Xent", _contrastive_build(None, "torch")),
        Variant("losskit plain", _contrastive_build(None, "losskit")),
        Variant("losskit chunked", _contrastive_build(512, "losskit")),
    ],
    [
        Target("time chunked vs plain", "losskit chunked", "losskit plain", 1.3),
        Target("time plain vs torch NT-Xent", "losskit plain", "torch NT-Xent", 1.1),
        Target("extra memory chunked / one (2B, 2B) matrix", "losskit chunked", None, 0.25,
               "memory"),
        Target("extra memory chunked vs plain (info)", "losskit chunked", "losskit plain",
               float("inf"), "memory"),
    ],
    full=[{"B": b, "D": 128} for b in (1024, 2048, 4096)],
    quick=[{"B": b, "D": 128} for b in (512, 1024)],
)


TRANSFORMERS = Family(
    "transformers",
    [
        Variant("own loss (transformers)", _hf_build(False)),
        Variant("fuse_loss (losskit)", _hf_build(True)),
    ],
    [
        Target("time fused / own", "fuse_loss (losskit)", "own loss (transformers)", 1.10),
        Target("extra memory / logits (fused)", "fuse_loss (losskit)", None, 1.0, "memory"),
        Target("extra memory / logits (own, info)", "own loss (transformers)", None,
               float("inf"), "memory"),
        Target("extra memory fused / own (info)", "fuse_loss (losskit)",
               "own loss (transformers)", float("inf"), "memory"),
    ],
    full=[{"V": 32000, "D": 256, "layers": 1, "B": 2, "T": 512},
          {"V": 128256, "D": 256, "layers": 1, "B": 2, "T": 512}],
    quick=[{"V": 8000, "D": 128, "layers": 1, "B": 2, "T": 128}],
    requires="transformers",
)

FAMILIES = {
    f.name: f for f in (CROSS_ENTROPY, LINEAR_CROSS_ENTROPY, ELEMENTWISE, CONTRASTIVE, TRANSFORMERS)
}


# Distillation: student hidden [N, H] + head [V, H], teacher hidden [N, H] + head [V, H] -------


def _kd_inputs(size: dict):
    gen = torch.Generator().manual_seed(0)
    n, h, v = size["N"], size["H"], size["V"]
    hs = torch.randn(n, h, generator=gen).requires_grad_()
    ws = (torch.randn(v, h, generator=gen) / h**0.5).requires_grad_()
    ht, wt = torch.randn(n, h, generator=gen), torch.randn(v, h, generator=gen) / h**0.5
    return hs, ws, ht, wt


def _kd_step(loss_fn: Callable, checks_name: str | None = None) -> Callable[[dict], Case]:
    def build(size: dict) -> Case:
        if checks_name == "linear_kd_loss":  # hidden (4, 2) + head (3, 2), twice
            _past_startup_checks(checks_name, *(torch.randn(n, 2) for n in (4, 3, 4, 3)))
        elif checks_name is not None:
            _past_startup_checks(checks_name, torch.randn(4, 3), torch.randn(4, 3))
        hs, ws, ht, wt = _kd_inputs(size)

        def step():
            hs.grad = ws.grad = None
            loss_fn(hs, ws, ht, wt).backward()

        return Case(step, _nbytes(hs, ws, ht, wt), _nbytes(hs, ws))

    return build


# Preference (DPO) from hidden states ----------------------------------------------------------


def _pref_inputs(size: dict):
    """Chosen and rejected hidden states (B, S, H), the head (V, H), labels with a 16-token
    prompt ignored, and fixed reference log-probabilities."""
    gen = torch.Generator().manual_seed(0)
    b, s, d, v = size["B"], size["S"], size["H"], size["V"]
    hc = torch.randn(b, s, d, generator=gen).requires_grad_()
    hr = torch.randn(b, s, d, generator=gen).requires_grad_()
    w = (torch.randn(v, d, generator=gen) / d**0.5).requires_grad_()
    yc, yr = (torch.randint(0, v, (b, s), generator=gen) for _ in range(2))
    yc[:, :16] = -100
    yr[:, :16] = -100
    refs = (-torch.rand(b, generator=gen) * s * 10, -torch.rand(b, generator=gen) * s * 10)
    return hc, hr, w, yc, yr, refs


def _pref_step(loss_fn: Callable) -> Callable[[dict], Case]:
    def build(size: dict) -> Case:
        hc, hr, w, yc, yr, refs = _pref_inputs(size)

        def step():
            hc.grad = hr.grad = w.grad = None
            loss_fn(hc, hr, w, yc, yr, *refs).backward()

        return Case(step, _nbytes(hc, hr, w), _nbytes(hc, hr, w))

    return build


def _kd_torch_eager(hs, ws, ht, wt, temperature=2.0):
    """Hinton's KD written in plain torch: both logits, then kl_div * T^2."""
    s = hs @ ws.T  # (N, V)
    with torch.no_grad():
        t = ht @ wt.T  # (N, V)
    log_p, log_q = F.log_softmax(s / temperature, -1), F.log_softmax(t / temperature, -1)
    return F.kl_div(log_p, log_q, reduction="batchmean", log_target=True) * temperature**2


def _kd_plain(divergence: str) -> Callable:
    def loss(hs, ws, ht, wt):
        import losskit.functional as LF

        s = hs @ ws.T  # (N, V)
        with torch.no_grad():
            t = ht @ wt.T  # (N, V)
        if divergence == "kl":
            return LF.kd_loss(s, t, temperature=2.0)
        return LF.jsd(s, t, beta=0.5, temperature=2.0)

    return loss


def _kd_fused(divergence: str) -> Callable:
    def loss(hs, ws, ht, wt):
        import losskit.functional as LF

        return LF.linear_kd_loss(hs, ws, ht, wt, divergence=divergence, temperature=2.0)

    return loss


DISTILLATION = Family(
    "distillation",
    [
        Variant("torch eager kd", _kd_step(_kd_torch_eager)),
        Variant("losskit kd_loss on logits", _kd_step(_kd_plain("kl"), "kd_loss")),
        Variant("losskit linear_kd_loss", _kd_step(_kd_fused("kl"), "linear_kd_loss")),
        Variant("losskit jsd on logits", _kd_step(_kd_plain("jsd"), "jsd")),
        Variant("losskit linear_kd_loss jsd", _kd_step(_kd_fused("jsd"), "linear_kd_loss")),
    ],
    [
        Target("time fused kd vs plain kd", "losskit linear_kd_loss", "losskit kd_loss on logits",
               1.3),
        Target("time fused kd vs torch eager kd", "losskit linear_kd_loss", "torch eager kd", 1.3),
        Target("time fused jsd vs plain jsd", "losskit linear_kd_loss jsd",
               "losskit jsd on logits", 1.3),
        Target("extra memory fused kd / one logits tensor", "losskit linear_kd_loss", None, 1.0,
               "memory"),
        Target("extra memory fused jsd / one logits tensor", "losskit linear_kd_loss jsd", None,
               1.0, "memory"),
        Target("extra memory torch eager kd / one logits tensor (info)", "torch eager kd", None,
               float("inf"), "memory"),
    ],
    full=[{"N": 1024, "H": 256, "V": 16000}, {"N": 2048, "H": 256, "V": 16000}],
    quick=[{"N": 256, "H": 64, "V": 4000}],
)
FAMILIES[DISTILLATION.name] = DISTILLATION


def _pref_torch(hc, hr, w, yc, yr, ref_c, ref_r, beta=0.1):
    """Plain torch: both answers' logits at once, log_softmax, gather, mask, the DPO formula."""
    b = hc.shape[0]
    logits = torch.cat([hc, hr]) @ w.T  # (2B, S, V)
    y = torch.cat([yc, yr])  # (2B, S)
    token = torch.log_softmax(logits, -1).gather(-1, y.clamp(min=0)[..., None])[..., 0]
    logps = (token * (y != -100)).sum(-1)  # (2B,)
    h = (logps[:b] - ref_c) - (logps[b:] - ref_r)
    return -F.logsigmoid(beta * h).mean()


def _pref_losskit_plain(hc, hr, w, yc, yr, ref_c, ref_r):
    """losskit on materialised logits: per-token cross-entropy, sums, then dpo_loss."""
    import losskit.functional as LF

    b = hc.shape[0]
    logits = torch.cat([hc, hr]) @ w.T  # (2B, S, V)
    y = torch.cat([yc, yr])  # (2B, S)
    ce = cast(torch.Tensor, LF.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none"))
    logps = -ce
    logps = logps.view(y.shape).sum(-1)  # (2B,)
    return LF.dpo_loss(logps[:b], logps[b:], ref_c, ref_r)


def _pref_losskit_fused(hc, hr, w, yc, yr, ref_c, ref_r):
    import losskit.functional as LF

    return LF.linear_preference_loss(hc, hr, w, yc, yr, ref_c, ref_r)


def _pref_build(fn: Callable) -> Callable[[dict], Case]:
    def build(size: dict) -> Case:
        hc, hr, w, yc, yr, refs = _pref_inputs({**size, "B": 1, "S": 20, "V": 50, "H": 4})
        for _ in range(_checks_module().STARTUP_CALLS + 1):  # past the startup value checks
            fn(hc, hr, w, yc, yr, *refs)
        return _pref_step(fn)(size)

    return build


def _checks_module():
    return importlib.import_module("losskit.checks")  # `losskit.checks` is also a function


PREFERENCE = Family(
    "preference",
    [
        Variant("torch eager (logits)", _pref_step(_pref_torch)),
        Variant("losskit plain (logits)", _pref_build(_pref_losskit_plain)),
        Variant("losskit fused", _pref_build(_pref_losskit_fused)),
    ],
    [
        Target("time vs losskit plain", "losskit fused", "losskit plain (logits)", 1.3),
        Target("time vs torch eager", "losskit fused", "torch eager (logits)", 1.3),
        Target("extra memory / logits (fused)", "losskit fused", None, 1.0, "memory"),
        Target("extra memory / logits (torch eager, info)", "torch eager (logits)", None,
               float("inf"), "memory"),
    ],
    # 1024 and 2048 tokens of logits (125 and 250 MiB); the fused chunk is 512 tokens (64 MiB).
    full=[{"B": 2, "S": 256, "H": 128, "V": 32000}, {"B": 4, "S": 256, "H": 128, "V": 32000}],
    quick=[{"B": 2, "S": 64, "H": 64, "V": 4000}],
)


FAMILIES[PREFERENCE.name] = PREFERENCE


# ----------------------------------------------------------------------------------------------
# Measuring


@dataclasses.dataclass
class Row:
    name: str
    seconds: float  # median step time (wall clock)
    best: float = float("nan")  # fastest repeat: the least disturbed by other processes
    compile_seconds: float | None = None
    extra_bytes: int | None = None  # peak memory above the floor, from a fresh process
    cpu: float = float("nan")  # median step CPU time of the process (less hurt by a busy machine)


@dataclasses.dataclass
class Timing:
    """What one fresh process measured: seconds per step for each timed repeat."""

    wall: list[float]
    cpu: list[float]
    compile_seconds: float | None = None


_FORKSERVER = None


def _fresh_context():
    """The ``forkserver`` context fresh processes come from (set up once per process).

    The server imports torch and losskit (not this module's callers' state) and then only forks;
    it never runs a torch op, so no thread pool or allocator cache exists to be inherited.
    """
    global _FORKSERVER
    if _FORKSERVER is None:
        _FORKSERVER = multiprocessing.get_context("forkserver")
        _FORKSERVER.set_forkserver_preload(["torch", "losskit.bench"])
    return _FORKSERVER


def run_fresh(fn: Callable, *args):
    """``fn(*args)`` in a fresh process; returns its result (``fn`` and the result are pickled,
    so ``fn`` is a module-level function and its arguments plain data)."""
    # One executor per call runs one task, so its one worker is always fresh (no
    # max_tasks_per_child: Python 3.10, which losskit supports, lacks it).
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=_fresh_context()) as pool:
        return pool.submit(fn, *args).result()


def _timing_child(
    build: Callable[..., Case], args: tuple, repeats: int, warmup: int, inner: int,
    threads: int | None, compiled: bool,
) -> Timing:
    """Inside the fresh process: build the case, warm up, time ``repeats`` x ``inner`` steps."""
    if threads:
        torch.set_num_threads(threads)
    case = build(*args)
    compile_s = None
    if compiled:
        t0 = time.perf_counter()
        case.step()
        compile_s = time.perf_counter() - t0
    for _ in range(warmup * inner):
        case.step()
    wall, cpu = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        for _ in range(inner):
            case.step()
        cpu.append((time.process_time() - c0) / inner)
        wall.append((time.perf_counter() - w0) / inner)
    return Timing(wall, cpu, compile_s)


def time_fresh(
    variants: dict[str, tuple[Callable[..., Case], tuple]],
    *,
    rounds: int,
    repeats: int,
    warmup: int,
    inner: int = 1,
    threads: int | None = None,
    compiled: tuple[str, ...] = (),
) -> list[Row]:
    """Time each variant ``name -> (build, args)`` in fresh processes, ``rounds`` each.

    ``build(*args)`` (a module-level function, run in the child) returns a :class:`Case`. Each
    child runs ``warmup`` untimed and ``repeats`` timed repeats of ``inner`` steps; the variants
    take turns, round after round. Returns one :class:`Row` per variant: the medians over all of
    its repeats (wall clock and process CPU time) and its fastest repeat. Variants named in
    ``compiled`` have their first step timed apart (in the first round) as the compile time.
    """
    wall: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    compile_s: dict[str, float | None] = {}
    for _ in range(rounds):
        for name, (build, args) in variants.items():
            timing = run_fresh(_timing_child, build, args, repeats, warmup, inner, threads,
                               name in compiled)
            wall[name] += timing.wall
            cpu[name] += timing.cpu
            compile_s.setdefault(name, timing.compile_seconds)
    return [Row(name, statistics.median(wall[name]), min(wall[name]), compile_s[name],
                cpu=statistics.median(cpu[name])) for name in variants]


def build_variant(family: str, variant: str, size: dict) -> Case:
    """The :class:`Case` of a variant of a family in :data:`FAMILIES` (for the fresh processes)."""
    return next(v for v in FAMILIES[family].variants if v.name == variant).build(size)


def time_family(
    family: Family,
    size: dict,
    *,
    repeats: int,
    warmup: int,
    compile_: bool,
    names: list[str] | None = None,
    rounds: int = 1,
    threads: int | None = None,
) -> list[Row]:
    """Median step time of each variant, each variant in its own fresh processes."""
    chosen = [v for v in family.variants if (compile_ or not v.compiled)]
    if names is not None:
        chosen = [v for v in chosen if v.name in names]
    variants = {v.name: (build_variant, (family.name, v.name, size)) for v in chosen}
    return time_fresh(variants, rounds=rounds, repeats=repeats, warmup=warmup, threads=threads,
                      compiled=tuple(v.name for v in chosen if v.compiled))


def _status_bytes(field: str) -> int:
    """``VmRSS`` / ``VmHWM`` of this process from /proc (Linux), in bytes."""
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(field + ":"))
    return int(line.split()[1]) * 1024  # reported in kB


def memory_child(family: str, variant: str, size: dict) -> int:
    """In a fresh process: peak RSS of one step above a floor holding the inputs and gradients.

    The floor is the resident set once the inputs exist plus the gradients' bytes (which the step
    allocates and keeps); the peak is the high-water mark of the step alone (reset just before it
    through /proc/self/clear_refs, which ``ru_maxrss`` cannot do: it even survives exec). The same
    variant first runs once on tiny shapes (each dimension at most 256), so that what any first
    call allocates once per process (thread pools, the autograd engine's threads, lazily built
    kernels; ~2 MiB) is not charged to the step, and no large block is freed into the heap to be
    reused by it.
    """
    v = next(v for v in FAMILIES[family].variants if v.name == variant)
    v.build({k: min(x, 256) if isinstance(x, int) else x for k, x in size.items()}).step()
    case = v.build(size)
    before = _status_bytes("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    case.step()
    return _status_bytes("VmHWM") - before - case.grad_bytes


def measure_memory(family: Family, size: dict, names: list[str]) -> dict[str, int]:
    """``memory_child`` for each variant, each in its own Python process."""
    out = {}
    for name in names:
        cmd = [sys.executable, "-m", "losskit.bench", "--memory-child",
               json.dumps({"family": family.name, "variant": name, "size": size})]
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if res.returncode == 0:
            out[name] = int(res.stdout.strip().splitlines()[-1])
        else:
            print(f"  memory of {name!r} failed: {res.stderr.strip().splitlines()[-1:]}")
    return out


# ----------------------------------------------------------------------------------------------
# Reporting


def _unit_bytes(family: Family, size: dict) -> int:
    """Bytes of the logits (cross-entropy) that memory targets are expressed in."""
    if family.name == "cross_entropy":
        return size["N"] * size["C"] * _dtype(size).itemsize
    if family.name == "contrastive":  # the (2B, 2B) float32 similarity matrix
        return (2 * size["B"]) ** 2 * 4
    if family.name == "transformers":  # the float32 (B, T, V) logits of the model's own loss
        return size["B"] * size["T"] * size["V"] * 4
    if family.name == "distillation":  # one (N, V) logits tensor
        return size["N"] * size["V"] * _dtype(size).itemsize
    if family.name == "preference":  # chosen and rejected logits, (2B, S, V)
        return 2 * size["B"] * size["S"] * size["V"] * _dtype(size).itemsize
    return 1


def ratios(family: Family, size: dict, rows: list[Row]) -> list[tuple[str, float, float, bool]]:
    """(label, measured ratio, bound, met) for each target whose variants were measured."""
    by = {r.name: r for r in rows}
    out = []
    for t in family.targets:
        a = by.get(t.numerator)
        if a is None:
            continue
        if t.kind == "time":
            b = by.get(t.denominator) if t.denominator is not None else None
            if b is None:
                continue
            value = a.seconds / b.seconds
        else:
            if a.extra_bytes is None:
                continue
            if t.denominator is None:
                value = a.extra_bytes / _unit_bytes(family, size)
            else:
                b = by.get(t.denominator)
                if b is None or b.extra_bytes is None:
                    continue
                value = a.extra_bytes / max(b.extra_bytes, 1)
        out.append((t.label, value, t.bound, value <= t.bound))
    return out


def _size_label(size: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in size.items())


def machine() -> str:
    """CPU model, cores, torch version, date, load: the context every result row carries."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{model}, {os.cpu_count()} cores, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads, {datetime.date.today().isoformat()}, "
            f"load average {load:.1f} at start")


def report(family: Family, size: dict, rows: list[Row]) -> str:
    """Markdown: a table of times/memory per variant, then the ratios next to their targets."""
    lines = [f"#### {family.name}: {_size_label(size)}", "",
             "| variant | median step (ms) | fastest (ms) | compile (s) | extra peak mem (MiB) |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for r in rows:
        comp = "" if r.compile_seconds is None else f"{r.compile_seconds:.1f}"
        mem = "" if r.extra_bytes is None else f"{r.extra_bytes / 2**20:.0f}"
        lines.append(f"| {r.name} | {r.seconds * 1e3:.1f} | {r.best * 1e3:.1f} | {comp} | {mem} |")
    best = [dataclasses.replace(r, seconds=r.best) for r in rows]
    best_values = {label: value for label, value, _, _ in ratios(family, size, best)}
    lines += ["", "| ratio | measured (medians) | target | met | from fastest repeats |",
              "| --- | ---: | ---: | :---: | ---: |"]
    for label, value, bound, met in ratios(family, size, rows):
        target = "info" if bound == float("inf") else f"<= {bound:.2f}"
        verdict = "n/a" if bound == float("inf") else ("yes" if met else "**no**")
        lines.append(f"| {label} | {value:.3f} | {target} | {verdict} | "
                     f"{best_values.get(label, float('nan')):.3f} |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------
# Entry points (`losskit bench`, the benchmark scripts)


def _int_at_least(low: int):
    """An argparse type: an integer >= ``low``, else a message naming the value and the fix."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low:
            raise argparse.ArgumentTypeError(
                f"expected an integer >= {low}, got {text!r}. Fix: e.g. {max(low, 1)}")
        return value

    return parse


_count, _count_or_zero = _int_at_least(1), _int_at_least(0)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``losskit bench`` options."""
    parser.add_argument("--family", choices=["all", *FAMILIES], default="all",
                        help="which kernels to benchmark (default all)")
    parser.add_argument("--full", action="store_true",
                        help="the issue's full sizes (minutes, GBs of memory), not quick ones")
    parser.add_argument("--repeats", type=_count, default=5,
                        help="timed repeats per process (median; default 5)")
    parser.add_argument("--warmup", type=_count_or_zero, default=1,
                        help="untimed runs first, in each process (default 1)")
    parser.add_argument("--rounds", type=_count, default=1,
                        help="fresh processes per variant, taking turns with the other variants "
                             "(default 1; the repeats of every round are pooled)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False,
                        help="include torch.compile variants (slow to compile on a CPU)")
    parser.add_argument("--memory", action=argparse.BooleanOptionalAction, default=False,
                        help="measure peak memory per variant in separate processes")
    parser.add_argument("--threads", type=_count, default=None,
                        help="torch.set_num_threads for the timing (default: torch's choice)")
    parser.add_argument("--append", metavar="FILE.md",
                        help="append the Markdown tables to this file (e.g. benchmarks/results.md)")
    parser.add_argument("--note", default="", help="a line written above the appended tables")


def run(args: argparse.Namespace) -> int:
    """Run the chosen families, print the tables, optionally append them; returns 0."""
    names = [args.family] if args.family != "all" else [
        name for name, f in FAMILIES.items()
        if f.requires is None or importlib.util.find_spec(f.requires) is not None
    ]
    if args.threads:
        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the memory children inherit it
    header = f"### {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC: {machine()}"
    chunks = [header + "\n", f"{args.note}\n" if args.note else ""]
    print(header)
    for name in names:
        family = FAMILIES[name]
        for size in family.full if args.full else family.quick:
            print(f"{name} {_size_label(size)} ...", flush=True)
            rows = time_family(family, size, repeats=args.repeats, warmup=args.warmup,
                               compile_=args.compile, rounds=args.rounds, threads=args.threads)
            if args.memory:
                measurable = [r.name for r in rows if not r.name.endswith("floor")
                              and not next(v for v in family.variants if v.name == r.name).compiled]
                mem = measure_memory(family, size, measurable)
                for r in rows:
                    r.extra_bytes = mem.get(r.name)
            text = report(family, size, rows)
            print(text, flush=True)
            chunks.append(text)
    if args.append:
        with open(args.append, "a") as f:
            f.write("\n" + "\n".join(c for c in chunks if c) + "\n")
    return 0


def script(family: str, description: str, results: str) -> int:
    """Entry point of a ``benchmarks/`` script: one family at the issue's full sizes, with
    torch.compile and memory, appended to ``results``; options (``--quick``, ...) override."""
    parser = argparse.ArgumentParser(description=description)
    add_arguments(parser)
    parser.add_argument("--quick", dest="full", action="store_false", help="small shapes")
    parser.set_defaults(family=family, full=True, compile=True, memory=True, append=results,
                        rounds=3)
    return run(parser.parse_args())


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--memory-child":
        spec = json.loads(sys.argv[2])
        print(memory_child(spec["family"], spec["variant"], spec["size"]))
    else:
        p = argparse.ArgumentParser(prog="python -m losskit.bench", description=__doc__)
        add_arguments(p)
        sys.exit(run(p.parse_args()))
