"""Triton cross-entropy: one pass over each logits row, gradient written in the forward.

Per row ``i`` with class weights ``w`` (ones without ``weight``, total ``W = sum_c w_c``), smoothing
``eps``, z-loss coefficient ``z`` and ``lse_i`` of the (softcapped) logits ``x``:

    l_i = (1 - eps) w[y_i] (lse_i - x_{i,y_i}) + (eps / C) (W lse_i - sum_c w_c x_ic)
          + z w[y_i] lse_i^2                                   (0 when y_i == ignore_index)

    dl_i/dx_ic = a_i p_ic - (1 - eps) w[y_i] [c == y_i] - (eps / C) w_c,
    a_i = (1 - eps) w[y_i] + eps W / C + 2 z w[y_i] lse_i,     p_ic = exp(x_ic - lse_i)

times ``1 - tanh(x_raw / s)^2`` under a softcap ``s``. ``"mean"`` divides by ``sum_i w[y_i]`` over
counted rows (1 when none is counted: loss 0, gradient 0), exactly like the PyTorch path in
``losskit.kernels.reference``.

The forward kernel runs one program per row. When the row fits in one block (``C <= MAX_BLOCK``) it
is read from HBM once and kept in registers for both the log-sum-exp and the gradient; longer rows
take an online log-sum-exp pass over column blocks of ``TWO_PASS_BLOCK`` (Milakov & Gimelshein
2018, https://arxiv.org/abs/1805.02867) and a second pass that re-reads each block (from L2 where
the row is still there) to write the gradient. The gradient is scaled by the reduction's
``1 / sum w[y_i]`` in the forward, so the backward only multiplies by the upstream gradient, and a
second small kernel skips even that, on the device, where the upstream gradient is exactly 1 (the
usual ``loss.backward()``): no host synchronisation anywhere. With ``inplace=True`` the gradient
is written over the logits (no second ``(N, C)`` buffer) and their version counter is bumped, so
autograd raises if anything else saved the logits for its backward.

Which ``MAX_BLOCK`` / ``TWO_PASS_BLOCK`` / ``num_warps`` reach the copy bandwidth on an H100 is not
measured yet (no GPU in the session that wrote this); ``benchmarks/gpu_cross_entropy.py --sweep``
measures it.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from losskit.kernels.backward import check_first_order, check_single_backward

__all__ = ["cross_entropy"]

# Largest row held in registers by one program: 32768 fp32 values over 32 warps is 32 per thread,
# the budget Liger-Kernel's cross-entropy also settles on (BLOCK_SIZE 32768, num_warps 32); ptxas
# for sm_90 (triton 3.9) gives this kernel 64 registers and no spill at that size, except with
# softcap (see _launch_config).
MAX_BLOCK = 32768
# Column block of the two-pass path for longer rows: 8192 over 16 warps needs 32 registers, so
# several programs share an SM and overlap one row's reductions with another's loads. Tests shrink
# both to exercise the two-pass path on small rows.
TWO_PASS_BLOCK = 8192
# Warps per program; None picks by block size in _launch_config. Set by the GPU benchmark's sweep.
NUM_WARPS: int | None = None
# Column block of the backward scaling kernel: large enough to stream, small enough for many CTAs.
SCALE_BLOCK = 4096


@triton.jit
def _ce_forward_kernel(
    x_ptr, x_stride, grad_ptr, grad_stride, y_ptr, w_ptr, w_total_ptr, scale_ptr, scale_stride,
    loss_ptr, lse_ptr, n_cols, ignore_index, eps, z, softcap,
    HAS_WEIGHT: tl.constexpr, HAS_SMOOTHING: tl.constexpr, HAS_ZLOSS: tl.constexpr,
    HAS_SOFTCAP: tl.constexpr, WRITE_GRAD: tl.constexpr, SINGLE_BLOCK: tl.constexpr,
    BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + row * x_stride
    y = tl.load(y_ptr + row)
    counted = y != ignore_index
    # A label outside [0, C) reads nothing and makes the row's loss and gradient NaN: the value
    # checks run on the startup calls only, and a bad label later must not train silently.
    bad = counted & ((y < 0) | (y >= n_cols))
    y_safe = tl.where(counted & (y >= 0) & (y < n_cols), y, 0)
    if HAS_WEIGHT:
        w_y = tl.load(w_ptr + y_safe).to(tl.float32)
        w_total = tl.load(w_total_ptr).to(tl.float32)
    else:
        w_y = 1.0
        w_total = n_cols * 1.0
    w_y = tl.where(counted, w_y, 0.0)
    cols = tl.arange(0, BLOCK)
    # `counted` as a block: (block & scalar) masks trip Triton's CPU interpreter.
    counted_cols = (cols * 0 + y) != ignore_index

    # 1. log-sum-exp (and sum_c w_c x_c for smoothing); ignored rows load nothing. Softcap:
    #    s * tanh(x / s) with tanh(u) = 1 - 2 / (exp(2u) + 1), written out at each load (a nested
    #    jit helper costs ~5 ms per call under the CPU interpreter); masked lanes stay at -inf.
    if SINGLE_BLOCK:
        mask = (cols < n_cols) & counted_cols
        x_keep = tl.load(x_row + cols, mask=mask, other=float("-inf")).to(tl.float32)
        if HAS_SOFTCAP:
            t = 1.0 - 2.0 / (tl.exp(2.0 * x_keep / softcap) + 1.0)  # tanh(x / s)
            x_keep = tl.where(mask, softcap * t, float("-inf"))
        m = tl.max(x_keep, axis=0)
        m_safe = tl.where(m == float("-inf"), 0.0, m)
        d = tl.sum(tl.exp(x_keep - m_safe), axis=0)
        sx = 0.0  # sum_c w_c (x_c - m): relative to the max, so it never cancels
        if HAS_SMOOTHING:
            if HAS_WEIGHT:
                w_c = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
                sx = tl.sum(tl.where(mask, w_c * (x_keep - m_safe), 0.0), axis=0)
            else:
                sx = tl.sum(tl.where(mask, x_keep - m_safe, 0.0), axis=0)
    else:
        m = float("-inf")
        m_old = 0.0  # m_safe of the blocks before this one
        d = 0.0
        sx = 0.0  # sum_c w_c (x_c - m_safe) over the blocks seen, rebased when m grows
        w_seen = 0.0  # sum_c w_c over the blocks seen
        for start in range(0, n_cols, BLOCK):
            mask = (start + cols < n_cols) & counted_cols
            x = tl.load(x_row + start + cols, mask=mask, other=float("-inf")).to(tl.float32)
            if HAS_SOFTCAP:
                x = tl.where(mask, softcap * (1.0 - 2.0 / (tl.exp(2.0 * x / softcap) + 1.0)),
                             float("-inf"))
            m_new = tl.maximum(m, tl.max(x, axis=0))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            d = d * tl.exp(m - m_safe) + tl.sum(tl.exp(x - m_safe), axis=0)
            m = m_new
            if HAS_SMOOTHING:
                if HAS_WEIGHT:
                    w_c = tl.load(w_ptr + start + cols, mask=mask, other=0.0).to(tl.float32)
                else:
                    w_c = tl.where(mask, 1.0, 0.0)
                # sum w (x - m_new) = sum w (x - m_old) + (m_old - m_new) sum w: a difference of
                # two maxes, never of two large sums.
                sx = sx + w_seen * (m_old - m_safe)
                sx += tl.sum(tl.where(mask, w_c * (x - m_safe), 0.0), axis=0)
                w_seen += tl.sum(tl.where(mask, w_c, 0.0), axis=0)
            m_old = m_safe
        m_safe = tl.where(m == float("-inf"), 0.0, m)
    log_sum = tl.log(tl.where(counted, d, 1.0))  # log sum exp(x - m); ignored rows: d = 0
    lse = tl.where(m == float("inf"), m, m_safe + log_sum)  # a +inf row: logsumexp = +inf

    # 2. the row's loss and log-sum-exp, from x_y - m and log_sum: lse - x_y computed as such
    #    would subtract two numbers of the logits' size (1e8 - 1e8 = 0 in float32).
    x_y = tl.load(x_row + y_safe, mask=counted, other=0.0).to(tl.float32)
    if HAS_SOFTCAP:
        x_y = softcap * (1.0 - 2.0 / (tl.exp(2.0 * x_y / softcap) + 1.0))
    loss = (1.0 - eps) * w_y * (log_sum - (x_y - m_safe))
    a = (1.0 - eps) * w_y
    if HAS_SMOOTHING:
        loss += eps / n_cols * (w_total * log_sum - sx)
        a += eps * w_total / n_cols
    if HAS_ZLOSS:
        loss += z * w_y * lse * lse
        a += 2.0 * z * w_y * lse
    nan_if_bad = tl.where(bad, float("nan"), 1.0)
    tl.store(loss_ptr + row, tl.where(counted, loss, 0.0) * nan_if_bad)
    tl.store(lse_ptr + row, tl.where(counted, lse, 0.0) * nan_if_bad)

    # 3. the gradient, already scaled by the reduction (0 on ignored rows).
    if WRITE_GRAD:
        scale = tl.load(scale_ptr + row * scale_stride).to(tl.float32) * nan_if_bad
        grad_row = grad_ptr + row * grad_stride
        for start in range(0, n_cols, BLOCK):
            mask = start + cols < n_cols
            if SINGLE_BLOCK:
                x = x_keep
                if HAS_SOFTCAP:
                    t = x_keep / softcap  # recomputed: keeping tanh live spills registers
            else:
                x = tl.load(x_row + start + cols, mask=mask & counted_cols, other=float("-inf"))
                x = x.to(tl.float32)
                if HAS_SOFTCAP:
                    t = 1.0 - 2.0 / (tl.exp(2.0 * x / softcap) + 1.0)
                    x = softcap * t
            p = tl.exp((x - m_safe) - log_sum)
            g = a * p - tl.where(start + cols == y_safe, (1.0 - eps) * w_y, 0.0)
            if HAS_SMOOTHING:
                if HAS_WEIGHT:
                    g -= eps / n_cols * tl.load(w_ptr + start + cols, mask=mask, other=0.0).to(
                        tl.float32
                    )
                else:
                    g -= eps / n_cols
            if HAS_SOFTCAP:
                g *= 1.0 - t * t
            g = tl.where(counted, g * scale, 0.0)  # NaN on a bad label's row (scale)
            tl.store(grad_row + start + cols, g.to(grad_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _scale_rows_kernel(g_ptr, g_stride, s_ptr, s_stride, n_cols, BLOCK: tl.constexpr):
    # g[row, block] *= s[row * s_stride]; skipped on the device where the factor is exactly 1.
    row = tl.program_id(0).to(tl.int64)
    s = tl.load(s_ptr + row * s_stride).to(tl.float32)
    if s != 1.0:
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        mask = cols < n_cols
        ptrs = g_ptr + row * g_stride + cols
        g = tl.load(ptrs, mask=mask, other=0.0).to(tl.float32)
        tl.store(ptrs, (g * s).to(g_ptr.dtype.element_ty), mask=mask)


def _launch_config(n_cols: int, softcap: bool) -> tuple[int, bool, int]:
    """Column block, whether the row fits in one block, and the warp count.

    >>> _launch_config(32000, softcap=False), _launch_config(32000, softcap=True)
    ((32768, True, 32), (8192, False, 16))
    >>> _launch_config(128256, softcap=False)
    (8192, False, 16)
    """
    # Softcap's tanh keeps a second value per logit live: at 32768 ptxas spills 144 B/thread,
    # at 16384 it fits (57 registers).
    single = triton.next_power_of_2(n_cols) <= (MAX_BLOCK // 2 if softcap else MAX_BLOCK)
    block = triton.next_power_of_2(n_cols) if single else TWO_PASS_BLOCK
    num_warps = 32 if block >= 32768 else 16 if block >= 8192 else 8 if block >= 2048 else 4
    num_warps = NUM_WARPS or num_warps
    return block, single, num_warps


def reduction_scale(
    target: Tensor, weight: Tensor | None, ignore_index: int, reduction: str
) -> Tensor:
    """The 0-d float32 factor that turns summed row losses into the reduction (device-side).

    ``1 / sum_i w[y_i]`` over counted rows for ``"mean"`` (1 when none is counted), else 1.

    >>> reduction_scale(torch.tensor([0, 2, -100]), torch.tensor([1.0, 2.0, 3.0]), -100, "mean")
    tensor(0.2500)
    >>> reduction_scale(torch.tensor([-100]), None, -100, "mean")
    tensor(1.)
    """
    if reduction != "mean":
        return torch.ones((), dtype=torch.float32, device=target.device)
    counted = target != ignore_index  # (N,)
    if weight is None:
        denom = counted.sum().to(torch.float32)
    else:
        safe = torch.where(counted, target, torch.zeros_like(target))  # (N,) safe to gather
        denom = (weight.to(torch.float32)[safe] * counted).sum()
    one = torch.ones((), dtype=torch.float32, device=target.device)
    return one / torch.where(counted.any(), denom, one)


def forward_rows(
    logits: Tensor,
    target: Tensor,
    *,
    weight: Tensor | None,
    ignore_index: int,
    label_smoothing: float,
    lse_square_scale: float,
    softcap: float | None,
    grad: Tensor | None,
    grad_scale: Tensor,
) -> tuple[Tensor, Tensor]:
    """Launch the forward kernel; returns per-row float32 ``(loss, lse)``, writes ``grad`` if given.

    ``logits`` is ``(N, C)`` with unit column stride; ``grad`` (same shape and dtype, may be
    ``logits`` itself) receives ``grad_scale * dl_i/dx_i``; ``grad_scale`` is a 0-d or ``(N,)``
    float32 tensor.
    """
    n_rows, n_cols = logits.shape
    loss = torch.empty(n_rows, dtype=torch.float32, device=logits.device)  # (N,)
    lse = torch.empty(n_rows, dtype=torch.float32, device=logits.device)  # (N,)
    if n_rows == 0:
        return loss, lse
    block, single, num_warps = _launch_config(n_cols, softcap is not None)
    w_total = weight.to(torch.float32).sum() if weight is not None else grad_scale
    _ce_forward_kernel[(n_rows,)](
        logits, logits.stride(0), grad if grad is not None else logits,
        grad.stride(0) if grad is not None else 0, target,
        weight if weight is not None else logits, w_total, grad_scale,
        1 if grad_scale.dim() > 0 else 0, loss, lse, n_cols,
        ignore_index, float(label_smoothing), float(lse_square_scale),
        float(softcap) if softcap is not None else 1.0,
        HAS_WEIGHT=weight is not None, HAS_SMOOTHING=label_smoothing > 0.0,
        HAS_ZLOSS=lse_square_scale != 0.0, HAS_SOFTCAP=softcap is not None,
        WRITE_GRAD=grad is not None, SINGLE_BLOCK=single, BLOCK=block, num_warps=num_warps,
    )
    return loss, lse


def scale_rows_(grad: Tensor, factor: Tensor) -> Tensor:
    """``grad *= factor`` in place for a 0-d or per-row ``(N,)`` factor; free where it is 1."""
    n_rows, n_cols = grad.shape
    if grad.numel() == 0:
        return grad
    factor = factor.reshape(-1).contiguous()  # (1,) or (N,)
    block = min(triton.next_power_of_2(n_cols), SCALE_BLOCK)
    grid = (n_rows, triton.cdiv(n_cols, block))
    _scale_rows_kernel[grid](
        grad, grad.stride(0), factor, 1 if factor.numel() > 1 else 0, n_cols, BLOCK=block,
        num_warps=8 if block >= 2048 else 4,
    )
    return grad


class _CrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, target, weight, opts):
        grad = None
        if opts["needs_grad"]:
            grad = logits if opts["inplace"] else torch.empty_like(logits)
        scale = reduction_scale(target, weight, opts["ignore_index"], opts["reduction"])  # ()
        loss, lse = forward_rows(
            logits, target, weight=weight, ignore_index=opts["ignore_index"],
            label_smoothing=opts["label_smoothing"], lse_square_scale=opts["lse_square_scale"],
            softcap=opts["softcap"], grad=grad, grad_scale=scale,
        )
        if grad is not None and opts["inplace"]:
            # The logits now hold the gradient: let autograd catch any other user of them.
            torch.autograd.graph.increment_version(logits)
        ctx.save_for_backward(grad, target)
        ctx.opts = opts
        # (N,) for "none"; the scale is 1 for "sum" and 1 / sum_i w[y_i] for "mean".
        out = loss if opts["reduction"] == "none" else loss.sum() * scale
        ctx.mark_non_differentiable(lse)
        return out.to(opts["out_dtype"]), lse

    @staticmethod
    def backward(ctx, grad_out, grad_lse):
        check_first_order("cross_entropy")
        check_single_backward(ctx, "cross_entropy")
        grad, target = ctx.saved_tensors
        if ctx.opts["reduction"] == "none":  # ignored rows get 0 even from an inf/NaN upstream
            grad_out = torch.where(target != ctx.opts["ignore_index"], grad_out, 0.0)
        return scale_rows_(grad, grad_out), None, None, None


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
    """Cross-entropy of ``(N, C)`` logits and ``(N,)`` class indices in one Triton pass.

    Formula in the module docstring; arguments and results as ``losskit.kernels.reference``:
    ``"none"`` gives ``(N,)`` (0 at ignored rows), else a 0-d tensor, in ``logits``' dtype; with
    ``return_lse`` also the ``(N,)`` float32 log-sum-exp (0 at ignored rows). ``inplace`` writes
    the gradient over ``logits``. Inputs are validated by the caller.

    Example (needs a CUDA device, or a process started with ``TRITON_INTERPRET=1``):
        >>> x = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
        >>> cross_entropy(x, torch.tensor([0, 2]), reduction="none")  # doctest: +SKIP
        tensor([0.2395, 1.0986])
    """
    if logits.stride(-1) != 1:
        logits = logits.contiguous()
    opts = dict(
        ignore_index=ignore_index, reduction=reduction, label_smoothing=label_smoothing,
        lse_square_scale=lse_square_scale, softcap=softcap, inplace=inplace,
        needs_grad=torch.is_grad_enabled() and logits.requires_grad,
        out_dtype=out_dtype or logits.dtype,
    )
    target = target.to(torch.int64).contiguous()  # (N,) uint8 targets are legal too
    weight = weight.contiguous() if weight is not None else None  # (C,)
    loss, lse = _CrossEntropy.apply(logits, target, weight, opts)
    return (loss, lse) if return_lse else loss
