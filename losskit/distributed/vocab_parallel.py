r"""Cross-entropy of logits sharded over the class dimension across ranks (tensor parallelism).

With a large vocabulary the output layer is often split by columns: rank ``r`` of ``W`` holds
classes ``[start_r, start_r + V_r)`` of the logits (``V_r = V / W`` when ``W`` divides ``V``).
The loss needs three numbers per token that no rank has alone; each comes from one collective:

1. the row maximum :math:`m` (all-reduce MAX), which keeps :math:`e^{x - m}` finite;
2. :math:`\sum_c e^{x_c - m}`, the target logit (only the owning rank picks it, the others add
   0) and, with label smoothing, :math:`\sum_c (x_c - m)`: one all-reduce SUM of ``(3, N)``.

Then :math:`\log Z = m + \log \sum_c e^{x_c - m}` and, with smoothing :math:`\varepsilon`,

.. math::
    l_n = (1 - \varepsilon)(\log Z_n - x_{n,y_n})
          + \frac{\varepsilon}{V} \sum_c (\log Z_n - x_{n,c}),

exactly :func:`torch.nn.functional.cross_entropy`'s formula. The gradient on each shard is
local, no communication in the backward pass:

.. math::
    \frac{\partial l_n}{\partial x_{n,c}} = p_{n,c} - (1 - \varepsilon)[c = y_n]
    - \frac{\varepsilon}{V}, \qquad p_{n,c} = e^{x_{n,c} - \log Z_n}.

Values checks run only on the target, which every rank holds whole: a check on a shard could
raise on one rank and leave the others waiting in the next collective. Ranks that disagree (token
count, options, logits dtype, a checksum of the target) are found by the metadata all-gather that
also yields the shard offsets, and raise on every rank alike. A shard may be empty (V < W).

References: Shoeybi et al., "Megatron-LM: Training Multi-Billion Parameter Language Models Using
Model Parallelism", 2019 (section 3, parallel output embedding and cross-entropy).
"""

from __future__ import annotations

from typing import cast

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from losskit import _reduction
from losskit.checks import (
    LossInputError,
    LossRuntimeError,
    check_class_index_range,
    check_floating_input,
    check_not_all_ignored,
    check_same_device,
    index_range_enabled,
    values_enabled,
)
from losskit.distributed.group import rank, world_size

__all__ = ["vocab_parallel_cross_entropy", "vocab_parallel_linear_cross_entropy"]

_LOSS = "vocab_parallel_cross_entropy"
_REDUCTION_CODES = {"none": 0.0, "mean": 1.0, "sum": 2.0}
_REDUCTION_NAMES = {v: k for k, v in _REDUCTION_CODES.items()}
# Every torch dtype, in an order all ranks of one torch install share: its index is its code.
_DTYPES = sorted({v for v in vars(torch).values() if isinstance(v, torch.dtype)}, key=str)
# Mersenne prime 2^31 - 1: residues below 2^31, so a product of two fits int64 and float64 holds
# every residue exactly; prime, so changing one or two target entries always moves the checksum.
_CHECKSUM_PRIME = 2**31 - 1


def _all_reduce(t: Tensor, op: dist.ReduceOp.RedOpType, group: dist.ProcessGroup | None) -> None:
    if world_size(group) > 1:
        dist.all_reduce(t, op=op, group=group)


# ----------------------------------------------------------------------------------------------
# Shard layout and the cross-rank agreement check


def _target_checksum(target: Tensor) -> Tensor:
    """(sum, position-weighted sum) of ``target``'s class indices modulo ``_CHECKSUM_PRIME``.

    Int64 on ``target``'s device, no host sync. Two targets that differ in one or two entries
    always get different checksums (a prime modulus has no zero divisors, given fewer than 2^31
    tokens and entries less than 2^31 apart); others almost always do. The sums are exact below
    2^32 tokens; beyond that int64 wraps, the same way on every rank.
    """
    p = _CHECKSUM_PRIME
    residue = target.remainder(p)  # (M,) in [0, p)
    position = torch.arange(1, target.numel() + 1, device=target.device).remainder(p)  # (M,)
    weighted = (residue * position).remainder(p)  # (M,): each < 2^31, so the sum fits int64
    return torch.stack([residue.sum(), weighted.sum()]).remainder(p)  # (2,)


