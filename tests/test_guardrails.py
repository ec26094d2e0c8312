"""One test per row of the mistakes table (docs/mistakes.md, docs/design.md), each with its
healthy twin, and the checks modes ("startup", "always", "off"; set_checks, checks(),
LOSSKIT_CHECKS).

Every mistake must get the table's outcome (LossInputError or LossWarning), a message that names
what was received and the fix, and, where torch itself raises for that input, an exception that is
also an instance of torch's class (found by calling torch on the same tensors, not hard-coded).
Every healthy twin must get nothing: no error and no warning at all.

Deliberate differences from torch tested here (docs/design.md): regression shapes that would
broadcast raise (torch warns and broadcasts); NaN/Inf raise (torch computes NaN); an all-ignored
batch is 0 with a LossWarning (torch gives NaN); non-floating input raises (torch accepts some,
e.g. l1_loss).
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import pytest
import torch
import torch.nn.functional as F

import losskit as lk
import losskit.functional as LF

NAN, INF = float("nan"), float("inf")


@pytest.fixture(autouse=True)
def always_checks():
    """Value checks on for every call, whatever ran before in this process."""
    with lk.checks("always"):
        yield


def _randn(gen, *shape):
    return torch.randn(shape, generator=gen)


def _labels(gen, num_classes, *shape):
    return torch.randint(0, num_classes, shape, generator=gen)


def torch_error(call):
    """The exception class torch raises for the same call, or None when torch accepts it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            call()
    except Exception as error:
        return type(error)
    return None


def assert_raises(call, torch_call, *patterns: str):
    """``call`` raises LossInputError (and torch's class, if torch raises) naming every pattern
    and the fix ("Fix:")."""
    expected = torch_error(torch_call) if torch_call is not None else None
    with pytest.raises(lk.LossInputError) as info:
        call()
    assert isinstance(info.value, ValueError)
    if expected is not None:
        assert isinstance(info.value, expected), (type(info.value).__mro__, expected)
    message = str(info.value)
    assert "Fix:" in message, f"a guardrail message must name the fix: {message}"
    for pattern in patterns:
        assert pattern.lower() in message.lower(), (pattern, message)
    return message


def assert_warns(call, *patterns: str):
    """``call`` warns exactly one LossWarning naming every pattern and the fix ("Fix:")."""
    with pytest.warns(lk.LossWarning) as record:
        out = call()
    messages = [str(w.message) for w in record if issubclass(w.category, lk.LossWarning)]
    assert len(messages) == 1, messages
    assert "Fix:" in messages[0], f"a guardrail message must name the fix: {messages[0]}"
    for pattern in patterns:
        assert pattern.lower() in messages[0].lower(), (pattern, messages[0])
    return out


def assert_silent(call):
    """The healthy twin: no exception, no warning of any kind, a finite result."""
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        out = call()
    assert not record, [str(w.message) for w in record]
    assert torch.isfinite(out).all()
    return out


# ----------------------------------------------------------------------------------------------
# Row: softmax applied before cross-entropy -> LossWarning


def test_softmax_before_cross_entropy_warns(gen):
    logits, y = _randn(gen, 8, 5), _labels(gen, 5, 8)
    probs = torch.softmax(logits, dim=1)
    assert_warns(lambda: LF.cross_entropy(probs, y), "softmax", "logits")
    assert_warns(lambda: lk.CrossEntropyLoss()(probs, y), "softmax")
    assert_silent(lambda: LF.cross_entropy(logits, y))
    assert_silent(lambda: lk.CrossEntropyLoss()(logits, y))


def test_softmax_before_cross_entropy_spatial(gen):
    logits, y = _randn(gen, 2, 4, 3, 3), _labels(gen, 4, 2, 3, 3)
    assert_warns(lambda: LF.cross_entropy(torch.softmax(logits, 1), y), "softmax")
    assert_silent(lambda: LF.cross_entropy(logits, y))


# Row: sigmoid applied before BCE-with-logits -> LossWarning


def test_sigmoid_before_bce_with_logits_warns(gen):
    logits, y = _randn(gen, 8, 4), (torch.rand(8, 4, generator=gen) > 0.5).float()
    assert_warns(lambda: LF.binary_cross_entropy_with_logits(torch.sigmoid(logits), y),
                 "sigmoid", "logits")
    assert_warns(lambda: lk.BCEWithLogitsLoss()(torch.sigmoid(logits), y), "sigmoid")
    assert_silent(lambda: LF.binary_cross_entropy_with_logits(logits, y))


def _head(gen, bias: float, weight_std: float) -> torch.nn.Linear:
    head = torch.nn.Linear(64, 5)
    with torch.no_grad():
        head.weight.copy_(weight_std * _randn(gen, 5, 64))
        head.bias.fill_(bias)
    return head


