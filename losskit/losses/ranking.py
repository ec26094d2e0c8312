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
from losskit.losses import _explain as _ex
from losskit.losses._common import REDUCTION_ENUM, op_runs_directly

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
    if not checks.on_one_device(target, *inputs.values()):
        checks.check_same_device(loss, **inputs, target=target)
    ranking_checks.check_sign_target_dtype(loss, target)


_UNSIGNED_LABELS = (torch.bool, *ranking_checks.UNSIGNED_DTYPES)  # 0/1 or no -1: the detailed check


def _signed_call_ok(target: Tensor, *inputs: Tensor) -> bool:
    """The common call in a few attribute reads: floating inputs of the target's shape, on its
    device, and a label dtype that can hold -1. When it says no, every detailed metadata check
    runs (and passes the calls this accepts), so a fast call skips no check."""
    shape, device = target.shape, target.device
    if target.dtype in _UNSIGNED_LABELS:
        return False
    for t in inputs:
        if t.shape != shape or t.device != device or not t.is_floating_point():
            return False
    return True


def _cosine_call_ok(input1: Tensor, input2: Tensor, target: Tensor) -> bool:
    """:func:`_signed_call_ok` for pairs of embeddings: ``(N, D)`` inputs with an ``(N,)``
    target, or one ``(D,)`` pair with a 0-d target."""
    device = target.device
    if (
        target.dtype in _UNSIGNED_LABELS or input1.shape != input2.shape
        or input1.device != device or input2.device != device
        or not (input1.is_floating_point() and input2.is_floating_point())
    ):
        return False
    if target.dim() == 1:
        return input1.dim() == 2 and input1.shape[0] == target.shape[0]
    return target.dim() == 0 and input1.dim() == 1


def _check_signed_values(loss: str, target: Tensor, **inputs: Tensor) -> None:
    if checks.values_enabled(loss, target, *inputs.values()):
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
    if not _signed_call_ok(target, input1, input2):
        _check_signed(loss, target, input1=input1, input2=input2)
        ranking_checks.check_same_shapes(loss, same_dim=True, input1=input1, input2=input2,
                                         target=target)
    _check_signed_values(loss, target, input1=input1, input2=input2)
    if op_runs_directly(size_average, reduce, input1, input2, target):
        return torch.margin_ranking_loss(input1, input2, target, margin,
                                         REDUCTION_ENUM[reduction])
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
    if not _signed_call_ok(target, input):
        _check_signed(loss, target, input=input)
        ranking_checks.check_same_shapes(loss, same_dim=False, input=input, target=target)
    _check_signed_values(loss, target, input=input)
    if op_runs_directly(size_average, reduce, input, target):
        return torch.hinge_embedding_loss(input, target, margin, REDUCTION_ENUM[reduction])
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
    if not _cosine_call_ok(input1, input2, target):
        _check_signed(loss, target, input1=input1, input2=input2)
        ranking_checks.check_cosine_shapes(loss, input1, input2, target)
    _check_signed_values(loss, target, input1=input1, input2=input2)
    if op_runs_directly(size_average, reduce, input1, input2, target):
        return torch.cosine_embedding_loss(input1, input2, target, margin,
                                           REDUCTION_ENUM[reduction])
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
    if not checks.on_one_device(anchor, positive, negative):
        checks.check_same_device(loss, **triplet)
    if pairwise:
        ranking_checks.check_same_shapes(loss, same_dim=True, **triplet)
    else:
        ranking_checks.check_same_ndim(loss, **triplet)
    if checks.values_enabled(loss, *triplet.values()):
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


# ----------------------------------------------------------------------------------------------
# What `losskit explain` prints and draws (registry.Explain); the gradients are checked against
# autograd in tests/test_explain.py.


_COS_EPS = 1e-12  # torch's cosine_embedding_loss epsilon


def _margin_ranking_steps(x1, x2, y, reduction="mean", margin=0.0):
    h = -y * (x1 - x2) + margin
    rows = [("x1 - x2", x1 - x2), ("h = -y (x1 - x2) + margin", h),
            ("l = max(0, h)", h.clamp(min=0))]
    return rows + _ex.reduce_step(rows[-1][1], reduction, "pairs")


