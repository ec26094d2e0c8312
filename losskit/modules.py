"""Loss Modules: hold the settings, and ``forward`` is one call into :mod:`losskit.functional`.

The torch-named losses subclass their ``torch.nn`` twin, so constructor arguments (including the
legacy ``size_average`` / ``reduce`` pair), buffers (``weight``, ``pos_weight``), ``state_dict``
keys and ``repr`` are torch's own, and ``isinstance(lk.CrossEntropyLoss(), nn.CrossEntropyLoss)``
holds: losskit is a drop-in replacement. Only ``forward`` changes.
"""

from __future__ import annotations

from torch import Tensor, nn

from losskit import functional as LF

__all__ = [
    "BCELoss",
    "BCEWithLogitsLoss",
    "CrossEntropyLoss",
    "DiceLoss",
    "FocalLoss",
    "HuberLoss",
    "KLDivLoss",
    "L1Loss",
    "LinearCrossEntropyLoss",
    "MSELoss",
    "NLLLoss",
    "SmoothL1Loss",
]


class MSELoss(nn.MSELoss):
    """Mean squared error; see :func:`losskit.functional.mse_loss`.

    >>> MSELoss()(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 4.0]))
    tensor(2.)
    """

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return LF.mse_loss(input, target, reduction=self.reduction)


class L1Loss(nn.L1Loss):
    """Mean absolute error; see :func:`losskit.functional.l1_loss`.

    >>> L1Loss(reduction="sum")(torch.tensor([1.0, 2.0]), torch.tensor([1.5, 4.0]))
    tensor(2.5000)
    """

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return LF.l1_loss(input, target, reduction=self.reduction)


class HuberLoss(nn.HuberLoss):
    """Huber loss with threshold ``delta``; see :func:`losskit.functional.huber_loss`.

    >>> HuberLoss(delta=2.0)(torch.tensor([0.0]), torch.tensor([3.0]))
    tensor(4.)
    """

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return LF.huber_loss(input, target, reduction=self.reduction, delta=self.delta)


class SmoothL1Loss(nn.SmoothL1Loss):
    """Smooth L1 loss with threshold ``beta``; see :func:`losskit.functional.smooth_l1_loss`.

    >>> SmoothL1Loss(beta=2.0)(torch.tensor([0.0]), torch.tensor([3.0]))
    tensor(2.)
    """

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return LF.smooth_l1_loss(input, target, reduction=self.reduction, beta=self.beta)


class BCELoss(nn.BCELoss):
    """Binary cross-entropy on probabilities; see :func:`losskit.functional.binary_cross_entropy`.

    >>> BCELoss()(torch.tensor([0.5]), torch.tensor([1.0]))
    tensor(0.6931)
    """

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return LF.binary_cross_entropy(input, target, weight=self.weight, reduction=self.reduction)


class BCEWithLogitsLoss(nn.BCEWithLogitsLoss):
    """Binary cross-entropy on logits with ``weight`` and ``pos_weight`` buffers; see
    :func:`losskit.functional.binary_cross_entropy_with_logits`.

    >>> BCEWithLogitsLoss(pos_weight=torch.tensor([3.0]))(torch.zeros(2, 1), torch.ones(2, 1))
    tensor(2.0794)
    """

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return LF.binary_cross_entropy_with_logits(
            input, target, self.weight, reduction=self.reduction, pos_weight=self.pos_weight
        )


class CrossEntropyLoss(nn.CrossEntropyLoss):
    """Cross-entropy on logits with class indices or probabilities; see
    :func:`losskit.functional.cross_entropy`.

    Beyond torch's arguments, keyword-only ``lse_square_scale`` (z-loss) and ``softcap``.

    >>> loss = CrossEntropyLoss(ignore_index=0, label_smoothing=0.1)
    >>> loss(torch.zeros(3, 4), torch.tensor([0, 1, 2]))
    tensor(1.3863)
    """

    def __init__(
        self,
        weight: Tensor | None = None,
        size_average: bool | None = None,
        ignore_index: int = -100,
        reduce: bool | None = None,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
        *,
        lse_square_scale: float = 0.0,
        softcap: float | None = None,
    ) -> None:
        super().__init__(weight, size_average, ignore_index, reduce, reduction, label_smoothing)
        self.lse_square_scale = lse_square_scale
        self.softcap = softcap

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return LF.cross_entropy(
            input,
            target,
            self.weight,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            label_smoothing=self.label_smoothing,
            lse_square_scale=self.lse_square_scale,
            softcap=self.softcap,
        )