def test_sigmoid_check_spares_zero_and_prior_bias_heads(gen):
    """Healthy twins: logits of a zero-initialised head (all 0) or of a small head with a prior
    bias in (0, 1) (all near the bias) lie in [0, 1] without any sigmoid. Sigmoid output, even of
    such a head at initialisation, spreads across 0.5 and still warns."""
    features, y = _randn(gen, 32, 64), (torch.rand(32, 5, generator=gen) > 0.5).float()
    zero, prior = _head(gen, 0.0, 0.0), _head(gen, 0.4, 1e-3)  # p = sigmoid(0.4) = 0.6
    for head in (zero, prior):
        with torch.no_grad():
            logits = head(features)  # (32, 5), every value in [0, 1]
        assert logits.min() >= 0 and logits.max() <= 1
        assert_silent(lambda z=logits: lk.BCEWithLogitsLoss()(z, y))
        assert_silent(lambda z=logits: LF.binary_cross_entropy_with_logits(z, y))
        assert_silent(lambda z=logits: lk.FocalLoss(alpha=0.25)(z, y))
    with torch.no_grad():
        small = torch.sigmoid(_head(gen, 0.0, 0.01)(features))  # a sigmoid at initialisation
    assert_warns(lambda: lk.BCEWithLogitsLoss()(small, y), "sigmoid")
    assert_warns(lambda: LF.focal_loss(small, y), "sigmoid")


# Row: raw logits given to BCELoss -> LossInputError


def test_logits_to_bce_raises(gen):
    logits, y = 3 * _randn(gen, 6, 4), (torch.rand(6, 4, generator=gen) > 0.5).float()
    logits[0, 0] = 2.5  # certainly outside [0, 1]
    msg = assert_raises(lambda: LF.binary_cross_entropy(logits, y),
                        lambda: F.binary_cross_entropy(logits, y), "2.5", "with_logits")
    assert "between 0 and 1" in msg
    assert_raises(lambda: lk.BCELoss()(logits, y), lambda: F.binary_cross_entropy(logits, y))
    assert_silent(lambda: LF.binary_cross_entropy(torch.sigmoid(logits), y))


# Row: raw logits given to NLLLoss -> LossWarning


def test_logits_to_nll_warns(gen):
    logits, y = 3 * _randn(gen, 8, 5), _labels(gen, 5, 8)
    assert_warns(lambda: LF.nll_loss(logits, y), "log_softmax")
    assert_warns(lambda: lk.NLLLoss()(logits, y), "log_softmax")
    assert_silent(lambda: LF.nll_loss(torch.log_softmax(logits, 1), y))


# Row: class-index target with a float dtype, or integer one-hot target -> LossInputError


@pytest.mark.parametrize("fn", ["cross_entropy", "nll_loss"])
def test_float_class_index_target_raises(fn, gen):
    x, y = torch.log_softmax(_randn(gen, 6, 4), 1), _labels(gen, 4, 6)
    assert_raises(lambda: getattr(LF, fn)(x, y.float()),
                  lambda: getattr(F, fn)(x, y.float()), "float32", ".long()")
    assert_silent(lambda: getattr(LF, fn)(x, y))


def test_int32_class_index_target_raises(gen):
    x, y = _randn(gen, 6, 4), _labels(gen, 4, 6)
    assert_raises(lambda: LF.cross_entropy(x, y.int()), lambda: F.cross_entropy(x, y.int()),
                  "int32", ".long()")


def test_one_hot_integer_target_raises(gen):
    x, y = _randn(gen, 6, 4), _labels(gen, 4, 6)
    onehot = F.one_hot(y, 4)  # int64, same shape as x: read as probabilities by torch
    assert_raises(lambda: LF.cross_entropy(x, onehot), lambda: F.cross_entropy(x, onehot),
                  "int64", "argmax")
    assert_silent(lambda: LF.cross_entropy(x, onehot.argmax(1)))
    assert_silent(lambda: LF.cross_entropy(x, onehot.float()))


@pytest.mark.parametrize("dtype", [torch.float32, torch.int64])
def test_one_hot_target_to_nll_suggests_argmax(dtype, gen):
    """nll_loss has no probability targets: a one-hot (N, C) target needs `argmax(1)`, not the
    "same shape as input" advice cross_entropy gets."""
    x, y = torch.log_softmax(_randn(gen, 6, 4), 1), _labels(gen, 4, 6)
    onehot = F.one_hot(y, 4).to(dtype)  # (N, C)
    message = assert_raises(lambda: LF.nll_loss(x, onehot), lambda: F.nll_loss(x, onehot),
                            "(6, 4)", "`target = target.argmax(1)`")
    assert "give `target` the same shape" not in message
    out = assert_silent(lambda: LF.nll_loss(x, onehot.argmax(1)))
    torch.testing.assert_close(out, F.nll_loss(x, y))


@pytest.mark.parametrize(("fn", "shape"), [("focal_loss", (8,)), ("focal_loss", (8, 3)),
                                           ("focal_loss", (2, 3, 4)), ("dice_loss", (2, 3, 4))])
