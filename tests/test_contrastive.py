"""Contrastive losses beyond the case table (tests/cases/contrastive.py): the chunked path
against the plain one, learnt temperatures and scales, pytorch-metric-learning as a second
oracle, the guardrails with their healthy twins, and ``gather=True`` on 2 gloo ranks."""

from __future__ import annotations

import math
import warnings

import _contrastive_workers as CW
import _dist_workers as W
import pytest
import torch
from cases.contrastive import clip, nt_xent, supcon
from torch.autograd import gradcheck

import losskit as lk
import losskit.functional as LF

F64 = torch.float64


def _views(b=5, d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(b, d, generator=g, dtype=F64)
    return a, a + 0.5 * torch.randn(b, d, generator=g, dtype=F64)


def _supcon_batch(b=5, v=2, d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, v, d, generator=g, dtype=F64), torch.randint(0, 3, (b,), generator=g)


def _call(loss, tensors, knob, **kwargs):
    return CW.call(loss, tensors, knob, **kwargs)


def _value_and_grads(loss, tensors, knob, **kwargs):
    leaves = [t.detach().clone().requires_grad_(t.is_floating_point()) for t in tensors]
    knob = knob.detach().clone().requires_grad_(True)
    out = _call(loss, leaves, knob, **kwargs)
    upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=F64)
    wanted = [t for t in leaves if t.is_floating_point()] + [knob]
    return out, torch.autograd.grad(out, wanted, upstream)


def _batch(loss):
    if loss == "supcon_loss":
        return _supcon_batch(), torch.tensor(0.3, dtype=F64)
    return _views(), torch.tensor(0.3 if loss == "info_nce" else 1.5, dtype=F64)


LOSSES = ["info_nce", "clip_loss", "supcon_loss"]


