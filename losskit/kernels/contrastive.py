"""Log-sum-exp over a similarity matrix, tile by tile, so the ``(N, M)`` matrix never exists.

Every contrastive loss in :mod:`losskit.losses.contrastive` is a positive term (one similarity
per query, cheap: ``O(N D)``) minus a log-sum-exp over all keys,

    lse_i = log sum_{j != skip_i} exp(scale * q_i . k_j),        q (N, D), k (M, D)

and only the log-sum-exp needs the ``(N, M)`` similarities. Here they are computed in square
tiles of ``chunk`` rows by ``chunk`` columns: the forward streams the column tiles of each row
block and combines their log-sum-exps (``logaddexp``, exact), keeping only ``lse`` (N,); the
backward recomputes each tile and turns it into its share of the gradient,

    P_ij = grad_i * exp(scale * q_i . k_j - lse_i)    (0 at j = skip_i)
    dq_r += scale * P @ k_c      dk_c += scale * P.T @ q_r      dscale += sum(P * (q_r @ k_c.T))

so the scratch memory is three ``(chunk, chunk)`` tiles whatever N and M: flat in the batch
size. The price is one extra matmul per tile (the recomputation), the same trade as
FlashAttention's backward (Dao et al., 2022, https://arxiv.org/abs/2205.14135).
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor

from losskit.checks import LossRuntimeError

__all__ = ["DEFAULT_CHUNK", "chunked_logsumexp"]

# 1. Constants.
# Tile side: 1024 x 1024 float32 tiles are 4 MiB each; on the 2-core CPU the tile matmuls
# (1024 x D x 1024) run near the speed of one big matmul from 512 up at D = 128.
DEFAULT_CHUNK = 1024


# 2. The kernel: one tile of scaled similarities.
def _tile(q: Tensor, k: Tensor, scale: Tensor, skip: Tensor, col0: int) -> tuple[Tensor, Tensor]:
    """``(dot, logits)`` of rows ``q`` (n, D) against columns ``k`` (m, D) starting at column
    ``col0``; ``logits = scale * dot`` with ``-inf`` where the column is the row's ``skip``."""
    dot = q @ k.T  # (n, m)
    cols = torch.arange(col0, col0 + k.shape[0], device=q.device)  # (m,)
    logits = (dot * scale).masked_fill(cols[None, :] == skip[:, None], float("-inf"))
    return dot, logits


def _forward(q: Tensor, k: Tensor, scale: Tensor, skip: Tensor, chunk: int) -> Tensor:
    """``lse`` (N,), streaming the column tiles of each row block."""
    lse = torch.empty(q.shape[0], dtype=q.dtype, device=q.device)
    for r in range(0, q.shape[0], chunk):
        rows = slice(r, r + chunk)
        acc = torch.full((q[rows].shape[0],), float("-inf"), dtype=q.dtype, device=q.device)
        for c in range(0, k.shape[0], chunk):
            _, logits = _tile(q[rows], k[c : c + chunk], scale, skip[rows], c)
            acc = torch.logaddexp(acc, logits.logsumexp(1))
        lse[rows] = acc
    return lse


def _backward(
    grad: Tensor, q: Tensor, k: Tensor, scale: Tensor, skip: Tensor, lse: Tensor, chunk: int,
    want_scale: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """``dq``, ``dk``, ``dscale`` (0 unless ``want_scale``: a fixed temperature skips that
    pass): each tile recomputed and turned into its gradient share."""
    dq, dk = torch.zeros_like(q), torch.zeros_like(k)
    dscale = torch.zeros((), dtype=q.dtype, device=q.device)
    for r in range(0, q.shape[0], chunk):
        rows = slice(r, r + chunk)
        for c in range(0, k.shape[0], chunk):
            cols = slice(c, c + chunk)
            dot, logits = _tile(q[rows], k[cols], scale, skip[rows], c)
            p = (logits - lse[rows, None]).exp_().mul_(grad[rows, None])  # (n, m), 0 at skip
            if want_scale:
                dscale += (p * dot).sum()
            dq[rows] += (p @ k[cols]).mul_(scale)
            dk[cols] += (p.T @ q[rows]).mul_(scale)
    return dq, dk, dscale


# 3. The autograd.Function.
def _check_first_order() -> None:
    """The backward is hand-written tile by tile and keeps no graph: refuse create_graph=True
    (grad mode is on inside backward then) rather than return a wrong second derivative."""
    if torch.is_grad_enabled():
        raise LossRuntimeError(
            "chunked contrastive log-sum-exp: a second derivative (create_graph=True) was "
            "requested through the chunked path (chunk_size set), whose tile-by-tile backward "
            "is not itself differentiable, so the result would be wrong. Fix: pass "
            "`chunk_size=None` (the whole similarity matrix, plain autograd ops) for double "
            "backward."
        )


def _float32_as_written(q: Tensor):
    """The tiles in ``q``'s own dtype: under ``torch.autocast`` (which a backward run inside
    the autocast region sees too) the tile matmuls would drop to half precision."""
    if torch._C._is_any_autocast_enabled() and torch.is_autocast_enabled(q.device.type):
        return torch.autocast(q.device.type, enabled=False)
    return contextlib.nullcontext()


class ChunkedLogSumExp(torch.autograd.Function):
    """``lse_i = log sum_{j != skip_i} exp(scale * q_i . k_j)`` without the (N, M) matrix."""

    @staticmethod
    def forward(ctx, q, k, scale, skip, chunk):
        with _float32_as_written(q):  # forward and backward in one precision
            lse = _forward(q, k, scale, skip, chunk)
        ctx.save_for_backward(q, k, scale, skip, lse)
        ctx.chunk = chunk
        return lse

    @staticmethod
    def backward(ctx, grad):
        _check_first_order()
        q, k, scale, skip, lse = ctx.saved_tensors
        with _float32_as_written(q):
            dq, dk, dscale = _backward(grad.to(q.dtype), q, k, scale, skip, lse, ctx.chunk,
                                       ctx.needs_input_grad[2])
        return dq, dk, dscale.reshape(scale.shape), None, None


def chunked_logsumexp(
    q: Tensor, k: Tensor, *, scale: Tensor, skip: Tensor, chunk: int = DEFAULT_CHUNK
) -> Tensor:
    """``log sum_{j != skip_i} exp(scale * q_i . k_j)`` per row of ``q``, tile by tile.

    Args:
        q: ``(N, D)`` queries. k: ``(M, D)`` keys (may be ``q`` itself).
        scale: 0-d tensor (``1 / temperature``), differentiable.
        skip: ``(N,)`` int64 column left out of row i (a query's own key); ``-1`` for none.
        chunk: tile side in rows and columns.

    >>> q = torch.randn(5, 3, dtype=torch.float64); s = torch.tensor(2.0, dtype=torch.float64)
    >>> skip = torch.arange(5)
    >>> plain = (s * q @ q.T).fill_diagonal_(float("-inf")).logsumexp(1)
    >>> bool(torch.allclose(chunked_logsumexp(q, q, scale=s, skip=skip, chunk=2), plain))
    True
    """
    return ChunkedLogSumExp.apply(q, k, scale, skip, chunk)