def test_integer_binary_labels_suggest_float(fn, shape, gen):
    """Binary / multi-label 0/1 labels of an integer dtype: the fix is `target.float()`, not a
    0-d target or a class-index shape."""
    x = _randn(gen, *shape)
    y = (torch.rand(shape, generator=gen) > 0.5).long()
    message = assert_raises(lambda: getattr(LF, fn)(x, y), None, "int64",
                            "`target = target.float()`")
    assert "target[0]" not in message
    assert_silent(lambda: getattr(LF, fn)(x, y.float()))


# Row: cross-entropy target shaped (N, 1) instead of (N,) -> LossInputError


@pytest.mark.parametrize("fn", ["cross_entropy", "nll_loss"])
def test_target_n_by_1_raises(fn, gen):
    x, y = torch.log_softmax(_randn(gen, 6, 4), 1), _labels(gen, 4, 6, 1)
    assert_raises(lambda: getattr(LF, fn)(x, y), lambda: getattr(F, fn)(x, y),
                  "(6, 1)", "squeeze")
    assert_silent(lambda: getattr(LF, fn)(x, y.squeeze(1)))


@pytest.mark.parametrize("fn", ["cross_entropy", "nll_loss"])
def test_unbatched_input_with_1d_target_raises(fn, gen):
    """torch's forward takes (C,) input with a (1,) target, but its backward then fails with
    "size mismatch"; losskit refuses it up front and names both fixes."""
    x = torch.log_softmax(_randn(gen, 7), 0).requires_grad_()
    y = torch.tensor([2])
    with pytest.raises(RuntimeError, match="size mismatch"):
        getattr(F, fn)(x, y).backward()
    assert_raises(lambda: getattr(LF, fn)(x, y), None, "(7,)", "(1,)", "target[0]", "unsqueeze")
    assert_silent(lambda: getattr(LF, fn)(x, y[0]))


# Row: sequence logits (B, T, C) with target (B, T) -> LossInputError naming both fixes


def test_sequence_logits_class_dim_last_raises(gen):
    logits, y = _randn(gen, 2, 5, 7), _labels(gen, 7, 2, 5)  # (B, T, C), (B, T)
    assert_raises(lambda: LF.cross_entropy(logits, y), lambda: F.cross_entropy(logits, y),
                  "(2, 5, 7)", "(2, 5)", "movedim(-1, 1)", "reshape")
    assert_silent(lambda: LF.cross_entropy(logits.transpose(1, 2), y))
    assert_silent(lambda: LF.cross_entropy(logits.reshape(-1, 7), y.reshape(-1)))


def _suggested_fixes(message: str) -> list[str]:
    """The code of each `loss(...)` fix a message suggests."""
    fix = message.split("Fix:")[1]
    return [part for part in fix.split("`")[1::2] if part.startswith("loss(")]


@pytest.mark.parametrize("fn", ["cross_entropy", "nll_loss"])
def test_channels_last_logits_raise_and_the_fixes_are_right(fn, gen):
    """(N, H, W, C) logits with an (N, H, W) target: the message's fixes must give the loss of
    the channels-first layout. With H == W a `transpose(1, -1)` would run and swap H and W."""
    x, y = _randn(gen, 2, 4, 4, 3), _labels(gen, 3, 2, 4, 4)  # (N, H, W, C), (N, H, W)
    if fn == "nll_loss":
        x = torch.log_softmax(x, -1)
    message = assert_raises(lambda: getattr(LF, fn)(x, y), lambda: getattr(F, fn)(x, y),
                            "(2, 4, 4, 3)", "channels-last", "N=2, d1=4, d2=4, C=3",
                            "movedim(-1, 1)")
    assert "sequence" not in message and "transpose" not in message
    expected = getattr(F, fn)(x.permute(0, 3, 1, 2), y)  # (N, C, H, W)
    fixes = _suggested_fixes(message)
    assert len(fixes) == 2, message
    for fix in fixes:
        out = assert_silent(lambda f=fix: eval(f, {"loss": getattr(LF, fn), "input": x,
                                                    "target": y}))
        torch.testing.assert_close(out, expected)


# Row: class index outside [0, C) that is not ignore_index -> LossInputError naming value and C


def _devices():
    return ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]


@pytest.mark.parametrize("device", _devices())
@pytest.mark.parametrize(("bad", "ignore_index"), [(5, -100), (-1, -100), (-100, -1), (9, 5)])
@pytest.mark.parametrize("fn", ["cross_entropy", "nll_loss", "focal_loss", "dice_loss"])
def test_class_index_out_of_range_raises(fn, bad, ignore_index, device, gen):
    x, y = _randn(gen, 4, 5, 3), _labels(gen, 5, 4, 3)  # C = 5
    if fn == "nll_loss":
        x = torch.log_softmax(x, 1)
    x, y = x.to(device), y.to(device)
    y_bad = y.clone()
    y_bad[2, 1] = bad
    call = getattr(LF, fn)
    torch_call = (lambda: getattr(F, fn)(x, y_bad, ignore_index=ignore_index)) if hasattr(
        F, fn) and device == "cpu" else None
    assert_raises(lambda: call(x, y_bad, ignore_index=ignore_index), torch_call, str(bad), "5")
    with pytest.raises(IndexError):  # torch's class for this mistake, on every device
        call(x, y_bad, ignore_index=ignore_index)
    y_ok = y.clone()
    y_ok[2, 1] = ignore_index  # the ignore value itself is fine, even when it is out of range
    assert_silent(lambda: call(x, y_ok, ignore_index=ignore_index))


