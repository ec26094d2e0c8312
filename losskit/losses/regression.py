"""Regression losses: squared, absolute and Huber errors between predictions and real targets."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from losskit import _reduction, checks, registry
from losskit.checks import LossInputError
from losskit.losses import _explain as _ex
from losskit.losses._common import REDUCTION_ENUM, has_override, op_runs_directly

__all__ = [
    "HuberLoss",
    "L1Loss",
    "LogCoshLoss",
    "MSELoss",
    "QuantileLoss",
    "SmoothL1Loss",
    "huber_loss",
    "l1_loss",
    "log_cosh_loss",
    "mse_loss",
    "quantile_loss",
    "smooth_l1_loss",
]


def _check_weighted_reduction(loss: str, reduction: str, weight: Tensor | None) -> None:
    """torch's weighted path takes only "none" | "mean" | "sum": the deprecated alias
    "elementwise_mean", accepted without ``weight``, raises ValueError there."""
    if weight is not None and reduction == "elementwise_mean":
        raise LossInputError(
            f"{loss}: reduction='elementwise_mean' with `weight`: torch's weighted {loss} takes "
            f"only 'none', 'mean' or 'sum' (the deprecated alias is refused there). "
            f"Fix: reduction='mean'."
        )


def _check_regression(loss: str, input: Tensor, target: Tensor, weight: Tensor | None) -> None:
    """Every regression check, in one call (small losses cost about a Python call per check)."""
    checks.check_floating_input(loss, input, allow_complex=loss == "l1_loss")
    if input.device != target.device or (weight is not None and weight.device != input.device):
        checks.check_same_device(loss, input=input, target=target, weight=weight)
    if input.shape != target.shape:
        checks.check_same_shape(loss, input, target)
    if checks.values_enabled(loss, input, target):
        checks.check_finite(loss, input=input, target=target)


def mse_loss(
    input: Tensor,
    target: Tensor,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    weight: Tensor | None = None,
) -> Tensor:
    r"""Mean squared error: :math:`l_i = w_i (x_i - y_i)^2`.

    Args:
        input: predictions, any shape ``(*)``.
        target: same shape as ``input`` (a shape that would broadcast raises).
        weight: optional per-element weights of ``input``'s shape; ``"mean"`` is then
            :math:`\sum_i w_i l_i / \sum_i w_i`.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``.

    Shape: output ``(*)`` for ``"none"``, else a scalar.

    Example:
        >>> mse_loss(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 4.0]))
        tensor(2.)
    """
    _check_weighted_reduction("mse_loss", reduction, weight)
    reduction = _reduction.resolve(reduction, size_average, reduce, warn=False)
    _check_regression("mse_loss", input, target, weight)
    if weight is None and op_runs_directly(size_average, reduce, input, target):
        # torch's own op; its Python wrapper would only re-check the sizes and broadcast them.
        return torch._C._nn.mse_loss(input, target, REDUCTION_ENUM[reduction])  # type: ignore[arg-type]  # torch's stub says str; the op takes the reduction enum
    return F.mse_loss(  # type: ignore[call-arg]  # functional.pyi lags: 2.13 takes weight
        input, target, size_average, reduce, reduction=reduction, weight=weight)


def l1_loss(
    input: Tensor,
    target: Tensor,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    weight: Tensor | None = None,
) -> Tensor:
    r"""Mean absolute error: :math:`l_i = w_i |x_i - y_i|` (complex input gives a real loss).

    Shapes, ``weight`` and reductions as :func:`mse_loss`.

    Example:
        >>> l1_loss(torch.tensor([1.0, 2.0]), torch.tensor([1.5, 4.0]), reduction="sum")
        tensor(2.5000)
    """
    _check_weighted_reduction("l1_loss", reduction, weight)
    reduction = _reduction.resolve(reduction, size_average, reduce, warn=False)
    _check_regression("l1_loss", input, target, weight)
    if weight is None and op_runs_directly(size_average, reduce, input, target):
        return torch._C._nn.l1_loss(input, target, REDUCTION_ENUM[reduction])  # type: ignore[arg-type]  # torch's stub says str; the op takes the reduction enum
    return F.l1_loss(  # type: ignore[call-arg]  # functional.pyi lags: 2.13 takes weight
        input, target, size_average, reduce, reduction=reduction, weight=weight)


def huber_loss(
    input: Tensor,
    target: Tensor,
    reduction: str = "mean",
    delta: float = 1.0,
    weight: Tensor | None = None,
) -> Tensor:
    r"""Huber loss, quadratic near zero and linear beyond ``delta``.

    .. math::
        l_i = \begin{cases} \tfrac12 d_i^2 & |d_i| < \delta \\
              \delta (|d_i| - \tfrac12 \delta) & \text{otherwise} \end{cases},
        \quad d_i = x_i - y_i

    With ``weight`` (input's shape), ``"mean"`` is :math:`\frac1n \sum_i w_i l_i` (torch divides
    by the element count here, unlike :func:`mse_loss`). ``delta`` must be positive.

    Example:
        >>> huber_loss(torch.tensor([0.0, 3.0]), torch.tensor([0.5, 0.0]), reduction="none")
        tensor([0.1250, 2.5000])
    """
    _check_weighted_reduction("huber_loss", reduction, weight)
    reduction = _reduction.resolve(reduction)
    _check_regression("huber_loss", input, target, weight)
    if weight is None and not has_override(input, target):
        return torch._C._nn.huber_loss(input, target, REDUCTION_ENUM[reduction], delta)  # type: ignore[arg-type]  # torch's stub says str; the op takes the reduction enum
    return F.huber_loss(input, target, reduction=reduction, delta=delta, weight=weight)  # type: ignore[call-arg]  # functional.pyi lags: torch 2.13 takes weight


def smooth_l1_loss(
    input: Tensor,
    target: Tensor,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    beta: float = 1.0,
) -> Tensor:
    r"""Smooth L1 loss: :math:`l_i = 0.5 d_i^2 / \beta` if :math:`|d_i| < \beta`, else
    :math:`|d_i| - 0.5 \beta`; equals ``huber_loss(delta=beta) / beta`` and, at ``beta=0``,
    :func:`l1_loss`.

    Example:
        >>> smooth_l1_loss(torch.tensor([0.0, 3.0]), torch.tensor([0.5, 0.0]), reduction="none")
        tensor([0.1250, 2.5000])
    """
    reduction = _reduction.resolve(reduction, size_average, reduce, warn=False)
    _check_regression("smooth_l1_loss", input, target, None)
    if size_average is None and reduce is None and not has_override(input, target):
        if beta == 0.0:  # torch's rule: exactly l1_loss
            return torch._C._nn.l1_loss(input, target, REDUCTION_ENUM[reduction])  # type: ignore[arg-type]  # torch's stub says str; the op takes the reduction enum
        return torch._C._nn.smooth_l1_loss(input, target, REDUCTION_ENUM[reduction], beta)  # type: ignore[arg-type]  # torch's stub says str; the op takes the reduction enum
    return F.smooth_l1_loss(input, target, size_average, reduce, reduction=reduction, beta=beta)


# ----------------------------------------------------------------------------------------------
# Beyond torch.nn: robust and quantile regression


_LOG2 = 0.6931471805599453


def log_cosh_loss(input: Tensor, target: Tensor, *, reduction: str = "mean") -> Tensor:
    r"""Log-cosh error: :math:`l_i = \log\cosh(x_i - y_i)`.

    About :math:`d^2 / 2` for a small error :math:`d` and :math:`|d| - \ln 2` for a large one:
    a smooth Huber loss with threshold about 1, whose gradient :math:`\tanh(d)` is bounded by 1.
    Computed as :math:`|d| + \mathrm{softplus}(-2|d|) - \ln 2`, which never overflows
    (``cosh`` itself overflows float32 beyond :math:`|d| \approx 89`).

    Args:
        input: predictions, any shape ``(*)``.
        target: same shape as ``input`` (a shape that would broadcast raises).
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``; ``"mean"`` divides by the element count.

    Shape: output ``(*)`` for ``"none"``, else a scalar.

    Example:
        >>> log_cosh_loss(torch.tensor([0.0, 1.0, 100.0]), torch.zeros(3), reduction="none")
        tensor([ 0.0000,  0.4338, 99.3069])
    """
    loss = "log_cosh_loss"
    reduction = _reduction.resolve(reduction)
    _check_regression(loss, input, target, None)
    d = (input - target).abs()
    return _reduction.reduce(d + F.softplus(-2 * d) - _LOG2, reduction)


def quantile_loss(
    input: Tensor, target: Tensor, *, quantile: float = 0.5, reduction: str = "mean"
) -> Tensor:
    r"""Quantile (pinball) loss: :math:`l_i = \max(q\, d_i,\; (q - 1)\, d_i)`,
    :math:`d_i = y_i - x_i`.

    Under-predictions cost :math:`q` per unit, over-predictions :math:`1 - q`, so the minimiser
    is the :math:`q`-quantile of the target given the input: ``quantile=0.9`` gives a value the
    target stays below 90% of the time; ``quantile=0.5`` is half the L1 loss (the median). At
    an exact hit (:math:`d_i = 0`) the gradient is 0, as for torch's L1 loss.

    Args:
        input: predictions, any shape ``(*)``.
        target: same shape as ``input``.
        quantile: :math:`q \in (0, 1)`.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``; ``"mean"`` divides by the element count.

    Example:
        >>> x, y = torch.tensor([1.0, 3.0]), torch.tensor([2.0, 2.0])
        >>> quantile_loss(x, y, quantile=0.9, reduction="none")  # under by 1, over by 1
        tensor([0.9000, 0.1000])
    """
    loss = "quantile_loss"
    reduction = _reduction.resolve(reduction)
    if not 0.0 < quantile < 1.0:
        raise LossInputError(
            f"{loss}: quantile={quantile!r} must lie strictly between 0 and 1 (the fraction of "
            f"targets below the prediction). Fix: e.g. quantile=0.9 for an upper bound, 0.5 for "
            f"the median."
        )
    _check_regression(loss, input, target, None)
    d = target - input
    # relu's gradient at 0 is 0: at an exact hit the gradient is 0, as L1's sign(0) in torch.
    return _reduction.reduce(quantile * F.relu(d) + (1 - quantile) * F.relu(-d), reduction)


class MSELoss(nn.MSELoss):
    """Mean squared error; see :func:`losskit.functional.mse_loss`.

    >>> MSELoss()(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 4.0]))
    tensor(2.)
    """

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return mse_loss(input, target, reduction=self.reduction)


class L1Loss(nn.L1Loss):
    """Mean absolute error; see :func:`losskit.functional.l1_loss`.

    >>> L1Loss(reduction="sum")(torch.tensor([1.0, 2.0]), torch.tensor([1.5, 4.0]))
    tensor(2.5000)
    """

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return l1_loss(input, target, reduction=self.reduction)


class HuberLoss(nn.HuberLoss):
    """Huber loss with threshold ``delta``; see :func:`losskit.functional.huber_loss`.

    >>> HuberLoss(delta=2.0)(torch.tensor([0.0]), torch.tensor([3.0]))
    tensor(4.)
    """

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return huber_loss(input, target, reduction=self.reduction, delta=self.delta)


class SmoothL1Loss(nn.SmoothL1Loss):
    """Smooth L1 loss with threshold ``beta``; see :func:`losskit.functional.smooth_l1_loss`.

    >>> SmoothL1Loss(beta=2.0)(torch.tensor([0.0]), torch.tensor([3.0]))
    tensor(2.)
    """

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return smooth_l1_loss(input, target, reduction=self.reduction, beta=self.beta)


class LogCoshLoss(nn.Module):
    """Log-cosh error; see :func:`losskit.functional.log_cosh_loss`.

    >>> LogCoshLoss()(torch.tensor([0.0, 2.0]), torch.zeros(2))
    tensor(0.6625)
    """

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        self.reduction = reduction

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return log_cosh_loss(input, target, reduction=self.reduction)


class QuantileLoss(nn.Module):
    """Quantile (pinball) loss; see :func:`losskit.functional.quantile_loss`.

    >>> QuantileLoss(quantile=0.1)(torch.tensor([1.0, 3.0]), torch.tensor([2.0, 2.0]))
    tensor(0.5000)
    """

    def __init__(self, quantile: float = 0.5, reduction: str = "mean") -> None:
        super().__init__()
        self.quantile = quantile
        self.reduction = reduction

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return quantile_loss(input, target, quantile=self.quantile, reduction=self.reduction)


# ----------------------------------------------------------------------------------------------
# Records

# Huber's loss is quadratic near the fit and linear far from it, so its minimiser is an
# M-estimate of location (Huber, 1964): the mean when every residual ends within delta, the
# median in the limit delta -> 0. It is neither, and not always between the two: for the data
# (-10, 1, 1, 1, 2, 5) (mean 0, median 1) Huber with delta = 1 gives 1.25, log-cosh 1.22.
# Only L1 estimates the median.
_BETWEEN = ("Huber's M-estimate of location: the mean if every residual is within delta, "
            "the median as delta -> 0")

for _fn, _module, _torch_fn, _torch_module, _cli, _estimates, _summary in (
    (mse_loss, MSELoss, F.mse_loss, nn.MSELoss, "mse", "mean",
     "squared error: fits the conditional mean; the default for Gaussian-like noise"),
    (l1_loss, L1Loss, F.l1_loss, nn.L1Loss, "l1", "median",
     "absolute error: fits the conditional median; robust to outliers"),
    (huber_loss, HuberLoss, F.huber_loss, nn.HuberLoss, "huber", _BETWEEN,
     "quadratic below delta, linear beyond: MSE near the target, robust to outliers"),
    (smooth_l1_loss, SmoothL1Loss, F.smooth_l1_loss, nn.SmoothL1Loss, "smooth-l1", _BETWEEN,
     "Huber divided by beta (box regression in detection)"),
):
    registry.register(registry.LossRecord(
        function=_fn, module=_module, family="regression", input="values", targets=("real",),
        summary=_summary, mean_count=registry.count_elements, torch_function=_torch_fn,
        torch_module=_torch_module, cli=_cli, estimates=_estimates,
    ))

registry.register(registry.LossRecord(
    function=log_cosh_loss, module=LogCoshLoss, family="regression", input="values",
    targets=("real",), summary="log(cosh(error)): a smooth Huber loss, gradient tanh(error)",
    mean_count=registry.count_elements, cli="log-cosh",
    estimates="an M-estimate of location (psi = tanh): near the mean for residuals well under "
    "1, median-like for large ones",
    catalog=(("regression with outliers", ""),),
))
registry.register(registry.LossRecord(
    function=quantile_loss, module=QuantileLoss, family="regression", input="values",
    targets=("real",), summary="pinball loss: fits the q-quantile (prediction intervals)",
    mean_count=registry.count_elements, cli="quantile", estimates="quantile",
    catalog=(("regression", "quantile=0.9"),),
))


# ----------------------------------------------------------------------------------------------
# What `losskit explain` prints and draws (registry.Explain); the gradients are checked against
# autograd in tests/test_explain.py. One example for the family: d = x - y = (-0.5, 0.5, 0, 3),
# the last an outlier.

_X, _Y = [2.5, 0.0, 2.0, 8.0], [3.0, -0.5, 2.0, 5.0]


def _describe(fn, formula, latex, derivative, derivative_latex, gradient, per_element, *,
              convex, bounded, robust, options=(("", {}),), **kwargs):
    """Describe an elementwise regression loss: ``per_element(d, **kwargs) -> [(label, l)]``
    writes the hand computation from the residual ``d = x - y``."""

    def steps(x, y, reduction="mean", **kw):
        d = x - y
        rows = [("residual d = x - y", d), *per_element(d, **kw)]
        return rows + _ex.reduce_step(rows[-1][1], reduction)

    registry.describe(fn, registry.Explain(
        formula=formula, latex=latex, derivative=derivative, derivative_latex=derivative_latex,
        gradient=lambda x, y, **kw: gradient(x - y, **{k: v for k, v in kw.items()
                                                        if k != "reduction"}),
        example=_ex.example(_X, _Y, **kwargs), steps=steps,
        curve=registry.Curve("residual d = x - y", _ex.residual_curve(fn), options),
        convex=convex, bounded_gradient=bounded, robust=robust,
    ))


def _huber_steps(d, delta=1.0):
    a = d.abs()
    return [("|d|", a), ("quadratic 0.5 d^2 (used where |d| < delta)", 0.5 * d**2),
            ("linear delta (|d| - delta/2) (elsewhere)", delta * (a - delta / 2)),
            ("l", torch.where(a < delta, 0.5 * d**2, delta * (a - delta / 2)))]


def _smooth_l1_steps(d, beta=1.0):
    a = d.abs()
    return [("|d|", a), ("0.5 d^2 / beta (used where |d| < beta)", 0.5 * d**2 / beta),
            ("|d| - beta/2 (elsewhere)", a - beta / 2),
            ("l", torch.where(a < beta, 0.5 * d**2 / beta, a - beta / 2))]


def _quantile_steps(d, quantile=0.5):
    u = -d  # y - x: positive when the prediction is under the target
    return [("u = y - x = -d", u), ("q u (under-prediction)", quantile * u),
            ("(q - 1) u (over-prediction)", (quantile - 1) * u),
            ("l = max of the two", torch.maximum(quantile * u, (quantile - 1) * u))]


_describe(mse_loss, "l = (x - y)^2", r"\ell = (x - y)^2", "dl/dx = 2 (x - y)",
          r"\partial\ell/\partial x = 2(x - y)", lambda d: 2 * d,
          lambda d: [("l = d^2", d**2)], convex=True, bounded=False,
          robust="no: an outlier's gradient grows with its error, so a few dominate the mean")
_describe(l1_loss, "l = |x - y|", r"\ell = |x - y|", "dl/dx = sign(x - y) (0 at x = y)",
          r"\partial\ell/\partial x = \operatorname{sign}(x - y)", torch.sign,
          lambda d: [("l = |d|", d.abs())], convex=True, bounded=True,
          robust="yes: every point pulls with the same force 1, however far")
_describe(huber_loss, "l = d^2/2 if |d| < delta else delta (|d| - delta/2),  d = x - y",
          r"\ell = \begin{cases}\tfrac12 d^2 & |d| < \delta \\ \delta(|d| - \tfrac12\delta) "
          r"& \text{else}\end{cases}",
          "dl/dx = d if |d| < delta else delta sign(d)  (d clipped to [-delta, delta])",
          r"\partial\ell/\partial x = \operatorname{clip}(d, -\delta, \delta)",
          lambda d, delta=1.0: d.clamp(-delta, delta), _huber_steps, convex=True, bounded=True,
          robust="yes: beyond delta the pull is capped at delta",
          options=tuple((f"delta={v}", {"delta": v}) for v in (0.5, 1.0, 2.0)), delta=1.0)
_describe(smooth_l1_loss, "l = d^2/(2 beta) if |d| < beta else |d| - beta/2,  d = x - y",
          r"\ell = \begin{cases}d^2/(2\beta) & |d| < \beta \\ |d| - \tfrac12\beta "
          r"& \text{else}\end{cases}",
          "dl/dx = d/beta if |d| < beta else sign(d)  (clip(d/beta, -1, 1))",
          r"\partial\ell/\partial x = \operatorname{clip}(d/\beta, -1, 1)",
          lambda d, beta=1.0: (d / beta).clamp(-1, 1), _smooth_l1_steps, convex=True,
          bounded=True, robust="yes: beyond beta the pull is capped at 1",
          options=tuple((f"beta={v}", {"beta": v}) for v in (0.5, 1.0, 2.0)), beta=1.0)
_describe(log_cosh_loss, "l = log(cosh(x - y))", r"\ell = \log\cosh(x - y)",
          "dl/dx = tanh(x - y)", r"\partial\ell/\partial x = \tanh(x - y)", torch.tanh,
          lambda d: [("cosh(d)", torch.cosh(d)), ("l = log cosh(d)", torch.cosh(d).log())],
          convex=True, bounded=True, robust="yes: the pull tanh(d) saturates at 1")
_describe(quantile_loss, "l = max(q u, (q - 1) u),  u = y - x",
          r"\ell = \max(q u, (q - 1) u),\ u = y - x",
          "dl/dx = -q if x < y, 1 - q if x > y, 0 at x = y",
          r"\partial\ell/\partial x = \mathbb 1[x > y] - q \ (0 \text{ at } x = y)",
          lambda d, quantile=0.5: ((d > 0).to(d.dtype) - quantile) * (d != 0),
          _quantile_steps, convex=True, bounded=True,
          robust="yes: the pull is q or 1 - q, however far",
          options=tuple((f"q={v}", {"quantile": v}) for v in (0.1, 0.5, 0.9)), quantile=0.9)
