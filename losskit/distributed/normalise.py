r"""Loss normalisation across gradient accumulation and ``torch.distributed`` ranks.

The bug this module exists to prevent: when every micro-batch (or every rank) averages its own
loss, a batch split into parts with different numbers of counted tokens (padding, ignore_index,
class weights) weighs the tokens of small parts more. The gradient then depends on how the data
happened to be split. The fix is to sum per-token losses everywhere and divide once by the total
count of the optimizer step, over all micro-batches of all ranks:

.. math::
    L = \frac{\sum_{r} \sum_{k} s_{r,k}}{\sum_{r} \sum_{k} n_{r,k}}

where :math:`s_{r,k}` and :math:`n_{r,k}` come from :func:`loss_sum_and_count` for micro-batch
``k`` on rank ``r``. DDP averages gradients over the ``W`` ranks, so each rank scales its
gradient of :math:`\sum_k s_{r,k}` by :math:`W / \sum n` (see :class:`GlobalMean`).

Everything here is a no-op wrapper in a single process, so the same loop runs with or without
``torchrun``. See docs/scaling-out.md for the recipes and what each collective costs.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from losskit import registry
from losskit.distributed.group import all_reduce_sum_, world_size
from losskit.losses.classification import count_targets

__all__ = ["GlobalMean", "count_targets", "global_denominator", "loss_sum_and_count"]


# ----------------------------------------------------------------------------------------------
# (sum, count) of one micro-batch


def _with_reduction(loss_fn: nn.Module, reduction: str) -> nn.Module:
    """A shallow copy of ``loss_fn`` that reduces with ``reduction`` (buffers are shared)."""
    twin: Any = copy.copy(loss_fn)  # a loss Module: its `reduction` is a str attribute
    twin.reduction = reduction
    return twin


def _count_dtype(dtype: torch.dtype) -> torch.dtype:
    # Counts stay exact in float32 up to 2**24 tokens per step; never count in (b)float16.
    return torch.promote_types(dtype, torch.float32)


def loss_sum_and_count(loss_fn: Callable[..., Tensor], *tensors: Tensor) -> tuple[Tensor, Tensor]:
    r"""Split ``loss_fn(*tensors)``'s mean into its numerator and denominator.

    Returns ``(loss_sum, count)`` with ``loss_sum / count == loss_fn(*tensors)`` for
    ``reduction="mean"``, both 0-d tensors on the first tensor's device, computed without a host
    sync. ``loss_sum`` is the Module called with ``reduction="sum"`` (its own code, not a
    re-derivation), so it carries the gradient; ``count`` has none. Whatever
    ``loss_fn.reduction`` is set to, the count is that of ``"mean"`` (of ``"batchmean"`` for a
    ``KLDivLoss`` that uses it).

    The count comes from the loss's registry record (:attr:`losskit.registry.LossRecord.mean_count`,
    listed per loss in docs/scaling-out.md): for cross-entropy and NLL with class indices it is
    :math:`\sum_i w_{y_i}` over the non-ignored :math:`i`; for probability targets the rows; for
    the pointwise losses the elements. Works with losskit's Modules and with their ``torch.nn``
    twins (same attributes). A loss whose ``"mean"`` is not a mean of counted terms (Dice, a ratio
    of sums) or that losskit does not know counts the batch: :math:`n` = ``tensors[1].shape[0]``
    and ``loss_sum = loss_fn(*tensors) * n``, which assumes a per-sample mean.

    Example:
        >>> ce = torch.nn.CrossEntropyLoss(ignore_index=-100)
        >>> x, y = torch.zeros(3, 4), torch.tensor([1, -100, 2])
        >>> s, n = loss_sum_and_count(ce, x, y)
        >>> s, n, bool(torch.isclose(s / n, ce(x, y)))
        (tensor(2.7726), tensor(2.), True)
    """
    record = registry.lookup(loss_fn)
    if record is None or record.mean_count is None or not isinstance(loss_fn, nn.Module):
        rows = tensors[-1] if len(tensors) > 1 else tensors[0]  # e.g. CTC's target_lengths
        # a tuple or list of lengths counts its items
        batch = (rows.shape[0] if rows.dim() > 0 else 1) if isinstance(rows, Tensor) else len(rows)
        n = registry.count_full(tensors[0], batch)
        if isinstance(loss_fn, nn.Module) and getattr(loss_fn, "reduction", "mean") != "mean":
            loss_fn = _with_reduction(loss_fn, "mean")
        return loss_fn(*tensors) * n, n
    # The loss runs first: its own input checks (a LossInputError with the fix) speak before
    # the count's shape arithmetic could fail with a bare torch error.
    loss_sum = _with_reduction(loss_fn, "sum")(*tensors)
    return loss_sum, record.mean_count(loss_fn, *tensors)


# ----------------------------------------------------------------------------------------------
# One denominator per optimizer step


def global_denominator(
    counts: Tensor | Iterable[Tensor],
    *,
    group: dist.ProcessGroup | None = None,
    grads_averaged: bool = True,
) -> Tensor:
    r"""The number to divide each micro-batch's loss sum by, so gradients match one big batch.

    .. math::
        D = \frac{\sum_{r} \sum_k n_{r,k}}{W} \quad (\text{or } \sum_r \sum_k n_{r,k}
        \text{ with } \texttt{grads\_averaged=False})

    ``counts`` are this rank's counts for every micro-batch of the coming optimizer step (known
    before the forward pass for token losses: ``(target != ignore_index).sum()``). One all-reduce
    of one number. ``W`` = world size undoes DDP's gradient averaging; pass
    ``grads_averaged=False`` when the gradients are summed over ranks instead. A total of 0
    gives 1 (every loss sum is then 0, so gradients are 0, not NaN).

    Example:
        >>> global_denominator([torch.tensor(3.0), torch.tensor(5.0)])
        tensor(8.)
    """
    parts = [counts] if isinstance(counts, Tensor) else list(counts)
    total = torch.stack([c.to(_count_dtype(c.dtype)) for c in parts]).sum()
    all_reduce_sum_(total, group=group)
    if grads_averaged:
        total = total / world_size(group)
    return torch.where(total == 0, torch.ones_like(total), total)


class GlobalMean:
    r"""Accumulate loss sums and counts over micro-batches; normalise once per optimizer step.

    For loops where the count is only known after the forward pass. Call the instance like the
    loss: it returns the micro-batch's loss *sum* to backpropagate. Before ``optimizer.step()``,
    :meth:`scale_grads_` all-reduces the step's (sum, count) pair once and multiplies every
    gradient by :math:`W / \sum n` (``W`` = world size, undoing DDP's average), so the update is
    that of the global mean :math:`\sum s / \sum n`. It returns that mean (detached) for logging
    and starts the next step.

    Example:
        >>> model = torch.nn.Linear(3, 4)
        >>> loss_fn = torch.nn.CrossEntropyLoss()
        >>> norm = GlobalMean(loss_fn)
        >>> x, y = torch.randn(5, 3), torch.tensor([0, 1, -100, 3, -100])
        >>> for xb, yb in zip(x.split(2), y.split(2)):
        ...     norm(model(xb), yb).backward()
        >>> mean = norm.scale_grads_(model.parameters())
        >>> bool(torch.isclose(mean, loss_fn(model(x), y)))
        True
    """

    def __init__(
        self,
        loss_fn: Callable[[Tensor, Tensor], Tensor],
        *,
        group: dist.ProcessGroup | None = None,
        grads_averaged: bool = True,
    ) -> None:
        self.loss_fn = loss_fn
        self.group = group
        self.grads_averaged = grads_averaged
        self._totals: Tensor | None = None  # (2,): loss sum, count of this rank's micro-batches

    def __call__(self, *tensors: Tensor) -> Tensor:
        loss_sum, count = loss_sum_and_count(self.loss_fn, *tensors)
        pair = torch.stack([loss_sum.detach().to(count.dtype), count])
        self._totals = pair if self._totals is None else self._totals + pair
        return loss_sum

    def scale_grads_(self, parameters: Iterable[Tensor]) -> Tensor:
        """Scale the accumulated gradients to the global mean's; return the global mean loss."""
        if self._totals is None:
            raise RuntimeError(
                "GlobalMean.scale_grads_: no micro-batch was seen since the last step. Fix: call "
                "the GlobalMean instance on each micro-batch's (output, target) before scaling."
            )
        totals, self._totals = all_reduce_sum_(self._totals, group=self.group), None
        loss_sum, count = totals.unbind()
        safe = torch.where(count == 0, torch.ones_like(count), count)
        scale = (world_size(self.group) if self.grads_averaged else 1) / safe
        for p in parameters:
            if p.grad is not None:
                p.grad.mul_(scale.to(device=p.grad.device, dtype=p.grad.dtype))
        return loss_sum / safe