@pytest.mark.parametrize("fn", ["cross_entropy", "nll_loss", "focal_loss", "dice_loss"])
def test_uint8_target_is_not_taken_for_a_negative_ignore_index(fn, gen):
    """uint8 156 is -100 wrapped to 8 bits; an ignore_index the target dtype cannot hold ignores
    nothing, so 156 is an out-of-range label (torch: IndexError), not padding."""
    # (N, C) as torch takes uint8 there (not for (N, C, d1, ...)); dice needs a spatial dim
    spatial = (3,) if fn == "dice_loss" else ()
    x, y = _randn(gen, 4, 5, *spatial), _labels(gen, 5, 4, *spatial).to(torch.uint8)  # C = 5
    if fn == "nll_loss":
        x = torch.log_softmax(x, 1)
    call = getattr(LF, fn)
    y_bad = y.clone()
    y_bad[2] = 156
    torch_call = (lambda: getattr(F, fn)(x, y_bad)) if hasattr(F, fn) else None
    assert_raises(lambda: call(x, y_bad, ignore_index=-100), torch_call, "156", "5")
    with pytest.raises(IndexError):
        call(x, y_bad, ignore_index=-100)
    out = assert_silent(lambda: call(x, y, ignore_index=-100))  # the healthy twin
    torch.testing.assert_close(out, call(x, y.long(), ignore_index=-100))
    if hasattr(F, fn):
        torch.testing.assert_close(out, getattr(F, fn)(x, y))
    y_pad = y.clone()
    y_pad[2] = 255  # an ignore_index uint8 can hold is still ignored
    out = assert_silent(lambda: call(x, y_pad, ignore_index=255))
    torch.testing.assert_close(out, call(x, y_pad.long(), ignore_index=255))


def test_class_index_out_of_range_after_startup(gen):
    """On CPU the range check costs no sync, so it stays on after the startup calls."""
    x, y = _randn(gen, 4, 3), _labels(gen, 3, 4)
    with lk.checks("startup"):
        for _ in range(50):
            LF.cross_entropy(x, y)
        with pytest.raises(IndexError):
            LF.cross_entropy(x, torch.tensor([0, 1, 2, 3]))


# Row: BCE targets outside [0, 1] -> LossInputError


@pytest.mark.parametrize("labels", [(-1.0, 1.0), (1.0, 2.0)])
@pytest.mark.parametrize("fn", ["binary_cross_entropy", "binary_cross_entropy_with_logits"])
def test_bce_target_outside_unit_interval_raises(fn, labels, gen):
    logits = _randn(gen, 8, 3)
    x = torch.sigmoid(logits) if fn == "binary_cross_entropy" else logits
    coin = torch.rand(8, 3, generator=gen) > 0.5
    y = torch.where(coin, labels[0], labels[1])
    y[0, 0] = labels[0]  # both labels present
    y[0, 1] = labels[1]
    bad = labels[0] if labels[0] < 0 else labels[1]
    assert_raises(lambda: getattr(LF, fn)(x, y), lambda: getattr(F, fn)(x, y), str(bad), "[0, 1]")
    assert_silent(lambda: getattr(LF, fn)(x, (y - labels[0]) / (labels[1] - labels[0])))


# Row: integer targets for BCE / BCE-with-logits -> LossInputError


@pytest.mark.parametrize("fn", ["binary_cross_entropy", "binary_cross_entropy_with_logits"])
def test_bce_integer_target_raises(fn, gen):
    logits = _randn(gen, 8, 3)
    x = torch.sigmoid(logits) if fn == "binary_cross_entropy" else logits
    y = (torch.rand(8, 3, generator=gen) > 0.5).long()
    assert_raises(lambda: getattr(LF, fn)(x, y), lambda: getattr(F, fn)(x, y), "int64", ".float()")
    assert_silent(lambda: getattr(LF, fn)(x, y.float()))


# Row: regression shapes that would broadcast ((N, 1) vs (N,)) -> LossInputError
# (deliberate difference: torch warns and broadcasts to (N, N))


@pytest.mark.parametrize("fn", ["mse_loss", "l1_loss", "huber_loss", "smooth_l1_loss"])
def test_regression_broadcast_raises(fn, gen):
    x, y = _randn(gen, 10, 1), _randn(gen, 10)
    assert_raises(lambda: getattr(LF, fn)(x, y), None, "(10, 1)", "(10,)", "squeeze")
    assert_silent(lambda: getattr(LF, fn)(x.squeeze(-1), y))


