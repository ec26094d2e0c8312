"""Every loss against its float64 oracle (tests/oracle.py): values, input gradients and, where torch
has them, target gradients; functional and Module forms; reductions none / mean / sum; odd shapes.

A case is (loss, shape, options). The grid is built as plain data below and expanded with
``pytest.mark.parametrize``; each test draws its tensors from a seeded generator, runs losskit and
the oracle on separate copies, and backpropagates the same random upstream gradient through both
(a random upstream catches "none"-reduction gradients that a ``sum()`` would hide).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import oracle
import pytest
import torch
import torch.nn.functional as F

import losskit as lk
import losskit.functional as LF

REDUCTIONS = ("none", "mean", "sum")
KL_MEAN_WARNING = "ignore:reduction. 'mean' divides the total loss:UserWarning"


def _randn(gen, *shape):
    return torch.randn(shape, generator=gen, dtype=torch.float64)


def _rand(gen, *shape):
    return torch.rand(shape, generator=gen, dtype=torch.float64)


def _classes(shape: tuple[int, ...]) -> tuple[int, tuple[int, ...]]:
    """(C, target shape) for class-dim-1 logits of ``shape``; (C,) is one unbatched sample."""
    if len(shape) == 1:
        return shape[0], ()
    return shape[1], (shape[0], *shape[2:])


def _indices(gen, num_classes: int, shape: tuple[int, ...]) -> torch.Tensor:
    return torch.randint(0, num_classes, shape, generator=gen)


@dataclass
class Case:
    id: str
    fn: str  # name in losskit.functional and in tests/oracle.py
    module: str | None  # losskit Module taking the same keyword arguments, or None
    build: Callable  # gen -> (input, target, kwargs)
    grad_target: bool = False
    reductions: tuple[str, ...] = REDUCTIONS
    marks: list = field(default_factory=list)
    torch_nan: bool = False  # torch itself gives NaN somewhere here (value or gradient)


CASES: list[Case] = []

# ----------------------------------------------------------------------------------------------
# Regression: shapes (3, 7), (2, 5, 4, 3), (5,) and 0-d; both branches of huber / smooth_l1.

REGRESSION_SHAPES = [(3, 7), (2, 5, 4, 3), (5,), ()]
REGRESSION = [
    ("mse_loss", "MSELoss", {}),
    ("l1_loss", "L1Loss", {}),
    ("huber_loss", "HuberLoss", {"delta": 0.5}),
    ("huber_loss", "HuberLoss", {"delta": 1.0}),
    ("huber_loss", "HuberLoss", {"delta": 2.5}),
    ("smooth_l1_loss", "SmoothL1Loss", {"beta": 0.0}),
    ("smooth_l1_loss", "SmoothL1Loss", {"beta": 0.5}),
    ("smooth_l1_loss", "SmoothL1Loss", {"beta": 1.0}),
]


def _regression(shape, opts, ties=False, weighted=False):
    def build(gen):
        x, y = 2 * _randn(gen, *shape), _randn(gen, *shape)
        if ties:  # input == target at every other element: |d| = 0, gradient sign(0) = 0
            y.view(-1)[::2] = x.view(-1)[::2]
        kwargs = dict(opts)
        if weighted:
            kwargs["weight"] = _rand(gen, *shape) + 0.1
        return x, y, kwargs

    return build


for _fn, _mod, _opts in REGRESSION:
    # default options over every shape; the other deltas / betas on the 4-D shape
    _default = _opts in ({}, {"delta": 1.0}, {"beta": 1.0})
    for _shape in REGRESSION_SHAPES if _default else [(2, 5, 4, 3)]:
        _id = f"{_fn}-{_opts}-{_shape}"
        CASES.append(Case(_id, _fn, _mod, _regression(_shape, _opts), grad_target=True))
for _fn, _mod, _opts in [REGRESSION[1], REGRESSION[5]]:  # l1 and smooth_l1(beta=0) at ties
    CASES.append(Case(f"{_fn}-{_opts}-ties", _fn, _mod, _regression((4, 6), _opts, ties=True),
                      grad_target=True))
for _fn, _opts in [("mse_loss", {}), ("l1_loss", {}), ("huber_loss", {"delta": 0.7})]:
    # functional-only `weight=`: weighted mean is sum(w l) / sum(w) for mse/l1, mean(w l) for huber
    CASES.append(Case(f"{_fn}-weight", _fn, None, _regression((3, 7), _opts, weighted=True),
                      grad_target=True))

# ----------------------------------------------------------------------------------------------
# Binary cross-entropy on probabilities, with the clamp at log(0).


def _bce(shape, weight=None):
    def build(gen):
        x = torch.sigmoid(2 * _randn(gen, *shape))
        y = _rand(gen, *shape)
        kwargs = {}
        if weight == "last":
            kwargs["weight"] = _rand(gen, shape[-1]) + 0.5  # (C,) broadcast over (N, C)
        elif weight == "full":
            kwargs["weight"] = _rand(gen, *shape) + 0.5
        return x, y, kwargs

    return build


def _bce_clamped(gen):
    # x in {0, 1} (and a denormal-small 1e-50) against y in {0, 1}: each log clamped at -100
    x = torch.tensor([0.0, 0.0, 1.0, 1.0, 1e-50, 0.5, 1 - 1e-12], dtype=torch.float64)
    y = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0], dtype=torch.float64)
    return x, y, {}


for _shape in [(3, 7), (2, 5, 4, 3), (5,)]:
    CASES.append(Case(f"bce-{_shape}", "binary_cross_entropy", "BCELoss", _bce(_shape), True))
CASES.append(Case("bce-weight(C,)", "binary_cross_entropy", "BCELoss", _bce((3, 7), "last"), True))
CASES.append(Case("bce-weight-full", "binary_cross_entropy", "BCELoss", _bce((2, 5, 4, 3), "full"),
                  True))
CASES.append(Case("bce-clamped", "binary_cross_entropy", "BCELoss", _bce_clamped, True))

# ----------------------------------------------------------------------------------------------
# Binary cross-entropy with logits: weight, pos_weight, multi-label 0/1 and soft targets.


def _bcel(shape, *, weight=False, pos_weight=None, hard=False, scale=3.0):
    def build(gen):
        x = scale * _randn(gen, *shape)
        y = (_rand(gen, *shape) > 0.5).double() if hard else _rand(gen, *shape)
        kwargs = {}
        if weight:
            kwargs["weight"] = _rand(gen, shape[-1]) + 0.5
        if pos_weight is not None:
            kwargs["pos_weight"] = 4 * _rand(gen, *pos_weight)
        return x, y, kwargs

    return build


_BCEL = "binary_cross_entropy_with_logits"
for _id, _build in [
    ("(3,7)", _bcel((3, 7))),
    ("(2,5,4,3)", _bcel((2, 5, 4, 3))),
    ("(5,)", _bcel((5,))),
    ("multilabel-hard", _bcel((6, 4), hard=True)),
    ("weight(C,)", _bcel((3, 7), weight=True)),
    ("pos_weight(C,)", _bcel((3, 7), pos_weight=(7,), hard=True)),
    ("pos_weight(1,)", _bcel((3, 7), pos_weight=(1,))),
    ("pos_weight(C,1,1)", _bcel((2, 5, 4, 3), pos_weight=(5, 1, 1), hard=True)),
    ("weight+pos_weight", _bcel((3, 7), weight=True, pos_weight=(7,))),
    ("logits±1000", _bcel((4, 5), scale=1000.0, hard=True)),
]:
    CASES.append(Case(f"bce_logits-{_id}", _BCEL, "BCEWithLogitsLoss", _build, grad_target=True))

# ----------------------------------------------------------------------------------------------
# Cross-entropy and NLL with class indices: (C,), (N, C), (N, C, d1, d2); weight; ignore_index
# negative, >= C and a real class; label smoothing together with weight and ignore_index.

CLASS_SHAPES = [(5,), (3, 7), (2, 5, 4, 3)]


def _ignore_values(num_classes: int) -> list[tuple[str, int | None]]:
    """(label, ignore_index); None means the default -100 with no target ignored."""
    return [("none-ignored", None), ("-100", -100), ("-1", -1), (">=C", num_classes + 2),
            ("C-1", num_classes - 1)]


def _class_indices(shape, *, ignore=None, weight=False, smoothing=0.0, log_probs=False,
                   dtype=torch.int64):
    num_classes, tshape = _classes(shape)

    def build(gen):
        x = 2 * _randn(gen, *shape)
        if log_probs:
            x = torch.log_softmax(x, dim=1 if len(shape) > 1 else 0)
        y = _indices(gen, num_classes, tshape)
        kwargs = {}
        if ignore is not None:
            kwargs["ignore_index"] = ignore
            if tshape:  # ignore every third position (never all); class C-1 appears too
                flat = y.view(-1)
                flat[::3] = ignore
                if ignore != num_classes - 1:
                    flat[1] = num_classes - 1
            elif int(y) == ignore:
                y = torch.tensor(0)  # unbatched: one target, never ignored
        if weight:
            kwargs["weight"] = _rand(gen, num_classes) + 0.2
        if smoothing:
            kwargs["label_smoothing"] = smoothing
        return x, y.to(dtype), kwargs

    return build


for _shape in CLASS_SHAPES:
    _c, _ = _classes(_shape)
    # without ignored targets: every weight x smoothing combination
    for _weight in (False, True):
        for _ls in (0.0, 0.2):
            _id = f"ce-{_shape}-weight={_weight}-ls={_ls}"
            _build = _class_indices(_shape, weight=_weight, smoothing=_ls)
            CASES.append(Case(_id, "cross_entropy", "CrossEntropyLoss", _build))
        _build = _class_indices(_shape, weight=_weight, log_probs=True)
        CASES.append(Case(f"nll-{_shape}-weight={_weight}", "nll_loss", "NLLLoss", _build))
    # each kind of ignore_index, alone and together with weight and label smoothing
    for _label, _ignore in _ignore_values(_c)[1:]:
        for _weight, _ls in ((False, 0.0), (True, 0.2)):
            _id = f"ce-{_shape}-ignore={_label}-weight={_weight}-ls={_ls}"
            _build = _class_indices(_shape, ignore=_ignore, weight=_weight, smoothing=_ls)
            CASES.append(Case(_id, "cross_entropy", "CrossEntropyLoss", _build))
        _id = f"nll-{_shape}-ignore={_label}-weight=True"
        _build = _class_indices(_shape, ignore=_ignore, weight=True, log_probs=True)
        CASES.append(Case(_id, "nll_loss", "NLLLoss", _build))
    CASES.append(Case(f"ce-{_shape}-ls=1.0-weight-ignore", "cross_entropy", "CrossEntropyLoss",
                      _class_indices(_shape, ignore=-1, weight=True, smoothing=1.0)))
CASES.append(Case("ce-uint8-target", "cross_entropy", "CrossEntropyLoss",
                  _class_indices((3, 7), dtype=torch.uint8)))
CASES.append(Case("nll-uint8-target", "nll_loss", "NLLLoss",
                  _class_indices((3, 7), dtype=torch.uint8, log_probs=True)))


# Cross-entropy with class probabilities (target.shape == input.shape): mean divides by the
# number of rows, not the weights; target gradients exist.
def _class_probs(shape, *, weight=False, smoothing=0.0):
    num_classes, _ = _classes(shape)
    class_dim = 1 if len(shape) > 1 else 0

    def build(gen):
        x = 2 * _randn(gen, *shape)
        q = torch.softmax(2 * _randn(gen, *shape), dim=class_dim)
        kwargs = {}
        if weight:
            kwargs["weight"] = _rand(gen, num_classes) + 0.2
        if smoothing:
            kwargs["label_smoothing"] = smoothing
        return x, q, kwargs

    return build


for _shape in CLASS_SHAPES:
    for _weight in (False, True):
        for _ls in (0.0, 0.3):
            CASES.append(Case(f"ce-probs-{_shape}-weight={_weight}-ls={_ls}", "cross_entropy",
                              "CrossEntropyLoss", _class_probs(_shape, weight=_weight,
                                                               smoothing=_ls), grad_target=True))

# ----------------------------------------------------------------------------------------------
# KL divergence: log_target, batchmean / mean / sum / none, zeros in the target.


def _kl(shape, *, log_target=False, zeros=False):
    def build(gen):
        x = torch.log_softmax(_randn(gen, *shape), dim=-1)
        q = torch.softmax(_randn(gen, *shape), dim=-1)
        if zeros:  # y = 0 contributes 0 whatever x is (xlogy); its target gradient is NaN
            q.view(-1)[::4] = 0.0
        y = q.log() if log_target else q
        return x, y, {"log_target": log_target}

    return build


_KL_MARKS = [pytest.mark.filterwarnings(KL_MEAN_WARNING)]
for _shape in [(3, 7), (2, 5, 4, 3), (5,)]:
    for _lt in (False, True):
        CASES.append(Case(f"kl-{_shape}-log_target={_lt}", "kl_div", "KLDivLoss",
                          _kl(_shape, log_target=_lt), grad_target=True,
                          reductions=(*REDUCTIONS, "batchmean"), marks=_KL_MARKS))
CASES.append(Case("kl-target-zeros", "kl_div", "KLDivLoss", _kl((3, 8), zeros=True),
                  grad_target=True, reductions=(*REDUCTIONS, "batchmean"), marks=_KL_MARKS,
                  torch_nan=True))


# ----------------------------------------------------------------------------------------------
# Running one case


def _call(case: Case, form: str, reduction: str, x, y, kwargs):
    if form == "functional":
        return getattr(LF, case.fn)(x, y, reduction=reduction, **kwargs)
    return getattr(lk, case.module)(reduction=reduction, **kwargs)(x, y)


def _run(fn, x, y, grad_target: bool):
    """Value and gradients of ``fn(x, y)`` on fresh leaf copies, with a seeded random upstream."""
    x = x.detach().clone().requires_grad_()
    y = y.detach().clone()
    leaves = [x]
    if grad_target:
        y.requires_grad_()
        leaves.append(y)
    out = fn(x, y)
    upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(7), dtype=out.dtype)
    grads = torch.autograd.grad(out, leaves, upstream)
    return out.detach(), grads


def assert_matches(out, ref, grads, ref_grads, where: str = "", *, torch_nan: bool = False):
    """Same dtype, shape and values (to float64 rounding), then the same gradients. NaN equals
    NaN only with ``torch_nan``: cases where torch itself (the reference) returns NaN, at exactly
    the same places; the reference must then really hold one, or the flag would hide nothing."""
    assert out.dtype == ref.dtype, where
    assert out.shape == ref.shape, where
    if torch_nan:
        assert any(bool(t.isnan().any()) for t in (ref, *ref_grads)), f"no NaN from torch {where}"
    torch.testing.assert_close(out, ref, equal_nan=torch_nan,
                               msg=lambda m: f"value {where}: {m}")
    for i, (g, rg) in enumerate(zip(grads, ref_grads, strict=True)):
        torch.testing.assert_close(g, rg, equal_nan=torch_nan,
                                   msg=lambda m, i=i: f"grad {i} {where}: {m}")


PARAMS = [
    pytest.param(case, reduction, id=f"{case.id}-{reduction}", marks=case.marks)
    for case in CASES
    for reduction in case.reductions
]


@pytest.mark.parametrize(("case", "reduction"), PARAMS)
def test_matches_torch_float64(case: Case, reduction: str, gen):
    """The functional form and, where there is one, the Module form, against the oracle."""
    x, y, kwargs = case.build(gen)
    ref_fn = getattr(oracle, case.fn)
    ref, ref_grads = _run(lambda a, b: ref_fn(a, b, reduction=reduction, **kwargs), x, y,
                          case.grad_target)
    for form in ("functional", "module") if case.module else ("functional",):
        out, grads = _run(lambda a, b, form=form: _call(case, form, reduction, a, b, kwargs), x, y,
                          case.grad_target)
        assert_matches(out, ref, grads, ref_grads, torch_nan=case.torch_nan)


def test_bce_clamp_values_by_hand():
    """torch's clamp of each log at -100, written out: x=0,y=1 -> 100; x=0,y=0 -> 0 (not NaN)."""
    x = torch.tensor([0.0, 0.0, 1.0, 1e-50], dtype=torch.float64)
    y = torch.tensor([1.0, 0.0, 0.0, 1.0], dtype=torch.float64)
    out = LF.binary_cross_entropy(x, y, reduction="none")
    torch.testing.assert_close(out, torch.tensor([100.0, 0.0, 100.0, 100.0], dtype=torch.float64))