def _differs(name: str, shown: list[str], why: str, fix: str) -> LossInputError:
    per_rank = ", ".join(f"rank {r}: {v}" for r, v in enumerate(shown))
    return LossInputError(f"{_LOSS}: `{name}` differs between ranks ({per_rank}). {why} Fix: {fix}")


_SAME_CALL = (
    "Every rank must pass the same targets (all tokens, whole) and the same options; only the "
    "logits are sharded.",
    "pass identical `target`, ignore_index, label_smoothing and reduction on every rank of the "
    "group.",
)
# Columns 1.. of the gathered metadata row (column 0 is the shard size): name, how a rank's
# entry is shown, why a difference is wrong, the fix. Checked in this order; the first differing
# one is reported.
_AGREED = (
    ("tokens", lambda row: str(int(row[1])), *_SAME_CALL),
    ("ignore_index", lambda row: str(int(row[2])), *_SAME_CALL),
    ("label_smoothing", lambda row: repr(row[3]), *_SAME_CALL),
    ("reduction", lambda row: repr(_REDUCTION_NAMES[row[4]]), *_SAME_CALL),
    ("logits_shard.dtype", lambda row: str(_DTYPES[int(row[5])]),
     "The collectives that follow add the ranks' numbers up element by element, so mixed dtypes "
     "abort (gloo) or give garbage or a hang (NCCL).",
     "give every rank's shard one dtype, e.g. `logits_shard.float()` on each rank or the same "
     "autocast everywhere (for vocab_parallel_linear_cross_entropy: `hidden` and "
     "`weight_shard`)."),
    ("target", lambda row: f"checksum {int(row[6])}/{int(row[7])}",
     "The checksum is the sum / position-weighted sum of the class indices modulo 2^31 - 1. Each "
     "token's target logit comes from the rank whose shard holds its class, so targets that "
     "differ give a wrong loss on every rank, without an error.",
     "pass the same whole `target` on every rank of the group, e.g. built from the same batch "
     "or `dist.broadcast(target, src, group=group)` from one rank."),
)


def _shard_layout(
    x: Tensor,  # (M, V_r) this rank's logits
    target: Tensor,  # (M,) int64
    options: tuple[int, float, str],
    group: dist.ProcessGroup | None,
) -> tuple[int, int]:
    """(vocab_start, vocab_size) from one all-gather of each rank's metadata row.

    The row holds the shard size, the token count, the options, the logits dtype and a checksum
    of the target. Raises LossInputError on every rank alike when the ranks disagree on any but
    the shard size, so no rank is left waiting in (or aborted by) a later collective.
    """
    my_rank, world = rank(group), world_size(group)
    ignore_index, label_smoothing, reduction = options
    settings = [x.shape[1], x.shape[0], ignore_index, label_smoothing,
                _REDUCTION_CODES[reduction], _DTYPES.index(x.dtype)]
    meta = torch.cat([
        torch.tensor(settings, dtype=torch.float64, device=x.device),
        _target_checksum(target).double(),  # exact: residues < 2^31
    ])  # (8,)
    gathered = [torch.empty_like(meta) for _ in range(world)]
    if world > 1:
        dist.all_gather(gathered, meta, group=group)
    else:
        gathered = [meta]
    table = torch.stack(gathered).cpu().tolist()  # (world, 8): the one host sync
    for name, show, why, fix in _AGREED:
        shown = [show(row) for row in table]
        if any(v != shown[0] for v in shown):
            raise _differs(name, shown, why, fix)
    sizes = [int(row[0]) for row in table]
    return sum(sizes[:my_rank]), sum(sizes)


# ----------------------------------------------------------------------------------------------
# The autograd Function: per-token losses forward, shard-local gradient backward


