"""Worker side of the 2-process DTensor tests in test_dtensor.py (FSDP2 and tensor parallel).

``run_all`` runs every scenario once on each rank of a gloo group started by
``_dist_workers.spawn`` and saves the rank's results to ``out/rank{r}.pt``; the parent compares
them with a single-process float64 oracle built from ``torch.nn.functional`` alone. The data
builders are shared by both sides so they see the same numbers.
"""

from __future__ import annotations

import os

import torch
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_tensor

import losskit as lk
import losskit.functional as LF
from losskit.distributed import dtensor as lk_dtensor

FEATURES, HIDDEN, VOCAB, LR = 4, 8, 11, 0.5  # V = 11 over 2 ranks: uneven shards (6 + 5 rows)
# Rows of the 8-row batch per rank; one ignored target on each, so both ranks count 3 tokens and
# FSDP2's mean of the ranks' gradients is the one-process mean.
ROWS = {0: slice(0, 4), 1: slice(4, 8)}
IGNORED = (1, 6)


def step_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """x (8, 4) float32, y (8,) int64 with -100 at IGNORED."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(8, FEATURES, generator=g)
    y = torch.randint(0, VOCAB, (8,), generator=g)
    y[list(IGNORED)] = -100
    return x, y


class HeadModel(nn.Module):
    """A body whose forward returns hidden states; the head is read by the loss, outside it."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(FEATURES, HIDDEN), nn.Tanh())
        self.head = nn.Linear(HIDDEN, VOCAB)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class LossModuleModel(nn.Module):
    """The same body with the head owned by lk.LinearCrossEntropyLoss."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(FEATURES, HIDDEN), nn.Tanh())
        self.loss = lk.LinearCrossEntropyLoss(HIDDEN, VOCAB, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class TiedModel(nn.Module):
    """Token embedding whose weight is also the head (GPT-2, Gemma): read inside the embedding's
    forward and, as the head, outside it."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, HIDDEN)
        self.block = nn.Linear(HIDDEN, HIDDEN)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.block(self.embed(tokens)))


def tied_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """tokens (8,), y (8,) int64 with -100 at IGNORED."""
    g = torch.Generator().manual_seed(4)
    tokens = torch.randint(0, VOCAB, (8,), generator=g)
    y = torch.randint(0, VOCAB, (8,), generator=g)
    y[list(IGNORED)] = -100
    return tokens, y


def _fsdp_tied_step(rank: int) -> dict:
    torch.manual_seed(0)
    model = TiedModel()
    fully_shard(model.embed)
    fully_shard(model)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    tokens, y = tied_batch()
    loss = LF.linear_cross_entropy(model(tokens[ROWS[rank]]), model.embed.weight, y[ROWS[rank]])
    loss.backward()
    opt.step()
    params = {n: p.full_tensor().detach() for n, p in model.named_parameters()}
    return {"loss": loss.detach(), "params": params}


def initial_params(kind: str) -> dict[str, torch.Tensor]:
    """The model's parameters before sharding (seeded), by name."""
    torch.manual_seed(0)
    model = {"function": HeadModel, "module": LossModuleModel, "tied": TiedModel}[kind]()
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _fsdp_step(rank: int, kind: str) -> dict:
    """One SGD step under fully_shard: the function given the sharded head (read outside the
    head's forward), or the loss Module, sharded on its own and called through its forward."""
    torch.manual_seed(0)
    model = HeadModel() if kind == "function" else LossModuleModel()
    head = model.head if kind == "function" else model.loss
    fully_shard(head)
    fully_shard(model)
    sharded = isinstance(model.head.weight if kind == "function" else model.loss.linear.weight,
                         DTensor)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    x, y = step_batch()
    hidden = model(x[ROWS[rank]])
    if kind == "function":
        loss = LF.linear_cross_entropy(hidden, model.head.weight, y[ROWS[rank]],
                                       linear_bias=model.head.bias)
    else:
        loss = model.loss(hidden, y[ROWS[rank]])
    loss.backward()
    opt.step()
    params = {n: p.full_tensor().detach() for n, p in model.named_parameters()}
    return {"loss": loss.detach(), "params": params, "head_was_dtensor": sharded}


def _fsdp_bfloat16(rank: int, kind: str) -> dict:
    """A forward under MixedPrecisionPolicy(param_dtype=bfloat16): the loss, or the error."""
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16)
    torch.manual_seed(0)
    model = HeadModel() if kind == "function" else LossModuleModel()
    fully_shard(model.head if kind == "function" else model.loss, mp_policy=policy)
    fully_shard(model, mp_policy=policy)
    x, y = step_batch()
    hidden = model(x[ROWS[rank]])  # bfloat16
    try:
        if kind == "function":
            loss = LF.linear_cross_entropy(hidden, model.head.weight, y[ROWS[rank]])
        else:
            loss = model.loss(hidden, y[ROWS[rank]])
    except RuntimeError as e:
        return {"error": f"{type(e).__name__}: {e}"}
    return {"loss": loss.detach(), "dtype": str(loss.dtype)}


def tp_batch() -> tuple[torch.Tensor, ...]:
    """hidden (6, 4), weight (11, 4), bias (11,) float64, target (6,) with one ignored entry."""
    g = torch.Generator().manual_seed(5)
    hidden = torch.randn(6, FEATURES, generator=g, dtype=torch.float64)
    weight = torch.randn(VOCAB, FEATURES, generator=g, dtype=torch.float64)
    bias = torch.randn(VOCAB, generator=g, dtype=torch.float64)
    target = torch.tensor([0, 10, -100, 5, 6, 3])
    return hidden, weight, bias, target


