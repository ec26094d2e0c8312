r"""k-nearest-neighbour accuracy of embeddings: the contrastive task's validation metric.

An embedding is good for classification when images of one class lie close together. The k-NN
accuracy measures that without training anything on top: each query embedding takes the
majority label of its ``k`` most similar reference embeddings (cosine similarity), and the
metric is the share of queries labelled correctly. Chance is about 1/C (0.1 for ten digits).

>>> z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
>>> knn_accuracy(z, torch.tensor([3, 5]), z, torch.tensor([3, 5]), k=1)
1.0
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
import torchmetrics
from torch import Tensor
from torchmetrics.utilities import dim_zero_cat

KNN_K = 5  # neighbours that vote: 5 rather than 1, so one odd neighbour (a 1 written like a 7)
# does not decide alone


def knn_accuracy(
    query: Tensor, query_labels: Tensor, reference: Tensor, reference_labels: Tensor, *,
    k: int = KNN_K,
) -> float:
    r"""The share of ``query`` rows whose k nearest ``reference`` rows vote for their label.

    Similarity is cosine: :math:`s_{ij} = \hat q_i \cdot \hat r_j`. Each of the ``k`` most
    similar reference rows gives one vote to its label; the label with most votes wins, and a
    tie goes to the tied label whose voters have the larger total similarity.

    Args:
        query: ``(Q, D)`` embeddings. query_labels: ``(Q,)`` int labels.
        reference: ``(R, D)`` embeddings. reference_labels: ``(R,)`` int labels.
        k: neighbours that vote, ``1 <= k <= R``.

    >>> q = torch.tensor([[1.0, 0.1], [0.1, 1.0]])
    >>> r = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    >>> knn_accuracy(q, torch.tensor([0, 1]), r, torch.tensor([0, 0, 1]), k=3)  # both vote 0
    0.5
    """
    if not 1 <= k <= reference.shape[0]:
        raise ValueError(f"k={k} must be in [1, {reference.shape[0]}] (the reference rows). "
                         f"Fix: a smaller k, or more reference rows.")
    if query.shape[0] == 0:
        return float("nan")
    sim = F.normalize(query.float(), dim=-1) @ F.normalize(reference.float(), dim=-1).T  # (Q, R)
    top, idx = sim.topk(k, dim=1)  # (Q, k)
    classes = int(max(reference_labels.max(), query_labels.max())) + 1
    voters = F.one_hot(reference_labels[idx], classes).float()  # (Q, k, C)
    votes = voters.sum(1)  # (Q, C)
    # Ties: total similarity of each label's voters, in (-0.5, 0.5), never outweighs a vote.
    tie_break = (voters * top[:, :, None]).sum(1) / (2 * k + 1)  # (Q, C)
    predicted = (votes + tie_break).argmax(1)  # (Q,)
    return float((predicted == query_labels).float().mean())


class KNNAccuracy(torchmetrics.Metric):
    """:func:`knn_accuracy` of the validation embeddings against a reference set, for ``fit``.

    ``update(output, target)`` keeps view ``view`` of a ``(B, V, D)`` output (or the rows of a
    ``(B, D)`` one) with their labels. ``compute()`` calls ``reference()`` for
    ``(embeddings (R, D), labels (R,))``, typically the current model applied to the clean
    training images, and scores the kept rows against them. Under ``torch.distributed`` the
    kept rows are gathered from every rank (torchmetrics' ``cat`` reduction) before scoring.
    """

    embeddings: list[Tensor]  # states of add_state (torchmetrics types them loosely)
    labels: list[Tensor]

    full_state_update = False
    higher_is_better = True

    def __init__(
        self, reference: Callable[[], tuple[Tensor, Tensor]], *, k: int = KNN_K, view: int = 0
    ) -> None:
        super().__init__()
        self.reference, self.k, self.view = reference, k, view
        self.add_state("embeddings", default=[], dist_reduce_fx="cat")
        self.add_state("labels", default=[], dist_reduce_fx="cat")

    def update(self, output: Tensor, target: Tensor) -> None:
        rows = output[:, self.view] if output.dim() == 3 else output  # (B, D)
        self.embeddings.append(rows.detach().float())
        self.labels.append(target.detach())

    def compute(self) -> Tensor:
        ref, ref_labels = self.reference()
        query, labels = dim_zero_cat(self.embeddings), dim_zero_cat(self.labels)
        value = knn_accuracy(query, labels, ref.to(query.device), ref_labels.to(query.device),
                             k=self.k)
        return torch.tensor(value)
