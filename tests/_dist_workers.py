"""Worker side of the 2-process gloo tests in test_distributed.py.

``spawn`` starts the processes on 127.0.0.1; ``run_all`` runs every distributed scenario once and
saves each rank's results to ``out/rank{r}.pt`` for the parent to compare with its single-process
float64 oracle. The data builders below are shared by both sides so they see the same numbers;
the oracle itself lives only in the tests.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import warnings
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

import losskit as lk
from losskit import distributed as lkd
from losskit.distributed import (
    vocab_parallel_cross_entropy,
    vocab_parallel_linear_cross_entropy,
)

# ----------------------------------------------------------------------------------------------
# Process start-up


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, fn, world: int, port: int, args: tuple) -> None:
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # stay on the loopback interface
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
        timeout=timedelta(seconds=60),
    )
    try:
        fn(rank, world, *args)
    finally:
        dist.destroy_process_group()


def spawn(fn, world: int, *args) -> None:
    """Run ``fn(rank, world, *args)`` in ``world`` new processes joined by a gloo group.

    Forked on Linux: the ranks inherit the imported torch and losskit instead of importing them
    again (seconds each on a busy 2-core machine). DDP's constructor imports torch._dynamo, so
    that happens here once rather than in every rank. Elsewhere fork is unsafe: spawn.
    """
    import torch._dynamo  # noqa: F401

    method = "fork" if sys.platform == "linux" else "spawn"
    for attempt in range(3):
        try:
            mp.start_processes(
                _entry, args=(fn, world, free_port(), args), nprocs=world, start_method=method
            )
            return
        except mp.ProcessRaisedException as e:  # another test may have taken the port
            if "address already in use" not in str(e).lower() or attempt == 2:
                raise


# ----------------------------------------------------------------------------------------------
# Shared data: one optimizer step of a small classifier, split 2 ranks x 2 micro-batches

FEATURES, CLASSES, LR, SMOOTHING = 4, 5, 0.5, 0.1
CLASS_WEIGHT = (1.0, 2.0, 0.5, 1.5, 3.0)
# Rows of the 16-row batch held by each rank's two micro-batches: uneven sizes on purpose.
SPLITS = {0: [(0, 5), (5, 8)], 1: [(8, 14), (14, 16)]}
# Rows set to ignore_index: 1 of 5, 0 of 3, 3 of 6 and 2 of 2 (a micro-batch with nothing counted).
IGNORED = {
    "uneven": [2, 9, 11, 12, 14, 15],
    "rank1_all_ignored": [8, 9, 10, 11, 12, 13, 14, 15],
    "all_ignored": list(range(16)),
}


def step_batch(pattern: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(x (16, 4) float64, y (16,) int64 with -100 at IGNORED[pattern])."""
    g = torch.Generator().manual_seed(7)
    x = torch.randn(16, FEATURES, generator=g, dtype=torch.float64)
    y = torch.randint(0, CLASSES, (16,), generator=g)
    y[IGNORED[pattern]] = -100
    return x, y


def step_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(FEATURES, 8), nn.Tanh(), nn.Linear(8, CLASSES)).double()


# Vocab-parallel cases: V = 11 over 2 ranks gives uneven shards (6 + 5 columns).
VOCAB_CASES = [
    {"vocab": v, "reduction": r, "label_smoothing": e, "ignore_index": i}
    for v, i in ((11, -100), (8, 3))
    for r in ("mean", "sum", "none")
    for e in (0.0, 0.1)
]
# Empty shards: columns per rank. V = 1 < W = 2 leaves rank 1 none (every loss is 0 there, so the
# layouts that leave rank 0 none carry the non-zero numbers).
EMPTY_CASES = [
    {"sizes": (1, 0), "reduction": "mean", "label_smoothing": 0.1},
    {"sizes": (0, 7), "reduction": "mean", "label_smoothing": 0.0},
    {"sizes": (0, 7), "reduction": "none", "label_smoothing": 0.1},
]
# Linear head: rows of the (V, D) weight per rank. (6, 5) is shard_columns(11)'s uneven split.
LINEAR_LAYOUTS = [(6, 5), (0, 11), (1, 0)]


def vocab_batch(vocab: int, ignore_index: int, seed: int = 3) -> tuple[torch.Tensor, ...]:
    """Full logits (2, 3, V) float64, target (2, 3) with ignored entries, upstream grad (2, 3)."""
    g = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(2, 3, vocab, generator=g, dtype=torch.float64)
    target = torch.randint(0, vocab, (2, 3), generator=g)
    target[0, 1] = target[1, 2] = ignore_index
    upstream = torch.rand(2, 3, generator=g, dtype=torch.float64) + 0.5
    return logits, target, upstream


def linear_batch(vocab: int) -> tuple[torch.Tensor, ...]:
    """hidden (6, 4), weight (V, 4), bias (V,) float64 and target (6,) with one ignored entry."""
    g = torch.Generator().manual_seed(5)
    hidden = torch.randn(6, 4, generator=g, dtype=torch.float64)
    weight = torch.randn(vocab, 4, generator=g, dtype=torch.float64)
    bias = torch.randn(vocab, generator=g, dtype=torch.float64)
    target = torch.tensor([0, 10, -100, 5, 6, 3])
    target = torch.where(target >= 0, target % vocab, target)  # unchanged for V = 11
    return hidden, weight, bias, target


