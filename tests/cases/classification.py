"""Cases for losskit/losses/classification.py."""

import oracle

from cases import LossCase, rand, randint, randn


def _indices(shape, *, weight=False, ignore_index=None, **options):
    """Logits of ``shape`` (class dim 1, or 0 for (C,)) and class indices, some ignored."""
    def make(gen):
        x = 2 * randn(gen, *shape)
        c = shape[1] if len(shape) > 1 else shape[0]
        tshape = (shape[0], *shape[2:]) if len(shape) > 1 else ()
        y = randint(gen, c, *tshape)
        kwargs = dict(options)
        if ignore_index is not None:
            kwargs["ignore_index"] = ignore_index
            if y.dim():
                y.view(-1)[::3] = ignore_index
        if weight:
            kwargs["weight"] = rand(gen, c) + 0.5
        return (x, y), kwargs

    return make


def _probs(shape, **options):
    def make(gen):
        x = 2 * randn(gen, *shape)
        y = randn(gen, *shape).softmax(1 if len(shape) > 1 else 0)
        return (x, y), options

    return make


def _log_probs(shape, **options):
    inner = _indices(shape, **options)

    def make(gen):
        (x, y), kwargs = inner(gen)
        return (x.log_softmax(1 if len(shape) > 1 else 0), y), kwargs

    return make


def _focal_binary(shape, **options):
    def make(gen):
        return (2 * randn(gen, *shape), (rand(gen, *shape) > 0.5).double()), options

    return make


CASES = [
    LossCase("cross_entropy", "(C,)", _indices((5,))),
    LossCase("cross_entropy", "(N,C)-weight-ignore-ls",
             _indices((6, 4), weight=True, ignore_index=-1, label_smoothing=0.2)),
    LossCase("cross_entropy", "(N,C,d1,d2)-ignore", _indices((2, 3, 4, 2), ignore_index=1)),
    LossCase("cross_entropy", "probs-(N,C)-weight-ls", _probs((4, 5), label_smoothing=0.1),
             grad_args=(0, 1)),
    LossCase("cross_entropy", "probs-(N,C,d)", _probs((2, 3, 4)), grad_args=(0, 1)),
    LossCase("nll_loss", "(N,C)-weight-ignore", _log_probs((6, 4), weight=True, ignore_index=2)),
    LossCase("nll_loss", "(N,C,d)", _log_probs((2, 3, 5))),
    LossCase("focal_loss", "binary", _focal_binary((4, 3), gamma=2.0),
             reference=oracle.focal_binary),
    LossCase("focal_loss", "binary-alpha", _focal_binary((7,), gamma=0.5, alpha=0.25),
             reference=oracle.focal_binary),
    LossCase("focal_loss", "multiclass-ignore", _indices((6, 4), ignore_index=-100, gamma=2.0),
             reference=oracle.focal_multiclass),
    LossCase("focal_loss", "multiclass-(N,C,d)-alpha", _indices((2, 3, 4), gamma=1.5, alpha=0.5),
             reference=oracle.focal_multiclass),
]
