r"""Preference optimisation: DPO (and IPO, conservative DPO), SimPO, ORPO and KTO.

Each loss reads per-sequence log-probabilities ``(B,)``: for an answer :math:`y` to a prompt
:math:`x`, :math:`\log \pi(y \mid x) = \sum_t \log \pi(y_t \mid x, y_{<t})` over the answer's
tokens (DPO, KTO), or its mean over those tokens (SimPO, ORPO: "length-normalised").
:func:`sequence_logps` computes them from hidden states and the head without the
``(B, S, V)`` logits, and :func:`linear_preference_loss` runs chosen and rejected answers through
the head in one chunked pass and then one of the pair losses.

Each function returns the loss only (``"none"``: one term per pair or example); the implicit
rewards that DPO logs come from :func:`dpo_rewards`.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from losskit import _reduction, checks, registry
from losskit.checks import LossInputError
from losskit.checks import preference as pref_checks
from losskit.losses import _explain as _ex
from losskit.losses._common import HALF, autocast_on
from losskit.losses.linear_cross_entropy import linear_cross_entropy

__all__ = [
    "DPOLoss",
    "KTOLoss",
    "LinearPreferenceLoss",
    "ORPOLoss",
    "SimPOLoss",
    "dpo_loss",
    "dpo_rewards",
    "kto_loss",
    "linear_preference_loss",
    "orpo_loss",
    "sequence_logps",
    "simpo_loss",
]

LOSS_TYPES = ("sigmoid", "ipo")


def _check_logps(loss: str, refs: dict[str, Tensor] | None = None, **policy: Tensor) -> None:
    """Metadata checks on every log-probability tensor; value checks in the checks mode."""
    refs = refs or {}
    pref_checks.check_logps_tensors(loss, **policy, **refs)
    pref_checks.check_reference_detached(loss, **refs)
    if checks.values_enabled(loss, *policy.values(), *refs.values()):
        pref_checks.check_logps_values(loss, **policy, **refs)


def _reduce_pairs(loss: str, per_pair: Tensor, reduction: str) -> Tensor:
    """The reduction over pairs; a ``"mean"`` over no pair is 0 with zero gradient, warned."""
    if reduction == "mean" and per_pair.numel() == 0:
        checks._warn(
            f"{loss}: the batch holds no pair (the log-probabilities have shape "
            f"{tuple(per_pair.shape)}), so the mean is over nothing; losskit returns 0 with zero "
            f"gradient (a plain mean is NaN). Fix: skip empty batches (check the sampler, the "
            f"filtering or `drop_last`)."
        )
        return per_pair.sum()  # 0, and the graph is kept
    return _reduction.reduce(per_pair, reduction)


def _smoothed_logsigmoid_loss(h: Tensor, label_smoothing: float) -> Tensor:
    r""":math:`-(1 - \varepsilon) \log\sigma(h) - \varepsilon \log\sigma(-h)` per element."""
    loss = -F.logsigmoid(h)
    if label_smoothing:
        loss = (1 - label_smoothing) * loss - label_smoothing * F.logsigmoid(-h)
    return loss


# ----------------------------------------------------------------------------------------------
# DPO, IPO and conservative DPO


def dpo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    *,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
    loss_type: str = "sigmoid",
    reduction: str = "mean",
) -> Tensor:
    r"""Direct Preference Optimisation loss of chosen/rejected pairs.

    With the log-ratio margin of pair :math:`i`

    .. math::
        h_i = \big(\log\pi(y^w_i) - \log\pi_\text{ref}(y^w_i)\big)
              - \big(\log\pi(y^l_i) - \log\pi_\text{ref}(y^l_i)\big)

    ``loss_type="sigmoid"`` (DPO; conservative DPO with :math:`\varepsilon` =
    ``label_smoothing`` > 0):

    .. math::
        l_i = -(1 - \varepsilon) \log\sigma(\beta h_i) - \varepsilon \log\sigma(-\beta h_i)

    ``loss_type="ipo"``: :math:`l_i = \big(h_i - \tfrac{1}{2\beta}\big)^2` (no label smoothing).

    Args:
        policy_chosen_logps: ``(B,)`` summed log-probabilities of the chosen answers under the
            policy being trained.
        policy_rejected_logps: ``(B,)`` the same for the rejected answers.
        ref_chosen_logps: ``(B,)`` chosen answers under the frozen reference model (no grad).
        ref_rejected_logps: ``(B,)`` rejected answers under the reference model (no grad).
        beta: :math:`\beta > 0`, how strongly the policy is tied to the reference.
        label_smoothing: :math:`\varepsilon \in [0, 0.5]`, the assumed probability that a pair's
            preference is flipped (conservative DPO).
        loss_type: ``"sigmoid"`` | ``"ipo"``.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"`` over the pairs.

    Shape: ``(B,)`` for ``"none"``, else a scalar.

    Departures from TRL's ``DPOTrainer``: ``"ipo"`` uses the log-probabilities you pass (TRL
    divides them by the answer lengths first: pass ``sequence_logps(..., average=True)`` for
    that); the loss is returned alone (rewards: :func:`dpo_rewards`).

    References: Rafailov et al., 2023, "Direct Preference Optimization: Your Language Model is
    Secretly a Reward Model"; Azar et al., 2023, "A General Theoretical Paradigm to Understand
    Learning from Human Preferences" (IPO); Mitchell, 2023, "A note on DPO with noisy
    preferences" (conservative DPO).

    Example:
        >>> pc, pr = torch.tensor([-5.0, -7.0]), torch.tensor([-6.0, -6.0])
        >>> rc, rr = torch.tensor([-5.5, -6.5]), torch.tensor([-5.5, -6.5])
        >>> dpo_loss(pc, pr, rc, rr, beta=1.0, reduction="none")  # margins h = 1, -1
        tensor([0.3133, 1.3133])
    """
    loss = "dpo_loss"
    reduction = _reduction.resolve(reduction)
    pref_checks.check_beta(loss, beta)
    if loss_type not in LOSS_TYPES:
        raise LossInputError(
            f"{loss}: loss_type={loss_type!r} is not one of {LOSS_TYPES}. Fix: "
            f"loss_type='sigmoid' (DPO) or 'ipo'; for SimPO or ORPO call simpo_loss / orpo_loss."
        )
    pref_checks.check_label_smoothing(loss, label_smoothing)
    if loss_type == "ipo" and label_smoothing:
        raise LossInputError(
            f"{loss}: label_smoothing={label_smoothing!r} with loss_type='ipo': IPO's squared "
            f"loss has no label smoothing (it already regularises towards a finite margin). "
            f"Fix: label_smoothing=0.0, or loss_type='sigmoid' for conservative DPO."
        )
    _check_logps(
        loss, refs=dict(ref_chosen_logps=ref_chosen_logps, ref_rejected_logps=ref_rejected_logps),
        policy_chosen_logps=policy_chosen_logps, policy_rejected_logps=policy_rejected_logps,
    )
    h = (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)
    if loss_type == "ipo":
        per_pair = (h - 1 / (2 * beta)).square()
    else:
        per_pair = _smoothed_logsigmoid_loss(beta * h, label_smoothing)
    return _reduce_pairs(loss, per_pair, reduction)


def dpo_rewards(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    *,
    beta: float = 0.1,
) -> tuple[Tensor, Tensor]:
    r"""DPO's implicit rewards, detached, for logging: ``(chosen, rejected)``, each ``(B,)``.

    :math:`r^w_i = \beta(\log\pi(y^w_i) - \log\pi_\text{ref}(y^w_i))` and the same for the
    rejected answer; the reward accuracy is ``(chosen > rejected).float().mean()``.

    Example:
        >>> chosen, rejected = dpo_rewards(torch.tensor([-5.0]), torch.tensor([-6.0]),
        ...                                torch.tensor([-5.5]), torch.tensor([-5.5]), beta=0.5)
        >>> chosen, rejected
        (tensor([0.2500]), tensor([-0.2500]))
    """
    pref_checks.check_beta("dpo_rewards", beta)
    pref_checks.check_logps_tensors(
        "dpo_rewards", policy_chosen_logps=policy_chosen_logps,
        policy_rejected_logps=policy_rejected_logps, ref_chosen_logps=ref_chosen_logps,
        ref_rejected_logps=ref_rejected_logps,
    )
    chosen = beta * (policy_chosen_logps - ref_chosen_logps)
    rejected = beta * (policy_rejected_logps - ref_rejected_logps)
    return chosen.detach(), rejected.detach()


# ----------------------------------------------------------------------------------------------
# Reference-free: SimPO and ORPO (length-normalised log-probabilities)


def simpo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    *,
    beta: float = 2.0,
    gamma: float = 1.0,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
) -> Tensor:
    r"""Simple Preference Optimisation: a reference-free DPO on length-normalised log-probs.

    With :math:`\bar{\ell}(y) = \frac{1}{|y|} \log\pi(y \mid x)` (the mean over the answer's
    tokens), the margin :math:`h_i = \beta(\bar\ell(y^w_i) - \bar\ell(y^l_i)) - \gamma` and
    :math:`\varepsilon` = ``label_smoothing``:

    .. math::
        l_i = -(1 - \varepsilon) \log\sigma(h_i) - \varepsilon \log\sigma(-h_i)

    Args:
        policy_chosen_logps: ``(B,)`` mean log-probability per token of the chosen answers
            (``sequence_logps(..., average=True)``).
        policy_rejected_logps: ``(B,)`` the same for the rejected answers.
        beta: :math:`\beta > 0`, the reward scale (the paper uses 2.0 to 2.5).
        gamma: :math:`\gamma`, the target reward margin (the paper: ``gamma / beta`` about 0.5).
        label_smoothing: :math:`\varepsilon \in [0, 0.5]`.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"`` over the pairs.

    Shape: ``(B,)`` for ``"none"``, else a scalar.

    Departure from the authors' code: ``gamma`` is the margin itself, not ``gamma / beta``.

    Reference: Meng, Xia and Chen, 2024, "SimPO: Simple Preference Optimization with a
    Reference-Free Reward".

    Example:
        >>> simpo_loss(torch.tensor([-0.5]), torch.tensor([-1.5]), beta=2.0, gamma=1.0)
        tensor(0.3133)
    """
    loss = "simpo_loss"
    reduction = _reduction.resolve(reduction)
    pref_checks.check_beta(loss, beta)
    pref_checks.check_label_smoothing(loss, label_smoothing)
    _check_logps(loss, policy_chosen_logps=policy_chosen_logps,
                 policy_rejected_logps=policy_rejected_logps)
    h = beta * (policy_chosen_logps - policy_rejected_logps) - gamma
    return _reduce_pairs(loss, _smoothed_logsigmoid_loss(h, label_smoothing), reduction)


def _odds_ratio_term(chosen: Tensor, rejected: Tensor) -> Tensor:
    r""":math:`-\log\sigma(\log\mathrm{odds}_w - \log\mathrm{odds}_l)` per pair, from the mean
    log-probabilities :math:`x_w, x_l \le 0` ``(B,)``, in float32 at least.

    With :math:`b = 1 - e^x` (``-expm1``) the term is :math:`\log(1 + t)`,
    :math:`t = e^{x_l - x_w} b_w / b_l`. Near :math:`x_w = 0` (:math:`b_w < 1/2`) it is
    computed as ``log1p(t)``: the value tends to 0 and the gradient to the true one-sided limit
    :math:`-1 / (e^{-x_l} - 1) = -\mathrm{odds}_l` (through :math:`\log\mathrm{odds}_w` alone it
    would be :math:`0 \cdot \infty`). Elsewhere it is ``-logsigmoid(-log t)`` (softplus without
    torch's ``threshold=20`` shortcut, which drops :math:`\log(1 + e^{-\log t})` above 20, about
    2e-9, so the term is exact in float64 too), and cannot overflow.
    As :math:`x_l \to 0` the term truly diverges, so :math:`x_l` is capped at :math:`-\epsilon`
    (machine epsilon; an answer without a scored token has mean 0): at most about
    :math:`\log(1/\epsilon)`, with zero gradient beyond the cap.
    """
    dtype = _orpo_compute_dtype(chosen, rejected)
    x_w, x_l = chosen.to(dtype), rejected.to(dtype)
    x_l = x_l.clamp(max=-torch.finfo(dtype).eps)
    b_w, b_l = -torch.expm1(x_w), -torch.expm1(x_l)
    near = (b_w < 0.5).detach()  # x_w > -ln 2
    # each branch gets inputs where it is finite, so the other's gradient is never 0 * inf
    t = torch.exp(torch.where(near, x_l - x_w, 0.0)) * b_w / b_l
    log_t = (x_l - x_w) + torch.log(torch.where(near, 1.0, b_w)) - torch.log(b_l)
    return torch.where(near, torch.log1p(t), -F.logsigmoid(-log_t))


def _orpo_compute_dtype(chosen: Tensor, rejected: Tensor) -> torch.dtype:
    """The promoted dtype of both log-probabilities, float32 at least (half inputs)."""
    dtype = torch.promote_types(chosen.dtype, rejected.dtype)
    return torch.float32 if dtype in HALF else dtype


def _refuse_other_names(loss: str, given: Mapping[str, object], renamed: dict[str, str]) -> None:
    """A TypeError for keyword arguments the loss does not take, naming losskit's parameter when
    the name is another library's (``renamed``: their name -> ours)."""
    for name, value in given.items():
        ours = renamed.get(name)
        hint = (f"losskit calls it `{ours}` (TRL's `{name}`). Fix: {loss}(..., {ours}={value!r})."
                if ours else f"it is not one of this loss's options. Fix: remove it (see "
                             f"help({loss})).")
        raise TypeError(f"{loss}() got an unexpected keyword argument {name!r} (={value!r}): "
                        f"{hint}") from None