# ----------------------------------------------------------------------------------------------
# Chunked == plain, values and gradients (the temperature's included)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("chunk", [1, 3, 4, 64], ids=lambda c: f"chunk{c}")
@pytest.mark.parametrize("loss", LOSSES)
def test_chunked_equals_plain(loss, chunk, reduction):
    """B = 5 gives 10 rows for info_nce and supcon (chunk 3: a last chunk of one row), 5 for
    clip (chunk 4: a last chunk of one row); chunk 64 is one tile bigger than the batch."""
    tensors, knob = _batch(loss)
    plain, plain_grads = _value_and_grads(loss, tensors, knob, reduction=reduction)
    chunked, chunked_grads = _value_and_grads(loss, tensors, knob, reduction=reduction,
                                              chunk_size=chunk)
    torch.testing.assert_close(chunked, plain, rtol=1e-12, atol=1e-12)
    for a, b in zip(chunked_grads, plain_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("chunk", [None, 3], ids=["plain", "chunk3"])
@pytest.mark.parametrize("loss", LOSSES)
def test_gradcheck_with_the_temperature(loss, chunk):
    tensors, knob = _batch(loss)
    floats = [t.clone().requires_grad_(True) for t in tensors if t.is_floating_point()]
    labels = [t for t in tensors if not t.is_floating_point()]

    def f(*args):
        return _call(loss, [*args[:-1], *labels], args[-1], chunk_size=chunk)

    assert gradcheck(f, (*floats, knob.clone().requires_grad_(True)), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("loss", LOSSES)
def test_the_temperature_gradient_matches_the_formula(loss):
    """d loss / d temperature (d / d logit_scale for CLIP) from the loops in the case file."""
    tensors, knob = _batch(loss)
    reference = {"info_nce": nt_xent, "clip_loss": clip, "supcon_loss": supcon}[loss]
    key = "logit_scale" if loss == "clip_loss" else "temperature"
    for chunk in (None, 2):
        t = knob.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(_call(loss, tensors, t, chunk_size=chunk), t)
        h = 1e-6  # the formula takes a float: a central difference of it
        up = reference(*tensors, **{key: knob.item() + h})
        down = reference(*tensors, **{key: knob.item() - h})
        torch.testing.assert_close(grad, (up - down) / (2 * h), rtol=1e-6, atol=1e-8)


def test_chunked_backward_refuses_a_second_derivative():
    z1, z2 = (t.requires_grad_(True) for t in _views())
    out = LF.info_nce(z1, z2, chunk_size=2)
    with pytest.raises(lk.LossInputError, match="create_graph=True"):
        torch.autograd.grad(out, z1, create_graph=True)


def test_supcon_with_no_positive_anywhere_is_zero_not_nan():
    """One view, every label distinct: no anchor has a positive (supcon's analogue of an
    all-ignored batch): 0 with zero gradient on both paths, never NaN."""
    features = torch.randn(4, 1, 3, dtype=F64, requires_grad=True)
    labels = torch.arange(4)
    for chunk in (None, 2):
        out = LF.supcon_loss(features, labels, chunk_size=chunk)
        (grad,) = torch.autograd.grad(out, features)
        assert out.item() == 0.0 and torch.equal(grad, torch.zeros_like(grad))


def test_supcon_without_labels_is_info_nce_for_two_views():
    z1, z2 = _views()
    torch.testing.assert_close(LF.supcon_loss(torch.stack([z1, z2], 1), temperature=0.2),
                               LF.info_nce(z1, z2, temperature=0.2))


def test_supcon_without_labels_matches_the_formula_for_three_views():
    features, _ = _supcon_batch(b=4, v=3)
    for chunk in (None, 5):
        torch.testing.assert_close(
            LF.supcon_loss(features, temperature=0.4, reduction="none", chunk_size=chunk),
            supcon(features, None, temperature=0.4, reduction="none"))


# ----------------------------------------------------------------------------------------------
# Learnt temperature and scale


def test_learnt_temperature_is_a_log_parameter_with_the_formulas_gradient():
    loss = lk.InfoNCELoss(temperature=0.3, learn_temperature=True).double()
    z1, z2 = _views()
    assert [name for name, _ in loss.named_parameters()] == ["log_temperature"]
    loss(z1, z2).backward()
    h = 1e-6  # d/d log t = t * d/dt
    slope = (nt_xent(z1, z2, temperature=0.3 + h) - nt_xent(z1, z2, temperature=0.3 - h)) / (2 * h)
    torch.testing.assert_close(loss.log_temperature.grad, 0.3 * slope, rtol=1e-6, atol=1e-8)


def test_clip_logit_scale_is_clamped_at_100_with_zero_gradient_beyond():
    a, b = _views()
    below = torch.tensor(math.log(50.0), dtype=F64, requires_grad=True)
    above = torch.tensor(math.log(500.0), dtype=F64, requires_grad=True)
    with lk.checks("off"):  # the value check warns about `above`: tested below
        high = LF.clip_loss(a, b, logit_scale=above)
    torch.testing.assert_close(high, clip(a, b, logit_scale=math.log(100.0)))
    assert torch.autograd.grad(high, above)[0].item() == 0.0
    assert torch.autograd.grad(LF.clip_loss(a, b, logit_scale=below), below)[0].item() != 0.0


def test_clip_module_learns_its_scale():
    loss = lk.ClipLoss(learn_logit_scale=True).double()
    a, b = _views()
    loss(a, b).backward()
    assert loss.logit_scale.grad is not None and loss.logit_scale.grad.item() != 0.0
    torch.testing.assert_close(loss.logit_scale.detach(),
                               torch.tensor(math.log(1 / 0.07), dtype=F64))


# ----------------------------------------------------------------------------------------------
# pytorch-metric-learning as a second, independent implementation


def test_info_nce_matches_pytorch_metric_learning_nt_xent():
    losses = pytest.importorskip("pytorch_metric_learning.losses")
    z1, z2 = _views(b=6, d=4)
    embeddings = torch.cat([z1, z2])
    labels = torch.cat([torch.arange(6), torch.arange(6)])
    theirs = losses.NTXentLoss(temperature=0.2)(embeddings, labels)
    torch.testing.assert_close(LF.info_nce(z1, z2, temperature=0.2), theirs.double())


def test_supcon_matches_pytorch_metric_learning():
    losses = pytest.importorskip("pytorch_metric_learning.losses")
    features, labels = _supcon_batch(b=6, v=2, d=4)
    embeddings = features.transpose(0, 1).reshape(12, 4)  # (V*B, D), view-major
    theirs = losses.SupConLoss(temperature=0.2)(embeddings, labels.repeat(2))
    torch.testing.assert_close(LF.supcon_loss(features, labels, temperature=0.2), theirs.double())


# ----------------------------------------------------------------------------------------------
# Guardrails, each with a healthy twin (LossWarning is an error in this suite)


def _quiet(fn, *args, **kwargs):
    with lk.checks("always"), warnings.catch_warnings():
        warnings.simplefilter("error", lk.LossWarning)
        return fn(*args, **kwargs)


def test_swapped_second_view_is_named_as_transposed():
    z1, z2 = _views(b=5, d=3)
    with pytest.raises(lk.LossInputError, match=r"looks transposed.*`z2.T`.*") as caught:
        LF.info_nce(z1, z2.T)
    assert "(3, 5)" in str(caught.value) and "Fix:" in str(caught.value)
    _quiet(LF.info_nce, z1, z2)


def test_views_of_different_shapes_raise():
    z1, z2 = _views(b=5, d=3)
    with pytest.raises(lk.LossInputError, match="same B samples"):
        LF.clip_loss(z1, z2[:4])
    with pytest.raises(lk.LossInputError, match=r"flatten\(1\)"):
        LF.info_nce(z1[:, :, None], z2[:, :, None])


@pytest.mark.parametrize("loss", LOSSES)
def test_a_batch_of_one_has_no_negatives(loss):
    tensors, knob = _batch(loss)
    one = [t[:1] for t in tensors]
    with pytest.raises(lk.LossInputError, match="no negative"):
        _call(loss, one, knob)
    _quiet(_call, loss, [t[:2] for t in tensors], knob)  # two samples: one negative each


def test_temperature_one_on_cosine_similarities_warns():
    z1, z2 = _views()
    with lk.checks("always"), pytest.warns(lk.LossWarning, match="nearly uniform"):
        LF.info_nce(z1, z2, temperature=1.0)
    with lk.checks("always"), pytest.warns(lk.LossWarning, match="nearly uniform"):
        LF.supcon_loss(torch.stack([z1, z2], 1), temperature=torch.tensor(1.0, dtype=F64))
    _quiet(LF.info_nce, z1, z2, temperature=0.1)
    unit = [z / z.norm(dim=1, keepdim=True) * 3 for z in (z1, z2)]  # dot products, norm 3
    with lk.checks("always"), pytest.warns(lk.LossWarning, match="norms from 3 to 3"):
        LF.info_nce(*unit, normalize=False, temperature=1.0)  # only the norm warning


def test_unnormalised_rows_with_normalize_false_warn():
    z1, z2 = _views()
    with lk.checks("always"), pytest.warns(lk.LossWarning, match="normalize=True"):
        LF.info_nce(5 * z1, 5 * z2, normalize=False)
    unit = [z / z.norm(dim=1, keepdim=True) for z in (z1, z2)]
    _quiet(LF.info_nce, *unit, normalize=False)
    _quiet(LF.info_nce, 5 * z1, 5 * z2)  # normalize=True divides the norms out


def test_clip_logit_scale_given_as_the_scale_warns():
    a, b = _views()
    with lk.checks("always"), pytest.warns(lk.LossWarning, match=r"math.log\(1 / 0.07\)"):
        LF.clip_loss(a, b, logit_scale=1 / 0.07)
    with lk.checks("always"), pytest.warns(lk.LossWarning, match="nearly uniform"):
        LF.clip_loss(a, b, logit_scale=0.0)
    _quiet(LF.clip_loss, a, b, logit_scale=math.log(1 / 0.07))
    with pytest.raises(lk.LossInputError, match="one finite number"):
        LF.clip_loss(a, b, logit_scale=torch.ones(2))


@pytest.mark.parametrize(
    ("labels", "match"),
    [(lambda y: y[:, None], r"labels.squeeze\(1\)"),
     (lambda y: torch.stack([y, y], 1), "not per view"),
     (lambda y: y.double(), r"labels.long\(\)"),
     (lambda y: y[:3], r"must be \(5,\)")],
    ids=["(B,1)", "(B,V)", "float", "short"],
)
def test_supcon_labels_of_the_wrong_shape_raise(labels, match):
    features, y = _supcon_batch()
    with pytest.raises(lk.LossInputError, match=match):
        LF.supcon_loss(features, labels(y))
    _quiet(LF.supcon_loss, features, y)


def test_supcon_features_without_a_views_dim_raise():
    features, y = _supcon_batch()
    with pytest.raises(lk.LossInputError, match=r"unsqueeze\(1\)"):
        LF.supcon_loss(features[:, 0], y)
    _quiet(LF.supcon_loss, features[:, :1], y)


@pytest.mark.parametrize("bad", [0.0, -0.1, float("nan")])
def test_non_positive_temperature_raises(bad):
    z1, z2 = _views()
    with pytest.raises(lk.LossInputError, match="positive"):
        LF.info_nce(z1, z2, temperature=bad)
    with pytest.raises(lk.LossInputError, match="positive"):
        lk.InfoNCELoss(temperature=bad)


# ----------------------------------------------------------------------------------------------
# gather=True on 2 gloo ranks == one process on the gathered batch


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("contrastive")
    W.spawn(CW.worker, 2, str(out))
    return [torch.load(out / f"contrastive{r}.pt", weights_only=False) for r in (0, 1)]


@pytest.mark.parametrize("index", range(len(CW.SCENARIOS)),
                         ids=[f"{s[0]}-{s[1]}-chunk{s[2]}" for s in CW.SCENARIOS])
def test_two_ranks_equal_one_process_on_the_gathered_batch(ranks, index):
    loss, reduction, _chunk, sizes = CW.SCENARIOS[index]
    tensors, knob = CW.batch(loss, sum(sizes))
    value, grads = _value_and_grads_ones(loss, tensors, knob, reduction=reduction)
    world = len(sizes)
    # DDP averages gradients over ranks ("mean"); "sum" adds the ranks' losses.
    factor = 1.0 / world if reduction == "mean" else 1.0
    combine = (lambda xs: sum(xs) / world) if reduction == "mean" else sum
    torch.testing.assert_close(combine([r[index]["value"] for r in ranks]), value)
    for i, expected in enumerate(grads[:-1]):
        got = torch.cat([r[index]["grads"][i] for r in ranks]) * factor
        torch.testing.assert_close(got, expected, msg=f"gradient of tensor {i}")
    knob_grad = sum(r[index]["knob"] for r in ranks) * factor  # DDP all-reduces it too
    torch.testing.assert_close(knob_grad, grads[-1], msg="gradient of the temperature")


def _value_and_grads_ones(loss, tensors, knob, **kwargs):
    leaves = [t.detach().clone().requires_grad_(t.is_floating_point()) for t in tensors]
    knob = knob.detach().clone().requires_grad_(True)
    out = CW.call(loss, leaves, knob, **kwargs)
    wanted = [t for t in leaves if t.is_floating_point()] + [knob]
    return out.detach(), torch.autograd.grad(out, wanted)


def test_gather_without_a_process_group_is_the_plain_loss():
    z1, z2 = _views()
    torch.testing.assert_close(LF.info_nce(z1, z2, gather=True), LF.info_nce(z1, z2))
