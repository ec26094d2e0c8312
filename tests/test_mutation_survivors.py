"""Tests for the survivors of this session's sampled `make mutate` run (benchmarks/mutate.py),
each named after the mutation it kills."""

from __future__ import annotations

import importlib
import math
import warnings

import pytest
import torch
import torch.nn.functional as F

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


# ----------------------------------------------------------------------------------------------
# Issue 16: survivors of the seed-1 sample (benchmarks/mutation-triage.md)


def test_quantile_loss_default_is_half_the_absolute_error():
    """Kills the default `quantile=0.5` -> `-0.5` (regression.py:198). Hand value: q = 0.5 gives
    l = |y - x| / 2 = (0.5, 0, 1.5), mean 2/3."""
    x = torch.tensor([0.0, 1.0, 3.0], dtype=torch.float64)
    y = torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64)
    torch.testing.assert_close(LF.quantile_loss(x, y), torch.tensor(2 / 3, dtype=torch.float64))


def test_focal_loss_with_binary_targets_counts_every_element():
    """Kills `target.shape == input.shape` -> `!=` in `_count_focal` (classification.py:592):
    binary (same-shape float) targets count all N*C elements, as the loss's own mean does, also
    when `ignore_index` equals a target value (it applies to class indices only)."""
    x = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = (torch.arange(12, dtype=torch.float64).reshape(4, 3) % 2)
    loss = lk.FocalLoss(ignore_index=1)
    s, n = loss_sum_and_count(loss, x, y)
    assert float(n) == 12.0
    torch.testing.assert_close(s / n, loss(x, y))


def test_linear_cross_entropy_head_dtype_mismatch_names_the_weight():
    """Kills `"..." + (...)` -> `-` in `_check_head_dtype` (linear_cross_entropy.py:315): the
    mismatch is a LossRuntimeError naming `linear_weight` and its dtype, not a TypeError."""
    h = torch.randn(4, 3)
    w = torch.randn(5, 3, dtype=torch.float64)
    with pytest.raises(lk.LossRuntimeError, match=r"`linear_weight` torch.float64.*Fix:"):
        LF.linear_cross_entropy(h, w, torch.tensor([0, 1, 2, 3]))


def test_three_d_target_with_a_trailing_one_gets_the_squeeze_fix():
    """Kills `target.shape[-1:]` -> `[+1:]` in `_same_shape_fix` (checks:293): for a 3-D target
    (2, 3, 1) beside input (2, 3) the fix is `target.squeeze(-1)` (for 2-D the two agree)."""
    with pytest.raises((lk.LossInputError, lk.LossRuntimeError), match=r"target\.squeeze\(-1\)"):
        LF.mse_loss(torch.zeros(2, 3), torch.zeros(2, 3, 1))


def test_zero_d_cpu_tensor_beside_another_device_is_exempt():
    """Kills `v.dim() == 0` -> `== -1` (checks:250): a 0-d CPU tensor beside a tensor on another
    device (here "meta", so the test runs without a GPU) is a scalar for torch, not an error."""
    from losskit.checks import check_same_device

    check_same_device("mse_loss", input=torch.zeros(3, device="meta"), target=torch.tensor(1.0))
    with pytest.raises(lk.LossRuntimeError, match="different devices"):
        check_same_device("mse_loss", input=torch.zeros(3, device="meta"),
                          target=torch.tensor([1.0]))


def test_bce_probabilities_between_minus_one_and_zero_get_losskits_message():
    """Kills `input >= 0` -> `input >= -1` (checks:637): -0.5 is not a probability; losskit's
    own LossRuntimeError (with its fix) must speak, not torch's bare error."""
    with lk.checks("always"), pytest.raises(lk.LossRuntimeError, match=r"between 0 and 1.*Fix:"):
        LF.binary_cross_entropy(torch.tensor([-0.5, 0.5]), torch.tensor([0.0, 1.0]))


def test_unregistered_loss_counts_the_last_tensor_rows():
    """Kills `tensors[-1]` -> `tensors[+1]` (normalise.py:79): CTC (no mean_count) with
    concatenated 1-D targets: the count is the batch N = len(target_lengths) = 2, not the
    5 target symbols; loss_sum = mean * N (torch's CTCLoss as the oracle)."""
    g = torch.Generator().manual_seed(0)
    lp = torch.randn(6, 2, 4, generator=g, dtype=torch.float64).log_softmax(-1)
    targets = torch.tensor([1, 2, 3, 1, 2])
    il, tl = torch.tensor([6, 6]), torch.tensor([3, 2])
    ctc = torch.nn.CTCLoss()
    s, n = loss_sum_and_count(ctc, lp, targets, il, tl)
    assert float(n) == 2.0
    torch.testing.assert_close(s, torch.nn.functional.ctc_loss(lp, targets, il, tl) * 2)


