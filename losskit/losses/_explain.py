"""Small builders the family files share when they describe a loss for ``losskit explain``
(:class:`losskit.registry.Explain`): float64 examples, the reduction step, curve helpers."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

Steps = list[tuple[str, Tensor]]


def f64(values) -> Tensor:
    """``values`` as a float64 tensor (worked examples and curves run in float64)."""
    return torch.tensor(values, dtype=torch.float64)


def example(*args, **kwargs) -> Callable[[], tuple[tuple, dict]]:
    """An ``Explain.example``: fresh tensors on every call (nested lists become float64; a
    ``torch.Tensor`` is cloned as is, e.g. int64 class indices)."""

    def make() -> tuple[tuple, dict]:
        built = tuple(a.clone() if isinstance(a, Tensor) else f64(a) for a in args)
        return built, dict(kwargs)

    return make


def reduce_step(loss: Tensor, reduction: str = "mean", what: str = "elements") -> Steps:
    """The last step: the per-element (or per-sample) losses reduced as ``reduction`` says."""
    if reduction == "sum":
        return [(f"sum over the {loss.numel()} {what}", loss.sum())]
    if reduction == "none":
        return [("no reduction", loss)]
    return [(f"mean over the {loss.numel()} {what}", loss.mean())]


def residual_curve(function: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """``Curve.loss`` for a regression loss: prediction ``t`` against target 0, per point."""

    def loss(t: Tensor, **option) -> Tensor:
        return function(t, torch.zeros_like(t), reduction="none", **option)

    return loss


def true_class_rows(t: Tensor, classes: int = 3) -> Tensor:
    """Logit rows ``[t, 0, ..., 0]`` (``(len(t), classes)``): the true class 0 leads by ``t``."""
    rest = torch.zeros(t.shape[0], classes - 1, dtype=t.dtype)
    return torch.cat([t[:, None], rest], dim=1)


def softmax_steps(logits: Tensor, target: Tensor, label_smoothing: float = 0.0) -> Steps:
    """Cross-entropy of logit rows ``(N, C)`` and class indices ``(N,)``, step by step; the last
    step is the per-row loss ``(N,)``."""
    top = logits.max(dim=1).values
    total = (logits - top[:, None]).exp().sum(dim=1)
    lse = top + total.log()
    picked = logits.gather(1, target[:, None])[:, 0]
    rows = [("row max m", top), ("sum_c exp(z_c - m)", total),
            ("log-sum-exp = m + log(sum)", lse), ("true-class logit z_y", picked),
            ("-log p_y = lse - z_y", lse - picked)]
    if label_smoothing:
        eps = label_smoothing
        uniform = lse - logits.mean(dim=1)
        rows += [("-mean_c log p_c = lse - mean_c z_c", uniform),
                 (f"l = (1 - {eps}) (-log p_y) + {eps} (-mean_c log p_c)",
                  (1 - eps) * (lse - picked) + eps * uniform)]
    return rows


def softmax_gradient(logits: Tensor, target: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """``softmax(z) - q`` with ``q = (1 - eps) onehot(y) + eps / C``: d(sum of CE)/d logits."""
    classes = logits.shape[1]
    onehot = torch.nn.functional.one_hot(target, classes).to(logits.dtype)
    q = (1 - label_smoothing) * onehot + label_smoothing / classes
    return logits.softmax(dim=1) - q