def test_smooth_l1_is_huber_over_beta(gen):
    x, y = 3 * _randn(gen, 4, 5), _randn(gen, 4, 5)
    for beta in (0.3, 1.0, 2.0):
        torch.testing.assert_close(
            LF.smooth_l1_loss(x, y, beta=beta, reduction="none"),
            LF.huber_loss(x, y, delta=beta, reduction="none") / beta,
        )
    torch.testing.assert_close(LF.smooth_l1_loss(x, y, beta=0.0), F.l1_loss(x, y))


def test_cross_entropy_weighted_mean_by_hand():
    """sum_n w[y_n] l_n / sum_n w[y_n] over non-ignored n, with label smoothing eps:
    l_n = (1 - eps) w[y_n] (-log p[y_n]) + eps / C sum_c w_c (-log p_c)."""
    x = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0], [2.0, 2.0, 2.0]], dtype=torch.float64)
    y = torch.tensor([1, 2, -100])
    w = torch.tensor([0.5, 2.0, 1.5], dtype=torch.float64)
    eps, num_classes = 0.1, 3
    nlp = -torch.log_softmax(x, dim=1)
    rows = [0, 1]
    num = sum((1 - eps) * w[y[n]] * nlp[n, y[n]] + eps / num_classes * (w * nlp[n]).sum()
              for n in rows)
    den = sum(w[y[n]] for n in rows)
    got = LF.cross_entropy(x, y, weight=w, label_smoothing=eps)
    torch.testing.assert_close(got, num / den)


