"""Linear head + cross-entropy, chunked over tokens so the ``[N, V]`` logits never exist whole.

For each chunk of ``n`` tokens: logits ``hidden_c @ weight.T + bias`` (n, V) go into one reusable
buffer, the fused cross-entropy chunk kernel (``losskit.kernels.cross_entropy.ce_chunk``) turns
them into ``dl/dlogits`` in place (float32), and three matmuls finish the chunk:

    d hidden_c = G_c @ weight        d weight += G_c.T @ hidden_c        d bias += G_c.sum(0)

``d weight`` and ``d bias`` accumulate in float32 for every input dtype, cast once at the end.
This is the three matmuls eager torch runs anyway (``h @ W.T``, ``G @ W``, ``G.T @ h``), with the
cross-entropy done between them. The idea is torchtune's chunked cross-entropy and Liger-Kernel's
fused linear cross-entropy (https://github.com/linkedin/Liger-Kernel,
``ops/fused_linear_cross_entropy.py``). Scratch memory: the chunk's logits (input dtype), plus for
bfloat16/float16 a float32 gradient chunk, plus a float32 chunk for low precision or softcap (two
with softcap).

* ``"mean"`` / ``"sum"``: gradients are computed in the forward pass (the upstream gradient is a
  scalar that backward applies to the finished ``dh``, ``dW``, ``db``).
* ``"none"``: the upstream gradient differs per token, so the forward computes the loss only and
  backward recomputes the chunks' logits with it: four matmuls instead of three.
* Ignored tokens are dropped before the matmuls (``nonzero`` + ``index_select``). That needs the
  number of kept tokens on the host: a device sync on CUDA, and a data-dependent shape that
  ``torch.compile`` cannot trace, so under ``torch.compile`` the ignored tokens are kept and masked
  (their gradient rows are 0) instead.
"""

from __future__ import annotations

import math
from typing import cast

import torch
from torch import Tensor

from losskit.kernels.backward import check_first_order, check_single_backward
from losskit.kernels.cross_entropy import ce_chunk, scratch_count

__all__ = ["chunk_tokens", "linear_cross_entropy"]


# 1. Constants.
# Tokens per chunk: the largest power of two whose (n, V) float32 logits fit in CHUNK_BYTES.
# Bigger chunks run the matmuls closer to peak and re-read the (V, D) float32 dW less often (the
# update G_c.T @ h_c reads and writes all of it once per chunk). Measured at N=4096, D=512,
# V=32000 fp32 on the 2-core machine, time over the three bare matmuls: 128 tokens (torch 2.13's
# "aspect_ratio" rule) 1.35x, 256 1.22x, 512 1.14x, 1024 1.13x. 64 MiB gives 512 there, with
# under a third of the extra memory of torch's chunked F.linear_cross_entropy (results.md).
CHUNK_BYTES = 64 * 2**20
MIN_CHUNK = 16  # below this the matmuls run far from peak


