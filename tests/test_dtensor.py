"""DTensor arguments to the cross-entropy losses: FSDP2-sharded heads and tensor parallelism.

One 2-process gloo group on 127.0.0.1 (tests/_dtensor_workers.py, started by
``_dist_workers.spawn``) runs every scenario once; each test compares one scenario with a
single-process float64 oracle written here with ``torch.nn.functional`` alone.
"""

from __future__ import annotations

import _dist_workers as W
import _dtensor_workers as D
import pytest
import torch
import torch.nn.functional as F

import losskit.functional as LF
from losskit.losses._common import holds_dtensor


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> dict[int, dict]:
    out = tmp_path_factory.mktemp("dtensor")
    W.spawn(D.run_all, 2, str(out))
    return {r: torch.load(out / f"rank{r}.pt", weights_only=False) for r in (0, 1)}


def _one_process_step(kind: str) -> tuple[dict[str, torch.Tensor], dict[int, torch.Tensor]]:
    """The oracle: one SGD step of one process on the whole 8-row batch, in float64.

    Returns the parameters after the step and each rank's rows' loss before it.
    """
    p = {n: t.double().requires_grad_() for n, t in D.initial_params(kind).items()}
    prefix = "head." if kind == "function" else "loss.linear."
    x, y = D.step_batch()
    hidden = torch.tanh(F.linear(x.double(), p["body.0.weight"], p["body.0.bias"]))
    logits = F.linear(hidden, p[prefix + "weight"], p[prefix + "bias"])
    F.cross_entropy(logits, y).backward()
    after = {n: (t - D.LR * t.grad).detach() for n, t in p.items()}
    per_rank = {r: F.cross_entropy(logits[rows], y[rows]).detach() for r, rows in D.ROWS.items()}
    return after, per_rank


@pytest.mark.parametrize("kind", ["function", "module"])
def test_fsdp2_step_with_the_fused_head_equals_one_process(ranks, kind):
    """kind="function": LF.linear_cross_entropy given the FSDP2-sharded head (a DTensor read
    outside the head's forward); kind="module": lk.LinearCrossEntropyLoss under fully_shard."""
    after, per_rank = _one_process_step(kind)
    for r in (0, 1):
        got = ranks[r]["fsdp"][kind]
        assert got["head_was_dtensor"]  # the layout that failed inside torch before
        torch.testing.assert_close(got["loss"].double(), per_rank[r], rtol=1e-5, atol=1e-6)
        assert got["params"].keys() == after.keys()
        for name, expected in after.items():
            torch.testing.assert_close(got["params"][name].double(), expected, rtol=1e-5,
                                       atol=1e-6, msg=f"rank {r}, {name}")


def test_fsdp2_step_with_a_tied_head_equals_one_process(ranks):
    """The embedding's weight is the head: FSDP2 reduce-scatters the embedding's gradient and
    losskit the head's, into the same sharded parameter."""
    p = {n: t.double().requires_grad_() for n, t in D.initial_params("tied").items()}
    tokens, y = D.tied_batch()
    hidden = torch.tanh(F.linear(p["embed.weight"][tokens], p["block.weight"], p["block.bias"]))
    logits = hidden @ p["embed.weight"].T  # (8, V)
    F.cross_entropy(logits, y).backward()
    for r in (0, 1):
        got = ranks[r]["fsdp_tied"]
        expected_loss = F.cross_entropy(logits[D.ROWS[r]], y[D.ROWS[r]])
        torch.testing.assert_close(got["loss"].double(), expected_loss.detach(), rtol=1e-5,
                                   atol=1e-6)
        for name, t in p.items():
            torch.testing.assert_close(got["params"][name].double(), (t - D.LR * t.grad).detach(),
                                       rtol=1e-5, atol=1e-6, msg=f"rank {r}, {name}")


def test_fsdp2_bfloat16_params_need_the_loss_module(ranks):
    """MixedPrecisionPolicy casts parameters inside forwards only: the head read outside stays
    float32 (losskit names the dtype clash); the loss Module's forward gets bfloat16."""
    _, per_rank = _one_process_step("module")
    for r in (0, 1):
        error = ranks[r]["fsdp_bfloat16"]["function"]["error"]
        assert error.startswith("LossRuntimeError") and "torch.bfloat16" in error
        assert "Fix:" in error
        got = ranks[r]["fsdp_bfloat16"]["module"]
        assert got["dtype"] == "torch.bfloat16"
        torch.testing.assert_close(got["loss"].double(), per_rank[r], rtol=2e-2, atol=0)


