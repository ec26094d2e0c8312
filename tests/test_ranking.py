"""Ranking and embedding losses beyond the case table: guardrails and their healthy twins,
legacy arguments, reductions, exception classes against torch, dtypes, empty batches, second
derivatives, the records' mean counts and the Modules' torch twins."""

from __future__ import annotations

import re
import warnings

import pytest
import torch
import torch.nn.functional as F
from cases import ALL
from cases.ranking import squared_euclidean
from torch import nn
from torch.autograd import gradgradcheck

import losskit as lk
import losskit.functional as LF
from losskit import registry

SIGNED = ["margin_ranking_loss", "hinge_embedding_loss", "cosine_embedding_loss"]
TRIPLETS = ["triplet_margin_loss", "triplet_margin_with_distance_loss"]
LEGACY = ["margin_ranking_loss", "hinge_embedding_loss", "cosine_embedding_loss",
          "triplet_margin_loss"]


def _randn(gen, *shape, dtype=torch.float32):
    return torch.randn(shape, generator=gen, dtype=dtype)


def _signed_args(name: str, gen, target: torch.Tensor) -> tuple:
    """Healthy predictions for ``name`` with the given ``target`` of shape (N,)."""
    n = target.shape[0]
    if name == "margin_ranking_loss":
        return _randn(gen, n), _randn(gen, n), target
    if name == "hinge_embedding_loss":
        return _randn(gen, n).abs(), target
    return _randn(gen, n, 3), _randn(gen, n, 3), target


def _triplet(gen, *shape):
    return tuple(_randn(gen, *shape) for _ in range(3))


def _quiet(fn, *args, **kwargs):
    """Call under "always" checks with LossWarning as an error: a healthy input stays silent."""
    with lk.checks("always"), warnings.catch_warnings():
        warnings.simplefilter("error", lk.LossWarning)
        return fn(*args, **kwargs)


# ----------------------------------------------------------------------------------------------
# Guardrail: 0/1 labels where -1/+1 labels are needed


@pytest.mark.parametrize("name", SIGNED)
def test_zero_one_labels_raise_naming_the_fix(name, gen):
    target = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0])
    args = _signed_args(name, gen, target)
    getattr(F, name)(*args)  # torch runs without a word
    with lk.checks("always"), pytest.raises(lk.LossInputError) as err:
        getattr(LF, name)(*args)
    message = str(err.value)
    assert message.startswith(f"{name}: `target` holds 0/1 labels (3 zeros, the first at "
                               f"index (1,))")
    assert "silently trains the wrong thing" in message
    assert message.endswith("Fix: `target = 2 * target - 1`.")


@pytest.mark.parametrize("name", SIGNED)
def test_healthy_twin_minus_one_plus_one_labels_are_quiet_and_match_torch(name, gen):
    target = 2 * torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0]) - 1  # the fix of the test above
    args = _signed_args(name, gen, target)
    torch.testing.assert_close(_quiet(getattr(LF, name), *args), getattr(F, name)(*args),
                               rtol=0, atol=0)
    for sign in (1.0, -1.0):  # one sign only is fine too (an all-positive batch)
        _quiet(getattr(LF, name), *args[:-1], torch.full((5,), sign))
    _quiet(getattr(LF, name), *args[:-1], target.long())  # int64 -1/+1 labels are fine


@pytest.mark.parametrize("name", SIGNED)
@pytest.mark.parametrize(("labels", "expected"), [
    ([1.0, 2.0, 2.0, 1.0], "2.0 at index (1,) (2 such elements) outside {-1, 1} (range [1.0, "
                           "2.0])"),
    ([-1.0, 0.0, 1.0, 1.0], "0.0 at index (1,) (1 such element) outside {-1, 1}"),
    ([0.5, -1.0, 1.0, 1.0], "0.5 at index (0,) (1 such element) outside {-1, 1}"),
])
def test_other_labels_outside_signs_raise(name, labels, expected, gen):
    args = _signed_args(name, gen, torch.tensor(labels))
    with lk.checks("always"), pytest.raises(lk.LossInputError) as err:
        getattr(LF, name)(*args)
    message = str(err.value)
    assert message.startswith(f"{name}: `target` holds {expected}")
    fix = "2 * target - 3" if labels[0] == 1.0 else "torch.where(target == positive_label"
    assert "Fix: map the labels to -1/1" in message and fix in message


