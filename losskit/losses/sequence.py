r"""Sequence losses: CTC, for label sequences without a frame-level alignment (speech, handwriting).

The guardrails are in :mod:`losskit.checks.sequence`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from losskit import _reduction, checks, registry
from losskit.checks import sequence as seq_checks
from losskit.losses import _explain as _ex
from losskit.losses._common import OP_ERRORS, REDUCTION_ENUM, autocast_on

__all__ = ["CTCLoss", "ctc_loss"]


def _check_ctc(
    log_probs: Tensor,
    targets: Tensor,
    input_lengths: seq_checks.Lengths,
    target_lengths: seq_checks.Lengths,
    blank: int,
    zero_infinity: bool,
) -> None:
    """Metadata checks, then :func:`_check_ctc_values`."""
    loss = "ctc_loss"
    seq_checks.check_ctc_log_probs(loss, log_probs, autocast=autocast_on(log_probs))
    seq_checks.check_ctc_devices(loss, log_probs, targets=targets, input_lengths=input_lengths,
                                 target_lengths=target_lengths)
    seq_checks.check_blank_in_range(loss, blank, log_probs.shape[-1])
    seq_checks.check_lengths_kind(loss, input_lengths, target_lengths)
    seq_checks.check_lengths_batch(loss, log_probs, input_lengths, target_lengths)
    seq_checks.check_ctc_targets(loss, log_probs, targets)
    _check_ctc_values(
        log_probs, targets, input_lengths, target_lengths, blank, zero_infinity,
        values=checks.values_enabled(loss, log_probs, targets),
        on_host=seq_checks.host_checks_enabled(targets, input_lengths, target_lengths),
    )


def _check_ctc_values(
    log_probs: Tensor,
    targets: Tensor,
    input_lengths: seq_checks.Lengths,
    target_lengths: seq_checks.Lengths,
    blank: int,
    zero_infinity: bool,
    *,
    values: bool,
    on_host: bool,
) -> None:
    """The length and label checks (every call while ``on_host``: they are on the CPU, where
    torch reads them anyway); the value checks on ``log_probs`` (``values``: this call runs
    them, from :func:`losskit.checks.values_enabled`)."""
    loss = "ctc_loss"
    if not (values or on_host):
        return
    small = (not values and targets.is_cpu and targets.numel() <= seq_checks.SMALL_TARGETS)
    if small and seq_checks.small_lengths_and_labels_clear(
        log_probs, targets, input_lengths, target_lengths, blank
    ):
        return
    num_classes = log_probs.shape[-1]
    il = seq_checks.as_lengths(input_lengths, targets.device)  # (N,) int64
    tl = seq_checks.as_lengths(target_lengths, targets.device)  # (N,) int64
    if not seq_checks.lengths_and_labels_clear(log_probs, targets, il, tl, blank):
        seq_checks.check_input_lengths_range(loss, log_probs, il)
        seq_checks.check_target_lengths_range(loss, targets, tl)
        seq_checks.check_ctc_labels(loss, targets, tl, num_classes, blank)
    if values:
        seq_checks.check_finite_frames(loss, log_probs, il)
        seq_checks.check_ctc_log_probabilities(loss, log_probs, il)
        if not zero_infinity:
            seq_checks.check_targets_fit_inputs(loss, targets, il, tl)


def _direct_ctc(
    log_probs: Tensor,
    targets: Tensor,
    input_lengths: seq_checks.Lengths,
    target_lengths: seq_checks.Lengths,
    blank: int,
    reduction: int,
    zero_infinity: bool,
) -> Tensor | None:
    """torch's op on the common call past the startup calls, or None: the full path then runs.

    The common call, decided in a few reads (one function: this runs on every step): plain CPU
    tensors (no subclass), ``(T, N, C)`` float32/float64 ``log_probs`` with ``T, N > 0``;
    int64/int32 ``targets``, padded ``(N, S)`` or 1-D; an ``(N,)`` int64/int32
    ``target_lengths``; an ``input_lengths`` tensor; ``blank`` an int in ``[0, C)``; no value
    check due. Such a call passes every metadata check of the full path, or makes torch's op
    raise (``input_lengths`` of another count or a dtype that is not integral, a bad length).
    No tracer runs (the full path handles ``torch.compile`` and ``torch.func``). The labels are
    still read on every call, unless the checks are off
    (:func:`~losskit.checks.sequence.plain_labels_clear`, up to
    :data:`~losskit.checks.sequence.SMALL_TARGETS` of them): torch would read an index past
    ``C`` out of bounds. None (the full path, which names the mistake) for a label to explain,
    long targets, or an op that raised.

    >>> lp = torch.zeros(4, 2, 3)  # (T, N, C)
    >>> with checks.checks("off"):
    ...     [_direct_ctc(x, torch.ones(2, 1, dtype=torch.long), torch.tensor([4, 4]),
    ...                  torch.tensor([1, 1]), 0, 0, False) is None
    ...      for x in (lp, lp.transpose(0, 1))]  # (T, N, C), then (N, T, C)
    [False, True]
    """
    if not (type(log_probs) is Tensor and type(targets) is Tensor and type(blank) is int
            and type(input_lengths) is Tensor and type(target_lengths) is Tensor):
        return None
    shape = log_probs.shape
    if len(shape) != 3:
        return None
    steps, n, classes = shape
    target_dims = targets.dim()
    if not (
        steps > 0 and n > 0 and 0 <= blank < classes
        and log_probs.dtype in _LOG_PROBS_DTYPES and targets.dtype in _INDEX_DTYPES
        and target_lengths.dtype in _INDEX_DTYPES
        and log_probs.is_cpu and targets.is_cpu and input_lengths.is_cpu and target_lengths.is_cpu
        and (target_dims == 1 or (target_dims == 2 and targets.shape[0] == n))
        and target_lengths.shape == (n,) and "ctc_loss" in checks.settled
        and not checks._tracing()  # no list to read under vmap; compile traces the full path
    ):
        return None
    if checks.get_checks() != "off" and not (
        targets.numel() <= seq_checks.SMALL_TARGETS
        and seq_checks.plain_labels_clear(targets, target_lengths, classes, blank)
    ):
        return None
    try:  # plain tensors: no override to run, so torch's op runs without its Python wrapper
        return torch.ctc_loss(log_probs, targets, input_lengths, target_lengths, blank,
                              reduction, zero_infinity)
    except OP_ERRORS:  # the full path raises it again, or a clearer one
        return None


_LOG_PROBS_DTYPES = (torch.float32, torch.float64)
_INDEX_DTYPES = (torch.int64, torch.int32)


def ctc_loss(
    log_probs: Tensor,
    targets: Tensor,
    input_lengths: Tensor | tuple[int, ...] | list[int],
    target_lengths: Tensor | tuple[int, ...] | list[int],
    blank: int = 0,
    reduction: str = "mean",
    zero_infinity: bool = False,
) -> Tensor:
    r"""Connectionist Temporal Classification loss (Graves et al., 2006).

    For sample :math:`n` with frames :math:`t = 1..T_n` (``input_lengths[n]``) and labels
    :math:`y_n` of length :math:`L_n` (``target_lengths[n]``):

    .. math::
        l_n = -\log \sum_{\pi \in \mathcal{B}^{-1}(y_n)} \prod_{t=1}^{T_n} p_t(\pi_t),
        \qquad \log p_t = \texttt{log\_probs}[t, n, :]

    where :math:`\mathcal{B}` removes repeated symbols, then blanks, from a frame-level path
    :math:`\pi`. No path exists when :math:`T_n < L_n + \#\{\text{adjacent repeats in } y_n\}`:
    :math:`l_n = \infty` (0, with zero gradient, if ``zero_infinity``). ``"mean"`` is
    :math:`\frac1N \sum_n l_n / \max(L_n, 1)` (each loss divided by its target length, then the
    batch mean); ``"sum"`` is :math:`\sum_n l_n`.

    The gradient is torch's: it assumes ``log_probs`` comes out of a ``log_softmax`` in the
    graph (it is the gradient with respect to the scores before that ``log_softmax``), so
    always apply ``log_softmax`` to the model's output, never pass raw scores.

    Args:
        log_probs: ``(T, N, C)`` log-probabilities, time first (``log_softmax(2)`` of the
            model's scores), or unbatched ``(T, C)``. Class ``blank`` is the blank.
        targets: integer labels in ``[0, C)`` without ``blank``: padded ``(N, S)`` (values
            after ``target_lengths[n]`` are not read) or every sample's labels concatenated,
            1-D of ``sum(target_lengths)``; ``(S,)`` or ``(1, S)`` for unbatched input.
        input_lengths: ``(N,)`` frames per sample, each ``<= T``: an integer tensor or a
            tuple/list of ints.
        target_lengths: ``(N,)`` labels per sample, of the same kind as ``input_lengths``.
        blank: index of the blank class.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``.
        zero_infinity: zero the infinite losses of samples that cannot be aligned, and their
            gradients.

    Shape: ``"none"`` gives ``(N,)`` (a scalar for unbatched input); ``"mean"`` / ``"sum"`` a
    scalar. The output dtype is ``log_probs``'s (float32 under ``torch.autocast``).

    Departures from torch, all raised before torch runs: a label outside ``[0, C)`` raises
    :class:`~losskit.checks.LossIndexError` (torch reads out of bounds on the CPU); ``blank``
    used as a label raises :class:`~losskit.checks.LossInputError` (torch computes a loss
    that cannot be reached); float or bool ``targets`` raise
    :class:`~losskit.checks.LossRuntimeError` (torch truncates them); a tuple of lengths holding
    a bool raises ``TypeError``. In the checks mode's value checks: NaN or ``+inf`` in
    ``log_probs`` raises (``-inf`` is a valid log-probability), and a ``LossWarning`` flags
    ``log_probs`` that are not log-probabilities and, unless ``zero_infinity``, targets that
    need more frames than their input has.

    Example:
        >>> log_probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.6, 0.1, 0.3]]).log()
        >>> ctc_loss(log_probs, torch.tensor([1]), (3,), (1,))  # unbatched (T=3, C=3)
        tensor(0.6482)
        >>> log_probs = log_probs[:, None].expand(3, 2, 3)  # (T, N, C), the same frames twice
        >>> ctc_loss(log_probs, torch.tensor([[1, 0], [1, 2]]), (3, 3), (1, 2), reduction="none")
        tensor([0.6482, 1.4271])
    """
    enum = REDUCTION_ENUM.get(reduction) if type(reduction) is str else None
    if enum is not None:
        out = _direct_ctc(log_probs, targets, input_lengths, target_lengths, blank, enum,
                          zero_infinity)
        if out is not None:
            return out
    reduction = _reduction.resolve(reduction)
    _check_ctc(log_probs, targets, input_lengths, target_lengths, blank, zero_infinity)
    # torch takes tuples of lengths too (its docs); its stub says Tensor.
    return F.ctc_loss(
        log_probs, targets, input_lengths, target_lengths, blank, reduction, zero_infinity  # type: ignore[arg-type]
    )


class CTCLoss(nn.CTCLoss):
    """CTC loss with blank index ``blank``; see :func:`losskit.functional.ctc_loss`.

    ``forward(log_probs, targets, input_lengths, target_lengths)`` with ``log_probs`` of shape
    ``(T, N, C)`` (time first) or ``(T, C)``.

    >>> log_probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.6, 0.1, 0.3]]).log()
    >>> CTCLoss(reduction="sum")(log_probs, torch.tensor([1, 2]), (3,), (2,))
    tensor(1.4271)
    """

    def forward(
        self,
        log_probs: Tensor,
        targets: Tensor,
        input_lengths: Tensor | tuple[int, ...] | list[int],
        target_lengths: Tensor | tuple[int, ...] | list[int],
    ) -> Tensor:
        return ctc_loss(
            log_probs, targets, input_lengths, target_lengths, self.blank, self.reduction,
            self.zero_infinity,
        )


# ----------------------------------------------------------------------------------------------
# Records

registry.register(registry.LossRecord(
    function=ctc_loss, module=CTCLoss, family="sequence", input="log-probabilities",
    targets=("label-sequences",),
    summary="CTC: label sequences without a frame alignment (speech, handwriting recognition)",
    # "mean" divides each sample's loss by its own target length before the batch mean, so it is
    # not one total over a count: no mean_count.
    mean_count=None, torch_function=F.ctc_loss, torch_module=nn.CTCLoss, cli=None,
    estimates="probabilities",
))


# ----------------------------------------------------------------------------------------------
# What `losskit explain` prints and draws (registry.Explain); the gradients are checked against
# autograd in tests/test_explain.py.


def _ctc_alpha_beta(lp, labels, blank):
    """Forward and backward variables of one sample, in probability space (small examples only):
    ``alpha[t, s]``, ``beta[t, s]`` over the extended label ``(blank, l1, blank, ..., blank)``,
    both including frame t's probability (Graves et al., 2006, eqs. 6-10)."""
    y = lp.exp()  # (T, C)
    ext = [blank]
    for c in labels:
        ext += [c, blank]
    steps, size = y.shape[0], len(ext)
    skip = [s >= 2 and ext[s] != blank and ext[s] != ext[s - 2] for s in range(size)]
    alpha = [[y.new_zeros(()) for _ in range(size)] for _ in range(steps)]
    beta = [[y.new_zeros(()) for _ in range(size)] for _ in range(steps)]
    alpha[0][0], alpha[0][1] = y[0, ext[0]], y[0, ext[1]]
    for t in range(1, steps):
        for s in range(size):
            a = alpha[t - 1][s] + (alpha[t - 1][s - 1] if s else 0)
            a = a + (alpha[t - 1][s - 2] if skip[s] else 0)
            alpha[t][s] = a * y[t, ext[s]]
    beta[-1][-1], beta[-1][-2] = y[-1, ext[-1]], y[-1, ext[-2]]
    for t in range(steps - 2, -1, -1):
        for s in range(size):
            b = beta[t + 1][s] + (beta[t + 1][s + 1] if s + 1 < size else 0)
            b = b + (beta[t + 1][s + 2] if s + 2 < size and skip[s + 2] else 0)
            beta[t][s] = b * y[t, ext[s]]
    stack = lambda rows: torch.stack([torch.stack(r) for r in rows])  # noqa: E731
    return ext, stack(alpha), stack(beta), y


