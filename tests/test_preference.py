"""Preference losses beyond the case table: the fused path against the plain one (the chunked
kernel, ignore_index padding, a last chunk of one row, sequences with no counted token), known
values, and each guardrail with its healthy twin."""

from __future__ import annotations

import importlib
import math
import warnings

import pytest
import torch
from cases.preference import _plain_logps, linear_preference_reference

import losskit as lk
import losskit.functional as LF
import losskit.kernels as kernels

chunked = importlib.import_module("losskit.kernels.linear_cross_entropy")
# float32 through the chunked kernel against the float64 plain path (test_cases.TOLERANCE)
RTOL, ATOL = 1e-5, 1e-6


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)


@pytest.fixture
def chunk_calls(monkeypatch):
    """(kept tokens, chunk size) of each pass of the chunked kernel; every float32 size is
    sent there (forward, and for "none" the backward's recomputation: one pass each)."""
    calls = []
    original = chunked._chunked_pass

    def spy(hidden, *args, chunk, **kwargs):
        calls.append((hidden.shape[0], chunk))
        return original(hidden, *args, chunk=chunk, **kwargs)

    monkeypatch.setattr(chunked, "_chunked_pass", spy)
    monkeypatch.setattr(kernels, "MIN_FUSED_ELEMENTS", 0)
    return calls


def _silent(fn, *args, **kwargs):
    """Under checks("always"), any LossWarning fails (the healthy twin of a mistake)."""
    with lk.checks("always"), warnings.catch_warnings():
        warnings.simplefilter("error", lk.LossWarning)
        return fn(*args, **kwargs)


def _padded_batch(gen, b, s, hid, vocab):
    hidden = torch.randn(b, s, hid, generator=gen)
    labels = torch.randint(0, vocab, (b, s), generator=gen)
    labels[:, :2] = -100  # the prompt
    labels[1, -2:] = -100  # right padding
    return hidden, labels


# ----------------------------------------------------------------------------------------------
# sequence_logps: chunked kernel vs the materialised float64 logits


@pytest.mark.parametrize("average", [False, True])
def test_sequence_logps_chunked_matches_plain(gen, chunk_calls, average):
    """3 x 7 positions, 8 counted tokens, chunk_size=7: chunks of 7 and a last of 1 row;
    sequence 2 has no counted token (its log-probability is 0, its gradient 0)."""
    hid, vocab = 6, 13
    hidden, labels = _padded_batch(gen, 3, 7, hid, vocab)
    labels[2] = -100
    assert int((labels != -100).sum()) == 8
    weight = torch.randn(vocab, hid, generator=gen) / math.sqrt(hid)
    bias = torch.randn(vocab, generator=gen)
    params = [p.clone().requires_grad_() for p in (hidden, weight, bias)]
    refs = [p.detach().double().requires_grad_() for p in params]
    ours = LF.sequence_logps(params[0], params[1], labels, bias=params[2], average=average,
                             chunk_size=7)
    theirs = _plain_logps(refs[0], refs[1], labels, refs[2], -100, average)
    assert set(chunk_calls) == {(8, 7)}  # 8 kept tokens in chunks of 7: 7 + 1
    upstream = torch.tensor([0.7, -1.3, 2.0], dtype=torch.float64)
    (ours * upstream.float()).sum().backward()
    (theirs * upstream).sum().backward()
    torch.testing.assert_close(ours.double(), theirs, rtol=RTOL, atol=ATOL)
    assert ours[2].item() == 0.0
    for p, r in zip(params, refs, strict=True):
        torch.testing.assert_close(p.grad.double(), r.grad, rtol=RTOL, atol=ATOL)
    assert torch.count_nonzero(params[0].grad[2]) == 0


def test_sequence_logps_all_ignored(gen, chunk_calls):
    hidden = torch.randn(2, 4, 5, generator=gen, requires_grad=True)
    weight = torch.randn(7, 5, generator=gen, requires_grad=True)
    out = LF.sequence_logps(hidden, weight, torch.full((2, 4), -100), average=True)
    out.sum().backward()
    assert out.tolist() == [0.0, 0.0]
    assert torch.count_nonzero(hidden.grad) == 0 and torch.count_nonzero(weight.grad) == 0


# ----------------------------------------------------------------------------------------------
# linear_preference_loss: one chunked pass for chosen and rejected