@pytest.mark.parametrize("shape", [(3, 7), (2, 5, 4, 3)])
def test_cross_entropy_unnormalised_probability_targets(shape, gen):
    """torch accepts probability targets that do not sum to 1; losskit warns and still matches."""
    x, q = _randn(gen, *shape), _rand(gen, *shape) * 2
    with lk.checks("always"), pytest.warns(lk.LossWarning, match="sum"):
        out = LF.cross_entropy(x, q)
    torch.testing.assert_close(out, oracle.cross_entropy(x, q))


# ----------------------------------------------------------------------------------------------
# Focal and dice against the hand-derived references


FOCAL_BINARY = [
    pytest.param(shape, alpha, gamma, hard, id=f"{shape}-alpha={alpha}-gamma={gamma}-hard={hard}")
    for shape in [(3, 7), (2, 5, 4, 3), (6,)]
    for alpha in (None, 0.25)
    for gamma in (0.5, 2.0)  # gamma = 0 is checked against BCE-with-logits below
    for hard in (True, False)
]


@pytest.mark.parametrize(("shape", "alpha", "gamma", "hard"), FOCAL_BINARY)
def test_focal_binary(shape, alpha, gamma, hard, gen):
    x = 3 * _randn(gen, *shape)
    y = (_rand(gen, *shape) > 0.5).double() if hard else _rand(gen, *shape)
    for reduction in REDUCTIONS:
        kwargs = {"alpha": alpha, "gamma": gamma, "reduction": reduction}
        out, grads = _run(lambda a, b, kw=kwargs: LF.focal_loss(a, b, **kw), x, y, True)
        ref, ref_grads = _run(lambda a, b, kw=kwargs: oracle.focal_binary(a, b, **kw), x, y, True)
        assert_matches(out, ref, grads, ref_grads, reduction)
        torch.testing.assert_close(lk.FocalLoss(**kwargs)(x, y), ref)