@pytest.mark.parametrize("module", ["MSELoss", "L1Loss", "HuberLoss", "SmoothL1Loss"])
def test_regression_broadcast_raises_module(module, gen):
    x, y = _randn(gen, 10, 1), _randn(gen, 10)
    assert_raises(lambda: getattr(lk, module)()(x, y), None, "(10, 1)", "(10,)")
    assert_silent(lambda: getattr(lk, module)()(x, y.unsqueeze(1)))


# Row: weight length is not C; pos_weight that does not broadcast -> LossInputError


@pytest.mark.parametrize("bad_shape", [(4,), (1, 3), (2,)])
@pytest.mark.parametrize("fn", ["cross_entropy", "nll_loss"])
def test_class_weight_wrong_length_raises(fn, bad_shape, gen):
    x, y = torch.log_softmax(_randn(gen, 6, 3), 1), _labels(gen, 3, 6)
    w = torch.ones(bad_shape)
    assert_raises(lambda: getattr(LF, fn)(x, y, weight=w),
                  lambda: getattr(F, fn)(x, y, weight=w), str(bad_shape), "3")
    assert_silent(lambda: getattr(LF, fn)(x, y, weight=torch.ones(3)))


def test_class_weight_messages_name_the_argument(gen):
    """focal's `alpha` is named as such (its `weight`, where it exists, is another argument);
    linear_cross_entropy's class `weight` is checked against `linear_weight`'s classes."""
    x, y = _randn(gen, 4, 3), _labels(gen, 3, 4)
    for call in (lambda: LF.focal_loss(x, y, alpha=torch.rand(4)),
                 lambda: lk.FocalLoss(alpha=torch.rand(4))(x, y)):
        message = assert_raises(call, None, "`alpha` has shape (4,)", "length 3")
        assert "`weight`" not in message
    message = assert_raises(lambda: LF.focal_loss(x, y, alpha=torch.rand(3).double()), None,
                            "`alpha` has dtype torch.float64", "`alpha.to(input.dtype)`")
    assert "`weight`" not in message
    h, w, t = _randn(gen, 4, 8), _randn(gen, 10, 8), _labels(gen, 10, 4)
    assert_raises(lambda: LF.linear_cross_entropy(h, w, t, weight=torch.rand(9)),
                  lambda: F.linear_cross_entropy(h, w, t, weight=torch.rand(9)),
                  "`weight` has shape (9,)", "10 classes", "dim 0 of `linear_weight`")
    assert_raises(
        lambda: LF.linear_cross_entropy(h, w, t, weight=torch.rand(10).double()),
        lambda: F.linear_cross_entropy(h, w, t, weight=torch.rand(10).double()),
        "`weight` has dtype torch.float64", "`weight.to(input.dtype)`")
    assert_silent(lambda: LF.focal_loss(x, y, alpha=torch.rand(3)))
    assert_silent(lambda: LF.linear_cross_entropy(h, w, t, weight=torch.rand(10)))


@pytest.mark.parametrize("bad_shape", [(2,), (4,), (2, 4, 3)])
def test_pos_weight_not_broadcasting_raises(bad_shape, gen):
    x, y = _randn(gen, 4, 3), (torch.rand(4, 3, generator=gen) > 0.5).float()
    pw = torch.ones(bad_shape)
    assert_raises(lambda: LF.binary_cross_entropy_with_logits(x, y, pos_weight=pw),
                  lambda: F.binary_cross_entropy_with_logits(x, y, pos_weight=pw),
                  str(bad_shape), "(3,)")
    assert_raises(lambda: lk.BCEWithLogitsLoss(pos_weight=pw)(x, y), None, "pos_weight")
    assert_silent(lambda: LF.binary_cross_entropy_with_logits(x, y, pos_weight=torch.ones(3)))


@pytest.mark.parametrize("spatial", [(4, 5), (4,), (2, 4, 5)])
def test_pos_weight_hint_for_k_dim_input(spatial, gen):
    """Multi-label segmentation (N, C, d1, ...): pos_weight needs shape (C, 1, ..., 1), one 1 per
    spatial dim (torch's docs), not one entry per element of the last dim."""
    x = _randn(gen, 2, 3, *spatial)
    y = (torch.rand(x.shape, generator=gen) > 0.5).float()
    pw = torch.tensor([1.0, 2.0, 3.0])
    shape = "(3" + ", 1" * len(spatial) + ")"
    message = assert_raises(lambda: LF.binary_cross_entropy_with_logits(x, y, pos_weight=pw),
                            lambda: F.binary_cross_entropy_with_logits(x, y, pos_weight=pw),
                            "`pos_weight`", f"use shape {shape}", "dim 1")
    assert f"({spatial[-1]},)" not in message.split("Fix:")[1]
    fixed = pw.view(3, *[1] * len(spatial))
    out = assert_silent(lambda: LF.binary_cross_entropy_with_logits(x, y, pos_weight=fixed))
    torch.testing.assert_close(out, F.binary_cross_entropy_with_logits(x, y, pos_weight=fixed))


