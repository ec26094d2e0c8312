"""Cases for losskit/losses/linear_cross_entropy.py.

The reference is torch 2.13's own ``F.linear_cross_entropy`` in float64 (the record's twin), run
with ``options=None``: torch's plain ``linear`` + ``cross_entropy``. Every case also builds the
Module form: ``lk.LinearCrossEntropyLoss`` with the case's head copied into its ``linear`` layer.
"""

import math

import torch

import losskit as lk
from cases import LossCase, rand, randint, randn


def _lce(n, d, classes, *, bias=False, weight=False, probabilities=False, ignore=True, **options):
    """``n`` rows (None: one unbatched row) of ``d`` features, a head of ``classes`` = (C, d1..)."""
    def make(gen):
        batch = () if n is None else (n,)
        h = randn(gen, *batch, d)  # (N, D) or (D,)
        w = randn(gen, *classes, d) / d**0.5  # (C, d1, ..., dK, D)
        logits_shape = (*batch, *classes)
        if probabilities:
            y = torch.softmax(randn(gen, *logits_shape), dim=len(batch))  # (N, C, d1, ...)
        else:
            y = randint(gen, classes[0], *batch, *classes[1:])  # (N, d1, ...) or ()
            if ignore and y.dim() > 0:
                y.view(-1)[::4] = options.get("ignore_index", -100)
        kwargs = dict(options)
        if bias:
            kwargs["linear_bias"] = randn(gen, *classes)
        if weight:
            kwargs["weight"] = rand(gen, classes[0]) + 0.5
        return (h, w, y), kwargs

    return make


def _module(made, reduction):
    """The Module with the case's head in its ``linear`` layer (stored flat, as torch does)."""
    (h, w, y), kwargs = made
    kwargs = dict(kwargs)
    bias = kwargs.pop("linear_bias", None)
    classes = tuple(w.shape[:-1])
    module = lk.LinearCrossEntropyLoss(
        w.shape[-1], classes[0], out_features=classes[1:], bias=bias is not None,
        dtype=w.dtype, reduction=reduction, **kwargs,
    )
    with torch.no_grad():
        module.linear.weight.copy_(w.reshape(math.prod(classes), w.shape[-1]))
        if bias is not None:
            module.linear.bias.copy_(bias.reshape(-1))
    return module, (h, y)


def case(id, make, **fields):
    return LossCase("linear_cross_entropy", id, make, grad_args=(0, 1), module=_module, **fields)


CASES = [
    case("(7,4)x(11,4)", _lce(7, 4, (11,))),
    case("bias-ls0.1", _lce(5, 3, (9,), bias=True, label_smoothing=0.1)),
    case("weight-ignore3", _lce(8, 5, (6,), weight=True, ignore_index=3)),
    case("weight-bias-ls", _lce(6, 4, (7,), bias=True, weight=True, label_smoothing=0.3)),
    case("unbatched", _lce(None, 5, (8,), bias=True)),
    case("no-ignored", _lce(5, 3, (4,), ignore=False, label_smoothing=1.0)),
    case("K-dim(C,2,3)", _lce(4, 3, (5, 2, 3), bias=True)),
    case("K-dim-weight-ls", _lce(3, 4, (6, 2), weight=True, label_smoothing=0.2)),
    case("probabilities", _lce(5, 4, (6,), bias=True, probabilities=True)),
    case("probabilities-weight-ls", _lce(4, 3, (5,), weight=True, probabilities=True,
                                         label_smoothing=0.25)),
    case("probabilities-unbatched", _lce(None, 4, (5,), probabilities=True)),
    case("probabilities-K-dim", _lce(3, 4, (5, 2), probabilities=True)),
]
