"""Cases for losskit/losses/margin.py.

The hinge losses (multi-label margin, multi-class margin) have kinks where a margin is met
exactly; random normal scores land on one with probability 0, so gradcheck runs on every case.
Torch gives no gradient for the targets of soft margin (it raises), so only ``input`` is checked
there.
"""

import torch

from cases import LossCase, rand, randint, randn


def _signs(gen, *shape):
    return 2.0 * (rand(gen, *shape) > 0.5).double() - 1.0  # -1. / 1.


def _soft_margin(shape):
    def make(gen):
        return (2 * randn(gen, *shape), _signs(gen, *shape)), {}

    return make


def _multilabel_soft(shape, *, weight=None, soft=False):
    def make(gen):
        x = 2 * randn(gen, *shape)
        y = rand(gen, *shape) if soft else (rand(gen, *shape) > 0.5).double()
        kwargs = {} if weight is None else {"weight": rand(gen, *weight) + 0.5}
        return (x, y), kwargs

    return make


def _label_rows(gen, n: int, c: int, *, junk_after_pad: bool) -> torch.Tensor:
    """(n, c) int64: row r lists r % (c + 1) distinct classes, then -1, then (optionally)
    in-range classes that torch must ignore because they follow the first -1."""
    rows = []
    for r in range(n):
        k = r % (c + 1)
        labels = torch.randperm(c, generator=gen)[:k]
        tail = torch.full((c - k,), -1, dtype=torch.int64)
        if junk_after_pad and c - k > 1:
            tail[1:] = randint(gen, c, c - k - 1)
        rows.append(torch.cat([labels, tail]))
    return torch.stack(rows)


def _multilabel_margin(n, c, *, unbatched=False, junk_after_pad=False):
    def make(gen):
        y = _label_rows(gen, n, c, junk_after_pad=junk_after_pad)
        x = randn(gen, n, c)
        return (x[-1], y[-1]) if unbatched else (x, y), {}  # the last row has labels

    return make


def _multi_margin(n, c, *, unbatched=False, weight=False, **options):
    def make(gen):
        x, y = randn(gen, n, c), randint(gen, c, n)
        kwargs = dict(options)
        if weight:
            kwargs["weight"] = rand(gen, c) + 0.5
        return (x[0], y[0]) if unbatched else (x, y), kwargs

    return make


CASES = [
    LossCase("soft_margin_loss", "(3,7)", _soft_margin((3, 7))),
    LossCase("soft_margin_loss", "(2,3,4)", _soft_margin((2, 3, 4))),
    LossCase("soft_margin_loss", "0-d", _soft_margin(())),
    LossCase("multilabel_soft_margin_loss", "(4,5)", _multilabel_soft((4, 5)), grad_args=(0, 1)),
    LossCase("multilabel_soft_margin_loss", "(4,5)-weight(C,)",
             _multilabel_soft((4, 5), weight=(5,))),
    LossCase("multilabel_soft_margin_loss", "(4,5)-weight(N,C)-probabilities",
             _multilabel_soft((4, 5), weight=(4, 5), soft=True), grad_args=(0, 1)),
    LossCase("multilabel_soft_margin_loss", "unbatched(C,)", _multilabel_soft((6,))),
    LossCase("multilabel_margin_loss", "(6,5)", _multilabel_margin(6, 5)),
    LossCase("multilabel_margin_loss", "(6,5)-after-pad", _multilabel_margin(6, 5,
             junk_after_pad=True)),
    LossCase("multilabel_margin_loss", "unbatched(C,)", _multilabel_margin(3, 7, unbatched=True)),
    LossCase("multi_margin_loss", "(5,4)", _multi_margin(5, 4)),
    LossCase("multi_margin_loss", "p2-margin0.5", _multi_margin(5, 4, p=2, margin=0.5)),
    LossCase("multi_margin_loss", "weight-margin2", _multi_margin(6, 3, weight=True, margin=2.0)),
    LossCase("multi_margin_loss", "p2-weight", _multi_margin(4, 5, weight=True, p=2)),
    LossCase("multi_margin_loss", "unbatched(C,)", _multi_margin(1, 6, unbatched=True)),
]