# Row: probability targets whose rows do not sum to 1 or hold negatives -> LossWarning


@pytest.mark.parametrize("mistake", ["sum", "negative"])
def test_probability_target_not_a_distribution_warns(mistake, gen):
    x = _randn(gen, 6, 4)
    q = torch.softmax(_randn(gen, 6, 4), 1)
    bad = q * 2 if mistake == "sum" else q + torch.tensor([0.5, -0.5, 0.0, 0.0])
    out = assert_warns(lambda: LF.cross_entropy(x, bad), mistake)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.testing.assert_close(out, F.cross_entropy(x, bad))  # the value is torch's
    assert_silent(lambda: LF.cross_entropy(x, q))


# Row: NaN or Inf in input or target -> LossInputError (deliberate: torch computes NaN)


def _loss(module, name):
    """``name`` from ``module`` (LF or F); kl_div with "batchmean" (its "mean" warns in torch)."""
    fn = getattr(module, name.replace("_multiclass", ""))
    if name == "kl_div":
        return lambda x, y, **kw: fn(x, y, reduction="batchmean", **kw)
    return fn


# NaN / Inf in any input or target: tests/test_cases.py runs it over every loss's cases.


def test_negative_inf_logit_is_allowed_in_cross_entropy(gen):
    """torch: a -inf logit on a non-target class gives a finite loss; not a mistake."""
    x, y = _randn(gen, 4, 3), torch.tensor([0, 1, 0, 1])
    x[:, 2] = -INF
    out = assert_silent(lambda: LF.cross_entropy(x, y))
    torch.testing.assert_close(out, F.cross_entropy(x, y))


# Row: every target equals ignore_index -> LossWarning, loss 0 with zero gradient (not NaN)


ALL_IGNORED = ["cross_entropy", "nll_loss", "focal_loss", "dice_loss"]


@pytest.mark.parametrize("ignore_index", [-100, 3])
@pytest.mark.parametrize("fn", ALL_IGNORED)
def test_all_ignored_is_zero_with_warning(fn, ignore_index, gen):
    x = _randn(gen, 5, 4)
    x = (torch.log_softmax(x, 1) if fn == "nll_loss" else x).requires_grad_()
    y = torch.full((5,), ignore_index)
    out = assert_warns(lambda: getattr(LF, fn)(x, y, ignore_index=ignore_index), "ignore_index")
    assert out.item() == 0.0
    (grad,) = torch.autograd.grad(out, x)
    assert torch.equal(grad, torch.zeros_like(grad))
    y_ok = y.clone()
    y_ok[0] = 1
    assert_silent(lambda: getattr(LF, fn)(x, y_ok, ignore_index=ignore_index))


def test_all_ignored_module_and_weighted(gen):
    x = _randn(gen, 2, 4, 3).requires_grad_()
    y = torch.full((2, 3), -100)
    loss = lk.CrossEntropyLoss(weight=torch.rand(4, generator=gen), label_smoothing=0.1)
    out = assert_warns(lambda: loss(x, y), "ignore_index")
    assert out.item() == 0.0
    assert torch.equal(torch.autograd.grad(out, x)[0], torch.zeros_like(x))


def test_dice_smooth0_all_ignored_is_zero_with_warning(gen):
    """smooth=0 with every target ignored is 0/0 in every class: 0 with zero gradient, as the
    warning says, not NaN."""
    x = _randn(gen, 2, 3, 4).requires_grad_()
    y = torch.full((2, 4), 255)
    call = lambda: LF.dice_loss(x, y, ignore_index=255, smooth=0.0)  # noqa: E731
    out = assert_warns(call, "ignore_index", "returns 0")
    assert out.item() == 0.0
    assert torch.equal(torch.autograd.grad(out, x)[0], torch.zeros_like(x))
    per_class = assert_silent(lambda: LF.dice_loss(x, y, ignore_index=255, smooth=0.0,
                                                   reduction="none"))  # warns for "mean" only
    assert torch.equal(per_class, torch.zeros(3))


@pytest.mark.parametrize("fn", ["cross_entropy", "nll_loss", "focal_loss"])
def test_empty_batch_mean_is_zero_with_warning(fn, gen):
    """An empty batch is a mean over nothing too: torch gives NaN, losskit 0 with zero gradient
    and the same LossWarning as an all-ignored batch."""
    x = torch.zeros(0, 4).requires_grad_()
    y = torch.zeros(0, dtype=torch.long)
    out = assert_warns(lambda: getattr(LF, fn)(x, y), "empty", "mean is over nothing")
    assert out.item() == 0.0
    assert torch.equal(torch.autograd.grad(out, x)[0], torch.zeros_like(x))
    if hasattr(F, fn):
        assert torch.isnan(getattr(F, fn)(x, y))
    assert_silent(lambda: getattr(LF, fn)(x, y, reduction="sum"))  # 0, as in torch


