"""Triton kernels for cross-entropy and linear+cross-entropy (CUDA tensors; optional import).

``losskit.kernels`` imports this package only when ``triton`` imports, and calls it only for CUDA
tensors; everything else takes the PyTorch path. The functions take the arguments of
``losskit.kernels.reference`` (validated by the caller) and match it to float rounding.

Without a GPU the kernels run on Triton's CPU interpreter with CPU tensors, but only in a process
started with ``TRITON_INTERPRET=1``: Triton decides between compiling and interpreting when
``@triton.jit`` decorates a function, including its own ``tl.max`` / ``tl.sum`` at import.
``tests/test_triton_interpret.py`` runs its checks in such a subprocess.
"""

from __future__ import annotations

from .cross_entropy import cross_entropy
from .linear_cross_entropy import linear_cross_entropy

__all__ = ["cross_entropy", "linear_cross_entropy"]
