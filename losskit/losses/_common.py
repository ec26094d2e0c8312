"""Helpers every loss family shares: how losses behave under ``torch.autocast``, and calling
torch's C++ loss ops directly after the checks."""

from __future__ import annotations

import contextlib
import math
import sys
from typing import TYPE_CHECKING, TypeGuard

import torch
from torch import Tensor

from losskit import checks

if TYPE_CHECKING:  # imported at run time only once a DTensor can exist (see is_dtensor)
    from torch.distributed.tensor import DTensor

# ----------------------------------------------------------------------------------------------
# Mixed precision: under torch.autocast, torch runs every loss in float32 (losses are on its
# float32 op list): class weights of any float dtype are accepted and the loss is float32. Losses
# that call torch.nn.functional get this from autocast itself; the ones computed here use these.


HALF = (torch.float16, torch.bfloat16)
AUTOCAST_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def autocast_on(input: Tensor) -> bool:
    """Whether ``torch.autocast`` is on for ``input``'s device (and ``input`` is a float it
    would cast)."""
    return (
        input.dtype in AUTOCAST_DTYPES
        and torch._C._is_any_autocast_enabled()  # no device object to build: cheap when off
        and torch.is_autocast_enabled(input.device.type)
    )


def result_dtype(input: Tensor) -> torch.dtype:
    """The dtype of the loss: float32 under autocast, else ``input``'s."""
    return torch.float32 if autocast_on(input) else input.dtype


def weight_dtype_ref(input: Tensor) -> Tensor:
    """What class weights must match in dtype: ``input``, or a float32 stand-in under autocast."""
    return torch.empty(0, device="meta", dtype=torch.float32) if autocast_on(input) else input


def float32_weight(input: Tensor, weight: Tensor | None) -> Tensor | None:
    """Class weights as autocast would cast them: half-precision weights become float32."""
    if weight is not None and weight.dtype in HALF and autocast_on(input):
        return weight.float()
    return weight


def no_autocast(input: Tensor):
    """Run a kernel as written (its own float32 math) inside ``torch.autocast``."""
    if autocast_on(input):
        return torch.autocast(input.device.type, enabled=False)
    return contextlib.nullcontext()


# ----------------------------------------------------------------------------------------------
# Calling torch's C++ loss ops directly. torch.nn.functional's Python wrappers repeat what the
# losskit checks have already settled (legacy arguments, sizes, a broadcast of two equal shapes)
# and cost as much as a small loss itself. After the checks, a loss may call the op under the
# wrapper, with the reduction as torch's enum, unless ``has_override(*tensors)``: a tensor subclass
# or ``__torch_function__`` override (DTensor, ...) among the tensors must go through the public
# function, so that its override runs.

REDUCTION_ENUM = {"none": 0, "mean": 1, "sum": 2}  # torch.nn._reduction.get_enum's values

has_override = torch._C._has_torch_function_variadic  # (*tensors or None) -> bool

# What torch's C++ ops raise for a bad call (TORCH_CHECK and its _VALUE / _INDEX / _TYPE forms,
# NotImplementedError being a RuntimeError, and the argument parser's TypeError). A fast path
# that leaves a mistake to the op catches only these: other exceptions (the stop signal of a
# non-reentrant checkpoint's recomputation, a KeyboardInterrupt) must pass through.
OP_ERRORS = (RuntimeError, ValueError, IndexError, TypeError)

# A direct call (see losses/classification.py, "The direct call") runs none of this on a tracer
# or under autocast; these are its tests, bound once (C calls, and is_compiling in Python).
any_autocast = torch._C._is_any_autocast_enabled  # no device object to build
functorch_active = torch._C._are_functorch_transforms_active
compiling = torch.compiler.is_compiling


def op_runs_directly(
    size_average: bool | None, reduce: bool | None, *tensors: Tensor | None
) -> bool:
    """Whether torch's op can run without its Python wrapper: no legacy arguments (the wrapper
    warns about them) and no tensor subclass whose ``__torch_function__`` must run."""
    return size_average is None and reduce is None and not has_override(*tensors)


def mean_over_nothing_to_zero(out: Tensor, target: Tensor, ignore_index: int | None) -> Tensor:
    """A ``"mean"`` of CE / NLL over no counted target is 0 (torch's is 0 / 0 = NaN; its gradient
    is already 0 there). ``out`` is torch's 0-d mean.

    On a CPU tensor outside tracing, reading the one value costs less than the mask ops, so the
    mask is built only when the value is NaN (a zero total class weight stays NaN, as in torch).
    Elsewhere (a GPU would sync) the mask is always applied.
    """
    cpu_readable = out.is_cpu and not checks._tracing()
    if cpu_readable and not math.isnan(out.item()):  # some target was counted
        return out
    counted = checks.not_ignored(target, ignore_index)
    return torch.where(counted.any(), out, torch.zeros_like(out))


# ----------------------------------------------------------------------------------------------
# DTensor arguments (FSDP2, tensor parallel) are routed to losskit.distributed.dtensor


_NOT_DTENSOR = frozenset({torch.Tensor, torch.nn.Parameter, type(None)})


def is_dtensor(t: object) -> TypeGuard[DTensor]:
    """Whether ``t`` is a ``torch.distributed.tensor.DTensor`` (without importing it: no DTensor
    can exist before that module is loaded).

    >>> is_dtensor(torch.zeros(2))
    False
    """
    if type(t) in _NOT_DTENSOR:  # the common case, without DTensor's slower isinstance
        return False
    module = sys.modules.get("torch.distributed.tensor")
    return module is not None and isinstance(t, module.DTensor)


def holds_dtensor(*tensors: object) -> bool:
    """Whether any of ``tensors`` is a DTensor.

    >>> holds_dtensor(torch.zeros(2), None)
    False
    """
    # Runs on every cross-entropy call: one C-level set test for the plain case.
    return not _NOT_DTENSOR.issuperset(map(type, tensors)) and any(map(is_dtensor, tensors))