def _hinge_embedding_steps(x, y, reduction="mean", margin=1.0):
    rows = [("y = +1: x", torch.where(y == 1, x, 0.0)),
            ("y = -1: max(0, margin - x)", torch.where(y == -1, (margin - x).clamp(min=0), 0.0))]
    rows.append(("l = sum of the two", rows[0][1] + rows[1][1]))
    return rows + _ex.reduce_step(rows[-1][1], reduction)


def _cosine(a, b):
    na, nb = (a * a).sum(-1) + _COS_EPS, (b * b).sum(-1) + _COS_EPS
    return (a * b).sum(-1) / (na * nb).sqrt(), na, nb


def _cosine_steps(a, b, y, reduction="mean", margin=0.0):
    cos, na, nb = _cosine(a, b)
    rows = [("<a, b>", (a * b).sum(-1)), ("|a|^2 + eps", na), ("|b|^2 + eps", nb),
            ("cos = <a, b> / sqrt(product)", cos),
            ("l = 1 - cos if y = 1 else max(0, cos - margin)",
             torch.where(y == 1, 1 - cos, (cos - margin).clamp(min=0)))]
    return rows + _ex.reduce_step(rows[-1][1], reduction, "pairs")


def _cosine_gradient(a, b, y, margin=0.0, **kw):
    cos, na, nb = _cosine(a, b)
    dcos = b / (na * nb).sqrt()[:, None] - cos[:, None] * a / na[:, None]  # d cos / d a
    scale = torch.where(y == 1, -1.0, (cos > margin).to(a.dtype)).to(a.dtype)
    return scale[:, None] * dcos


def _distance_gradient(u, v, p=2.0, eps=1e-6):
    """d ||u - v + eps||_p / d u = sign(w) |w|^(p-1) / ||w||_p^(p-1), w = u - v + eps."""
    w = u - v + eps
    norm = w.abs().pow(p).sum(-1, keepdim=True).pow(1 / p)
    return w.sign() * w.abs().pow(p - 1) / norm.pow(p - 1)


def _triplet_steps(a, pos, neg, reduction="mean", margin=1.0, p=2.0, eps=1e-6, **kw):
    d_ap = (a - pos + eps).norm(p=p, dim=-1)
    d_an = (a - neg + eps).norm(p=p, dim=-1)
    rows = [("d(a, p) = ||a - p + eps||", d_ap), ("d(a, n) = ||a - n + eps||", d_an),
            ("l = max(0, d(a, p) - d(a, n) + margin)", (d_ap - d_an + margin).clamp(min=0))]
    return rows + _ex.reduce_step(rows[-1][1], reduction, "triplets")


def _triplet_gradient(a, pos, neg, margin=1.0, p=2.0, eps=1e-6, **kw):
    d_ap = (a - pos + eps).norm(p=p, dim=-1)
    d_an = (a - neg + eps).norm(p=p, dim=-1)
    active = (d_ap - d_an + margin > 0).to(a.dtype)[:, None]
    return active * (_distance_gradient(a, pos, p, eps) - _distance_gradient(a, neg, p, eps))


def _triplet_distance_gradient(a, pos, neg, distance_function=None, margin=1.0, **kw):
    """The hinge and its activity in closed form; the distance's own gradient is Euclidean's
    closed form for the default, autograd of ``distance_function`` otherwise."""
    if distance_function is None:
        return _triplet_gradient(a, pos, neg, margin=margin)

    def d_grad(v):
        u = a.detach().clone().requires_grad_(True)
        d = distance_function(u, v)
        return d.detach(), torch.autograd.grad(d.sum(), u)[0]

    (d_ap, g_ap), (d_an, g_an) = d_grad(pos), d_grad(neg)
    return (d_ap - d_an + margin > 0).to(a.dtype)[:, None] * (g_ap - g_an)


