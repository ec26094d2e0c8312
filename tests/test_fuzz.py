"""Differential fuzzing: random calls of every loss, losskit against torch in float64.

Each loss in ``losskit.functional.__all__`` has one entry in ``GENERATORS``: a hypothesis strategy
that draws a :class:`Call` (its tensors, options, the losskit call and its references). Inputs mix
what real training throws at a loss and what breaks kernels: empty dims, float16 / bfloat16 /
float32 / float64, magnitudes of 1, 1e4 and 1e8, ``-inf`` masking beside ``ignore_index``, NaN and
Inf, strided and channels-last layouts, and, for cross-entropy, the reference, fused and in-place
kernel paths.

Every call runs three times: losskit (value checks ``always`` or ``off``), torch in the input's
dtype (``native``: what torch itself does, overflow and all) and the float64 reference
(``torch.nn.functional`` on float64 copies, or ``tests/oracle.py`` for focal and dice). Values and
input gradients are compared; :func:`classify` calls each call one of

* ``agree``: losskit matches the float64 reference or torch's own result, or both raise;
* a departure named in ``DEPARTURES``: losskit deliberately differs (DESIGN.md, "What bad input
  gets"), and the table says under which facts of the call;
* ``fail``: anything else. The test fails and hypothesis shrinks the call.

Budget: ``LOSSKIT_FUZZ_EXAMPLES`` calls per loss (default 40, a few seconds for the whole module
on 2 cores); ``make fuzz`` runs a long budget. ``PYTHONPATH=. python tests/test_fuzz.py N`` draws N
calls per loss without stopping at a failure and prints the outcome counts per loss and kind.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import oracle
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import losskit
import losskit.functional as LF
from losskit import kernels
from losskit.checks import LossInputError

EXAMPLES = int(os.environ.get("LOSSKIT_FUZZ_EXAMPLES", "40"))
SETTINGS = settings(
    max_examples=EXAMPLES, deadline=None, database=None, derandomize=EXAMPLES <= 100,
    suppress_health_check=list(HealthCheck),
)
DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
# dtype -> (rtol, atol as a fraction of 1 + the reference's largest finite magnitude). float32 and
# float64: a loss is a sum of O(1)-conditioned terms, so its error must not grow with the logits'
# magnitude. Half: the output itself is rounded to 2^-11 / 2^-8 (inputs are rounded before the
# reference sees them).
TOL = {
    torch.float64: (1e-9, 1e-10),
    torch.float32: (2e-4, 2e-5),
    torch.float16: (4e-3, 2e-3),
    torch.bfloat16: (3e-2, 1.5e-2),
}


# ----------------------------------------------------------------------------------------------
# A call and its outcome


@dataclass
class Call:
    """One fuzzed call: ``inputs`` in the test dtype, ``grad`` the names differentiated."""

    loss: str
    inputs: dict[str, torch.Tensor]
    run: Callable[..., object]  # losskit: run(**inputs)
    ref: Callable[..., object]  # float64 reference: ref(**float64 copies)
    native: Callable[..., object] | None  # torch in the input's dtype (None: no torch twin)
    grad: tuple[str, ...] = ("input",)
    checks: str = "always"
    facts: dict[str, object] = field(default_factory=dict)  # what DEPARTURES read

    def describe(self) -> str:
        shapes = {k: (tuple(v.shape), str(v.dtype), v.is_contiguous()) for k, v in
                  self.inputs.items()}
        return f"{self.loss} checks={self.checks} {shapes} {self.facts}"


@dataclass
class Outcome:
    error: BaseException | None = None
    value: torch.Tensor | None = None
    extra: torch.Tensor | None = None  # the log-sum-exp, when the call returns it
    grads: dict[str, torch.Tensor | None] = field(default_factory=dict)


def _execute(fn, inputs, grad, *, to64=False) -> Outcome:
    leaves = {}
    for name, t in inputs.items():
        t = t.detach()
        if to64 and t.is_floating_point():
            t = t.double()
        if name in grad and t.is_floating_point():
            t = t.clone().requires_grad_(True) if to64 else _same_layout_leaf(t)
        leaves[name] = t
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = fn(**leaves)
            value, extra = out if isinstance(out, tuple) else (out, None)
            grads = {}
            names = [n for n in grad if n in leaves and leaves[n].requires_grad]
            diff = [leaves[n] for n in names]
            if diff and value.requires_grad:
                upstream = torch.linspace(0.5, 1.5, value.numel(), dtype=torch.float64)
                g = torch.autograd.grad(
                    (value.double() * upstream.reshape(value.shape)).sum(), diff,
                    allow_unused=True,
                )
                grads = dict(zip(names, g, strict=True))
    except Exception as error:  # the outcome is the error
        return Outcome(error=error)
    return Outcome(value=value.detach(), extra=None if extra is None else extra.detach(),
                   grads=grads)


def _same_layout_leaf(t: torch.Tensor) -> torch.Tensor:
    """A leaf that requires grad with ``t``'s strides (keeps strided / channels-last layouts)."""
    leaf = torch.empty_strided(t.shape, t.stride(), dtype=t.dtype).copy_(t)
    return leaf.requires_grad_(True)


def _close(a: torch.Tensor | None, b: torch.Tensor | None, dtype: torch.dtype) -> bool:
    """Same shape, NaN where the other has NaN, same infinities, finite parts within TOL."""
    if a is None or b is None:
        return (a is None or not bool(a.any())) and (b is None or not bool(b.any()))
    if a.dtype in (torch.float16, torch.bfloat16):
        b = b.to(a.dtype)  # the result is rounded (and overflows) in its own dtype
    a, b = a.double(), b.double()
    if a.shape != b.shape:
        return False
    if not torch.equal(a.isnan(), b.isnan()):
        return False
    fin = b.isfinite() & a.isfinite()
    if not torch.equal(a[~a.isnan() & ~fin], b[~b.isnan() & ~fin]):
        return False
    if not torch.equal(a.isfinite(), b.isfinite()):
        return False
    rtol, atol = TOL[dtype]
    scale = 1.0 + (float(b[fin].abs().max()) if fin.any() else 0.0)
    return bool(((a[fin] - b[fin]).abs() <= atol * scale + rtol * b[fin].abs()).all())


def _matches(lk: Outcome, ref: Outcome, call: Call, dtype: torch.dtype) -> bool:
    if not _close(lk.value, ref.value, dtype) or not _close(lk.extra, ref.extra, dtype):
        return False
    return all(_close(lk.grads.get(n), ref.grads.get(n), dtype) for n in call.grad)


# ----------------------------------------------------------------------------------------------
# Departures: where losskit deliberately differs from torch (DESIGN.md, "What bad input gets").
# Each row: name, where it is documented, and a predicate on (call, losskit, torch's outcome).


def _raised_input_error(lk: Outcome) -> bool:
    return isinstance(lk.error, LossInputError)


def _all_ignored_mean(call: Call, lk: Outcome, ref: Outcome) -> bool:
    """A mean over nothing: losskit 0 with zero gradient, torch NaN (or 0 / 0)."""
    if not call.facts.get("nothing_counted") or call.facts.get("reduction") != "mean":
        return False
    if lk.value is None or ref.value is None or not bool(ref.value.isnan().all()):
        return False
    zero_grads = all(g is None or not bool(g.any()) for g in lk.grads.values())
    return bool((lk.value == 0).all()) and zero_grads