def _tp_head(mesh) -> dict:
    """A head sharded over the vocabulary (ColwiseParallel's layout), hidden replicated."""
    hidden, weight, bias, target = tp_batch()
    h = distribute_tensor(hidden, mesh, [Replicate()]).requires_grad_()
    w = distribute_tensor(weight, mesh, [Shard(0)]).requires_grad_()
    b = distribute_tensor(bias, mesh, [Shard(0)]).requires_grad_()
    seen, gathered = [], []
    real_path, real_full = lk_dtensor.vocab_parallel_linear_cross_entropy, DTensor.full_tensor

    def spy_path(hidden, weight_shard, *args, **kwargs):
        seen.append(tuple(weight_shard.shape))
        return real_path(hidden, weight_shard, *args, **kwargs)

    def spy_full(self, *args, **kwargs):
        gathered.append(tuple(self.shape))
        return real_full(self, *args, **kwargs)

    lk_dtensor.vocab_parallel_linear_cross_entropy, DTensor.full_tensor = spy_path, spy_full
    try:
        loss = LF.linear_cross_entropy(h, w, target, linear_bias=b, label_smoothing=0.1)
    finally:
        lk_dtensor.vocab_parallel_linear_cross_entropy, DTensor.full_tensor = real_path, real_full
    loss.backward()
    return {
        "loss": loss.detach(), "hidden": h.grad.full_tensor(), "weight": w.grad.full_tensor(),
        "bias": b.grad.full_tensor(), "weight_placements": tuple(map(str, w.grad.placements)),
        "shards_seen": seen, "gathered": gathered,
    }


# Logits sharded over the class dim (torch's loss_parallel layout): (N, V) and (N, V, d).
LOGITS_CASES = [
    {"shape": (6, VOCAB), "reduction": "mean", "label_smoothing": 0.0, "ignore_index": -100},
    {"shape": (6, VOCAB), "reduction": "sum", "label_smoothing": 0.1, "ignore_index": 3},
    {"shape": (2, VOCAB, 3), "reduction": "none", "label_smoothing": 0.1, "ignore_index": -100},
]


def logits_batch(shape: tuple[int, ...], ignore_index: int) -> tuple[torch.Tensor, ...]:
    """logits of ``shape`` float64, target (shape without dim 1) with two ignored entries,
    upstream gradient of the target's shape."""
    g = torch.Generator().manual_seed(9)
    logits = 3 * torch.randn(shape, generator=g, dtype=torch.float64)
    target_shape = (shape[0], *shape[2:])
    target = torch.randint(0, shape[1], target_shape, generator=g).reshape(-1)
    target[[1, 4]] = ignore_index
    upstream = torch.rand(target_shape, generator=g, dtype=torch.float64) + 0.5
    return logits, target.reshape(target_shape), upstream


def _sharded_logits(mesh, case: dict) -> dict:
    logits, target, upstream = logits_batch(case["shape"], case["ignore_index"])
    x = distribute_tensor(logits, mesh, [Shard(1)]).requires_grad_()
    loss = LF.cross_entropy(x, target, ignore_index=case["ignore_index"],
                            reduction=case["reduction"], label_smoothing=case["label_smoothing"])
    objective = (loss * upstream).sum() if case["reduction"] == "none" else loss
    objective.backward()
    return {"loss": loss.detach(), "grad": x.grad.full_tensor(),
            "local_columns": x.grad.to_local().shape[1]}


def _replicated_logits(mesh) -> dict:
    logits, target, _ = logits_batch((6, VOCAB), -100)
    x = distribute_tensor(logits, mesh, [Replicate()]).requires_grad_()
    loss = LF.cross_entropy(x, target)
    loss.backward()
    return {"loss": loss.detach(), "grad": x.grad.full_tensor()}


def _unsupported(mesh) -> dict:
    """The message of each layout losskit refuses (None where it did not raise)."""
    hidden, weight, _, target = tp_batch()
    logits, y, _ = logits_batch((6, VOCAB), -100)
    h = distribute_tensor(hidden, mesh, [Replicate()])
    attempts = {
        "row-parallel head": lambda: LF.linear_cross_entropy(
            h, distribute_tensor(weight, mesh, [Shard(1)]), target),
        "plain head": lambda: LF.linear_cross_entropy(h, weight, target),
        "class weight": lambda: LF.linear_cross_entropy(
            h, distribute_tensor(weight, mesh, [Shard(0)]), target,
            weight=torch.ones(VOCAB, dtype=torch.float64)),
        "logits sharded by rows": lambda: LF.cross_entropy(
            distribute_tensor(logits, mesh, [Shard(0)]), y),
    }
    messages = {}
    for name, attempt in attempts.items():
        try:
            attempt()
            messages[name] = None
        except ValueError as e:
            messages[name] = f"{type(e).__name__}: {e}"
    return messages


def run_all(rank: int, world: int, out: str) -> None:
    mesh = init_device_mesh("cpu", (world,))
    results = {
        "fsdp": {kind: _fsdp_step(rank, kind) for kind in ("function", "module")},
        "fsdp_tied": _fsdp_tied_step(rank),
        "fsdp_bfloat16": {kind: _fsdp_bfloat16(rank, kind) for kind in ("function", "module")},
        "tp_head": _tp_head(mesh),
        "logits": [_sharded_logits(mesh, case) for case in LOGITS_CASES],
        "replicated_logits": _replicated_logits(mesh),
        "unsupported": _unsupported(mesh),
    }
    torch.save(results, os.path.join(out, f"rank{rank}.pt"))