def chunk_tokens(n_tokens: int, vocab: int) -> int:
    """Tokens per chunk: the largest ``2**k`` with ``2**k * V * 4 <= CHUNK_BYTES``, in [16, N].

    >>> chunk_tokens(4096, 32000), chunk_tokens(8192, 128256), chunk_tokens(10, 100)
    (512, 128, 10)
    """
    fit = max(1, CHUNK_BYTES // (4 * vocab))
    size = 2 ** int(math.log2(fit))
    return max(1, min(n_tokens, max(MIN_CHUNK, size)))


# 2. The kernel: one pass over the token chunks.
def _chunked_pass(
    hidden: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    target: Tensor,
    counted: Tensor,
    w_y: Tensor,
    scale: Tensor | None,
    *,
    class_weight: Tensor | None,
    weight_sum: Tensor | float,
    label_smoothing: float,
    lse_square_scale: float,
    softcap: float | None,
    chunk: int,
    needs: tuple[bool, bool, bool],
) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None, Tensor | None]:
    """Loss and lse per token, and (when ``scale`` is given) ``dh``, float32 ``dW`` and ``db``.

    ``scale`` (N,) float32 is each token's gradient factor (0 for ignored tokens); ``needs`` says
    which of (dh, dW, db) to compute.
    """
    n_tokens, vocab = hidden.shape[0], weight.shape[0]
    dev = hidden.device
    loss = torch.empty(n_tokens, dtype=torch.float32, device=dev)
    lse = torch.empty(n_tokens, dtype=torch.float32, device=dev)
    grads = scale is not None
    dh = torch.empty_like(hidden) if grads and needs[0] else None  # (N, D)
    dw = torch.zeros(weight.shape, dtype=torch.float32, device=dev) if grads and needs[1] else None
    db = torch.zeros(vocab, dtype=torch.float32, device=dev) if grads and needs[2] else None
    # Step 1: buffers shared by all chunks: the logits in the input dtype (the matmul's output),
    # the float32 gradient (the logits buffer itself for float32), and the kernel's scratch.
    rows_max = min(chunk, n_tokens)
    buf = torch.empty((rows_max, vocab), dtype=hidden.dtype, device=dev)
    gbuf = buf
    if hidden.dtype != torch.float32 and grads:
        gbuf = torch.empty_like(buf, dtype=torch.float32)
    plain = hidden.dtype == torch.float32 and softcap is None and grads
    work = None if plain else torch.empty((scratch_count(softcap), rows_max, vocab),
                                          dtype=torch.float32, device=dev)
    for r0 in range(0, n_tokens, chunk):
        rows = slice(r0, r0 + chunk)
        h_c = hidden[rows]  # (n, D)
        logits = buf[: h_c.shape[0]]  # (n, V)
        # Step 2: the chunk's logits.
        if bias is None:
            torch.mm(h_c, weight.T, out=logits)
        else:
            torch.addmm(bias, h_c, weight.T, out=logits)
        # Step 3: cross-entropy; the float32 gradient (for the dW sum) is written over the logits.
        g = gbuf[: h_c.shape[0]]  # (n, V)
        loss[rows], lse[rows] = ce_chunk(
            logits, target[rows], counted[rows], w_y[rows], None if scale is None else scale[rows],
            grad=g if grads else None, work=work, weight=class_weight, weight_sum=weight_sum,
            label_smoothing=label_smoothing, lse_square_scale=lse_square_scale, softcap=softcap,
        )
        if not grads:
            continue
        # Step 4: the three matmuls' other two, and the bias.
        if dh is not None:
            torch.mm(g.to(weight.dtype), weight, out=dh[rows])  # (n, D)
        if dw is not None:
            dw.addmm_(g.T, h_c.float())  # (V, D) += (V, n) @ (n, D), float32
        if db is not None:
            db += g.sum(dim=0)
    return loss, lse, dh, dw, db


# 3. The launch functions: token selection, reduction, scattering back.
def _prepare(target: Tensor, class_weight: Tensor | None, ignore_index: int):
    counted = target != ignore_index  # (N,)
    t = torch.where(counted, target, torch.zeros_like(target)).long()  # (N,)
    counted_f = counted.float()
    cw = None if class_weight is None else class_weight.float()  # (V,)
    w_y = counted_f if cw is None else cw[t] * counted_f  # (N,)
    return counted, t, counted_f, cw, w_y


def _kept_rows(counted: Tensor) -> Tensor | None:
    """Indices of the counted tokens, or None to keep all (nothing ignored, or under compile)."""
    if torch.compiler.is_compiling():
        return None
    keep = counted.nonzero().squeeze(1)  # host sync on CUDA: the count decides the shape
    return None if keep.numel() == counted.numel() else keep


def _scatter_rows(values: Tensor | None, keep: Tensor | None, n_tokens: int) -> Tensor | None:
    """Put rows computed for the kept tokens back at their places (zeros elsewhere)."""
    if values is None or keep is None:
        return values
    full = values.new_zeros((n_tokens, *values.shape[1:]))
    return full.index_copy_(0, keep, values)


def _is_one(grad_output: Tensor) -> bool:
    """True when ``grad_output`` is known to be 1 without a device sync (a CPU scalar, eager)."""
    if torch.compiler.is_compiling() or grad_output.device.type != "cpu":
        return False
    return grad_output.dim() == 0 and bool(grad_output == 1)


