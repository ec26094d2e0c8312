"""Cases for losskit/losses/binary.py."""

import torch

from cases import LossCase, rand, randn


def _bce(shape, weight=None):
    def make(gen):
        x, y = 0.05 + 0.9 * rand(gen, *shape), rand(gen, *shape)
        kwargs = {} if weight is None else {"weight": rand(gen, *weight) + 0.5}
        return (x, y), kwargs

    return make


def _bce_logits(shape, weight=None, pos_weight=None):
    def make(gen):
        x, y = 3 * randn(gen, *shape), (rand(gen, *shape) > 0.5).double()
        kwargs = {}
        if weight is not None:
            kwargs["weight"] = rand(gen, *weight) + 0.5
        if pos_weight is not None:
            kwargs["pos_weight"] = 3 * rand(gen, *pos_weight)
        return (x, y), kwargs

    return make


def _bce_clamped(gen):
    """Probabilities of exactly 0 and 1: each log term is clamped at -100."""
    x = torch.tensor([0.0, 1.0, 0.0, 1.0, 0.3], dtype=torch.float64)
    y = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.6], dtype=torch.float64)
    return (x, y), {}


CASES = [
    LossCase("binary_cross_entropy", "(3,7)", _bce((3, 7)), grad_args=(0, 1)),
    LossCase("binary_cross_entropy", "weight(C,)", _bce((4, 3), weight=(3,))),
    LossCase("binary_cross_entropy", "clamped", _bce_clamped, gradcheck=False),  # x at 0 and 1
    LossCase("binary_cross_entropy_with_logits", "(3,7)", _bce_logits((3, 7)), grad_args=(0, 1)),
    LossCase("binary_cross_entropy_with_logits", "weight-pos_weight",
             _bce_logits((4, 3), weight=(3,), pos_weight=(3,))),
    LossCase("binary_cross_entropy_with_logits", "(N,C,H,W)-pos_weight(C,1,1)",
             _bce_logits((2, 3, 2, 2), pos_weight=(3, 1, 1))),
]