def _ctc_samples(lp, targets, input_lengths, target_lengths):
    for n in range(lp.shape[1]):
        steps, size = int(input_lengths[n]), int(target_lengths[n])
        yield n, lp[:steps, n], targets[n, :size].tolist()


def _ctc_steps(lp, targets, input_lengths, target_lengths, reduction="mean", blank=0):
    rows, losses = [], []
    for n, lp_n, labels in _ctc_samples(lp, targets, input_lengths, target_lengths):
        ext, alpha, _, _ = _ctc_alpha_beta(lp_n, labels, blank)
        prob = alpha[-1, -1] + alpha[-1, -2]
        rows += [(f"sample {n}: extended label l' (blanks around each label)", torch.tensor(ext)),
                 (f"sample {n}: alpha_t(s), one row per frame", alpha),
                 (f"sample {n}: p(l|x) = alpha_T(last) + alpha_T(last - 1)", prob),
                 (f"sample {n}: -log p(l|x)", -prob.log())]
        losses.append(-prob.log())
    nll = torch.stack(losses)
    if reduction == "mean":
        per = nll / target_lengths.to(nll.dtype)
        return [*rows, ("each divided by its target length", per),
                (f"mean over the {len(losses)} samples", per.mean())]
    return rows + _ex.reduce_step(nll, reduction, "samples")


