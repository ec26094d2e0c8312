"""Process-group queries that also work without ``torch.distributed``: one process is world 1."""

from __future__ import annotations

import torch.distributed as dist
from torch import Tensor

__all__ = ["all_reduce_sum_", "is_distributed", "rank", "world_size"]


def is_distributed() -> bool:
    """Whether a ``torch.distributed`` default process group is initialised.

    >>> is_distributed()
    False
    """
    return dist.is_available() and dist.is_initialized()


def rank(group: dist.ProcessGroup | None = None) -> int:
    """This process's rank in ``group`` (the default group), 0 without torch.distributed.

    >>> rank()
    0
    """
    return dist.get_rank(group) if is_distributed() else 0


def world_size(group: dist.ProcessGroup | None = None) -> int:
    """Number of processes in ``group`` (the default group), 1 without torch.distributed.

    >>> world_size()
    1
    """
    return dist.get_world_size(group) if is_distributed() else 1


def all_reduce_sum_(t: Tensor, *, group: dist.ProcessGroup | None = None) -> Tensor:
    """Sum ``t`` over the ranks of ``group`` in place and return it; a no-op in one process.

    >>> all_reduce_sum_(torch.tensor([1.0, 2.0]))
    tensor([1., 2.])
    """
    if is_distributed() and dist.get_world_size(group) > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group)
    return t