_F = TypeVar("_F", bound=Callable[..., Any])


def _hint_renamed(name: str, renamed: dict[str, str]) -> Callable[[_F], _F]:
    """Wrap ``fn`` so an unknown keyword raises :func:`_refuse_other_names`'s TypeError (naming
    ``renamed``'s losskit parameter) while ``inspect.signature`` still shows ``fn``'s closed
    signature (``functools.wraps`` sets ``__wrapped__``). A call that binds costs one ``try``:
    the keywords are looked at only on Python's own TypeError."""
    def decorate(fn: _F) -> _F:
        known = inspect.signature(fn).parameters

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except TypeError:  # an unknown keyword fails to bind before fn's body runs
                _refuse_other_names(name, {k: v for k, v in kwargs.items() if k not in known},
                                    renamed)
                raise
        return cast(_F, wrapper)
    return decorate


# Another library's name for a pair loss's option -> losskit's (TRL's ORPO `beta` is `lambda_`).
_ORPO_RENAMED = {"beta": "lambda_"}


@_hint_renamed("orpo_loss", _ORPO_RENAMED)
def orpo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    *,
    lambda_: float = 0.1,
    reduction: str = "mean",
) -> Tensor:
    r"""Odds Ratio Preference Optimisation: supervised fine-tuning plus an odds-ratio term.

    With :math:`\bar\ell(y)` the mean log-probability per token of answer :math:`y`,
    :math:`p = e^{\bar\ell}` and :math:`\mathrm{odds}(y) = p / (1 - p)`:

    .. math::
        l_i = -\bar\ell(y^w_i)
              - \lambda \log\sigma\big(\log\mathrm{odds}(y^w_i) - \log\mathrm{odds}(y^l_i)\big)

    Args:
        policy_chosen_logps: ``(B,)`` mean log-probability per token of the chosen answers
            (``sequence_logps(..., average=True)``), all below 0.
        policy_rejected_logps: ``(B,)`` the same for the rejected answers.
        lambda_: :math:`\lambda \ge 0`, the weight of the odds-ratio term (TRL calls it
            ``beta``; ``beta=`` here raises a TypeError naming ``lambda_``).
        reduction: ``"none"`` | ``"mean"`` | ``"sum"`` over the pairs.

    Shape: ``(B,)`` for ``"none"``, else a scalar.

    Departure from TRL's ``ORPOTrainer``: the NLL term is each chosen answer's mean over its
    tokens, so ``"mean"`` weighs every pair alike (TRL averages over all chosen tokens of the
    batch, so long answers weigh more).

    Reference: Hong, Lee and Thorne, 2024, "ORPO: Monolithic Preference Optimization without
    Reference Model".

    Example:
        >>> chosen, rejected = torch.tensor([-0.5]), torch.tensor([-1.5])
        >>> orpo_loss(chosen, rejected, lambda_=0.0)  # lambda 0: plain NLL of the chosen answer
        tensor(0.5000)
    """
    loss = "orpo_loss"
    reduction = _reduction.resolve(reduction)
    pref_checks.check_number(loss, "lambda_", lambda_)
    if not lambda_ >= 0.0:
        raise LossInputError(
            f"{loss}: lambda_={lambda_!r}, but the odds-ratio weight must be >= 0 (a negative "
            f"weight trains towards the rejected answers). Fix: e.g. lambda_=0.1."
        )
    _check_logps(loss, policy_chosen_logps=policy_chosen_logps,
                 policy_rejected_logps=policy_rejected_logps)
    term = _odds_ratio_term(policy_chosen_logps, policy_rejected_logps)  # (B,)
    # computed in the promoted dtype (float32 at least); returned in the promoted dtype
    out_dtype = torch.promote_types(policy_chosen_logps.dtype, policy_rejected_logps.dtype)
    per_pair = (-policy_chosen_logps.to(term.dtype) + lambda_ * term).to(out_dtype)
    return _reduce_pairs(loss, per_pair, reduction)


