"""losskit.distributed: global loss normalisation and vocab-parallel cross-entropy.

Single-process tests check ``loss_sum_and_count`` against hand-derived sums and counts. The
2-process tests spawn one gloo group on 127.0.0.1 (tests/_dist_workers.py) that runs every
distributed scenario once; each test compares one scenario with a single-process float64 oracle
built here from ``torch.nn.functional`` alone.
"""

from __future__ import annotations

import _dist_workers as W
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import losskit as lk
from losskit import distributed as lkd
from losskit.distributed.vocab_parallel import _VocabParallelCrossEntropy

# ----------------------------------------------------------------------------------------------
# loss_sum_and_count, one process: sums written out from the formulas, counts by hand

X = torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0], [2.0, 2.0, 2.0], [-1.0, 0.0, 4.0]],
                 dtype=torch.float64)  # (4, 3) logits
Y = torch.tensor([2, -100, 0, 1])  # one ignored
CW = torch.tensor([0.5, 2.0, 3.0], dtype=torch.float64)


def _nll_rows(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """-log softmax(x)[y] per row, with 0 for ignored rows, written with logsumexp."""
    lse = x.exp().sum(1).log()
    picked = x.gather(1, y.clamp_min(0)[:, None]).squeeze(1)
    return torch.where(y != -100, lse - picked, torch.zeros_like(lse))


@pytest.mark.parametrize("mod", [nn, lk], ids=["torch.nn", "losskit"])
def test_count_cross_entropy_class_indices(mod):
    s, n = lkd.loss_sum_and_count(mod.CrossEntropyLoss(), X, Y)
    assert n.item() == 3  # rows 0, 2, 3
    torch.testing.assert_close(s, _nll_rows(X, Y).sum())

    s, n = lkd.loss_sum_and_count(mod.CrossEntropyLoss(weight=CW), X, Y)
    assert n.item() == 3.0 + 0.5 + 2.0  # w[2] + w[0] + w[1]
    torch.testing.assert_close(s, (CW[Y.clamp_min(0)] * _nll_rows(X, Y)).sum())


@pytest.mark.parametrize("mod", [nn, lk], ids=["torch.nn", "losskit"])
def test_count_cross_entropy_label_smoothing_keeps_the_denominator(mod):
    eps = 0.2
    loss_fn = mod.CrossEntropyLoss(weight=CW, label_smoothing=eps)
    s, n = lkd.loss_sum_and_count(loss_fn, X, Y)
    logp = X.log_softmax(1)
    kept = Y != -100
    smooth = -(CW * logp).sum(1)  # sum_c w_c (-log p_c)
    rows = (1 - eps) * CW[Y.clamp_min(0)] * _nll_rows(X, Y) + eps / 3 * smooth
    assert n.item() == 5.5
    torch.testing.assert_close(s, rows[kept].sum())
    torch.testing.assert_close(s / n, F.cross_entropy(X, Y, weight=CW, label_smoothing=eps))


@pytest.mark.parametrize("mod", [nn, lk], ids=["torch.nn", "losskit"])
def test_count_cross_entropy_probabilities_counts_rows(mod):
    x = X.reshape(2, 2, 3).transpose(1, 2)  # (N=2, C=3, d=2): 4 rows
    q = torch.softmax(torch.ones_like(x) + x.flip(0), dim=1)
    s, n = lkd.loss_sum_and_count(mod.CrossEntropyLoss(weight=CW), x, q)
    assert n.item() == 4
    torch.testing.assert_close(s, -(CW[None, :, None] * q * x.log_softmax(1)).sum())


@pytest.mark.parametrize("mod", [nn, lk], ids=["torch.nn", "losskit"])
def test_count_nll_loss_weighted(mod):
    logp = X.log_softmax(1)
    s, n = lkd.loss_sum_and_count(mod.NLLLoss(weight=CW), logp, Y)
    assert n.item() == 5.5
    torch.testing.assert_close(s, -(CW[Y[Y >= 0]] * logp[Y >= 0, Y[Y >= 0]]).sum())


@pytest.mark.parametrize("mod", [nn, lk], ids=["torch.nn", "losskit"])
@pytest.mark.parametrize(
    ("name", "kwargs", "per_element"),
    [
        ("MSELoss", {}, lambda d: d**2),
        ("L1Loss", {}, lambda d: d.abs()),
        ("HuberLoss", {"delta": 0.5}, lambda d: torch.where(d.abs() < 0.5, d**2 / 2,
                                                            0.5 * (d.abs() - 0.25))),
        ("SmoothL1Loss", {"beta": 0.5}, lambda d: torch.where(d.abs() < 0.5, d**2 / 1.0,
                                                              d.abs() - 0.25)),
    ],
)
def test_count_regression_losses_count_elements(mod, name, kwargs, per_element):
    target = X.flip(1) * 0.5
    s, n = lkd.loss_sum_and_count(getattr(mod, name)(**kwargs), X, target)
    assert n.item() == 12
    torch.testing.assert_close(s, per_element(X - target).sum())


@pytest.mark.parametrize("mod", [nn, lk], ids=["torch.nn", "losskit"])
def test_count_binary_losses_count_elements_even_with_weight(mod):
    p, t = torch.sigmoid(X), (X > 0.7).double()
    w = torch.tensor([1.0, 2.0, 0.25], dtype=torch.float64)
    s, n = lkd.loss_sum_and_count(mod.BCELoss(weight=w), p, t)
    assert n.item() == 12  # torch's weighted BCE mean divides by numel, not by sum(weight)
    torch.testing.assert_close(s, -(w * (t * p.log() + (1 - t) * (1 - p).log())).sum())
    pw = torch.tensor([3.0, 1.0, 0.5], dtype=torch.float64)
    s, n = lkd.loss_sum_and_count(mod.BCEWithLogitsLoss(pos_weight=pw), X, t)
    assert n.item() == 12
    expected = -(pw * t * F.logsigmoid(X) + (1 - t) * F.logsigmoid(-X)).sum()
    torch.testing.assert_close(s, expected)


@pytest.mark.parametrize("mod", [nn, lk], ids=["torch.nn", "losskit"])
def test_count_kl_div_by_reduction(mod):
    logp, q = X.log_softmax(1), torch.softmax(X.flip(0), 1)
    kl = (q * (q.log() - logp)).sum()
    s, n = lkd.loss_sum_and_count(mod.KLDivLoss(reduction="batchmean"), logp, q)
    assert n.item() == 4  # input.size(0)
    torch.testing.assert_close(s, kl)
    s, n = lkd.loss_sum_and_count(mod.KLDivLoss(reduction="mean"), logp, q)
    assert n.item() == 12
    torch.testing.assert_close(s, kl)

    p0, q0 = logp[0, 0], q[0, 0]  # 0-d input: torch's batchmean is the plain sum, count 1
    s, n = lkd.loss_sum_and_count(mod.KLDivLoss(reduction="batchmean"), p0, q0)
    assert n.item() == 1
    torch.testing.assert_close(s, q0 * (q0.log() - p0))


def test_count_cross_entropy_with_a_non_negative_ignore_index():
    """ignore_index=255 (segmentation) or C - 1: every other class index counts, below or above."""
    y = torch.tensor([0, 255, 2, 1, 255])
    assert lkd.count_targets(y, ignore_index=255).item() == 3
    assert lkd.count_targets(torch.tensor([2, 0, 1, 2]), ignore_index=1).item() == 3


def test_count_focal_loss_counts_non_ignored_or_elements():
    gamma = 2.0
    s, n = lkd.loss_sum_and_count(lk.FocalLoss(gamma=gamma), X, Y)
    assert n.item() == 3
    logp_t = -_nll_rows(X, Y)
    expected = (-((1 - logp_t.exp()) ** gamma) * logp_t)[Y != -100].sum()
    torch.testing.assert_close(s, expected)
    t = (X > 0.7).double()
    s, n = lkd.loss_sum_and_count(lk.FocalLoss(gamma=gamma), X, t)
    assert n.item() == 12
    p_t = torch.where(t == 1, torch.sigmoid(X), 1 - torch.sigmoid(X))
    torch.testing.assert_close(s, (-((1 - p_t) ** gamma) * p_t.log()).sum())


def test_count_dice_loss_is_the_mean_times_the_batch():
    x = X.reshape(2, 2, 3).transpose(1, 2)  # (N=2, C=3, 2)
    target = torch.tensor([[0, 2], [1, 1]])
    s, n = lkd.loss_sum_and_count(lk.DiceLoss(smooth=1.0, reduction="sum"), x, target)
    p = torch.softmax(x, 1).transpose(1, 2).reshape(-1, 3)  # (4, 3)
    onehot = F.one_hot(target.reshape(-1), 3).double()
    dice = (2 * (p * onehot).sum(0) + 1) / (p.sum(0) + onehot.sum(0) + 1)
    assert n.item() == 2
    torch.testing.assert_close(s, (1 - dice).mean() * 2)


def test_count_unknown_loss_falls_back_to_mean_times_batch():
    loss_fn = nn.CosineEmbeddingLoss()
    a, b = X, X.flip(0)
    s, n = lkd.loss_sum_and_count(lambda x, y: loss_fn(x, y, torch.ones(4)), a, b)
    assert n.item() == 4
    torch.testing.assert_close(s, (1 - F.cosine_similarity(a, b)).sum())


def test_count_keeps_gradient_and_leaves_the_module_alone():
    loss_fn = lk.CrossEntropyLoss(reduction="none")
    x = X.clone().requires_grad_()
    s, n = lkd.loss_sum_and_count(loss_fn, x, Y)
    s.backward()
    assert loss_fn.reduction == "none" and not n.requires_grad
    expected = torch.softmax(X, 1) - F.one_hot(Y.clamp_min(0), 3)
    torch.testing.assert_close(x.grad, expected * (Y != -100)[:, None])


def test_count_of_half_precision_is_float32():
    _, n = lkd.loss_sum_and_count(nn.MSELoss(), torch.ones(301, dtype=torch.bfloat16),
                                  torch.zeros(301, dtype=torch.bfloat16))
    assert n.dtype == torch.float32 and n.item() == 301  # bfloat16 cannot hold 301


def test_global_mean_one_process_matches_one_big_batch():
    x, y = W.step_batch("uneven")
    big, small = W.step_model(), W.step_model()
    weight = torch.tensor(W.CLASS_WEIGHT, dtype=torch.float64)
    F.cross_entropy(big(x), y, weight=weight).backward()
    norm = lkd.GlobalMean(lk.CrossEntropyLoss(weight=weight))
    for xb, yb in zip(x.split(5), y.split(5), strict=True):  # 5 + 5 + 5 + 1 rows, uneven counts
        norm(small(xb), yb).backward()
    norm.scale_grads_(small.parameters())
    for a, b in zip(big.parameters(), small.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=1e-12)
    with pytest.raises(RuntimeError, match="no micro-batch was seen"):
        norm.scale_grads_(small.parameters())


def test_global_denominator_sums_counts_and_never_divides_by_zero():
    counts = [torch.tensor(3.0), torch.tensor(0.0), torch.tensor(2.5, dtype=torch.float64)]
    assert lkd.global_denominator(counts).item() == 5.5
    assert lkd.global_denominator(torch.tensor(0.0)).item() == 1.0  # every loss sum is 0 then


def test_global_mean_with_nothing_counted_gives_zero_gradient_not_nan():
    model = W.step_model()
    norm = lkd.GlobalMean(lk.CrossEntropyLoss())
    x, _ = W.step_batch("all_ignored")
    norm(model(x), torch.full((16,), -100)).backward()
    mean = norm.scale_grads_(model.parameters())
    assert mean.item() == 0.0
    assert all(torch.equal(p.grad, torch.zeros_like(p)) for p in model.parameters())


# ----------------------------------------------------------------------------------------------
# vocab_parallel_cross_entropy, one process (world 1: the shard is the whole vocabulary)


def test_vocab_parallel_function_gradcheck():
    x = torch.randn(5, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 6, -100, 3, 2])
    assert torch.autograd.gradcheck(
        lambda x: _VocabParallelCrossEntropy.apply(x, y, 0, 7, -100, 0.2, None),
        (x.requires_grad_(),),
    )