@pytest.mark.parametrize(("loss", "options"), [
    ("dpo", dict(beta=0.5)),
    ("dpo", dict(beta=0.5, loss_type="ipo")),
    ("simpo", dict(beta=2.0, gamma=0.5)),
    ("orpo", dict(lambda_=0.5)),
])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_fused_matches_plain(gen, chunk_calls, loss, options, reduction):
    """Chosen (2, 6) and rejected (2, 5) with prompts and padding: 6 + 4 counted tokens go
    through the head in ONE kernel call, chunk_size=3: chunks of 3, 3, 3 and a last of 1 row."""
    hid, vocab = 8, 17
    hc, yc = _padded_batch(gen, 2, 6, hid, vocab)
    hr, yr = _padded_batch(gen, 2, 5, hid, vocab)
    assert int((yc != -100).sum() + (yr != -100).sum()) == 10
    weight = torch.randn(vocab, hid, generator=gen) / math.sqrt(hid)
    refs_logps = ()
    if loss == "dpo":
        refs_logps = (-20 * torch.rand(2, generator=gen, dtype=torch.float64) - 5,
                      -20 * torch.rand(2, generator=gen, dtype=torch.float64) - 5)
    params = [p.clone().requires_grad_() for p in (hc, hr, weight)]
    doubles = [p.detach().double().requires_grad_() for p in params]
    ours = LF.linear_preference_loss(*params, yc, yr, *(r.float() for r in refs_logps),
                                     loss=loss, chunk_size=3, reduction=reduction, **options)
    theirs = linear_preference_reference(*doubles, yc, yr, *refs_logps, loss=loss,
                                         reduction=reduction, **options)
    upstream = torch.randn(theirs.shape, generator=gen, dtype=torch.float64)
    (ours * upstream.float()).sum().backward()
    (theirs * upstream).sum().backward()
    assert set(chunk_calls) == {(10, 3)}  # 10 kept tokens: 3 + 3 + 3 + 1, in every pass
    torch.testing.assert_close(ours.double(), theirs, rtol=RTOL, atol=ATOL)
    for p, r in zip(params, doubles, strict=True):
        torch.testing.assert_close(p.grad.double(), r.grad, rtol=RTOL, atol=ATOL)