# ----------------------------------------------------------------------------------------------
# KTO: unpaired desirable / undesirable examples


def kto_loss(
    policy_logps: Tensor,
    ref_logps: Tensor,
    labels: Tensor,
    kl: Tensor | float | None = None,
    *,
    beta: float = 0.1,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
    reduction: str = "mean",
) -> Tensor:
    r"""Kahneman-Tversky Optimisation loss of unpaired desirable and undesirable answers.

    With :math:`r_i = \log\pi(y_i) - \log\pi_\text{ref}(y_i)` and the reference point
    :math:`z_0 = \max(0, \overline{\mathrm{kl}})` (detached):

    .. math::
        l_i = \begin{cases}
            \lambda_D \big(1 - \sigma(\beta (r_i - z_0))\big) & y_i \text{ desirable} \\
            \lambda_U \big(1 - \sigma(\beta (z_0 - r_i))\big) & y_i \text{ undesirable}
        \end{cases}

    Args:
        policy_logps: ``(B,)`` summed log-probabilities of the answers under the policy.
        ref_logps: ``(B,)`` the same under the frozen reference model (no grad).
        labels: ``(B,)`` bool, True where the answer is desirable.
        kl: the estimate of :math:`\mathrm{KL}(\pi \| \pi_\text{ref})`: log-ratios
            :math:`\log\pi(y'_j) - \log\pi_\text{ref}(y'_j)` of mismatched pairs (answers
            :math:`y'_j` to other prompts of the batch), any shape, averaged; or a number. It
            is clamped at 0 and never differentiated; None: 0.
        beta: :math:`\beta > 0`.
        desirable_weight: :math:`\lambda_D`.
        undesirable_weight: :math:`\lambda_U`; the paper keeps
            :math:`\lambda_D n_D / (\lambda_U n_U)` in [1, 4/3].
        reduction: ``"none"`` | ``"mean"`` | ``"sum"`` over the examples.

    Shape: ``(B,)`` for ``"none"``, else a scalar.

    The paper writes :math:`\lambda_y - v(x, y)`, the same terms. Across ranks the KL estimate
    should be averaged (``all_reduce``) before the call, as TRL does.

    Reference: Ethayarajh et al., 2024, "KTO: Model Alignment as Prospect Theoretic
    Optimization".

    Example:
        >>> policy, ref = torch.tensor([-4.0, -4.0]), torch.tensor([-5.0, -5.0])
        >>> kto_loss(policy, ref, torch.tensor([True, False]), beta=1.0, reduction="none")
        tensor([0.2689, 0.7311])
    """
    loss = "kto_loss"
    reduction = _reduction.resolve(reduction)
    pref_checks.check_beta(loss, beta)
    _check_logps(loss, refs=dict(ref_logps=ref_logps), policy_logps=policy_logps)
    pref_checks.check_kto_labels(loss, labels, policy_logps)
    checks.check_same_device(loss, policy_logps=policy_logps, labels=labels)
    r = policy_logps - ref_logps
    z0 = _kto_reference_point(loss, kl, r)
    desirable = desirable_weight * (1 - torch.sigmoid(beta * (r - z0)))
    undesirable = undesirable_weight * (1 - torch.sigmoid(beta * (z0 - r)))
    return _reduce_pairs(loss, torch.where(labels, desirable, undesirable), reduction)


def _kto_reference_point(loss: str, kl: Tensor | float | None, r: Tensor) -> Tensor | float:
    r""":math:`z_0 = \max(0, \overline{\mathrm{kl}})`, detached; None or an empty tensor (no
    mismatched pair to estimate it from) give 0. A NaN estimate is refused (a number always, a
    tensor in the value checks)."""
    if kl is None:
        return 0.0
    if not isinstance(kl, Tensor):
        pref_checks.check_number(loss, "kl", kl)
        pref_checks.check_kl_value(loss, torch.tensor(float(kl)))
        return max(float(kl), 0.0)
    checks.check_same_device(loss, policy_logps=r, kl=kl)
    if kl.numel() == 0:
        return 0.0
    if checks.values_enabled(loss, kl):
        pref_checks.check_kl_value(loss, kl)
    return kl.detach().to(r.dtype).mean().clamp(min=0)


# ----------------------------------------------------------------------------------------------
# Log-probabilities from hidden states, without the logits


def _token_nll(hidden: Tensor, weight: Tensor, labels: Tensor, *, bias: Tensor | None,
               ignore_index: int, chunk_size: int | None) -> Tensor:
    """Minus the label token's log-probability ``(N,)`` from ``hidden`` ``(N, H)``, in float32
    (float64 for float64 inputs) whatever the input dtype, 0 at ignored tokens.

    Half inputs keep the head's matmul in their dtype but get float32 per-token values, as
    ``torch.autocast`` runs a loss: a bfloat16 value near 8 is off by up to 0.03, and a bfloat16
    sum near -8000 moves in steps of 32, which rounds a preference margin to 0.
    """
    half_head = (hidden.dtype in HALF and weight.dtype == hidden.dtype
                 and (bias is None or bias.dtype == hidden.dtype))
    # A half head outside autocast: run it under autocast in its own dtype (a no-op cast) so the
    # kernel returns its float32 values instead of rounding them. Mixed dtypes are left to
    # linear_cross_entropy's own dtype check.
    context = (torch.autocast(hidden.device.type, dtype=hidden.dtype)
               if half_head and not autocast_on(hidden) else contextlib.nullcontext())
    with context:
        ce = cast(Tensor, linear_cross_entropy(  # one tensor: no return_lse
            hidden, weight, labels, linear_bias=bias, ignore_index=ignore_index,
            reduction="none", chunk_size=chunk_size,
        ))  # (N,)
    return ce.float() if ce.dtype in HALF else ce