DEPARTURES = [
    ("non_finite_input", "DESIGN: NaN or Inf in input or target -> LossInputError",
     lambda c, lk, ref: bool(c.facts.get("non_finite")) and c.checks == "always"
     and _raised_input_error(lk)),
    ("all_ignored_mean", "DESIGN: every target ignored -> 0 with zero gradient, not NaN",
     _all_ignored_mean),
    ("single_class", "cross-entropy over one class is always 0 (softmax of one logit is 1): "
     "LossInputError naming binary_cross_entropy_with_logits (docs/mistakes.md); the overlap "
     "losses' class-index path likewise (a constant loss), naming the binary path",
     lambda c, lk, ref: c.loss in ("cross_entropy", "linear_cross_entropy", "dice_loss",
                                   "tversky_loss", "focal_tversky_loss", "lovasz_softmax")
     and _raised_input_error(lk)
     and ("has 1 class" in str(lk.error) or "one class" in str(lk.error))),
    ("bce_target_range", "DESIGN: BCE targets outside [0, 1] -> LossInputError",
     lambda c, lk, ref: bool(c.facts.get("target_out_of_range")) and c.checks == "always"
     and _raised_input_error(lk)),
    ("unchecked_non_finite", "DESIGN: NaN/Inf input is refused by the value checks; with "
     "checks off, a loss of losskit's own (focal, dice, linear+CE: matmul gradients mix "
     "0 * inf; log-cosh and quantile: the stable formula's gradient at an infinite error is "
     "+-1, the plain formula's NaN) promises nothing for it",
     lambda c, lk, ref: bool(c.facts.get("non_finite")) and c.checks == "off"
     and c.loss in ("focal_loss", "dice_loss", "linear_cross_entropy", "log_cosh_loss",
                    "quantile_loss", "poly1_cross_entropy", "tversky_loss",
                    "focal_tversky_loss", "lovasz_softmax")),
    ("ignored_row_gradient", "losskit selects ignored rows out: their gradient is 0 even when "
     "their logits are NaN/+inf/all -inf (torch's log_softmax backward gives NaN there)",
     lambda c, lk, ref: c.facts.get("ignore_index") is not None and _grads_nan_became_zero(
         c, lk, ref)),
    ("focal_tversky_perfect_class", "focal_tversky_loss: where 1 - TI is 0 the gradient is 0 "
     "(the limit), not 0 * inf = NaN",
     lambda c, lk, ref: c.loss == "focal_tversky_loss" and _grads_nan_became_zero(c, lk, ref)),
    ("dice_empty_class", "dice_loss: a class with nothing predicted or labelled and smooth=0 "
     "counts as a perfect match (loss 0, zero gradient), not 0 / 0",
     lambda c, lk, ref: c.facts.get("smooth") == 0.0 and not c.facts.get("non_finite")
     and _nan_became_finite(lk, ref)),
]


def _grads_nan_became_zero(call: Call, lk: Outcome, ref: Outcome) -> bool:
    """Same value; each gradient is 0 where the reference's is NaN and agrees elsewhere."""
    if lk.value is None or ref.value is None:
        return False
    dtype = call.facts["dtype"]
    if not _close(lk.value, ref.value, dtype) or not _close(lk.extra, ref.extra, dtype):
        return False
    changed = False
    for name in call.grad:
        a, b = lk.grads.get(name), ref.grads.get(name)
        if a is None or b is None or a.shape != b.shape:
            if not _close(a, b, dtype):
                return False
            continue
        nan = b.isnan() & ~a.isnan()
        changed |= bool(nan.any())
        if not bool((a[nan] == 0).all()) or not _close(a, torch.where(nan, 0.0, b), dtype):
            return False
    return changed


def _nan_became_finite(lk: Outcome, ref: Outcome) -> bool:
    """The reference's value is NaN (a 0 / 0 class) where losskit's is finite."""
    if lk.value is None or ref.value is None or lk.value.shape != ref.value.shape:
        return False
    nan = ref.value.isnan()
    return bool(nan.any()) and bool(lk.value[nan].isfinite().all())


def classify(call: Call, lk: Outcome, native: Outcome | None, ref: Outcome) -> str:
    """``agree``, a DEPARTURES name, or ``fail: <why>``."""
    torch_side = native if native is not None else ref
    if lk.error is not None and torch_side.error is not None:
        # Both raise. losskit's own errors subclass torch's classes; anything else must be torch's.
        if isinstance(lk.error, (LossInputError, type(torch_side.error))):
            return "agree"
        return f"fail: raised {type(lk.error).__name__} where torch raises " \
               f"{type(torch_side.error).__name__}"
    if lk.error is None and (
        _matches(lk, ref, call, call.facts["dtype"])
        or (native is not None and native.error is None
            and _matches(lk, native, call, call.facts["dtype"]))
    ):
        return "agree"
    for name, _doc, applies in DEPARTURES:
        if applies(call, lk, torch_side):
            return name
    if lk.error is not None:
        kind = "LossInputError" if _raised_input_error(lk) else "internal error"
        return f"fail: {kind} {type(lk.error).__name__} where torch computes"
    if torch_side.error is not None:
        return "fail: computes where torch raises"
    return "fail: values differ"


def run_call(call: Call) -> tuple[str, Outcome, Outcome | None, Outcome]:
    mode = losskit.checks(call.checks)
    with mode:
        lk = _execute(call.run, call.inputs, call.grad)
    native = None if call.native is None else _execute(call.native, call.inputs, call.grad)
    ref = _execute(call.ref, call.inputs, call.grad, to64=True)
    return classify(call, lk, native, ref), lk, native, ref


# ----------------------------------------------------------------------------------------------
# Value generators


@st.composite
def values(draw, shape, dtype, *, scales=(1.0, 1e4, 1e8, -1e8), specials=True, low=None):
    """A tensor of ``shape``: random normals times a drawn scale, some entries set to extremes.

    Returns ``(tensor, non_finite_drawn)``. ``low`` (e.g. 0.0) draws uniform [low, 1) instead.
    """
    seed = draw(st.integers(0, 2**16))
    g = torch.Generator().manual_seed(seed)
    if low is not None:
        t = torch.rand(shape, generator=g, dtype=torch.float64) * (1 - low) + low
    else:
        t = torch.randn(shape, generator=g, dtype=torch.float64) * draw(st.sampled_from(scales))
    nonfinite = False
    if specials and t.numel() and draw(st.booleans()):
        picks = draw(st.lists(st.tuples(st.integers(0, t.numel() - 1), st.sampled_from(
            [float("-inf"), float("inf"), float("nan"), 1e4, -1e4, 1e8, 0.0])), max_size=3))
        flat = t.view(-1)
        for i, v in picks:
            flat[i] = v
    t = t.to(dtype)
    nonfinite = not bool(t.isfinite().all())
    return t, nonfinite


