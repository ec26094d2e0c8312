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
import torch.nn.functional as F
from cases.contrastive import clip, nt_xent, supcon
from torch.autograd import gradcheck, gradgradcheck

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
    with pytest.raises(lk.LossInputError, match="create_graph=True") as caught:
        torch.autograd.grad(out, z1, create_graph=True)
    message = str(caught.value)
    assert "Fix: pass `chunk_size=None`" in message
    assert "fused" not in message and "forward pass" not in message  # cross-entropy's kernel


@pytest.mark.parametrize("loss", LOSSES)
def test_the_suggested_plain_path_has_a_second_derivative(loss):
    """The fix the chunked path's error names, chunk_size=None, double-differentiates: torch's
    gradgradcheck (finite differences of the gradient) in float64, the temperature included."""
    tensors, knob = _batch(loss)
    tensors = [t[:3] for t in tensors]  # small: gradgradcheck is O(numel^2)
    floats = [t.clone().requires_grad_(True) for t in tensors if t.is_floating_point()]
    labels = [t for t in tensors if not t.is_floating_point()]

    def f(*args):
        return _call(loss, [*args[:-1], *labels], args[-1], chunk_size=None)

    assert gradgradcheck(f, (*floats, knob.clone().requires_grad_(True)), eps=1e-6, atol=1e-5)


def test_supcon_with_no_positive_anywhere_warns_and_is_zero_not_nan():
    """One view, every label distinct: no anchor has a positive (supcon's analogue of an
    all-ignored batch): a LossWarning, and 0 with zero gradient on both paths, never NaN."""
    features = torch.randn(4, 1, 3, dtype=F64, requires_grad=True)
    labels = torch.arange(4)
    for chunk in (None, 2):
        with lk.checks("always"), pytest.warns(lk.LossWarning, match=r"V >= 2 views") as caught:
            out = LF.supcon_loss(features, labels, chunk_size=chunk)
        assert "repeated classes" in str(caught[0].message)
        (grad,) = torch.autograd.grad(out, features)
        assert out.item() == 0.0 and torch.equal(grad, torch.zeros_like(grad))


def test_supcon_with_one_view_and_no_labels_raises():
    """V = 1 without labels: each sample its own class, no positive can exist: certain."""
    features, _ = _supcon_batch(v=1)
    with pytest.raises(lk.LossInputError, match=r"V >= 2 views.*repeated classes"):
        LF.supcon_loss(features)
    with pytest.raises(lk.LossInputError, match=r"V >= 2 views"):
        lk.SupConLoss()(features)
    repeated = torch.tensor([0, 1, 0, 1, 2])  # healthy twin: one view, classes that repeat
    out = _quiet(LF.supcon_loss, features, repeated, temperature=0.5)
    torch.testing.assert_close(out, supcon(features, repeated, temperature=0.5))


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


def _clip_formula(a, b, p):
    """CLIP's loss with its scale exp(p) unclamped, from torch's cross-entropy: the oracle."""
    logits = p.exp() * F.normalize(a, dim=1) @ F.normalize(b, dim=1).T  # (B, B)
    labels = torch.arange(a.shape[0])
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def test_clip_logit_scale_is_held_at_log_100_with_clips_gradient_beyond():
    """Beyond log(100) the scale is 100 and the gradient is CLIP's at its clamped parameter
    (exp(p) * dl/ds at p = log(100)), not 0: the parameter can come back."""
    a, b = _views()
    below = torch.tensor(math.log(50.0), dtype=F64, requires_grad=True)
    above = torch.tensor(math.log(500.0), dtype=F64, requires_grad=True)
    cap = torch.tensor(math.log(100.0), dtype=F64, requires_grad=True)
    with lk.checks("off"):  # the value check warns about `above`: tested below
        high = LF.clip_loss(a, b, logit_scale=above)
    torch.testing.assert_close(high, clip(a, b, logit_scale=math.log(100.0)))
    expected = torch.autograd.grad(_clip_formula(a, b, cap), cap)[0]
    torch.testing.assert_close(torch.autograd.grad(high, above)[0], expected)
    assert expected.item() != 0.0
    torch.testing.assert_close(
        torch.autograd.grad(LF.clip_loss(a, b, logit_scale=below), below)[0],
        torch.autograd.grad(_clip_formula(a, b, below), below)[0])