def test_global_mean_without_averaged_grads_gives_the_mean_gradient():
    """Kills `else 1` -> `else 2` (normalise.py:176): on one process, grads_averaged=False scales
    the summed gradient by 1 / count; oracle: autograd of torch's mean MSE in float64."""
    from losskit.distributed import GlobalMean

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(5, dtype=torch.float64, generator=g), torch.randn(5, dtype=torch.float64,
                                                                        generator=g)
    w = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    gm = GlobalMean(torch.nn.MSELoss(), grads_averaged=False)
    gm(w * x, y).backward()
    gm.scale_grads_([w])
    (expected,) = torch.autograd.grad(torch.nn.functional.mse_loss(w * x, y), w)
    torch.testing.assert_close(w.grad, expected)


def test_resume_loss_text_names_settings_that_sort_before_class():
    """Kills `k != "class"` -> `k > "class"` (resume.py:72): SmoothL1Loss's `beta` sorts before
    "class" and must still be named in the resume message."""
    from losskit.train.resume import _loss_text, loss_signature

    new = loss_signature(torch.nn.SmoothL1Loss(beta=0.5))
    old = loss_signature(torch.nn.SmoothL1Loss(beta=1.0))
    assert _loss_text(new, old) == "SmoothL1Loss(beta=0.5)"


def test_resume_data_hash_limit_counts_bytes(monkeypatch):
    """Kills `numel() * element_size()` -> `+` (resume.py:99): with the limit set to 100 bytes,
    25 float32 values (100 bytes) are hashed and 26 (104 bytes) are not."""
    from torch.utils.data import TensorDataset

    from losskit.train import resume

    monkeypatch.setattr(resume, "_HASH_LIMIT", 100)
    assert resume.data_signature(TensorDataset(torch.zeros(25)))["sha1"] is not None
    assert resume.data_signature(TensorDataset(torch.zeros(26)))["sha1"] is None


def test_dtensor_cross_entropy_treats_negative_label_smoothing_as_torch_does(one_process_mesh):
    """Kills `max(label_smoothing, 0.0)` -> `max(..., -1.0)` (dtensor.py:283): torch ignores a
    negative label_smoothing; vocab-parallel logits must give torch's value (float64 oracle)."""
    from torch.distributed.tensor import Shard, distribute_tensor

    x = torch.randn(4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 4, 2, 1])
    sharded = distribute_tensor(x, one_process_mesh, [Shard(1)])
    torch.testing.assert_close(LF.cross_entropy(sharded, y, label_smoothing=-0.1),
                               torch.nn.functional.cross_entropy(x, y, label_smoothing=-0.1))