@pytest.mark.parametrize("name", SIGNED)
def test_label_values_are_a_value_check_that_obeys_the_mode(name, gen):
    target = torch.tensor([1.0, 0.0, 1.0, 0.0])
    args = _signed_args(name, gen, target)
    with lk.checks("off"):  # no value checks: torch's number, as torch computes it
        torch.testing.assert_close(getattr(LF, name)(*args), getattr(F, name)(*args))


@pytest.mark.parametrize("name", SIGNED)
def test_bool_labels_raise_always(name, gen):
    target = torch.tensor([True, False, True])
    args = _signed_args(name, gen, target)
    wanted = lk.LossRuntimeError if name == "margin_ranking_loss" else lk.LossInputError
    with lk.checks("off"), pytest.raises(wanted) as err:  # metadata: runs in every mode
        getattr(LF, name)(*args)
    assert "dtype torch.bool, device cpu: True/False labels, which mean 1/0" in str(err.value)
    assert str(err.value).endswith("Fix: `target = 2 * target.float() - 1`.")
    _quiet(getattr(LF, name), *args[:-1], 2 * target.float() - 1)  # the healthy twin


# ----------------------------------------------------------------------------------------------
# Guardrail: shapes that differ (broadcast silently, or fail inside torch)


def test_margin_ranking_column_against_vector_names_the_odd_input(gen):
    s1, s2, y = _randn(gen, 6, 1), _randn(gen, 6), torch.ones(6)
    with pytest.raises(RuntimeError):
        F.margin_ranking_loss(s1, s2, y)
    with pytest.raises(lk.LossRuntimeError) as err:
        LF.margin_ranking_loss(s1, s2, y)
    assert str(err.value) == (
        "margin_ranking_loss: `input1`, `input2` and `target` must have the same shape, but "
        "`input1` has shape (6, 1) while `input2` and `target` have shape (6,); torch cannot "
        "pair them element by element and raises. Fix: `input1 = input1.squeeze(-1)`."
    )
    _quiet(LF.margin_ranking_loss, s1.squeeze(-1), s2, y)  # the fix


def test_margin_ranking_shapes_that_broadcast_silently_raise(gen):
    s1, s2, y = _randn(gen, 6, 1), _randn(gen, 1, 6), torch.ones(6, 1)
    assert F.margin_ranking_loss(s1, s2, y, reduction="none").shape == (6, 6)  # torch
    with pytest.raises(lk.LossInputError, match=re.escape(
            "`input2` has shape (1, 6) while `input1` and `target` have shape (6, 1); torch "
            "would broadcast them silently to (6, 6)")) as err:
        LF.margin_ranking_loss(s1, s2, y)
    assert not isinstance(err.value, RuntimeError)  # torch does not raise here
    assert "Fix: `input2 = input2.reshape(6, 1)`." in str(err.value)
    _quiet(LF.margin_ranking_loss, s1, s2.reshape(6, 1), y)  # the healthy twin


def test_hinge_column_against_vector_raises_where_torch_broadcasts(gen):
    d, y = _randn(gen, 5, 1).abs(), torch.ones(5)
    assert F.hinge_embedding_loss(d, y, reduction="none").shape == (5, 5)
    with pytest.raises(lk.LossInputError, match=re.escape(
            "`input` has shape (5, 1) while `target` has shape (5,); torch would broadcast "
            "them silently to (5, 5)")) as err:
        LF.hinge_embedding_loss(d, y)
    assert str(err.value).endswith("Fix: `input = input.squeeze(-1)`.")
    _quiet(LF.hinge_embedding_loss, d.squeeze(-1), y)
    _quiet(LF.hinge_embedding_loss, _randn(gen, 2, 3).abs(), torch.ones(2, 3))  # any shape


