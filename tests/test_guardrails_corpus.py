"""Guardrails for the mistakes a second, outside corpus of real-world loss bugs found missing,
each with its healthy twin (a similar-looking correct call that must stay silent), and fixes that
are right for the shapes received (each suggested fix is run).
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

import losskit as lk
import losskit.functional as LF


@pytest.fixture(autouse=True)
def _always():
    with lk.checks("always"):
        yield


def _warns(call, *words):
    with pytest.warns(lk.LossWarning) as caught:
        out = call()
    message = str(caught[0].message)
    assert "Fix:" in message and all(w in message for w in words), message
    return out


def _silent(call):
    with warnings.catch_warnings():
        warnings.simplefilter("error", lk.LossWarning)
        return call()


def _dist(gen, *shape):
    return torch.randn(*shape, generator=gen).softmax(-1)


# KL divergence: probabilities as the input, log-probabilities as the target


def test_kl_given_probabilities_warns_and_the_fix_is_silent(gen):
    p, q = _dist(gen, 8, 5), _dist(gen, 8, 5)
    _warns(lambda: LF.kl_div(p, q, reduction="batchmean"), "probabilities", "probs.log()")
    _silent(lambda: LF.kl_div(p.log(), q, reduction="batchmean"))


def test_kl_given_logits_warns(gen):
    logits, q = 3 * torch.randn(8, 5, generator=gen), _dist(gen, 8, 5)
    _warns(lambda: LF.kl_div(logits, q, reduction="batchmean"), "raw logits", "log_softmax")
    _silent(lambda: LF.kl_div(logits.log_softmax(1), q, reduction="batchmean"))


def test_kl_log_probability_target_without_log_target_raises_and_the_fix_matches(gen):
    logp, logq = _dist(gen, 8, 5).log(), _dist(gen, 8, 5).log()
    assert torch.isnan(F.kl_div(logp, logq, reduction="batchmean"))  # torch: silent NaN
    with pytest.raises(lk.LossInputError, match="log_target=True"):
        LF.kl_div(logp, logq, reduction="batchmean")
    fixed = _silent(lambda: LF.kl_div(logp, logq, reduction="batchmean", log_target=True))
    torch.testing.assert_close(fixed, LF.kl_div(logp, logq.exp(), reduction="batchmean"))


def test_kl_soft_targets_with_zeros_are_healthy(gen):
    q = _dist(gen, 8, 5)
    q[:, 0] = 0.0  # a class with zero probability: fine for KL (0 log 0 = 0)
    _silent(lambda: LF.kl_div(torch.randn(8, 5, generator=gen).log_softmax(1), q / q.sum(1, True),
                              reduction="batchmean"))


# Cross-entropy over a single logit column


def test_cross_entropy_with_one_class_raises_naming_bce_and_the_fix_runs(gen):
    x = torch.randn(8, 1, generator=gen)
    y = torch.randint(0, 2, (8,), generator=gen)
    assert F.cross_entropy(x, torch.zeros_like(y)).item() == 0.0  # torch: 0, whatever x is
    with pytest.raises(lk.LossInputError) as caught:
        LF.cross_entropy(x, y)
    message = str(caught.value)
    assert "binary_cross_entropy_with_logits(input.squeeze(1), target.float())" in message
    assert "0..0" not in message  # the old index message suggested labels 0..0
    _silent(lambda: LF.binary_cross_entropy_with_logits(x.squeeze(1), y.float()))


def test_a_one_column_regression_head_is_healthy(gen):
    x, y = torch.randn(8, 1, generator=gen), torch.randn(8, 1, generator=gen)
    _silent(lambda: LF.mse_loss(x, y))
    _silent(lambda: LF.cross_entropy(torch.randn(8, 2, generator=gen), torch.ones(8).long()))


# Sigmoid outputs fed to softmax cross-entropy


def test_sigmoid_before_cross_entropy_warns(gen):
    probs = torch.randn(64, 10, generator=gen).sigmoid()
    y = torch.randint(0, 10, (64,), generator=gen)
    _warns(lambda: LF.cross_entropy(probs, y), "sigmoid output", "remove the final sigmoid")


@pytest.mark.parametrize("logits", [
    lambda g: 0.45 * torch.rand(64, 10, generator=g),  # inside [0, 1], one side of 0.5
    lambda g: torch.zeros(64, 10),  # a zero-initialised head
    lambda g: 0.5 + 0.01 * torch.randn(64, 2, generator=g),  # a barely trained 2-class head
    lambda g: torch.randn(64, 10, generator=g),  # ordinary logits
], ids=["one-side-of-0.5", "zeros", "two-classes-near-0.5", "logits"])
def test_logits_that_lie_in_0_1_are_healthy(logits, gen):
    x = logits(gen)
    _silent(lambda: LF.cross_entropy(x, torch.randint(0, x.shape[1], (64,), generator=gen)))


# pos_weight for a one-channel segmentation mask


def test_single_channel_mask_pos_weight_hint_is_one_ratio(gen):
    x, y = torch.randn(2, 1, 4, 6, generator=gen), torch.rand(2, 1, 4, 6, generator=gen).round()
    with pytest.raises(RuntimeError) as caught:
        LF.binary_cross_entropy_with_logits(x, y, pos_weight=torch.rand(4))
    message = str(caught.value)
    assert "n_negative / n_positive" in message and ".view(" not in message
    ratio = (y == 0).sum() / (y == 1).sum()
    _silent(lambda: LF.binary_cross_entropy_with_logits(x, y, pos_weight=ratio.reshape(1)))


def test_pos_weight_over_a_spatial_dim_warns(gen):
    x, y = torch.randn(2, 3, 4, 6, generator=gen), torch.rand(2, 3, 4, 6, generator=gen).round()
    _warns(lambda: LF.binary_cross_entropy_with_logits(x, y, pos_weight=torch.rand(6)),
           "columns of pixels", "(3, 1, 1) tensor")
    _silent(lambda: LF.binary_cross_entropy_with_logits(x, y, pos_weight=torch.rand(3, 1, 1)))
    x2, y2 = torch.randn(5, 6, generator=gen), torch.rand(5, 6, generator=gen).round()
    _silent(lambda: LF.binary_cross_entropy_with_logits(x2, y2, pos_weight=torch.rand(6)))


def test_linear_cross_entropy_with_a_one_row_head_raises_like_cross_entropy(gen):
    h, w = torch.randn(8, 4, generator=gen), torch.randn(1, 4, generator=gen)
    y = torch.randint(0, 2, (8,), generator=gen)
    with pytest.raises(lk.LossInputError) as caught:
        LF.linear_cross_entropy(h, w, y)
    assert "binary_cross_entropy_with_logits(F.linear(input" in str(caught.value)
    _silent(lambda: LF.binary_cross_entropy_with_logits(F.linear(h, w).squeeze(-1), y.float()))
    _silent(lambda: LF.linear_cross_entropy(h, torch.randn(2, 4, generator=gen), y))
