"""Tests that sit at the thresholds: near-miss healthy inputs that must stay silent next to
near-miss mistakes that must still be caught, one pair per tolerance.

Each test here was written against a mutation that the rest of the suite let through (the
tolerance loosened or tightened, a count off by one, the overfit goal moved); benchmarks/mutation.md
lists them. Expected values are hand-derived (row sums, logsumexp, Var(y) + d**2, least squares),
never read back from losskit.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

import losskit as lk
import losskit.functional as LF
from losskit.doctor import doctor


def _silent(call):
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        call()
    assert not record, [str(w.message) for w in record]


def _warns(call, *patterns):
    with pytest.warns(lk.LossWarning) as record:
        call()
    message = str(record[0].message)
    assert "Fix:" in message
    for pattern in patterns:
        assert pattern in message, message


@pytest.fixture(autouse=True)
def always_checks():
    with lk.checks("always"):
        yield


# ----------------------------------------------------------------------------------------------
# Softmax before cross-entropy: float32 row sums within 1e-4 of 1 warn, beyond it are logits.


def test_near_uniform_two_class_logits_are_not_taken_for_probabilities(gen):
    """Logits of a barely trained 2-class head sit near 0.5 each: every value in [0, 1] and row
    sums within a few hundredths of 1, but not within 1e-4. Not a softmax."""
    y = torch.randint(0, 2, (16,), generator=gen)
    logits = 0.5 + 0.01 * torch.randn(16, 2, generator=gen)  # row sums 1 +- ~0.014
    assert ((logits.sum(1) - 1).abs() < 0.1).all() and (logits.sum(1) - 1).abs().max() > 1e-4
    _silent(lambda: LF.cross_entropy(logits, y))
    shifted = torch.softmax(torch.randn(16, 2, generator=gen), 1) + 1e-3  # every row sums to 1.002
    _silent(lambda: LF.cross_entropy(shifted, y))


@pytest.mark.parametrize("classes", [2, 1000])
def test_float32_softmax_output_warns_whatever_its_rounding(gen, classes):
    """Float32 softmax rows sum to 1 only up to rounding (about 1e-6 over 1000 classes)."""
    probs = torch.softmax(3 * torch.randn(16, classes, generator=gen), 1)
    assert (probs.double().sum(1) - 1).abs().max() > 0  # rounding is really there
    _warns(lambda: LF.cross_entropy(probs, torch.randint(0, classes, (16,), generator=gen)),
           "softmax")


# ----------------------------------------------------------------------------------------------
# Logits given to NLL: float32 rows with |logsumexp| > 1e-3 are not log-probabilities.


def test_log_probabilities_shifted_by_a_hundredth_warn(gen):
    """log(p + 1e-3) over 10 classes, a "safe log", has logsumexp log(1.01) ~ 0.00995."""
    p = torch.softmax(torch.randn(16, 10, generator=gen), 1)
    shifted = (p + 1e-3).log()
    lse = torch.logsumexp(shifted.double(), 1)
    torch.testing.assert_close(lse, torch.full_like(lse, math.log(1.01)), rtol=0, atol=1e-6)
    _warns(lambda: LF.nll_loss(shifted, torch.randint(0, 10, (16,), generator=gen)),
           "log-probabilities")
    _warns(lambda: LF.nll_loss(torch.log_softmax(torch.randn(16, 10, generator=gen), 1) + 5e-3,
                               torch.randint(0, 10, (16,), generator=gen)), "log-probabilities")


@pytest.mark.parametrize("classes", [2, 32000])
def test_float32_log_softmax_is_silent_whatever_its_rounding(gen, classes):
    x = torch.log_softmax(5 * torch.randn(4, classes, generator=gen), 1)
    _silent(lambda: LF.nll_loss(x, torch.randint(0, classes, (4,), generator=gen)))
    _silent(lambda: LF.nll_loss(x + 2e-4, torch.randint(0, classes, (4,), generator=gen)))


# ----------------------------------------------------------------------------------------------
# Startup mode: value checks on the first 8 calls of each loss, then off.


@pytest.mark.parametrize("call", [1, 7, 8, 9, 10])
def test_startup_mode_checks_values_on_calls_1_to_8_only(gen, call):
    x, y = torch.randn(4, 3, generator=gen), torch.randn(4, 3, generator=gen)
    bad = x.clone()
    bad[1, 2] = float("nan")
    with lk.checks("startup"):  # fresh call counts
        for _ in range(call - 1):
            LF.mse_loss(x, y)
        if call <= 8:
            with pytest.raises(lk.LossInputError, match="NaN"):
                LF.mse_loss(bad, y)
        else:
            assert torch.isnan(LF.mse_loss(bad, y))


# ----------------------------------------------------------------------------------------------
# Doctor, loss at init: warn above 1.5x the uninformed prediction's loss.


@pytest.mark.parametrize(("ratio", "status"), [(1.45, "pass"), (1.55, "warn"), (2.9, "warn")])
def test_init_loss_just_below_and_above_the_tolerance(gen, ratio, status):
    """A constant prediction b on standardised targets: MSE = Var(y) + (b - mean)**2 = 1 + b**2,
    expected Var(y) = 1, so b = sqrt(ratio - 1) gives exactly that ratio."""
    x, y = torch.randn(32, 4, generator=gen), torch.randn(32, 1, generator=gen)
    y = (y - y.mean()) / y.std(unbiased=False)
    model = nn.Linear(4, 1)
    with torch.no_grad():
        model.weight.zero_()
        model.bias.fill_(math.sqrt(ratio - 1))
    check = doctor(model, lk.MSELoss(), (x, y), overfit_steps=1)["loss at init"]
    assert check.status == status, check.message
    assert f"x{ratio:.2f}" in check.message


# ----------------------------------------------------------------------------------------------
# Doctor, overfit one batch: a broken setup that fits only part of the way fails; a healthy model
# whose targets conflict (identical inputs, different targets) is warned, not failed.


class FirstFeatureOnly(nn.Module):
    """A setup bug: the forward drops every input feature but the first."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x[:, :1])


