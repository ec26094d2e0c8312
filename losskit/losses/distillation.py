r"""Distillation: a student's distribution pulled towards a teacher's, from logits or from hidden
states and heads without either ``[tokens, vocab]`` logits.

Every loss here compares rows: the last dimension is the vocabulary (classes), every other
dimension counts rows (samples, or tokens of ``(B, S, V)`` logits). With ``p = softmax(s / T)``
(student) and ``q = softmax(t / T)`` (teacher) per row:

* :func:`kd_loss`: :math:`T^2 \, \mathrm{KL}(q \,\|\, p)` (Hinton et al. 2015);
* :func:`jsd`: the generalised Jensen-Shannon divergence of Agarwal et al. 2024 (GKD);
* :func:`linear_kd_loss`: either of them from ``hidden @ head.T`` (+ bias) for student and
  teacher, chunk by chunk.

Reductions are per row, never per element: ``"batchmean"`` (and its alias ``"mean"``) is the
sum over the vocabulary averaged over counted rows (tokens), ``"sum"`` the total, ``"none"`` one
value per row. torch's ``kl_div(reduction="mean")`` divides by rows x vocabulary, which makes the
loss V times too small; there is no per-element mean here.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from losskit import _reduction, checks, kernels, registry
from losskit.checks import distillation as distill_checks
from losskit.kernels.backward import check_first_order
from losskit.kernels.linear_cross_entropy import _kept_rows, _scatter_rows, chunk_tokens
from losskit.losses import _explain as _ex
from losskit.losses._common import HALF

__all__ = [
    "JSDLoss",
    "KDLoss",
    "LinearKDLoss",
    "jsd",
    "kd_loss",
    "linear_kd_loss",
]

REDUCTIONS = ("batchmean",)  # beside "none" | "mean" | "sum"; "mean" is the same per-row mean


@dataclass(frozen=True)
class Divergence:
    """Which divergence, and its settings: ``kind`` "kl" (forward KL, Hinton's KD) or "jsd"."""

    kind: str
    temperature: float = 1.0
    beta: float = 0.5  # jsd only: the teacher's weight in the mixture
    scale: float = 1.0  # multiplies every row (T^2 for KD)


def row_divergence(student: Tensor, teacher: Tensor, div: Divergence) -> Tensor:
    r"""The divergence of each row, ``(*, V) x (*, V) -> (*)``, in float32 for half inputs.

    ``kl``: :math:`\sum_v q_v (\log q_v - \log p_v)`. ``jsd`` with :math:`m = \beta q +
    (1 - \beta) p`: :math:`\beta\, \mathrm{KL}(q \| m) + (1 - \beta)\, \mathrm{KL}(p \| m)`,
    forward KL :math:`\mathrm{KL}(q \| p)` at :math:`\beta = 0` and reverse KL
    :math:`\mathrm{KL}(p \| q)` at :math:`\beta = 1`. Both times ``div.scale``.
    """
    return _rows(*_log_probs(student, teacher, div), div)


def _log_probs(student: Tensor, teacher: Tensor, div: Divergence) -> tuple[Tensor, Tensor]:
    """``log_softmax(x / T)`` of both, ``(*, V)``, in their promoted dtype, float32 at least.

    Both sides are upcast, whichever is half: a bfloat16 teacher's log-softmax in bfloat16 is
    off by up to ~0.03 per class, enough to make the JSD negative.
    """
    dtype = torch.promote_types(student.dtype, teacher.dtype)
    dtype = torch.float32 if dtype in HALF else dtype
    student, teacher = student.to(dtype), teacher.to(dtype)
    log_p = F.log_softmax(student / div.temperature, dim=-1)  # (*, V)
    log_q = F.log_softmax(teacher / div.temperature, dim=-1)  # (*, V)
    return log_p, log_q


def _beta(div: Divergence) -> float:
    return 0.0 if div.kind == "kl" else div.beta


def _rows(log_p: Tensor, log_q: Tensor, div: Divergence) -> Tensor:
    """Per-row divergence ``(*)`` (times ``div.scale``) from the log-probabilities ``(*, V)``;
    the fused path's :func:`_rows_into` is the same arithmetic in reused buffers."""
    beta = _beta(div)
    if beta == 0.0:  # forward KL(q || p)
        out = (log_q.exp() * (log_q - log_p)).sum(-1)
    elif beta == 1.0:  # reverse KL(p || q)
        out = (log_p.exp() * (log_p - log_q)).sum(-1)
    else:
        # log m = log(beta q + (1 - beta) p), without leaving log space
        log_m = torch.logaddexp(log_q + math.log(beta), log_p + math.log1p(-beta))
        out = (beta * (log_q.exp() * (log_q - log_m)).sum(-1)
               + (1 - beta) * (log_p.exp() * (log_p - log_m)).sum(-1))
    return out * div.scale if div.scale != 1.0 else out


# ----------------------------------------------------------------------------------------------
# Shared by the plain and the fused path: settings, checks, counted rows, reduction


def _divergence(loss, kind, temperature, beta, scaled) -> Divergence:
    distill_checks.check_divergence(loss, kind)
    distill_checks.check_temperature(loss, temperature)
    if kind == "jsd":
        distill_checks.check_beta(loss, beta)
    else:
        distill_checks.check_temperature_squared(loss, temperature, scaled)
    scale = float(temperature) ** 2 if kind == "kl" and scaled else 1.0
    return Divergence(kind, float(temperature), float(beta), scale)


def _counted(labels: Tensor | None, ignore_index: int, rows: tuple[int, ...], like: Tensor):
    """Where a row counts ``(*)`` (None: every row) and the count of ``"mean"``."""
    if labels is None:
        return None, registry.count_full(like, math.prod(rows))
    counted = checks.not_ignored(labels, ignore_index)  # (*)
    return counted, counted.sum().to(registry.count_full(like, 0).dtype)


def _denominator(count: Tensor, num_items: Tensor | float | None) -> Tensor:
    """``num_items`` (a global token count, see losskit.distributed) or this call's count."""
    if num_items is None:
        return count
    return torch.as_tensor(num_items, dtype=count.dtype, device=count.device)


def _check_num_items(loss: str, num_items: Tensor | float | None) -> None:
    if num_items is None or (isinstance(num_items, Tensor) and num_items.dim() == 0):
        return
    if isinstance(num_items, numbers.Real) and not isinstance(num_items, bool):
        return
    raise checks.LossInputError(
        f"{loss}: num_items={num_items!r}, but it is the one number every counted row is divided "
        f"by. Fix: pass a 0-d tensor or a number, e.g. "
        f"`losskit.distributed.global_denominator(counts)`."
    )


def _value_checks(loss, labels, ignore_index, reduction, num_items, **logits) -> None:
    if not checks.values_enabled(loss, labels, *logits.values()):
        return
    checks.check_finite(loss, **logits)
    for name, x in logits.items():
        if name.endswith("logits"):
            distill_checks.check_not_probabilities_values(loss, name, x)
    if labels is not None and reduction in ("mean", "batchmean") and num_items is None:
        distill_checks.check_not_all_ignored_labels(loss, labels, ignore_index)


# ----------------------------------------------------------------------------------------------
# The plain path: logits in, autograd through torch ops


def _distill(loss, student, teacher, div, labels, ignore_index, num_items, reduction) -> Tensor:
    reduction = _reduction.resolve(reduction, extra=REDUCTIONS)
    distill_checks.check_floating(loss, student_logits=student, teacher_logits=teacher)
    checks.check_same_device(loss, student_logits=student, teacher_logits=teacher, labels=labels)
    distill_checks.check_logit_pair(loss, student, teacher)
    distill_checks.check_labels(loss, labels, tuple(student.shape[:-1]))
    _check_num_items(loss, num_items)
    distill_checks.check_teacher_without_grad(loss, student, teacher, "teacher_logits")
    _value_checks(loss, labels, ignore_index, reduction, num_items, student_logits=student,
                  teacher_logits=teacher)
    return _reduce_rows(row_divergence(student, teacher, div), student, labels, ignore_index,
                        num_items, reduction)


def _reduce_rows(per_row, student, labels, ignore_index, num_items, reduction) -> Tensor:
    """``per_row`` ``(*)`` with skipped rows zeroed, reduced over the counted rows."""
    counted, count = _counted(labels, ignore_index, tuple(student.shape[:-1]), student)
    if counted is not None:
        per_row = torch.where(counted, per_row, torch.zeros_like(per_row))
    if reduction in ("mean", "batchmean"):
        out = _reduction.reduce(per_row, "mean", _denominator(count, num_items))
    else:
        out = _reduction.reduce(per_row, reduction)
    return out.to(student.dtype)


def kd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor | None = None,
    *,
    temperature: float = 1.0,
    scale_by_temperature_squared: bool = True,
    ignore_index: int = -100,
    num_items: Tensor | float | None = None,
    reduction: str = "batchmean",
) -> Tensor:
    r"""Knowledge distillation (Hinton et al., 2015): the temperature-softened KL divergence from
    the teacher's distribution to the student's, times :math:`T^2`.

    .. math::
        l_n = T^2 \sum_v q_{n,v} (\log q_{n,v} - \log p_{n,v}), \qquad
        p_n = \mathrm{softmax}(s_n / T), \; q_n = \mathrm{softmax}(t_n / T)

    The :math:`T^2` keeps the soft targets' gradient, :math:`T (p - q)`, at the same scale for
    every temperature, so the weight against a hard-label loss need not change with :math:`T`.

    Args:
        student_logits: ``(*, V)`` raw scores of the model being trained (``(N, V)`` or
            ``(B, S, V)``); log-probabilities give the same loss (softmax ignores a row shift).
        teacher_logits: ``(*, V)``, same shape; compute it under ``torch.no_grad()``.
        temperature: :math:`T > 0`.
        scale_by_temperature_squared: multiply by :math:`T^2` (default; a warning when turned off
            at :math:`T \ne 1`).
        labels: optional ``(*)`` integer labels, read only to skip rows equal to
            ``ignore_index`` (padding); they add 0 and are not counted.
        ignore_index: the label of rows to skip.
        num_items: optional denominator of ``"batchmean"`` instead of this call's counted rows:
            the token count of the whole step over micro-batches and ranks
            (``losskit.distributed.global_denominator``).
        reduction: ``"batchmean"`` = ``"mean"`` (sum over the vocabulary, mean over counted
            rows), ``"sum"``, or ``"none"`` (one value per row, 0 at skipped rows).

    Shape: ``(*)`` for ``"none"``, else a scalar.

    Departure from ``F.kl_div``: both arguments are logits, and ``"mean"`` is the per-row mean
    (``kl_div``'s ``"batchmean"`` over all rows), not ``kl_div``'s per-element mean.

    Example:
        >>> s, t = torch.tensor([[1.0, 0.0, -1.0]]), torch.tensor([[0.0, 2.0, 0.0]])
        >>> kd_loss(s, t, temperature=2.0)
        tensor(0.8198)
        >>> F.kl_div((s / 2).log_softmax(-1), (t / 2).softmax(-1), reduction="batchmean") * 4
        tensor(0.8198)
    """
    div = _divergence("kd_loss", "kl", temperature, 0.0, scale_by_temperature_squared)
    return _distill("kd_loss", student_logits, teacher_logits, div, labels, ignore_index,
                    num_items, reduction)