def test_fused_equals_separate_calls_float64(gen):
    """The concatenated pass equals sequence_logps on each side, then dpo_loss (float64)."""
    hc, yc = _padded_batch(gen, 3, 5, 4, 9)
    hr, yr = _padded_batch(gen, 3, 4, 4, 9)
    hc, hr = hc.double(), hr.double()
    w = torch.randn(9, 4, generator=gen, dtype=torch.float64)
    ref_c = torch.tensor([-9.0, -8.0, -7.0], dtype=torch.float64)
    ref_r = torch.tensor([-6.0, -8.5, -7.0], dtype=torch.float64)
    fused = LF.linear_preference_loss(hc, hr, w, yc, yr, ref_c, ref_r, beta=0.2,
                                      reduction="none")
    separate = LF.dpo_loss(LF.sequence_logps(hc, w, yc), LF.sequence_logps(hr, w, yr), ref_c,
                           ref_r, beta=0.2, reduction="none")
    torch.testing.assert_close(fused, separate, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# Known values


def test_dpo_at_the_reference_is_ln2_and_its_gradient_is_beta_over_two():
    pc = torch.tensor([-4.0, -9.0], requires_grad=True)
    pr = torch.tensor([-6.0, -3.0], requires_grad=True)
    loss = LF.dpo_loss(pc, pr, pc.detach(), pr.detach(), beta=0.3)
    loss.backward()
    assert loss.item() == pytest.approx(math.log(2))
    # d/dh -log sigmoid(beta h) at h = 0 is -beta/2, and "mean" over 2 pairs halves it
    torch.testing.assert_close(pc.grad, torch.full((2,), -0.3 / 4))
    torch.testing.assert_close(pr.grad, torch.full((2,), 0.3 / 4))


def test_ipo_is_minimal_at_margin_one_over_two_beta():
    beta = 0.25  # the IPO optimum is at h = 1 / (2 beta) = 2
    pc = torch.tensor([-3.0], requires_grad=True)
    loss = LF.dpo_loss(pc, torch.tensor([-5.0]), torch.tensor([-4.0]), torch.tensor([-4.0]),
                       beta=beta, loss_type="ipo")
    loss.backward()
    assert loss.item() == 0.0 and pc.grad.item() == 0.0


def test_kto_kl_estimate_is_clamped_and_not_differentiated():
    kl = torch.tensor([-0.5, -0.1], requires_grad=True)  # mean < 0: clamped to 0
    policy, ref = torch.tensor([-4.0, -4.0]), torch.tensor([-5.0, -5.0])
    labels = torch.tensor([True, False])
    with_kl = LF.kto_loss(policy, ref, labels, kl, beta=1.0, reduction="none")
    without = LF.kto_loss(policy, ref, labels, beta=1.0, reduction="none")
    assert torch.equal(with_kl, without) and not with_kl.requires_grad
    # r = 1: desirable 1 - sigmoid(1), undesirable 1 - sigmoid(-1)
    torch.testing.assert_close(without, torch.tensor([1 - 1 / (1 + math.exp(-1)),
                                                      1 - 1 / (1 + math.exp(1))]))


def test_dpo_rewards_are_detached():
    pc = torch.tensor([-5.0], requires_grad=True)
    chosen, rejected = LF.dpo_rewards(pc, torch.tensor([-6.0]), torch.tensor([-5.5]),
                                      torch.tensor([-5.0]), beta=2.0)
    assert chosen.item() == 1.0 and rejected.item() == -2.0 and not chosen.requires_grad


# ----------------------------------------------------------------------------------------------
# Guardrails, each with its healthy twin


def _logps(*values):
    return torch.tensor(values)


def test_reference_that_requires_grad_warns_and_detached_is_silent():
    pc, pr = _logps(-5.0, -6.0).requires_grad_(), _logps(-7.0, -6.5).requires_grad_()
    rc, rr = _logps(-5.5, -6.0), _logps(-6.0, -6.0)
    with lk.checks("always"), pytest.warns(lk.LossWarning, match=r"`ref_chosen_logps` requires "
                                           r"grad.*Fix: .*torch.no_grad\(\)") as caught:
        LF.dpo_loss(pc, pr, rc.requires_grad_(), rr)
    assert len([w for w in caught if w.category is lk.LossWarning]) == 1
    with lk.checks("always"), pytest.warns(lk.LossWarning, match=r"`ref_chosen_logps` and "
                                           r"`ref_rejected_logps` require grad") as caught:
        LF.dpo_loss(pc, pr, rc, rr.clone().requires_grad_())
    assert len([w for w in caught if w.category is lk.LossWarning]) == 1
    _silent(LF.dpo_loss, pc, pr, rc.detach(), rr)
    with torch.no_grad():  # under no_grad nothing trains: silent too
        _silent(LF.dpo_loss, pc, pr, rc, rr)


def test_kto_reference_that_requires_grad_warns():
    with lk.checks("always"), pytest.warns(lk.LossWarning, match=r"`ref_logps` requires grad"):
        LF.kto_loss(_logps(-3.0), _logps(-4.0).requires_grad_(), torch.tensor([True]))
    _silent(LF.kto_loss, _logps(-3.0), _logps(-4.0), torch.tensor([True]))


@pytest.mark.parametrize("fn", [LF.simpo_loss, LF.orpo_loss])
def test_per_token_logps_raise_and_per_sequence_pass(fn, gen):
    token_logps = -torch.rand(4, 9, generator=gen)  # (B, S)
    with pytest.raises(lk.LossInputError, match=r"shape \(4, 9\): per-token.*shape \(4,\)"):
        fn(token_logps, token_logps)
    _silent(fn, token_logps.mean(-1), token_logps.mean(-1) - 0.1)


def test_pairs_of_different_lengths_raise():
    with pytest.raises(lk.LossInputError, match=r"differ in length.*`ref_rejected_logps` \(3,\)"):
        LF.dpo_loss(_logps(-1.0, -2.0), _logps(-1.0, -2.0), _logps(-1.0, -2.0),
                    _logps(-1.0, -2.0, -3.0))
    _silent(LF.dpo_loss, _logps(-1.0, -2.0), _logps(-1.0, -2.0), _logps(-1.0, -2.0),
            _logps(-1.0, -2.0))


def test_probabilities_and_logits_raise_with_fitting_fixes():
    with lk.checks("always"):
        with pytest.raises(lk.LossInputError, match=r"in \[0, 1\]: probabilities.*\.log\(\)"):
            LF.simpo_loss(_logps(0.2, 0.9), _logps(-0.5, -1.0))
        with pytest.raises(lk.LossInputError, match=r"`policy_rejected_logps` holds positive.*"
                                                    r"logits, rewards"):
            LF.dpo_loss(_logps(-1.0), _logps(3.5), _logps(-1.0), _logps(-2.0))
    _silent(LF.simpo_loss, _logps(0.2, 0.9).log(), _logps(-0.5, -1.0))


@pytest.mark.parametrize("beta", [0.0, -0.1, float("nan")])
def test_non_positive_beta_raises(beta):
    for call in (lambda b: LF.dpo_loss(*[_logps(-1.0)] * 4, beta=b),
                 lambda b: LF.simpo_loss(_logps(-1.0), _logps(-2.0), beta=b),
                 lambda b: LF.kto_loss(_logps(-1.0), _logps(-1.0), torch.tensor([True]), beta=b)):
        with pytest.raises(lk.LossInputError, match=r"`beta`=.*positive finite.*Fix: e.g."):
            call(beta)
        _silent(call, 0.1)


@pytest.mark.parametrize("labels", [torch.tensor([1.0, 0.0]), torch.tensor([1, 0]),
                                    torch.tensor([1, -1])])
def test_kto_labels_must_be_bool(labels):
    with pytest.raises(lk.LossInputError, match=r"`labels` has .*dtype.*Fix: `labels.bool\(\)`"):
        LF.kto_loss(_logps(-1.0, -2.0), _logps(-1.5, -2.5), labels)
    _silent(LF.kto_loss, _logps(-1.0, -2.0), _logps(-1.5, -2.5), labels > 0)


def test_option_errors_name_the_fix():
    pairs = [_logps(-1.0)] * 4
    with pytest.raises(lk.LossInputError, match=r"loss_type='simpo'.*Fix:"):
        LF.dpo_loss(*pairs, loss_type="simpo")
    with pytest.raises(lk.LossInputError, match=r"with loss_type='ipo'.*Fix: label_smoothing=0"):
        LF.dpo_loss(*pairs, loss_type="ipo", label_smoothing=0.1)
    with pytest.raises(lk.LossInputError, match=r"label_smoothing=0.7.*\[0, 0.5\]"):
        LF.dpo_loss(*pairs, label_smoothing=0.7)
    with pytest.raises(lk.LossInputError, match=r"lambda_=-1.0.*Fix"):
        LF.orpo_loss(_logps(-1.0), _logps(-2.0), lambda_=-1.0)


def _fused_batch(gen):
    hc, yc = _padded_batch(gen, 2, 6, 4, 9)
    hr, yr = _padded_batch(gen, 2, 5, 4, 9)
    return hc, hr, torch.randn(9, 4, generator=gen), yc, yr


def test_fused_swapped_labels_raise_and_the_right_order_passes(gen):
    hc, hr, w, yc, yr = _fused_batch(gen)
    with pytest.raises(lk.LossInputError, match=r"the labels are swapped.*Fix: pass "
                                                r"labels_chosen="):
        LF.linear_preference_loss(hc, hr, w, yr, yc, loss="simpo")
    _silent(LF.linear_preference_loss, hc, hr, w, yc, yr, loss="simpo")


def test_fused_reference_arguments_must_fit_the_loss(gen):
    hc, hr, w, yc, yr = _fused_batch(gen)
    with pytest.raises(lk.LossInputError, match=r"needs `ref_chosen_logps`.*Fix"):
        LF.linear_preference_loss(hc, hr, w, yc, yr, loss="dpo")
    with pytest.raises(lk.LossInputError, match=r"reference-free.*Fix: drop"):
        LF.linear_preference_loss(hc, hr, w, yc, yr, _logps(-1.0, -1.0), _logps(-1.0, -1.0),
                                  loss="orpo")
    with pytest.raises(lk.LossInputError, match=r"loss='kto'.*Fix"):
        LF.linear_preference_loss(hc, hr, w, yc, yr, loss="kto")


def test_fused_shape_errors_name_the_argument(gen):
    hc, hr, w, yc, yr = _fused_batch(gen)
    with pytest.raises(lk.LossInputError, match=r"`labels_rejected` has shape \(2, 6\).*"
                                                r"hidden\[:, :-1\]"):
        LF.linear_preference_loss(hc, hr, w, yc, yc, loss="orpo")
    with pytest.raises(lk.LossInputError, match=r"`weight` has shape \(4, 9\).*lm_head"):
        LF.linear_preference_loss(hc, hr, w.T, yc, yr, loss="orpo")
    with pytest.raises(lk.LossInputError, match=r"holds 2 sequences but `hidden_rejected` holds 1"):
        LF.linear_preference_loss(hc, hr[:1], w, yc, yr[:1], loss="orpo")
    with pytest.raises(lk.LossInputError, match=r"`labels_chosen` has .*float.*\.long\(\)"):
        LF.linear_preference_loss(hc, hr, w, yc.float(), yr, loss="orpo")


def test_fused_answer_without_a_scored_token_raises(gen):
    hc, hr, w, yc, yr = _fused_batch(gen)
    yr[1] = -100
    with lk.checks("always"), pytest.raises(lk.LossInputError, match=r"`labels_rejected` row 1 "
                                                                   r"has no token.*Fix"):
        LF.linear_preference_loss(hc, hr, w, yc, yr, loss="orpo")


# ----------------------------------------------------------------------------------------------
# Review round 3: bf16 sums, ORPO at log p = 0, empty batches, setting types, KTO's kl


def _exact_bf16_batch(b=2, s=1024, h=16, v=500, seed=0):
    """bf16 hidden states and head whose logits are exact in bf16 (small integers / eighths), so
    float64 math on the same inputs is the oracle of everything after the matmul."""
    gen = torch.Generator().manual_seed(seed)
    hid = torch.randint(-1, 2, (b, s, h), generator=gen).bfloat16()
    w = (torch.randint(-8, 9, (v, h), generator=gen) / 8).bfloat16()
    y = torch.randint(0, v, (b, s), generator=gen)
    y[:, :7] = -100
    return hid, w, y


def _logps64(hid, w, y):
    logp = torch.log_softmax(hid.double() @ w.double().T, -1)
    tok = logp.gather(-1, y.clamp(min=0)[..., None])[..., 0]
    return (tok * (y != -100)).sum(-1)  # (B,)


def test_sequence_logps_bf16_sums_in_float32():
    hid, w, y = _exact_bf16_batch()
    got = LF.sequence_logps(hid, w, y, chunk_size=256)
    want = _logps64(hid, w, y)
    assert got.dtype == torch.float32 and want.abs().min() > 4000  # bf16 steps of 32 here
    torch.testing.assert_close(got.double(), want, rtol=2e-6, atol=1e-3)


def test_linear_dpo_bf16_matches_oracle():
    hc, w, yc = _exact_bf16_batch(seed=1)
    hr, _, yr = _exact_bf16_batch(seed=2)
    w2 = (w.float() * 0.97).bfloat16()  # a reference head a little off the policy's
    ref_c, ref_r = _logps64(hc, w2, yc), _logps64(hr, w2, yr)
    pc, pr = _logps64(hc, w, yc), _logps64(hr, w, yr)
    margin = (pc - ref_c) - (pr - ref_r)
    want = -torch.nn.functional.logsigmoid(0.1 * margin)
    got = LF.linear_preference_loss(hc, hr, w, yc, yr, ref_c.float(), ref_r.float(), beta=0.1,
                                    chunk_size=256, reduction="none")
    assert got.dtype == torch.bfloat16  # the loss in the input's dtype, its margin in float32
    torch.testing.assert_close(got.double(), want, rtol=8e-3, atol=1e-4)  # bf16 output rounding


def test_orpo_finite_at_log_prob_zero():
    chosen = torch.tensor([0.0, -1.0], dtype=torch.float64, requires_grad=True)
    rejected = torch.tensor([-1.0, 0.0], dtype=torch.float64, requires_grad=True)
    loss = LF.orpo_loss(chosen, rejected, lambda_=0.5, reduction="sum")
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(chosen.grad).all() and torch.isfinite(rejected.grad).all()
    # pair 0: the chosen answer is certain, odds ~ 1/eps, so the odds term ~ 0 and loss ~ 0
    # pair 1: log odds of the chosen (p = e^-1) against the capped ~ log(1/eps) of the rejected
    eps = torch.finfo(torch.float64).eps
    lo_c = -1 - math.log(-math.expm1(-1))
    lo_r = math.log((1 - eps) / eps)
    want = 1.0 + 0.5 * math.log1p(math.exp(-(lo_c - lo_r)))
    assert abs(loss.item() - want) < 1e-9


def test_fused_orpo_all_ignored_answer_finite_after_startup():
    gen = torch.Generator().manual_seed(3)
    hc, hr, w, yc, yr = _fused_batch(gen)
    yr[1] = -100
    with lk.checks("off"):
        out = LF.linear_preference_loss(hc, hr, w, yc, yr, loss="orpo")
    assert torch.isfinite(out)


@pytest.mark.parametrize("fn,n", [(LF.dpo_loss, 4), (LF.simpo_loss, 2), (LF.orpo_loss, 2)])
def test_pair_losses_empty_mean_is_zero_with_warning(fn, n):
    logps = [torch.zeros(0, requires_grad=True) for _ in range(n)]
    with pytest.warns(lk.LossWarning, match=r"no pair.*Fix"):
        out = fn(*logps[:2], *[t.detach() for t in logps[2:]])
    assert out.item() == 0.0
    out.backward()
    assert logps[0].grad is not None and logps[0].grad.numel() == 0


def test_linear_preference_loss_empty_batch():
    hc, hr = torch.zeros(0, 3, 4), torch.zeros(0, 2, 4)
    yc, yr = torch.zeros(0, 3, dtype=torch.long), torch.zeros(0, 2, dtype=torch.long)
    with pytest.warns(lk.LossWarning, match="no pair"):
        out = LF.linear_preference_loss(hc, hr, torch.randn(5, 4), yc, yr, loss="simpo")
    assert out.item() == 0.0


def test_kto_kl_nan_refused_and_empty_is_zero():
    p, r, y = torch.tensor([-4.0, -4.0]), torch.tensor([-5.0, -5.0]), torch.tensor([True, False])
    with lk.checks("always"), pytest.raises(lk.LossInputError, match=r"`kl` holds NaN.*Fix"):
        LF.kto_loss(p, r, y, torch.tensor([float("nan")]))
    with pytest.raises(lk.LossInputError, match=r"`kl` holds NaN"):
        LF.kto_loss(p, r, y, float("nan"))
    empty = LF.kto_loss(p, r, y, torch.zeros(0), beta=1.0, reduction="none")
    # oracle: z0 = 0, desirable 1 - sigmoid(1), undesirable 1 - sigmoid(-1)
    want = torch.tensor([1 - 1 / (1 + math.exp(-1)), 1 - 1 / (1 + math.exp(1))])
    torch.testing.assert_close(empty, want)


def test_setting_types():
    import numpy as np

    pc, pr = torch.tensor([-5.0]), torch.tensor([-6.0])
    a = LF.simpo_loss(pc, pr, beta=np.float32(2.0), gamma=1.0)
    assert torch.isclose(a, LF.simpo_loss(pc, pr, beta=2.0, gamma=1.0))
    for kwargs in (dict(beta=True), dict(beta=torch.tensor(2.0)),
                   dict(label_smoothing=torch.tensor(0.1))):
        with pytest.raises(lk.LossInputError, match=r"must be a real number.*Fix"):
            LF.simpo_loss(pc, pr, **kwargs)
    with pytest.raises(lk.LossInputError, match=r"`lambda_`.*real number"):
        LF.orpo_loss(pc, pr, lambda_=torch.tensor(0.1))


# ----------------------------------------------------------------------------------------------
# ORPO near a mean log-probability of 0: the paper's odds written with expm1 as the oracle


def _orpo_term64(x_w: float, x_l: float) -> float:
    """-log sigmoid(log odds_w - log odds_l) = log(1 + odds_l / odds_w), odds = p / (1 - p) with
    1 - p = -expm1(x) (exact near p = 1, where 1 - exp(x) loses every digit)."""
    odds_w, odds_l = math.exp(x_w) / -math.expm1(x_w), math.exp(x_l) / -math.expm1(x_l)
    return math.log1p(odds_l / odds_w)


def _orpo_grad_chosen64(x_w: float, x_l: float, lam: float) -> float:
    """d/dx_w of -x_w + lam * term by hand: -1 - lam sigma(log odds_l - log odds_w) / (1 - p_w),
    rearranged as -1 - lam odds_l / (odds_l (1 - p_w) + p_w), finite at x_w = 0 (= -1 - lam
    odds_l, the one-sided limit)."""
    p_w, odds_l = math.exp(x_w), math.exp(x_l) / -math.expm1(x_l)
    return -1 - lam * odds_l / (odds_l * -math.expm1(x_w) + p_w)


@pytest.mark.parametrize("x_w", [0.0, -1e-300, -1e-12, -1e-6, -0.3, -math.log(2) + 1e-9,
                                 -math.log(2) - 1e-9, -2.0, -30.0])
def test_orpo_value_and_chosen_gradient_match_hand_values_near_zero(x_w):
    lam, x_l = 0.5, -1.3
    chosen = torch.tensor([x_w], dtype=torch.float64, requires_grad=True)
    rejected = torch.tensor([x_l], dtype=torch.float64)
    loss = LF.orpo_loss(chosen, rejected, lambda_=lam)
    loss.backward()
    want = -x_w + lam * _orpo_term64(x_w, x_l) if x_w < 0 else lam * 0.0
    assert abs(loss.item() - want) <= 1e-14 + 1e-13 * abs(want)
    want_grad = _orpo_grad_chosen64(x_w, x_l, lam)
    assert abs(chosen.grad.item() - want_grad) <= 1e-13 * abs(want_grad)


def test_orpo_gradient_at_zero_is_the_limit_of_finite_differences():
    """The gradient at x_w = 0 equals the slope of the loss just below 0 (one-sided finite
    differences), and the value is continuous there."""
    lam, x_l = 0.7, -0.4
    at = LF.orpo_loss(torch.tensor([0.0], dtype=torch.float64), torch.tensor([x_l],
                      dtype=torch.float64), lambda_=lam)
    chosen = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    LF.orpo_loss(chosen, torch.tensor([x_l], dtype=torch.float64), lambda_=lam).backward()
    for h in (1e-4, 1e-6):
        below = LF.orpo_loss(torch.tensor([-h], dtype=torch.float64),
                             torch.tensor([x_l], dtype=torch.float64), lambda_=lam)
        slope = (at - below).item() / h
        assert abs(slope - chosen.grad.item()) < 5 * h * (1 + lam / math.expm1(-x_l) ** 2)
    assert at.item() == 0.0
    assert chosen.grad.item() == pytest.approx(-1 - lam / math.expm1(-x_l), rel=1e-15)


def test_orpo_gradcheck_on_both_sides_of_the_branch_switch():
    x = torch.tensor([-1e-7, -0.69, -0.7, -5.0], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([-0.2, -3.0, -1e-3, -0.69], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda a, b: LF.orpo_loss(a, b, lambda_=0.3, reduction="none"), (x, y))


def test_orpo_float32_near_zero_follows_float64():
    x_w = torch.tensor([0.0, -1e-7, -1e-3, -0.5, -60.0], dtype=torch.float64)
    x_l = torch.tensor([-2.0, -0.1, -1e-2, -0.5, -1.0], dtype=torch.float64)
    grads = []
    for dtype in (torch.float64, torch.float32):
        c = x_w.to(dtype).detach().clone().requires_grad_()
        LF.orpo_loss(c, x_l.to(dtype), lambda_=0.2, reduction="sum").backward()
        grads.append(c.grad.double())
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-5, atol=1e-6)


def test_orpo_beta_from_trl_raises_a_type_error_naming_lambda():
    pc, pr = torch.tensor([-0.5]), torch.tensor([-1.5])
    with pytest.raises(TypeError, match=r"'beta'.*losskit calls it `lambda_`.*lambda_=0\.1"):
        LF.orpo_loss(pc, pr, beta=0.1)
    with pytest.raises(TypeError, match=r"'beta'.*`lambda_`"):
        lk.ORPOLoss(beta=0.2)
    with pytest.raises(TypeError, match=r"'gamma'.*not one of this loss's options"):
        LF.orpo_loss(pc, pr, gamma=1.0)
    torch.testing.assert_close(LF.orpo_loss(pc, pr, lambda_=0.1), lk.ORPOLoss(lambda_=0.1)(pc, pr))


# ---- review round s11: ORPO precision, dtypes, closed signatures, fused-path hints ----------


def _orpo_mp(x_w, x_l, lam):
    """ORPO per pair in 50-digit mpmath: -x_w - lam * log sigmoid(log odds_w - log odds_l)."""
    mpmath = pytest.importorskip("mpmath")
    with mpmath.workdps(50):
        xw, xl = mpmath.mpf(x_w), mpmath.mpf(x_l)
        lo = lambda x: x - mpmath.log(-mpmath.expm1(x))  # noqa: E731
        return float(-xw + lam * mpmath.log1p(mpmath.exp(-(lo(xw) - lo(xl)))))


@pytest.mark.parametrize("x_w, x_l", [(-21.0, -0.7), (-40.0, -0.1), (-0.7, -1e-10), (-3.0, -1e-8)])
def test_orpo_float64_exact_where_log_t_exceeds_softplus_threshold(x_w, x_l):
    """log t > 20 (softplus's default threshold=20 returned log t, 2e-9 off): value against
    mpmath, gradients against gradcheck's finite differences."""
    c = torch.tensor([x_w], dtype=torch.float64, requires_grad=True)
    r = torch.tensor([x_l], dtype=torch.float64, requires_grad=True)
    got = LF.orpo_loss(c, r, lambda_=1.0, reduction="sum")
    want = _orpo_mp(x_w, x_l, 1.0)
    assert abs(got.item() - want) <= 1e-15 * abs(want)
    # d/dx_w of the odds-ratio term: -(1 - sigmoid(z)) * dlo/dx, dlo/dx = 1 / (1 - e^x)
    got.backward()
    s = 1.0 / (1.0 + math.exp(-((x_w - math.log(-math.expm1(x_w)))
                                - (x_l - math.log(-math.expm1(x_l))))))
    assert c.grad.item() == pytest.approx(-1 - (1 - s) / -math.expm1(x_w), rel=1e-12)
    assert r.grad.item() == pytest.approx((1 - s) / -math.expm1(x_l), rel=1e-12)


def test_orpo_mixed_dtypes_compute_in_the_promoted_dtype():
    c = torch.tensor([-1e-9, -0.3], dtype=torch.float64)
    r = torch.tensor([-1.0000001e-9, -0.30000001], dtype=torch.float64)
    want = torch.tensor([_orpo_mp(a, b, 1.0) for a, b in zip(c.tolist(), r.tolist(), strict=True)],
                        dtype=torch.float64)
    # chosen in float32 (exact -1e-9 kept by using the float32 value in the oracle)
    c32 = c.float()
    pairs32 = zip(c32.double().tolist(), r.tolist(), strict=True)
    want32 = torch.tensor([_orpo_mp(a, b, 1.0) for a, b in pairs32], dtype=torch.float64)
    for chosen, rejected, ref in ((c, r, want), (c32, r, want32), (c, r.float(), None)):
        got = LF.orpo_loss(chosen, rejected, lambda_=1.0, reduction="none")
        assert got.dtype == torch.float64
        if ref is not None:
            torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-15)
    # half with float32: float32 result; half with half: computed in float32, returned in half
    h = LF.orpo_loss(c.half(), r.float(), lambda_=1.0, reduction="none")
    assert h.dtype == torch.float32
    assert LF.orpo_loss(c.half(), r.half(), lambda_=1.0).dtype == torch.float16