def _token_logps_sums(
    hidden: Tensor, weight: Tensor, labels: Tensor, *, bias: Tensor | None, ignore_index: int,
    chunk_size: int | None,
) -> tuple[Tensor, Tensor]:
    """Per-sequence sums of the label tokens' log-probabilities, and their token counts.

    ``hidden`` ``(B, S, H)``, ``labels`` ``(B, S)`` -> two ``(B,)`` tensors. The per-token
    log-probability is minus the per-token cross-entropy, so the chunked linear+CE kernel with
    ``reduction="none"`` computes it (0 at ignored positions) without the ``(B*S, V)`` logits,
    and its backward recomputes the logits chunk by chunk.
    """
    b, s, h = hidden.shape
    ce = _token_nll(hidden.reshape(b * s, h), weight, labels.reshape(b * s), bias=bias,
                    ignore_index=ignore_index, chunk_size=chunk_size)  # (B*S,)
    counts = (labels != ignore_index).sum(dim=1)  # (B,)
    return -ce.reshape(b, s).sum(dim=1), counts


def _mean_per_token(sums: Tensor, counts: Tensor) -> Tensor:
    """Sum / token count; a sequence without a counted token gives 0."""
    return sums / counts.clamp(min=1).to(sums.dtype)


def sequence_logps(
    hidden: Tensor,
    weight: Tensor,
    labels: Tensor,
    *,
    bias: Tensor | None = None,
    ignore_index: int = -100,
    average: bool = False,
    chunk_size: int | None = None,
) -> Tensor:
    r"""Per-sequence log-probabilities of the label tokens, from hidden states and the head,
    without the ``(B, S, V)`` logits.

    .. math::
        \log\pi(y_b) = \sum_{t:\, y_{b,t} \ne \text{ignore}}
            \log\mathrm{softmax}(W h_{b,t} + c)_{y_{b,t}}

    and with ``average=True`` that sum divided by the number of counted tokens (0 for a sequence
    without one). The logits are computed chunk by chunk (``chunk_size`` tokens per chunk,
    default chosen from the shapes) by :func:`losskit.functional.linear_cross_entropy`; backward
    recomputes them chunk by chunk, so the extra memory is one chunk of logits.

    Args:
        hidden: ``(B, S, H)`` hidden states before the head.
        weight: ``(V, H)`` the head (``lm_head.weight``).
        labels: ``(B, S)`` token ids that each position predicts (for a causal model shift once:
            ``hidden[:, :-1]`` with ``labels[:, 1:]``); prompt and padding = ``ignore_index``.
        bias: optional ``(V,)``.
        ignore_index: label value that is not scored.
        average: mean over the counted tokens instead of the sum (SimPO, ORPO).
        chunk_size: tokens per chunk.

    Shape: ``(B,)``, float32 for float16/bfloat16 inputs (the head's matmul stays in their
    dtype; the per-token values and their sums do not, as a bfloat16 sum near -8000 moves in
    steps of 32).

    Example:
        >>> h, W = torch.randn(2, 5, 8), torch.randn(50, 8)
        >>> y = torch.tensor([[3, 7, 1, -100, -100], [4, 4, 4, 4, 9]])
        >>> plain = torch.log_softmax(h @ W.T, -1).gather(-1, y.clamp(min=0)[..., None])[..., 0]
        >>> expected = (plain * (y != -100)).sum(-1)
        >>> bool(torch.allclose(sequence_logps(h, W, y), expected, atol=1e-5))
        True
    """
    loss = "sequence_logps"
    pref_checks.check_hidden_and_labels(loss, hidden, labels, weight, ("hidden", "labels"))
    checks.check_same_device(loss, hidden=hidden, weight=weight, labels=labels, bias=bias)
    checks.check_chunk_size(loss, chunk_size)
    sums, counts = _token_logps_sums(hidden, weight, labels, bias=bias,
                                     ignore_index=ignore_index, chunk_size=chunk_size)
    return _mean_per_token(sums, counts) if average else sums


# Pair losses the fused path can finish with: (function, wants reference log-probs, averages).
PAIR_LOSSES: dict[str, tuple[Callable[..., Tensor], bool, bool]] = {
    "dpo": (dpo_loss, True, False),
    "simpo": (simpo_loss, False, True),
    "orpo": (orpo_loss, False, True),
}


_RENAMED_OPTIONS: dict[str, dict[str, str]] = {"orpo": _ORPO_RENAMED}  # by `loss=` name


def _check_pair_options(name: str, loss: str, pair_loss: Callable[..., Tensor],
                        options: Mapping[str, object]) -> None:
    """A TypeError for an option the chosen pair loss does not take, with the fix written as a
    ``linear_preference_loss`` call (``loss=`` kept)."""
    params = inspect.signature(pair_loss).parameters
    taken = {p for p, v in params.items() if v.kind is inspect.Parameter.KEYWORD_ONLY}
    unknown = {k: v for k, v in options.items() if k not in taken}
    if not unknown:
        return
    renamed = _RENAMED_OPTIONS.get(loss, {})
    bad, value = next(iter(unknown.items()))
    ours = renamed.get(bad)
    hint = (f"for loss={loss!r} losskit calls it `{ours}` (TRL's `{bad}`). Fix: "
            f"{name}(..., loss={loss!r}, {ours}={value!r})." if ours else
            f"loss={loss!r} takes the options {sorted(taken - {'reduction'})}. Fix: remove it, "
            f"or use one of those (see help({pair_loss.__name__})).")
    raise TypeError(f"{name}() got an unexpected keyword argument {bad!r} (={value!r}): {hint}")