class _VocabParallelCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx,
        logits: Tensor,  # (M, V_r)
        target: Tensor,  # (M,) int64, global class indices
        vocab_start: int,
        vocab_size: int,
        ignore_index: int,
        label_smoothing: float,
        group: dist.ProcessGroup | None,
    ) -> Tensor:
        x = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
        tokens, local_vocab = x.shape
        # 1. Global row max (a shard may be empty when V < W: it contributes -inf).
        empty = x.new_full((tokens,), float("-inf"))
        row_max = x.detach().amax(dim=1) if local_vocab else empty  # (M,)
        _all_reduce(row_max, dist.ReduceOp.MAX, group)
        row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
        shifted = x - row_max[:, None]  # (M, V_r)
        # 2. Local sums, then one all-reduce: sum of exps, target logit, sum of logits.
        counted = target != ignore_index
        local = target - vocab_start
        owned = counted & (local >= 0) & (local < local_vocab)
        index = torch.where(owned, local, torch.zeros_like(local))  # (M,)
        if local_vocab:
            picked = shifted.gather(1, index[:, None]).squeeze(1)
            picked = torch.where(owned, picked, torch.zeros_like(picked))
        else:
            picked = x.new_zeros(tokens)
        smooth = shifted.sum(1) if label_smoothing > 0 else x.new_zeros(tokens)
        stats = torch.stack([shifted.exp().sum(1), picked, smooth])  # (3, M)
        _all_reduce(stats, dist.ReduceOp.SUM, group)
        sum_exp, target_logit, sum_shifted = stats.unbind()
        log_z = sum_exp.log()  # log Z - m
        loss = log_z - target_logit  # -log p_y
        if label_smoothing > 0:
            uniform = log_z - sum_shifted / vocab_size  # (1/V) sum_c -log p_c
            loss = (1 - label_smoothing) * loss + label_smoothing * uniform
        loss = torch.where(counted, loss, torch.zeros_like(loss))  # (M,)
        ctx.save_for_backward(logits, row_max + log_z, index, owned, counted)
        ctx.label_smoothing, ctx.vocab_size = label_smoothing, vocab_size
        return loss

    @staticmethod
    def backward(ctx, grad_loss: Tensor):
        logits, log_z, index, owned, counted = ctx.saved_tensors
        eps, vocab = ctx.label_smoothing, ctx.vocab_size
        x = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
        grad = torch.exp(x - log_z[:, None])  # p, (M, V_r)
        if eps > 0:
            grad = grad - eps / vocab
        if x.shape[1]:
            hit = owned.to(grad.dtype)[:, None] * -(1 - eps)  # (M, 1)
            grad = grad.scatter_add(1, index[:, None], hit)
        scale = torch.where(counted, grad_loss, torch.zeros_like(grad_loss))  # (M,)
        grad = grad * scale[:, None]
        return grad.to(logits.dtype), None, None, None, None, None, None


# ----------------------------------------------------------------------------------------------
# Public functions


def vocab_parallel_cross_entropy(
    logits_shard: Tensor,
    target: Tensor,
    *,
    group: dist.ProcessGroup | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    vocab_start: int | None = None,
    vocab_size: int | None = None,
) -> Tensor:
    r"""Cross-entropy of logits whose class dimension is split across the ranks of ``group``.

    Equal to ``F.cross_entropy(full_logits.reshape(-1, V), target.reshape(-1), ...)`` with
    ``full_logits`` the shards concatenated in rank order, on every rank; the gradient of each
    shard stays on its rank. See the module docstring for the math.

    Args:
        logits_shard: ``(..., V_r)`` this rank's columns, **class dim last** (as a language
            model's ``(B, T, V)`` output, unlike :func:`~losskit.functional.cross_entropy`).
            Shards may be uneven (V = 50257 over 4 ranks works).
        target: ``(...)`` global class indices in ``[0, V)``, the same whole tensor on every rank.
        group: the process group the class dimension is split over (default: the world).
        ignore_index: target value that contributes nothing.
        reduction: ``"mean"`` divides by the number of non-ignored targets (0, not NaN, when all
            are ignored), ``"sum"``, or ``"none"`` (``target``'s shape).
        label_smoothing: :math:`\varepsilon \in [0, 1]`.
        vocab_start, vocab_size: this shard's first class and the total class count. Give both
            to skip the metadata all-gather (and with it the check that all ranks agree).

    Cost per call: an all-reduce MAX of N numbers and an all-reduce SUM of 3N, plus, unless
    ``vocab_start``/``vocab_size`` are given, an all-gather of 8 numbers per rank read on the host
    (one device sync) that yields the shard offsets and detects ranks that disagree on the token
    count, an option, the logits dtype or the target (by a checksum of its values).

    Example (one process: the shard is the whole vocabulary):
        >>> x = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
        >>> vocab_parallel_cross_entropy(x, torch.tensor([0, 2]), reduction="none")
        tensor([0.2395, 1.0986])
    """
    reduction = _reduction.resolve(reduction)
    check_floating_input(_LOSS, logits_shard)
    check_same_device(_LOSS, logits_shard=logits_shard, target=target)
    if logits_shard.dim() < 1 or target.shape != logits_shard.shape[:-1]:
        raise LossInputError(
            f"{_LOSS}: `logits_shard` has shape {tuple(logits_shard.shape)} and `target` "
            f"{tuple(target.shape)}; expected target shaped like logits_shard without its last "
            f"(class) dim. Fix: put the classes last, e.g. `logits.movedim(1, -1)` for "
            f"(N, C, d1, ...) logits."
        )
    if target.dtype not in (torch.int64, torch.int32, torch.uint8):
        raise LossRuntimeError(
            f"{_LOSS}: `target` has dtype {target.dtype}; expected integer class indices. "
            f"Fix: `target.long()` for labels, or `target.argmax(-1)` for one-hot rows."
        )
    if not 0.0 <= label_smoothing <= 1.0:
        raise LossRuntimeError(
            f"{_LOSS}: label_smoothing must be between 0.0 and 1.0. Got: {label_smoothing}. "
            f"Fix: use a value such as 0.1."
        )
    if (vocab_start is None) != (vocab_size is None):
        raise LossInputError(
            f"{_LOSS}: got vocab_start={vocab_start} and vocab_size={vocab_size}; give both or "
            f"neither. Fix: drop both to have them gathered from the shard sizes."
        )
    # M from the target, not -1: an empty shard (V_r = 0, as when V < W) has no size to infer.
    x = logits_shard.reshape(target.numel(), logits_shard.shape[-1])  # (M, V_r)
    t = target.reshape(-1).long()  # (M,)
    if vocab_start is None:
        options = (ignore_index, float(label_smoothing), reduction)
        vocab_start, vocab_size = _shard_layout(x, t, options, group)
    if values_enabled(_LOSS, x, t) or index_range_enabled(t):
        # vocab_size comes with vocab_start or from _shard_layout above.
        check_class_index_range(_LOSS, t, cast(int, vocab_size), ignore_index)
        if reduction == "mean":
            check_not_all_ignored(_LOSS, t, ignore_index)
    rows = _VocabParallelCrossEntropy.apply(
        x, t, vocab_start, vocab_size, ignore_index, float(label_smoothing), group
    )
    if reduction == "none":
        return rows.reshape(target.shape).to(logits_shard.dtype)
    counted = (t != ignore_index).sum().to(rows.dtype)
    return _reduction.reduce(rows, reduction, counted).to(logits_shard.dtype)