@pytest.mark.parametrize("alpha", [None, 0.25])
@pytest.mark.parametrize("gamma", [0.0, 1.0, 2.0])
def test_focal_binary_literal_formula(alpha, gamma, gen):
    """-alpha_t (1 - p_t)^gamma log p_t, term by term, for 0/1 targets."""
    x, y = 2 * _randn(gen, 5, 4), (_rand(gen, 5, 4) > 0.5).double()
    got = LF.focal_loss(x, y, alpha=alpha, gamma=gamma, reduction="none")
    torch.testing.assert_close(got, oracle.focal_binary_literal(x, y, alpha=alpha, gamma=gamma))


def test_focal_binary_gamma0_is_bce_with_logits(gen):
    x, y = 3 * _randn(gen, 4, 6), _rand(gen, 4, 6)
    torch.testing.assert_close(LF.focal_loss(x, y, gamma=0.0),
                               F.binary_cross_entropy_with_logits(x, y))


FOCAL_MULTI = [
    pytest.param(shape, alpha, gamma, ignore, id=f"{shape}-alpha={alpha}-gamma={gamma}-ig={ignore}")
    for shape in [(5,), (3, 7), (2, 5, 4, 3)]
    for alpha in (None, 0.5, "tensor")
    for gamma in (0.5, 2.0)  # gamma = 0 is checked against cross-entropy below
    for ignore in (None, -1)
    if not (ignore is not None and len(shape) == 1)
]