def mismatched_targets(rank: int) -> dict[str, torch.Tensor]:
    """vocab_batch(11)'s target on rank 0; on rank 1 one entry raised by one, or two swapped."""
    _, target, _ = vocab_batch(11, -100)
    one_changed, swapped = target.clone(), target.clone()
    if rank:
        one_changed[1, 0] = (target[1, 0] + 1) % 11  # the smallest change: one entry, by one
        swapped[0, 0], swapped[1, 1] = target[1, 1], target[0, 0]  # same sum, another order
    return {"target": one_changed, "target (swapped)": swapped}


def target_checksum(target: torch.Tensor) -> str:
    """The mismatch message's "checksum a/b", written out in Python integers."""
    p, values = 2**31 - 1, target.reshape(-1).tolist()
    weighted = sum(i * v for i, v in enumerate(values, start=1))
    return f"checksum {sum(values) % p}/{weighted % p}"


def shard_columns(vocab: int, rank: int, world: int) -> tuple[int, int]:
    """[start, end) of ``rank``'s columns: the first ``vocab % world`` ranks get one extra."""
    sizes = [vocab // world + (r < vocab % world) for r in range(world)]
    return sum(sizes[:rank]), sum(sizes[: rank + 1])


# ----------------------------------------------------------------------------------------------
# Scenarios (run on every rank)


def _ddp_step(rank: int, pattern: str, method: str) -> dict:
    x, y = step_batch(pattern)
    model = step_model()
    ddp = DDP(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=LR)
    weight = torch.tensor(CLASS_WEIGHT, dtype=torch.float64)
    loss_fn = lk.CrossEntropyLoss(weight=weight, label_smoothing=SMOOTHING)
    parts = [(x[a:b], y[a:b]) for a, b in SPLITS[rank]]
    norm = lkd.GlobalMean(loss_fn)
    denominator = lkd.global_denominator([lkd.count_targets(t, weight=weight) for _, t in parts])
    mean = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the naive loop's all-ignored micro-batch warns
        for k, (xb, yb) in enumerate(parts):
            last = k == len(parts) - 1
            with contextlib.nullcontext() if last else ddp.no_sync():
                out = ddp(xb)
                if method == "global_mean":
                    loss = norm(out, yb)
                elif method == "global_denominator":
                    loss = lkd.loss_sum_and_count(loss_fn, out, yb)[0] / denominator
                else:  # "naive": each micro-batch averages itself, as popular loops did
                    loss = loss_fn(out, yb) / len(parts)
                loss.backward()
    if method == "global_mean":
        mean = norm.scale_grads_(ddp.parameters())
    opt.step()
    return {"params": [p.detach().clone() for p in model.parameters()], "mean": mean}


def _vocab_case(rank: int, world: int, case: dict) -> dict:
    logits, target, upstream = vocab_batch(case["vocab"], case["ignore_index"])
    start, end = shard_columns(case["vocab"], rank, world)
    shard = logits[..., start:end].clone().requires_grad_()
    loss = vocab_parallel_cross_entropy(
        shard, target, ignore_index=case["ignore_index"], reduction=case["reduction"],
        label_smoothing=case["label_smoothing"],
    )
    # "none": a non-uniform upstream gradient per token exercises the backward fully.
    objective = (loss * upstream).sum() if case["reduction"] == "none" else loss
    objective.backward()
    return {"loss": loss.detach(), "grad": shard.grad}


def _empty_shard_case(rank: int, case: dict) -> dict:
    sizes = case["sizes"]
    logits, target, upstream = vocab_batch(sum(sizes), -100)
    start = sum(sizes[:rank])
    shard = logits[..., start:start + sizes[rank]].clone().requires_grad_()  # (2, 3, V_r)
    loss = vocab_parallel_cross_entropy(shard, target, reduction=case["reduction"],
                                        label_smoothing=case["label_smoothing"])
    objective = (loss * upstream).sum() if case["reduction"] == "none" else loss
    objective.backward()
    return {"loss": loss.detach(), "grad": shard.grad}


def _linear_case(rank: int, sizes: tuple[int, ...]) -> dict:
    hidden, weight, bias, target = linear_batch(sum(sizes))
    hidden.requires_grad_()
    start, end = sum(sizes[:rank]), sum(sizes[: rank + 1])
    w_shard = weight[start:end].clone().requires_grad_()
    b_shard = bias[start:end].clone().requires_grad_()
    loss = vocab_parallel_linear_cross_entropy(hidden, w_shard, target, b_shard,
                                               label_smoothing=0.1)
    loss.backward()
    return {"loss": loss.detach(), "hidden": hidden.grad, "weight": w_shard.grad,
            "bias": b_shard.grad}


def _all_ignored_case(rank: int, world: int) -> dict:
    logits, target, _ = vocab_batch(11, -100)
    start, end = shard_columns(11, rank, world)
    shard = logits[..., start:end].clone().requires_grad_()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loss = vocab_parallel_cross_entropy(shard, torch.full_like(target, -100),
                                            label_smoothing=0.1)
    loss.backward()
    return {"loss": loss.detach(), "grad": shard.grad,
            "warnings": [type(w.message).__name__ for w in caught]}


def _mismatch_cases(rank: int, world: int) -> dict:
    """Each rank passes one argument differently; the error message of each attempt, per rank."""
    logits, target, _ = vocab_batch(11, -100)
    start, end = shard_columns(11, rank, world)
    shard = logits[..., start:end]
    mismatched = mismatched_targets(rank)
    attempts = {
        "label_smoothing": ({"label_smoothing": 0.1 * rank}, target, shard),
        "reduction": ({"reduction": "sum" if rank else "mean"}, target, shard),
        "ignore_index": ({"ignore_index": -100 - rank}, target, shard),
        "tokens": ({}, target[:, : 3 - rank], shard[:, : 3 - rank]),
        "logits_shard.dtype": ({}, target, shard.float() if rank else shard),
        "target": ({}, mismatched["target"], shard),
        "target (swapped)": ({}, mismatched["target (swapped)"], shard),
    }
    messages = {}
    for name, (kwargs, tgt, x) in attempts.items():
        try:
            vocab_parallel_cross_entropy(x, tgt, **kwargs)
            messages[name] = None
        except ValueError as e:
            messages[name] = f"{type(e).__name__}: {e}"
    return messages


def run_all(rank: int, world: int, out: str) -> None:
    results = {
        "steps": {
            (pattern, method): _ddp_step(rank, pattern, method)
            for pattern in IGNORED
            for method in ("global_mean", "global_denominator", "naive")
        },
        "vocab": [_vocab_case(rank, world, case) for case in VOCAB_CASES],
        "linear": {sizes: _linear_case(rank, sizes) for sizes in LINEAR_LAYOUTS},
        "empty": [_empty_shard_case(rank, case) for case in EMPTY_CASES],
        "all_ignored": _all_ignored_case(rank, world),
        "mismatch": _mismatch_cases(rank, world),
    }
    torch.save(results, os.path.join(out, f"rank{rank}.pt"))


# ----------------------------------------------------------------------------------------------
# lk.fit under DDP: rank r's micro-batch b is half of the one-process micro-batch b (same sampler)


def fit_data() -> tuple[torch.Tensor, torch.Tensor]:
    """60 rows float64, ~40% of targets ignored at random: uneven counts in every micro-batch."""
    g = torch.Generator().manual_seed(11)
    x = torch.randn(60, FEATURES, generator=g, dtype=torch.float64)
    y = torch.randint(0, CLASSES, (60,), generator=g)
    y[torch.rand(60, generator=g) < 0.4] = -100
    return x, y


def fit_run(
    batch_size: int, epochs: int = 2, **kwargs
) -> tuple[list[torch.Tensor], list[float]]:
    """lk.fit with SGD and 2 accumulation steps; (parameters, train losses)."""
    x, y = fit_data()
    model = step_model()
    weight = torch.tensor(CLASS_WEIGHT, dtype=torch.float64)
    history = lk.fit(
        model, lk.CrossEntropyLoss(weight=weight, label_smoothing=SMOOTHING), (x, y),
        epochs=epochs, optimizer=lambda params: torch.optim.SGD(params, lr=LR),
        batch_size=batch_size, grad_accum_steps=2, metrics={}, seed=0, progress=False,
        device="cpu", **kwargs,
    )
    return [p.detach().clone() for p in model.parameters()], [r["train_loss"] for r in history]


class TemperatureCE(nn.Module):
    """Cross-entropy of logits / t with a learned temperature t: a loss with its own parameter,
    outside the model DDP wraps."""

    def __init__(self) -> None:
        super().__init__()
        self.t = nn.Parameter(torch.tensor(1.5, dtype=torch.float64))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return lk.CrossEntropyLoss()(logits / self.t, target)


def temperature_run(batch_size: int) -> list[torch.Tensor]:
    """lk.fit with SGD over the model's and the loss's parameters; all of them afterwards."""
    x, y = fit_data()
    y = y.clamp(min=0)  # every target counted: fit reads a custom loss's mean as a row mean
    model, loss_fn = step_model(), TemperatureCE()
    params = [*model.parameters(), *loss_fn.parameters()]
    lk.fit(model, loss_fn, (x, y), epochs=2, optimizer=torch.optim.SGD(params, lr=LR),
           batch_size=batch_size, metrics={}, seed=0, progress=False, device="cpu")
    return [p.detach().clone() for p in params]


def temperature_worker(rank: int, world: int, out: str) -> None:
    torch.save(temperature_run(batch_size=8), os.path.join(out, f"temperature{rank}.pt"))


def fit_worker(rank: int, world: int, out: str) -> None:
    torch.save(fit_run(batch_size=8), os.path.join(out, f"fit{rank}.pt"))
    fit_run(batch_size=8, epochs=1, out=os.path.join(out, "run"))  # a checkpoint for 1 process