class _CopyToShards(torch.autograd.Function):
    """Identity forward; the backward sums the gradient over the ranks (each shard's head
    contributes its part of d loss / d hidden)."""

    @staticmethod
    def forward(ctx, hidden: Tensor, group: dist.ProcessGroup | None) -> Tensor:
        ctx.group = group
        return hidden.view_as(hidden)

    @staticmethod
    def backward(ctx, grad: Tensor):
        grad = grad.contiguous()
        _all_reduce(grad, dist.ReduceOp.SUM, ctx.group)
        return grad, None


def vocab_parallel_linear_cross_entropy(
    hidden: Tensor,
    weight_shard: Tensor,
    target: Tensor,
    bias_shard: Tensor | None = None,
    **kwargs,
) -> Tensor:
    r"""Cross-entropy of a linear head whose rows (classes) are split across ranks.

    ``hidden @ weight_shard.T + bias_shard`` gives this rank's logit columns, then
    :func:`vocab_parallel_cross_entropy`. ``hidden`` is the same on every rank; its gradient is
    all-reduced (SUM) in the backward pass so every rank gets the full gradient. Each rank
    materialises only its ``(N, V_r)`` logits.

    Args:
        hidden: ``(..., D)``, replicated over the group.
        weight_shard: ``(V_r, D)``, this rank's rows of the ``(V, D)`` head weight.
        target: ``(...)`` global class indices.
        bias_shard: optional ``(V_r,)``.
        **kwargs: as :func:`vocab_parallel_cross_entropy` (``group``, ``ignore_index``, ...).

    Example:
        >>> h, W = torch.randn(4, 3), torch.randn(5, 3)
        >>> y = torch.tensor([0, 4, -100, 2])
        >>> a = vocab_parallel_linear_cross_entropy(h, W, y)
        >>> bool(torch.allclose(a, torch.nn.functional.cross_entropy(h @ W.T, y)))
        True
    """
    shared = _CopyToShards.apply(hidden, kwargs.get("group"))
    logits = F.linear(shared, weight_shard, bias_shard)  # (..., V_r)
    return vocab_parallel_cross_entropy(logits, target, **kwargs)