def test_a_broken_setup_that_only_partly_fits_fails(gen):
    torch.manual_seed(0)
    x = torch.randn(16, 2, generator=gen)
    y = 2 * x[:, :1] + x[:, 1:]  # the target needs both features
    y = (y - y.mean()) / y.std()
    model = FirstFeatureOnly()
    # The best the model can do: least squares on [x0, 1], in float64.
    a = torch.cat([x[:, :1], torch.ones(16, 1)], 1).double()
    best = ((a @ torch.linalg.lstsq(a, y.double()).solution - y.double()) ** 2).mean().item()
    with torch.no_grad():
        start = ((model(x) - y) ** 2).mean().item()
    share = (start - best) / start  # of the way to the floor 0 that any fit can go
    assert 0.5 < share < 0.9, share  # partly: a 50% goal would pass it, the 90% goal does not
    check = doctor(model, lk.MSELoss(), (x, y), lr=0.1)["overfit one batch"]
    assert check.status == "fail", check.message
    assert "Fix:" in check.message


def _duplicated(gen, classes=5):
    """8 distinct inputs, each given twice with two different class labels."""
    x8 = torch.randn(8, 10, generator=gen)
    a = torch.randint(0, classes, (8,), generator=gen)
    b = (a + torch.randint(1, classes, (8,), generator=gen)) % classes  # b != a
    return torch.cat([x8, x8]), torch.cat([a, b])


def test_a_healthy_model_with_conflicting_targets_is_warned_not_failed(gen):
    """Each pair of duplicates has labels (a, b): the best shared prediction is 1/2 on each, so
    the lowest reachable cross-entropy is ln 2, not 0."""
    torch.manual_seed(0)
    x, y = _duplicated(gen)
    model = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 5))
    report = doctor(model, lk.CrossEntropyLoss(), (x, y))
    check = report["overfit one batch"]
    assert check.status == "warn", check.message
    assert f"floor {math.log(2):.3g}" in check.message and "8 groups" in check.message
    assert "Fix:" in check.message and report.ok