@st.composite
def layout(draw, t: torch.Tensor) -> torch.Tensor:
    """``t``'s values in a drawn memory layout: contiguous, strided, or channels-last."""
    kind = draw(st.sampled_from(["contiguous", "strided", "channels_last"]))
    if kind == "strided" and t.dim() >= 1:
        wide = torch.zeros(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype)
        wide[..., ::2] = t
        return wide[..., ::2]  # last-dim stride 2
    if kind == "channels_last" and t.dim() == 4:
        return t.contiguous(memory_format=torch.channels_last)
    return t


dtypes = st.sampled_from(DTYPES)
checks_modes = st.sampled_from(["always", "off"])
reductions = st.sampled_from(["none", "mean", "sum"])


# ----------------------------------------------------------------------------------------------
# Per-loss generators. Add a loss: one function returning a Call, one GENERATORS entry.


@st.composite
def regression(draw, name: str):
    dtype, mode, reduction = draw(dtypes), draw(checks_modes), draw(reductions)
    shape = tuple(draw(st.lists(st.integers(0, 4), max_size=3)))
    x, nf_x = draw(values(shape, dtype))
    y, nf_y = draw(values(shape, dtype))
    x = draw(layout(x))
    opts = {"reduction": reduction}
    if name == "huber_loss":
        opts["delta"] = draw(st.sampled_from([1.0, 0.5, 1e-3, 2.0]))
    if name == "smooth_l1_loss":
        opts["beta"] = draw(st.sampled_from([1.0, 0.0, 0.5, 1e-3]))
    inputs = {"input": x, "target": y}
    if name != "smooth_l1_loss" and draw(st.booleans()):
        inputs["weight"] = draw(values(shape, dtype, specials=False, low=0.0))[0]
    lk_fn, torch_fn = getattr(LF, name), getattr(F, name)
    return Call(
        name, inputs, run=lambda **t: lk_fn(**t, **opts), ref=lambda **t: torch_fn(**t, **opts),
        native=lambda **t: torch_fn(**t, **opts), grad=("input",), checks=mode,
        facts={"dtype": dtype, "reduction": reduction, "non_finite": nf_x or nf_y},
    )


@st.composite
def formula_regression(draw, name: str):
    """Regression losses without a torch twin: the case table's float64 formula is the oracle."""
    from cases import regression as regression_cases

    dtype, mode, reduction = draw(dtypes), draw(checks_modes), draw(reductions)
    shape = tuple(draw(st.lists(st.integers(0, 4), max_size=3)))
    x, nf_x = draw(values(shape, dtype))
    y, nf_y = draw(values(shape, dtype))
    opts = {"reduction": reduction}
    if name == "quantile_loss":
        opts["quantile"] = draw(st.sampled_from([0.5, 0.1, 0.9, 1e-3]))
    formula = {"log_cosh_loss": regression_cases.log_cosh,
               "quantile_loss": regression_cases.pinball}[name]
    lk_fn = getattr(LF, name)
    return Call(
        name, {"input": draw(layout(x)), "target": y}, run=lambda **t: lk_fn(**t, **opts),
        ref=lambda **t: formula(**t, **opts), native=None, grad=("input",), checks=mode,
        facts={"dtype": dtype, "reduction": reduction, "non_finite": nf_x or nf_y},
    )


@st.composite
def binary(draw, name: str):
    dtype, mode, reduction = draw(dtypes), draw(checks_modes), draw(reductions)
    shape = tuple(draw(st.lists(st.integers(0, 4), max_size=3)))
    logits = name == "binary_cross_entropy_with_logits"
    if logits:
        x, nf_x = draw(values(shape, dtype))
    else:
        x, nf_x = draw(values(shape, dtype, low=0.0, specials=False))
    y, _ = draw(values(shape, dtype, low=0.0, specials=False))
    if draw(st.booleans()):
        y = y.round()  # hard 0/1 labels
    out_of_range = False
    if y.numel() and draw(st.integers(0, 5)) == 0:
        y.view(-1)[0] = draw(st.sampled_from([-1.0, 2.0]))
        out_of_range = True
    inputs = {"input": draw(layout(x)), "target": y}
    if draw(st.booleans()) and len(shape) >= 1:
        inputs["weight"] = draw(values(shape[-1:], dtype, low=0.0, specials=False))[0]
    if logits and draw(st.booleans()) and len(shape) >= 1:
        inputs["pos_weight"] = draw(values(shape[-1:], dtype, low=0.0, specials=False))[0] * 3
    lk_fn, torch_fn = getattr(LF, name), getattr(F, name)
    return Call(
        name, inputs, run=lambda **t: lk_fn(**t, reduction=reduction),
        ref=lambda **t: torch_fn(**t, reduction=reduction),
        native=lambda **t: torch_fn(**t, reduction=reduction), checks=mode,
        facts={"dtype": dtype, "reduction": reduction, "non_finite": nf_x,
               "target_out_of_range": out_of_range},
    )


@st.composite
def class_problem(draw, *, min_classes=0, spatial=True, probabilities=False):
    """Logits ``(C,)``, ``(N, C)`` or ``(N, C, d1[, d2])`` and targets, ignore_index, -inf masks."""
    dtype = draw(dtypes)
    n, c = draw(st.integers(0, 5)), draw(st.integers(min_classes, 6))
    extra = tuple(draw(st.lists(st.integers(0, 3), max_size=2))) if spatial else ()
    shape = draw(st.sampled_from([(n, c), (c,), (n, c, *extra)]))
    x, nf = draw(values(shape, dtype))
    ignore_index = draw(st.sampled_from([-100, 0, max(c - 1, 0), -1]))
    tshape = shape[:1] + shape[2:] if len(shape) >= 2 else ()
    seed = draw(st.integers(0, 2**16))
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, max(c, 1), tshape, generator=g)
    if target.numel() and draw(st.booleans()):  # ignore some (or every) position
        mask = torch.rand(tshape, generator=g) < draw(st.sampled_from([0.3, 1.0]))
        target[mask] = ignore_index
    if draw(st.booleans()) and x.numel() and len(shape) >= 2:
        # -inf masking (vocabulary masks, padded rows), often on the ignored rows themselves.
        class_dim_last = x.movedim(1, -1)
        rows = class_dim_last.reshape(-1, c)
        flat_t = target.reshape(-1)
        for r in range(rows.shape[0]):
            if flat_t[r] == ignore_index or draw(st.booleans()):
                rows[r, draw(st.integers(0, c - 1))] = float("-inf")
        x = rows.reshape(class_dim_last.shape).movedim(-1, 1).contiguous()
    if probabilities:
        target = draw(values(shape, draw(dtypes), low=0.0, specials=False))[0]
        if len(shape) >= 2 and c:
            target = target / target.sum(1, keepdim=True).clamp_min(1e-6)
    counted = target != ignore_index if not probabilities else torch.ones(())
    del nf  # -inf logits are legal here (masking): only NaN and +inf count
    facts = {"dtype": dtype, "non_finite": bool((x.isnan() | (x == float("inf"))).any()),
             "nothing_counted": not bool(counted.any()) if not probabilities else x.numel() == 0,
             "ignore_index": ignore_index}
    return x, target, c, facts