def test_dtensor_cross_entropy_takes_one_row_of_logits_sharded_on_dim_0(one_process_mesh):
    """Kills `input.dim() >= 2` -> `>= 1` (dtensor.py:247): (V,) logits with a 0-d target have
    their classes on dim 0, so Shard(0) is the vocab-parallel layout (torch as the oracle)."""
    from torch.distributed.tensor import Shard, distribute_tensor

    x = torch.randn(5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    sharded = distribute_tensor(x, one_process_mesh, [Shard(0)])
    torch.testing.assert_close(LF.cross_entropy(sharded, torch.tensor(3)),
                               torch.nn.functional.cross_entropy(x, torch.tensor(3)))


class _SqueezedSigmoidHead(torch.nn.Module):
    """The last leaf is a Sigmoid; forward reshapes its output (a new tensor, same values)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(10, 32), torch.nn.ReLU(),
                                       torch.nn.Linear(32, 1), torch.nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)  # (N,)


def test_doctor_blames_a_sigmoid_whose_output_is_only_reshaped(gen):
    """Kills `last.numel() == out.numel()` -> `!=` in `_last_layer` (doctor.py:569): a Sigmoid
    whose values are the model's output after a squeeze is the final activation; on 8 outputs
    only the layer can tell, so BCEWithLogitsLoss must fail the activation check."""
    torch.manual_seed(0)
    x, y = torch.randn(8, 10, generator=gen), torch.randint(0, 2, (8,), generator=gen).float()
    check = lk.doctor(_SqueezedSigmoidHead(), torch.nn.BCEWithLogitsLoss(), (x, y))[
        "output activation"]
    assert check.status == "fail"
    assert "Sigmoid" in check.message and "Fix:" in check.message


# Survivors of the fresh seed-1 sample (deterministic sampling, benchmarks/mutation-triage.md)


def test_poly1_with_epsilon_zero_and_label_smoothing_is_torchs_cross_entropy():
    """Kills `0.0 <= label_smoothing` -> `0.0 == label_smoothing` (classification.py:556):
    label_smoothing=0.1 is valid; with epsilon=0 Poly-1 is cross-entropy (torch, float64)."""
    x = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    y = torch.tensor([0, 2, 1, 1])
    torch.testing.assert_close(LF.poly1_cross_entropy(x, y, epsilon=0.0, label_smoothing=0.1),
                               torch.nn.functional.cross_entropy(x, y, label_smoothing=0.1))


@pytest.mark.parametrize("loss", ["poisson_nll_loss", "multilabel_soft_margin_loss"])
def test_inputs_on_two_devices_get_losskits_message(loss):
    """Kills `if not checks.on_one_device(...)` -> `if checks.on_one_device(...)`
    (likelihood.py:69, margin.py:100): input on "meta" (no GPU needed), target on the CPU."""
    with pytest.raises(lk.LossRuntimeError, match=r"different devices.*Fix:"):
        getattr(LF, loss)(torch.zeros(2, 3, device="meta"), torch.zeros(2, 3))


@pytest.mark.parametrize("chunk_size", [None, 2])  # the tiny-call path and the kernel's
def test_linear_cross_entropy_all_ignored_warns_for_mean_only(chunk_size):
    """Kills `reduction == "mean"` -> `!=` (linear_cross_entropy.py:235, the kernel path): every
    target ignored is a warning for "mean" (0 / 0) and a plain 0 for "sum" (torch, float64)."""
    h = torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    w = torch.randn(5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    y = torch.full((3,), -100)
    with lk.checks("always"):  # value checks on every call, whatever ran before
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            torch.testing.assert_close(
                LF.linear_cross_entropy(h, w, y, reduction="sum", chunk_size=chunk_size),
                torch.nn.functional.cross_entropy(h @ w.T, y, reduction="sum"))
        with pytest.warns(lk.LossWarning, match="ignore_index"):
            LF.linear_cross_entropy(h, w, y, reduction="mean", chunk_size=chunk_size)


def test_linear_cross_entropy_module_count_skips_minus_100():
    """Kills the default `ignore_index=-100` -> `-101` in `count_rows_or_targets`
    (linear_cross_entropy.py:402): targets of -100 are not counted."""
    loss = lk.LinearCrossEntropyLoss(4, 5, dtype=torch.float64)
    h = torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    y = torch.tensor([0, -100, 2])
    s, n = loss_sum_and_count(loss, h, y)
    assert float(n) == 2.0
    torch.testing.assert_close(s / n, loss(h, y))


def test_column_pos_weight_on_one_mask_channel_suggests_one_ratio():
    """Kills `c == 1` -> `c == 0` (checks:387): a (W,) pos_weight over (N, 1, H, W) logits is
    meant as one positive/negative ratio for the single channel."""
    x = torch.zeros(2, 1, 3, 4)
    with pytest.warns(lk.LossWarning, match=r"n_negative / n_positive"):
        LF.binary_cross_entropy_with_logits(x, torch.zeros_like(x), pos_weight=torch.ones(4))


def test_wrong_spatial_target_is_not_taken_for_classes_last_logits():
    """Kills `target.shape == input.shape[:-1]` -> `>=` (checks:512): (2, 3, 4) logits with a
    (2, 5) target are not "sequence logits with classes last"; the fix names dim 1."""
    with pytest.raises(lk.LossRuntimeError, match=r"shape without dim 1"):
        LF.cross_entropy(torch.zeros(2, 3, 4), torch.zeros(2, 5, dtype=torch.long))


def test_rows_are_judged_from_16_elements():
    """Kills `numel() < 16` -> `< 17` (checks:594): 8 rows of 2 probabilities (16 elements) are
    judged; 7 rows (14 elements) are too few."""
    from losskit.checks import rows_are_distributions

    assert rows_are_distributions(torch.full((8, 2), 0.5), 1)
    assert not rows_are_distributions(torch.full((7, 2), 0.5), 1)


def test_resume_signature_holds_small_buffers():
    """Kills `b.numel() <= 1024` -> `>=` (resume.py:87): a 2-class weight buffer is part of the
    loss's signature, so resuming with other class weights is caught."""
    from losskit.train.resume import loss_signature

    sig = loss_signature(torch.nn.CrossEntropyLoss(weight=torch.tensor([1.0, 2.0])))
    assert sig["weight"] == [1.0, 2.0]


def test_dtensor_linear_cross_entropy_takes_one_hidden_row(one_process_mesh):
    """Kills `input.shape[:-1]` -> `input.shape[:1]` (dtensor.py:215): a 1-D hidden vector with a
    0-d target has (V,) logits, checked as such; torch on the gathered head is the oracle."""
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    g = torch.Generator().manual_seed(6)
    h = torch.randn(4, dtype=torch.float64, generator=g)
    w = torch.randn(5, 4, dtype=torch.float64, generator=g)
    value = LF.linear_cross_entropy(distribute_tensor(h, one_process_mesh, [Replicate()]),
                                    distribute_tensor(w, one_process_mesh, [Shard(0)]),
                                    torch.tensor(3))
    torch.testing.assert_close(value, torch.nn.functional.cross_entropy(h @ w.T, torch.tensor(3)))


def test_binary_metrics_on_log_probabilities_equal_those_on_probabilities():
    """Kills `self.output == "log-probabilities"` -> `<` (metrics.py:192): for a binary task,
    log-probabilities are exponentiated (not passed through a sigmoid), so they give the same
    metrics as the probabilities themselves."""
    from losskit.metrics import TaskMetrics

    p = torch.tensor([0.9, 0.2, 0.7, 0.4, 0.6, 0.1])
    y = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 0.0])
    by_p, by_log = TaskMetrics("binary", output="probabilities"), TaskMetrics(
        "binary", output="log-probabilities")
    by_p.update(p, y)
    by_log.update(p.log(), y)
    got, expected = by_log.compute(), by_p.compute()
    assert got.keys() == expected.keys()
    for name in expected:
        assert got[name] == pytest.approx(expected[name], rel=1e-5, abs=1e-6), name


