"""Cross-entropy of a linear head, computed without the ``[tokens, vocab]`` logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from losskit import _reduction, checks, kernels, registry
from losskit.checks import LossInputError, LossRuntimeError
from losskit.losses._common import (
    autocast_on,
    float32_weight,
    no_autocast,
    result_dtype,
    weight_dtype_ref,
)

__all__ = [
    "LinearCrossEntropyLoss",
    "linear_cross_entropy",
]


def linear_cross_entropy(
    hidden: Tensor,
    weight: Tensor,
    target: Tensor,
    bias: Tensor | None = None,
    *,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    class_weight: Tensor | None = None,
    lse_square_scale: float = 0.0,
    softcap: float | None = None,
    return_lse: bool = False,
    chunk_size: int | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    r"""Cross-entropy of a linear head, ``cross_entropy(hidden @ weight.T + bias, target)``,
    computed chunk by chunk so the ``[tokens, vocab]`` logits never exist whole.

    Args:
        hidden: ``(N, D)`` or ``(B, T, D)`` activations.
        weight: ``(V, D)`` head weight (as ``nn.Linear.weight``).
        target: ``(N,)`` or ``(B, T)`` class indices.
        bias: optional ``(V,)``.
        class_weight: optional ``(V,)`` class weights (``weight`` of :func:`cross_entropy`).
        chunk_size: tokens per chunk; by default chosen from the shapes (see
            :mod:`losskit.kernels.linear_cross_entropy`).
        Other arguments as :func:`cross_entropy`.

    Shape: ``"none"`` gives ``target``'s shape, else a scalar.

    Example:
        >>> h = torch.randn(6, 4); W = torch.randn(10, 4); y = torch.tensor([1, 2, 3, -100, 5, 6])
        >>> a = linear_cross_entropy(h, W, y); b = torch.nn.functional.cross_entropy(h @ W.T, y)
        >>> bool(torch.allclose(a, b, atol=1e-5))
        True
    """
    loss = "linear_cross_entropy"
    reduction = _reduction.resolve(reduction)
    checks.check_floating_input(loss, hidden)
    checks.check_same_device(
        loss, hidden=hidden, weight=weight, target=target, bias=bias, class_weight=class_weight
    )
    if weight.dim() != 2 or hidden.shape[-1] != weight.shape[1]:
        raise LossInputError(
            f"linear_cross_entropy: `hidden` has shape {tuple(hidden.shape)} and `weight` "
            f"{tuple(weight.shape)}; expected weight (V, D) with D = hidden.shape[-1] = "
            f"{hidden.shape[-1]}. Fix: pass the head's `nn.Linear.weight`, shaped "
            f"(out_features, in_features)."
        )
    if bias is not None and bias.shape != (weight.shape[0],):
        raise LossInputError(
            f"linear_cross_entropy: `bias` has shape {tuple(bias.shape)}; expected "
            f"({weight.shape[0]},). Fix: pass the head's `nn.Linear.bias`."
        )
    if autocast_on(hidden):  # the head's matmul in autocast's dtype, as nn.Linear would run it
        dtype = torch.get_autocast_dtype(hidden.device.type)
        hidden, weight = hidden.to(dtype), weight.to(dtype)
        bias = None if bias is None else bias.to(dtype)
        class_weight = float32_weight(hidden, class_weight)
    elif weight.dtype != hidden.dtype or (bias is not None and bias.dtype != hidden.dtype):
        got = f"`weight` {weight.dtype}" + ("" if bias is None else f", `bias` {bias.dtype}")
        raise LossRuntimeError(
            f"linear_cross_entropy: `hidden` has dtype {hidden.dtype} but {got}; the head's "
            f"matmul needs one dtype. Fix: `hidden.to(weight.dtype)`, or compute the loss under "
            f"`torch.autocast(...)`, which casts both."
        )
    if label_smoothing > 1.0 or label_smoothing < 0.0:
        raise LossRuntimeError(
            f"linear_cross_entropy: label_smoothing must be between 0.0 and 1.0. Got: "
            f"{label_smoothing}. Fix: use a value such as 0.1."
        )
    checks.check_softcap(loss, softcap)
    checks.check_chunk_size(loss, chunk_size)
    h = hidden.reshape(-1, hidden.shape[-1])  # (N, D)
    if target.shape != hidden.shape[:-1]:
        raise LossInputError(
            f"linear_cross_entropy: `target` has shape {tuple(target.shape)}; expected "
            f"{tuple(hidden.shape[:-1])} (`hidden`'s shape without its last dim). Fix: one class "
            f"index per row of `hidden`."
        )
    # The (N, V) logits never exist: check the targets against a stand-in of their metadata.
    logits_meta = torch.empty((h.shape[0], weight.shape[0]), device="meta", dtype=hidden.dtype)
    checks.check_class_target(loss, logits_meta, target.reshape(-1))
    checks.check_class_weight(
        loss, class_weight, weight.shape[0], weight_dtype_ref(hidden), name="class_weight",
        input_name="hidden", classes="given by the rows of `weight` (V, D)",
    )
    values = checks.values_enabled(loss)
    if values or checks.index_range_enabled(target):
        checks.check_class_index_range(loss, target, weight.shape[0], ignore_index)
    if values:
        checks.check_finite(loss, hidden=hidden, weight=weight, bias=bias)
        if reduction == "mean":
            checks.check_not_all_ignored(loss, target, ignore_index)
    out_dtype = result_dtype(hidden)
    with no_autocast(hidden):
        out = kernels.linear_cross_entropy(
            h, weight, target.reshape(-1).long(), bias, ignore_index=ignore_index,
            reduction=reduction, label_smoothing=label_smoothing, class_weight=class_weight,
            lse_square_scale=lse_square_scale, softcap=softcap, return_lse=return_lse,
            chunk_size=chunk_size, out_dtype=out_dtype,
        )
    value, lse = out if return_lse else (out, None)
    if reduction == "none":
        value = value.reshape(target.shape)
    return (value, lse.reshape(target.shape)) if return_lse else value


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
        return linear_cross_entropy(
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


# ----------------------------------------------------------------------------------------------
# Records

registry.register(registry.LossRecord(
    function=linear_cross_entropy, module=LinearCrossEntropyLoss, family="linear_cross_entropy",
    input="hidden", targets=("class-indices",),
    summary="cross-entropy of a linear head without the [tokens, vocab] logits (LLM training)",
    mean_count=None,  # takes (hidden, weight, target): count with count_targets
    torch_function=getattr(F, "linear_cross_entropy", None),
    torch_module=getattr(nn, "LinearCrossEntropyLoss", None), estimates="probabilities",
))