def test_vocab_parallel_bfloat16_computes_in_float32():
    x = torch.randn(4, 9, generator=torch.Generator().manual_seed(1)).bfloat16().requires_grad_()
    y = torch.tensor([0, 8, -100, 4])
    loss = lkd.vocab_parallel_cross_entropy(x, y, label_smoothing=0.1)
    loss.backward()
    reference = x.detach().float().requires_grad_()
    expected = F.cross_entropy(reference, y, label_smoothing=0.1)
    expected.backward()
    assert loss.dtype == x.grad.dtype == torch.bfloat16
    torch.testing.assert_close(loss.float(), expected, rtol=8e-3, atol=0)  # one bf16 rounding
    torch.testing.assert_close(x.grad.float(), reference.grad, rtol=8e-3, atol=1e-4)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"target": torch.tensor([[0, 1]])}, ValueError, r"target.*\(1, 2\).*classes last"),
        ({"target": torch.tensor([0.0, 1.0])}, RuntimeError, "integer class indices"),
        ({"label_smoothing": 1.5}, RuntimeError, "between 0.0 and 1.0. Got: 1.5"),
        ({"vocab_start": 0}, ValueError, "give both or neither"),
        ({"target": torch.tensor([0, 7])}, IndexError, "outside \\[0, 3\\): 7"),
    ],
)
def test_vocab_parallel_errors_name_the_argument(kwargs, error, match):
    args = {"target": torch.tensor([0, 1]), **kwargs}
    with pytest.raises(error, match=match):
        lkd.vocab_parallel_cross_entropy(torch.zeros(2, 3), **args)


