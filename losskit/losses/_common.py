"""Helpers every loss family shares: how losses behave under ``torch.autocast``."""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor

# ----------------------------------------------------------------------------------------------
# Mixed precision: under torch.autocast, torch runs every loss in float32 (losses are on its
# float32 op list): class weights of any float dtype are accepted and the loss is float32. Losses
# that call torch.nn.functional get this from autocast itself; the ones computed here use these.


HALF = (torch.float16, torch.bfloat16)
AUTOCAST_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def autocast_on(input: Tensor) -> bool:
    """Whether ``torch.autocast`` is on for ``input``'s device (and ``input`` is a float it
    would cast)."""
    return input.dtype in AUTOCAST_DTYPES and torch.is_autocast_enabled(input.device.type)


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
