"""What the fused kernels' backward can and cannot do, checked in one place.

Every fused path (PyTorch and Triton) computes the first-order gradient during the forward and
hands it out in backward. That gradient carries no graph, so:

* a second derivative (``create_graph=True``: MAML, gradient penalties through the loss,
  Hessian-vector products) would silently miss every term through the softmax's Jacobian;
  :func:`check_first_order` raises instead;
* the stored gradient is handed over (or scaled in place) on the first backward, so a second
  backward of the same graph (``retain_graph=True``) cannot run; :func:`check_single_backward`
  raises.

Both errors name the fix: ``losskit.kernels.fused(False)``, the reference path's plain autograd
ops.
"""

from __future__ import annotations

import torch

from losskit.checks import LossRuntimeError

__all__ = ["check_first_order", "check_single_backward"]

_FIX = (
    "Fix: compute this loss inside `with losskit.kernels.fused(False):` (plain autograd ops, "
    "torch's memory use)."
)


def check_first_order(name: str) -> None:
    """Raise when backward runs with ``create_graph=True`` (grad mode is on inside backward then).

    >>> with torch.no_grad():  # as inside a plain backward
    ...     check_first_order("cross_entropy")
    >>> check_first_order("cross_entropy")  # as inside backward(create_graph=True)
    Traceback (most recent call last):
    ...
    losskit.checks.LossRuntimeError: cross_entropy: a second derivative (create_graph=True) ...
    """
    if torch.is_grad_enabled():
        raise LossRuntimeError(
            f"{name}: a second derivative (create_graph=True) was requested through the fused "
            f"kernel, which computes the gradient in the forward pass and keeps no graph for it, "
            f"so the result would be wrong. {_FIX}"
        )


def check_single_backward(ctx, name: str) -> None:
    """Raise on a second backward through the same forward (``retain_graph=True``).

    >>> class Ctx: pass
    >>> ctx = Ctx(); check_single_backward(ctx, "cross_entropy")
    >>> check_single_backward(ctx, "cross_entropy")
    Traceback (most recent call last):
    ...
    losskit.checks.LossRuntimeError: cross_entropy: backward ran a second time through the ...
    """
    if getattr(ctx, "backward_done", False):
        raise LossRuntimeError(
            f"{name}: backward ran a second time through the same forward (retain_graph=True), "
            f"but the fused kernel hands its stored gradient over on the first backward. "
            f"{_FIX}"
        )
    ctx.backward_done = True