def linear_preference_loss(
    hidden_chosen: Tensor,
    hidden_rejected: Tensor,
    weight: Tensor,
    labels_chosen: Tensor,
    labels_rejected: Tensor,
    ref_chosen_logps: Tensor | None = None,
    ref_rejected_logps: Tensor | None = None,
    *,
    loss: str = "dpo",
    bias: Tensor | None = None,
    ignore_index: int = -100,
    chunk_size: int | None = None,
    reduction: str = "mean",
    **options: float | str,
) -> Tensor:
    r"""A pair loss (DPO, SimPO or ORPO) straight from hidden states, without the logits.

    Chosen and rejected tokens go through the head in one chunked pass (concatenated along the
    tokens), :func:`sequence_logps` style: summed log-probabilities for ``"dpo"``, means per
    token for ``"simpo"`` and ``"orpo"``. Then the pair loss, with ``options`` (``beta``,
    ``label_smoothing``, ``loss_type``, ``gamma``, ``lambda_``) passed on:

    .. math::
        \text{loss} = f\big(\log\pi(y^w), \log\pi(y^l)\,[, \log\pi_\text{ref}(y^w),
        \log\pi_\text{ref}(y^l)]\big)

    Args:
        hidden_chosen: ``(B, S_w, H)`` policy hidden states of the chosen answers.
        hidden_rejected: ``(B, S_l, H)`` the same for the rejected answers.
        weight: ``(V, H)`` the policy's head.
        labels_chosen: ``(B, S_w)`` token ids (prompt and padding = ``ignore_index``).
        labels_rejected: ``(B, S_l)``.
        ref_chosen_logps, ref_rejected_logps: ``(B,)`` reference log-probabilities (sums),
            for ``"dpo"`` only.
        loss: ``"dpo"`` | ``"simpo"`` | ``"orpo"``.
        bias, ignore_index, chunk_size: as :func:`sequence_logps`.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"`` over the pairs.

    Shape: ``(B,)`` for ``"none"``, else a scalar.

    Example:
        >>> hc, hr, W = torch.randn(2, 4, 8), torch.randn(2, 3, 8), torch.randn(30, 8)
        >>> yc, yr = torch.randint(0, 30, (2, 4)), torch.randint(0, 30, (2, 3))
        >>> ref_c, ref_r = sequence_logps(hc, W, yc), sequence_logps(hr, W, yr)
        >>> linear_preference_loss(hc, hr, W, yc, yr, ref_c, ref_r, beta=0.1)  # policy = ref
        tensor(0.6931)
    """
    name = "linear_preference_loss"
    if loss not in PAIR_LOSSES:
        raise LossInputError(
            f"{name}: loss={loss!r} is not one of {tuple(PAIR_LOSSES)}. Fix: loss='dpo' (with "
            f"reference log-probabilities), 'simpo' or 'orpo'; KTO takes unpaired examples: "
            f"sequence_logps then kto_loss."
        )
    pair_loss, wants_refs, average = PAIR_LOSSES[loss]
    _check_pair_options(name, loss, pair_loss, options)
    refs = (ref_chosen_logps, ref_rejected_logps)
    if wants_refs == (None in refs) or (wants_refs and refs.count(None) == 1):
        raise LossInputError(
            f"{name}: loss={loss!r} "
            + ("needs `ref_chosen_logps` and `ref_rejected_logps` (the frozen reference "
               "model's summed log-probabilities). Fix: compute them under torch.no_grad() "
               "with `sequence_logps(ref_hidden, ref_weight, labels)`."
               if wants_refs else
               "is reference-free, but reference log-probabilities were given. Fix: drop "
               "them, or loss='dpo'.")
        )
    pref_checks.check_pair_not_swapped(name, hidden_chosen, hidden_rejected, labels_chosen,
                                       labels_rejected)
    for h, y, names in ((hidden_chosen, labels_chosen, ("hidden_chosen", "labels_chosen")),
                        (hidden_rejected, labels_rejected,
                         ("hidden_rejected", "labels_rejected"))):
        pref_checks.check_hidden_and_labels(name, h, y, weight, names)
    checks.check_same_device(
        name, hidden_chosen=hidden_chosen, hidden_rejected=hidden_rejected, weight=weight,
        labels_chosen=labels_chosen, labels_rejected=labels_rejected, bias=bias,
    )
    checks.check_chunk_size(name, chunk_size)
    if checks.values_enabled(name, hidden_chosen, hidden_rejected, weight, bias):
        checks.check_finite(name, hidden_chosen=hidden_chosen, hidden_rejected=hidden_rejected,
                            weight=weight, bias=bias)
        pref_checks.check_every_answer_scored(name, labels_chosen, ignore_index, "labels_chosen")
        pref_checks.check_every_answer_scored(name, labels_rejected, ignore_index,
                                              "labels_rejected")
    b, hid = hidden_chosen.shape[0], hidden_chosen.shape[2]
    hidden = torch.cat([hidden_chosen.reshape(-1, hid), hidden_rejected.reshape(-1, hid)])
    labels = torch.cat([labels_chosen.reshape(-1), labels_rejected.reshape(-1)])
    # One pass over the head for both answers: a (1, S_w*B + S_l*B, H) "sequence", split after.
    ce = _token_nll(hidden, weight, labels, bias=bias, ignore_index=ignore_index,
                    chunk_size=chunk_size)  # (B*S_w + B*S_l,), float32 or float64
    n_chosen = labels_chosen.numel()
    logps = []
    for part, y in ((ce[:n_chosen], labels_chosen), (ce[n_chosen:], labels_rejected)):
        sums = -part.reshape(b, y.shape[1]).sum(dim=1)  # (B,); 0 for S = 0 or B = 0
        counts = (y != ignore_index).sum(dim=1)
        logps.append(_mean_per_token(sums, counts) if average else sums)
    args = (*logps, *refs) if wants_refs else logps
    # the sums and the pair loss in float32; the result in the input's dtype, as every loss
    return pair_loss(*args, reduction=reduction, **options).to(hidden_chosen.dtype)


# ----------------------------------------------------------------------------------------------
# Modules


class DPOLoss(nn.Module):
    """DPO / IPO / conservative DPO; see :func:`losskit.functional.dpo_loss`.

    >>> loss = DPOLoss(beta=1.0)
    >>> loss(torch.tensor([-5.0]), torch.tensor([-6.0]), torch.tensor([-5.5]), torch.tensor([-5.5]))
    tensor(0.3133)
    """

    def __init__(self, beta: float = 0.1, label_smoothing: float = 0.0,
                 loss_type: str = "sigmoid", reduction: str = "mean") -> None:
        super().__init__()
        self.beta, self.label_smoothing, self.loss_type = beta, label_smoothing, loss_type
        self.reduction = reduction

    def forward(self, policy_chosen_logps: Tensor, policy_rejected_logps: Tensor,
                ref_chosen_logps: Tensor, ref_rejected_logps: Tensor) -> Tensor:
        return dpo_loss(
            policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps,
            beta=self.beta, label_smoothing=self.label_smoothing, loss_type=self.loss_type,
            reduction=self.reduction,
        )


class SimPOLoss(nn.Module):
    """SimPO; see :func:`losskit.functional.simpo_loss`.

    >>> SimPOLoss(beta=2.0, gamma=1.0)(torch.tensor([-0.5]), torch.tensor([-1.5]))
    tensor(0.3133)
    """

    def __init__(self, beta: float = 2.0, gamma: float = 1.0, label_smoothing: float = 0.0,
                 reduction: str = "mean") -> None:
        super().__init__()
        self.beta, self.gamma, self.label_smoothing = beta, gamma, label_smoothing
        self.reduction = reduction

    def forward(self, policy_chosen_logps: Tensor, policy_rejected_logps: Tensor) -> Tensor:
        return simpo_loss(policy_chosen_logps, policy_rejected_logps, beta=self.beta,
                          gamma=self.gamma, label_smoothing=self.label_smoothing,
                          reduction=self.reduction)


class ORPOLoss(nn.Module):
    """ORPO; see :func:`losskit.functional.orpo_loss`.

    >>> ORPOLoss(lambda_=0.0)(torch.tensor([-0.5]), torch.tensor([-1.5]))
    tensor(0.5000)
    """

    @_hint_renamed("ORPOLoss", _ORPO_RENAMED)
    def __init__(self, lambda_: float = 0.1, reduction: str = "mean") -> None:
        super().__init__()
        self.lambda_, self.reduction = lambda_, reduction

    def forward(self, policy_chosen_logps: Tensor, policy_rejected_logps: Tensor) -> Tensor:
        return orpo_loss(policy_chosen_logps, policy_rejected_logps, lambda_=self.lambda_,
                         reduction=self.reduction)


class KTOLoss(nn.Module):
    """KTO; see :func:`losskit.functional.kto_loss`.

    >>> loss = KTOLoss(beta=1.0, reduction="sum")
    >>> loss(torch.tensor([-4.0, -4.0]), torch.tensor([-5.0, -5.0]), torch.tensor([True, False]))
    tensor(1.)
    """

    def __init__(self, beta: float = 0.1, desirable_weight: float = 1.0,
                 undesirable_weight: float = 1.0, reduction: str = "mean") -> None:
        super().__init__()
        self.beta, self.reduction = beta, reduction
        self.desirable_weight, self.undesirable_weight = desirable_weight, undesirable_weight

    def forward(self, policy_logps: Tensor, ref_logps: Tensor, labels: Tensor,
                kl: Tensor | float | None = None) -> Tensor:
        return kto_loss(policy_logps, ref_logps, labels, kl, beta=self.beta,
                        desirable_weight=self.desirable_weight,
                        undesirable_weight=self.undesirable_weight, reduction=self.reduction)


class LinearPreferenceLoss(nn.Module):
    """A pair loss from hidden states without the logits; see
    :func:`losskit.functional.linear_preference_loss`. The head is passed to ``forward`` (it is
    the policy's ``lm_head.weight``, which the model owns).

    >>> hc, hr, W = torch.randn(2, 4, 8), torch.randn(2, 3, 8), torch.randn(30, 8)
    >>> yc, yr = torch.randint(0, 30, (2, 4)), torch.randint(0, 30, (2, 3))
    >>> loss = LinearPreferenceLoss("simpo", beta=2.0, gamma=0.0)
    >>> same = linear_preference_loss(hc, hr, W, yc, yr, loss="simpo", beta=2.0, gamma=0.0)
    >>> bool(loss(hc, hr, W, yc, yr) == same)
    True
    """

    def __init__(self, loss: str = "dpo", *, bias: Tensor | None = None,
                 ignore_index: int = -100, chunk_size: int | None = None,
                 reduction: str = "mean", **options: float | str) -> None:
        super().__init__()
        self.loss, self.bias, self.ignore_index = loss, bias, ignore_index
        self.chunk_size, self.reduction, self.options = chunk_size, reduction, options

    def forward(self, hidden_chosen: Tensor, hidden_rejected: Tensor, weight: Tensor,
                labels_chosen: Tensor, labels_rejected: Tensor,
                ref_chosen_logps: Tensor | None = None,
                ref_rejected_logps: Tensor | None = None) -> Tensor:
        return linear_preference_loss(
            hidden_chosen, hidden_rejected, weight, labels_chosen, labels_rejected,
            ref_chosen_logps, ref_rejected_logps, loss=self.loss, bias=self.bias,
            ignore_index=self.ignore_index, chunk_size=self.chunk_size,
            reduction=self.reduction, **self.options,
        )