def _ce_ref(softcap, z):
    """float64 cross-entropy with losskit's extras: softcap first, z-loss added per counted row."""
    def ref(input, target, weight=None, *, reduction, ignore_index, label_smoothing,
            return_lse=False):
        x = input if softcap is None else softcap * torch.tanh(input / softcap)
        kw = dict(weight=weight, ignore_index=ignore_index, label_smoothing=label_smoothing)
        if z == 0.0 and not return_lse:
            return F.cross_entropy(x, target, reduction=reduction, **kw)
        cls = 1 if x.dim() >= 2 else 0
        per = F.cross_entropy(x, target, reduction="none", **kw)  # target's shape
        counted = target != ignore_index
        lse = torch.logsumexp(x, dim=cls)
        if weight is None or weight.numel() == 0:  # C = 0: nothing can be counted
            w_y = counted.double()
        else:
            w_y = torch.where(counted, weight[torch.where(counted, target, 0)], 0.0)
        per = per + torch.where(counted, z * w_y * lse.square(), 0.0)
        value = per if reduction == "none" else per.sum()
        if reduction == "mean":
            value = value / w_y.sum()
        return (value, torch.where(counted, lse, 0.0).float()) if return_lse else value
    return ref


@st.composite
def cross_entropy(draw):
    probs = draw(st.integers(0, 4)) == 0
    x, target, c, facts = draw(class_problem(probabilities=probs))
    dtype, mode, reduction = facts["dtype"], draw(checks_modes), draw(reductions)
    opts = dict(reduction=reduction, ignore_index=facts["ignore_index"] if not probs else -100,
                label_smoothing=draw(st.sampled_from([0.0, 0.0, 0.1, 1.0, -0.1])))
    inputs = {"input": draw(layout(x)), "target": target}
    if draw(st.booleans()):
        inputs["weight"] = draw(values((c,), dtype, low=0.1, specials=False))[0]
        if probs and draw(st.booleans()):
            inputs["weight"] = inputs["weight"].to(draw(dtypes))
    extras = {}
    if not probs:
        extras = dict(
            softcap=draw(st.sampled_from([None, None, 30.0])),
            lse_square_scale=draw(st.sampled_from([0.0, 0.0, 1e-4])),
            return_lse=draw(st.booleans()), inplace=draw(st.booleans()),
        )
    backend = draw(st.sampled_from(["auto", "fused", "reference"]))
    ref = _ce_ref(extras.get("softcap"), extras.get("lse_square_scale", 0.0))
    plain = not any(v for k, v in extras.items())

    def run(**t):
        if extras.get("inplace") and t["input"].requires_grad:
            t["input"] = t["input"] * 1  # an intermediate the kernel may overwrite
        with _backend(backend):
            return LF.cross_entropy(**t, **opts, **extras)

    label_smoothing = max(opts["label_smoothing"], 0.0)
    ref_opts = {**opts, "label_smoothing": label_smoothing}
    return Call(
        "cross_entropy", inputs, run=run,
        ref=lambda **t: ref(**t, **ref_opts, return_lse=extras.get("return_lse", False)),
        native=(lambda **t: F.cross_entropy(**t, **opts)) if plain else None, checks=mode,
        facts={**facts, "reduction": reduction, "backend": backend, **extras},
    )


@contextlib.contextmanager
def _backend(kind: str):
    """``fused``: every size takes the fused kernel; ``reference``: none does."""
    if kind == "reference":
        with kernels.fused(False):
            yield
        return
    saved = kernels.MIN_FUSED_ELEMENTS
    if kind == "fused":
        kernels.MIN_FUSED_ELEMENTS = 0
    try:
        yield
    finally:
        kernels.MIN_FUSED_ELEMENTS = saved


@st.composite
def nll_loss(draw):
    x, target, c, facts = draw(class_problem())
    mode, reduction = draw(checks_modes), draw(reductions)
    if draw(st.booleans()):  # log-probabilities (an all -inf row becomes NaN)
        x = torch.log_softmax(x.double(), dim=1 if x.dim() >= 2 else 0).to(x.dtype)
        facts["non_finite"] = bool((x.isnan() | (x == float("inf"))).any())
    opts = dict(reduction=reduction, ignore_index=facts["ignore_index"])
    inputs = {"input": draw(layout(x)), "target": target}
    if draw(st.booleans()):
        inputs["weight"] = draw(values((c,), x.dtype, low=0.1, specials=False))[0]
    return Call(
        "nll_loss", inputs, run=lambda **t: LF.nll_loss(**t, **opts),
        ref=lambda **t: F.nll_loss(**t, **opts), native=lambda **t: F.nll_loss(**t, **opts),
        checks=mode, facts={**facts, "reduction": reduction},
    )


@st.composite
def kl_div(draw):
    dtype, mode = draw(dtypes), draw(checks_modes)
    reduction = draw(st.sampled_from(["none", "mean", "sum", "batchmean"]))
    shape = tuple(draw(st.lists(st.integers(0, 4), min_size=1, max_size=3)))
    log_target = draw(st.booleans())
    x, nf = draw(values(shape, dtype))
    y, _ = draw(values(shape, dtype, low=0.0, specials=False))
    if log_target:
        y = y.double().log().to(dtype)
    opts = dict(reduction=reduction, log_target=log_target)
    return Call(
        "kl_div", {"input": draw(layout(x)), "target": y},
        run=lambda **t: LF.kl_div(**t, **opts), ref=lambda **t: F.kl_div(**t, **opts),
        native=lambda **t: F.kl_div(**t, **opts), checks=mode,
        facts={"dtype": dtype, "reduction": reduction, "non_finite": nf},
    )


@st.composite
def focal_loss(draw):
    # No 0 < gamma < 1: the oracle's (1 - p_t) ** gamma has an inf derivative where p_t rounds
    # to 1, and its gradient is NaN there (losskit's is the limit, 0; see test_properties).
    gamma = draw(st.sampled_from([0.0, 1.0, 2.0, 3.0]))
    mode, reduction = draw(checks_modes), draw(reductions)
    if draw(st.booleans()):  # binary / multi-label
        dtype = draw(dtypes)
        shape = tuple(draw(st.lists(st.integers(0, 4), max_size=3)))
        x, nf = draw(values(shape, dtype))
        y = draw(values(shape, dtype, low=0.0, specials=False))[0].round()
        alpha = draw(st.sampled_from([None, 0.25]))
        opts = dict(alpha=alpha, gamma=gamma, reduction=reduction)
        return Call(
            "focal_loss", {"input": draw(layout(x)), "target": y},
            run=lambda **t: LF.focal_loss(**t, **opts),
            ref=lambda **t: oracle.focal_binary(**t, **opts), native=None, checks=mode,
            facts={"dtype": dtype, "reduction": reduction, "non_finite": nf},
        )
    x, target, c, facts = draw(class_problem(spatial=False, min_classes=1))
    alpha = draw(st.sampled_from([None, 0.5, "tensor"]))
    inputs = {"input": draw(layout(x)), "target": target}
    opts = dict(gamma=gamma, reduction=reduction, ignore_index=facts["ignore_index"])
    if alpha == "tensor":
        inputs["alpha"] = draw(values((c,), x.dtype, low=0.1, specials=False))[0]
    elif alpha is not None:
        opts["alpha"] = alpha
    return Call(
        "focal_loss", inputs, run=lambda **t: LF.focal_loss(**t, **opts),
        ref=lambda **t: oracle.focal_multiclass(**t, **opts), native=None, checks=mode,
        facts={**facts, "reduction": reduction},
    )