@pytest.mark.parametrize("chunk", [None, 2], ids=["plain", "chunk2"])
def test_clip_at_clips_parked_float32_scale_has_clips_gradient_and_no_warning(chunk):
    """CLIP's training clamps a float32 parameter to log(100), 4.6051702 (exp 100.0000076):
    there the loss and its gradient are CLIP's formula exp(p) * cos (float64 oracle), and no
    warning fires."""
    a, b = (t.float() for t in _views(b=6, d=4))
    p = torch.tensor(math.log(100.0), dtype=torch.float32).clamp(0, math.log(100.0))
    p.requires_grad_(True)
    out = _quiet(LF.clip_loss, a, b, logit_scale=p, chunk_size=chunk)
    (grad,) = torch.autograd.grad(out, p)
    p64 = p.detach().double().requires_grad_(True)  # 4.605170249938965, above log(100)
    reference = _clip_formula(a.double(), b.double(), p64)
    (expected,) = torch.autograd.grad(reference, p64)
    assert expected.abs().item() > 1e-3  # a real gradient to match
    torch.testing.assert_close(out.double(), reference, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad.double(), expected, rtol=1e-4, atol=1e-6)


def test_clip_with_a_huge_float_logit_scale_holds_the_scale_at_100():
    """exp(1000.0) overflows a Python float: the float path behaves as the tensor one."""
    a, b = _views()
    with lk.checks("always"), pytest.warns(lk.LossWarning, match="log of the scale"):
        out = LF.clip_loss(a, b, logit_scale=1000.0)
    torch.testing.assert_close(out, clip(a, b, logit_scale=math.log(100.0)))
    p = torch.tensor(1000.0, dtype=F64, requires_grad=True)
    with lk.checks("off"):
        (grad,) = torch.autograd.grad(LF.clip_loss(a, b, logit_scale=p), p)
    assert math.isfinite(grad.item())


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


@pytest.mark.parametrize("bad", [0.0, -0.1, float("nan"), float("inf"), True])
def test_non_positive_temperature_raises(bad):
    z1, z2 = _views()
    with pytest.raises(lk.LossInputError, match="positive finite"):
        LF.info_nce(z1, z2, temperature=bad)
    with pytest.raises(lk.LossInputError, match="positive finite"):
        LF.supcon_loss(torch.stack([z1, z2], 1), temperature=bad)
    for module in (lk.InfoNCELoss, lk.SupConLoss):
        with pytest.raises(lk.LossInputError, match="positive finite"):
            module(temperature=bad)


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("bad", [0.0, -0.1, float("nan"), float("inf")])
def test_a_tensor_temperature_is_checked_as_a_float_is(bad, normalize):
    z1, z2 = (F.normalize(z, dim=1) for z in _views())  # rows of norm 1: no norm warning
    t = torch.tensor(bad, dtype=F64, requires_grad=True)
    with lk.checks("always"), pytest.raises(lk.LossInputError, match="positive finite"):
        LF.info_nce(z1, z2, temperature=t, normalize=normalize)
    with lk.checks("always"), pytest.raises(lk.LossInputError, match="positive finite"):
        LF.supcon_loss(torch.stack([z1, z2], 1), temperature=t, normalize=normalize)
    _quiet(LF.info_nce, z1, z2, temperature=torch.tensor(0.2, dtype=F64),
           normalize=normalize)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), True, "a"])
def test_a_logit_scale_that_is_no_finite_number_raises(bad):
    a, b = _views()
    with lk.checks("always"), pytest.raises(lk.LossInputError, match="one finite number"):
        LF.clip_loss(a, b, logit_scale=bad)
    with pytest.raises(lk.LossInputError, match="one finite number"):
        lk.ClipLoss(bad)
    if isinstance(bad, float):  # a tensor holding it: refused by the value check
        with lk.checks("always"), pytest.raises(lk.LossInputError, match="one finite number"):
            LF.clip_loss(a, b, logit_scale=torch.tensor(bad, dtype=F64))


