r"""DTensor arguments to the cross-entropy losses: FSDP2-sharded heads, tensor-parallel heads and
logits sharded over the vocabulary (torch's ``loss_parallel`` layout).

torch's matmul refuses a plain tensor beside a DTensor ("got mixed torch.Tensor and DTensor"),
which is what an FSDP2 user meets when the head's weight is read outside the head's forward. The
layouts below are recognised from the arguments alone and each gets the path that keeps the
numbers and gradients of one process:

================================  ================================  ===============================
call                              layout                            path
================================  ================================  ===============================
``linear_cross_entropy``          plain ``input``, DTensor head     the head is all-gathered with
                                  (FSDP2 outside the head's         autograd; its gradient is
                                  forward, or any placement)        reduce-scattered back and
                                                                    averaged over the mesh, as
                                                                    FSDP2 averages the others
``linear_cross_entropy``          DTensor ``input`` and head        vocab-parallel: each rank
                                  ``Shard(0)`` on one 1-D mesh      computes its ``(N, V_r)``
                                  (tensor parallel)                 logits only
``cross_entropy``                 logits ``Shard(class dim)`` on    vocab-parallel
                                  a 1-D mesh (``loss_parallel``)
``cross_entropy``                 logits ``Replicate()``            the local copy
================================  ================================  ===============================

Anything else raises a :class:`~losskit.checks.LossInputError` that names what to do. The result
is a plain tensor (the same on every rank of a vocab-parallel group).

Why the gathered head's gradient is averaged: under FSDP2 every rank holds different data and
FSDP2 reduce-scatters the *mean* of the ranks' gradients, so the head must get the same mean for
one step to equal one process on the whole batch. With a head sharded for tensor parallelism and
``input`` the same on every rank, the ranks' gradients are equal and their mean is each of them:
the gather path is right there too, it only costs the full ``(V, D)`` head on every rank.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast, overload

import torch
from torch import Tensor

from losskit.checks import LossInputError, check_class_target
from losskit.checks import linear_cross_entropy as lce_checks
from losskit.distributed.vocab_parallel import (
    vocab_parallel_cross_entropy,
    vocab_parallel_linear_cross_entropy,
)
from losskit.losses._common import is_dtensor

if TYPE_CHECKING:
    from torch.distributed.tensor import DTensor

__all__ = ["cross_entropy", "linear_cross_entropy"]


def _layout(t: DTensor) -> str:
    """How ``t`` is laid out, for messages: "a DTensor with placements (S(0)) on a mesh of
    shape (2,)"."""
    placements = ", ".join(str(p) for p in t.placements)
    mesh = tuple(t.device_mesh.shape)
    return f"a DTensor with placements ({placements}) on a mesh of shape {mesh}"


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; multiplies the gradient by ``scale`` in the backward pass."""

    @staticmethod
    def forward(ctx, t: Tensor, scale: float) -> Tensor:
        ctx.scale = scale
        return t.view_as(t)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad * ctx.scale, None


def _gathered_parameter(loss: str, name: str, t: Tensor | None) -> Tensor | None:
    """The whole tensor of a DTensor parameter, with autograd: the all-gather's backward
    reduce-scatters the gradient (a sum over the mesh), scaled by ``1 / mesh size`` first.

    ``1 / mesh size`` makes the sum the ranks' mean, which is what FSDP2 (and DDP) apply to
    every other parameter.
    """
    if not is_dtensor(t):
        return t
    if any(p.is_partial() for p in t.placements):
        raise LossInputError(
            f"{loss}: `{name}` is {_layout(t)}: a partial sum, not a parameter's layout, so "
            f"which tensor it stands for is not known here. Fix: pass "
            f"`{name}.redistribute(placements=[Replicate()] * mesh.ndim)` or its `full_tensor()`."
        )
    from torch.distributed.tensor import Partial

    mesh = t.device_mesh
    full = t.full_tensor(grad_placements=[Partial("sum")] * mesh.ndim)
    return _ScaleGrad.apply(full, 1.0 / mesh.size()) if t.requires_grad else full


@overload
def _constant(loss: str, name: str, t: Tensor) -> Tensor: ...
@overload
def _constant(loss: str, name: str, t: None) -> None: ...
def _constant(loss: str, name: str, t: Tensor | None) -> Tensor | None:
    """A DTensor that takes no gradient (class weights, targets), whole on this rank."""
    if not is_dtensor(t):
        return t
    if t.requires_grad:
        raise LossInputError(
            f"{loss}: `{name}` is {_layout(t)} that requires grad; losskit gathers it whole "
            f"without a gradient. Fix: pass `{name}.detach()`, or a plain tensor."
        )
    return t.full_tensor()


# ----------------------------------------------------------------------------------------------
# linear_cross_entropy


_VOCAB_PARALLEL_OPTIONS = "ignore_index, reduction and label_smoothing"


def _refuse_vocab_parallel_options(loss: str, gather: str, **given: bool) -> None:
    """The vocab-parallel path takes ignore_index, reduction and label_smoothing only;
    ``given`` says which other option was set, ``gather`` what gathering computes instead."""
    extra = [name for name, is_set in given.items() if is_set]
    if not extra:
        return
    names = ", ".join(f"`{n}`" for n in extra)
    raise LossInputError(
        f"{loss}: got {names} with a vocab-parallel (DTensor) input; the vocab-parallel path "
        f"supports {_VOCAB_PARALLEL_OPTIONS} only. Fix: drop {names}, or pass "
        f"`input.full_tensor()` (a plain tensor) {gather}."
    )


def _vocab_parallel_head(loss: str, input: DTensor, linear_weight: Tensor,
                         linear_bias: Tensor | None) -> tuple[Tensor, Tensor, Tensor | None]:
    """Local hidden, weight shard and bias shard of a tensor-parallel head, or a LossInputError
    naming the layout that would work."""
    from torch.distributed.tensor import Replicate, Shard

    mesh = input.device_mesh
    fix = (
        "shard the head over the vocabulary on the input's 1-D mesh: "
        "`distribute_tensor(weight, mesh, [Shard(0)])` (what `ColwiseParallel` does to "
        "`nn.Linear.weight`), or pass a plain `input` (e.g. `input.full_tensor()`) to gather "
        "the head instead"
    )
    for name, t in (("linear_weight", linear_weight), ("linear_bias", linear_bias)):
        if t is None:
            continue
        if not is_dtensor(t) or t.device_mesh != mesh or mesh.ndim != 1 or (
            tuple(t.placements) != (Shard(0),)
        ):
            got = _layout(t) if is_dtensor(t) else "a plain tensor"
            raise LossInputError(
                f"{loss}: `input` is {_layout(input)} but `{name}` is {got}; the vocab-parallel "
                f"path needs `{name}` sharded over its rows (the vocabulary), placements "
                f"(Shard(dim=0),), on the same 1-D mesh. Fix: {fix}."
            )
    hidden = input.redistribute(mesh, [Replicate()]).to_local()  # (N, D) on every rank
    # Both were checked above to be DTensors sharded over the vocabulary.
    bias = None if linear_bias is None else cast("DTensor", linear_bias).to_local()  # (V_r,)
    return hidden, cast("DTensor", linear_weight).to_local(), bias  # weight: (V_r, D)


def linear_cross_entropy(
    plain: Callable[..., Any],
    input: Tensor,
    linear_weight: Tensor,
    target: Tensor,
    *,
    linear_bias: Tensor | None,
    weight: Tensor | None,
    reduction: str,
    ignore_index: int | None,
    label_smoothing: float,
    **losskit_options,
) -> Tensor | tuple[Tensor, Tensor]:
    """:func:`losskit.functional.linear_cross_entropy` (``plain``) with DTensor arguments.

    A plain ``input``: the head (and bias) are gathered with autograd, see the module docstring.
    A DTensor ``input``: the vocab-parallel path on a head sharded over its rows.
    """
    loss = "linear_cross_entropy"
    if not is_dtensor(input):
        return plain(
            input, _gathered_parameter(loss, "linear_weight", linear_weight),
            _constant(loss, "target", target),
            linear_bias=_gathered_parameter(loss, "linear_bias", linear_bias),
            weight=_constant(loss, "weight", weight), reduction=reduction,
            ignore_index=ignore_index, label_smoothing=label_smoothing, **losskit_options,
        )
    _refuse_vocab_parallel_options(
        loss, "so that losskit gathers the head and runs the one-process loss",
        weight=weight is not None, lse_square_scale=losskit_options["lse_square_scale"] != 0,
        softcap=losskit_options["softcap"] is not None, return_lse=losskit_options["return_lse"],
    )
    hidden, weight_shard, bias_shard = _vocab_parallel_head(loss, input, linear_weight,
                                                            linear_bias)
    target = _constant(loss, "target", target)  # whole on every rank
    if target.is_floating_point():
        raise LossInputError(
            f"{loss}: `target` has dtype {target.dtype} with a vocab-parallel head; that path "
            f"takes class indices only. Fix: `target.argmax(-1)` for one-hot rows, or gather "
            f"the head (pass a plain `input`) for class probabilities."
        )
    # The one-process metadata checks, on the global shapes (the logits never exist whole).
    from losskit.losses.linear_cross_entropy import _check_head_dtype

    lce_checks.check_hidden_dims(input)
    lce_checks.check_head_shape(input, linear_weight)
    _check_head_dtype(input, linear_weight, linear_bias)
    logits_meta = torch.empty((*input.shape[:-1], linear_weight.shape[0]), device="meta",
                              dtype=input.dtype)
    check_class_target(loss, logits_meta, target)
    return vocab_parallel_linear_cross_entropy(
        hidden, weight_shard, target, bias_shard, group=input.device_mesh.get_group(),
        ignore_index=-100 if ignore_index is None else ignore_index, reduction=reduction,
        label_smoothing=max(label_smoothing, 0.0),
    )


# ----------------------------------------------------------------------------------------------
# cross_entropy


def cross_entropy(
    plain: Callable[..., Any],
    input: Tensor,
    target: Tensor,
    weight: Tensor | None,
    *,
    ignore_index: int,
    reduction: str,
    label_smoothing: float,
    **losskit_options,
) -> Tensor | tuple[Tensor, Tensor]:
    """:func:`losskit.functional.cross_entropy` (``plain``) with DTensor arguments: logits
    sharded over the class dim go vocab-parallel, replicated logits run locally."""
    from torch.distributed.tensor import Replicate, Shard

    loss = "cross_entropy"
    if not is_dtensor(input):
        raise LossInputError(
            f"{loss}: `input` is a plain tensor but "
            f"{'`target`' if is_dtensor(target) else '`weight`'} is a DTensor. Fix: pass "
            f"`.full_tensor()` of it, or give the logits as a DTensor too."
        )
    placements = tuple(input.placements)
    if all(p == Replicate() for p in placements):
        return plain(input.to_local(), _constant(loss, "target", target),
                     _constant(loss, "weight", weight), ignore_index=ignore_index,
                     reduction=reduction, label_smoothing=label_smoothing, **losskit_options)
    class_dim = 1 if input.dim() >= 2 else 0
    if input.device_mesh.ndim != 1 or placements != (Shard(class_dim),):
        raise LossInputError(
            f"{loss}: `input` (shape {tuple(input.shape)}) is {_layout(input)}; losskit takes "
            f"logits sharded over the class dim (dim {class_dim}) on a 1-D mesh, torch's "
            f"`loss_parallel` layout, or replicated logits. Fix: "
            f"`input.redistribute(mesh, [Shard({class_dim})])` (for (B, T, V) language-model "
            f"logits: `logits.flatten(0, 1)` sharded on dim 1), or `input.full_tensor()`."
        )
    _refuse_vocab_parallel_options(
        loss, "to compute the loss on the gathered logits (V columns on every rank)",
        weight=weight is not None, lse_square_scale=losskit_options["lse_square_scale"] != 0,
        softcap=losskit_options["softcap"] is not None, return_lse=losskit_options["return_lse"],
        inplace=losskit_options["inplace"],
    )
    target = _constant(loss, "target", target)  # whole on every rank
    if target.is_floating_point():
        raise LossInputError(
            f"{loss}: `target` has dtype {target.dtype} with logits sharded over the classes; "
            f"that path takes class indices only. Fix: `target.argmax(1)` for one-hot rows, or "
            f"`input.full_tensor()` for class probabilities."
        )
    check_class_target(loss, torch.empty(input.shape, device="meta", dtype=input.dtype),
                       target)  # the one-process check, on the global logits' shape
    logits = input.to_local().movedim(class_dim, -1)  # (N, d1, ..., V_r), classes last
    return vocab_parallel_cross_entropy(
        logits, target, group=input.device_mesh.get_group(), ignore_index=ignore_index,
        reduction=reduction, label_smoothing=max(label_smoothing, 0.0),
    )