class NLLLoss(nn.NLLLoss):
    """Negative log-likelihood of class indices; see :func:`losskit.functional.nll_loss`.

    >>> NLLLoss()(torch.tensor([[0.2, 0.8]]).log(), torch.tensor([1]))
    tensor(0.2231)
    """

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return LF.nll_loss(
            input, target, self.weight, ignore_index=self.ignore_index, reduction=self.reduction
        )


class KLDivLoss(nn.KLDivLoss):
    """KL divergence from log-probabilities; see :func:`losskit.functional.kl_div`.

    >>> p = torch.tensor([[0.5, 0.5]]); q = torch.tensor([[0.9, 0.1]])
    >>> KLDivLoss(reduction="batchmean")(p.log(), q)
    tensor(0.3681)
    """

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return LF.kl_div(input, target, reduction=self.reduction, log_target=self.log_target)


class FocalLoss(nn.Module):
    """Focal loss from logits, binary/multi-label or multi-class; see
    :func:`losskit.functional.focal_loss`. A tensor ``alpha`` is a buffer.

    >>> FocalLoss(gamma=0.0)(torch.zeros(2, 3), torch.tensor([0, 1]))
    tensor(1.0986)
    """

    def __init__(
        self,
        alpha: float | Tensor | None = None,
        gamma: float = 2.0,
        reduction: str = "mean",
        ignore_index: int = -100,
    ) -> None:
        super().__init__()
        if isinstance(alpha, Tensor):
            self.register_buffer("alpha", alpha)
        else:
            self.alpha = alpha
        self.gamma = gamma
        self.reduction = reduction
        self.ignore_index = ignore_index

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return LF.focal_loss(
            input,
            target,
            alpha=self.alpha,
            gamma=self.gamma,
            reduction=self.reduction,
            ignore_index=self.ignore_index,
        )


class DiceLoss(nn.Module):
    """Soft Dice loss for segmentation from logits; see :func:`losskit.functional.dice_loss`.

    >>> DiceLoss(smooth=0.0)(torch.zeros(1, 2, 4), torch.tensor([[0, 0, 1, 1]]))
    tensor(0.5000)
    """

    def __init__(
        self, smooth: float = 1.0, ignore_index: int | None = None, reduction: str = "mean"
    ) -> None:
        super().__init__()
        self.smooth = smooth
        self.ignore_index = ignore_index
        self.reduction = reduction

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return LF.dice_loss(
            input,
            target,
            smooth=self.smooth,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
        )


class LinearCrossEntropyLoss(nn.Module):
    """Cross-entropy of a linear head without materialising the logits; see
    :func:`losskit.functional.linear_cross_entropy`. ``forward(hidden, weight, target, bias=None)``.

    >>> head = torch.nn.Linear(4, 10)
    >>> h, y = torch.randn(5, 4), torch.tensor([1, 2, 3, 4, 5])
    >>> a = LinearCrossEntropyLoss()(h, head.weight, y, head.bias)
    >>> bool(torch.allclose(a, torch.nn.functional.cross_entropy(head(h), y), atol=1e-5))
    True
    """

    def __init__(
        self,
        ignore_index: int = -100,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
        class_weight: Tensor | None = None,
        *,
        lse_square_scale: float = 0.0,
        softcap: float | None = None,
        chunk_size: int | None = None,
    ) -> None:
        super().__init__()
        self.register_buffer("class_weight", class_weight)
        self.ignore_index = ignore_index
        self.reduction = reduction
        self.label_smoothing = label_smoothing
        self.lse_square_scale = lse_square_scale
        self.softcap = softcap
        self.chunk_size = chunk_size

    def forward(
        self, hidden: Tensor, weight: Tensor, target: Tensor, bias: Tensor | None = None
    ) -> Tensor:
        return LF.linear_cross_entropy(
            hidden,
            weight,
            target,
            bias,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            label_smoothing=self.label_smoothing,
            class_weight=self.class_weight,
            lse_square_scale=self.lse_square_scale,
            softcap=self.softcap,
            chunk_size=self.chunk_size,
        )
