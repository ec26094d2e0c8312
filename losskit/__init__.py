"""losskit: PyTorch losses with torch's exact semantics, guardrails against loss mistakes,
fused big-vocabulary cross-entropy, and a small training loop around them.

>>> import losskit as lk
>>> lk.CrossEntropyLoss()(torch.zeros(2, 4), torch.tensor([1, 3]))
tensor(1.3863)
"""

from __future__ import annotations

from typing import Any

import torch

from losskit._torch_version import require_torch

require_torch(torch.__version__)  # before any losskit module touches a 2.13-era API

from losskit import functional, modules, registry  # noqa: E402

# `lk.checks` is the context manager (docs/design.md); it shadows the submodule of the same name as
# an attribute, so reach the module with `from losskit.checks import ...`, not `lk.checks.X`.
from losskit.checks import (  # noqa: E402
    LossIndexError,
    LossInputError,
    LossRuntimeError,
    LossWarning,
    checks,
    get_checks,
    set_checks,
)
from losskit.doctor import Report, doctor  # noqa: E402
from losskit.modules import *  # noqa: E402, F403

__version__ = "0.1.0"

# The training loop pulls in torchmetrics and matplotlib: import it on first use.
_LAZY = {
    "fit": "losskit.train",
    "History": "losskit.train",
    "EarlyStopping": "losskit.train",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'losskit' has no attribute {name!r}")


__all__ = [
    *modules.__all__,
    "EarlyStopping",  # noqa: F405 (lazy, see __getattr__)
    "History",  # noqa: F405 (lazy, see __getattr__)
    "LossIndexError",
    "LossInputError",
    "LossRuntimeError",
    "LossWarning",
    "Report",
    "checks",
    "doctor",
    "fit",  # noqa: F405 (lazy, see __getattr__)
    "functional",
    "get_checks",
    "registry",
    "set_checks",
]