class _ShiftedInTraining(torch.nn.Module):
    """out = w x - 10 in train mode, w x - c in eval mode: train mode never fits, eval mode fits
    once w is far enough."""

    def __init__(self, c: float) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.c = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w * x - (10.0 if self.training else self.c)


def _hand_adam_w(steps: int, lr: float) -> float:
    """w after ``steps`` Adam updates (torch's defaults) on L(w) = (w - 11)^2 from w = 0."""
    w = m = v = 0.0
    for t in range(1, steps + 1):
        g = 2 * (w - 11.0)
        m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
        w -= lr * (m / (1 - 0.9**t)) / (math.sqrt(v / (1 - 0.999**t)) + 1e-8)
    return w


@pytest.mark.parametrize(("steps", "status"), [(4, "fail"), (5, "pass")])
def test_doctor_overfit_eval_retry_sees_exactly_the_steps_taken(steps, status):
    """Kills `step == steps` -> `step > steps` (doctor.py:930), which takes one more Adam step
    before the eval-mode retry. x = y = 1, MSE: the first (train-mode) loss is 121, the floor 0,
    so the goal is 12.1; in eval mode the loss is (w - 1 - c)^2 <= 12.1 once
    w >= 1 + c - sqrt(12.1). c puts that threshold half-way between w after 4 and after 5 hand
    Adam updates (lr 0.5): 4 steps must fail, 5 must pass in eval mode."""
    lr = 0.5
    c = (_hand_adam_w(4, lr) + _hand_adam_w(5, lr)) / 2 + math.sqrt(12.1) - 1
    x = y = torch.ones(4, 1)
    check = lk.doctor(_ShiftedInTraining(c), torch.nn.MSELoss(), (x, y), overfit_steps=steps,
                      lr=lr)["overfit one batch"]
    assert check.status == status, check.message
    assert ("(eval mode)" in check.message) == (status == "pass")


def test_tiny_linear_cross_entropy_call_returns_the_lse_when_asked():
    """Kills `not return_lse` -> `return_lse` in `_small_plain_call` (linear_cross_entropy.py:265):
    a tiny CPU call with return_lse=True must not take the small path, which has no lse to give;
    torch's cross_entropy and logsumexp on the float64 logits are the oracle."""
    g = torch.Generator().manual_seed(7)
    h = torch.randn(3, 4, dtype=torch.float64, generator=g)
    w = torch.randn(5, 4, dtype=torch.float64, generator=g)
    y = torch.tensor([0, 4, 2])
    loss, lse = LF.linear_cross_entropy(h, w, y, return_lse=True)
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(h @ w.T, y))
    torch.testing.assert_close(lse.double(), torch.logsumexp(h @ w.T, dim=1), rtol=1e-6, atol=1e-6)


# Seed 2 (benchmarks/mutation-triage.md, "Seed 2 (triaged)"): fresh survivors.