def _ctc_gradient(lp, targets, input_lengths, target_lengths, blank=0, **kw):
    """torch's gradient for log_probs: y_t(k) - gamma_t(k), gamma the occupancy of class k."""
    grad = torch.zeros_like(lp)
    for n, lp_n, labels in _ctc_samples(lp, targets, input_lengths, target_lengths):
        ext, alpha, beta, y = _ctc_alpha_beta(lp_n, labels, blank)
        prob = alpha[-1, -1] + alpha[-1, -2]
        occupancy = torch.zeros_like(y)  # (T, C)
        for s, k in enumerate(ext):
            occupancy[:, k] += alpha[:, s] * beta[:, s] / (y[:, k] * prob)
        grad[: y.shape[0], n] = y - occupancy
    return grad


def _ctc_curve(t, frames=2):
    """Two classes (blank 0, label 1), target "1", every frame's label logit at ``t``."""
    logits = torch.stack([torch.zeros_like(t), t], dim=-1)  # (n, 2)
    lp = logits.log_softmax(-1).expand(frames, -1, -1)  # (T, n, 2)
    n = t.shape[0]
    return ctc_loss(lp, torch.ones(n, 1, dtype=torch.long), torch.full((n,), frames),
                    torch.ones(n, dtype=torch.long), reduction="none")


