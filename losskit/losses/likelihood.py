r"""Likelihood losses: negative log-likelihoods of Poisson counts and Gaussian observations."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from losskit import _reduction, checks, registry
from losskit.checks import likelihood as lchecks
from losskit.losses import _explain as _ex

__all__ = [
    "GaussianNLLLoss",
    "PoissonNLLLoss",
    "gaussian_nll_loss",
    "poisson_nll_loss",
]


def _resolve(loss: str, reduction: str, size_average=None, reduce=None) -> str:
    """torch's order: legacy arguments win; otherwise only the three strings are valid."""
    if size_average is None and reduce is None:
        lchecks.check_reduction_spelling(loss, reduction)
    return _reduction.resolve(reduction, size_average, reduce, warn=False)


def poisson_nll_loss(
    input: Tensor,
    target: Tensor,
    log_input: bool = True,
    full: bool = False,
    size_average: bool | None = None,
    eps: float = 1e-8,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> Tensor:
    r"""Poisson negative log-likelihood of counts ``target`` under rates from ``input``.

    .. math::
        l_i = e^{x_i} - y_i x_i \quad (\texttt{log\_input=True}, x = \log\lambda), \qquad
        l_i = x_i - y_i \log(x_i + \epsilon) \quad (\texttt{log\_input=False}, x = \lambda)

    With ``full=True`` the Stirling term :math:`y \log y - y + \tfrac12 \log(2\pi y)` is added
    where :math:`y > 1` (it approximates :math:`\log y!`, constant in the input).

    Args:
        input: log-rates (``log_input=True``, the raw model output) or rates ``>= 0``,
            any shape ``(*)``.
        target: counts, the same shape as ``input``; non-integer values are allowed.
        eps: added to the rate inside the log when ``log_input=False``.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"`` (legacy ``size_average`` / ``reduce``
            override it, as in torch).

    Shape: output ``(*)`` for ``"none"``, else a scalar.

    Departures from torch (losskit's guardrails): a target of another shape raises instead of
    broadcasting; integer input raises; with value checks on, NaN/Inf raises, negative rates
    with ``log_input=False`` raise, and negative counts warn.

    Example:
        >>> log_rate = torch.tensor([0.0, 1.0]); counts = torch.tensor([1.0, 3.0])
        >>> poisson_nll_loss(log_rate, counts, reduction="none")
        tensor([ 1.0000, -0.2817])
    """
    loss = "poisson_nll_loss"
    resolved = _resolve(loss, reduction, size_average, reduce)
    checks.check_floating_input(loss, input)
    if not checks.on_one_device(input, target):
        checks.check_same_device(loss, input=input, target=target)
    checks.check_same_shape(loss, input, target)  # RuntimeError class where torch's is
    if checks.values_enabled(loss, input, target):
        checks.check_finite(loss, input=input, target=target)
        if not log_input:
            lchecks.check_no_negative_rates(loss, input)
        lchecks.check_no_negative_counts(loss, target)
    return F.poisson_nll_loss(
        input, target, log_input, full, size_average, eps, reduce, reduction=resolved
    )


def gaussian_nll_loss(
    input: Tensor,
    target: Tensor,
    var: Tensor | float,
    full: bool = False,
    eps: float = 1e-6,
    reduction: str = "mean",
) -> Tensor:
    r"""Gaussian negative log-likelihood of ``target`` under mean ``input`` and variance ``var``.

    .. math::
        l_i = \tfrac12 \left( \log \max(v_i, \epsilon)
              + \frac{(x_i - y_i)^2}{\max(v_i, \epsilon)} \right)
              \; \left[ + \tfrac12 \log 2\pi \text{ with } \texttt{full} \right]

    The clamp at ``eps`` happens under ``no_grad`` (as in torch): the gradient with respect to
    ``var`` is taken at the clamped value.

    Args:
        input: predicted means, shape ``(*)``.
        target: observations, the same shape as ``input``.
        var: variances ``>= 0``: ``input``'s shape (one per element), ``input.shape[:-1]`` or
            ``input``'s shape with one dim set to 1 (shared along that dim), or a float.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``.

    Shape: output ``(*)`` for ``"none"``, else a scalar.

    Departures from torch (losskit's guardrails): a target of another shape raises instead of
    broadcasting; integer input raises; with value checks on, NaN/Inf raises and a zero variance
    warns. A negative variance raises a ValueError, as in torch, with the fix in the message.

    Example:
        >>> mean = torch.tensor([0.0, 1.0]); y = torch.tensor([1.0, 1.0])
        >>> gaussian_nll_loss(mean, y, torch.tensor([1.0, 4.0]), reduction="none")
        tensor([0.5000, 0.6931])
    """
    loss = "gaussian_nll_loss"
    checks.check_floating_input(loss, input)
    var_tensor = var if isinstance(var, Tensor) else None
    if not checks.on_one_device(input, target, var_tensor):
        checks.check_same_device(loss, input=input, target=target, var=var_tensor)
    if var_tensor is None or not lchecks.var_shape_accepted(input, var_tensor):
        # torch checks the sign before the size: a negative var of the wrong size is "negative"
        if lchecks.var_sign_enabled():
            lchecks.check_var_not_negative(loss, var)
        lchecks.check_var_shape(loss, input, var)
    try:
        reduction = _resolve(loss, reduction)
        checks.check_same_shape(loss, input, target)  # RuntimeError class where torch's is
    except (ValueError, TypeError, RuntimeError):
        if lchecks.var_sign_enabled():  # torch reads the sign first: its error comes first
            lchecks.check_var_not_negative(loss, var)
        raise
    if checks.values_enabled(loss, input, target, var):
        lchecks.check_var_not_negative(loss, var)  # before NaN: torch's order
        checks.check_finite(loss, input=input, target=target, var=var_tensor)
        lchecks.check_no_zero_var(loss, var, eps)
    try:
        return F.gaussian_nll_loss(input, target, var, full=full, eps=eps, reduction=reduction)
    except ValueError:
        # torch reads var's sign on every call; the detailed message only on its error path,
        # so the sign is not read twice.
        if lchecks.var_sign_enabled():
            lchecks.check_var_not_negative(loss, var)
        raise


class PoissonNLLLoss(nn.PoissonNLLLoss):
    """Poisson negative log-likelihood; see :func:`losskit.functional.poisson_nll_loss`.

    >>> PoissonNLLLoss()(torch.tensor([0.0, 1.0]), torch.tensor([1.0, 3.0]))
    tensor(0.3591)
    """

    def forward(self, log_input: Tensor, target: Tensor) -> Tensor:  # torch's argument name
        return poisson_nll_loss(
            log_input, target, log_input=self.log_input, full=self.full, eps=self.eps,
            reduction=self.reduction,
        )


class GaussianNLLLoss(nn.GaussianNLLLoss):
    """Gaussian negative log-likelihood; see :func:`losskit.functional.gaussian_nll_loss`.

    >>> GaussianNLLLoss()(torch.tensor([0.0, 1.0]), torch.tensor([1.0, 1.0]), torch.ones(2))
    tensor(0.2500)
    """

    def forward(self, input: Tensor, target: Tensor, var: Tensor | float) -> Tensor:
        return gaussian_nll_loss(
            input, target, var, full=self.full, eps=self.eps, reduction=self.reduction
        )


# ----------------------------------------------------------------------------------------------
# Records


def _count_gaussian(loss_fn: nn.Module, input: Tensor, target: Tensor, *rest: Tensor) -> Tensor:
    """``"mean"`` divides by the element count of ``input`` and ``target``; torch's accepted
    ``var`` shapes never enlarge it."""
    return registry.count_elements(loss_fn, input, target)


registry.register(registry.LossRecord(
    function=poisson_nll_loss, module=PoissonNLLLoss, family="likelihood",
    input="values",  # log-rates (log_input=True, the default) or rates >= 0
    targets=("counts",),
    summary="Poisson NLL of counts; the input is a log-rate (log_input=True) or a rate",
    mean_count=registry.count_elements, torch_function=F.poisson_nll_loss,
    torch_module=nn.PoissonNLLLoss, estimates="mean",
))
registry.register(registry.LossRecord(
    function=gaussian_nll_loss, module=GaussianNLLLoss, family="likelihood", input="values",
    targets=("real",),
    summary="Gaussian NLL with a predicted variance: regression that learns its own uncertainty",
    mean_count=_count_gaussian, torch_function=F.gaussian_nll_loss,
    torch_module=nn.GaussianNLLLoss, estimates="mean and variance",
))


# ----------------------------------------------------------------------------------------------
# What `losskit explain` prints and draws (registry.Explain); the gradients are checked against
# autograd in tests/test_explain.py.


def _poisson_steps(x, y, reduction="mean", log_input=True, eps=1e-8):
    rate = x.exp() if log_input else x
    log_rate = x if log_input else (x + eps).log()
    rows = [("rate = exp(x)" if log_input else "rate = x", rate),
            ("y log(rate)", y * log_rate), ("l = rate - y log(rate)", rate - y * log_rate)]
    return rows + _ex.reduce_step(rows[-1][1], reduction)


def _gaussian_steps(x, y, var, reduction="mean", eps=1e-6):
    v = var.clamp(min=eps)
    d = x - y
    rows = [("v = max(var, eps)", v), ("d = x - y", d), ("d^2 / v", d**2 / v),
            ("l = (log v + d^2 / v) / 2", 0.5 * (v.log() + d**2 / v))]
    return rows + _ex.reduce_step(rows[-1][1], reduction)


registry.describe(poisson_nll_loss, registry.Explain(
    formula="l = exp(x) - y x  (log_input=True, x the log-rate);  log_input=False: "
            "x - y log(x + eps);  full=True adds Stirling's log(y!) term",
    latex=r"\ell = e^{x} - y\,x",
    derivative="dl/dx = exp(x) - y  (log_input=False: 1 - y / (x + eps))",
    derivative_latex=r"\partial\ell/\partial x = e^{x} - y",
    gradient=lambda x, y, log_input=True, eps=1e-8, **kw: (
        x.exp() - y if log_input else 1 - y / (x + eps)),
    example=_ex.example([0.0, 1.0, 2.0], [1.0, 3.0, 5.0]), steps=_poisson_steps,
    curve=registry.Curve(
        "log-rate x (target count y)",
        lambda t, y=3.0: poisson_nll_loss(t, torch.full_like(t, y), reduction="none"),
        tuple((f"y={y}", {"y": y}) for y in (1.0, 3.0, 6.0)), span=(-2.0, 3.0)),
    convex=True, bounded_gradient=False,
    robust="no: a large count pulls the log-rate with force y, a too-high rate with exp(x)",
))
registry.describe(gaussian_nll_loss, registry.Explain(
    formula="l = (log max(var, eps) + (x - y)^2 / max(var, eps)) / 2  (full=True adds "
            "log(2 pi) / 2)",
    latex=r"\ell = \tfrac12\Bigl(\log v + \frac{(x - y)^2}{v}\Bigr),\ v = \max(\sigma^2, "
          r"\epsilon)",
    derivative="dl/dx = (x - y) / max(var, eps)  (with respect to the mean; d/dvar = "
               "(1 - d^2 / var) / (2 var))",
    derivative_latex=r"\partial\ell/\partial x = (x - y)/v",
    gradient=lambda x, y, var, eps=1e-6, **kw: (x - y) / var.clamp(min=eps),
    example=_ex.example([1.0, 2.0, 3.0], [1.5, 2.0, 1.0], [0.5, 1.0, 2.0]),
    steps=_gaussian_steps,
    curve=registry.Curve(
        "residual d = x - y (fixed variance)",
        lambda t, var=1.0: gaussian_nll_loss(t, torch.zeros_like(t), torch.full_like(t, var),
                                             reduction="none"),
        tuple((f"var={v}", {"var": v}) for v in (0.25, 1.0, 4.0))),
    convex=True, bounded_gradient=False,
    robust="no in the mean: MSE scaled by 1/var; a learned var can grow to absorb outliers",
))