@pytest.mark.parametrize(("shape", "alpha", "gamma", "ignore"), FOCAL_MULTI)
def test_focal_multiclass(shape, alpha, gamma, ignore, gen):
    num_classes, tshape = _classes(shape)
    x, y = 2 * _randn(gen, *shape), _indices(gen, num_classes, tshape)
    if alpha == "tensor":
        alpha = _rand(gen, num_classes) + 0.1
    kwargs = {"alpha": alpha, "gamma": gamma}
    if ignore is not None:
        y.view(-1)[::3] = ignore
        kwargs["ignore_index"] = ignore
    for reduction in REDUCTIONS:
        kw = {**kwargs, "reduction": reduction}
        out, grads = _run(lambda a, b, kw=kw: LF.focal_loss(a, b, **kw), x, y, False)
        ref, ref_grads = _run(lambda a, b, kw=kw: oracle.focal_multiclass(a, b, **kw), x, y, False)
        assert_matches(out, ref, grads, ref_grads, reduction)
        torch.testing.assert_close(lk.FocalLoss(**kw)(x, y), ref)


def test_focal_multiclass_gamma0_is_cross_entropy(gen):
    """With gamma = 0 and no alpha, focal loss is cross-entropy (torch as an independent oracle)."""
    x, y = _randn(gen, 2, 5, 4, 3), _indices(gen, 5, (2, 4, 3))
    y[0, 0, 0] = -100
    torch.testing.assert_close(LF.focal_loss(x, y, gamma=0.0), F.cross_entropy(x, y))


