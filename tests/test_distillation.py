"""Distillation losses beyond the case table: torch's F.kl_div as a second oracle, the JSD's two
KL ends, the fused path against the plain one (values, student gradients, chunk edges, ignored
rows, global normalisation) and every guardrail with its healthy twin."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

import losskit as lk
import losskit.functional as LF
from losskit.distributed.normalise import global_denominator


def _randn(*shape, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _silent(fn, *args, **kwargs):
    with lk.checks("always"), warnings.catch_warnings():
        warnings.simplefilter("error", lk.LossWarning)
        return fn(*args, **kwargs)


# ----------------------------------------------------------------------------------------------
# Oracles


@pytest.mark.parametrize("temperature", [1.0, 2.0, 5.0])
def test_kd_equals_torch_kl_div_batchmean_times_t_squared(temperature):
    s, t = _randn(6, 9, seed=1).requires_grad_(), _randn(6, 9, seed=2)
    ours = LF.kd_loss(s, t, temperature=temperature)
    theirs = F.kl_div(F.log_softmax(s / temperature, -1), F.log_softmax(t / temperature, -1),
                      reduction="batchmean", log_target=True) * temperature**2
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-14)
    (g1,), (g2,) = torch.autograd.grad(ours, s), torch.autograd.grad(theirs, s)
    torch.testing.assert_close(g1, g2, rtol=1e-10, atol=1e-14)
    # the soft targets' gradient is T (p - q) / N: the T^2 factor keeps it O(1) in T
    p, q = F.softmax(s / temperature, -1), F.softmax(t / temperature, -1)
    torch.testing.assert_close(g1, temperature * (p - q).detach() / 6, rtol=1e-10, atol=1e-14)


def test_kd_on_sequences_averages_over_tokens_not_elements():
    s, t = _randn(2, 3, 5, seed=3), _randn(2, 3, 5, seed=4)
    per_token = F.kl_div(F.log_softmax(s, -1), F.softmax(t, -1), reduction="none").sum(-1)
    torch.testing.assert_close(LF.kd_loss(s, t), per_token.mean())  # over 6 tokens
    torch.testing.assert_close(LF.kd_loss(s, t, reduction="none"), per_token)


def test_jsd_ends_are_forward_and_reverse_kl():
    s, t = _randn(5, 7, seed=5), _randn(5, 7, seed=6)
    log_p, log_q = F.log_softmax(s / 2, -1), F.log_softmax(t / 2, -1)
    forward = F.kl_div(log_p, log_q, reduction="batchmean", log_target=True)  # KL(q || p)
    reverse = F.kl_div(log_q, log_p, reduction="batchmean", log_target=True)  # KL(p || q)
    torch.testing.assert_close(LF.jsd(s, t, beta=0.0, temperature=2.0), forward)
    torch.testing.assert_close(LF.jsd(s, t, beta=1.0, temperature=2.0), reverse)
    # near the ends the mixture JSD behaves as beta * KL(q || p) and (1 - beta) * KL(p || q)
    eps = 1e-5
    torch.testing.assert_close(LF.jsd(s, t, beta=eps, temperature=2.0) / eps, forward, rtol=1e-3,
                               atol=0)
    torch.testing.assert_close(LF.jsd(s, t, beta=1 - eps, temperature=2.0) / eps, reverse,
                               rtol=1e-3, atol=0)


def test_symmetric_jsd_is_bounded_by_log_2_and_zero_at_equal_inputs():
    s = _randn(4, 6, seed=7)
    assert float(LF.jsd(s, s)) == pytest.approx(0.0, abs=1e-15)
    far = torch.tensor([[60.0, 0.0], [0.0, 60.0]], dtype=torch.float64)
    assert float(LF.jsd(far, far.flip(-1))) == pytest.approx(0.6931471805599453, rel=1e-9)


def test_log_probabilities_give_the_same_loss_as_logits():
    """softmax(z / T) ignores a per-row shift, so log_softmax output is a valid input."""
    s, t = _randn(4, 8, seed=8), _randn(4, 8, seed=9)
    expected = LF.kd_loss(s, t, temperature=3.0)
    got = _silent(LF.kd_loss, s.log_softmax(-1), t.log_softmax(-1), temperature=3.0)
    torch.testing.assert_close(got, expected)


def test_teacher_gradient_matches_the_formula_with_the_warning():
    s, t = _randn(3, 5, seed=10).requires_grad_(), _randn(3, 5, seed=11).requires_grad_()
    with pytest.warns(lk.LossWarning, match="backpropagates into the teacher"):
        out = LF.jsd(s, t, beta=0.3)
    p, q = F.softmax(s, -1), F.softmax(t, -1)
    m = 0.3 * q + 0.7 * p
    ref = (0.3 * (q * (q / m).log()).sum(-1) + 0.7 * (p * (p / m).log()).sum(-1)).mean()
    g1, g2 = torch.autograd.grad(out, (s, t)), torch.autograd.grad(ref, (s, t))
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-14)


# ----------------------------------------------------------------------------------------------
# Fused == plain


def _fused_vs_plain(n, chunk, *, divergence="kl", labels=None, reduction="batchmean", bias=True,
                    **options):
    h, w = _randn(n, 5, seed=12).requires_grad_(), (_randn(13, 5, seed=13) / 2).requires_grad_()
    b = _randn(13, seed=14).requires_grad_() if bias else None
    ht, wt, bt = _randn(n, 3, seed=15), _randn(13, 3, seed=16), _randn(13, seed=17)
    fused = LF.linear_kd_loss(h, w, ht, wt, labels, student_bias=b, teacher_bias=bt,
                              divergence=divergence, reduction=reduction, chunk_size=chunk,
                              **options)
    s, t = h @ w.T + (0 if b is None else b), ht @ wt.T + bt
    plain_fn = LF.kd_loss if divergence == "kl" else LF.jsd
    plain = plain_fn(s, t, labels, reduction=reduction, **options)
    torch.testing.assert_close(fused, plain, rtol=1e-12, atol=1e-14)
    wanted = [x for x in (h, w, b) if x is not None]
    upstream = _randn(*fused.shape, seed=18)
    g1 = torch.autograd.grad(fused, wanted, upstream)
    g2 = torch.autograd.grad(plain, wanted, upstream)
    for a, c in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, c, rtol=1e-10, atol=1e-14)
    return fused


@pytest.mark.parametrize("reduction", ["none", "batchmean", "sum"])
@pytest.mark.parametrize("divergence", ["kl", "jsd"])
def test_fused_equals_plain_with_a_one_row_last_chunk(divergence, reduction):
    _fused_vs_plain(9, 4, divergence=divergence, reduction=reduction, temperature=2.0)


@pytest.mark.parametrize("reduction", ["none", "batchmean", "sum"])
def test_fused_equals_plain_with_ignored_rows(reduction):
    labels = torch.tensor([3, -100, 1, 1, -100, -100, 0, 2, 7, -100, 5])
    _fused_vs_plain(11, 3, divergence="jsd", labels=labels, reduction=reduction, beta=0.7)


def test_all_ignored_rows_give_zero_with_zero_gradient_and_a_warning():
    labels = torch.full((5,), -100)
    with lk.checks("always"), pytest.warns(lk.LossWarning, match="mean is over no row"):
        out = _fused_vs_plain(5, 2, labels=labels, bias=False)
    assert float(out.detach()) == 0.0


def test_num_items_normalises_micro_batches_like_one_batch():
    """Two micro-batches divided by the step's global token count: the sum of their losses and
    gradients equals one call on the whole batch."""
    h, w = _randn(10, 4, seed=19), _randn(9, 4, seed=20).requires_grad_()
    ht, wt = _randn(10, 6, seed=21), _randn(9, 6, seed=22)
    labels = torch.tensor([1, -100, 2, 3, 4, 5, -100, -100, 6, 7])
    whole = LF.linear_kd_loss(h, w, ht, wt, labels, temperature=2.0)
    (g_whole,) = torch.autograd.grad(whole, w)
    parts = [slice(0, 3), slice(3, 10)]  # 2 and 5 counted rows: plain means would differ
    denominator = global_denominator([(labels[p] != -100).sum() for p in parts])
    total = sum(LF.linear_kd_loss(h[p], w, ht[p], wt, labels[p], temperature=2.0,
                                  num_items=denominator) for p in parts)
    (g_parts,) = torch.autograd.grad(total, w)
    torch.testing.assert_close(total, whole)
    torch.testing.assert_close(g_parts, g_whole)


def test_fused_teacher_gets_no_gradient_and_3d_hidden_states_work():
    h, w = _randn(2, 3, 4, seed=23).requires_grad_(), _randn(6, 4, seed=24)
    ht, wt = _randn(2, 3, 5, seed=25), _randn(6, 5, seed=26)
    out = LF.linear_kd_loss(h, w, ht, wt, reduction="none", chunk_size=4)
    assert out.shape == (2, 3)
    torch.testing.assert_close(out, LF.kd_loss(h @ w.T, ht @ wt.T, reduction="none"))


def test_fused_float32_and_bfloat16_follow_float64():
    h, w = _randn(37, 16, seed=27), _randn(50, 16, seed=28) / 4
    ht, wt = _randn(37, 8, seed=29), _randn(50, 8, seed=30) / 3
    ref = LF.kd_loss(h @ w.T, ht @ wt.T, temperature=2.0)
    for dtype, tol in ((torch.float32, 1e-5), (torch.bfloat16, 3e-2)):
        wl = w.to(dtype).requires_grad_()
        out = LF.linear_kd_loss(h.to(dtype), wl, ht.to(dtype), wt.to(dtype), temperature=2.0,
                                chunk_size=8)
        out.backward()
        assert out.dtype == dtype and wl.grad.dtype == dtype
        torch.testing.assert_close(out.double(), ref, rtol=tol, atol=tol)


def test_second_derivative_through_the_fused_loss_raises():
    h, w = _randn(4, 3, seed=31).requires_grad_(), _randn(5, 3, seed=32)
    out = LF.linear_kd_loss(h, w, _randn(4, 2, seed=33), _randn(5, 2, seed=34))
    with pytest.raises(RuntimeError, match=r"second derivative.*Fix:.*fused\(False\)"):
        torch.autograd.grad(out, h, create_graph=True)


@pytest.mark.parametrize("divergence", ["kl", "jsd"])
def test_the_named_fix_fused_false_gives_second_derivatives(divergence):
    """The refusal above names `with losskit.kernels.fused(False):`; inside it linear_kd_loss
    runs plain autograd ops: gradgradcheck (finite differences, float64) passes for the student's
    hidden states, head and bias, with ignored rows and "none"; values equal the fused path."""
    h, w, b = _randn(5, 3, seed=41), _randn(6, 3, seed=42), _randn(6, seed=43)
    ht, wt = _randn(5, 2, seed=44), _randn(6, 2, seed=45)
    labels = torch.tensor([1, -100, 2, 0, -100])
    kw = dict(divergence=divergence, temperature=2.0, beta=0.3, labels=labels)
    for reduction in ("batchmean", "none"):
        def f(h_, w_, b_, reduction=reduction):
            return LF.linear_kd_loss(h_, w_, ht, wt, student_bias=b_, reduction=reduction, **kw)
        args = tuple(t.clone().requires_grad_() for t in (h, w, b))
        with lk.kernels.fused(False):
            assert torch.autograd.gradgradcheck(f, args)
            plain = f(*args)
        torch.testing.assert_close(plain, f(*args), rtol=1e-12, atol=1e-12)  # fused path


# ----------------------------------------------------------------------------------------------
# Guardrails, each with its healthy twin


def test_probabilities_instead_of_logits_warn_and_logits_stay_silent():
    s, t = _randn(4, 8, seed=35), _randn(4, 8, seed=36)
    with lk.checks("always"), pytest.warns(lk.LossWarning, match="looks like probabilities"):
        LF.kd_loss(s.softmax(-1), t)
    with lk.checks("always"), pytest.warns(lk.LossWarning, match="`teacher_logits`.*probab"):
        LF.jsd(s, t.softmax(-1))
    _silent(LF.kd_loss, s, t)
    _silent(LF.kd_loss, s.sigmoid(), t)  # in [0, 1] but rows do not sum to 1: logits may be


@pytest.mark.parametrize("temperature", [0.0, -1.0, float("inf"), float("nan"), True])
def test_bad_temperature_raises(temperature):
    with pytest.raises(lk.LossInputError, match=r"temperature=.*positive finite.*Fix:"):
        LF.kd_loss(_randn(2, 3), _randn(2, 3), temperature=temperature)


def test_small_positive_temperature_is_fine():
    _silent(LF.kd_loss, _randn(2, 3), _randn(2, 3, seed=1), temperature=0.5)


@pytest.mark.parametrize("beta", [-0.1, 1.5])
def test_beta_outside_0_1_raises(beta):
    with pytest.raises(lk.LossInputError, match=r"beta=.*Fix:"):
        LF.jsd(_randn(2, 3), _randn(2, 3), beta=beta)


def test_vocab_mismatch_raises_naming_the_slice_and_equal_vocab_is_fine():
    with pytest.raises(lk.LossInputError, match=r"8 classes.*10.*teacher_logits\[\.\.\., :8\]"):
        LF.kd_loss(_randn(4, 8), _randn(4, 10))
    with pytest.raises(lk.LossInputError, match="every dimension but the last"):
        LF.kd_loss(_randn(4, 8), _randn(5, 8))
    with pytest.raises(lk.LossInputError, match=r"teacher_weight\[:6\]"):
        LF.linear_kd_loss(_randn(3, 4), _randn(6, 4), _randn(3, 2), _randn(7, 2))
    with pytest.raises(lk.LossInputError, match="not its transpose"):
        LF.linear_kd_loss(_randn(3, 4), _randn(4, 6), _randn(3, 2), _randn(6, 2))
    _silent(LF.linear_kd_loss, _randn(3, 4), _randn(6, 4), _randn(3, 2), _randn(6, 2))


def test_teacher_that_requires_grad_warns_and_a_detached_teacher_is_silent():
    s, t = _randn(3, 5).requires_grad_(), _randn(3, 5, seed=1).requires_grad_()
    with pytest.warns(lk.LossWarning, match="backpropagates into the teacher.*Fix:"):
        LF.kd_loss(s, t)
    _silent(LF.kd_loss, s, t.detach())
    with torch.no_grad():
        _silent(LF.kd_loss, s, t)  # no graph is built: nothing to warn about


def test_swapped_arguments_warn():
    student_out, teacher_out = _randn(3, 5).requires_grad_(), _randn(3, 5, seed=1)
    with pytest.warns(lk.LossWarning, match="look swapped"):
        LF.kd_loss(teacher_out, student_out)
    _silent(LF.kd_loss, student_out, teacher_out)


def test_fused_teacher_head_that_requires_grad_is_detached_silently():
    """A teacher's head is a Parameter (requires_grad=True unless turned off); the fused loss
    detaches every teacher tensor itself, so there is nothing to warn about and no gradient
    reaches the teacher."""
    h, w = _randn(3, 4).requires_grad_(), _randn(6, 4)
    wt, ht = _randn(6, 2).requires_grad_(), _randn(3, 2).requires_grad_()
    out = _silent(LF.linear_kd_loss, h, w, ht, wt)
    out.backward()
    assert wt.grad is None and ht.grad is None and h.grad is not None


def test_kd_without_t_squared_warns_only_at_a_temperature():
    s, t = _randn(3, 5), _randn(3, 5, seed=1)
    with pytest.warns(lk.LossWarning, match="scale_by_temperature_squared=False.*1/T\\^2"):
        LF.kd_loss(s, t, temperature=4.0, scale_by_temperature_squared=False)
    unscaled = _silent(LF.kd_loss, s, t, temperature=1.0, scale_by_temperature_squared=False)
    torch.testing.assert_close(unscaled, LF.kd_loss(s, t))


def test_labels_of_the_wrong_shape_or_dtype_raise():
    s, t = _randn(2, 3, 5), _randn(2, 3, 5, seed=1)
    with pytest.raises(lk.LossInputError, match=r"labels.*\(6,\).*\(2, 3\)"):
        LF.kd_loss(s, t, torch.zeros(6, dtype=torch.long))
    with pytest.raises(lk.LossInputError, match="integer token ids"):
        LF.kd_loss(s, t, torch.zeros(2, 3))
    _silent(LF.kd_loss, s, t, torch.zeros(2, 3, dtype=torch.long))


def test_bad_reduction_and_chunk_size_raise():
    with pytest.raises(ValueError, match=r"reduction=.avg.*Fix:"):
        LF.kd_loss(_randn(2, 3), _randn(2, 3), reduction="avg")
    with pytest.raises(lk.LossInputError, match="chunk_size=0"):
        LF.linear_kd_loss(_randn(3, 4), _randn(6, 4), _randn(3, 2), _randn(6, 2), chunk_size=0)
    with pytest.raises(lk.LossInputError, match="divergence='kld'"):
        LF.linear_kd_loss(_randn(3, 4), _randn(6, 4), _randn(3, 2), _randn(6, 2),
                          divergence="kld")


def test_loss_sum_and_count_splits_the_mean_for_global_normalisation():
    from losskit.distributed.normalise import loss_sum_and_count

    s, t = _randn(2, 4, 6, seed=37), _randn(2, 4, 6, seed=38)
    labels = torch.tensor([[1, 2, -100, 3], [-100, -100, 4, 5]])
    total, count = loss_sum_and_count(lk.KDLoss(temperature=2.0), s, t, labels)
    assert float(count) == 5.0
    torch.testing.assert_close(total / count, LF.kd_loss(s, t, labels, temperature=2.0))
    h, w, ht, wt = _randn(8, 3), _randn(5, 3, seed=1), _randn(8, 2, seed=2), _randn(5, 2, seed=3)
    flat = labels.reshape(8)
    total, count = loss_sum_and_count(lk.LinearKDLoss(), h, w, ht, wt, flat)
    assert float(count) == 5.0
    torch.testing.assert_close(total / count, LF.linear_kd_loss(h, w, ht, wt, flat))


# ----------------------------------------------------------------------------------------------
# Review round 3: mixed-precision teacher, fused-path warnings, messages


def _kl64(s, t):
    log_p, log_q = F.log_softmax(s.double(), -1), F.log_softmax(t.double(), -1)
    return (log_q.exp() * (log_q - log_p)).sum(-1).mean()


def _jsd64(s, t, beta=0.5):
    p, q = F.softmax(s.double(), -1), F.softmax(t.double(), -1)
    m = beta * q + (1 - beta) * p
    return (beta * (q * (q / m).log()).sum(-1) + (1 - beta) * (p * (p / m).log()).sum(-1)).mean()


def test_bf16_teacher_float32_student():
    gen = torch.Generator().manual_seed(0)
    s = torch.randn(64, 1000, generator=gen) * 4
    t = (s + 0.01 * torch.randn(64, 1000, generator=gen)).bfloat16()  # near-identical
    got_jsd, got_kd = LF.jsd(s, t), LF.kd_loss(s, t)
    assert got_jsd >= 0
    torch.testing.assert_close(got_jsd.double(), _jsd64(s, t), rtol=1e-3, atol=2e-6)
    torch.testing.assert_close(got_kd.double(), _kl64(s, t), rtol=1e-3, atol=2e-6)


def test_fused_bf16_teacher_float32_student():
    gen = torch.Generator().manual_seed(1)
    h, w = torch.randn(32, 8, generator=gen), torch.randn(300, 8, generator=gen)
    ht, wt = h.bfloat16(), w.bfloat16()
    got = LF.linear_kd_loss(h, w, ht, wt, divergence="jsd", chunk_size=8)
    want = _jsd64(h.double() @ w.double().T, (ht @ wt.T).double())
    assert got >= 0
    torch.testing.assert_close(got.double(), want, rtol=1e-3, atol=2e-6)


def test_fused_teacher_parameter_no_warning():
    teacher = torch.nn.Linear(8, 20, bias=True)  # Parameters: requires_grad=True
    h = torch.randn(6, 8, requires_grad=True)
    w = torch.randn(20, 8, requires_grad=True)
    ht = teacher.weight.new_ones(6, 8).requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LF.linear_kd_loss(h, w, ht, teacher.weight, teacher_bias=teacher.bias).backward()
    assert teacher.weight.grad is None
    with pytest.warns(lk.LossWarning, match="`teacher_logits` requires grad"):
        LF.kd_loss(h @ w.T, teacher(ht))  # the plain path does train the teacher: warned


def test_vocab_mismatch_message_slices_wider():
    s, t = torch.randn(4, 7), torch.randn(4, 5)
    with pytest.raises(lk.LossInputError, match=r"`student_logits\[\.\.\., :5\]`") as info:
        LF.kd_loss(s, t)
    fixed = eval(info.value.args[0].split("`")[-2], {"student_logits": s})  # run the fix
    LF.kd_loss(fixed, t)


def test_messages_name_the_arguments():
    with pytest.raises(lk.LossInputError, match=r"`teacher_logits` has .*teacher_logits\.float"):
        LF.jsd(torch.randn(2, 3), torch.ones(2, 3, dtype=torch.long))
    with pytest.raises(lk.LossInputError, match=r"`teacher_weight` has .*Fix"):
        LF.linear_kd_loss(torch.randn(2, 3), torch.randn(4, 3), torch.randn(2, 3),
                          torch.ones(4, 3, dtype=torch.long))
    labels = torch.full((3,), -100)
    with lk.checks("always"), pytest.warns(lk.LossWarning, match=r"`labels` \(shape \(3,\)\)"):
        LF.kd_loss(torch.randn(3, 4), torch.randn(3, 4), labels)
