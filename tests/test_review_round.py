"""Defects an independent review found in this round, one test each (each failed before its fix).

Registry consumers (doctor, metrics, normalisation) on the new losses, CTC's padding frames, and
guardrail messages whose fix did not fit the shapes received.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn as nn

import losskit as lk
import losskit.functional as LF
from losskit.distributed import loss_sum_and_count
from losskit.metrics import infer_task, output_kind


def _ctc_batch():
    T, N, C = 6, 2, 4
    scores = torch.randn(T, N, C, generator=torch.Generator().manual_seed(0))
    lengths = torch.tensor([6, 3])
    pad = torch.arange(T)[:, None] >= lengths[None, :]  # (T, N) frames CTC never reads
    log_probs = scores.masked_fill(pad[..., None], float("-inf")).log_softmax(2)  # NaN there
    return log_probs, torch.tensor([[1, 2], [3, 1]]), lengths, torch.tensor([2, 2])


def test_ctc_nan_in_padding_frames_is_silent_and_matches_torch():
    log_probs, targets, il, tl = _ctc_batch()
    assert log_probs.isnan().any()
    with lk.checks("always"), warnings.catch_warnings():
        warnings.simplefilter("error", lk.LossWarning)
        ours = lk.CTCLoss()(log_probs, targets, il, tl)
    torch.testing.assert_close(ours, nn.CTCLoss()(log_probs, targets, il, tl))


def test_ctc_nan_in_a_frame_it_reads_still_raises():
    log_probs, targets, il, tl = _ctc_batch()
    log_probs = log_probs.clone()
    log_probs[1, 1, 0] = float("nan")  # frame 1 < length 3 of sample 1
    with lk.checks("always"), pytest.raises(lk.LossInputError, match="NaN"):
        lk.CTCLoss()(log_probs, targets, il, tl)


@pytest.mark.parametrize("lengths", [tuple, list])
def test_loss_sum_and_count_takes_ctc_lengths_as_sequences(lengths):
    log_probs = torch.randn(10, 3, 5).log_softmax(2)
    targets = torch.randint(1, 5, (3, 3))
    il, tl = lengths([10, 8, 5]), lengths([3, 2, 1])
    s, n = loss_sum_and_count(lk.CTCLoss(), log_probs, targets, il, tl)
    assert n.item() == 3
    torch.testing.assert_close(s / n, lk.CTCLoss()(log_probs, targets, il, tl))


def test_doctor_runs_losskit_checks_for_torchs_linear_cross_entropy():
    model = nn.Linear(4, 5)
    batch = (torch.randn(16, 4), torch.rand(16, 10))  # probability rows that do not sum to 1
    report = lk.doctor(model, nn.LinearCrossEntropyLoss(5, 10), batch)
    check = next(c for c in report.checks if c.name == "loss checks")
    assert check.status == "warn" and "class probabilities" in check.message


def test_no_metrics_on_hidden_states():
    loss = lk.LinearCrossEntropyLoss(16, 10)
    assert infer_task(loss, torch.tensor([1, 2])) is None
    assert output_kind(lk.CrossEntropyLoss()) == "logits"


def test_margin_ranking_refuses_unsigned_labels_that_cannot_hold_minus_one():
    x1, x2 = torch.randn(4), torch.randn(4)
    t = torch.tensor([1, 0, 1, 0], dtype=torch.uint8)
    with pytest.raises(lk.LossInputError, match=r"2 \* target.float\(\) - 1"):
        LF.margin_ranking_loss(x1, x2, t)
    fixed = 2 * t.float() - 1  # the suggested fix runs and gives torch's value on float labels
    torch.testing.assert_close(LF.margin_ranking_loss(x1, x2, fixed),
                               torch.nn.functional.margin_ranking_loss(x1, x2, fixed))


def test_a_zero_dim_cpu_target_beside_other_devices_is_a_scalar_as_in_torch():
    meta = torch.empty((), device="meta")
    torch.nn.functional.hinge_embedding_loss(meta, torch.tensor(1.0))  # torch accepts it
    with lk.checks("off"):
        LF.hinge_embedding_loss(meta, torch.tensor(1.0))


def test_device_fix_names_the_tensor_on_the_other_device():
    meta = torch.empty(4, device="meta")
    with pytest.raises(lk.LossInputError) as caught:
        LF.gaussian_nll_loss(torch.randn(4), torch.randn(4), meta)
    message = str(caught.value)
    assert "`var = var.to('cpu')`" in message and "target = target.to" not in message


def test_one_row_tensor_is_the_odd_one_not_the_batch():
    y = torch.tensor([1.0, -1, 1, -1])
    with pytest.raises(lk.LossInputError) as caught:
        LF.cosine_embedding_loss(torch.randn(1, 3), torch.randn(4, 3), y)
    fix = str(caught.value).split("Fix:")[1]
    assert "`input1`" in fix and "(4, 3)" in fix and "input1.expand_as(input2)" in fix


def test_zero_dim_reshape_fix_is_valid_python():
    from losskit.checks.ranking import _shape_fix

    fix = _shape_fix("target", torch.Size([1, 1]), torch.Size([]), "input1")
    assert fix == "`target = target.reshape(())`"
    torch.ones(1, 1).reshape(())  # the fix runs
    x1, x2, y = torch.randn(()), torch.randn(()), torch.ones(1, 1)
    with pytest.raises(RuntimeError) as caught:
        LF.margin_ranking_loss(x1, x2, y)
    assert "reshape()" not in str(caught.value)
    LF.margin_ranking_loss(x1.reshape(1, 1), x2.reshape(1, 1), y)  # the fix it names runs


def test_doctor_trains_and_checks_a_head_owned_by_the_loss():
    """A frozen backbone with a trainable LinearCrossEntropyLoss head (a linear probe) is a valid
    setup: fit trains the loss's parameters, so the doctor must not report 'no trainable
    parameters', and the caller's head must be left untouched."""
    g = torch.Generator().manual_seed(0)
    backbone = nn.Sequential(nn.Linear(4, 16), nn.Tanh()).requires_grad_(False)
    loss_fn = lk.LinearCrossEntropyLoss(16, 3)
    x = torch.randn(32, 4, generator=g)
    y = (x @ torch.randn(4, 3, generator=g)).argmax(1)
    before = {k: v.clone() for k, v in loss_fn.state_dict().items()}
    report = lk.doctor(backbone, loss_fn, (x, y))
    grads = next(c for c in report.checks if c.name == "gradients")
    assert grads.status == "pass", grads.message
    for k, v in loss_fn.state_dict().items():
        assert torch.equal(v, before[k])


class _Bigram(nn.Module):
    """Embedding then a linear head: no context, so it cannot fit a token followed by different
    next tokens (a healthy model all the same)."""

    def __init__(self, vocab: int = 50, dim: int = 32) -> None:
        super().__init__()
        self.emb, self.head = nn.Embedding(vocab, dim), nn.Linear(dim, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.emb(tokens)).transpose(1, 2)  # (B, V, T)


def _text():
    text = torch.randint(0, 50, (16, 33), generator=torch.Generator().manual_seed(0))
    return text[:, :-1], text[:, 1:]  # (B, T) tokens, (B, T) next tokens


def test_doctor_warns_not_fails_a_bigram_model_on_conflicting_next_tokens():
    torch.manual_seed(0)
    report = lk.doctor(_Bigram(), lk.CrossEntropyLoss(), _text())
    check = report["overfit one batch"]
    assert check.status == "warn", check.message
    assert "bigram" in check.message and "Fix:" in check.message and report.ok


def test_doctor_still_fails_a_bigram_model_that_cannot_learn():
    torch.manual_seed(0)
    check = lk.doctor(_Bigram(), lk.CrossEntropyLoss(), _text(), lr=0.0)["overfit one batch"]
    assert check.status == "fail", check.message


class _Detached(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.a(x).detach())  # `a` never gets a gradient


def _problem_setups():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=g)
    y = torch.randint(0, 3, (64,), generator=g)
    skewed = torch.where(torch.arange(64) < 60, 0, 1)  # 60 of one class, 4 of the other
    yield "softmax head", nn.Sequential(nn.Linear(4, 3), nn.Softmax(1)), lk.CrossEntropyLoss(), \
        (x, y), {}
    yield "sigmoid head", nn.Sequential(nn.Linear(4, 1), nn.Sigmoid()), lk.BCEWithLogitsLoss(), \
        (x, (y[:, None] > 0).float()), {}
    yield "lr 0", nn.Linear(4, 3), lk.CrossEntropyLoss(), (x, y), {"lr": 0.0}
    yield "frozen", nn.Linear(4, 3).requires_grad_(False), lk.CrossEntropyLoss(), (x, y), {}
    yield "detached", _Detached(), lk.CrossEntropyLoss(), (x, y), {}
    loud = nn.Linear(4, 3)
    with torch.no_grad():
        loud.weight.mul_(100)
    yield "overconfident init", loud, lk.CrossEntropyLoss(), (x, y), {}
    yield "imbalanced", nn.Linear(4, 2), lk.CrossEntropyLoss(), (x, skewed), {}
    x8 = torch.randn(8, 4, generator=g)
    yield "conflicting duplicates", nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, 3)), \
        lk.CrossEntropyLoss(), (torch.cat([x8, x8]), torch.cat([y[:8], (y[:8] + 1) % 3])), {}


def test_every_doctor_message_that_reports_a_problem_names_a_fix():
    seen = set()
    for name, model, loss_fn, batch, kwargs in _problem_setups():
        torch.manual_seed(0)
        report = lk.doctor(model, loss_fn, batch, **kwargs)
        problems = [c for c in report.checks if c.status != "pass"]
        assert problems, f"{name}: the doctor found nothing"
        for check in problems:
            seen.add(check.name)
            assert "Fix:" in check.message, f"{name} / {check.name}: {check.message}"
    assert {"output activation", "gradients", "overfit one batch", "loss at init",
            "class balance"} <= seen, seen