def jsd(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor | None = None,
    *,
    beta: float = 0.5,
    temperature: float = 1.0,
    ignore_index: int = -100,
    num_items: Tensor | float | None = None,
    reduction: str = "batchmean",
) -> Tensor:
    r"""Generalised Jensen-Shannon divergence between teacher and student (Agarwal et al., 2024,
    GKD), per row.

    .. math::
        l_n = \beta\, \mathrm{KL}(q_n \| m_n) + (1 - \beta)\, \mathrm{KL}(p_n \| m_n), \quad
        m_n = \beta q_n + (1 - \beta) p_n

    with :math:`p = \mathrm{softmax}(s / T)` (student) and :math:`q = \mathrm{softmax}(t / T)`
    (teacher). The mixture formula vanishes at both ends, so the ends are defined as the two KLs,
    as in TRL's and Liger-Kernel's GKD losses: ``beta=0`` is the **forward** KL
    :math:`\mathrm{KL}(q \| p)` (mass-covering, the student spreads over every teacher mode) and
    ``beta=1`` the **reverse** KL :math:`\mathrm{KL}(p \| q)` (mode-seeking). ``beta=0.5`` is the
    symmetric JSD, bounded by :math:`\ln 2`. Not multiplied by :math:`T^2` (multiply yourself to
    match :func:`kd_loss`'s gradient scale).

    Args: as :func:`kd_loss`, with ``beta`` in :math:`[0, 1]` (the teacher's weight in :math:`m`).

    Shape: ``(*)`` for ``"none"``, else a scalar.

    Example:
        >>> s, t = torch.tensor([[1.0, 0.0, -1.0]]), torch.tensor([[0.0, 2.0, 0.0]])
        >>> jsd(s, t, beta=0.5)
        tensor(0.1879)
        >>> bool(torch.isclose(jsd(s, t, beta=0.0), kd_loss(s, t)))  # forward KL
        True
    """
    div = _divergence("jsd", "jsd", temperature, beta, True)
    return _distill("jsd", student_logits, teacher_logits, div, labels, ignore_index, num_items,
                    reduction)