@pytest.mark.parametrize("reduction", ["avg", "batchmean"])  # both sort before "elementwise_mean"
def test_weighted_regression_with_an_unknown_reduction_is_told_the_valid_ones(reduction):
    """Kills `reduction == "elementwise_mean"` -> `<=` (regression.py, weighted reductions): an
    unknown string gets the "not a valid value" message (torch: ValueError), not the message
    about the deprecated alias."""
    x = torch.zeros(3)
    with pytest.raises(ValueError, match="not a valid value"):
        LF.mse_loss(x, x, weight=torch.ones(3), reduction=reduction)
    with pytest.raises(ValueError, match="Invalid reduction"):  # torch refuses it too
        torch.nn.functional.mse_loss(x, x, weight=torch.ones(3), reduction=reduction)


def test_binary_pos_weight_alone_on_another_device_gets_losskits_message():
    """Kills `or (pos_weight ... device != device)` -> `and` (binary.py): input, target and
    weight on the CPU, only pos_weight on "meta" (no GPU needed)."""
    x = torch.zeros(2, 3)
    with pytest.raises(lk.LossRuntimeError, match=r"different devices.*pos_weight.*Fix:"):
        LF.binary_cross_entropy_with_logits(x, x.clone(), weight=torch.ones(3),
                                            pos_weight=torch.ones(3, device="meta"))


def test_multi_margin_target_longer_than_the_batch_gets_losskits_message():
    """Kills `target.shape[0] == input.shape[0]` -> `>=` in multi_margin_loss's fast-path
    predicate (margin.py): 4 labels for 3 rows is refused with a fix (torch: RuntimeError)."""
    with pytest.raises(RuntimeError, match=r"one class index per sample.*Fix:"):
        LF.multi_margin_loss(torch.zeros(3, 4), torch.zeros(4, dtype=torch.long))


def test_tiny_linear_cross_entropy_keeps_a_negative_z_loss_scale():
    """Kills `lse_square_scale == 0.0` -> `== -1.0` in linear_cross_entropy's tiny-call
    predicate: a tiny call with lse_square_scale=-1 must not take the plain-CE small path. Oracle:
    float64 cross-entropy of h W^T plus s * mean(logsumexp^2), by formula."""
    g = torch.Generator().manual_seed(5)
    h = torch.randn(3, 4, dtype=torch.float64, generator=g)
    w = torch.randn(5, 4, dtype=torch.float64, generator=g)
    y = torch.tensor([0, 4, 2])
    z = h @ w.T  # (3, 5)
    want = torch.nn.functional.cross_entropy(z, y) - (torch.logsumexp(z, dim=1) ** 2).mean()
    torch.testing.assert_close(LF.linear_cross_entropy(h, w, y, lse_square_scale=-1.0), want)


def test_unregistered_loss_of_one_tensor_counts_its_rows():
    """Kills `else tensors[0]` -> `else tensors[1]` (normalise.py): a loss of the prediction
    alone (a regulariser) is counted by the rows of that one tensor: N = 4, and loss_sum =
    mean * 4 by hand."""
    x = torch.arange(12.0, dtype=torch.float64).reshape(4, 3)
    s, n = loss_sum_and_count(lambda t: t.pow(2).mean(), x)
    assert float(n) == 4.0
    torch.testing.assert_close(s, x.pow(2).sum() / 12 * 4)