DICE = [
    pytest.param(shape, smooth, ignore, id=f"{shape}-smooth={smooth}-ignore={ignore}")
    for shape in [(3, 4), (2, 3, 4, 5), (2, 5, 4, 3)]
    for smooth in (0.0, 1.0)
    for ignore in (None, 255)
]


@pytest.mark.parametrize(("shape", "smooth", "ignore"), DICE)
def test_dice_multiclass(shape, smooth, ignore, gen):
    num_classes, tshape = _classes(shape)
    x, y = 2 * _randn(gen, *shape), _indices(gen, num_classes, tshape)
    if ignore is not None:
        y.view(-1)[::4] = ignore
    for reduction in REDUCTIONS:
        kw = {"smooth": smooth, "ignore_index": ignore, "reduction": reduction}
        out, grads = _run(lambda a, b, kw=kw: LF.dice_loss(a, b, **kw), x, y, False)
        ref, ref_grads = _run(lambda a, b, kw=kw: oracle.dice(a, b, **kw), x, y, False)
        assert_matches(out, ref, grads, ref_grads, reduction)
        torch.testing.assert_close(lk.DiceLoss(**kw)(x, y), ref)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_dice_binary_multilabel(reduction, gen):
    x, t = 2 * _randn(gen, 2, 3, 4, 5), (_rand(gen, 2, 3, 4, 5) > 0.5).double()
    out, grads = _run(lambda a, b: LF.dice_loss(a, b, reduction=reduction), x, t, False)
    ref, ref_grads = _run(lambda a, b: oracle.dice_binary(a, b, reduction=reduction), x, t, False)
    assert_matches(out, ref, grads, ref_grads)


def test_dice_by_hand():
    """One image, two classes, two pixels, logits (0, 0) everywhere: p = 1/2 at every pixel.
    Class 0 owns pixel 0: dice_0 = (2 * 0.5 + 1) / (1 + 1 + 1) = 2/3, the same for class 1."""
    x = torch.zeros(1, 2, 2, dtype=torch.float64)
    y = torch.tensor([[0, 1]])
    torch.testing.assert_close(LF.dice_loss(x, y, smooth=1.0, reduction="none"),
                               torch.tensor([1 / 3, 1 / 3], dtype=torch.float64))


# ----------------------------------------------------------------------------------------------
# Legacy size_average / reduce, invalid reductions

LEGACY = [  # (size_average, reduce) -> torch's mapping
    ((None, False), "none"), ((True, False), "none"), ((False, False), "none"),
    ((False, None), "sum"), ((False, True), "sum"),
    ((True, None), "mean"), ((None, True), "mean"), ((True, True), "mean"),
]
LEGACY_LOSSES = [  # (functional, Module)
    ("mse_loss", "MSELoss"), ("l1_loss", "L1Loss"), ("smooth_l1_loss", "SmoothL1Loss"),
    ("binary_cross_entropy", "BCELoss"), (_BCEL, "BCEWithLogitsLoss"),
    ("cross_entropy", "CrossEntropyLoss"), ("nll_loss", "NLLLoss"), ("kl_div", "KLDivLoss"),
]


def _healthy_pair(fn: str, gen):
    if fn in ("cross_entropy", "nll_loss"):
        x, y, _ = _class_indices((3, 7), log_probs=fn == "nll_loss")(gen)
        return x, y
    if fn == "binary_cross_entropy":
        return _bce((3, 7))(gen)[:2]
    if fn == "kl_div":
        return _kl((3, 7))(gen)[:2]
    if fn == _BCEL:
        return _bcel((3, 7))(gen)[:2]
    return _randn(gen, 3, 7), _randn(gen, 3, 7)


@pytest.mark.filterwarnings(KL_MEAN_WARNING)
@pytest.mark.parametrize(("fn", "module"), LEGACY_LOSSES)
@pytest.mark.parametrize(("legacy", "expected"), LEGACY)
def test_legacy_size_average_reduce(fn, module, legacy, expected, gen):
    size_average, reduce = legacy
    x, y = _healthy_pair(fn, gen)
    ref = getattr(oracle, fn)(x, y, reduction=expected)
    with pytest.warns(UserWarning, match="size_average and reduce args will be deprecated"):
        # the explicit reduction is ignored once a legacy argument is given
        out = getattr(LF, fn)(x, y, size_average=size_average, reduce=reduce, reduction="sum")
    torch.testing.assert_close(out, ref)
    with pytest.warns(UserWarning, match="size_average and reduce args will be deprecated"):
        mod = getattr(lk, module)(size_average=size_average, reduce=reduce)
    assert mod.reduction == expected
    torch.testing.assert_close(mod(x, y), ref)