@pytest.mark.parametrize(("odd", "shape", "error", "torch_raises", "fix"), [
    ("positive", (1, 4), lk.LossInputError, False, "give `positive` shape (5, 4), like `anchor` "
     "(or pass `positive.expand_as(anchor)`"),
    ("negative", (4,), lk.LossRuntimeError, True, "give `negative` shape (5, 4)"),
    ("negative", (3, 4), lk.LossRuntimeError, True, "give `negative` shape (5, 4), like "
     "`anchor`, one row per row of `anchor`"),
    ("anchor", (5, 4, 1), lk.LossRuntimeError, True, "`anchor = anchor.squeeze(-1)`"),
])
@pytest.mark.parametrize("name", TRIPLETS)
def test_triplet_of_different_shapes_names_which_differ(name, odd, shape, error, torch_raises,
                                                        fix, gen):
    triplet = dict(zip(("anchor", "positive", "negative"), _triplet(gen, 5, 4), strict=True))
    triplet[odd] = _randn(gen, *shape)
    args = tuple(triplet.values())
    if torch_raises:
        with pytest.raises(RuntimeError):
            getattr(F, name)(*args)
    else:
        getattr(F, name)(*args)
    with pytest.raises(error) as err:
        getattr(LF, name)(*args)
    others = " and ".join(f"`{n}`" for n in triplet if n != odd)
    assert f"but `{odd}` has shape {shape} while {others} have shape (5, 4)" in str(err.value)
    assert fix in str(err.value)
    _quiet(getattr(LF, name), *_triplet(gen, 5, 4))  # the healthy twin


def test_triplet_custom_distance_keeps_torchs_semantics_for_shapes(gen):
    """A custom distance decides what fits (here sets of different sizes): only the number of
    dimensions is checked, as in torch."""
    def set_distance(x, y):  # (N, K, D) and (N, M, D) -> (N,)
        return (x.mean(1) - y.mean(1)).norm(dim=-1)

    a, p, n = _randn(gen, 4, 3, 2), _randn(gen, 4, 5, 2), _randn(gen, 4, 2, 2)
    ours = _quiet(LF.triplet_margin_with_distance_loss, a, p, n, distance_function=set_distance)
    theirs = F.triplet_margin_with_distance_loss(a, p, n, distance_function=set_distance)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    with pytest.raises(lk.LossRuntimeError, match=re.escape(
            "got `anchor` 3-D (4, 3, 2), `positive` 2-D (4, 2), `negative` 3-D (4, 2, 2)")):
        LF.triplet_margin_with_distance_loss(a, p[:, 0], n, distance_function=set_distance)


def test_triplet_distance_function_is_called_as_torch_calls_it(gen):
    def recorder(log):
        def distance(x, y):
            log.append((x.data_ptr(), y.data_ptr()))
            return squared_euclidean(x, y)
        return distance

    a, p, n = _triplet(gen, 3, 2)
    ours, theirs = [], []
    out = LF.triplet_margin_with_distance_loss(a, p, n, distance_function=recorder(ours),
                                               swap=True)
    ref = F.triplet_margin_with_distance_loss(a, p, n, distance_function=recorder(theirs),
                                              swap=True)
    assert ours == theirs == [(a.data_ptr(), p.data_ptr()), (a.data_ptr(), n.data_ptr()),
                              (p.data_ptr(), n.data_ptr())]
    torch.testing.assert_close(out, ref, rtol=0, atol=0)