def test_dtensor_vocab_parallel_cross_entropy_refuses_a_positive_z_loss(one_process_mesh):
    """Kills `lse_square_scale != 0` -> `< 0` (dtensor.py): the vocab-parallel path has no
    z-loss, so lse_square_scale=1e-2 with logits sharded over the classes is refused with a fix,
    not silently dropped."""
    from torch.distributed.tensor import Shard, distribute_tensor

    x = torch.randn(4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    sharded = distribute_tensor(x, one_process_mesh, [Shard(1)])
    with pytest.raises(lk.LossInputError, match=r"lse_square_scale.*Fix:"):
        LF.cross_entropy(sharded, torch.tensor([0, 4, 2, 1]), lse_square_scale=1e-2)


class _Identity(torch.nn.Module):
    """out = w x with w = 1: fits y = x exactly before any step."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w * x


def test_doctor_overfit_met_exactly_at_the_goal_needs_no_eval_retry():
    """Kills `losses[-1] > goal` -> `>=` (doctor.py, the eval-mode retry): x = y = 1 and MSE give
    loss 0 = floor = goal at step 0, a fit in train mode; the report must not say
    "(eval mode)"."""
    x = torch.ones(4, 1)
    check = lk.doctor(_Identity(), torch.nn.MSELoss(), (x, x.clone()))["overfit one batch"]
    assert check.status == "pass", check.message
    assert "in 0 steps" in check.message and "(eval mode)" not in check.message, check.message


def test_doctor_init_warning_for_regression_blames_the_targets():
    """Kills `if family in _REGRESSION` -> `if not ...` (doctor.py, the init-loss fix): targets
    around 100 and an output of 0 give loss ~ 1e4 against Var(y) = 1.25; the fix is to
    standardise the targets, not to shrink over-confident logits."""
    model = torch.nn.Linear(1, 1)
    torch.nn.init.zeros_(model.weight)
    torch.nn.init.zeros_(model.bias)
    x, y = torch.ones(4, 1), 100 + torch.arange(4.0).unsqueeze(1)
    check = lk.doctor(model, torch.nn.MSELoss(), (x, y))["loss at init"]
    assert check.status == "warn", check.message
    assert "standardise the targets" in check.message and "over-confident" not in check.message


def test_doctor_overfit_floor_with_label_smoothing_is_the_smoothed_entropy():
    """Kills `1 - eps + eps / c` -> `1 - eps * eps / c` (doctor.py, the ideal logits of label-
    smoothed cross-entropy): the lowest reachable loss is the entropy of the smoothed one-hot
    q = (1 - eps + eps/C, eps/C, ...), by hand 0.588 for eps = 0.2, C = 4."""
    eps, c = 0.2, 4
    a, b = 1 - eps + eps / c, eps / c
    floor = -(a * math.log(a) + (c - 1) * b * math.log(b))
    torch.manual_seed(0)
    check = lk.doctor(torch.nn.Linear(4, 4), torch.nn.CrossEntropyLoss(label_smoothing=eps),
                      (torch.eye(4), torch.arange(4)))["overfit one batch"]
    assert f"(floor {floor:.3g})" in check.message, check.message


def test_resume_on_more_ranks_with_the_same_global_batch_passes_the_settings_check():
    """Kills `stored world_size != new world_size` -> `>` (resume.py): 8 per rank on 1 rank
    resumed as 4 per rank on 2 ranks is the same global batch of 8, so it must pass; 3 per rank
    on 2 ranks (global 6) must not."""
    from losskit.train import resume

    stored = {"batch_size": 8, "world_size": 1}
    resume.check_settings(stored, {"batch_size": 4, "world_size": 2}, "out")
    with pytest.raises(resume.ResumeMismatchError, match="global batch of 6"):
        resume.check_settings(stored, {"batch_size": 3, "world_size": 2}, "out")


def test_resume_loss_signature_leaves_out_reduction_and_module_state():
    """Kills `k.startswith("_") or k in (...)` -> `and` (resume.py): the signature of an MSELoss
    is its class alone, whatever its reduction (fit reduces itself), with no `training` flag or
    private Module attribute."""
    from losskit.train import resume

    want = {"class": "MSELoss"}
    assert resume.loss_signature(torch.nn.MSELoss()) == want
    assert resume.loss_signature(torch.nn.MSELoss(reduction="sum")) == want


# Seed 3 (benchmarks/mutation-triage.md, "Seed 3"): fresh survivors.


def test_linear_cross_entropy_count_of_one_unbatched_soft_target_is_one():
    """Kills `target.dim() - 1` -> `target.dim() * 1` in the linear+CE count (a (C,) target
    would be read at shape[1]): one (D,) hidden vector with (C,) probabilities is one term;
    loss_sum is -sum q log softmax(W h) in float64 by hand."""
    torch.manual_seed(0)
    module = lk.LinearCrossEntropyLoss(4, 5).double()
    h = torch.randn(4, dtype=torch.float64)
    q = torch.softmax(torch.randn(5, dtype=torch.float64), 0)
    s, n = loss_sum_and_count(module, h, q)
    assert float(n) == 1.0
    want = -(q * torch.log_softmax(module.linear.weight @ h, 0)).sum()
    torch.testing.assert_close(s.detach(), want)


def test_logits_all_above_a_half_are_not_taken_for_sigmoid_output():
    """Kills `lo < 0.5` -> `lo != 0.5` in check_not_sigmoid_output: 16 logits all in
    [0.6, 0.9] lie in [0, 1] but not on both sides of 0.5 (a head biased near 0.75), so no
    warning."""
    x = torch.linspace(0.6, 0.9, 16)
    with lk.checks("always"), warnings.catch_warnings():
        warnings.simplefilter("error")
        LF.binary_cross_entropy_with_logits(x, torch.ones(16))
    with lk.checks("always"), pytest.warns(lk.LossWarning, match="sigmoid"):  # across 0.5: warns
        LF.binary_cross_entropy_with_logits(torch.linspace(0.1, 0.9, 16), torch.ones(16))


def test_error_message_counts_one_bad_element_in_the_singular():
    """Kills `'s' * (count != 1)` -> `(count != 0)` in the checks' "where" helper: one label out
    of range reads "(1 such element)", two read "(2 such elements)"."""
    with lk.checks("always"):
        with pytest.raises(IndexError, match=r"\(1 such element\)"):
            LF.cross_entropy(torch.zeros(2, 3), torch.tensor([0, 5]))
        with pytest.raises(IndexError, match=r"\(2 such elements\)"):
            LF.cross_entropy(torch.zeros(2, 3), torch.tensor([7, 5]))


def test_resume_signature_leaves_out_a_buffer_of_1025_elements():
    """Kills `b.numel() <= 1024` -> `<= 1025` (resume.py): 1024 class weights are part of the
    signature, 1025 are left out (large buffers are not compared)."""
    from losskit.train.resume import loss_signature

    assert len(loss_signature(torch.nn.CrossEntropyLoss(weight=torch.ones(1024)))["weight"]) == 1024
    assert "weight" not in loss_signature(torch.nn.CrossEntropyLoss(weight=torch.ones(1025)))


def test_doctor_overfit_floor_of_a_cross_entropy_function_without_smoothing_is_zero():
    """Kills the default `getattr(loss_fn, "label_smoothing", 0.0)` -> `1.0` (doctor.py): a loss
    given as a function has no label_smoothing attribute and smooths nothing, so four distinct
    rows can reach loss 0: no "(floor ...)" in the report (the mutant's uniform q gives ln 4)."""
    torch.manual_seed(0)
    check = lk.doctor(torch.nn.Linear(4, 4), LF.cross_entropy,
                      (torch.eye(4), torch.arange(4)))["overfit one batch"]
    assert "floor" not in check.message, check.message


@pytest.mark.parametrize("target", [torch.tensor(1.0), torch.ones(3), torch.ones(3, 1)])
def test_metrics_task_of_a_binary_loss_is_binary_for_a_0d_1d_or_column_target(target):
    """Kills `target.dim() <= 1` -> `== 1` in infer_task (metrics.py): a 0-d target (one
    sample) is binary too, not an IndexError from its shape[-1]."""
    from losskit.metrics import infer_task

    assert infer_task(lk.BCEWithLogitsLoss(), target) == "binary"


def test_resume_hashes_tensor_datasets_up_to_1_gib() -> None:
    """``data_signature`` hashes tensor datasets of at most 1 GiB (its docstring): a 512 MiB
    dataset and one byte is still hashed, so a resumed run notices changed rows; one byte over
    1 GiB is compared by its row count only. Expanded tensors cost no memory until hashed; the
    512 MiB one is hashed (about 1 s and 1 GiB of memory for the copies)."""
    from torch.utils.data import TensorDataset

    from losskit.train import resume

    byte = torch.zeros(1, dtype=torch.uint8)
    over = TensorDataset(byte.expand((1 << 30) + 1))
    assert resume.data_signature(over)["sha1"] is None
    half = TensorDataset(byte.expand((1 << 29) + 1))
    assert resume.data_signature(half)["sha1"] is not None


@pytest.mark.parametrize("excess,reported", [(1e-6, False), (1e-3, True)])
def test_doctor_conflict_tolerance_is_relative_to_a_large_floor(excess, reported) -> None:
    """doctor.py's overfit floor: duplicated inputs with different targets raise the floor only
    when the shared-ideal loss exceeds the plain floor by more than 1e-6 of the floor's size
    (rounding otherwise). Floor 100 (MSE + 100, float64): rows 0 and 1 share an input, their
    targets differ by d, so the shared ideal (their mean) adds 2 (d/2)^2 / 4 = d^2 / 8 to the
    mean: 1e-6 (below 1e-4, kept as rounding) or 1e-3 (reported as a conflict)."""
    doctor = importlib.import_module("losskit.doctor")
    d = math.sqrt(8 * excess)
    target = torch.tensor([0.0, d, 1.0, 2.0], dtype=torch.float64)
    inputs = torch.tensor([[0.0], [0.0], [1.0], [2.0]], dtype=torch.float64)

    def loss_fn(x, y):
        return F.mse_loss(x, y) + 100.0

    floor, words = doctor._floors("mse", torch.zeros(4, dtype=torch.float64), inputs, target,
                                  loss_fn)
    if reported:
        assert floor == pytest.approx(100.0 + excess, rel=1e-12)
        assert "identical inputs but different targets (rows 0, 1)" in words
    else:
        assert (floor, words) == (100.0, "")


@pytest.mark.parametrize("fn", [LF.cross_entropy, LF.nll_loss])
def test_only_an_n_by_1_class_target_is_told_to_squeeze(fn):
    """Issue 16, seed 4 (checks `target.shape == (N, 1)`): a (5, 1) target for 4 samples is a
    batch mismatch (torch's ValueError names both sizes), a (4, 2) target is not one index per
    sample; neither is fixed by `squeeze(1)`. A (4, 1) target is."""
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"batch_size \(4\) to match target batch_size \(5\)"):
        fn(x, torch.zeros(5, 1, dtype=torch.long))
    with pytest.raises(RuntimeError) as info:
        fn(x, torch.zeros(4, 2, dtype=torch.long))
    assert "squeeze" not in str(info.value) and "expected target size [4]" in str(info.value)
    with pytest.raises(RuntimeError, match=r"target = target.squeeze\(1\)"):
        fn(x, torch.zeros(4, 1, dtype=torch.long))


def test_loss_sum_and_count_counts_one_0d_sample_of_an_unknown_loss():
    """Issue 16, seed 4 (normalise: a 0-d last tensor counts as a batch of 1): a loss losskit
    does not know, on one 0-d sample, is its own sum over a count of 1."""
    x, y = torch.tensor(2.0), torch.tensor(0.5)
    loss_sum, count = loss_sum_and_count(lambda a, b: (a - b) ** 2, x, y)
    assert count == 1 and loss_sum == 2.25  # (2 - 0.5)^2 by hand


def test_loss_sum_and_count_calls_a_mean_module_with_a_read_only_reduction_as_it_is():
    """Issue 16, seed 4 (normalise: only a Module whose reduction is not "mean" is copied with
    reduction="mean"): a wrapper Module that shows its inner loss's reduction read-only and
    already means "mean" is called as it is (setting its reduction would raise)."""

    class Wrapped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = torch.nn.MSELoss()

        @property
        def reduction(self) -> str:
            return self.inner.reduction

        def forward(self, a, b):
            return self.inner(a, b)

    x, y = torch.tensor([1.0, 2.0, 4.0]), torch.tensor([0.0, 2.0, 2.0])
    loss_sum, count = loss_sum_and_count(Wrapped(), x, y)
    assert count == 3 and loss_sum == pytest.approx(5.0)  # mean (1 + 0 + 4) / 3, times 3


def test_resume_on_another_world_size_still_checks_the_settings_after_batch_size():
    """Issue 16, seed 4 (resume.py: the matching global batch `continue`s to the next key,
    it does not end the loop): 8 x 2 ranks resumed as 16 x 1 rank passes batch_size, and a
    changed grad_accum_steps after it is still refused."""
    from losskit.train import resume

    stored = {"batch_size": 8, "world_size": 2, "grad_accum_steps": 1}
    new = {"batch_size": 16, "world_size": 1, "grad_accum_steps": 4}
    with pytest.raises(resume.ResumeMismatchError) as info:
        resume.check_settings(stored, new, "out")
    assert info.value.setting == "grad_accum_steps"


def test_resume_of_a_checkpoint_without_world_size_on_one_rank_compares_batches_plainly():
    """Issue 16, seed 4 (resume.py: a checkpoint that predates `world_size` ran on 1 rank):
    resumed on 1 rank, a new batch_size is the plain mismatch, not a global-batch one."""
    from losskit.train import resume

    with pytest.raises(resume.ResumeMismatchError) as info:
        resume.check_settings({"batch_size": 8}, {"batch_size": 16, "world_size": 1}, "out")
    assert "batch_size=16 but the run in out used batch_size=8" in str(info.value)
    assert "rank" not in str(info.value)


def test_resume_new_lr_scales_each_group_by_new_over_old():
    """Issue 16, seed 4 (resume.apply_new_lr): groups at 0.1 and 0.01 (a per-group rate), old
    0.1, new 0.2: each rate doubles (0.2, 0.02, by hand); from old 0 every group gets new."""
    from losskit.train import resume

    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [a], "lr": 0.1}, {"params": [b], "lr": 0.01}])
    resume.apply_new_lr(opt, None, 0.1, 0.2)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.2, 0.02], rel=1e-12)
    resume.apply_new_lr(opt, None, 0.0, 0.3)
    assert [g["lr"] for g in opt.param_groups] == [0.3, 0.3]