registry.describe(ctc_loss, registry.Explain(
    formula="l = -log p(l|x),  p(l|x) = sum over the alignments that collapse to l (repeats "
            "merged, blanks removed) of prod_t y_t(path_t), by the forward recursion alpha",
    latex=r"\ell = -\log\sum_{\pi\in\mathcal B^{-1}(l)}\prod_t y_t^{\pi_t}",
    derivative="dl/d log y_t(k) as torch returns it: y_t(k) - gamma_t(k), gamma_t(k) = "
               "sum_{s: l'_s = k} alpha_t(s) beta_t(s) / (y_t(k) p(l|x)) (the forward-backward "
               "occupancy of class k at frame t)",
    derivative_latex=r"\frac{\partial\ell}{\partial\log y_t^k} = y_t^k - \frac{1}{p(l|x)\,y_t^k}"
                     r"\sum_{s:\,l'_s = k}\alpha_t(s)\beta_t(s)",
    gradient=_ctc_gradient,
    example=_ex.example(torch.tensor([[[1.0, 0.5, -0.5]], [[0.2, 1.5, 0.1]], [[0.3, 0.2, 1.2]],
                                      [[1.0, -0.2, 0.8]]]).double().log_softmax(-1),
                        torch.tensor([[1, 2]]), torch.tensor([4]), torch.tensor([2])),
    steps=_ctc_steps,
    curve=registry.Curve("label logit at every frame (2 classes, target '1')", _ctc_curve,
                         tuple((f"T={f} frames", {"frames": f}) for f in (1, 2, 4)),
                         span=(-6.0, 6.0)),
    convex=False, bounded_gradient=True,
    robust="partly: a wrong transcript's pull per frame is bounded, its loss grows linearly",
    note="not a short closed form: the gradient is given through the forward-backward "
         "occupancies. The exact derivative with respect to log_probs is -gamma; torch returns "
         "y - gamma, the gradient of the logits under log_softmax, and the two agree after "
         "log_softmax's backward (sum_k gamma_t(k) = 1). The check is against torch's.",
))
