"""Tests for the survivors of this session's sampled `make mutate` run (benchmarks/mutate.py),
each named after the mutation it kills."""

from __future__ import annotations

import warnings

import pytest
import torch

import losskit as lk
import losskit.functional as LF
from losskit.distributed import loss_sum_and_count


@pytest.mark.parametrize("quantile", [0.0, 1.0, -0.1, 1.5])
def test_quantile_outside_the_open_interval_raises(quantile):
    """Kills `0 < q` -> `0 <= q` and `0 != q` (regression.py)."""
    with pytest.raises(lk.LossInputError, match="strictly between 0 and 1"):
        LF.quantile_loss(torch.zeros(3), torch.ones(3), quantile=quantile)
    LF.quantile_loss(torch.zeros(3), torch.ones(3), quantile=1e-3)  # inside: fine


def test_bce_shape_mismatch_gets_losskits_message_and_equal_shapes_pass():
    """Kills `input.shape != target.shape` -> `==` (binary.py): torch's own ValueError names no
    fix."""
    with pytest.raises(ValueError, match="Fix:"):
        LF.binary_cross_entropy_with_logits(torch.zeros(4, 1), torch.zeros(4))
    with pytest.raises(ValueError, match="Fix:"):
        LF.binary_cross_entropy(torch.full((4, 1), 0.5), torch.zeros(4))


@pytest.mark.parametrize("fn", [LF.binary_cross_entropy, LF.binary_cross_entropy_with_logits,
                                LF.mse_loss, LF.poisson_nll_loss])
def test_legacy_arguments_warn_once_as_in_torch(fn):
    """Kills `warn=False` -> `warn=True` (binary.py): the deprecation warning comes once, from
    torch's function, not twice."""
    x = torch.full((3,), 0.5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fn(x, x.clone(), size_average=False)
    legacy = [w for w in caught if "size_average and reduce" in str(w.message)]
    assert len(legacy) == 1


def test_poisson_nll_legacy_argument_alone_sets_the_reduction():
    """Kills `and` -> `or` in likelihood._resolve: with only size_average given, the reduction
    string is not checked (torch refuses "elementwise_mean" for this loss only without legacy
    arguments); legacy arguments win, as in torch."""
    x, y = torch.randn(5), torch.rand(5) * 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = LF.poisson_nll_loss(x, y, size_average=False, reduction="elementwise_mean")
        want = torch.nn.functional.poisson_nll_loss(x, y, size_average=False,
                                                    reduction="elementwise_mean")
    torch.testing.assert_close(got, want)


def test_nll_default_ignore_index_is_minus_100():
    """Kills `ignore_index=-100` -> `-99` (classification.py nll_loss)."""
    logp = torch.randn(3, 4).log_softmax(1)
    y = torch.tensor([1, -100, 2])
    torch.testing.assert_close(LF.nll_loss(logp, y), torch.nn.functional.nll_loss(logp, y))


def test_loss_sum_and_count_of_a_loss_without_a_plain_mean_uses_its_mean():
    """Kills `reduction != "mean"` -> `> "mean"` (normalise.py): a Dice loss set to "none" must
    still be averaged before it is scaled by the count."""
    x, y = torch.randn(2, 3, 4, 4), torch.randint(0, 3, (2, 4, 4))
    s, n = loss_sum_and_count(lk.DiceLoss(reduction="none"), x, y)
    assert s.dim() == 0
    torch.testing.assert_close(s / n, lk.DiceLoss()(x, y))


def test_one_hot_long_target_fix_names_the_class_dim():
    """Kills `input.dim() >= 2` -> `<` in the one-hot message (classification.py)."""
    one_hot = torch.eye(3, dtype=torch.long)[[0, 2]]  # (2, 3) int64 one-hot rows
    with pytest.raises(RuntimeError, match=r"target.argmax\(dim=1\)"):
        LF.cross_entropy(torch.zeros(2, 3), one_hot)


def test_a_one_dim_cpu_tensor_beside_another_device_is_not_a_scalar():
    """Kills `v.dim() == 0` -> `== 1` in check_same_device: only 0-d CPU tensors are exempt."""
    with pytest.raises(lk.LossInputError, match="different devices"):
        LF.mse_loss(torch.zeros(3), torch.empty(3, device="meta"))


def test_global_mean_with_a_negative_total_weight_divides_by_it():
    """Kills `count == 0` -> `count <= 0` in GlobalMean: torch allows negative class weights, and
    the step's mean must divide by their (negative) sum, not by 1."""
    from losskit.distributed import GlobalMean

    w = torch.tensor([-2.0, 1.0, 0.5])
    loss_fn = torch.nn.CrossEntropyLoss(weight=w)
    model = torch.nn.Linear(4, 3)
    x, y = torch.randn(6, 4), torch.tensor([0, 0, 0, 1, 0, 2])
    norm = GlobalMean(loss_fn)
    for xb, yb in zip(x.split(3), y.split(3), strict=True):
        norm(model(xb), yb).backward()
    mean = norm.scale_grads_(model.parameters())
    torch.testing.assert_close(mean, loss_fn(model(x), y).detach())