def test_a_learnt_temperature_of_one_is_told_to_start_lower():
    z1, z2 = _views()
    loss = lk.InfoNCELoss(temperature=1.0, learn_temperature=True).double()
    with lk.checks("always"), pytest.warns(lk.LossWarning, match="starts too high") as caught:
        loss(z1, z2)
    message = str(caught[0].message)
    assert "InfoNCELoss(temperature=0.1, learn_temperature=True)" in message
    with lk.checks("always"), pytest.warns(lk.LossWarning) as caught:  # fixed: learn it
        LF.info_nce(z1, z2, temperature=1.0)
    assert "`InfoNCELoss(learn_temperature=True)`" in str(caught[0].message)


def test_supcons_temperature_warning_names_what_supcon_has():
    z1, z2 = _views()
    with lk.checks("always"), pytest.warns(lk.LossWarning, match="nearly uniform") as caught:
        lk.SupConLoss(temperature=1.0)(torch.stack([z1, z2], 1))
    message = str(caught[0].message)
    assert "InfoNCELoss" not in message and "learn_temperature" not in message
    assert "temperature=0.1" in message and "log_t.exp()" in message


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
@pytest.mark.parametrize("loss", LOSSES)
def test_chunk_size_is_described_as_a_tile_side(loss, bad):
    tensors, knob = _batch(loss)
    with pytest.raises(lk.LossInputError, match="side of the square tiles") as caught:
        _call(loss, tensors, knob, chunk_size=bad)
    message = str(caught.value)
    assert "chunk_size=None to compute the whole matrix" in message and "token" not in message


@pytest.mark.parametrize("loss", ["info_nce", "clip_loss"])
def test_mixed_float32_and_float64_views_promote_as_torch_does(loss):
    """float32 with float64 gives float64, computed from the float32 values upcast."""
    (a, b), knob = _batch(loss)
    a32 = a.float()
    for pair in ((a32, b), (b, a32)):
        out = _call(loss, pair, knob)
        assert out.dtype == F64
        torch.testing.assert_close(out, _call(loss, [t.double() for t in pair], knob),
                                   rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# torch.autocast: float32 math and a float32 loss, forward and backward


def _float32_value_and_grads(loss, tensors, knob, autocast, dtype=torch.float32,
                             backward_inside=False, **kwargs):
    """Forward under bfloat16 autocast (or none); backward after it, as torch advises, or
    inside it (``backward_inside``: the chunked kernel's own backward must hold float32)."""
    leaves = [t.detach().to(dtype).requires_grad_(True) if t.is_floating_point() else t
              for t in tensors]
    knob = knob.detach().float().requires_grad_(True)
    context = (torch.autocast("cpu", dtype=torch.bfloat16) if autocast
               else torch.autocast("cpu", enabled=False))
    wanted = [t for t in leaves if t.is_floating_point()] + [knob]
    with context:
        out = _call(loss, leaves, knob, **kwargs)
        upstream = torch.linspace(0.5, 1.5, out.numel()).reshape(out.shape)
        if backward_inside:
            return out, torch.autograd.grad(out, wanted, upstream)
    return out, torch.autograd.grad(out, wanted, upstream)


@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("chunk", [None, 3], ids=["plain", "chunk3"])
@pytest.mark.parametrize("loss", LOSSES)
def test_autocast_runs_the_loss_in_float32(loss, chunk, reduction):
    """bfloat16 autocast (CUDA float16 takes the same code): the loss and every gradient equal
    the float32 computation, to float32 rounding; bfloat16 math would be ~1e-2 off."""
    tensors, knob = _batch(loss)
    kwargs = dict(chunk_size=chunk, reduction=reduction)
    expected, expected_grads = _float32_value_and_grads(loss, tensors, knob, False, **kwargs)
    out, grads = _float32_value_and_grads(loss, tensors, knob, True, **kwargs)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)
    for got, want in zip(grads, expected_grads, strict=True):
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    if chunk is not None:  # the kernel's backward run inside autocast keeps float32 too
        _, grads = _float32_value_and_grads(loss, tensors, knob, True, backward_inside=True,
                                            **kwargs)
        for got, want in zip(grads, expected_grads, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    # bfloat16 inputs under autocast: float32 math on their values, a float32 loss
    half, _ = _float32_value_and_grads(loss, tensors, knob, True, dtype=torch.bfloat16, **kwargs)
    upcast = [t.to(torch.bfloat16).float() if t.is_floating_point() else t for t in tensors]
    reference, _ = _float32_value_and_grads(loss, upcast, knob, False, **kwargs)
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, reference, rtol=1e-6, atol=1e-6)


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