@st.composite
def segmentation_problem(draw):
    """class_problem's logits as (N, C, d1, ...) with class indices, and an ignore_index that is
    None (every label a class) or the drawn one."""
    x, target, c, facts = draw(class_problem(min_classes=1))
    if x.dim() < 3:
        x, target = x.reshape(1, c, -1) if x.dim() == 1 else x[..., None], (
            target.reshape(1, 1) if x.dim() == 1 else target[..., None])
    ignore = draw(st.sampled_from([None, facts["ignore_index"]]))
    if ignore is None:
        target = target.clamp(0, c - 1)  # no ignore_index: every label is a class
    return x, target, ignore, facts


@st.composite
def dice_loss(draw):
    mode, reduction = draw(checks_modes), draw(reductions)
    smooth = draw(st.sampled_from([1.0, 0.0, 1e-5]))
    if draw(st.booleans()):
        dtype = draw(dtypes)
        shape = (draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 4)))
        x, nf = draw(values(shape, dtype))
        y = draw(values(shape, dtype, low=0.0, specials=False))[0].round()
        opts = dict(smooth=smooth, reduction=reduction)
        return Call(
            "dice_loss", {"input": draw(layout(x)), "target": y},
            run=lambda **t: LF.dice_loss(**t, **opts),
            ref=lambda **t: oracle.dice_binary(**t, **opts), native=None, checks=mode,
            facts={"dtype": dtype, "reduction": reduction, "non_finite": nf, "smooth": smooth},
        )
    x, target, ignore, facts = draw(segmentation_problem())
    opts = dict(smooth=smooth, reduction=reduction, ignore_index=ignore)
    return Call(
        "dice_loss", {"input": draw(layout(x)), "target": target},
        run=lambda **t: LF.dice_loss(**t, **opts), ref=lambda **t: oracle.dice(**t, **opts),
        native=None, checks=mode, facts={**facts, "reduction": reduction, "smooth": smooth},
    )


@st.composite
def linear_cross_entropy(draw):
    dtype = draw(st.sampled_from([torch.bfloat16, torch.float32, torch.float64]))
    mode, reduction = draw(checks_modes), draw(reductions)
    n, d, v = draw(st.integers(0, 6)), draw(st.integers(0, 4)), draw(st.integers(0, 6))
    lead = draw(st.sampled_from([(n,), ()]))  # torch's (N, D) or (D,); (B, T, D) is refused
    h, nf = draw(values((*lead, d), dtype, scales=(1.0, 1e2, 1e4)))
    w, _ = draw(values((v, d), dtype, specials=False, scales=(1.0, 1e2)))
    ignore_index = draw(st.sampled_from([-100, 0]))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    target = torch.randint(0, max(v, 1), lead, generator=g)
    if target.numel() and draw(st.booleans()):
        target[torch.rand(lead, generator=g) < 0.5] = ignore_index
    inputs = {"input": h, "linear_weight": w, "target": target}
    if draw(st.booleans()):
        inputs["linear_bias"] = draw(values((v,), dtype, specials=False))[0]
    opts = dict(reduction=reduction, ignore_index=ignore_index,
                label_smoothing=draw(st.sampled_from([0.0, 0.1, -0.1])))
    return_lse = draw(st.booleans())
    chunk = draw(st.sampled_from([None, 1, 2]))
    backend = draw(st.sampled_from(["auto", "fused", "reference"]))
    ce_ref = _ce_ref(None, 0.0)

    def run(input, linear_weight, target, linear_bias=None):
        with _backend(backend):
            return LF.linear_cross_entropy(
                input, linear_weight, target, linear_bias=linear_bias, return_lse=return_lse,
                chunk_size=chunk, **opts)

    def ref(input, linear_weight, target, linear_bias=None):
        logits = F.linear(input, linear_weight, linear_bias)  # (*lead, V)
        logits = logits.flatten(0, -2) if logits.dim() > 2 else logits  # (N, V) or (V,)
        out = ce_ref(logits, target.reshape(-1) if logits.dim() == 2 else target,
                     reduction=reduction, ignore_index=ignore_index,
                     label_smoothing=max(opts["label_smoothing"], 0.0), return_lse=return_lse)
        if reduction == "none" or return_lse:
            vals = out if isinstance(out, tuple) else (out,)
            vals = tuple(t.reshape(target.shape) if t.dim() else t for t in vals)
            if reduction != "none":
                vals = (out[0], vals[1])
            return vals if return_lse else vals[0]
        return out

    nothing = not bool((target != ignore_index).any())
    return Call(
        "linear_cross_entropy", inputs, run=run, ref=ref, native=None,
        grad=("input", "linear_weight", "linear_bias"), checks=mode,
        facts={"dtype": dtype, "reduction": reduction, "non_finite": nf,
               "nothing_counted": nothing, "backend": backend, "chunk": chunk},
    )


def _twin(name, inputs, opts, dtype, mode, reduction, non_finite, grad):
    """A Call of a loss whose reference is its torch.nn.functional twin with the same args."""
    lk_fn, torch_fn = getattr(LF, name), getattr(F, name)
    return Call(
        name, inputs, run=lambda **t: lk_fn(**t, **opts), ref=lambda **t: torch_fn(**t, **opts),
        native=lambda **t: torch_fn(**t, **opts), grad=grad, checks=mode,
        facts={"dtype": dtype, "reduction": reduction, "non_finite": non_finite},
    )


@st.composite
def pair_ranking(draw, name: str):
    """cosine_embedding_loss (x1, x2: (N, D) or (D,), y +-1) and margin_ranking_loss (x1, x2, y
    of one shape)."""
    dtype, mode, reduction = draw(dtypes), draw(checks_modes), draw(reductions)
    n, d = draw(st.integers(0, 4)), draw(st.integers(1, 4))
    shape = (n, d) if name == "cosine_embedding_loss" else (n,)
    x1, nf1 = draw(values(shape, dtype))
    x2, nf2 = draw(values(shape, dtype))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    y = (torch.randint(0, 2, shape[:1], generator=g) * 2 - 1).to(dtype)
    opts = {"margin": draw(st.sampled_from([0.0, 0.5, -0.2])), "reduction": reduction}
    return _twin(name, {"input1": draw(layout(x1)), "input2": x2, "target": y}, opts, dtype,
                 mode, reduction, nf1 or nf2, ("input1", "input2"))


@st.composite
def hinge_embedding(draw):
    dtype, mode, reduction = draw(dtypes), draw(checks_modes), draw(reductions)
    shape = tuple(draw(st.lists(st.integers(0, 4), max_size=3)))
    x, nf = draw(values(shape, dtype))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    y = (torch.randint(0, 2, shape, generator=g) * 2 - 1).to(dtype)
    opts = {"margin": draw(st.sampled_from([1.0, 0.0, 2.5])), "reduction": reduction}
    return _twin("hinge_embedding_loss", {"input": draw(layout(x)), "target": y}, opts, dtype,
                 mode, reduction, nf, ("input",))


