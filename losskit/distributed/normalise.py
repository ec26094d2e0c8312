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

import torch
import torch.distributed as dist
from torch import Tensor, nn

from losskit.distributed.group import all_reduce_sum_, world_size

__all__ = ["GlobalMean", "count_targets", "global_denominator", "loss_sum_and_count"]


# ----------------------------------------------------------------------------------------------
# (sum, count) of one micro-batch


def _with_reduction(loss_fn: nn.Module, reduction: str) -> nn.Module:
    """A shallow copy of ``loss_fn`` that reduces with ``reduction`` (buffers are shared)."""
    twin = copy.copy(loss_fn)
    twin.reduction = reduction
    return twin


def _full(like: Tensor, value: float) -> Tensor:
    # A fill on the device: no host-to-device copy, no sync.
    return torch.full((), value, dtype=_count_dtype(like.dtype), device=like.device)


def _count_dtype(dtype: torch.dtype) -> torch.dtype:
    # Counts stay exact in float32 up to 2**24 tokens per step; never count in (b)float16.
    return torch.promote_types(dtype, torch.float32)


def count_targets(
    target: Tensor, *, weight: Tensor | None = None, ignore_index: int = -100
) -> Tensor:
    r"""The denominator of cross-entropy's / NLL's ``"mean"``, from the class-index targets alone.

    :math:`\sum_i w_{y_i}` over the :math:`i` with :math:`y_i \neq` ``ignore_index`` (their
    number when ``weight`` is None), as a 0-d float tensor on ``target``'s device. Known before
    the forward pass, so a loop can all-reduce the step's total early (:func:`global_denominator`).

    Example:
        >>> y = torch.tensor([0, -100, 2, 1])
        >>> count_targets(y), count_targets(y, weight=torch.tensor([1.0, 2.0, 3.0]))
        (tensor(3.), tensor(6.))
    """
    counted = target != ignore_index  # target's shape
    if weight is None:
        return counted.sum().to(torch.get_default_dtype())
    safe = torch.where(counted, target, torch.zeros_like(target)).long()
    return (weight[safe] * counted).sum().to(_count_dtype(weight.dtype))


_POINTWISE = (nn.MSELoss, nn.L1Loss, nn.HuberLoss, nn.SmoothL1Loss, nn.BCELoss,
              nn.BCEWithLogitsLoss, nn.KLDivLoss)


def _count(loss_fn: nn.Module, input: Tensor, target: Tensor) -> Tensor | None:
    """The denominator of ``loss_fn``'s ``reduction="mean"``, or None for an unknown loss."""
    from losskit import modules  # local import: the distributed helpers sit beside the modules

    if isinstance(loss_fn, (nn.CrossEntropyLoss, nn.NLLLoss)):
        if target.shape == input.shape and isinstance(loss_fn, nn.CrossEntropyLoss):
            class_dim = 1 if input.dim() >= 2 else 0
            return _full(input, input.numel() // max(input.shape[class_dim], 1))  # N*d1*..*dk
        n = count_targets(target, weight=loss_fn.weight, ignore_index=loss_fn.ignore_index)
        return n.to(_count_dtype(torch.promote_types(n.dtype, input.dtype)))
    if isinstance(loss_fn, modules.FocalLoss):
        if target.shape == input.shape and target.is_floating_point():
            return _full(input, input.numel())
        n = count_targets(target, ignore_index=loss_fn.ignore_index)
        return n.to(_count_dtype(input.dtype))
    if isinstance(loss_fn, nn.KLDivLoss) and loss_fn.reduction == "batchmean":
        return _full(input, input.shape[0] if input.dim() > 0 else 1)
    if isinstance(loss_fn, _POINTWISE):
        return _full(input, torch.broadcast_shapes(input.shape, target.shape).numel())
    return None


def loss_sum_and_count(
    loss_fn: Callable[[Tensor, Tensor], Tensor], input: Tensor, target: Tensor
) -> tuple[Tensor, Tensor]:
    r"""Split ``loss_fn(input, target)``'s mean into its numerator and denominator.

    Returns ``(loss_sum, count)`` with ``loss_sum / count == loss_fn(input, target)`` for
    ``reduction="mean"``, both 0-d tensors on ``input``'s device, computed without a host sync.
    ``loss_sum`` is the module called with ``reduction="sum"`` (its own code, not a re-derivation),
    so it carries the gradient; ``count`` has none. Whatever ``loss_fn.reduction`` is set to, the
    count is that of ``"mean"`` (of ``"batchmean"`` for a ``KLDivLoss`` that uses it).

    ============================================  ==================================================
    loss                                          count
    ============================================  ==================================================
    CrossEntropyLoss / NLLLoss, class indices     :math:`\sum_i w_{y_i}` over non-ignored :math:`i`
                                                  (their number without ``weight``; label
                                                  smoothing keeps this denominator)
    CrossEntropyLoss, class probabilities         :math:`N d_1 \cdots d_k` (rows)
    MSE, L1, Huber, SmoothL1, BCE, BCEWithLogits  elements of the (broadcast) loss
    KLDivLoss                                     ``input.size(0)`` for ``"batchmean"``, else
                                                  elements
    FocalLoss                                     non-ignored targets (elements for binary)
    DiceLoss                                      :math:`n` = batch size, with ``loss_sum =
                                                  mean * n``: approximate, the Dice ratio of a
                                                  union is not a weighted mean of its parts
    anything else                                 :math:`n` = ``target.shape[0]``, ``loss_sum =
                                                  loss_fn(input, target) * n`` (assumes a
                                                  per-sample mean)
    ============================================  ==================================================

    Works with losskit's modules and with their ``torch.nn`` twins (same attributes).
    For ``LinearCrossEntropyLoss`` (``forward(input, target)``, the head is its own) call it
    with ``reduction="sum"`` and count with :func:`count_targets` instead.

    Example:
        >>> ce = torch.nn.CrossEntropyLoss(ignore_index=-100)
        >>> x, y = torch.zeros(3, 4), torch.tensor([1, -100, 2])
        >>> s, n = loss_sum_and_count(ce, x, y)
        >>> s, n, bool(torch.isclose(s / n, ce(x, y)))
        (tensor(2.7726), tensor(2.), True)
    """
    from losskit import modules

    if isinstance(loss_fn, modules.DiceLoss):
        n = _full(input, input.shape[0])
        return _with_reduction(loss_fn, "mean")(input, target) * n, n
    counted = (nn.CrossEntropyLoss, nn.NLLLoss, modules.FocalLoss, *_POINTWISE)
    if not isinstance(loss_fn, counted):  # a loss whose "mean" denominator is unknown
        n = _full(input, target.shape[0] if target.dim() > 0 else 1)
        return loss_fn(input, target) * n, n
    # The loss runs first: its own input checks (a LossInputError with the fix) speak before
    # the count's shape arithmetic could fail with a bare torch error.
    loss_sum = _with_reduction(loss_fn, "sum")(input, target)
    return loss_sum, _count(loss_fn, input, target)


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

    def __call__(self, input: Tensor, target: Tensor) -> Tensor:
        loss_sum, count = loss_sum_and_count(self.loss_fn, input, target)
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