# ----------------------------------------------------------------------------------------------
# The fused path: hidden states and heads, never both [N, V] logits


# Rows per chunk: half of linear cross-entropy's (its 64 MiB float32 logits chunk). A pass
# holds four (rows, V) buffers (five for the mixture JSD, one more per half-precision side),
# allocated once and reused by every chunk (_ChunkBuffers): 66-82 MB at 128 rows, V = 32000, a
# sixth of one (4096, 32000) float32 logits tensor. Measured (before the buffers were reused)
# at N=4096, H=256, V=32000 on the loaded 2-core machine: 128 rows 30.7 s, 256 rows 29.0 s,
# 512 rows 24.7 s per step, against 31.7 s for the plain path (noisy: load average 11). Capped at
# N / 32 rows, see below.
def distill_chunk_rows(n_rows: int, vocab: int) -> int:
    """Rows per chunk of :func:`linear_kd_loss` (``chunk_size=None``).

    Also at most ``N / 32`` rows (16 at least), so that a pass's ``(rows, V)`` buffers (four
    for KD, five for JSD's mixture) stay well below one ``(N, V)`` logits tensor for any ``N``
    (``N / 8`` with fresh temporaries per chunk measured 1.9 logits tensors for KD and 2.6 for
    JSD at N = 2048, V = 16000).

    >>> [distill_chunk_rows(n, v) for n, v in ((4096, 32000), (1024, 16000), (10, 100))]
    [128, 32, 5]
    """
    return max(1, min(n_rows, chunk_tokens(n_rows, vocab) // 2, max(16, n_rows // 32)))


@dataclass
class _ChunkBuffers:
    """The ``(rows, V)`` work tensors of one fused pass, allocated once and reused by every
    chunk (a chunk's views are ``[:n]``), so the chunk loop allocates nothing large.

    Fresh ``(rows, V)`` temporaries per chunk let glibc's heap grow by about one logits tensor
    (its dynamic mmap threshold rises to the chunk's size, then the freed blocks fragment the
    heap): 1.27 logits tensors of peak RSS at N=2048, V=16000 before, see benchmarks/results.md.
    """

    raw: Tensor  # a side's logits, then differences, products and finally the gradient
    log_p: Tensor  # the student's log-softmax
    log_q: Tensor  # the teacher's log-softmax
    work: Tensor  # exp(log q) or exp(log p)
    log_m: Tensor | None  # the mixture JSD's log m, else None
    student: Tensor | None  # the student's logits in its own dtype when narrower than ``raw``
    teacher: Tensor | None  # the teacher's, likewise
    column: Tensor  # (rows, 1): a row's max-free sums
    vocab: Tensor  # (V,): a chunk's sum of gradient rows (db)

    @classmethod
    def allocate(cls, rows: int, h: Tensor, w: Tensor, ht: Tensor, div: Divergence):
        dtype = torch.promote_types(h.dtype, ht.dtype)
        dtype = torch.float32 if dtype in HALF else dtype

        def new(dt=dtype):
            return torch.empty(rows, w.shape[0], dtype=dt, device=h.device)  # (rows, V)

        mixture = 0.0 < _beta(div) < 1.0
        return cls(new(), new(), new(), new(), new() if mixture else None,
                   None if h.dtype == dtype else new(h.dtype),
                   None if ht.dtype == dtype else new(ht.dtype),
                   torch.empty(rows, 1, dtype=dtype, device=h.device),
                   torch.empty(w.shape[0], dtype=dtype, device=h.device))

    def rows(self, n: int) -> _ChunkBuffers:
        """The same buffers cut to a chunk of ``n`` rows (views, contiguous)."""
        def cut(t: Tensor | None) -> Tensor | None:
            return None if t is None else t[:n]

        return _ChunkBuffers(self.raw[:n], self.log_p[:n], self.log_q[:n], self.work[:n],
                             cut(self.log_m), cut(self.student), cut(self.teacher),
                             self.column[:n], self.vocab)


def _log_softmax_into(out: Tensor, x: Tensor, w: Tensor, b: Tensor | None, raw: Tensor,
                      own: Tensor | None, temperature: float) -> None:
    """``out`` ``(n, V)`` <- ``log_softmax((x W^T + b) / T)``; the product in ``x``'s dtype
    (into ``own`` when that is narrower than ``out``), then upcast into ``raw``."""
    dst = raw if own is None else own
    if b is None:
        torch.mm(x, w.T, out=dst)  # (n, V), as F.linear
    else:
        torch.addmm(b, x, w.T, out=dst)
    if own is not None:
        raw.copy_(own)
    raw.div_(temperature)
    torch.log_softmax(raw, -1, out=out)


def _rows_into(out: Tensor, buf: _ChunkBuffers, div: Divergence) -> None:
    r"""``out`` ``(n,)`` <- :func:`_rows`'s per-row divergence from ``buf.log_p``/``log_q``, in
    place; leaves :math:`p` in ``buf.work`` (:math:`q` for forward KL) and :math:`\log m` in
    ``buf.log_m`` for the gradient."""
    beta, raw, work, log_p, log_q = _beta(div), buf.raw, buf.work, buf.log_p, buf.log_q
    if beta == 0.0 or beta == 1.0:  # KL(q || p) or KL(p || q)
        a, b = (log_q, log_p) if beta == 0.0 else (log_p, log_q)
        torch.exp(a, out=work)
        torch.sub(a, b, out=raw).mul_(work)
        torch.sum(raw, -1, out=out)
    else:
        log_m = buf.log_m
        assert log_m is not None  # allocated for the mixture
        torch.add(log_q, math.log(beta), out=raw)
        torch.add(log_p, math.log1p(-beta), out=work)
        torch.logaddexp(raw, work, out=log_m)
        torch.exp(log_q, out=work)
        kl_q = torch.sub(log_q, log_m, out=raw).mul_(work).sum(-1)  # (n,)
        torch.exp(log_p, out=work)
        kl_p = torch.sub(log_p, log_m, out=raw).mul_(work).sum(-1)  # (n,)
        out.copy_(beta * kl_q + (1 - beta) * kl_p)
    if div.scale != 1.0:
        out.mul_(div.scale)


def _grad_into(buf: _ChunkBuffers, div: Divergence, row_weight: Tensor) -> Tensor:
    r"""d(``row_weight`` . row divergence) / d(student logits) ``(n, V)`` in ``buf.raw``, after
    :func:`_rows_into`.

    With :math:`p = \mathrm{softmax}(s / T)`: forward KL gives :math:`(p - q) / T`; otherwise
    :math:`\partial l / \partial p = g` up to a constant, :math:`g = \log p - \log q`
    (reverse KL) or :math:`(1 - \beta)(\log p - \log m)` (mixture JSD), and the softmax's
    Jacobian gives :math:`p \odot (g - \langle p, g \rangle) / T`. Times ``div.scale``.
    """
    beta, grad, p = _beta(div), buf.raw, buf.work
    if beta == 0.0:  # buf.work holds q here
        torch.exp(buf.log_p, out=grad).sub_(buf.work)
    else:
        other = buf.log_q if beta == 1.0 else buf.log_m
        assert other is not None  # the mixture's log_m exists whenever 0 < beta < 1
        torch.sub(buf.log_p, other, out=grad)
        if beta != 1.0:
            grad.mul_(1 - beta)
        torch.mul(p, grad, out=other)  # other is spent: reuse it for p * g
        torch.sum(other, -1, keepdim=True, out=buf.column)
        grad.sub_(buf.column).mul_(p)
    grad.mul_(div.scale / div.temperature)
    return grad.mul_(row_weight.to(grad.dtype).unsqueeze(1))


def _pass(h, w, b, ht, wt, bt, div, row_weight, chunk, needs):
    """Loss per row ``(N,)`` and, given ``row_weight``, ``dh`` ``(N, H)``, ``dW`` ``(V, H)`` and
    ``db`` ``(V,)`` (``needs`` says which), one chunk of rows at a time in one set of buffers."""
    n_rows = h.shape[0]
    acc = torch.float32 if h.dtype in HALF else h.dtype  # dW, db accumulate in float32 or more
    grads = row_weight is not None
    dh = torch.empty_like(h) if grads and needs[0] else None
    dw = torch.zeros(w.shape, dtype=acc, device=h.device) if grads and needs[1] else None
    db = torch.zeros(w.shape[0], dtype=acc, device=h.device) \
        if grads and needs[2] and b is not None else None
    whole = _ChunkBuffers.allocate(min(chunk, n_rows), h, w, ht, div)
    loss = torch.empty(n_rows, dtype=whole.raw.dtype, device=h.device)  # (N,)
    with torch.no_grad():
        for r0 in range(0, n_rows, chunk):
            rows = slice(r0, r0 + chunk)
            buf = whole.rows(min(chunk, n_rows - r0))
            _log_softmax_into(buf.log_p, h[rows], w, b, buf.raw, buf.student, div.temperature)
            _log_softmax_into(buf.log_q, ht[rows], wt, bt, buf.raw, buf.teacher,
                              div.temperature)
            _rows_into(loss[rows], buf, div)
            if not grads:
                continue
            g = _grad_into(buf, div, row_weight[rows])  # (n, V)
            if dh is not None:
                g_h = g if buf.student is None else buf.student.copy_(g)
                torch.mm(g_h, w, out=dh[rows])  # (n, H)
            if dw is not None:
                dw.addmm_(g.T.to(acc), h[rows].to(acc))  # (V, H) += (V, n) @ (n, H)
            if db is not None:
                db.add_(torch.sum(g, 0, out=whole.vocab))
    return loss, dh, dw, db


class FusedLinearDistill(torch.autograd.Function):
    """Forward: per-row losses, and for ``"sum"``/``"mean"`` the student's gradients (scaled by
    the upstream gradient in backward); ``"none"``: backward recomputes with each row's upstream
    gradient. The teacher gets no gradient."""

    @staticmethod
    def forward(ctx, h, w, b, ht, wt, bt, row_weight, settings):
        div, chunk, reduction, keep, needs = settings
        if keep is not None:  # only counted rows enter the matmuls
            h_k, ht_k = h.index_select(0, keep), ht.index_select(0, keep)
            rw_k = row_weight.index_select(0, keep)
        else:
            h_k, ht_k, rw_k = h, ht, row_weight
        grads_now = reduction != "none" and any(needs)
        loss_k, dh, dw, db = _pass(h_k, w, b, ht_k, wt, bt, div, rw_k if grads_now else None,
                                   chunk, needs)
        per_row = _scatter_rows(loss_k, keep, h.shape[0])  # (N,), 0 at skipped rows
        assert per_row is not None  # loss_k is a tensor, so its scatter is one
        ctx.settings, ctx.n_rows, ctx.head_dtype = settings, h.shape[0], w.dtype
        if grads_now:
            ctx.grads = (_scatter_rows(dh, keep, h.shape[0]), dw, db)
        elif reduction == "none" and any(needs):
            ctx.save_for_backward(h_k, w, b, ht_k, wt, bt)
        if reduction == "none":
            return per_row
        return (per_row * row_weight.to(per_row.dtype)).sum()

    @staticmethod
    def backward(ctx, grad_out):
        check_first_order("linear_kd_loss")
        div, chunk, reduction, keep, needs = ctx.settings
        if reduction == "none":
            h_k, w, b, ht_k, wt, bt = ctx.saved_tensors
            go = grad_out if keep is None else grad_out.index_select(0, keep)
            _, dh, dw, db = _pass(h_k, w, b, ht_k, wt, bt, div, go, chunk, needs)
            dh = _scatter_rows(dh, keep, ctx.n_rows)
        else:  # new tensors, not in place: a second backward (gradcheck) reads them again
            dh, dw, db = (None if g is None else g * grad_out.to(g.dtype) for g in ctx.grads)
        dw = None if dw is None else dw.to(ctx.head_dtype)
        db = None if db is None else db.to(ctx.head_dtype)
        return dh, dw, db, None, None, None, None, None


def linear_kd_loss(
    student_hidden: Tensor,
    student_weight: Tensor,
    teacher_hidden: Tensor,
    teacher_weight: Tensor,
    labels: Tensor | None = None,
    *,
    student_bias: Tensor | None = None,
    teacher_bias: Tensor | None = None,
    divergence: str = "kl",
    beta: float = 0.5,
    temperature: float = 1.0,
    scale_by_temperature_squared: bool = True,
    ignore_index: int = -100,
    num_items: Tensor | float | None = None,
    reduction: str = "batchmean",
    chunk_size: int | None = None,
) -> Tensor:
    r""":func:`kd_loss` (``divergence="kl"``) or :func:`jsd` (``divergence="jsd"``) of the
    logits :math:`s = h W^\top + b` (student) and :math:`t = h_t W_t^\top + b_t` (teacher),
    computed a chunk of rows at a time so neither ``(N, V)`` logits tensor ever exists whole.

    Per chunk of ``n`` rows: both logits ``(n, V)``, the chunk's per-row divergence and its
    gradient :math:`G` with respect to the student logits, then :math:`dh = G W`,
    :math:`dW \mathrel{+}= G^\top h`, :math:`db \mathrel{+}= \sum_n G_n`. For ``"batchmean"`` /
    ``"sum"`` this happens in the forward pass (backward scales the result); for ``"none"``
    backward recomputes the chunks with each row's upstream gradient. The teacher is fixed: its
    hidden states, head and bias get no gradient. Rows whose label is ``ignore_index`` are
    dropped before the matmuls. First-order gradients only (a second derivative raises); inside
    ``with losskit.kernels.fused(False):`` it computes both logits and runs :func:`kd_loss` /
    :func:`jsd`'s plain autograd ops instead (second derivatives, torch's memory use).

    Args:
        student_hidden: ``(*, H)`` hidden states of the student's last layer.
        student_weight: ``(V, H)`` student head (``lm_head.weight``); ``student_bias`` ``(V,)``.
        teacher_hidden: ``(*, H_t)`` the teacher's, same rows; ``teacher_weight`` ``(V, H_t)``,
            ``teacher_bias`` ``(V,)``.
        divergence: ``"kl"`` (Hinton's KD, :func:`kd_loss`) or ``"jsd"`` (:func:`jsd`, ``beta``).
        chunk_size: rows per chunk (default :func:`distill_chunk_rows`: 128 at N = 4096,
            V = 32000).
        Others: as :func:`kd_loss` and :func:`jsd`.

    Shape: ``(*)`` for ``"none"``, else a scalar.

    Example:
        >>> h, W = torch.randn(6, 4), torch.randn(10, 4)
        >>> ht, Wt = torch.randn(6, 8), torch.randn(10, 8)
        >>> a = linear_kd_loss(h, W, ht, Wt, temperature=2.0, chunk_size=4)
        >>> bool(torch.allclose(a, kd_loss(h @ W.T, ht @ Wt.T, temperature=2.0)))
        True
    """
    loss = "linear_kd_loss"
    div = _divergence(loss, divergence, temperature, beta, scale_by_temperature_squared)
    reduction = _reduction.resolve(reduction, extra=REDUCTIONS)
    distill_checks.check_floating(loss, student_hidden=student_hidden,
                                  student_weight=student_weight, teacher_hidden=teacher_hidden,
                                  teacher_weight=teacher_weight)
    checks.check_same_device(
        loss, student_hidden=student_hidden, student_weight=student_weight,
        teacher_hidden=teacher_hidden, teacher_weight=teacher_weight, student_bias=student_bias,
        teacher_bias=teacher_bias, labels=labels,
    )
    distill_checks.check_heads(loss, student_hidden, student_weight, student_bias, "student")
    distill_checks.check_heads(loss, teacher_hidden, teacher_weight, teacher_bias, "teacher")
    distill_checks.check_same_vocab_heads(loss, student_weight, teacher_weight)
    distill_checks.check_same_rows(loss, student_hidden, teacher_hidden)
    rows = tuple(student_hidden.shape[:-1])
    distill_checks.check_labels(loss, labels, rows)
    checks.check_chunk_size(loss, chunk_size)
    _check_num_items(loss, num_items)
    # no check_teacher_without_grad here: the teacher's tensors are detached below, so a
    # teacher Parameter (requires_grad=True) is never trained by this loss
    _value_checks(loss, labels, ignore_index, reduction, num_items, student_hidden=student_hidden,
                  student_weight=student_weight, student_bias=student_bias,
                  teacher_hidden=teacher_hidden, teacher_weight=teacher_weight,
                  teacher_bias=teacher_bias)
    if not kernels.fused_allowed():  # `with losskit.kernels.fused(False):` plain autograd ops
        student = F.linear(student_hidden, student_weight, student_bias)  # (*, V)
        with torch.no_grad():
            teacher = F.linear(teacher_hidden, teacher_weight, teacher_bias)  # (*, V)
        return _reduce_rows(row_divergence(student, teacher, div), student_hidden, labels,
                            ignore_index, num_items, reduction)
    n_rows = math.prod(rows)
    h = student_hidden.reshape(n_rows, student_hidden.shape[-1])  # (N, H)
    ht = teacher_hidden.reshape(n_rows, teacher_hidden.shape[-1])  # (N, H_t)
    counted, count = _counted(labels, ignore_index, rows, student_hidden)
    counted = None if counted is None else counted.reshape(n_rows)  # (N,)
    keep = None if counted is None else _kept_rows(counted)
    row_weight = torch.ones(n_rows, dtype=count.dtype, device=h.device) if counted is None \
        else counted.to(count.dtype)  # (N,): 1 counted, 0 skipped
    if reduction in ("mean", "batchmean"):
        denom = _denominator(count, num_items)
        row_weight = row_weight / torch.where(denom == 0, torch.ones_like(denom), denom)
    grad_on = torch.is_grad_enabled()
    needs = tuple(bool(grad_on and p is not None and p.requires_grad)
                  for p in (student_hidden, student_weight, student_bias))
    chunk = chunk_size or distill_chunk_rows(n_rows if keep is None else keep.numel(),
                                             student_weight.shape[0])
    settings = (div, chunk, "none" if reduction == "none" else "sum", keep, needs)
    out = FusedLinearDistill.apply(h, student_weight, student_bias, ht.detach(),
                                   teacher_weight.detach(), None if teacher_bias is None
                                   else teacher_bias.detach(), row_weight, settings)
    if reduction == "none":
        out = out.reshape(rows)
    return out.to(student_hidden.dtype)


# ----------------------------------------------------------------------------------------------
# Modules: settings only, forward is one call


class KDLoss(nn.Module):
    """Hinton's knowledge distillation loss; see :func:`losskit.functional.kd_loss`.

    >>> KDLoss(temperature=2.0)(torch.tensor([[1.0, 0.0, -1.0]]), torch.tensor([[0.0, 2.0, 0.0]]))
    tensor(0.8198)
    """

    def __init__(self, temperature: float = 1.0, scale_by_temperature_squared: bool = True,
                 ignore_index: int = -100, reduction: str = "batchmean") -> None:
        super().__init__()
        self.temperature = temperature
        self.scale_by_temperature_squared = scale_by_temperature_squared
        self.ignore_index = ignore_index
        self.reduction = reduction

    def forward(self, student_logits: Tensor, teacher_logits: Tensor,
                labels: Tensor | None = None, num_items: Tensor | None = None) -> Tensor:
        return kd_loss(
            student_logits, teacher_logits, temperature=self.temperature,
            scale_by_temperature_squared=self.scale_by_temperature_squared, labels=labels,
            ignore_index=self.ignore_index, num_items=num_items, reduction=self.reduction,
        )


class JSDLoss(nn.Module):
    """Generalised Jensen-Shannon divergence; see :func:`losskit.functional.jsd`.

    >>> JSDLoss(beta=0.5)(torch.tensor([[1.0, 0.0, -1.0]]), torch.tensor([[0.0, 2.0, 0.0]]))
    tensor(0.1879)
    """

    def __init__(self, beta: float = 0.5, temperature: float = 1.0, ignore_index: int = -100,
                 reduction: str = "batchmean") -> None:
        super().__init__()
        self.beta = beta
        self.temperature = temperature
        self.ignore_index = ignore_index
        self.reduction = reduction

    def forward(self, student_logits: Tensor, teacher_logits: Tensor,
                labels: Tensor | None = None, num_items: Tensor | None = None) -> Tensor:
        return jsd(student_logits, teacher_logits, beta=self.beta, temperature=self.temperature,
                   labels=labels, ignore_index=self.ignore_index, num_items=num_items,
                   reduction=self.reduction)


class LinearKDLoss(nn.Module):
    """KD or JSD from student and teacher hidden states and heads, without the logits; see
    :func:`losskit.functional.linear_kd_loss`. The heads are arguments of ``forward`` (the
    student's ``lm_head.weight`` and the teacher's), not parameters of this Module.

    >>> h, W, ht, Wt = torch.randn(5, 4), torch.randn(7, 4), torch.randn(5, 3), torch.randn(7, 3)
    >>> a = LinearKDLoss(divergence="jsd", chunk_size=2)(h, W, ht, Wt)
    >>> bool(torch.allclose(a, jsd(h @ W.T, ht @ Wt.T)))
    True
    """

    def __init__(self, divergence: str = "kl", beta: float = 0.5, temperature: float = 1.0,
                 scale_by_temperature_squared: bool = True, ignore_index: int = -100,
                 reduction: str = "batchmean", chunk_size: int | None = None) -> None:
        super().__init__()
        self.divergence = divergence
        self.beta = beta
        self.temperature = temperature
        self.scale_by_temperature_squared = scale_by_temperature_squared
        self.ignore_index = ignore_index
        self.reduction = reduction
        self.chunk_size = chunk_size

    def forward(self, student_hidden: Tensor, student_weight: Tensor, teacher_hidden: Tensor,
                teacher_weight: Tensor, labels: Tensor | None = None,
                student_bias: Tensor | None = None, teacher_bias: Tensor | None = None,
                num_items: Tensor | None = None) -> Tensor:
        return linear_kd_loss(
            student_hidden, student_weight, teacher_hidden, teacher_weight,
            student_bias=student_bias, teacher_bias=teacher_bias, divergence=self.divergence,
            beta=self.beta, temperature=self.temperature,
            scale_by_temperature_squared=self.scale_by_temperature_squared, labels=labels,
            ignore_index=self.ignore_index, num_items=num_items, reduction=self.reduction,
            chunk_size=self.chunk_size,
        )


# ----------------------------------------------------------------------------------------------
# Records


def count_distilled_rows(loss_fn: nn.Module, *tensors: Tensor) -> Tensor:
    """The denominator of ``"batchmean"``: rows (every dim of the first tensor but the last)
    whose label, when the forward's ``labels`` is given, is not ``ignore_index``.

    ``tensors`` are the Module's forward arguments: ``(student_logits, teacher_logits[,
    labels])`` or ``(student_hidden, student_weight, teacher_hidden, teacher_weight[, labels,
    student_bias, teacher_bias])``.

    >>> count_distilled_rows(KDLoss(), torch.zeros(2, 3, 5), torch.zeros(2, 3, 5))
    tensor(6.)
    >>> labels = torch.tensor([1, -100, 2])
    >>> count_distilled_rows(KDLoss(), torch.zeros(3, 5), torch.zeros(3, 5), labels)
    tensor(2.)
    """
    first = tensors[0]
    # the labels are the one integer tensor among the arguments (biases and heads are floats)
    labels = next((t for t in tensors if isinstance(t, Tensor) and not t.is_floating_point()),
                  None)
    rows = tuple(first.shape[:-1])
    ignore_index = loss_fn.ignore_index
    assert isinstance(ignore_index, int)  # the distillation Modules hold it as an int
    return _counted(labels, ignore_index, rows, first)[1]


_COMMON: dict[str, Any] = dict(
    family="distillation", targets=("teacher",), mean_count=count_distilled_rows,
    estimates="probabilities",
)
registry.register(registry.LossRecord(
    function=kd_loss, module=KDLoss, input="logits",
    summary="Hinton's KD: T^2 KL(teacher || student) of softened logits, mean over rows",
    aliases=("knowledge_distillation", "distillation", "hinton_kd"),
    catalog=(("distribution matching / distillation", "temperature=2.0"),), **_COMMON,
))
registry.register(registry.LossRecord(
    function=jsd, module=JSDLoss, input="logits",
    summary="generalised Jensen-Shannon (GKD): beta=0 forward KL, beta=1 reverse KL",
    aliases=("generalized_jsd", "gkd", "jensen_shannon"),
    catalog=(("distribution matching / distillation", "beta=0.5"),), **_COMMON,
))
registry.register(registry.LossRecord(
    function=linear_kd_loss, module=LinearKDLoss, input="hidden",
    summary="KD or JSD from student/teacher hidden states + heads, without the logits (LLMs)",
    aliases=("fused_linear_kd", "fused_linear_jsd", "linear_jsd"),
    catalog=(("distribution matching / distillation", 'divergence="kl", temperature=2.0'),),
    **_COMMON,
))


# ----------------------------------------------------------------------------------------------
# What `losskit explain` prints and draws (registry.Explain); the gradients are checked against
# autograd in tests/test_explain.py. Written from the formulas, not from the code above.


def _softened(student, teacher, temperature):
    return (student / temperature).softmax(-1), (teacher / temperature).softmax(-1)


def _kd_gradient(s, t, labels=None, temperature=1.0, scale_by_temperature_squared=True, **kw):
    """T^2 KL(q || softmax(s / T)) per row: d/ds = T^2 (p - q) / T = T (p - q)."""
    p, q = _softened(s, t, temperature)
    return (p - q) * (temperature if scale_by_temperature_squared else 1 / temperature)


def _kd_steps(s, t, labels=None, reduction="batchmean", temperature=1.0,
              scale_by_temperature_squared=True):
    p, q = _softened(s, t, temperature)
    kl = (q * (q.log() - p.log())).sum(-1)
    scale = temperature**2 if scale_by_temperature_squared else 1.0
    rows = [(f"p = softmax(s / T), T={temperature}", p), ("q = softmax(t / T)", q),
            ("KL(q || p) = sum_v q (log q - log p)", kl), (f"l = {scale:g} KL", scale * kl)]
    return rows + _ex.reduce_step(rows[-1][1], "sum" if reduction == "sum" else "mean", "rows")


def _jsd_gradient(s, t, labels=None, beta=0.5, temperature=1.0, **kw):
    """dl/dp_v = g_v up to a constant, then the softmax: p (g - <p, g>) / T, with g = log p -
    log q at beta = 1, (1 - beta)(log p - log m) otherwise (beta = 0 gives (p - q) / T)."""
    p, q = _softened(s, t, temperature)
    if beta == 0.0:
        return (p - q) / temperature
    m = beta * q + (1 - beta) * p
    g = p.log() - q.log() if beta == 1.0 else (1 - beta) * (p.log() - m.log())
    return p * (g - (p * g).sum(-1, keepdim=True)) / temperature


def _jsd_steps(s, t, labels=None, reduction="batchmean", beta=0.5, temperature=1.0):
    p, q = _softened(s, t, temperature)
    m = beta * q + (1 - beta) * p
    kl_q, kl_p = (q * (q / m).log()).sum(-1), (p * (p / m).log()).sum(-1)
    rows = [(f"p = softmax(s / T), T={temperature}", p), ("q = softmax(t / T)", q),
            (f"m = beta q + (1 - beta) p, beta={beta}", m), ("KL(q || m)", kl_q),
            ("KL(p || m)", kl_p),
            ("l = beta KL(q || m) + (1 - beta) KL(p || m)", beta * kl_q + (1 - beta) * kl_p)]
    return rows + _ex.reduce_step(rows[-1][1], "sum" if reduction == "sum" else "mean", "rows")


def _linear_kd_gradient(h, w, ht, wt, labels=None, temperature=1.0, **kw):
    """dl/dh = (dl/ds) W with dl/ds = T (p - q) (kd_loss's), s = h W^T."""
    return _kd_gradient(h @ w.T, ht @ wt.T, temperature=temperature) @ w


def _linear_kd_steps(h, w, ht, wt, labels=None, reduction="batchmean", temperature=1.0):
    rows = [("student logits s = h W^T", h @ w.T), ("teacher logits t = h_t W_t^T", ht @ wt.T)]
    return rows + _kd_steps(h @ w.T, ht @ wt.T, reduction=reduction, temperature=temperature)


_TEACHER_ROW = (2.0, 0.0, 0.0)  # the curves' teacher: class 0 leads by 2


def _distill_curve(function):
    """Student rows [t, 0, 0] against the teacher row [2, 0, 0]: zero loss at t = 2."""

    def loss(t, **option):
        teacher = torch.tensor(_TEACHER_ROW, dtype=t.dtype).expand(t.shape[0], 3)
        return function(_ex.true_class_rows(t), teacher, reduction="none", **option)

    return loss


def _linear_kd_curve(t, temperature=1.0):
    h = torch.stack([t, torch.zeros_like(t)], dim=1)  # (n, 2)
    w = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]], dtype=t.dtype)  # (3, 2)
    ht = torch.tensor([[2.0]], dtype=t.dtype).expand(t.shape[0], 1)  # teacher logits [2, 0, 0]
    wt = torch.tensor([[1.0], [0.0], [0.0]], dtype=t.dtype)
    return linear_kd_loss(h, w, ht, wt, temperature=temperature, reduction="none")