# ----------------------------------------------------------------------------------------------
# Two processes (gloo on 127.0.0.1): every scenario runs once in one spawned group


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> dict[int, dict]:
    out = tmp_path_factory.mktemp("dist")
    W.spawn(W.run_all, 2, str(out))
    return {r: torch.load(out / f"rank{r}.pt", weights_only=False) for r in (0, 1)}


def _one_process_step(pattern: str) -> list[torch.Tensor]:
    """The oracle: one SGD step of one process on the whole 16-row batch, torch.nn.functional."""
    x, y = W.step_batch(pattern)
    model = W.step_model()
    weight = torch.tensor(W.CLASS_WEIGHT, dtype=torch.float64)
    F.cross_entropy(model(x), y, weight=weight, label_smoothing=W.SMOOTHING).backward()
    torch.optim.SGD(model.parameters(), lr=W.LR).step()
    return [p.detach() for p in model.parameters()]


def _max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max((p - q).abs().max().item() for p, q in zip(a, b, strict=True))


@pytest.mark.parametrize("method", ["global_mean", "global_denominator"])
@pytest.mark.parametrize("pattern", ["uneven", "rank1_all_ignored"])
def test_two_ranks_two_micro_batches_equal_one_big_batch(ranks, pattern, method):
    expected = _one_process_step(pattern)
    for r in (0, 1):
        got = ranks[r]["steps"][(pattern, method)]
        assert _max_diff(got["params"], expected) < 1e-6
    x, y = W.step_batch(pattern)
    if method == "global_mean":  # the logged mean is the global one, on every rank
        model = W.step_model()
        weight = torch.tensor(W.CLASS_WEIGHT, dtype=torch.float64)
        mean = F.cross_entropy(model(x), y, weight=weight, label_smoothing=W.SMOOTHING)
        for r in (0, 1):
            torch.testing.assert_close(ranks[r]["steps"][(pattern, method)]["mean"], mean.detach())