@st.composite
def triplet(draw, name: str):
    dtype, mode, reduction = draw(dtypes), draw(checks_modes), draw(reductions)
    shape = draw(st.sampled_from([(draw(st.integers(0, 4)), draw(st.integers(1, 4))),
                                  (draw(st.integers(1, 4)),)]))
    (a, nf1), (p, nf2), (n, nf3) = (draw(values(shape, dtype, scales=(1.0, 1e2)))
                                    for _ in range(3))
    opts = {"margin": draw(st.sampled_from([1.0, 0.0, 0.3])), "swap": draw(st.booleans()),
            "reduction": reduction}
    if name == "triplet_margin_loss":
        opts["p"] = draw(st.sampled_from([2.0, 1.0]))
    return _twin(name, {"anchor": draw(layout(a)), "positive": p, "negative": n}, opts, dtype,
                 mode, reduction, nf1 or nf2 or nf3, ("anchor", "positive", "negative"))


@st.composite
def ctc(draw):
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    mode, reduction = draw(checks_modes), draw(reductions)
    t_len, n, c = draw(st.integers(1, 6)), draw(st.integers(1, 3)), draw(st.integers(2, 5))
    x, nf = draw(values((t_len, n, c), dtype, scales=(1.0, 10.0)))
    log_probs = torch.log_softmax(x.double(), dim=2).to(dtype)
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    s_max = draw(st.integers(0, t_len))
    targets = torch.randint(1, c, (n, s_max), generator=g)
    target_lengths = torch.randint(0, s_max + 1, (n,), generator=g)
    input_lengths = torch.randint(1, t_len + 1, (n,), generator=g)
    opts = {"reduction": reduction, "zero_infinity": draw(st.booleans())}
    inputs = {"log_probs": draw(layout(log_probs)), "targets": targets,
              "input_lengths": input_lengths, "target_lengths": target_lengths}
    return _twin("ctc_loss", inputs, opts, dtype, mode, reduction,
                 nf or not bool(log_probs.isfinite().all()), ("log_probs",))


@st.composite
def nll_regression(draw, name: str):
    """gaussian_nll_loss (input, target, var > 0) and poisson_nll_loss (rates or log-rates)."""
    dtype, mode, reduction = draw(dtypes), draw(checks_modes), draw(reductions)
    shape = tuple(draw(st.lists(st.integers(0, 4), max_size=3)))
    x, nf = draw(values(shape, dtype))
    y = draw(values(shape, dtype, low=0.0, specials=False))[0] * 5
    inputs = {"input": draw(layout(x)), "target": y}
    opts = {"full": draw(st.booleans()), "reduction": reduction}
    if name == "gaussian_nll_loss":
        inputs["var"] = draw(values(shape, dtype, low=0.0, specials=False))[0] + 0.1
    else:
        opts["log_input"] = True
    return _twin(name, inputs, opts, dtype, mode, reduction, nf, ("input",))


@st.composite
def margin(draw, name: str):
    """The margin family: soft margin (-1/1 labels, any shape), multi-label soft margin (0/1
    labels, (N, C)), multi-label margin (label lists padded with -1) and multi-class margin
    (class indices, p, margin, weight). The two hinge losses keep N >= 1: over an empty batch
    torch returns uninitialised memory (losskit: 0, docs/torch-semantics.md)."""
    dtype, mode, reduction = draw(dtypes), draw(checks_modes), draw(reductions)
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    opts: dict = {"reduction": reduction}
    if name == "soft_margin_loss":
        shape = tuple(draw(st.lists(st.integers(0, 4), max_size=3)))
        x, nf = draw(values(shape, dtype))
        y = (torch.randint(0, 2, shape, generator=g) * 2 - 1).to(dtype)
        return _twin(name, {"input": draw(layout(x)), "target": y}, opts, dtype, mode,
                     reduction, nf, ("input",))
    n = draw(st.integers(0 if name == "multilabel_soft_margin_loss" else 1, 4))
    c = draw(st.integers(1, 5))
    x, nf = draw(values((n, c), dtype))
    if name == "multilabel_soft_margin_loss":
        y = torch.randint(0, 2, (n, c), generator=g).to(dtype)
    elif name == "multilabel_margin_loss":
        counts = torch.randint(0, c + 1, (n,), generator=g).tolist()
        y = torch.stack([torch.cat([torch.randperm(c, generator=g)[:k],
                                    torch.full((c - k,), -1)]) for k in counts])
    else:
        y = torch.randint(0, c, (n,), generator=g)
        opts.update(p=draw(st.sampled_from([1, 2])), margin=draw(st.sampled_from([1.0, 0.0, 0.5])))
        if draw(st.booleans()):
            opts["weight"] = (torch.rand(c, generator=g) + 0.5).to(dtype)
    return _twin(name, {"input": draw(layout(x)), "target": y}, opts, dtype, mode, reduction, nf,
                 ("input",))


@st.composite
def distillation(draw, name: str):
    """kd_loss, jsd, linear_kd_loss against the case table's formulas (tests/cases/).

    Finite logits of moderate scale only: the formulas take ``softmax(x).log()``, which
    underflows to -inf (and NaN) where losskit's log_softmax stays finite; NaN/Inf inputs are
    tested by tests/test_cases.py (raised during the value checks). At least one row, so a mean
    over nothing (0 here, NaN in the formula) is not drawn either.
    """
    from cases import distillation as cases

    dtype, mode, reduction = draw(dtypes), draw(checks_modes), draw(reductions)
    rows = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=2)))
    vocab = draw(st.integers(1, 5))
    scale = draw(st.sampled_from([(1.0,), (4.0,)]))
    opts = dict(reduction=reduction, temperature=draw(st.sampled_from([1.0, 2.0, 0.5])))
    if name == "linear_kd_loss":
        h_s, h_t = draw(st.integers(1, 4)), draw(st.integers(1, 4))
        def draw_finite(shape):
            return draw(values(shape, dtype, scales=scale, specials=False))[0]

        inputs = {"student_hidden": draw_finite((*rows, h_s)),
                  "student_weight": draw_finite((vocab, h_s)),
                  "teacher_hidden": draw_finite((*rows, h_t)),
                  "teacher_weight": draw_finite((vocab, h_t))}
        opts.update(divergence=draw(st.sampled_from(["kl", "jsd"])),
                    beta=draw(st.sampled_from([0.0, 0.5, 1.0])), chunk_size=draw(
                        st.sampled_from([None, 1, 3])))
        formula, grad = cases.linear_distill, ("student_hidden", "student_weight")
    else:
        inputs = {"student_logits": draw(values((*rows, vocab), dtype, scales=scale,
                                                specials=False))[0],
                  "teacher_logits": draw(values((*rows, vocab), dtype, scales=scale,
                                                specials=False))[0]}
        if name == "jsd":
            opts["beta"] = draw(st.sampled_from([0.0, 0.3, 1.0]))
        formula, grad = {"kd_loss": cases.kd, "jsd": cases.generalised_jsd}[name], \
            ("student_logits",)
    lk_fn = getattr(LF, name)
    return Call(
        name, inputs, run=lambda **t: lk_fn(**t, **opts), ref=lambda **t: formula(**t, **opts),
        native=None, grad=grad, checks=mode,
        facts={"dtype": dtype, "reduction": reduction, "non_finite": False},
    )