def test_orpo_signatures_are_closed_and_beta_still_gets_the_hint():
    import inspect
    for fn in (LF.orpo_loss, lk.ORPOLoss.__init__, lk.ORPOLoss):
        kinds = {p.kind for p in inspect.signature(fn).parameters.values()}
        assert inspect.Parameter.VAR_KEYWORD not in kinds
    pc, pr = torch.tensor([-0.5]), torch.tensor([-1.5])
    with pytest.raises(TypeError):
        inspect.signature(LF.orpo_loss).bind(pc, pr, beta=0.1)
    fix = r"orpo_loss\(\).*'beta'.*Fix: orpo_loss\(\.\.\., lambda_=0\.1\)"
    with pytest.raises(TypeError, match=fix):
        LF.orpo_loss(pc, pr, beta=0.1)
    with pytest.raises(TypeError, match=r"ORPOLoss\(\).*Fix: ORPOLoss\(\.\.\., lambda_=0\.2\)"):
        lk.ORPOLoss(beta=0.2)


def test_linear_preference_orpo_beta_hint_names_the_fused_call(gen):
    hc, hr, W = torch.randn(2, 4, 8, generator=gen), torch.randn(2, 3, 8, generator=gen), \
        torch.randn(30, 8, generator=gen)
    yc = torch.randint(0, 30, (2, 4), generator=gen)
    yr = torch.randint(0, 30, (2, 3), generator=gen)
    fix = r"Fix: linear_preference_loss\(\.\.\., loss='orpo', lambda_=0\.1\)"
    with pytest.raises(TypeError, match=fix):
        LF.linear_preference_loss(hc, hr, W, yc, yr, loss="orpo", beta=0.1)
    with pytest.raises(TypeError, match=r"linear_preference_loss\(\).*'foo'.*loss='orpo' takes"):
        LF.linear_preference_loss(hc, hr, W, yc, yr, loss="orpo", foo=1)
    with pytest.raises(TypeError, match=r"linear_preference_loss\(\).*'lambda_'.*loss='simpo'"):
        LF.linear_preference_loss(hc, hr, W, yc, yr, loss="simpo", lambda_=0.1)
    # the named fix runs and equals orpo_loss on the plain log-probabilities (float64 oracle)
    got = LF.linear_preference_loss(hc, hr, W, yc, yr, loss="orpo", lambda_=0.1)
    lc = LF.sequence_logps(hc.double(), W.double(), yc, average=True)
    lr = LF.sequence_logps(hr.double(), W.double(), yr, average=True)
    torch.testing.assert_close(got.double(), LF.orpo_loss(lc, lr, lambda_=0.1), rtol=1e-5,
                               atol=1e-6)