# ----------------------------------------------------------------------------------------------
# Records


def count_pairs(loss_fn: nn.Module, *tensors: Tensor) -> Tensor:
    """``"mean"`` divides by the number of pairs (or KTO examples): dim 0 of the first tensor.

    >>> count_pairs(DPOLoss(), *[torch.zeros(3)] * 4)
    tensor(3.)
    """
    return registry.count_full(tensors[0], tensors[0].shape[0])


_SEQ = "sequence-log-probabilities"
_TASK = "preference optimisation (RLHF / alignment)"
for _fn, _module, _targets, _summary, _aliases, _args in (
    (dpo_loss, DPOLoss, ("none",),
     "direct preference optimisation on chosen/rejected pairs against a frozen reference "
     "(sigmoid, IPO, conservative DPO)", ("dpo", "ipo", "cdpo", "rlhf", "preference"), "beta=0.1"),
    (simpo_loss, SimPOLoss, ("none",),
     "reference-free DPO on length-normalised log-probabilities with a target margin",
     ("simpo",), "beta=2.0, gamma=1.0"),
    (orpo_loss, ORPOLoss, ("none",),
     "SFT on the chosen answer plus an odds-ratio preference term, no reference model",
     ("orpo",), "lambda_=0.1"),
    (kto_loss, KTOLoss, ("desirability",),
     "unpaired desirable/undesirable answers against a frozen reference (prospect theory)",
     ("kto",), "beta=0.1"),
):
    registry.register(registry.LossRecord(
        function=_fn, module=_module, family="preference", input=_SEQ, targets=_targets,
        summary=_summary, mean_count=count_pairs, aliases=_aliases, catalog=((_TASK, _args),),
    ))

registry.register(registry.LossRecord(
    function=linear_preference_loss, module=LinearPreferenceLoss, family="preference",
    input="hidden", targets=("class-indices",),
    summary="DPO/SimPO/ORPO from hidden states and the head, chosen and rejected in one chunked "
    "pass, without the [tokens, vocab] logits",
    mean_count=count_pairs, aliases=("fused_dpo", "linear_dpo"),
    catalog=((_TASK, 'loss="dpo"'),),
))


# ----------------------------------------------------------------------------------------------
# What `losskit explain` prints and draws (registry.Explain); the gradients are checked against
# autograd in tests/test_explain.py. The pair losses are given with respect to the per-sequence
# log-probabilities they take; the fused loss through the head to its hidden states.


def _smoothed_pull(x: Tensor, label_smoothing: float) -> Tensor:
    """d/dx of -(1 - eps) log sigma(x) - eps log sigma(-x): -(1 - eps) sigma(-x) + eps sigma(x)."""
    return -(1 - label_smoothing) * torch.sigmoid(-x) + label_smoothing * torch.sigmoid(x)


def _dpo_gradient(pc, pr, rc, rr, beta=0.1, label_smoothing=0.0, loss_type="sigmoid", **kw):
    """dl/d policy_chosen_logps: beta times the smoothed pull at beta h; IPO: 2 (h - 1/(2 beta))."""
    h = (pc - rc) - (pr - rr)
    if loss_type == "ipo":
        return 2 * (h - 1 / (2 * beta))
    return beta * _smoothed_pull(beta * h, label_smoothing)


def _dpo_steps(pc, pr, rc, rr, reduction="mean", beta=0.1, label_smoothing=0.0,
               loss_type="sigmoid"):
    h = (pc - rc) - (pr - rr)
    rows = [("chosen log-ratio log pi(y_w) - log pi_ref(y_w)", pc - rc),
            ("rejected log-ratio log pi(y_l) - log pi_ref(y_l)", pr - rr),
            ("margin h = chosen - rejected log-ratio", h),
            (f"implicit reward margin beta h, beta={beta}", beta * h)]
    if loss_type == "ipo":
        rows.append(("l = (h - 1/(2 beta))^2", (h - 1 / (2 * beta)) ** 2))
    else:
        x = beta * h
        rows.append((f"l = -(1 - eps) log sigmoid(beta h) - eps log sigmoid(-beta h), "
                     f"eps={label_smoothing}",
                     -(1 - label_smoothing) * torch.sigmoid(x).log()
                     - label_smoothing * torch.sigmoid(-x).log()))
    return rows + _ex.reduce_step(rows[-1][1], reduction, "pairs")


def _simpo_gradient(pc, pr, beta=2.0, gamma=1.0, label_smoothing=0.0, **kw):
    return beta * _smoothed_pull(beta * (pc - pr) - gamma, label_smoothing)


def _simpo_steps(pc, pr, reduction="mean", beta=2.0, gamma=1.0, label_smoothing=0.0):
    h = beta * (pc - pr) - gamma
    rows = [("mean log-prob difference d = lbar(y_w) - lbar(y_l)", pc - pr),
            (f"margin h = beta d - gamma, beta={beta}, gamma={gamma}", h),
            (f"l = -(1 - eps) log sigmoid(h) - eps log sigmoid(-h), eps={label_smoothing}",
             -(1 - label_smoothing) * torch.sigmoid(h).log()
             - label_smoothing * torch.sigmoid(-h).log())]
    return rows + _ex.reduce_step(rows[-1][1], reduction, "pairs")


def _orpo_gradient(pc, pr, lambda_=0.1, **kw):
    """dl/d lbar_w = -1 - lambda sigma(-r) / (1 - e^lbar_w): d log odds / d lbar = 1 / (1 - p)."""
    r = (pc - (1 - pc.exp()).log()) - (pr - (1 - pr.exp()).log())
    return -1 - lambda_ * torch.sigmoid(-r) / (1 - pc.exp())


def _orpo_steps(pc, pr, reduction="mean", lambda_=0.1):
    odds_c, odds_r = pc.exp() / (1 - pc.exp()), pr.exp() / (1 - pr.exp())
    r = odds_c.log() - odds_r.log()
    rows = [("p_w = exp(lbar_w)", pc.exp()), ("p_l = exp(lbar_l)", pr.exp()),
            ("odds_w = p_w / (1 - p_w)", odds_c), ("odds_l = p_l / (1 - p_l)", odds_r),
            ("log odds ratio r = log odds_w - log odds_l", r),
            ("NLL term -lbar_w", -pc),
            (f"l = -lbar_w - lambda log sigmoid(r), lambda={lambda_}",
             -pc - lambda_ * torch.sigmoid(r).log())]
    return rows + _ex.reduce_step(rows[-1][1], reduction, "pairs")


def _kto_reference(kl, like: Tensor) -> Tensor | float:
    if kl is None:
        return 0.0
    if isinstance(kl, Tensor):
        return kl.to(like.dtype).mean().clamp(min=0)
    return max(float(kl), 0.0)


def _kto_gradient(policy, ref, labels, kl=None, beta=0.1, desirable_weight=1.0,
                  undesirable_weight=1.0, **kw):
    """sigma'(u) = sigma(u)(1 - sigma(u)): -lambda_D beta sigma'(beta(r - z0)) for a desirable
    answer, +lambda_U beta sigma'(beta(z0 - r)) for an undesirable one."""
    r = policy - ref
    u = beta * (r - _kto_reference(kl, policy))
    slope = torch.sigmoid(u) * torch.sigmoid(-u) * beta
    return torch.where(labels, -desirable_weight * slope, undesirable_weight * slope)