def test_empty_batch_mean_warns_in_modules_and_linear_cross_entropy(gen):
    assert_warns(lambda: lk.CrossEntropyLoss()(torch.zeros(0, 4), torch.zeros(0).long()), "empty")
    h, w = torch.zeros(0, 3), _randn(gen, 5, 3)
    out = assert_warns(lambda: LF.linear_cross_entropy(h, w, torch.zeros(0).long()), "empty")
    assert out.item() == 0.0


@pytest.mark.parametrize("reduction", ["sum", "none"])
def test_all_ignored_sum_and_none_are_torchs_zero(reduction, gen):
    """Only 'mean' divides by nothing; 'sum' / 'none' give torch's zeros without a warning."""
    x, y = _randn(gen, 5, 4), torch.full((5,), -100)
    out = assert_silent(lambda: LF.cross_entropy(x, y, reduction=reduction))
    torch.testing.assert_close(out, F.cross_entropy(x, y, reduction=reduction))


# Row: input and target on different devices, or input not floating point -> LossInputError


def _other_device() -> str:
    return "cuda" if torch.cuda.is_available() else "meta"


# Input and target on different devices: tests/test_cases.py runs it over every loss's cases.


def test_different_device_class_weight_raises(gen):
    x, y = _randn(gen, 6, 3), _labels(gen, 3, 6)
    w = torch.ones(3, device=_other_device())
    assert_raises(lambda: LF.cross_entropy(x, y, weight=w), None, "weight", _other_device())


# Integer input: tests/test_cases.py runs it over every loss's cases.


# Options that cannot be meant: softcap <= 0, chunk_size that is not a positive int


@pytest.mark.parametrize("softcap", [0.0, -4.0, float("inf"), float("nan"), True, "30"])
def test_bad_softcap_raises(softcap, gen):
    x, y = _randn(gen, 6, 5), _labels(gen, 5, 6)
    h, w = _randn(gen, 6, 3), _randn(gen, 5, 3)
    assert_raises(lambda: LF.cross_entropy(x, y, softcap=softcap), None, "softcap", "positive")
    assert_raises(lambda: LF.linear_cross_entropy(h, w, y, softcap=softcap), None, "softcap")
    assert_raises(lambda: lk.LinearCrossEntropyLoss(3, 5, softcap=softcap)(h, y), None, "softcap")
    assert_silent(lambda: LF.cross_entropy(x, y, softcap=30.0))
    assert_silent(lambda: LF.linear_cross_entropy(h, w, y, softcap=30))


@pytest.mark.parametrize("chunk_size", [0, -4, 2.5, True, "8"])
def test_bad_chunk_size_raises(chunk_size, gen):
    h, w, y = _randn(gen, 6, 3), _randn(gen, 5, 3), _labels(gen, 5, 6)
    assert_raises(lambda: LF.linear_cross_entropy(h, w, y, chunk_size=chunk_size), None,
                  "chunk_size", "positive int")
    assert_raises(lambda: lk.LinearCrossEntropyLoss(3, 5, chunk_size=chunk_size)(h, y), None,
                  "chunk_size")
    expected = F.cross_entropy(h @ w.T, y)
    for ok in (None, 1, 4):
        out = assert_silent(lambda c=ok: LF.linear_cross_entropy(h, w, y, chunk_size=c))
        torch.testing.assert_close(out, expected)


# ----------------------------------------------------------------------------------------------
# Checks modes


def test_set_checks_and_context_manager():
    before = lk.get_checks()
    with lk.checks("off"):
        assert lk.get_checks() == "off"
        with lk.checks("startup"):
            assert lk.get_checks() == "startup"
        assert lk.get_checks() == "off"
    assert lk.get_checks() == before
    with pytest.raises(RuntimeError), lk.checks("off"):
        raise RuntimeError("boom")
    assert lk.get_checks() == before  # restored on error too
    try:
        lk.set_checks("off")
        assert lk.get_checks() == "off"
        lk.set_checks("always")
        assert lk.get_checks() == "always"
    finally:
        lk.set_checks(before)


@pytest.mark.parametrize("bad", ["never", "", None])
def test_set_checks_rejects_unknown_mode(bad):
    before = lk.get_checks()
    with pytest.raises(lk.LossInputError, match="startup") as info:
        lk.set_checks(bad)
    assert "Fix:" in str(info.value)
    assert lk.get_checks() == before


def test_off_mode_skips_value_checks_but_not_metadata(gen):
    x, y = _randn(gen, 6, 4), _randn(gen, 6, 4)
    x[0, 0] = NAN
    with lk.checks("off"):
        assert torch.isnan(LF.mse_loss(x, y))  # torch's NaN, no check
        assert_silent(lambda: LF.cross_entropy(torch.softmax(y, 1), _labels(gen, 4, 6)))
        with pytest.raises(lk.LossInputError):  # shapes: metadata, always checked
            LF.mse_loss(y[:, :1], y[:, 0])
    with pytest.raises(lk.LossInputError, match="NaN"):
        LF.mse_loss(x, y)