# 4. The autograd.Function.
class ChunkedLinearCrossEntropy(torch.autograd.Function):
    """Forward: loss (and for scalar reductions the gradients); backward: scale or recompute."""

    @staticmethod
    def forward(ctx, hidden, weight, target, bias, class_weight, options):
        reduction, needs = options["reduction"], options["needs"]
        counted, t, counted_f, cw, w_y = _prepare(target, class_weight, options["ignore_index"])
        keep = _kept_rows(counted)
        sel = (lambda v: v) if keep is None else (lambda v: v.index_select(0, keep))
        h_k, t_k, c_k, w_k = sel(hidden), sel(t), sel(counted_f), sel(w_y)  # kept tokens only
        one = torch.ones((), dtype=torch.float32, device=hidden.device)
        denom = torch.where(counted.any(), w_y.sum(), one) if reduction == "mean" else one
        grads_now = reduction != "none" and any(needs)
        chunk = options["chunk_size"] or chunk_tokens(h_k.shape[0], weight.shape[0])
        kwargs = dict(
            class_weight=cw, weight_sum=float(weight.shape[0]) if cw is None else cw.sum(),
            label_smoothing=options["label_smoothing"],
            lse_square_scale=options["lse_square_scale"], softcap=options["softcap"],
            chunk=chunk,
            needs=needs,
        )
        loss, lse, dh, dw, db = _chunked_pass(
            h_k, weight, bias, t_k, c_k, w_k, c_k / denom if grads_now else None, **kwargs
        )
        # loss and lse are always computed, so their scattered rows are tensors.
        loss_full = cast(Tensor, _scatter_rows(loss, keep, hidden.shape[0]))
        lse_full = cast(Tensor, _scatter_rows(lse, keep, hidden.shape[0]))
        ctx.reduction, ctx.kwargs, ctx.dtypes = reduction, kwargs, (weight.dtype, hidden.dtype)
        if grads_now:
            ctx.grads = [_scatter_rows(dh, keep, hidden.shape[0]), dw, db]
        elif reduction == "none" and any(needs):
            ctx.save_for_backward(h_k, weight, bias, t_k, c_k, w_k, keep)
        if reduction == "none":
            value = loss_full
        else:
            value = loss_full.sum() if reduction == "sum" else loss_full.sum() / denom
        lse_full = lse_full * counted_f
        ctx.mark_non_differentiable(lse_full)
        return value.to(options["out_dtype"]), lse_full

    @staticmethod
    def backward(ctx, grad_value, grad_lse):
        del grad_lse  # lse is returned detached
        check_first_order("linear_cross_entropy")
        w_dtype, h_dtype = ctx.dtypes
        if ctx.reduction == "none":
            h_k, weight, bias, t_k, c_k, w_k, keep = ctx.saved_tensors
            go = grad_value.float() if keep is None else grad_value.float().index_select(0, keep)
            _, _, dh, dw, db = _chunked_pass(
                h_k, weight, bias, t_k, c_k, w_k, torch.where(c_k > 0, go, 0.0), **ctx.kwargs
            )
            dh = _scatter_rows(dh, keep, grad_value.shape[0])
        else:
            check_single_backward(ctx, "linear_cross_entropy")
            (dh, dw, db), ctx.grads = ctx.grads, None
            if not _is_one(grad_value):
                for g in (dh, dw, db):
                    if g is not None:
                        g.mul_(grad_value.to(g.dtype))
        dw = None if dw is None else dw.to(w_dtype)
        db = None if db is None else db.to(w_dtype)
        dh = None if dh is None else dh.to(h_dtype)
        return dh, dw, None, db, None, None


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
    """Chunked ``cross_entropy(hidden @ weight.T + bias, target)`` (module docstring).

    ``hidden`` (N, D), ``weight`` (V, D), ``bias`` (V,) or None, ``target`` (N,) int64;
    ``chunk_size`` tokens per chunk (default :func:`chunk_tokens`). Other arguments and the result
    as :func:`losskit.kernels.reference.linear_cross_entropy`.

    >>> h = torch.randn(6, 4, requires_grad=True); W = torch.randn(10, 4)
    >>> y = torch.tensor([1, 2, 3, -100, 5, 6])
    >>> a = linear_cross_entropy(h, W, y, chunk_size=4)
    >>> b = torch.nn.functional.cross_entropy(h @ W.T, y)
    >>> bool(torch.allclose(a, b, atol=1e-6))
    True
    """
    grad_on = torch.is_grad_enabled()
    needs = tuple(
        bool(grad_on and p is not None and p.requires_grad) for p in (hidden, weight, bias)
    )
    options = dict(
        ignore_index=ignore_index, reduction=reduction, label_smoothing=label_smoothing,
        lse_square_scale=lse_square_scale, softcap=softcap, chunk_size=chunk_size, needs=needs,
        out_dtype=out_dtype or hidden.dtype,
    )
    value, lse = ChunkedLinearCrossEntropy.apply(
        hidden, weight, target, bias, class_weight, options
    )
    return (value, lse) if return_lse else value