def test_cosine_shapes(gen):
    a, b, y = _randn(gen, 4, 3), _randn(gen, 4, 3), torch.tensor([1.0, -1.0, 1.0, -1.0])
    with pytest.raises(lk.LossRuntimeError) as err:  # (N, 1) labels; torch raises too
        LF.cosine_embedding_loss(a, b, y[:, None])
    assert "`target` has shape (4, 1), but it needs one label per pair" in str(err.value)
    assert str(err.value).endswith("Fix: `target = target.reshape(-1)`, one label per pair, "
                                   "shape (4,).")
    F.cosine_embedding_loss(a, b[:1], y)  # torch broadcasts one input2 over the batch
    with pytest.raises(lk.LossInputError, match=re.escape(
            "`input2` has shape (1, 3) while `input1` has shape (4, 3); torch would broadcast")):
        LF.cosine_embedding_loss(a, b[:1], y)
    F.cosine_embedding_loss(a, b, y[:1])  # torch broadcasts one label over the batch
    with pytest.raises(lk.LossInputError, match=re.escape(
            "`target` has 1 label but `input1` and `input2` hold 4 pairs")):
        LF.cosine_embedding_loss(a, b, y[:1])
    flatten = ("Fix: flatten the pairs: `input1.reshape(-1, 3)`, `input2.reshape(-1, 3)` and "
               "`target.reshape(-1)`.")
    for target in (y, y[None]):  # (B, T, D) pairs with a (T,) or (B, T) target; torch raises
        with pytest.raises(RuntimeError):
            F.cosine_embedding_loss(a[None], b[None], target)
        with pytest.raises(lk.LossRuntimeError, match=re.escape(flatten)):
            LF.cosine_embedding_loss(a[None], b[None], target)
    _quiet(LF.cosine_embedding_loss, a, b, y)  # healthy twins: a batch and one pair
    _quiet(LF.cosine_embedding_loss, a[0], b[0], y[0])


# ----------------------------------------------------------------------------------------------
# Guardrails: NaN / Inf, integer predictions, margin


def _all_args(name, gen):
    if name in SIGNED:
        return _signed_args(name, gen, torch.tensor([1.0, -1.0, 1.0]))
    return _triplet(gen, 3, 4)


ARG_NAMES = {
    "margin_ranking_loss": ("input1", "input2", "target"),
    "hinge_embedding_loss": ("input", "target"),
    "cosine_embedding_loss": ("input1", "input2", "target"),
    "triplet_margin_loss": ("anchor", "positive", "negative"),
    "triplet_margin_with_distance_loss": ("anchor", "positive", "negative"),
}


@pytest.mark.parametrize("name", SIGNED + TRIPLETS)
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_or_inf_in_any_tensor_raises_in_value_checks(name, bad, gen):
    for i, arg_name in enumerate(ARG_NAMES[name]):
        args = list(_all_args(name, gen))
        args[i] = args[i].clone()
        args[i].view(-1)[1] = bad
        with lk.checks("always"), pytest.raises(lk.LossRuntimeError, match=re.escape(
                f"{name}: `{arg_name}` holds NaN or Inf: {bad} at index")):
            getattr(LF, name)(*args)
        with lk.checks("off"):  # the value check obeys the mode
            getattr(LF, name)(*args)
    _quiet(getattr(LF, name), *_all_args(name, gen))


@pytest.mark.parametrize("name", [*SIGNED, "triplet_margin_loss"])
def test_integer_predictions_raise(name, gen):
    args = list(_all_args(name, gen))
    args[0] = args[0].round().long()
    with pytest.raises(lk.LossRuntimeError, match=re.escape(
            f"{name}: `{ARG_NAMES[name][0]}` has shape")) as err:
        getattr(LF, name)(*args)
    assert f"Fix: pass the model output, or `{ARG_NAMES[name][0]}.float()`." in str(err.value)


@pytest.mark.parametrize("name", TRIPLETS)
@pytest.mark.parametrize("margin", [0.0, -1.0])
def test_triplet_margin_must_be_positive(name, margin, gen):
    args = _triplet(gen, 3, 4)
    with pytest.raises(ValueError, match="margin must be greater than 0"):
        getattr(F, name)(*args, margin=margin)
    with pytest.raises(lk.LossInputError, match=re.escape(
            f"{name}: margin={margin!r}, but a triplet loss needs margin > 0")):
        getattr(LF, name)(*args, margin=margin)
    _quiet(getattr(LF, name), *args, margin=0.1)