ALL_LOSSES = [f for f, _ in LEGACY_LOSSES] + ["huber_loss"]


# "batchmean" is valid for kl_div only.
INVALID_REDUCTIONS = [
    (fn, bad)
    for fn in ALL_LOSSES
    for bad in ("avg", None, "batchmean", "MEAN")
    if not (fn == "kl_div" and bad == "batchmean")
]


@pytest.mark.parametrize(("fn", "bad"), INVALID_REDUCTIONS)
def test_invalid_reduction_raises_value_error(fn, bad, gen):
    x, y = _healthy_pair(fn, gen)
    with pytest.raises(ValueError, match="not a valid value for reduction"):
        getattr(LF, fn)(x, y, reduction=bad)


@pytest.mark.parametrize(("fn", "module"), [*LEGACY_LOSSES, ("huber_loss", "HuberLoss")])
def test_invalid_reduction_raises_at_forward_not_construction(fn, module, gen):
    x, y = _healthy_pair(fn, gen)
    mod = getattr(lk, module)(reduction="avg")  # constructs fine, as in torch
    with pytest.raises(ValueError, match="avg"):
        mod(x, y)


@pytest.mark.parametrize(("fn", "module"), [("focal_loss", "FocalLoss"), ("dice_loss", "DiceLoss")])
def test_invalid_reduction_focal_dice(fn, module, gen):
    x, y = _randn(gen, 2, 3, 4), _indices(gen, 3, (2, 4))
    with pytest.raises(ValueError, match="avg"):
        getattr(LF, fn)(x, y, reduction="avg")
    with pytest.raises(ValueError, match="avg"):
        getattr(lk, module)(reduction="avg")(x, y)


@pytest.mark.parametrize("fn", ["mse_loss", "cross_entropy"])
def test_elementwise_mean_is_deprecated_mean(fn, gen):
    x, y = _healthy_pair(fn, gen)
    with pytest.warns(UserWarning, match="elementwise_mean"):
        out = getattr(LF, fn)(x, y, reduction="elementwise_mean")
    torch.testing.assert_close(out, getattr(oracle, fn)(x, y, reduction="mean"))


def test_huber_rejects_legacy_arguments(gen):
    x, y = _randn(gen, 3), _randn(gen, 3)
    with pytest.raises(TypeError):
        LF.huber_loss(x, y, size_average=False)
    with pytest.raises(TypeError):
        lk.HuberLoss(reduce=False)


def test_kl_mean_warns_like_torch(gen):
    x, y = _healthy_pair("kl_div", gen)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        LF.kl_div(x, y, reduction="mean")
    assert any("batchmean" in str(w.message) for w in caught)
    assert not any(issubclass(w.category, lk.LossWarning) for w in caught)


# ----------------------------------------------------------------------------------------------
# Edge cases of torch (docs/torch-semantics.md), each compared with torch itself


def test_zero_total_class_weight_is_nan_like_torch(gen):
    """Non-ignored targets whose weights sum to 0: torch's 0/0 = NaN (value and gradient). This
    is not the all-ignored row of the departures table (docs/design.md), so losskit keeps
    torch's NaN."""
    x, y = _randn(gen, 3, 3), torch.tensor([0, 0, 0])
    w = torch.tensor([0.0, 1.0, 1.0], dtype=torch.float64)
    for fn, inp in (("cross_entropy", x), ("nll_loss", torch.log_softmax(x, 1))):
        out, grads = _run(lambda a, b, fn=fn: getattr(LF, fn)(a, b, weight=w), inp, y, False)
        ref, ref_grads = _run(lambda a, b, fn=fn: getattr(oracle, fn)(a, b, weight=w), inp, y,
                              False)
        assert torch.isnan(out)
        assert_matches(out, ref, grads, ref_grads, torch_nan=True)


def test_negative_inf_logit_with_label_smoothing_is_inf_like_torch(gen):
    x, y = _randn(gen, 2, 3), torch.tensor([0, 1])
    x[:, 2] = -float("inf")
    assert torch.isinf(LF.cross_entropy(x, y, label_smoothing=0.1))
    torch.testing.assert_close(LF.cross_entropy(x, y), oracle.cross_entropy(x, y))