def test_startup_mode_stops_value_checks_after_first_calls(gen):
    x, y = _randn(gen, 6, 4), _randn(gen, 6, 4)
    bad = x.clone()
    bad[0, 0] = NAN
    with lk.checks("startup"):  # fresh call counts
        with pytest.raises(lk.LossInputError):
            LF.mse_loss(bad, y)  # the first calls are checked
        for _ in range(100):
            LF.mse_loss(x, y)
        assert torch.isnan(LF.mse_loss(bad, y))  # value checks are over for mse_loss
        with pytest.raises(lk.LossInputError):
            LF.mse_loss(bad[:, :1], y[:, 0])  # metadata checks still run
        with pytest.raises(lk.LossInputError):
            LF.l1_loss(bad, y)  # counted per loss: l1_loss is still in its startup calls
    with lk.checks("always"):
        for _ in range(100):
            LF.mse_loss(x, y)
        with pytest.raises(lk.LossInputError):
            LF.mse_loss(bad, y)


_ENV_SCRIPT = """
import importlib, os, sys
import torch

def fresh_losskit(value):
    for name in [m for m in sys.modules if m == "losskit" or m.startswith("losskit.")]:
        del sys.modules[name]
    os.environ.pop("LOSSKIT_CHECKS", None)
    if value is not None:
        os.environ["LOSSKIT_CHECKS"] = value
    return importlib.import_module("losskit")

x = torch.ones(3)
bad = torch.tensor([1.0, float("nan"), 1.0])
for value in [None, "off", "always", "sometimes"]:
    try:
        lk = fresh_losskit(value)
    except ValueError as error:
        named = all(part in str(error) for part in ("LOSSKIT_CHECKS", value, "Fix:"))
        print(value, "rejected", named)
        continue
    for _ in range(50):
        lk.functional.mse_loss(x, x)
    try:
        lk.functional.mse_loss(bad, x)
        print(value, lk.get_checks(), "accepted")
    except lk.LossInputError:
        print(value, lk.get_checks(), "raised")
"""


def test_losskit_checks_environment_variable():
    """LOSSKIT_CHECKS is read at import: each value in a fresh import of losskit, one process."""
    env = {k: v for k, v in os.environ.items() if k != "LOSSKIT_CHECKS"}
    done = subprocess.run([sys.executable, "-c", _ENV_SCRIPT], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "None startup accepted",  # default: value checks stop after the startup calls
        "off off accepted",
        "always always raised",
        "sometimes rejected True",  # an unknown mode fails loudly, naming the variable
    ]


# ----------------------------------------------------------------------------------------------
# A correctly set-up training run of every loss produces zero LossWarnings


def _tasks(gen):
    """(loss_fn, make model output from the linear head's logits, target) per loss."""
    n, c = 64, 4
    labels = _labels(gen, c, n)
    multi = (torch.rand(n, c, generator=gen) > 0.5).float()
    soft = torch.softmax(_randn(gen, n, c), 1)
    reg = _randn(gen, n, c)
    seg = _labels(gen, c, n)
    return {
        "mse": (lk.MSELoss(), lambda z: z, reg),
        "l1": (lk.L1Loss(), lambda z: z, reg),
        "huber": (lk.HuberLoss(delta=0.5), lambda z: z, reg),
        "smooth_l1": (lk.SmoothL1Loss(beta=0.5), lambda z: z, reg),
        "bce": (lk.BCELoss(), torch.sigmoid, multi),
        "bce_logits": (lk.BCEWithLogitsLoss(pos_weight=torch.full((c,), 2.0)), lambda z: z, multi),
        "ce": (lk.CrossEntropyLoss(label_smoothing=0.1), lambda z: z, labels),
        "ce_soft": (lk.CrossEntropyLoss(), lambda z: z, soft),
        "nll": (lk.NLLLoss(), lambda z: torch.log_softmax(z, 1), labels),
        "kl": (lk.KLDivLoss(reduction="batchmean"), lambda z: torch.log_softmax(z, 1), soft),
        "focal": (lk.FocalLoss(alpha=0.25), lambda z: z, multi),
        "focal_multiclass": (lk.FocalLoss(), lambda z: z, labels),
        "dice": (lk.DiceLoss(), lambda z: z.reshape(n // 8, 8, c).transpose(1, 2),
                 seg.reshape(n // 8, 8)),
    }


def test_healthy_training_runs_never_warn(gen):
    tasks = _tasks(gen)
    features = _randn(gen, 64, 8)
    for name, (loss_fn, output, target) in tasks.items():
        torch.manual_seed(0)
        model = torch.nn.Linear(8, 4)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            losses = []
            for _ in range(8):
                opt.zero_grad()
                loss = loss_fn(output(model(features)), target)
                loss.backward()
                opt.step()
                losses.append(loss.item())
        assert not [str(w.message) for w in record], name
        assert losses[-1] < losses[0], name  # it trains
