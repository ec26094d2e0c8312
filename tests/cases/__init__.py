"""One table of test cases per loss, iterated by every cross-cutting test (tests/test_cases.py).

Each family has a file here named like its file in ``losskit/losses/``; it defines ``CASES``, a
list of :class:`LossCase`. :data:`ALL` gathers every family's cases by scanning this package, so
adding a loss means adding its cases to its family's file and nothing else.

A case builds float64 tensors from a seeded generator: ``make(gen) -> (args, kwargs)``, where
``args`` are the positional tensors of the loss function (``input, target`` for most losses; three
for ranking and triplet losses; four for CTC) and ``kwargs`` its keyword options, the reduction
excluded. The reference is the record's torch twin in float64 unless the case names another
(a formula written plainly for losses torch does not have).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

Made = tuple[tuple[Tensor, ...], dict[str, Any]]


@dataclass(frozen=True)
class LossCase:
    loss: str  # the record's name: the function's name in losskit.functional
    id: str
    make: Callable[[torch.Generator], Made]
    grad_args: tuple[int, ...] = (0,)  # positional args whose gradient is compared and checked
    reductions: tuple[str, ...] = ("none", "mean", "sum")
    reference: Callable[..., Tensor] | None = None  # float64 oracle; None: the torch twin
    gradcheck: bool = True  # False only where finite differences are invalid (say why)
    function_only: bool = False  # an option the Module does not take (torch's functional-only)
    module: Callable[[Made, str], tuple[torch.nn.Module, tuple[Tensor, ...]]] | None = None
    # ^ builds (Module, forward args) from a made case and a reduction; None: the record's
    #   Module constructed with the case's kwargs and called with its args

    def __str__(self) -> str:
        return f"{self.loss}-{self.id}"


def randn(gen: torch.Generator, *shape: int) -> Tensor:
    return torch.randn(shape, generator=gen, dtype=torch.float64)


def rand(gen: torch.Generator, *shape: int) -> Tensor:
    return torch.rand(shape, generator=gen, dtype=torch.float64)


def randint(gen: torch.Generator, high: int, *shape: int, low: int = 0) -> Tensor:
    return torch.randint(low, high, shape, generator=gen)


def _gather() -> list[LossCase]:
    cases: list[LossCase] = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        cases.extend(importlib.import_module(f"{__name__}.{info.name}").CASES)
    return cases


ALL: list[LossCase] = _gather()
