"""Cross-entropy kernels, and the one place that picks which one runs.

Three implementations share one signature (see :mod:`losskit.kernels.reference` for the formula):

* ``losskit.kernels.triton``: GPU kernels, for CUDA tensors when triton imports (optional);
* :mod:`losskit.kernels.cross_entropy` / :mod:`losskit.kernels.linear_cross_entropy`: fused,
  chunked PyTorch, gradient computed in the forward; CPU and any device;
* :mod:`losskit.kernels.reference`: plain autograd ops, for everything else.

The rules, in :func:`_backend`:

1. float64 (or any dtype but float32/bfloat16/float16), a class ``weight`` that requires grad,
   a ``torch.func`` transform (``grad``, ``vmap``, ...), or inside ``with fused(False):`` ->
   reference. The fused kernels hand out a finished first-order gradient: a second derivative
   through them (``create_graph=True``) raises and names ``fused(False)`` as the fix, and
   ``torch.autograd.gradcheck`` (float64) always takes the reference path.
2. CUDA tensors and ``losskit.kernels.triton`` importable -> Triton.
3. Otherwise the fused PyTorch path, except for tiny inputs (fewer than ``MIN_FUSED_ELEMENTS``
   logits), where the reference's few large ops beat a Python loop over chunks; ``inplace=True``
   always takes a fused path, since it is a memory request.

``inplace=True`` is a permission, not an order: the logits are overwritten only when they are a
contiguous intermediate that needs a gradient (not a leaf and not a view of one), see
:func:`_may_overwrite`.

Both functions return ``loss`` (``(N,)`` for ``"none"``, else 0-d, in the logits' dtype, or
``out_dtype``: float32 under ``torch.autocast``, as torch's autocast runs losses) and, with
``return_lse``, the ``(N,)`` float32 log-sum-exp of the (softcapped) logits, detached and 0 at
ignored rows.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
from collections.abc import Iterator

import torch
from torch import Tensor

from losskit.checks import LossIndexError

# The submodules share their names with the functions below: import them first, then the function
# definitions take over the package attributes.
from losskit.kernels import cross_entropy as _fused_ce
from losskit.kernels import linear_cross_entropy as _fused_lce
from losskit.kernels import reference

__all__ = ["cross_entropy", "fused", "linear_cross_entropy", "runs_reference"]

# Below this many logits the reference (a few large ops) is as fast as the chunked loop. Measured
# fp32 fwd+bwd, one thread, on the (busy) 2-core machine: 16 x 256 reference 1.2 ms, fused 1.3 ms;
# 64 x 1024 both 2.1 ms; 256 x 1024 reference 21 ms (noisy), fused 5 ms.
MIN_FUSED_ELEMENTS = 2**16
FUSED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


@functools.cache
def _triton():
    """The Triton module, or None when triton (or our kernels) cannot be imported.

    Any exception counts, not only ImportError: a triton wheel that does not match the driver or
    the CUDA toolkit can fail on import with a RuntimeError, and CUDA tensors then take the PyTorch
    path (same results, slower). Tried once per process.
    """
    try:
        return importlib.import_module("losskit.kernels.triton")
    except Exception:  # any failure, see the docstring
        return None


_fused_enabled = True


@contextlib.contextmanager
def fused(enabled: bool) -> Iterator[None]:
    """Allow (default) or forbid the fused and Triton kernels inside the ``with`` block.

    ``fused(False)`` sends every cross-entropy call to the reference path (plain autograd ops,
    torch's memory use), which supports what a gradient computed in the forward cannot:
    second derivatives (``create_graph=True``, e.g. MAML or gradient penalties through the loss)
    and ``backward(retain_graph=True)`` twice. The setting is read when the loss is computed.

    >>> x = torch.randn(256, 512, requires_grad=True); y = torch.randint(0, 512, (256,))
    >>> with fused(False):
    ...     loss = cross_entropy(x, y)
    >>> (g,) = torch.autograd.grad(loss, x, create_graph=True)
    >>> g.square().sum().backward()  # second order: fine on the reference path
    """
    global _fused_enabled
    previous, _fused_enabled = _fused_enabled, bool(enabled)
    try:
        yield
    finally:
        _fused_enabled = previous


def fused_allowed() -> bool:
    """Whether fused kernels may run here (False inside ``with fused(False):``), for losses
    outside this package that keep a plain path of their own (``linear_kd_loss``).

    >>> with fused(False):
    ...     fused_allowed()
    False
    """
    return _fused_enabled


def _may_overwrite(logits: Tensor) -> bool:
    """Whether ``inplace=True`` may write the gradient over ``logits``.

    Only a contiguous intermediate that needs a gradient: never a leaf (a parameter or the
    caller's data) or a view of one (``x.view(...)`` shares the leaf's memory), and never a
    strided view (the kernels' out= writes assume a dense buffer).
    """
    base = logits._base if logits._base is not None else logits
    return (
        torch.is_grad_enabled() and logits.requires_grad and not base.is_leaf
        and logits.is_contiguous()
    )


def _backend(x: Tensor, class_weight: Tensor | None, numel: int, inplace: bool, name: str):
    """The module whose ``name`` function runs this call (reference, fused or Triton)."""
    if (
        not _fused_enabled
        or x.dtype not in FUSED_DTYPES
        or (class_weight is not None and class_weight.requires_grad)
        or torch._C._are_functorch_transforms_active()  # torch.func needs plain autograd ops
        or x.is_meta  # shapes without data: the chunked kernels read the targets' values
    ):
        return reference
    if x.is_cuda:
        triton = _triton()
        if triton is not None and hasattr(triton, name):
            return triton
    if numel < MIN_FUSED_ELEMENTS and not inplace:
        return reference
    return _fused_ce if name == "cross_entropy" else _fused_lce


def runs_reference(logits: Tensor, weight: Tensor | None) -> bool:
    """Whether :func:`cross_entropy` would run the reference on these logits (out of place).

    >>> runs_reference(torch.zeros(64, 10), None), runs_reference(torch.zeros(512, 512), None)
    (True, False)
    """
    return _backend(logits, weight, logits.numel(), False, "cross_entropy") is reference


def _no_classes(
    logits: Tensor, target: Tensor, ignore_index: int, reduction: str, label_smoothing: float,
    return_lse: bool, out_dtype: torch.dtype | None, name: str,
) -> Tensor | tuple[Tensor, Tensor]:
    """The loss of ``(N, 0)`` logits: no class, so every target must be ignored (torch: IndexError).

    Rows contribute 0 ("mean" over nothing is 0, losskit's rule), but torch's ``eps / C`` makes
    label smoothing NaN. ``logits.sum(1)`` is that 0 with the graph kept (zero gradients); the
    value read is a device sync, paid only on this degenerate shape.
    """
    counted = target != ignore_index  # (N,)
    if bool(counted.any()):
        first = int(target[counted][0])
        raise LossIndexError(
            f"{name}: there are no classes (the logits have shape {tuple(logits.shape)}, C = 0), "
            f"but `target` holds the class index {first} ({int(counted.sum())} targets are not "
            f"ignore_index={ignore_index}). Fix: give the head at least one class (a vocabulary "
            f"of 0 is usually an empty `weight` or a wrong slice), or mark these targets with "
            f"ignore_index."
        )
    loss = logits.sum(dim=1)  # (N,) zeros
    if label_smoothing > 0.0:
        loss = loss + float("nan")  # torch's (eps / C) with C = 0
    value = loss if reduction == "none" else loss.sum()
    value = value.to(out_dtype or logits.dtype)
    lse = torch.zeros(logits.shape[0], dtype=torch.float32, device=logits.device)
    return (value, lse) if return_lse else value


def cross_entropy(
    logits: Tensor,
    target: Tensor,
    *,
    weight: Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    lse_square_scale: float = 0.0,
    softcap: float | None = None,
    return_lse: bool = False,
    inplace: bool = False,
    out_dtype: torch.dtype | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """Cross-entropy of ``(N, C)`` logits and ``(N,)`` class indices on the best backend.

    Inputs are already validated by :func:`losskit.functional.cross_entropy`. Formula and the
    z-loss / softcap / lse conventions: :mod:`losskit.kernels.reference`.

    >>> x = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    >>> cross_entropy(x, torch.tensor([0, -100]), reduction="sum")
    tensor(0.2395)
    """
    if logits.shape[1] == 0:
        return _no_classes(logits, target, ignore_index, reduction, label_smoothing, return_lse,
                           out_dtype, "cross_entropy")
    backend = _backend(logits, weight, logits.numel(), inplace, "cross_entropy")
    return backend.cross_entropy(
        logits, target, weight=weight, ignore_index=ignore_index, reduction=reduction,
        label_smoothing=label_smoothing, lse_square_scale=lse_square_scale, softcap=softcap,
        return_lse=return_lse, inplace=inplace and _may_overwrite(logits), out_dtype=out_dtype,
    )


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
    out_dtype: torch.dtype | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """``cross_entropy(hidden @ weight.T + bias, target)`` on the best backend.

    ``hidden`` (N, D), ``weight`` (V, D), ``bias`` (V,), ``target`` (N,). The fused paths never
    hold the whole ``(N, V)`` logits; ``chunk_size`` (tokens per chunk) overrides their rule.

    >>> h = torch.eye(2); W = torch.tensor([[2.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    >>> linear_cross_entropy(h, W, torch.tensor([0, 2]), reduction="none")
    tensor([0.2395, 1.0986])
    """
    if weight.shape[0] == 0:
        logits = torch.nn.functional.linear(hidden, weight, bias)  # (N, 0): keeps the graph
        return _no_classes(logits, target, ignore_index, reduction, label_smoothing, return_lse,
                           out_dtype, "linear_cross_entropy")
    numel = hidden.shape[0] * weight.shape[0]
    backend = _backend(hidden, class_weight, numel, False, "linear_cross_entropy")
    return backend.linear_cross_entropy(
        hidden, weight, target, bias, ignore_index=ignore_index, reduction=reduction,
        label_smoothing=label_smoothing, class_weight=class_weight,
        lse_square_scale=lse_square_scale, softcap=softcap, return_lse=return_lse,
        chunk_size=chunk_size, out_dtype=out_dtype,
    )
