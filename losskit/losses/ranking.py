r"""Ranking and embedding losses: margins between scores, distances and embeddings.

Pairs labelled with a sign (:func:`margin_ranking_loss`, :func:`hinge_embedding_loss`,
:func:`cosine_embedding_loss`: ``y = 1`` similar / ranked higher, ``y = -1`` dissimilar / ranked
lower) and triplets (anchor, positive, negative) that need no label
(:func:`triplet_margin_loss`, :func:`triplet_margin_with_distance_loss`).

Each function runs its guardrails (:mod:`losskit.checks.ranking`) and then calls torch's own
function, which is the contract. Deliberate differences from torch, on input torch accepts:

* labels must be -1 or 1: 0/1 labels and any other value raise :class:`~losskit.LossInputError`
  (value checks); torch runs and silently trains the wrong thing;
* tensors compared element by element must have one shape: torch broadcasts ``(N, 1)`` against
  ``(N,)`` (or ``(1, D)`` against ``(N, D)``) silently; losskit raises;
* NaN or Inf in any tensor raises (value checks); integer predictions raise.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from losskit import _reduction, checks, registry
from losskit.checks import ranking as ranking_checks

__all__ = [
    "CosineEmbeddingLoss",
    "HingeEmbeddingLoss",
    "MarginRankingLoss",
    "TripletMarginLoss",
    "TripletMarginWithDistanceLoss",
    "cosine_embedding_loss",
    "hinge_embedding_loss",
    "margin_ranking_loss",
    "triplet_margin_loss",
    "triplet_margin_with_distance_loss",
]


def _check_signed(loss: str, target: Tensor, **inputs: Tensor) -> None:
    """Metadata checks shared by the losses with -1/+1 labels (shapes are checked by each)."""
    # mypy cannot rule out a key named like the checks' keyword-only flags.
    ranking_checks.check_floating_inputs(loss, **inputs)  # type: ignore[arg-type]
    checks.check_same_device(loss, **inputs, target=target)
    ranking_checks.check_sign_target_dtype(loss, target)


def _check_signed_values(loss: str, target: Tensor, **inputs: Tensor) -> None:
    if checks.values_enabled(loss):
        checks.check_finite(loss, **inputs, target=target)  # type: ignore[arg-type]
        ranking_checks.check_sign_target_values(loss, target)


def margin_ranking_loss(
    input1: Tensor,
    input2: Tensor,
    target: Tensor,
    margin: float = 0,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> Tensor:
    r"""Margin ranking loss: :math:`l_i = \max(0, -y_i (x^1_i - x^2_i) + \text{margin})`.

    ``y_i = 1`` says ``input1`` should score higher than ``input2`` by at least ``margin``,
    ``y_i = -1`` the reverse.

    Args:
        input1, input2: scores, shape ``(*)``, e.g. ``(N,)``, or 0-d for one pair.
        target: labels in {-1, 1}, the same shape (0/1 labels raise: use ``2 * target - 1``).
        margin: the gap a correctly ranked pair must keep.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``.

    Shape: output ``(*)`` for ``"none"``, else a scalar. Shapes that differ raise (torch
    broadcasts same-rank shapes such as ``(1,)`` against ``(N,)`` silently).

    Example:
        >>> s1, s2 = torch.tensor([2.0, 0.5]), torch.tensor([1.0, 1.0])
        >>> margin_ranking_loss(s1, s2, torch.tensor([1.0, 1.0]), margin=0.5, reduction="none")
        tensor([0.0000, 1.0000])
    """
    loss = "margin_ranking_loss"
    reduction = _reduction.resolve(reduction, size_average, reduce, warn=False)
    _check_signed(loss, target, input1=input1, input2=input2)
    ranking_checks.check_same_shapes(loss, same_dim=True, input1=input1, input2=input2,
                                     target=target)
    _check_signed_values(loss, target, input1=input1, input2=input2)
    return F.margin_ranking_loss(input1, input2, target, margin, size_average, reduce,
                                 reduction=reduction)


def hinge_embedding_loss(
    input: Tensor,
    target: Tensor,
    margin: float = 1.0,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> Tensor:
    r"""Hinge embedding loss on distances: similar pairs are pulled to 0, dissimilar pairs
    pushed beyond ``margin``.

    .. math::
        l_i = \begin{cases} x_i & y_i = 1 \\ \max(0, \text{margin} - x_i) & y_i = -1 \end{cases}

    Args:
        input: distances (e.g. an L1 or L2 distance between two embeddings), shape ``(*)``.
        target: labels in {-1, 1}, the same shape (0/1 labels raise: use ``2 * target - 1``).
        margin: how far a dissimilar pair must be.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``.

    Shape: output ``(*)`` for ``"none"``, else a scalar; a target of another shape raises
    (torch broadcasts ``(N, 1)`` against ``(N,)`` to ``(N, N)`` silently).

    Example:
        >>> d, y = torch.tensor([0.2, 0.3, 1.5]), torch.tensor([1.0, -1.0, -1.0])
        >>> hinge_embedding_loss(d, y, reduction="none")
        tensor([0.2000, 0.7000, 0.0000])
    """
    loss = "hinge_embedding_loss"
    reduction = _reduction.resolve(reduction, size_average, reduce, warn=False)
    _check_signed(loss, target, input=input)
    ranking_checks.check_same_shapes(loss, same_dim=False, input=input, target=target)
    _check_signed_values(loss, target, input=input)
    return F.hinge_embedding_loss(input, target, margin, size_average, reduce,
                                  reduction=reduction)


def cosine_embedding_loss(
    input1: Tensor,
    input2: Tensor,
    target: Tensor,
    margin: float = 0,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> Tensor:
    r"""Cosine embedding loss: similar pairs get cosine 1, dissimilar pairs a cosine below
    ``margin``.

    .. math::
        \cos_i = \frac{\langle a_i, b_i \rangle}
                      {\sqrt{(\lVert a_i \rVert^2 + \epsilon)(\lVert b_i \rVert^2 + \epsilon)}},
        \quad
        l_i = \begin{cases} 1 - \cos_i & y_i = 1 \\ \max(0, \cos_i - \text{margin}) & y_i = -1
              \end{cases}

    with :math:`\epsilon = 10^{-12}`, as torch.

    Args:
        input1, input2: embeddings ``(N, D)``, or ``(D,)`` for one pair; the same shape.
        target: labels in {-1, 1}, shape ``(N,)`` (0-d for one pair). 0/1 labels raise: torch
            gives a 0 label a loss of 0, so dissimilar pairs never train.
        margin: in [-1, 1]; 0 to 0.5 is usual.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``.

    Shape: output ``(N,)`` (0-d for one pair) for ``"none"``, else a scalar. A ``(1, D)``
    ``input2`` or a ``(1,)`` target for ``N`` pairs raises (torch broadcasts them silently).

    Example:
        >>> a = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
        >>> b = torch.tensor([[0.0, 1.0], [1.0, 1.0]])
        >>> cosine_embedding_loss(a, b, torch.tensor([1.0, -1.0]), reduction="none")
        tensor([1., 1.])
    """
    loss = "cosine_embedding_loss"
    reduction = _reduction.resolve(reduction, size_average, reduce, warn=False)
    _check_signed(loss, target, input1=input1, input2=input2)
    ranking_checks.check_cosine_shapes(loss, input1, input2, target)
    _check_signed_values(loss, target, input1=input1, input2=input2)
    return F.cosine_embedding_loss(input1, input2, target, margin, size_average, reduce,
                                   reduction=reduction)


def _check_triplet(loss: str, anchor: Tensor, positive: Tensor, negative: Tensor,
                   margin: float, *, pairwise: bool) -> None:
    """``pairwise``: distances between matching rows (torch's pairwise distance), so the three
    shapes must be equal; a custom distance function decides for itself what fits."""
    ranking_checks.check_positive_margin(loss, margin)
    triplet = dict(anchor=anchor, positive=positive, negative=negative)
    # Embeddings are floating (complex is fine: the p-norm of a complex difference is real) and
    # on one device, whatever the distance function.
    ranking_checks.check_floating_inputs(loss, allow_complex=True, **triplet)
    checks.check_same_device(loss, **triplet)
    if pairwise:
        ranking_checks.check_same_shapes(loss, same_dim=True, **triplet)
    else:
        ranking_checks.check_same_ndim(loss, **triplet)
    if checks.values_enabled(loss):
        checks.check_finite(loss, **triplet)  # type: ignore[arg-type]  # as above


def triplet_margin_loss(
    anchor: Tensor,
    positive: Tensor,
    negative: Tensor,
    margin: float = 1.0,
    p: float = 2,
    eps: float = 1e-6,
    swap: bool = False,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> Tensor:
    r"""Triplet margin loss: each anchor must be closer to its positive than to its negative,
    by ``margin``.

    .. math::
        d(u, v) = \lVert u - v + \epsilon \rVert_p, \quad
        l_i = \max(0, \text{margin} + d(a_i, p_i) - d(a_i, n_i))

    norms over the last dimension. With ``swap=True`` (Balntas et al., 2016),
    :math:`d(a_i, n_i)` becomes :math:`\min(d(a_i, n_i), d(p_i, n_i))`.

    Args:
        anchor, positive, negative: embeddings ``(N, D)`` (or ``(D,)``, or ``(N, ..., D)``),
            all the same shape (torch would broadcast; losskit raises and names the odd one).
        margin: must be > 0.
        p: the norm's order; eps: added to the difference, as torch.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``.

    Shape: output ``(N,)`` (the input's shape without its last dim) for ``"none"``, else a scalar.

    Example:
        >>> a, pos, neg = torch.tensor([[0.0, 0.0]]), torch.tensor([[3.0, 4.0]]), torch.zeros(1, 2)
        >>> triplet_margin_loss(a, pos, neg, eps=0.0)
        tensor(6.)
    """
    loss = "triplet_margin_loss"
    reduction = _reduction.resolve(reduction, size_average, reduce, warn=False)
    _check_triplet(loss, anchor, positive, negative, margin, pairwise=True)
    return F.triplet_margin_loss(anchor, positive, negative, margin, p, eps, swap,
                                 size_average, reduce, reduction=reduction)


def triplet_margin_with_distance_loss(
    anchor: Tensor,
    positive: Tensor,
    negative: Tensor,
    *,
    distance_function: Callable[[Tensor, Tensor], Tensor] | None = None,
    margin: float = 1.0,
    swap: bool = False,
    reduction: str = "mean",
) -> Tensor:
    r"""Triplet margin loss with any distance: :math:`l_i = \max(0, \text{margin} +
    d(a_i, p_i) - d(a_i, n_i))`.

    ``distance_function(x, y)`` is any callable returning non-negative distances; it is
    called as torch calls it: ``(anchor, positive)``, ``(anchor, negative)`` and, with
    ``swap=True``, ``(positive, negative)``, whose distance replaces the negative one where it
    is smaller. None means :func:`torch.pairwise_distance` (p=2, eps=1e-6).

    Args:
        anchor, positive, negative: embeddings ``(N, D)`` or ``(D,)``. With the default
            distance (or an ``nn.PairwiseDistance``) they must have the same shape; with a
            custom function only the same number of dimensions, as in torch.
        margin: must be > 0.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"`` (no deprecated alias, as torch).

    Shape: output: the distance function's output shape for ``"none"``, else a scalar.

    Example:
        >>> a, pos, neg = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]), -torch.eye(2)[:1]
        >>> cosine_distance = lambda x, y: 1.0 - torch.cosine_similarity(x, y)
        >>> triplet_margin_with_distance_loss(a, pos, neg, distance_function=cosine_distance)
        tensor(0.)
    """
    loss = "triplet_margin_with_distance_loss"
    ranking_checks.check_plain_reduction(loss, reduction)
    reduction = _reduction.resolve(reduction)
    pairwise = distance_function is None or isinstance(distance_function, nn.PairwiseDistance)
    _check_triplet(loss, anchor, positive, negative, margin, pairwise=pairwise)
    return F.triplet_margin_with_distance_loss(
        anchor, positive, negative, distance_function=distance_function, margin=margin,
        swap=swap, reduction=reduction,
    )


class MarginRankingLoss(nn.MarginRankingLoss):
    """Margin ranking loss; see :func:`losskit.functional.margin_ranking_loss`.

    >>> s1, s2, y = torch.tensor([2.0]), torch.tensor([1.0]), torch.tensor([-1.0])
    >>> MarginRankingLoss(margin=0.5)(s1, s2, y)
    tensor(1.5000)
    """

    def forward(self, input1: Tensor, input2: Tensor, target: Tensor) -> Tensor:
        return margin_ranking_loss(input1, input2, target, margin=self.margin,
                                   reduction=self.reduction)


class HingeEmbeddingLoss(nn.HingeEmbeddingLoss):
    """Hinge embedding loss on distances; see :func:`losskit.functional.hinge_embedding_loss`.

    >>> HingeEmbeddingLoss(margin=2.0)(torch.tensor([0.5, 0.5]), torch.tensor([1.0, -1.0]))
    tensor(1.)
    """

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return hinge_embedding_loss(input, target, margin=self.margin, reduction=self.reduction)


class CosineEmbeddingLoss(nn.CosineEmbeddingLoss):
    """Cosine embedding loss; see :func:`losskit.functional.cosine_embedding_loss`.

    >>> a, b = torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 1.0]])
    >>> CosineEmbeddingLoss(margin=0.5)(a, b, torch.tensor([-1.0]))
    tensor(0.2071)
    """

    def forward(self, input1: Tensor, input2: Tensor, target: Tensor) -> Tensor:
        return cosine_embedding_loss(input1, input2, target, margin=self.margin,
                                     reduction=self.reduction)


class TripletMarginLoss(nn.TripletMarginLoss):
    """Triplet margin loss with a p-norm; see :func:`losskit.functional.triplet_margin_loss`.

    >>> a, pos, neg = torch.zeros(1, 2), torch.tensor([[3.0, 4.0]]), torch.tensor([[0.0, 8.0]])
    >>> TripletMarginLoss(margin=2.0, eps=0.0)(a, pos, neg)
    tensor(0.)
    """

    def forward(self, anchor: Tensor, positive: Tensor, negative: Tensor) -> Tensor:
        return triplet_margin_loss(anchor, positive, negative, margin=self.margin, p=self.p,
                                   eps=self.eps, swap=self.swap, reduction=self.reduction)


class TripletMarginWithDistanceLoss(nn.TripletMarginWithDistanceLoss):
    """Triplet margin loss with any distance; see
    :func:`losskit.functional.triplet_margin_with_distance_loss`. As in torch, the default
    distance is an ``nn.PairwiseDistance()`` submodule.

    >>> l1 = nn.PairwiseDistance(p=1, eps=0.0)
    >>> a, pos, neg = torch.zeros(1, 2), torch.tensor([[1.0, 1.0]]), torch.tensor([[2.0, 0.0]])
    >>> TripletMarginWithDistanceLoss(distance_function=l1, margin=0.5)(a, pos, neg)
    tensor(0.5000)
    """

    def forward(self, anchor: Tensor, positive: Tensor, negative: Tensor) -> Tensor:
        return triplet_margin_with_distance_loss(
            anchor, positive, negative, distance_function=self.distance_function,
            margin=self.margin, swap=self.swap, reduction=self.reduction,
        )


# ----------------------------------------------------------------------------------------------
# Records: how "mean" counts (the functions take three tensors, so they count for themselves)


def _count_elements3(loss_fn: nn.Module, *tensors: Tensor) -> Tensor:
    """``"mean"`` divides by the element count of the per-pair loss (margin ranking: the common
    shape of ``input1``, ``input2`` and ``target``)."""
    shape = torch.broadcast_shapes(*(t.shape for t in tensors))
    return registry.count_full(tensors[0], shape.numel())


def _count_pairs(loss_fn: nn.Module, *tensors: Tensor) -> Tensor:
    """Cosine embedding: one term per pair, ``N`` for ``(N, D)`` inputs, 1 for one ``(D,)``
    pair."""
    input1 = tensors[0]
    return registry.count_full(input1, input1.shape[0] if input1.dim() == 2 else 1)


def _count_triplets(loss_fn: nn.Module, *tensors: Tensor) -> Tensor:
    """Triplets: one term per anchor, the anchor's shape without its last (embedding) dim. A
    custom distance function is assumed to reduce that dim too, as pairwise distances do."""
    anchor = tensors[0]
    return registry.count_full(anchor, anchor.shape[:-1].numel())


for _fn, _module, _torch_fn, _torch_module, _input, _targets, _count, _summary in (
    (margin_ranking_loss, MarginRankingLoss, F.margin_ranking_loss, nn.MarginRankingLoss,
     "scores", ("sign",), _count_elements3,
     "pairwise ranking: input1 should outscore input2 by margin where target is 1 (-1: reverse)"),
    (hinge_embedding_loss, HingeEmbeddingLoss, F.hinge_embedding_loss, nn.HingeEmbeddingLoss,
     "distances", ("sign",), registry.count_elements,
     "distances of pairs: similar (1) pulled to 0, dissimilar (-1) pushed beyond margin"),
    (cosine_embedding_loss, CosineEmbeddingLoss, F.cosine_embedding_loss,
     nn.CosineEmbeddingLoss, "embeddings", ("sign",), _count_pairs,
     "pairs of embeddings: cosine 1 for similar (1), below margin for dissimilar (-1)"),
    (triplet_margin_loss, TripletMarginLoss, F.triplet_margin_loss, nn.TripletMarginLoss,
     "embeddings", ("none",), _count_triplets,
     "triplets: anchor closer to positive than to negative by margin (p-norm distance)"),
    (triplet_margin_with_distance_loss, TripletMarginWithDistanceLoss,
     F.triplet_margin_with_distance_loss, nn.TripletMarginWithDistanceLoss, "embeddings",
     ("none",), _count_triplets,
     "triplets with any distance function (e.g. cosine distance), margin between the two"),
):
    registry.register(registry.LossRecord(
        function=_fn, module=_module, family="ranking", input=_input, targets=_targets,
        summary=_summary, mean_count=_count, torch_function=_torch_fn,
        torch_module=_torch_module, cli=None, estimates=None,
    ))