# ----------------------------------------------------------------------------------------------
# Exception classes: where torch raises, losskit raises an instance of torch's class


def _bad_inputs():
    g = torch.Generator().manual_seed(0)
    v4, v3, m43 = _randn(g, 4), _randn(g, 3), _randn(g, 4, 3)
    y4 = torch.tensor([1.0, -1.0, 1.0, -1.0])
    cases = [
        ("margin_ranking_loss", (v4[:, None], v4, y4), {}),
        ("margin_ranking_loss", (v4, v3, y4), {}),
        ("margin_ranking_loss", (v4, v4, y4 > 0), {}),
        ("margin_ranking_loss", (v4.cfloat(), v4.cfloat(), y4), {}),
        ("margin_ranking_loss", (v4, v4, y4), {"reduction": "avg"}),
        ("hinge_embedding_loss", (v4.abs(), y4[:3]), {}),
        ("hinge_embedding_loss", (v4.cfloat(), y4), {}),
        ("hinge_embedding_loss", (v4.long(), y4), {}),
        ("hinge_embedding_loss", (v4.abs(), y4), {"reduction": None}),
        ("cosine_embedding_loss", (m43, m43, y4[:, None]), {}),
        ("cosine_embedding_loss", (m43[None], m43[None], y4), {}),
        ("cosine_embedding_loss", (m43, m43[:3], y4), {}),
        ("cosine_embedding_loss", (m43, m43, y4[:3]), {}),
        ("cosine_embedding_loss", (m43, m43, y4[0]), {}),
        ("cosine_embedding_loss", (v4, v4, y4), {}),
        ("cosine_embedding_loss", (m43.cfloat(), m43.cfloat(), y4), {}),
        ("triplet_margin_loss", (m43, v3, m43), {}),
        ("triplet_margin_loss", (m43, m43[:3], m43), {}),
        ("triplet_margin_loss", (m43, m43, m43), {"margin": 0.0}),
        ("triplet_margin_loss", (m43, m43, m43), {"reduction": "avg"}),
        ("triplet_margin_with_distance_loss", (m43, v3, m43), {}),
        ("triplet_margin_with_distance_loss", (m43, v3, m43),
         {"distance_function": squared_euclidean}),
        ("triplet_margin_with_distance_loss", (m43, m43[:3], m43), {}),
        ("triplet_margin_with_distance_loss", (m43, m43, m43), {"margin": -1.0}),
        ("triplet_margin_with_distance_loss", (m43, m43, m43), {"reduction": "elementwise_mean"}),
        ("triplet_margin_with_distance_loss", (m43, m43, m43), {"reduction": "avg"}),
    ]
    return [pytest.param(n, a, k, id=f"{n}-{i}") for i, (n, a, k) in enumerate(cases)]


@pytest.mark.parametrize(("name", "args", "kwargs"), _bad_inputs())
def test_exception_class_matches_torch(name, args, kwargs):
    with pytest.raises(Exception) as theirs:
        getattr(F, name)(*args, **kwargs)
    with lk.checks("always"), pytest.raises(lk.LossInputError) as ours:
        getattr(LF, name)(*args, **kwargs)
    assert isinstance(ours.value, type(theirs.value)), (ours.value, theirs.value)
    assert "Fix:" in str(ours.value)


# ----------------------------------------------------------------------------------------------
# Reductions and legacy arguments


@pytest.mark.parametrize("name", SIGNED + TRIPLETS)
def test_invalid_reduction_raises_at_call_time(name, gen):
    module = registry.get(name).module(reduction="avg")  # constructs, as torch's does
    args = _all_args(name, gen)
    with pytest.raises(ValueError, match="avg is not a valid value for reduction"):
        module(*args)
    with pytest.raises(lk.LossInputError, match="avg is not a valid value for reduction"):
        getattr(LF, name)(*args, reduction="avg")