def _triplet_curve(function):
    def loss(t, **option):
        anchor = torch.stack([t, torch.full_like(t, 0.5)], dim=1)  # (n, 2), off the line
        positive = torch.zeros_like(anchor)
        negative = torch.tensor([2.0, 0.0], dtype=t.dtype).expand_as(anchor)
        return function(anchor, positive, negative, reduction="none", **option)
    return loss


_TRIPLET = ([[0.0, 0.0], [1.0, 1.0]], [[1.0, 0.0], [1.0, 2.0]], [[0.0, 1.5], [3.5, 1.0]])
_TRIPLET_AXIS = "anchor (t, 0.5); positive at (0, 0), negative at (2, 0)"

registry.describe(margin_ranking_loss, registry.Explain(
    formula="l = max(0, -y (x1 - x2) + margin),  y in {-1, 1}",
    latex=r"\ell = \max(0, -y(x_1 - x_2) + m)",
    derivative="dl/dx1 = -y [-y (x1 - x2) + margin > 0]  (dl/dx2 = -dl/dx1)",
    derivative_latex=r"\partial\ell/\partial x_1 = -y\,\mathbb 1[-y(x_1 - x_2) + m > 0]",
    gradient=lambda x1, x2, y, margin=0.0, **kw: -y * (-y * (x1 - x2) + margin > 0),
    example=_ex.example([1.2, 2.0, 0.5], [0.5, 2.5, 0.2], [1.0, 1.0, -1.0], margin=0.5),
    steps=_margin_ranking_steps,
    curve=registry.Curve(
        "score gap x1 - x2 (y = 1: x1 should rank higher)",
        lambda t, **o: margin_ranking_loss(t, torch.zeros_like(t), torch.ones_like(t),
                                           reduction="none", **o),
        tuple((f"margin={m}", {"margin": m}) for m in (0.0, 0.5, 1.0))),
    convex=True, bounded_gradient=True, robust="yes: a pair's pull is 1 or 0",
))
registry.describe(hinge_embedding_loss, registry.Explain(
    formula="l = x if y = 1, max(0, margin - x) if y = -1  (x: a distance)",
    latex=r"\ell = \begin{cases}x & y = 1\\ \max(0, m - x) & y = -1\end{cases}",
    derivative="dl/dx = 1 if y = 1, -[margin - x > 0] if y = -1",
    derivative_latex=r"\partial\ell/\partial x = \mathbb 1[y=1] - \mathbb 1[y=-1,\ x < m]",
    gradient=lambda x, y, margin=1.0, **kw: torch.where(
        y == 1, 1.0, -(margin - x > 0).to(x.dtype)).to(x.dtype),
    example=_ex.example([0.3, 1.5, 0.4], [1.0, -1.0, -1.0]), steps=_hinge_embedding_steps,
    curve=registry.Curve(
        "distance x",
        lambda t, y=1.0, **o: hinge_embedding_loss(t, torch.full_like(t, y), reduction="none",
                                                   **o),
        (("y=+1", {"y": 1.0}), ("y=-1, margin=1", {"y": -1.0}),
         ("y=-1, margin=2", {"y": -1.0, "margin": 2.0})), span=(0.0, 3.0)),
    convex=True, bounded_gradient=True, robust="yes: the pull is 1 or 0",
))
registry.describe(cosine_embedding_loss, registry.Explain(
    formula="l = 1 - cos(a, b) if y = 1, max(0, cos(a, b) - margin) if y = -1;  cos = <a, b> / "
            "sqrt((|a|^2 + eps)(|b|^2 + eps)), eps = 1e-12",
    latex=r"\ell = \begin{cases}1 - \cos(a, b) & y = 1\\ \max(0, \cos(a, b) - m) & y = -1"
          r"\end{cases}",
    derivative="dcos/da = b / sqrt((|a|^2 + eps)(|b|^2 + eps)) - cos a / (|a|^2 + eps);  "
               "dl/da = -dcos/da if y = 1, [cos > margin] dcos/da if y = -1",
    derivative_latex=r"\frac{\partial\cos}{\partial a} = \frac{b}{\lVert a\rVert\lVert b\rVert}"
                     r" - \cos\frac{a}{\lVert a\rVert^2}",
    gradient=_cosine_gradient,
    example=_ex.example([[1.0, 0.0], [1.0, 1.0], [0.5, 2.0]],
                        [[1.0, 1.0], [1.0, 0.5], [-1.0, 0.1]], [1.0, -1.0, -1.0], margin=0.2),
    steps=_cosine_steps,
    curve=registry.Curve(
        "angle between a = (cos t, sin t) and b = (1, 0), radians",
        lambda t, y=1.0, **o: cosine_embedding_loss(
            torch.stack([t.cos(), t.sin()], dim=1),
            torch.tensor([[1.0, 0.0]], dtype=t.dtype).expand(t.shape[0], 2),
            torch.full_like(t, y), reduction="none", **o),
        (("y=+1", {"y": 1.0}), ("y=-1, margin=0", {"y": -1.0}),
         ("y=-1, margin=0.5", {"y": -1.0, "margin": 0.5})), span=(0.0, 3.14159)),
    convex=False, bounded_gradient=False,
    robust="yes in angle (the loss stays in [0, 2]); the gradient scales with 1/|a|",
    note="the gradient is unbounded only as |a| nears 0; along the angle it is sin t",
))
registry.describe(triplet_margin_loss, registry.Explain(
    formula="l = max(0, d(a, p) - d(a, n) + margin),  d(u, v) = ||u - v + eps||_p",
    latex=r"\ell = \max(0, d(a, p) - d(a, n) + m)",
    derivative="dl/da = [l > 0] (dd(a, p)/da - dd(a, n)/da),  dd(u, v)/du = sign(w) |w|^(p-1) "
               "/ ||w||_p^(p-1), w = u - v + eps  (p = 2: w / ||w||)",
    derivative_latex=r"\partial\ell/\partial a = \mathbb 1[\ell > 0]\Bigl(\frac{a - p}{d(a,p)} - "
                     r"\frac{a - n}{d(a,n)}\Bigr)",
    gradient=_triplet_gradient, example=_ex.example(*_TRIPLET), steps=_triplet_steps,
    curve=registry.Curve(_TRIPLET_AXIS, _triplet_curve(triplet_margin_loss),
                         tuple((f"margin={m}", {"margin": m}) for m in (0.5, 1.0, 2.0)),
                         span=(-1.0, 3.0)),
    convex=False, bounded_gradient=True,
    robust="yes: the pull on the anchor is at most 2 (two unit vectors, p = 2)",
    note="the swap option (use d(p, n) when smaller) is left out of the derivative shown",
))
registry.describe(triplet_margin_with_distance_loss, registry.Explain(
    formula="l = max(0, d(a, p) - d(a, n) + margin),  d = distance_function (default: "
            "pairwise_distance, ||u - v + 1e-6||_2)",
    latex=r"\ell = \max(0, d(a, p) - d(a, n) + m)",
    derivative="dl/da = [l > 0] (dd(a, p)/da - dd(a, n)/da): closed form for the default "
               "Euclidean distance ((a - v + eps) / d(a, v)); for a user's distance, its own "
               "gradient",
    derivative_latex=r"\partial\ell/\partial a = \mathbb 1[\ell > 0]\bigl(\nabla_a d(a,p) - "
                     r"\nabla_a d(a,n)\bigr)",
    gradient=_triplet_distance_gradient, example=_ex.example(*_TRIPLET),
    steps=lambda a, pos, neg, **kw: _triplet_steps(a, pos, neg, **kw),
    curve=registry.Curve(
        _TRIPLET_AXIS, _triplet_curve(triplet_margin_with_distance_loss),
        (("euclidean", {}), ("L1 distance", {"distance_function": nn.PairwiseDistance(p=1)}),
         ("euclidean, margin=2", {"margin": 2.0})), span=(-1.0, 3.0)),
    convex=False, bounded_gradient=True,
    robust="yes for the default distance (pull at most 2); depends on distance_function",
    note="the derivative is closed-form only for the default distance; for any other it is the "
         "chain rule around that distance's own gradient (autograd)",
))
