"""Cases for losskit/losses/regression.py."""

import math

import torch

from cases import LossCase, rand, randn


def log_cosh(input, target, *, reduction="mean"):
    """log(cosh(d)) = log((e^d + e^-d) / 2), written with logaddexp so that a large error d
    does not overflow cosh (a different formula from losskit's |d| + softplus(-2|d|) - log 2)."""
    d = input - target
    loss = torch.logaddexp(d, -d) - math.log(2.0)
    return {"none": loss, "mean": loss.mean(), "sum": loss.sum()}[reduction]


def pinball(input, target, *, quantile=0.5, reduction="mean"):
    """q * d where the target is above the prediction (d = y - x > 0), (q - 1) * d where below,
    0 (with a zero gradient) at an exact hit."""
    d = target - input
    loss = torch.where(d > 0, quantile * d, torch.where(d < 0, (quantile - 1) * d, 0 * d))
    return {"none": loss, "mean": loss.mean(), "sum": loss.sum()}[reduction]


def _pair(shape, *, weighted=False, ties=False, **options):
    def make(gen):
        x, y = 2 * randn(gen, *shape), randn(gen, *shape)
        if ties and x.numel():  # input == target at every other element: the kink, gradient 0
            y.view(-1)[::2] = x.view(-1)[::2]
        kwargs = dict(options)
        if weighted:
            kwargs["weight"] = rand(gen, *shape) + 0.1
        return (x, y), kwargs

    return make


CASES = [
    LossCase("mse_loss", "(3,7)", _pair((3, 7)), grad_args=(0, 1)),
    LossCase("mse_loss", "0-d", _pair(())),
    LossCase("mse_loss", "weight", _pair((2, 5), weighted=True), function_only=True),
    LossCase("l1_loss", "(2,5,4,3)", _pair((2, 5, 4, 3)), grad_args=(0, 1)),
    LossCase("l1_loss", "ties", _pair((6,), ties=True), gradcheck=False),  # kink at |d| = 0
    LossCase("huber_loss", "delta0.5", _pair((3, 7), delta=0.5), grad_args=(0, 1)),
    LossCase("huber_loss", "delta2.5-weight", _pair((4, 3), weighted=True, delta=2.5),
             function_only=True),
    LossCase("smooth_l1_loss", "beta0", _pair((3, 7), beta=0.0)),
    LossCase("smooth_l1_loss", "beta0.5", _pair((5,), beta=0.5), grad_args=(0, 1)),
    LossCase("log_cosh_loss", "(3,7)", _pair((3, 7)), grad_args=(0, 1), reference=log_cosh),
    LossCase("log_cosh_loss", "0-d", _pair(()), reference=log_cosh),
    LossCase("quantile_loss", "q0.9", _pair((4, 5), quantile=0.9), grad_args=(0, 1),
             reference=pinball),
    LossCase("quantile_loss", "q0.1-(2,3,2)", _pair((2, 3, 2), quantile=0.1), reference=pinball),
]