@pytest.mark.parametrize("name", LEGACY)
def test_elementwise_mean_is_the_deprecated_alias_of_mean(name, gen):
    args = _all_args(name, gen)
    with pytest.warns(UserWarning, match="elementwise_mean"):
        ours = getattr(LF, name)(*args, reduction="elementwise_mean")
    torch.testing.assert_close(ours, getattr(F, name)(*args))


@pytest.mark.parametrize("name", LEGACY)
@pytest.mark.parametrize(("size_average", "reduce", "wanted"), [
    (False, None, "sum"), (None, False, "none"), (True, True, "mean"), (False, False, "none"),
])
def test_legacy_size_average_and_reduce(name, size_average, reduce, wanted, gen):
    args = _all_args(name, gen)
    with pytest.warns(UserWarning, match="size_average and reduce args will be deprecated"):
        ours = getattr(LF, name)(*args, size_average=size_average, reduce=reduce,
                                 reduction="sum")
    torch.testing.assert_close(ours, getattr(F, name)(*args, reduction=wanted), rtol=0, atol=0)
    with pytest.warns(UserWarning, match="size_average and reduce args will be deprecated"):
        module = registry.get(name).module(size_average=size_average, reduce=reduce)
    assert module.reduction == wanted
    torch.testing.assert_close(module(*args), ours, rtol=0, atol=0)


def test_triplet_with_distance_has_no_legacy_arguments(gen):
    with pytest.raises(TypeError):
        LF.triplet_margin_with_distance_loss(*_triplet(gen, 2, 3), size_average=False)
    with pytest.raises(TypeError):
        lk.TripletMarginWithDistanceLoss(reduce=False)
    with pytest.raises(TypeError):  # keyword-only, as torch
        LF.triplet_margin_with_distance_loss(*_triplet(gen, 2, 3), None)


# ----------------------------------------------------------------------------------------------
# dtypes and empty batches


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("name", SIGNED + TRIPLETS)
def test_low_precision_output_dtype_and_value_as_torch(name, dtype, gen):
    args = tuple(t.to(dtype) if t.is_floating_point() else t for t in _all_args(name, gen))
    for reduction in ("none", "mean", "sum"):
        ours = _quiet(getattr(LF, name), *args, reduction=reduction)
        theirs = getattr(F, name)(*args, reduction=reduction)
        assert ours.dtype == theirs.dtype == dtype
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


def _empty_args(name):
    if name == "margin_ranking_loss":
        return torch.zeros(0), torch.zeros(0), torch.zeros(0)
    if name == "hinge_embedding_loss":
        return torch.zeros(0), torch.zeros(0)
    if name == "cosine_embedding_loss":
        return torch.zeros(0, 3), torch.zeros(0, 3), torch.zeros(0)
    return torch.zeros(0, 3), torch.zeros(0, 3), torch.zeros(0, 3)


@pytest.mark.parametrize("name", SIGNED + TRIPLETS)
def test_empty_batch_as_torch(name):
    """An empty batch: "mean" is NaN (0/0) and "sum" 0, exactly as torch (no labels to ignore,
    so losskit's "mean over nothing" rule for ignore_index does not apply)."""
    args = _empty_args(name)
    assert torch.isnan(_quiet(getattr(LF, name), *args))
    assert torch.isnan(getattr(F, name)(*args))
    assert _quiet(getattr(LF, name), *args, reduction="sum").item() == 0.0
    assert _quiet(getattr(LF, name), *args, reduction="none").shape == (0,)


# ----------------------------------------------------------------------------------------------
# Second derivatives, mean counts, records, Modules


def _first_case(name):
    return next(c for c in ALL if c.loss == name)