def test_label_smoothing_bounds(gen):
    x, y = _randn(gen, 4, 3), torch.tensor([0, 1, 2, 1])
    # a negative value is silently 0 in torch
    torch.testing.assert_close(LF.cross_entropy(x, y, label_smoothing=-0.2),
                               oracle.cross_entropy(x, y, label_smoothing=-0.2))
    torch.testing.assert_close(LF.cross_entropy(x, y, label_smoothing=1.0),
                               oracle.cross_entropy(x, y, label_smoothing=1.0))
    with pytest.raises(RuntimeError, match="label_smoothing"):  # torch's class and wording
        LF.cross_entropy(x, y, label_smoothing=1.5)


def test_l1_complex_input_gives_real_loss(gen):
    z = torch.complex(_randn(gen, 3, 4), _randn(gen, 3, 4))
    w = torch.complex(_randn(gen, 3, 4), _randn(gen, 3, 4))
    out = LF.l1_loss(z, w, reduction="none")
    assert not out.is_complex()
    torch.testing.assert_close(out, oracle.l1_loss(z, w, reduction="none"))


@pytest.mark.parametrize("fn", ["smooth_l1_loss", "mse_loss", "l1_loss", "huber_loss"])
def test_integer_target_for_regression(fn, gen):
    x, y = _randn(gen, 3, 4), torch.randint(-2, 3, (3, 4), generator=gen)
    out = getattr(LF, fn)(x, y)
    ref = getattr(oracle, fn)(x, y)
    assert out.dtype == ref.dtype
    torch.testing.assert_close(out, ref)


def test_non_contiguous_and_channels_last_inputs(gen):
    x = _randn(gen, 2, 4, 3, 5).to(memory_format=torch.channels_last)
    y = torch.randint(0, 4, (2, 3, 5), generator=gen)
    w = _rand(gen, 4) + 0.5
    for reduction in REDUCTIONS:
        torch.testing.assert_close(
            LF.cross_entropy(x, y, weight=w, label_smoothing=0.1, reduction=reduction),
            oracle.cross_entropy(x.contiguous(), y, weight=w, label_smoothing=0.1,
                                 reduction=reduction))
    xt = _randn(gen, 7, 3).t()  # (3, 7), not contiguous
    yt = torch.randint(0, 7, (3,), generator=gen)
    out, grads = _run(lambda a, b: LF.cross_entropy(a.t().contiguous().t(), b), xt, yt, False)
    ref, ref_grads = _run(lambda a, b: oracle.cross_entropy(a, b), xt.contiguous(), yt, False)
    assert_matches(out, ref, grads, ref_grads)
    a, b = _randn(gen, 6, 4).t(), _randn(gen, 4, 6)
    torch.testing.assert_close(LF.mse_loss(a, b, reduction="none"), oracle.mse_loss(a, b,
                                                                                   reduction="none"))


EMPTY = ["mse_loss", "l1_loss", "huber_loss", "smooth_l1_loss", "binary_cross_entropy", _BCEL,
         "kl_div"]


@pytest.mark.filterwarnings(KL_MEAN_WARNING)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("fn", EMPTY)
def test_empty_input_like_torch(fn, reduction):
    """'mean' over an empty tensor is torch's NaN (0/0), 'sum' is 0, 'none' is empty."""
    x, y = torch.empty(0, 3, dtype=torch.float64), torch.empty(0, 3, dtype=torch.float64)
    out = getattr(LF, fn)(x, y, reduction=reduction)
    torch.testing.assert_close(out, getattr(oracle, fn)(x, y, reduction=reduction),
                               equal_nan=True)


def test_weighted_mean_with_a_negative_weight_sum_divides_by_it():
    """Issue 16, seed 4: only an exactly zero denominator is replaced by 1 ("mean over
    nothing"); torch divides a weighted mean by a negative weight sum as it is. poly1 with
    epsilon=0 is cross-entropy, reduced through losskit's _reduction with the weight sum."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, dtype=torch.float64, generator=g)
    y = torch.tensor([1, 1, 0, 2])
    w = torch.tensor([1.0, -3.0, 0.5], dtype=torch.float64)  # picked weights sum to -4.5
    got = LF.poly1_cross_entropy(x, y, weight=w, epsilon=0.0)
    torch.testing.assert_close(got, F.cross_entropy(x, y, weight=w), rtol=1e-12, atol=0)
    terms = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)
    assert lk._reduction.reduce(terms, "mean", torch.tensor(-4.0, dtype=torch.float64)) == -0.5