def test_fsdp2_step_oracle_moves_every_parameter():
    """The step is big enough that a missing or unaveraged gradient would fail the test above."""
    after, _ = _one_process_step("function")
    for name, before in D.initial_params("function").items():
        assert (after[name] - before.double()).abs().max() > 1e-3, name


def test_tensor_parallel_head_equals_the_full_head_without_gathering_it(ranks):
    hidden, weight, bias, target = (t.requires_grad_() if t.is_floating_point() else t
                                    for t in D.tp_batch())
    loss = F.cross_entropy(hidden @ weight.T + bias, target, label_smoothing=0.1)
    loss.backward()
    for r in (0, 1):
        got = ranks[r]["tp_head"]
        torch.testing.assert_close(got["loss"], loss.detach())
        torch.testing.assert_close(got["hidden"], hidden.grad)
        torch.testing.assert_close(got["weight"], weight.grad)
        torch.testing.assert_close(got["bias"], bias.grad)
        assert got["weight_placements"] == ("S(0)",)  # the gradient stays sharded
        assert got["shards_seen"] == [(6 if r == 0 else 5, D.FEATURES)]  # the rank's rows only
        assert got["gathered"] == []  # no full_tensor() of anything


@pytest.mark.parametrize("index", range(len(D.LOGITS_CASES)),
                         ids=[f"{c['shape']}-{c['reduction']}" for c in D.LOGITS_CASES])
def test_logits_sharded_over_the_vocabulary_equal_cross_entropy_on_gathered_logits(ranks, index):
    case = D.LOGITS_CASES[index]
    logits, target, upstream = D.logits_batch(case["shape"], case["ignore_index"])
    full = logits.clone().requires_grad_()
    expected = F.cross_entropy(full, target, ignore_index=case["ignore_index"],
                               reduction=case["reduction"],
                               label_smoothing=case["label_smoothing"])
    ((expected * upstream).sum() if case["reduction"] == "none" else expected).backward()
    for r in (0, 1):
        got = ranks[r]["logits"][index]
        torch.testing.assert_close(got["loss"], expected.detach())
        torch.testing.assert_close(got["grad"], full.grad)
        assert got["local_columns"] == (6 if r == 0 else 5)


def test_replicated_logits_run_locally(ranks):
    logits, target, _ = D.logits_batch((6, D.VOCAB), -100)
    full = logits.clone().requires_grad_()
    expected = F.cross_entropy(full, target)
    expected.backward()
    for r in (0, 1):
        torch.testing.assert_close(ranks[r]["replicated_logits"]["loss"], expected.detach())
        torch.testing.assert_close(ranks[r]["replicated_logits"]["grad"], full.grad)


@pytest.mark.parametrize(
    ("attempt", "expected"),
    [
        ("row-parallel head", "`linear_weight` is a DTensor with placements (S(1))"),
        ("plain head", "`linear_weight` is a plain tensor"),
        ("class weight", "got `weight` with a vocab-parallel (DTensor) input"),
        ("logits sharded by rows", "is a DTensor with placements (S(0)) on a mesh of shape (2,)"),
    ],
)
def test_unsupported_layouts_raise_loss_input_error_naming_the_fix(ranks, attempt, expected):
    for r in (0, 1):
        message = ranks[r]["unsupported"][attempt]
        assert message is not None and message.startswith("LossInputError")
        assert expected in message and "Fix:" in message


def test_plain_tensors_are_not_dtensors():
    """One process: the DTensor check is off the plain path and costs no import."""
    assert not holds_dtensor(torch.zeros(2), None, torch.tensor([1]))
    h, w, y = torch.randn(3, 4), torch.randn(5, 4), torch.tensor([0, 4, 2])
    torch.testing.assert_close(LF.linear_cross_entropy(h, w, y), F.cross_entropy(h @ w.T, y))
