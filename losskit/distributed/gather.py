"""``all_gather`` that carries the gradient back to every rank's rows.

``torch.distributed.all_gather`` returns tensors with no autograd history, so a contrastive
loss that uses the other ranks' embeddings as negatives gets no gradient through them: each
rank then trains as if the gathered keys were constants, a silent bug. :func:`all_gather_rows`
is an autograd function: forward concatenates every rank's rows (sizes may differ between
ranks), backward sums the gradient of the concatenation over the ranks (each rank's loss used
every row) and hands each rank the slice of its own rows.

With each rank's loss built from its own queries against the gathered keys, a backward on
every rank gives rank r's rows the gradient of the **sum of the ranks' losses**; DDP's average
over ranks then divides by the world size, which is the gradient of the mean of the losses.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from losskit.distributed.group import is_distributed

__all__ = ["all_gather_rows"]


def _sizes(x: Tensor, group) -> list[int]:
    """Rows held by each rank (one small all_gather)."""
    mine = torch.tensor([x.shape[0]], device=x.device)
    sizes = [torch.zeros_like(mine) for _ in range(dist.get_world_size(group))]
    dist.all_gather(sizes, mine, group=group)
    return [int(s) for s in sizes]


def _gather(x: Tensor, sizes: list[int], group) -> Tensor:
    """Every rank's rows of ``x``, padded to the largest rank for the collective, in rank order."""
    most = max(sizes)
    padded = torch.zeros((most, *x.shape[1:]), dtype=x.dtype, device=x.device)
    padded[: x.shape[0]] = x
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded.contiguous(), group=group)
    return torch.cat([p[:n] for p, n in zip(parts, sizes, strict=True)])  # (sum(sizes), ...)


class _AllGatherRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, sizes, group):
        ctx.sizes, ctx.group = sizes, group
        return _gather(x, sizes, group)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)  # every rank's loss
        start = sum(ctx.sizes[: dist.get_rank(ctx.group)])
        return grad[start : start + ctx.sizes[dist.get_rank(ctx.group)]], None, None


def all_gather_rows(x: Tensor, *, group=None) -> tuple[Tensor, int]:
    """Concatenate every rank's ``x`` along dim 0, with gradient; and where this rank's rows
    start in the result. Without ``torch.distributed`` (or one rank): ``(x, 0)``.

    >>> x = torch.ones(2, 3)
    >>> gathered, start = all_gather_rows(x)
    >>> gathered is x, start
    (True, 0)
    """
    if not is_distributed() or dist.get_world_size(group) == 1:
        return x, 0
    sizes = _sizes(x, group)
    start = sum(sizes[: dist.get_rank(group)])
    if x.requires_grad and x.is_floating_point():
        return _AllGatherRows.apply(x, sizes, group), start
    return _gather(x, sizes, group), start