def _kto_steps(policy, ref, labels, kl=None, reduction="mean", beta=0.1, desirable_weight=1.0,
               undesirable_weight=1.0):
    r = policy - ref
    z0 = _kto_reference(kl, policy)
    z0 = z0 if isinstance(z0, Tensor) else torch.tensor(z0, dtype=policy.dtype)
    good = desirable_weight * (1 - torch.sigmoid(beta * (r - z0)))
    bad = undesirable_weight * (1 - torch.sigmoid(beta * (z0 - r)))
    rows = [("log-ratio r = log pi(y) - log pi_ref(y)", r),
            ("reference point z0 = max(0, mean kl)", z0),
            (f"desirable: lambda_D (1 - sigmoid(beta (r - z0))), beta={beta}", good),
            ("undesirable: lambda_U (1 - sigmoid(beta (z0 - r)))", bad),
            ("l: picked by the label", torch.where(labels, good, bad))]
    return rows + _ex.reduce_step(rows[-1][1], reduction, "examples")


_PAIR_GRADIENTS: dict[str, Callable[..., Tensor]] = {
    "dpo": _dpo_gradient, "simpo": _simpo_gradient, "orpo": _orpo_gradient,
}
_PAIR_STEPS: dict[str, Callable[..., list]] = {
    "dpo": _dpo_steps, "simpo": _simpo_steps, "orpo": _orpo_steps,
}


def _token_logps(h, w, y, bias=None, ignore_index=-100):
    """Per-token log-probabilities ``(B, S)`` of the labels (0 at ignored ones), the softmax
    ``(B, S, V)``, the counted mask ``(B, S)`` and the per-sequence count ``(B,)``."""
    z = h @ w.T if bias is None else h @ w.T + bias  # (B, S, V)
    counted = y != ignore_index
    safe = torch.where(counted, y, 0)
    logp = z.log_softmax(-1).gather(-1, safe[..., None])[..., 0]
    return torch.where(counted, logp, 0.0), z.softmax(-1), counted, counted.sum(1)


def _linear_pref_logps(hc, hr, w, yc, yr, loss="dpo", bias=None, ignore_index=-100):
    out = []
    for h, y in ((hc, yc), (hr, yr)):
        logp, _, _, count = _token_logps(h, w, y, bias, ignore_index)
        sums = logp.sum(1)
        out.append(sums / count.clamp(min=1).to(sums.dtype) if loss != "dpo" else sums)
    return out


def _linear_pref_gradient(hc, hr, w, yc, yr, rc=None, rr=None, *, loss="dpo", bias=None,
                          ignore_index=-100, chunk_size=None, **options):
    """Chain rule: dl/dh_bt = dl/dlog pi(y_w)_b  x  W^T (onehot(y_bt) - softmax(W h_bt + c)),
    over counted tokens, divided by the token count for SimPO / ORPO (means per token)."""
    lc, lr = _linear_pref_logps(hc, hr, w, yc, yr, loss, bias, ignore_index)
    refs = (rc, rr) if loss == "dpo" else ()
    outer = _PAIR_GRADIENTS[loss](lc, lr, *refs, **options)  # (B,)
    _, p, counted, count = _token_logps(hc, w, yc, bias, ignore_index)
    onehot = F.one_hot(torch.where(counted, yc, 0), w.shape[0]).to(hc.dtype)  # (B, S, V)
    per_token = ((onehot - p) @ w) * counted[..., None]  # (B, S, H): d log p(y_t) / d h_t
    if loss != "dpo":
        outer = outer / count.clamp(min=1).to(hc.dtype)
    return outer[:, None, None] * per_token


def _linear_pref_steps(hc, hr, w, yc, yr, rc=None, rr=None, *, loss="dpo", bias=None,
                       ignore_index=-100, chunk_size=None, reduction="mean", **options):
    lc, lr = _linear_pref_logps(hc, hr, w, yc, yr, loss, bias, ignore_index)
    what = "summed" if loss == "dpo" else "mean per token"
    rows = [("chosen logits z = h_w W^T", hc @ w.T),
            (f"log pi(y_w), {what} over the answer's tokens", lc),
            (f"log pi(y_l), {what}", lr)]
    refs = (rc, rr) if loss == "dpo" else ()
    return rows + _PAIR_STEPS[loss](lc, lr, *refs, reduction=reduction, **options)


def _margin_curve(t, beta=0.1, loss_type="sigmoid"):
    """Policy-vs-reference log-ratio margin h = t: the chosen answer's log-prob moves."""
    base = torch.full_like(t, -30.0)
    return dpo_loss(base + t, base, base, base, beta=beta, loss_type=loss_type,
                    reduction="none")


def _simpo_curve(t, gamma=1.0, beta=2.0):
    base = torch.full_like(t, -5.0)
    return simpo_loss(base + t, base, beta=beta, gamma=gamma, reduction="none")


def _orpo_curve(t, lambda_=0.1):
    return orpo_loss(t, torch.full_like(t, -1.5), lambda_=lambda_, reduction="none")


def _kto_curve(t, desirable=True, beta=0.5):
    labels = torch.full(t.shape, desirable, dtype=torch.bool)
    base = torch.full_like(t, -30.0)
    return kto_loss(base + t, base, labels, beta=beta, reduction="none")


def _linear_pref_curve(t, beta=0.1):
    """One pair per grid point, one token each: the chosen token's hidden state [t, 0] against
    the head W = [e1, e2, 0] (its token is row 0); the rejected answer and the references fixed."""
    n = t.shape[0]
    hc = torch.stack([t, torch.zeros_like(t)], dim=1)[:, None]  # (n, 1, 2)
    hr = torch.tensor([0.5, 0.5], dtype=t.dtype).expand(n, 1, 2)
    w = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]], dtype=t.dtype)
    yc, yr = torch.zeros(n, 1, dtype=torch.long), torch.ones(n, 1, dtype=torch.long)
    ref = torch.full((n,), -1.0986, dtype=t.dtype)  # about log(1/3): a uniform reference
    return linear_preference_loss(hc, hr, w, yc, yr, ref, ref, beta=beta, reduction="none")


_PAIR_NOTE = ("the derivative is with respect to the per-sequence log-probability the loss takes "
              "(autograd carries it into the model's tokens)")
_PAIR_CHOSEN = [-12.0, -20.0, -8.0]
_PAIR_REJECTED = [-14.0, -17.0, -8.5]
_PAIR_REF_CHOSEN = [-13.0, -19.0, -9.0]
_PAIR_REF_REJECTED = [-13.5, -18.0, -9.0]

