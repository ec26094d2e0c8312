"""Cases for losskit/losses/linear_cross_entropy.py."""

import torch.nn.functional as F

from cases import LossCase, randint, randn


def reference(hidden, weight, target, bias=None, **kwargs):
    """cross_entropy(hidden @ weight.T + bias, target) in float64: the logits, materialised."""
    return F.cross_entropy(F.linear(hidden, weight, bias), target, **kwargs)


def _lce(n, d, v, *, bias=False, **options):
    def make(gen):
        h, w = randn(gen, n, d), randn(gen, v, d) / d**0.5
        y = randint(gen, v, n)
        y[::4] = -100
        args = (h, w, y) + ((randn(gen, v),) if bias else ())
        return args, options

    return make


CASES = [
    LossCase("linear_cross_entropy", "(7,4)x(11,4)", _lce(7, 4, 11), grad_args=(0, 1),
             reference=reference, function_only=True),
    LossCase("linear_cross_entropy", "bias-ls", _lce(5, 3, 9, bias=True, label_smoothing=0.1),
             grad_args=(0, 1, 3), reference=reference, function_only=True),
]
