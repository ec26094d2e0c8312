"""Large CPU buffers backed by transparent huge pages.

A fresh ``[tokens, vocab]`` gradient buffer is touched for the first time when the kernel writes it,
and on Linux every 4 KiB page of it then costs a page fault (the kernel maps and zeroes the page).
For the 1 GiB gradient of a [8192, 32000] float32 cross-entropy that is 262144 faults, measured at
2.4x the time of the softmax that fills the buffer. torch's CPU allocator asks for huge pages only
when the whole process sets ``THP_MEM_ALLOC_ENABLE=1``; here only the buffers losskit allocates ask,
through ``madvise(MADV_HUGEPAGE)`` on an anonymous mapping, so 2 MiB pages fault 512 times fewer.
The mapping is unmapped when the last tensor viewing it is freed. Elsewhere (small buffers, other
devices, systems without ``MADV_HUGEPAGE``, code being compiled) this is ``torch.empty``.
"""

from __future__ import annotations

import contextlib
import math
import mmap

import torch
from torch import Tensor

__all__ = ["empty"]

# Below this size page faults cost little and torch's allocator is as good.
HUGEPAGE_MIN_BYTES = 32 * 2**20
_HUGEPAGE = getattr(mmap, "MADV_HUGEPAGE", None)  # Linux only


def empty(shape: tuple[int, ...], *, dtype: torch.dtype, device: torch.device) -> Tensor:
    """An uninitialised contiguous tensor; huge-page backed when large and on a Linux CPU.

    >>> empty((2, 3), dtype=torch.float32, device=torch.device("cpu")).shape
    torch.Size([2, 3])
    """
    numel = math.prod(shape)
    nbytes = numel * torch.empty((), dtype=dtype).element_size()
    if (device.type != "cpu" or _HUGEPAGE is None or nbytes < HUGEPAGE_MIN_BYTES
            or torch.compiler.is_compiling()):  # compiled code allocates through inductor
        return torch.empty(shape, dtype=dtype, device=device)
    buffer = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    with contextlib.suppress(OSError):  # a kernel without transparent huge pages: plain pages
        buffer.madvise(_HUGEPAGE)
    return torch.frombuffer(buffer, dtype=dtype, count=numel).view(shape)