registry.describe(dpo_loss, registry.Explain(
    formula="l = -(1 - eps) log sigmoid(beta h) - eps log sigmoid(-beta h),  h = (log pi(y_w) - "
            "log pi_ref(y_w)) - (log pi(y_l) - log pi_ref(y_l));  IPO: (h - 1/(2 beta))^2",
    latex=r"\ell = -(1-\varepsilon)\log\sigma(\beta h) - \varepsilon\log\sigma(-\beta h),\ "
          r"h = \log\frac{\pi(y_w)}{\pi_\text{ref}(y_w)} - "
          r"\log\frac{\pi(y_l)}{\pi_\text{ref}(y_l)}",
    derivative="dl/d log pi(y_w) = beta [-(1 - eps) sigmoid(-beta h) + eps sigmoid(beta h)] "
               "(= -dl/d log pi(y_l));  IPO: 2 (h - 1/(2 beta))",
    derivative_latex=r"\frac{\partial\ell}{\partial\log\pi(y_w)} = \beta\bigl[-(1-\varepsilon)"
                     r"\sigma(-\beta h) + \varepsilon\,\sigma(\beta h)\bigr]",
    gradient=_dpo_gradient,
    example=_ex.example(_PAIR_CHOSEN, _PAIR_REJECTED, _PAIR_REF_CHOSEN, _PAIR_REF_REJECTED,
                        beta=0.5),
    steps=_dpo_steps,
    curve=registry.Curve(
        "log-ratio margin h (the implicit reward margin is beta h)", _margin_curve,
        tuple((f"beta={b}", {"beta": b}) for b in (0.1, 0.5, 1.0)), span=(-10.0, 10.0)),
    convex=True, bounded_gradient=True,
    robust="partly: a pair's pull is capped at beta, but a mislabelled pair's loss grows "
           "linearly with its margin (label_smoothing, conservative DPO, assumes flipped labels)",
    note=_PAIR_NOTE + "; convex in h for both forms; the pull is bounded by beta for the "
         "sigmoid form only (IPO's squared loss pulls in proportion to h - 1/(2 beta))",
))
registry.describe(simpo_loss, registry.Explain(
    formula="l = -(1 - eps) log sigmoid(h) - eps log sigmoid(-h),  h = beta (lbar(y_w) - "
            "lbar(y_l)) - gamma,  lbar = mean log-prob per token",
    latex=r"\ell = -(1-\varepsilon)\log\sigma(h) - \varepsilon\log\sigma(-h),\ "
          r"h = \beta\bigl(\bar\ell(y_w) - \bar\ell(y_l)\bigr) - \gamma",
    derivative="dl/d lbar(y_w) = beta [-(1 - eps) sigmoid(-h) + eps sigmoid(h)] "
               "(= -dl/d lbar(y_l))",
    derivative_latex=r"\frac{\partial\ell}{\partial\bar\ell(y_w)} = \beta\bigl[-(1-\varepsilon)"
                     r"\sigma(-h) + \varepsilon\,\sigma(h)\bigr]",
    gradient=_simpo_gradient,
    example=_ex.example([-0.6, -1.2, -0.9], [-1.0, -1.1, -1.6], beta=2.0, gamma=1.0),
    steps=_simpo_steps,
    curve=registry.Curve(
        "mean log-prob difference lbar(y_w) - lbar(y_l) (beta = 2)", _simpo_curve,
        tuple((f"gamma={g}", {"gamma": g}) for g in (0.0, 1.0, 2.0)), span=(-4.0, 4.0)),
    convex=True, bounded_gradient=True,
    robust="partly: a pair's pull is capped at beta, but a mislabelled pair's loss grows "
           "linearly with its margin",
    note=_PAIR_NOTE + "; the loss is small only once the margin beats gamma, so gamma moves "
         "the curve right",
))
registry.describe(orpo_loss, registry.Explain(
    formula="l = -lbar(y_w) - lambda log sigmoid(log odds(y_w) - log odds(y_l)),  odds = p / "
            "(1 - p),  p = exp(lbar),  lbar = mean log-prob per token",
    latex=r"\ell = -\bar\ell(y_w) - \lambda\log\sigma\Bigl(\log\frac{\mathrm{odds}(y_w)}"
          r"{\mathrm{odds}(y_l)}\Bigr)",
    derivative="dl/d lbar(y_w) = -1 - lambda sigmoid(-r) / (1 - p_w),  r = log odds ratio "
               "(d log odds / d lbar = 1 / (1 - p))",
    derivative_latex=r"\frac{\partial\ell}{\partial\bar\ell(y_w)} = -1 - "
                     r"\frac{\lambda\,\sigma(-r)}{1 - p_w}",
    gradient=_orpo_gradient,
    example=_ex.example([-0.7, -1.5, -2.2], [-1.3, -1.2, -3.0], lambda_=0.5),
    steps=_orpo_steps,
    curve=registry.Curve(
        "chosen answer's mean log-prob per token lbar(y_w) (lbar(y_l) = -1.5)", _orpo_curve,
        tuple((f"lambda={v}", {"lambda_": v}) for v in (0.0, 0.5, 2.0)), span=(-4.0, -0.05)),
    convex=False, bounded_gradient=True,
    robust="no: the NLL term pulls every chosen answer with force 1, however unlikely it is "
           "(a bad chosen answer is learnt as readily as a good one)",
    note=_PAIR_NOTE + "; the odds-ratio term is not convex in lbar(y_w) (a convex, decreasing "
         "-log sigmoid of the convex log odds)",
))
registry.describe(kto_loss, registry.Explain(
    formula="l = lambda_D (1 - sigmoid(beta (r - z0))) if desirable else lambda_U (1 - "
            "sigmoid(beta (z0 - r))),  r = log pi(y) - log pi_ref(y),  z0 = max(0, mean kl)",
    latex=r"\ell = \lambda_D\bigl(1 - \sigma(\beta(r - z_0))\bigr)\ \text{or}\ "
          r"\lambda_U\bigl(1 - \sigma(\beta(z_0 - r))\bigr)",
    derivative="dl/d log pi(y) = -lambda_D beta s(1 - s), s = sigmoid(beta (r - z0)) "
               "(desirable);  +lambda_U beta s(1 - s), s = sigmoid(beta (z0 - r)) "
               "(undesirable); z0 is detached",
    derivative_latex=r"\frac{\partial\ell}{\partial\log\pi(y)} = \mp\lambda\,\beta\,"
                     r"\sigma(u)\bigl(1 - \sigma(u)\bigr)",
    gradient=_kto_gradient,
    example=_ex.example([-10.0, -12.0, -7.0, -9.0], [-11.0, -11.0, -8.0, -8.5],
                        torch.tensor([True, True, False, False]), kl=0.3, beta=0.5),
    steps=_kto_steps,
    curve=registry.Curve(
        "log-ratio r = log pi(y) - log pi_ref(y) (kl = 0)", _kto_curve,
        (("desirable, beta=0.5", {"desirable": True}),
         ("undesirable, beta=0.5", {"desirable": False}),
         ("desirable, beta=2", {"desirable": True, "beta": 2.0})), span=(-10.0, 10.0)),
    convex=False, bounded_gradient=True,
    robust="yes: each example's loss is at most lambda and its pull at most lambda beta / 4; "
           "an example far on the wrong side (perhaps mislabelled) pulls almost nothing",
    note=_PAIR_NOTE + "; a sigmoid of the log-ratio, so neither convex nor unbounded",
))
registry.describe(linear_preference_loss, registry.Explain(
    formula="l = pair_loss(log pi(y_w), log pi(y_l)[, refs]),  log pi(y) = sum_t log "
            "softmax(W h_t + c)_{y_t} (mean over tokens for simpo / orpo); DPO by default",
    latex=r"\ell = f\bigl(\log\pi(y_w), \log\pi(y_l)\bigr),\ \log\pi(y) = \sum_t "
          r"\log\operatorname{softmax}(W h_t + c)_{y_t}",
    derivative="dl/dh_t = dl/d log pi(y_w) * (onehot(y_t) - softmax(W h_t + c)) W  over the "
               "chosen answer's counted tokens (divided by their count for simpo / orpo); "
               "dl/d log pi(y_w) as dpo_loss / simpo_loss / orpo_loss",
    derivative_latex=r"\frac{\partial\ell}{\partial h_t} = \frac{\partial\ell}"
                     r"{\partial\log\pi(y_w)}\bigl(e_{y_t} - \operatorname{softmax}(Wh_t + c)"
                     r"\bigr)^\top W",
    gradient=_linear_pref_gradient,
    example=_ex.example([[[1.0, -0.5], [0.2, 0.8]]], [[[0.3, 0.3], [-1.0, 0.5]]],
                        [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]],
                        torch.tensor([[0, 2]]), torch.tensor([[1, -100]]), [-2.5], [-1.4],
                        beta=0.5),
    steps=_linear_pref_steps,
    curve=registry.Curve(
        "chosen token's hidden state along its head row (W = [e1, e2, 0])",
        _linear_pref_curve, tuple((f"beta={b}", {"beta": b}) for b in (0.1, 0.5, 1.0)),
        span=(-6.0, 6.0)),
    convex=True, bounded_gradient=True,
    robust="partly: as dpo_loss (a pair's pull is capped at beta times the head's norm)",
    note="the derivative is given at the per-sequence log-probability and carried through the "
         "head by the chain rule, for hidden_chosen; convex in hidden_chosen at a fixed head "
         "for dpo and simpo (a convex decreasing function of a concave log-probability), not "
         "in hidden_rejected; first-order only on the fused path",
))