def test_conflicting_regression_targets_floor_is_their_variance(gen):
    """MSE with duplicates (y, y'): the best shared prediction is the pair's mean, floor
    mean((y - y')**2 / 4)."""
    torch.manual_seed(0)
    x, _ = _duplicated(gen)
    y = torch.randn(16, 1, generator=gen)
    floor = ((y[:8] - y[8:]) ** 2 / 4).mean().item()
    model = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 1))
    check = doctor(model, lk.MSELoss(), (x, y))["overfit one batch"]
    assert check.status == "warn", check.message
    assert f"floor {floor:.3g}" in check.message


def test_a_broken_setup_with_conflicting_targets_still_fails(gen):
    """Conflicts raise the floor, not the bar: lr=0 still fails."""
    torch.manual_seed(0)
    x, y = _duplicated(gen)
    model = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 5))
    check = doctor(model, lk.CrossEntropyLoss(), (x, y), lr=0.0)["overfit one batch"]
    assert check.status == "fail", check.message


def test_duplicates_that_agree_change_nothing(gen):
    torch.manual_seed(0)
    x8 = torch.randn(8, 10, generator=gen)
    y8 = torch.randint(0, 5, (8,), generator=gen)
    model = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 5))
    check = doctor(model, lk.CrossEntropyLoss(), (torch.cat([x8, x8]), torch.cat([y8, y8])))
    assert check["overfit one batch"].status == "pass", check["overfit one batch"].message


# ----------------------------------------------------------------------------------------------
# Where the checks point: -inf is allowed only where a loss says so; warnings name the caller.


@pytest.mark.parametrize("fn", ["mse_loss", "l1_loss", "binary_cross_entropy_with_logits"])
def test_negative_infinity_input_raises_by_default(gen, fn):
    x, y = torch.randn(4, 3, generator=gen), torch.rand(4, 3, generator=gen)
    x[2, 1] = -math.inf
    with pytest.raises(lk.LossInputError, match="Fix:"):
        getattr(LF, fn)(x, y)


def test_a_loss_warning_points_at_the_callers_line(gen):
    probs = torch.softmax(torch.randn(16, 4, generator=gen), 1)
    with pytest.warns(lk.LossWarning) as record:
        lk.CrossEntropyLoss()(probs, torch.randint(0, 4, (16,), generator=gen))
    assert record[0].filename == __file__


# ----------------------------------------------------------------------------------------------
# Doctor, output activation at its edges: 2 classes, and a Tanh head whose range fits.


def test_a_two_class_softmax_head_fails_the_activation_check(gen):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2), nn.Softmax(dim=1))
    x, y = torch.randn(32, 4, generator=gen), torch.randint(0, 2, (32,), generator=gen)
    check = doctor(model, lk.CrossEntropyLoss(), (x, y), overfit_steps=1)["output activation"]
    assert check.status == "fail" and "probabilities" in check.message


def test_a_tanh_head_with_targets_inside_its_range_passes(gen):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1), nn.Tanh())
    x = torch.randn(32, 4, generator=gen)
    y = 1.8 * torch.rand(32, 1, generator=gen) - 0.9  # in [-0.9, 0.9]
    check = doctor(model, lk.MSELoss(), (x, y), overfit_steps=1)["output activation"]
    assert check.status == "pass", check.message
    beyond = doctor(model, lk.MSELoss(), (x, y * 2), overfit_steps=1)["output activation"]
    assert beyond.status == "fail" and "[-1, 1]" in beyond.message


def test_a_softmax_head_cannot_reach_negative_regression_targets(gen):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.Softmax(dim=1))
    x, y = torch.randn(32, 4, generator=gen), torch.rand(32, 3, generator=gen) - 0.5
    check = doctor(model, lk.MSELoss(), (x, y), overfit_steps=1)["output activation"]
    assert check.status == "fail" and "[0, 1]" in check.message