@st.composite
def poly1_cross_entropy(draw):
    """Poly-1 over class_problem's logits; the case table's float64 formula is the oracle. Two
    classes at least: one class is refused (the loss is constant), as cross-entropy's."""
    from cases import classification as classification_cases

    x, target, _, facts = draw(class_problem(min_classes=2))
    mode, reduction = draw(checks_modes), draw(reductions)
    opts = dict(epsilon=draw(st.sampled_from([1.0, -1.0, 2.0, 0.0])), reduction=reduction,
                ignore_index=facts["ignore_index"],
                label_smoothing=draw(st.sampled_from([0.0, 0.1])))
    return Call(
        "poly1_cross_entropy", {"input": draw(layout(x)), "target": target},
        run=lambda **t: LF.poly1_cross_entropy(**t, **opts),
        ref=lambda **t: classification_cases.poly1(**t, **opts), native=None, checks=mode,
        facts={**facts, "reduction": reduction},
    )


@st.composite
def overlap_loss(draw, name: str):
    """Tversky, focal Tversky (binary labels or class indices, as dice_loss) and Lovasz-softmax
    (class indices, per batch or per image); the case table's float64 formulas are the oracles."""
    from cases import segmentation as segmentation_cases

    mode, reduction = draw(checks_modes), draw(reductions)
    opts: dict = {"reduction": reduction}
    facts: dict = {"reduction": reduction}
    if name == "lovasz_softmax":
        opts.update(per_image=draw(st.booleans()), classes=draw(st.sampled_from(["present",
                                                                                 "all"])))
        formula = segmentation_cases.lovasz
    else:
        opts.update(smooth=draw(st.sampled_from([1.0, 0.0, 1e-5])),
                    alpha=draw(st.sampled_from([0.3, 0.5, 1.0])), beta=draw(st.sampled_from(
                        [0.7, 0.5, 0.0])))
        facts["smooth"] = opts["smooth"]
        if name == "focal_tversky_loss":
            opts["gamma"] = draw(st.sampled_from([1.0, 4 / 3, 3.0]))
        formula = getattr(segmentation_cases, name.removesuffix("_loss"))
    if name != "lovasz_softmax" and draw(st.booleans()):
        dtype = draw(dtypes)
        shape = (draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 4)))
        x, nf = draw(values(shape, dtype))
        y = draw(values(shape, dtype, low=0.0, specials=False))[0].round()
        facts.update(dtype=dtype, non_finite=nf)
    else:
        x, y, opts["ignore_index"], drawn = draw(segmentation_problem())
        facts.update(drawn)
    return Call(
        name, {"input": draw(layout(x)), "target": y},
        run=lambda **t: getattr(LF, name)(**t, **opts), ref=lambda **t: formula(**t, **opts),
        native=None, checks=mode, facts=facts,
    )


@st.composite
def preference(draw, name: str):
    """Preference losses on finite, negative log-probabilities ((B,), B may be 0) against the
    papers' formulas in tests/cases/preference.py; the fused loss on small hidden states."""
    from cases import preference as cases

    dtype, mode, reduction = draw(dtypes), draw(checks_modes), draw(reductions)
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    b = draw(st.integers(0, 4))
    scale = draw(st.sampled_from([1.0, 10.0, 100.0]))

    def logps():  # (B,) log-probabilities below 0
        return (-(torch.rand(b, generator=g, dtype=torch.float64) + 1e-3) * scale).to(dtype)

    facts = {"dtype": dtype, "reduction": reduction, "non_finite": False,
             "nothing_counted": b == 0}  # no pair: "mean" is 0 with a LossWarning
    opts: dict = {"reduction": reduction}
    if name == "linear_preference_loss":
        b, s, h, v = max(b, 1), draw(st.integers(2, 4)), 3, 7
        hidden = {k: (torch.randn(b, s, h, generator=g) * 0.5).to(dtype) for k in ("hc", "hr")}
        labels = [torch.randint(0, v, (b, s), generator=g) for _ in range(2)]
        for y in labels:
            y[:, 0] = -100  # the prompt
        loss = draw(st.sampled_from(["dpo", "simpo", "orpo"]))
        inputs = {"hidden_chosen": hidden["hc"], "hidden_rejected": hidden["hr"],
                  "weight": torch.randn(v, h, generator=g).to(dtype)}
        refs = (logps(), logps()) if loss == "dpo" else ()
        refs = tuple(r.reshape(b) if r.numel() == b else -torch.ones(b, dtype=dtype) for r in
                     refs)
        return Call(
            name, inputs,
            run=lambda **t: LF.linear_preference_loss(*t.values(), *labels, *refs, loss=loss,
                                                      **opts),
            ref=lambda **t: cases.linear_preference_reference(
                *t.values(), *labels, *(r.double() for r in refs), loss=loss, **opts),
            native=None, grad=tuple(inputs), checks=mode, facts=facts,
        )
    if name == "kto_loss":
        labels = torch.rand(b, generator=g) < 0.5
        opts.update(beta=draw(st.sampled_from([0.1, 1.0])))
        return Call(
            name, {"policy_logps": logps(), "ref_logps": logps()},
            run=lambda **t: LF.kto_loss(*t.values(), labels, **opts),
            ref=lambda **t: cases.kto_reference(*t.values(), labels, **opts), native=None,
            grad=("policy_logps",), checks=mode, facts=facts,
        )
    names = ["policy_chosen_logps", "policy_rejected_logps"]
    if name == "dpo_loss":
        names += ["ref_chosen_logps", "ref_rejected_logps"]
        opts.update(beta=draw(st.sampled_from([0.1, 0.5])),
                    loss_type=draw(st.sampled_from(["sigmoid", "ipo"])))
    formula = {"dpo_loss": cases.dpo_reference, "simpo_loss": cases.simpo_reference,
               "orpo_loss": cases.orpo_reference}[name]
    lk_fn = getattr(LF, name)
    return Call(
        name, {n: logps() for n in names}, run=lambda **t: lk_fn(**t, **opts),
        ref=lambda **t: formula(*t.values(), **opts), native=None, grad=tuple(names[:2]),
        checks=mode, facts=facts,
    )