def test_per_micro_batch_means_differ_so_the_step_test_can_fail(ranks):
    expected = _one_process_step("uneven")
    assert _max_diff(ranks[0]["steps"][("uneven", "naive")]["params"], expected) > 1e-3


@pytest.mark.parametrize("method", ["global_mean", "global_denominator"])
def test_a_step_with_every_target_ignored_changes_nothing(ranks, method):
    initial = [p.detach() for p in W.step_model().parameters()]
    for r in (0, 1):
        got = ranks[r]["steps"][("all_ignored", method)]
        assert all(torch.equal(p, q) for p, q in zip(got["params"], initial, strict=True))
        if got["mean"] is not None:
            assert got["mean"].item() == 0.0


def _gathered_oracle(vocab, ignore_index, reduction, label_smoothing):
    """F.cross_entropy on the whole logits of W.vocab_batch, backpropagated with the batch's
    upstream gradient for "none"; (loss, the logits leaf holding its gradient)."""
    logits, target, upstream = W.vocab_batch(vocab, ignore_index)
    full = logits.clone().requires_grad_()
    expected = F.cross_entropy(full.reshape(-1, vocab), target.reshape(-1),
                               ignore_index=ignore_index, reduction=reduction,
                               label_smoothing=label_smoothing)
    if reduction == "none":
        expected = expected.reshape(target.shape)
        (expected * upstream).sum().backward()
    else:
        expected.backward()
    return expected, full


@pytest.mark.parametrize("index", range(len(W.VOCAB_CASES)),
                         ids=[f"V{c['vocab']}-{c['reduction']}-ls{c['label_smoothing']}-"
                              f"ii{c['ignore_index']}" for c in W.VOCAB_CASES])
