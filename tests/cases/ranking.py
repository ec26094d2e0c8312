"""Cases for losskit/losses/ranking.py.

Labels are -1/+1 with both signs present wherever there are two or more; random scores,
distances and embeddings keep every hinge away from its kink, so gradcheck holds.
"""

import torch
from torch import nn

from cases import LossCase, rand, randn


def _signs(gen, *shape, sign=None):
    """-1/+1 labels of ``shape``, both signs present (or all ``sign``)."""
    if sign is not None:
        return torch.full(shape, float(sign), dtype=torch.float64)
    y = torch.where(rand(gen, *shape) > 0.5, 1.0, -1.0).to(torch.float64)
    if y.numel() >= 2:
        y.view(-1)[:2] = torch.tensor([1.0, -1.0])
    return y


def _ranking(shape, *, sign=None, long_target=False, **options):
    def make(gen):
        x1, x2 = randn(gen, *shape), randn(gen, *shape)
        y = _signs(gen, *shape, sign=sign)
        return (x1, x2, y.long() if long_target else y), options

    return make


def _hinge(shape, *, sign=None, **options):
    def make(gen):
        distances = 2 * rand(gen, *shape)  # non-negative, on both sides of margin 1
        return (distances, _signs(gen, *shape, sign=sign)), options

    return make


def _cosine(shape, *, sign=None, **options):
    def make(gen):
        a, b = randn(gen, *shape), randn(gen, *shape)
        return (a, b, _signs(gen, *shape[:-1], sign=sign)), options

    return make


def _triplet(shape, **options):
    def make(gen):
        anchor = randn(gen, *shape)
        positive = anchor + 0.7 * randn(gen, *shape)  # closer on average: some terms are 0
        return (anchor, positive, randn(gen, *shape)), options

    return make


def cosine_distance(x, y):
    return 1.0 - torch.cosine_similarity(x, y, dim=-1)


def squared_euclidean(x, y):
    return (x - y).pow(2).sum(-1)


TRIPLET = (0, 1, 2)

CASES = [
    LossCase("margin_ranking_loss", "(6,)", _ranking((6,)), grad_args=(0, 1, 2)),
    LossCase("margin_ranking_loss", "(6,)-margin0.5", _ranking((6,), margin=0.5),
             grad_args=(0, 1)),
    LossCase("margin_ranking_loss", "(3,4)-margin0.3", _ranking((3, 4), margin=0.3),
             grad_args=(0, 1)),
    LossCase("margin_ranking_loss", "0-d-pos", _ranking((), sign=1, margin=1.0),
             grad_args=(0, 1)),
    LossCase("margin_ranking_loss", "0-d-neg", _ranking((), sign=-1, margin=1.0),
             grad_args=(0, 1)),
    LossCase("margin_ranking_loss", "long-target", _ranking((5,), long_target=True, margin=0.2),
             grad_args=(0, 1)),
    LossCase("hinge_embedding_loss", "(8,)", _hinge((8,))),
    LossCase("hinge_embedding_loss", "(3,5)-margin2", _hinge((3, 5), margin=2.0)),
    LossCase("hinge_embedding_loss", "0-d-pos", _hinge((), sign=1, margin=0.5)),
    LossCase("hinge_embedding_loss", "0-d-neg", _hinge((), sign=-1, margin=2.5)),
    LossCase("cosine_embedding_loss", "(6,4)", _cosine((6, 4)), grad_args=(0, 1)),
    LossCase("cosine_embedding_loss", "(6,4)-margin0.3", _cosine((6, 4), margin=0.3),
             grad_args=(0, 1)),
    LossCase("cosine_embedding_loss", "(7,3)-margin-0.2", _cosine((7, 3), margin=-0.2),
             grad_args=(0, 1)),
    LossCase("cosine_embedding_loss", "(5,)-pos", _cosine((5,), sign=1), grad_args=(0, 1)),
    LossCase("cosine_embedding_loss", "(5,)-neg", _cosine((5,), sign=-1, margin=-0.9),
             grad_args=(0, 1)),
    LossCase("triplet_margin_loss", "(6,5)", _triplet((6, 5)), grad_args=TRIPLET),
    LossCase("triplet_margin_loss", "(6,5)-p1-swap", _triplet((6, 5), p=1, swap=True),
             grad_args=TRIPLET),
    LossCase("triplet_margin_loss", "(5,)-margin2", _triplet((5,), margin=2.0),
             grad_args=TRIPLET),
    LossCase("triplet_margin_loss", "(2,3,4)-p3-eps1e-3",
             _triplet((2, 3, 4), p=3, eps=1e-3, margin=0.5), grad_args=TRIPLET),
    LossCase("triplet_margin_loss", "(6,5)-p1.5-eps0-swap",
             _triplet((6, 5), p=1.5, eps=0.0, swap=True), grad_args=TRIPLET),
    LossCase("triplet_margin_with_distance_loss", "(6,5)-default", _triplet((6, 5)),
             grad_args=TRIPLET),
    LossCase("triplet_margin_with_distance_loss", "(4,)-default-margin2",
             _triplet((4,), margin=2.0), grad_args=TRIPLET),
    LossCase("triplet_margin_with_distance_loss", "(6,5)-cosine-swap",
             _triplet((6, 5), distance_function=cosine_distance, swap=True, margin=0.5),
             grad_args=TRIPLET),
    LossCase("triplet_margin_with_distance_loss", "(6,5)-l1-module",
             _triplet((6, 5), distance_function=nn.PairwiseDistance(p=1), margin=2.0),
             grad_args=TRIPLET),
    LossCase("triplet_margin_with_distance_loss", "(2,3,4)-squared",
             _triplet((2, 3, 4), distance_function=squared_euclidean, margin=3.0),
             grad_args=TRIPLET),
]