@st.composite
def contrastive(draw, name: str):
    """info_nce, clip_loss and supcon_loss, plain and chunked, against the papers' formulas in
    tests/cases/contrastive.py. Finite views of moderate scale under cosine similarity (the
    unnormalised path's norm warning and a temperature of 1 or more are guardrails, tested with
    their healthy twins in tests/test_contrastive.py); SupCon with two views, so every anchor has
    a positive."""
    from cases import contrastive as cases

    dtype, mode, reduction = draw(dtypes), draw(checks_modes), draw(reductions)
    # D >= 2: with D = 1 every cosine is +-1 and the true gradient is 0, which float32 only
    # approximates (a 1e-5 residue against a zero oracle)
    b, d = draw(st.integers(2, 5)), draw(st.integers(2, 4))
    opts: dict = {"reduction": reduction, "chunk_size": draw(st.sampled_from([None, 1, 3]))}

    def view(shape):
        return draw(values(shape, dtype, scales=(1.0, 10.0), specials=False))[0]

    facts = {"dtype": dtype, "reduction": reduction, "non_finite": False}
    if name == "supcon_loss":
        seed = draw(st.integers(0, 2**16))
        labels = (None if draw(st.booleans()) else
                  torch.randint(0, 3, (b,), generator=torch.Generator().manual_seed(seed)))
        opts["temperature"] = draw(st.sampled_from([0.1, 0.5]))
        return Call(
            name, {"features": view((b, 2, d))},
            run=lambda **t: LF.supcon_loss(t["features"], labels, **opts),
            ref=lambda **t: cases.supcon(t["features"], labels, **opts),
            native=None, grad=("features",), checks=mode, facts=facts,
        )
    if name == "clip_loss":
        opts["logit_scale"] = draw(st.sampled_from([cases.CLIP_INIT, 0.0, 4.0]))
        inputs, formula = {"image_embeds": view((b, d)), "text_embeds": view((b, d))}, cases.clip
    else:
        opts["temperature"] = draw(st.sampled_from([0.1, 0.5]))
        inputs, formula = {"z1": view((b, d)), "z2": view((b, d))}, cases.nt_xent
    fn = getattr(LF, name)
    return Call(
        name, inputs, run=lambda **t: fn(*t.values(), **opts),
        ref=lambda **t: formula(*t.values(), **opts), native=None, grad=tuple(inputs),
        checks=mode, facts=facts,
    )


GENERATORS: dict[str, Callable[[], st.SearchStrategy[Call]]] = {
    "kd_loss": lambda: distillation("kd_loss"),
    "jsd": lambda: distillation("jsd"),
    "linear_kd_loss": lambda: distillation("linear_kd_loss"),
    "mse_loss": lambda: regression("mse_loss"),
    "l1_loss": lambda: regression("l1_loss"),
    "huber_loss": lambda: regression("huber_loss"),
    "smooth_l1_loss": lambda: regression("smooth_l1_loss"),
    "log_cosh_loss": lambda: formula_regression("log_cosh_loss"),
    "quantile_loss": lambda: formula_regression("quantile_loss"),
    "binary_cross_entropy": lambda: binary("binary_cross_entropy"),
    "binary_cross_entropy_with_logits": lambda: binary("binary_cross_entropy_with_logits"),
    "cross_entropy": cross_entropy,
    "nll_loss": nll_loss,
    "kl_div": kl_div,
    "focal_loss": focal_loss,
    "dice_loss": dice_loss,
    "linear_cross_entropy": linear_cross_entropy,
    "cosine_embedding_loss": lambda: pair_ranking("cosine_embedding_loss"),
    "margin_ranking_loss": lambda: pair_ranking("margin_ranking_loss"),
    "hinge_embedding_loss": hinge_embedding,
    "triplet_margin_loss": lambda: triplet("triplet_margin_loss"),
    "triplet_margin_with_distance_loss": lambda: triplet("triplet_margin_with_distance_loss"),
    "ctc_loss": ctc,
    "gaussian_nll_loss": lambda: nll_regression("gaussian_nll_loss"),
    "poisson_nll_loss": lambda: nll_regression("poisson_nll_loss"),
    "soft_margin_loss": lambda: margin("soft_margin_loss"),
    "multilabel_soft_margin_loss": lambda: margin("multilabel_soft_margin_loss"),
    "multilabel_margin_loss": lambda: margin("multilabel_margin_loss"),
    "multi_margin_loss": lambda: margin("multi_margin_loss"),
    "poly1_cross_entropy": poly1_cross_entropy,
    "tversky_loss": lambda: overlap_loss("tversky_loss"),
    "focal_tversky_loss": lambda: overlap_loss("focal_tversky_loss"),
    "lovasz_softmax": lambda: overlap_loss("lovasz_softmax"),
    "dpo_loss": lambda: preference("dpo_loss"),
    "simpo_loss": lambda: preference("simpo_loss"),
    "orpo_loss": lambda: preference("orpo_loss"),
    "kto_loss": lambda: preference("kto_loss"),
    "linear_preference_loss": lambda: preference("linear_preference_loss"),
    "info_nce": lambda: contrastive("info_nce"),
    "clip_loss": lambda: contrastive("clip_loss"),
    "supcon_loss": lambda: contrastive("supcon_loss"),
}


# ----------------------------------------------------------------------------------------------
# The tests


def test_every_public_loss_has_a_generator():
    assert sorted(GENERATORS) == sorted(LF.__all__), (
        "add a generator for each new loss in losskit.functional.__all__"
    )


@pytest.mark.parametrize("loss", sorted(GENERATORS))
def test_losskit_agrees_with_torch_or_departs_as_documented(loss):
    @SETTINGS
    @given(GENERATORS[loss]())
    def check(call):
        verdict, lk, native, ref = run_call(call)
        assert not verdict.startswith("fail"), (
            f"{verdict}\n{call.describe()}\nlosskit: {lk}\ntorch: {native}\nfloat64: {ref}"
        )

    check()


def test_classifier_flags_a_wrong_value_and_excuses_a_documented_departure():
    """The classifier itself: a wrong value fails, NaN input refused under checks is excused."""
    x = torch.tensor([[1.0, 2.0]])
    y = torch.tensor([[0.0, 0.0]])
    wrong = Call("mse_loss", {"input": x, "target": y}, run=lambda **t: F.mse_loss(**t) + 1e-3,
                 ref=F.mse_loss, native=F.mse_loss, facts={"dtype": torch.float32})
    assert run_call(wrong)[0] == "fail: values differ"
    nan = torch.tensor([[float("nan"), 1.0]])
    refused = Call("mse_loss", {"input": nan, "target": y}, run=LF.mse_loss, ref=F.mse_loss,
                   native=F.mse_loss, facts={"dtype": torch.float32, "non_finite": True})
    assert run_call(refused)[0] == "non_finite_input"


# ----------------------------------------------------------------------------------------------
# Long runs: PYTHONPATH=. python tests/test_fuzz.py N  (N calls per loss; outcome counts)


def _survey_one(loss, gen, examples, counts, samples) -> None:
    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck), phases=["generate"])
    @given(gen())
    def one(call):
        verdict = run_call(call)[0]
        counts[(loss, verdict)] += 1
        samples.setdefault((loss, verdict), call.describe())

    one()


def survey(examples: int) -> Counter:
    """Draw ``examples`` calls per loss, run each, count verdicts per (loss, verdict)."""
    counts: Counter = Counter()
    samples: dict = {}
    for loss, gen in sorted(GENERATORS.items()):
        _survey_one(loss, gen, examples, counts, samples)
    for key in sorted(counts):
        print(f"{counts[key]:7d}  {key[0]:34s} {key[1]}")
        if key[1].startswith("fail"):
            print(f"         e.g. {samples[key][:300]}")
    total = sum(counts.values())
    fails = sum(v for k, v in counts.items() if k[1].startswith("fail"))
    print(f"{total} calls, {fails} failures")
    return counts


if __name__ == "__main__":
    survey(int(sys.argv[1]) if len(sys.argv) > 1 else 200)