def test_vocab_parallel_equals_cross_entropy_on_gathered_logits(ranks, index):
    case = W.VOCAB_CASES[index]
    expected, full = _gathered_oracle(case["vocab"], case["ignore_index"], case["reduction"],
                                      case["label_smoothing"])
    for r in (0, 1):
        torch.testing.assert_close(ranks[r]["vocab"][index]["loss"], expected.detach())
    grads = torch.cat([ranks[r]["vocab"][index]["grad"] for r in (0, 1)], dim=-1)
    torch.testing.assert_close(grads, full.grad)
    if case["vocab"] == 11:  # uneven shards: 6 + 5 columns
        assert ranks[0]["vocab"][index]["grad"].shape[-1] == 6


@pytest.mark.parametrize("sizes", W.LINEAR_LAYOUTS,
                         ids=[f"rows{a}+{b}" for a, b in W.LINEAR_LAYOUTS])
def test_vocab_parallel_linear_head_matches_the_full_head(ranks, sizes):
    hidden, weight, bias, target = (t.requires_grad_() if t.is_floating_point() else t
                                    for t in W.linear_batch(sum(sizes)))
    loss = F.cross_entropy(hidden @ weight.T + bias, target, label_smoothing=0.1)
    loss.backward()
    got = [ranks[r]["linear"][sizes] for r in (0, 1)]
    for r in (0, 1):
        torch.testing.assert_close(got[r]["loss"], loss.detach())
        torch.testing.assert_close(got[r]["hidden"], hidden.grad)  # all-reduced
        assert got[r]["weight"].shape == (sizes[r], 4)  # an empty shard has an empty gradient
    torch.testing.assert_close(torch.cat([got[r]["weight"] for r in (0, 1)]), weight.grad)
    torch.testing.assert_close(torch.cat([got[r]["bias"] for r in (0, 1)]), bias.grad)


@pytest.mark.parametrize("index", range(len(W.EMPTY_CASES)),
                         ids=[f"cols{c['sizes'][0]}+{c['sizes'][1]}-{c['reduction']}-"
                              f"ls{c['label_smoothing']}" for c in W.EMPTY_CASES])
def test_vocab_parallel_empty_shard_equals_cross_entropy_on_gathered_logits(ranks, index):
    case = W.EMPTY_CASES[index]
    expected, full = _gathered_oracle(sum(case["sizes"]), -100, case["reduction"],
                                      case["label_smoothing"])
    for r in (0, 1):
        torch.testing.assert_close(ranks[r]["empty"][index]["loss"], expected.detach())
        assert ranks[r]["empty"][index]["grad"].shape == (2, 3, case["sizes"][r])
    grads = torch.cat([ranks[r]["empty"][index]["grad"] for r in (0, 1)], dim=-1)
    torch.testing.assert_close(grads, full.grad)


def test_vocab_parallel_all_ignored_gives_zero_not_nan(ranks):
    for r in (0, 1):
        got = ranks[r]["all_ignored"]
        assert got["loss"].item() == 0.0
        assert torch.equal(got["grad"], torch.zeros_like(got["grad"]))
        # docs/design.md, departures: a mean over nothing is 0 with a warning
        assert got["warnings"] == ["LossWarning"]


@pytest.mark.parametrize(
    ("option", "values"),
    [
        ("label_smoothing", "rank 0: 0.0, rank 1: 0.1"),
        ("reduction", "rank 0: 'mean', rank 1: 'sum'"),
        ("ignore_index", "rank 0: -100, rank 1: -101"),
        ("tokens", "rank 0: 6, rank 1: 4"),
        ("logits_shard.dtype", "rank 0: torch.float64, rank 1: torch.float32"),
    ],
)
def test_vocab_parallel_option_mismatch_is_detected_on_every_rank(ranks, option, values):
    for r in (0, 1):
        message = ranks[r]["mismatch"][option]
        assert message is not None and message.startswith("LossInputError")
        assert f"`{option}` differs between ranks ({values})" in message
        assert "Fix:" in message


@pytest.mark.parametrize("attempt", ["target", "target (swapped)"])
def test_vocab_parallel_target_mismatch_is_detected_on_every_rank(ranks, attempt):
    targets = [W.mismatched_targets(r)[attempt] for r in (0, 1)]
    values = ", ".join(f"rank {r}: {W.target_checksum(targets[r])}" for r in (0, 1))
    if attempt == "target (swapped)":  # the sum alone cannot tell these apart
        assert torch.equal(targets[0].sum(), targets[1].sum())
    for r in (0, 1):
        message = ranks[r]["mismatch"][attempt]
        assert message is not None and message.startswith("LossInputError")
        assert f"`target` differs between ranks ({values})" in message
        assert "Fix: pass the same whole `target` on every rank" in message

