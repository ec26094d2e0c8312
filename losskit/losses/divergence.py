"""Divergences between distributions: Kullback-Leibler."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from losskit import _reduction, checks, registry
from losskit.losses._common import REDUCTION_ENUM, has_override

__all__ = [
    "KLDivLoss",
    "kl_div",
]


def kl_div(
    input: Tensor,
    target: Tensor,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    log_target: bool = False,
) -> Tensor:
    r"""Kullback-Leibler divergence :math:`D(q \,\|\, p)` from log-probabilities :math:`x = \log p`.

    .. math::
        l_i = q_i (\log q_i - x_i) \quad (\text{0 where } q_i = 0), \qquad
        l_i = e^{y_i} (y_i - x_i) \text{ with } \texttt{log\_target}, \; y = \log q

    ``"batchmean"`` divides the sum by ``input.size(0)`` (the true KL per sample); ``"mean"``
    divides by the element count (torch warns about it on every call).

    Example:
        >>> p = torch.tensor([[0.5, 0.5]]); q = torch.tensor([[0.9, 0.1]])
        >>> kl_div(p.log(), q, reduction="batchmean")
        tensor(0.3681)
    """
    loss = "kl_div"
    reduction = _reduction.resolve(
        reduction, size_average, reduce, extra=("batchmean",), warn=False
    )
    checks.check_floating_input(loss, input)
    if input.device != target.device:
        checks.check_same_device(loss, input=input, target=target)
    if checks.values_enabled(loss):
        checks.check_finite(loss, allow_neg_inf=True, input=input)
        checks.check_finite(loss, allow_neg_inf=log_target, target=target)
        checks.check_kl_target(loss, target, log_target)
        checks.check_kl_input_is_log_probabilities(loss, input)
    legacy = size_average is not None or reduce is not None
    if reduction != "mean" and not legacy and not has_override(input, target):
        # torch's own op, as torch's wrapper calls it ("mean" goes through F.kl_div: it warns).
        batchmean = reduction == "batchmean"
        out = torch.kl_div(
            input, target, REDUCTION_ENUM["sum" if batchmean else reduction], log_target=log_target
        )
        return out / input.size(0) if batchmean and input.dim() != 0 else out
    return F.kl_div(input, target, size_average, reduce, reduction, log_target)


class KLDivLoss(nn.KLDivLoss):
    """KL divergence from log-probabilities; see :func:`losskit.functional.kl_div`.

    >>> p = torch.tensor([[0.5, 0.5]]); q = torch.tensor([[0.9, 0.1]])
    >>> KLDivLoss(reduction="batchmean")(p.log(), q)
    tensor(0.3681)
    """

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return kl_div(input, target, reduction=self.reduction, log_target=self.log_target)


# ----------------------------------------------------------------------------------------------
# Records


def _count_kl(loss_fn: nn.Module, input: Tensor, target: Tensor) -> Tensor:
    """``"batchmean"`` divides by the batch size, every other mean by the element count."""
    if loss_fn.reduction == "batchmean":
        return registry.count_rows(loss_fn, input, target)
    return registry.count_elements(loss_fn, input, target)


registry.register(registry.LossRecord(
    function=kl_div, module=KLDivLoss, family="divergence", input="log-probabilities",
    targets=("class-probabilities",),
    summary="KL(target || input) from log-probabilities; use reduction='batchmean'",
    mean_count=_count_kl, torch_function=F.kl_div, torch_module=nn.KLDivLoss,
    estimates="probabilities",
))