@pytest.mark.parametrize("name", SIGNED + TRIPLETS)
def test_second_derivative_gradgradcheck(name):
    case = _first_case(name)
    args, kwargs = case.make(torch.Generator().manual_seed(0))
    leaves = [a.requires_grad_(i in case.grad_args) for i, a in enumerate(args)]

    def f(*wanted):
        full = list(leaves)
        for i, w in zip(case.grad_args, wanted, strict=True):
            full[i] = w
        return getattr(LF, name)(*full, **kwargs, reduction="sum")

    assert gradgradcheck(f, tuple(leaves[i] for i in case.grad_args), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("case", [c for c in ALL if registry.get(c.loss).family == "ranking"],
                         ids=str)
def test_mean_count_is_the_denominator_of_mean(case):
    args, kwargs = case.make(torch.Generator().manual_seed(0))
    record = registry.get(case.loss)
    module = record.module(**kwargs)
    count = record.mean_count(module, *args)
    assert count.dim() == 0 and count.dtype == torch.float64
    total = getattr(F, case.loss)(*args, **kwargs, reduction="sum")
    torch.testing.assert_close(count * getattr(F, case.loss)(*args, **kwargs), total)
    assert count == getattr(F, case.loss)(*args, **kwargs, reduction="none").numel()


def test_records():
    kinds = {r.name: (r.input, r.targets) for r in registry.records() if r.family == "ranking"}
    assert kinds == {
        "margin_ranking_loss": ("scores", ("sign",)),
        "hinge_embedding_loss": ("distances", ("sign",)),
        "cosine_embedding_loss": ("embeddings", ("sign",)),
        "triplet_margin_loss": ("embeddings", ("none",)),
        "triplet_margin_with_distance_loss": ("embeddings", ("none",)),
    }
    assert registry.lookup(nn.TripletMarginLoss()).name == "triplet_margin_loss"
    assert registry.lookup(F.margin_ranking_loss).name == "margin_ranking_loss"


def test_positional_argument_order_is_torchs():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy-argument deprecation warning
        mr = lk.MarginRankingLoss(0.5, None, None, "sum")
        he = lk.HingeEmbeddingLoss(2.0, None, None, "none")
        ce = lk.CosineEmbeddingLoss(0.3, None, None, "sum")
        tm = lk.TripletMarginLoss(0.5, 1.0, 1e-3, True, None, None, "none")
    assert (mr.margin, mr.reduction) == (0.5, "sum")
    assert (he.margin, he.reduction) == (2.0, "none")
    assert (ce.margin, ce.reduction) == (0.3, "sum")
    assert (tm.margin, tm.p, tm.eps, tm.swap, tm.reduction) == (0.5, 1.0, 1e-3, True, "none")


def test_triplet_with_distance_module_is_torchs(gen):
    ours, theirs = lk.TripletMarginWithDistanceLoss(), nn.TripletMarginWithDistanceLoss()
    assert isinstance(ours, nn.TripletMarginWithDistanceLoss)
    assert repr(ours) == repr(theirs)  # the PairwiseDistance() submodule shows, as in torch
    assert isinstance(ours.distance_function, nn.PairwiseDistance)
    assert list(ours.state_dict()) == list(theirs.state_dict()) == []
    with pytest.raises(ValueError, match="expected margin to be greater than 0"):
        lk.TripletMarginWithDistanceLoss(margin=0.0)  # torch's constructor check
    args = _triplet(gen, 4, 3)
    torch.testing.assert_close(ours(*args), theirs(*args), rtol=0, atol=0)


def test_ranking_triplet_with_a_broadcast_positive_counts_one_term_per_anchor():
    """Kills `anchor = tensors[0]` -> `tensors[1]` in `_count_triplets` (ranking.py): a user's
    distance may broadcast one (1, D) positive over 4 anchors; the mean counts 4 terms (the
    loss per anchor), and loss_sum = mean * 4 with the hand L1 distance as the oracle."""
    from losskit.distributed import loss_sum_and_count

    g = torch.Generator().manual_seed(0)
    a, n = (torch.randn(4, 3, dtype=torch.float64, generator=g) for _ in range(2))
    p = torch.randn(1, 3, dtype=torch.float64, generator=g)

    def l1(u, v):
        return (u - v).abs().sum(-1)

    s, count = loss_sum_and_count(lk.TripletMarginWithDistanceLoss(distance_function=l1), a, p, n)
    assert float(count) == 4.0
    torch.testing.assert_close(s, (l1(a, p) - l1(a, n) + 1.0).clamp_min(0).sum())
