"""Divergences between distributions: Kullback-Leibler."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from losskit import _reduction, checks, registry
from losskit.losses import _explain as _ex
from losskit.losses._common import REDUCTION_ENUM, op_runs_directly

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
    if checks.values_enabled(loss, input, target):
        checks.check_finite(loss, allow_neg_inf=True, input=input)
        checks.check_finite(loss, allow_neg_inf=log_target, target=target)
        checks.check_kl_target(loss, target, log_target)
        checks.check_kl_input_is_log_probabilities(loss, input)
    if reduction != "mean" and op_runs_directly(size_average, reduce, input, target):
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


# ----------------------------------------------------------------------------------------------
# What `losskit explain` prints and draws (registry.Explain); the gradients are checked against
# autograd in tests/test_explain.py.


def _kl_steps(x, p, reduction="mean", log_target=False):
    logp = p if log_target else p.log()
    p = logp.exp()
    terms = p * (logp - x)
    rows = [("log p (target)", logp), ("p (log p - x) per class", terms),
            ("l per row = sum over classes", terms.sum(dim=1))]
    if reduction == "batchmean":
        return [*rows, (f"batchmean: sum / {x.shape[0]} rows", terms.sum() / x.shape[0])]
    return rows + _ex.reduce_step(terms, reduction)


def _kl_curve(t, p0=0.7):
    x = torch.stack([t, torch.zeros_like(t)], dim=1).log_softmax(dim=1)  # (n, 2)
    p = torch.tensor([p0, 1 - p0], dtype=t.dtype).expand_as(x)
    return kl_div(x, p, reduction="none").sum(dim=1)


registry.describe(kl_div, registry.Explain(
    formula="l = sum_c p_c (log p_c - x_c)  (x: model log-probabilities, p: target "
            "probabilities; 0 where p_c = 0)",
    latex=r"\ell = \sum_c p_c(\log p_c - x_c)",
    derivative="dl/dx_c = -p_c  (log_target: -exp(y_c))",
    derivative_latex=r"\partial\ell/\partial x_c = -p_c",
    gradient=lambda x, p, log_target=False, **kw: -(p.exp() if log_target else p),
    example=_ex.example(torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3]]).double().log(),
                        [[0.4, 0.4, 0.2], [0.2, 0.5, 0.3]],
                        reduction="batchmean"),
    steps=_kl_steps,
    curve=registry.Curve("logit z_0 of 2 classes (input = log_softmax([z_0, 0]))", _kl_curve,
                         tuple((f"target p_0={v}", {"p0": v}) for v in (0.5, 0.7, 0.9)),
                         span=(-5.0, 5.0)),
    convex=True, bounded_gradient=True,
    robust="no: a class the model gives probability near 0 but the target does not costs "
           "without bound",
    note="linear in its input x; through log_softmax it is soft-target cross-entropy minus the "
         "target's entropy, the curve drawn",
))
