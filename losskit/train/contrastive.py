r"""The contrastive recipe: an embedding model, the losses called on two views, a k-NN metric.

The contrastive task (``data.load("digits-contrastive")``) feeds ``fit`` batches of
``(views (B, 2, F), labels (B,))``. The model embeds every view to a unit vector,
``(B, 2, F) -> (B, 2, D)``. How a loss is called on that output comes from its registry record:

* a loss whose target kind is ``"none"`` (InfoNCE, CLIP) takes the two views as positives:
  ``loss(out[:, 0], out[:, 1])``; the labels are not used.
* a loss that takes ``"class-indices"`` (SupCon) takes the views and the labels as they come:
  ``loss(out, labels)``, so views of same-label digits are positives too.

The validation metric is the k-NN accuracy (:mod:`losskit.train.knn`): each augmented
validation view gets the majority label of its nearest clean training images (cosine
similarity of the embeddings). :func:`embed_reference` gives it the training embeddings of the
current model.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from losskit import registry

CATALOG_ROW = "contrastive representation learning"  # the catalog row of the losses that fit


def fits(record: registry.LossRecord) -> bool:
    """Whether the contrastive task can train with the loss of ``record``.

    The record must say the loss takes embeddings and belongs to the catalog row
    ``"contrastive representation learning"``, and its targets must tell how to call it:
    ``"none"`` (two views) or ``"class-indices"`` (views and labels).
    """
    in_row = any(row == CATALOG_ROW for row, _ in record.catalog)
    callable_here = record.targets == ("none",) or "class-indices" in record.targets
    return record.input == "embeddings" and in_row and callable_here


def min_batch_rows(loss_fn: object) -> int:
    """The fewest rows a batch needs for ``loss_fn``: 2 for a loss that fits this task (each
    row's negatives are the other rows of its batch), else 1.

    >>> import losskit as lk
    >>> min_batch_rows(lk.InfoNCELoss()), min_batch_rows(lk.CrossEntropyLoss())
    (2, 1)
    """
    record = registry.lookup(loss_fn)
    return 2 if record is not None and fits(record) else 1


def doctor_gap(record: registry.LossRecord) -> str | None:
    r"""Why ``losskit doctor`` cannot judge the loss of ``record`` on the contrastive task, or
    None when it can.

    The doctor's overfit check wants the loss 90% of the way to its lowest value, taken as 0
    for a loss it has no formula for. A loss that takes labels (SupCon) has a lowest value above
    0 whenever a label repeats in the batch (about the mean of :math:`\log |P_i|` over anchors,
    ``P_i`` the positives), so the check would fail a healthy setup.
    """
    if "class-indices" in record.targets:
        return (f"the doctor does not know {record.name}'s lowest value: with labels that repeat "
                f"in the batch it is above 0, so its overfit check would fail a healthy model")
    return None


class EmbeddingMLP(nn.Module):
    r"""An MLP to an L2-normalised embedding: ``(..., F) -> (..., D)`` with :math:`\|z\|_2 = 1`.

    Works on any leading shape: ``(B, F)`` images or ``(B, V, F)`` views.

    >>> m = EmbeddingMLP(64, 8, hidden=16)
    >>> z = m(torch.randn(3, 2, 64))
    >>> tuple(z.shape), bool(torch.allclose(z.norm(dim=-1), torch.ones(3, 2)))
    ((3, 2, 8), True)
    """

    def __init__(self, features: int, dim: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(features, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(self.net(x), dim=-1)


_TWO_VIEW: dict[type[nn.Module], type[nn.Module]] = {}  # one subclass per loss class


def two_view(module: type[nn.Module]) -> type[nn.Module]:
    """A subclass of ``module`` that takes ``(views (B, 2, D), labels)`` and calls
    ``module.forward(views[:, 0], views[:, 1])``.

    A subclass rather than a wrapper: :func:`losskit.registry.lookup` still finds the loss's
    record (its mean count, its doctor expectations) through the class's MRO.
    """
    if module in _TWO_VIEW:
        return _TWO_VIEW[module]

    def forward(self: nn.Module, views: Tensor, labels: Tensor | None = None) -> Tensor:
        if views.dim() != 3 or views.shape[1] != 2:
            raise ValueError(
                f"{module.__name__} on the contrastive task takes views of shape (B, 2, D); got "
                f"{tuple(views.shape)}. Fix: give the model's output for two views per row.")
        return module.forward(self, views[:, 0], views[:, 1])  # (B, D) each

    doc = f"``{module.__name__}`` on the two views of a ``(B, 2, D)`` output (labels unused)."
    _TWO_VIEW[module] = type(f"TwoView{module.__name__}", (module,),
                             {"forward": forward, "__doc__": doc})
    return _TWO_VIEW[module]


def make_loss(record: registry.LossRecord) -> nn.Module:
    """The loss of ``record`` with its defaults, called the way the contrastive task needs."""
    if record.targets == ("none",):
        return two_view(record.module)()
    return record.module()


def embed_reference(model: nn.Module, images: Tensor, labels: Tensor) -> Callable:
    """A ``reference()`` for :class:`~losskit.train.knn.KNNAccuracy`: ``model``'s embeddings
    of ``images`` (``(R, F) -> (R, D)``) at the time of the call, in eval mode."""

    @torch.no_grad()
    def reference() -> tuple[Tensor, Tensor]:
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        try:
            return model(images.to(device)), labels.to(device)
        finally:
            model.train(was_training)

    return reference