_STUDENT, _TEACHER = [[1.0, 0.0, -1.0], [0.5, 1.5, -0.5]], [[0.0, 2.0, 0.0], [1.0, 1.0, -2.0]]
_TEMPERATURES = tuple((f"T={v}", {"temperature": v}) for v in (1.0, 2.0, 4.0))

registry.describe(kd_loss, registry.Explain(
    formula="l = T^2 sum_v q_v (log q_v - log p_v),  p = softmax(s / T) (student), q = "
            "softmax(t / T) (teacher); mean over rows",
    latex=r"\ell = T^2\sum_v q_v(\log q_v - \log p_v),\ p = \operatorname{softmax}(s/T),\ "
          r"q = \operatorname{softmax}(t/T)",
    derivative="dl/ds = T (p - q)  (T^2 times (p - q) / T; (p - q) / T without the T^2)",
    derivative_latex=r"\partial\ell/\partial s = T\,(p - q)",
    gradient=_kd_gradient,
    example=_ex.example(_STUDENT, _TEACHER, temperature=2.0), steps=_kd_steps,
    curve=registry.Curve("student's logit of class 0 (teacher row [2, 0, 0])",
                         _distill_curve(kd_loss), _TEMPERATURES, span=(-6.0, 6.0)),
    convex=True, bounded_gradient=True,
    robust="partly: the pull per logit is capped at T, but a teacher that is wrong is copied "
           "faithfully (a soft target, not a label check)",
    note="convex in the student's logits (log-sum-exp minus a linear term); |dl/ds_v| <= T, so "
         "the bound grows with the temperature",
))
registry.describe(jsd, registry.Explain(
    formula="l = beta KL(q || m) + (1 - beta) KL(p || m),  m = beta q + (1 - beta) p;  "
            "beta = 0: KL(q || p), beta = 1: KL(p || q);  p, q = softmax(s / T), softmax(t / T)",
    latex=r"\ell = \beta\,\mathrm{KL}(q\|m) + (1-\beta)\,\mathrm{KL}(p\|m),\ "
          r"m = \beta q + (1-\beta)p",
    derivative="dl/ds = p * (g - sum_v p_v g_v) / T,  g = (1 - beta)(log p - log m);  beta = 1: "
               "g = log p - log q;  beta = 0: (p - q) / T",
    derivative_latex=r"\frac{\partial\ell}{\partial s} = \frac{p\odot(g - \langle p, g\rangle)}{T}"
                     r",\ g = (1-\beta)(\log p - \log m)",
    gradient=_jsd_gradient,
    example=_ex.example(_STUDENT, _TEACHER, beta=0.5, temperature=1.0), steps=_jsd_steps,
    curve=registry.Curve("student's logit of class 0 (teacher row [2, 0, 0])",
                         _distill_curve(jsd),
                         tuple((f"beta={b}", {"beta": b}) for b in (0.0, 0.5, 1.0)),
                         span=(-6.0, 6.0)),
    convex=False, bounded_gradient=True,
    robust="partly: the symmetric JSD (beta = 0.5) is bounded by ln 2 per row, so one odd row "
           "cannot dominate; the ends are KLs and unbounded",
    note="beta = 0 (forward KL) is convex in the student's logits; the mixture and reverse KL "
         "are not. The pull is bounded for beta < 1; at beta = 1 only by the teacher's smallest "
         "log-probability",
))
registry.describe(linear_kd_loss, registry.Explain(
    formula="l = kd_loss(h W^T + b, h_t W_t^T + b_t)  (or jsd): distillation of two linear "
            "heads, a chunk of rows at a time",
    latex=r"\ell = T^2\,\mathrm{KL}\bigl(\operatorname{softmax}(t/T)\,\|\,"
          r"\operatorname{softmax}(s/T)\bigr),\ s = hW^\top,\ t = h_tW_t^\top",
    derivative="dl/dh = T (p - q) W  (kd_loss's dl/ds through the head; dl/dW = T (p - q)^T h); "
               "the teacher gets no gradient",
    derivative_latex=r"\partial\ell/\partial h = T\,(p - q)\,W",
    gradient=_linear_kd_gradient,
    example=_ex.example([[1.0, -0.5], [0.2, 0.8]], [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]],
                        [[0.5], [-1.0]], [[2.0], [0.0], [1.0]], temperature=2.0),
    steps=_linear_kd_steps,
    curve=registry.Curve("student hidden along class 0's head row (W = [e1, e2, 0], teacher "
                         "logits [2, 0, 0])", _linear_kd_curve, _TEMPERATURES, span=(-6.0, 6.0)),
    convex=True, bounded_gradient=True,
    robust="partly: as kd_loss",
    note="the derivative is kd_loss's with respect to the logits, carried through the head by "
         "the chain rule; convex in h for a fixed head; the bound scales with T and the head; "
         "first-order only (the fused backward is not differentiable again)",
))
