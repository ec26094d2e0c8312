"""Guardrails of the contrastive losses (:mod:`losskit.losses.contrastive`).

The classic mistakes: two views of different shapes, or one of them transposed to ``(D, B)``;
a batch of one, which leaves no negative (the loss is a constant); a temperature of 1 (or a
CLIP scale of 1) on cosine similarities, which caps every logit at 1 so the softmax over the
negatives stays nearly uniform and the model barely learns; un-normalised embeddings passed
with ``normalize=False`` where cosine similarity is meant; ``logit_scale`` given as the scale
itself (14.3) instead of its log; supervised-contrastive features without a views dimension
or labels of the wrong shape. Shape checks read metadata; the temperature, norm and scale
checks read values and obey the checks mode (callers guard them with
:func:`losskit.checks.values_enabled`).
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

from losskit.checks import LossInputError, _warn, describe

__all__ = [
    "check_cosine_temperature",
    "check_embeddings",
    "check_logit_scale",
    "check_logit_scale_metadata",
    "check_negatives_exist",
    "check_normalized_rows",
    "check_pair_shapes",
    "check_supcon_has_positives",
    "check_supcon_shapes",
    "check_temperature",
    "check_temperature_value",
    "check_tile_size",
    "log_max_scale",
]

MAX_SCALE = 100.0  # CLIP keeps exp(logit_scale) at or below 100


def log_max_scale(dtype: torch.dtype) -> float:
    """log(100) rounded to ``dtype``, as CLIP's ``logit_scale.clamp_(0, math.log(100))`` leaves
    a parameter of that dtype (float32: 4.6051702..., whose exp is 100.0000076).

    >>> log_max_scale(torch.float64) == math.log(100.0)
    True
    >>> log_max_scale(torch.float32)  # its float32 exp is 100.0000076
    4.605170249938965
    """
    return float(torch.tensor(math.log(MAX_SCALE), dtype=dtype))


def _is_number(x: object) -> bool:
    """A real Python number; a bool is not one here (``True`` is no temperature)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def check_embeddings(loss: str, name: str, x: Tensor) -> None:
    """One view: a 2-D ``(B, D)`` batch of embeddings."""
    if x.dim() != 2:
        fix = (
            f"`{name}.flatten(1)` to make one vector per sample" if x.dim() > 2
            else f"`{name}.unsqueeze(0)` is not enough (one sample has no negatives): batch "
                 f"several samples into a `(B, D)` tensor"
        )
        raise LossInputError(
            f"{loss}: `{name}` has {describe(x)}, but a contrastive loss takes one embedding "
            f"row per sample, shape (B, D). Fix: {fix}."
        )


def check_pair_shapes(loss: str, a_name: str, a: Tensor, b_name: str, b: Tensor) -> None:
    """Two views of the same batch: the same ``(B, D)`` shape (row i of each is a positive
    pair). A ``(D, B)`` second view is named as a transposition."""
    check_embeddings(loss, a_name, a)
    check_embeddings(loss, b_name, b)
    if a.shape == b.shape:
        return
    if a.shape == b.shape[::-1]:
        fix = (f"`{b_name}` looks transposed ({tuple(b.shape)} is (D, B) for {a_name}'s "
               f"(B, D) = {tuple(a.shape)}): pass `{b_name}.T`")
    else:
        fix = (f"pass two views of the same B samples, embedded to the same D (row i of "
               f"`{a_name}` and row i of `{b_name}` are a positive pair)")
    raise LossInputError(
        f"{loss}: `{a_name}` has shape {tuple(a.shape)} but `{b_name}` has shape "
        f"{tuple(b.shape)}; they must match, row i of each being the two views of sample i. "
        f"Fix: {fix}."
    )


def check_negatives_exist(loss: str, batch: int, what: str) -> None:
    """A batch of one sample has no negative: every softmax is over positives only."""
    if batch < 2:
        raise LossInputError(
            f"{loss}: {what} holds {batch} sample, so there is no negative to contrast with "
            f"and the loss is a constant with zero gradient. Fix: use a batch of at least 2 "
            f"samples (contrastive losses improve with more: SimCLR uses 256 to 8192), or "
            f"gather=True to use the other ranks' samples as negatives."
        )


def check_temperature(loss: str, temperature: float | Tensor) -> None:
    """A positive finite temperature: metadata for a tensor (its value is checked by
    :func:`check_temperature_value`, under the checks mode), the value for a float."""
    if isinstance(temperature, Tensor):
        if temperature.dim() != 0 or not temperature.is_floating_point():
            raise LossInputError(
                f"{loss}: `temperature` has {describe(temperature)}, but it must be one "
                f"positive float. Fix: pass a float such as 0.1, or a 0-d floating tensor "
                f"(e.g. `log_t.exp()` for a learnt temperature)."
            )
        return
    if not (_is_number(temperature) and math.isfinite(temperature) and temperature > 0):
        _refuse_temperature(loss, repr(temperature))


def _refuse_temperature(loss: str, got: str) -> None:
    raise LossInputError(
        f"{loss}: temperature={got}, but similarities are divided by it, so it must be a "
        f"positive finite number (not a bool). Fix: pass e.g. temperature=0.1, or a learnt "
        f"one as `log_t.exp()`."
    )


def check_temperature_value(loss: str, temperature: float | Tensor) -> None:
    """Value check of a tensor temperature, as :func:`check_temperature` checks a float: NaN,
    inf, zero and negatives refused (a float was checked already)."""
    if not isinstance(temperature, Tensor):
        return
    t = float(temperature.detach())
    if not (math.isfinite(t) and t > 0):
        _refuse_temperature(loss, f"tensor({t!r})")


def check_cosine_temperature(loss: str, temperature: float | Tensor,
                             module: str | None = None) -> None:
    """Value check: cosine similarities in [-1, 1] at temperature >= 1 give logits in [-1, 1]:
    the softmax over the negatives is nearly uniform and the gradient tiny. ``module`` names
    the Module with ``learn_temperature`` (None: the loss has none)."""
    t = float(temperature.detach()) if isinstance(temperature, Tensor) else temperature
    if t >= 1.0:
        _warn(
            f"{loss}: temperature={t:g} with normalize=True: cosine similarities lie in "
            f"[-1, 1], so every logit does too, the softmax over the negatives stays nearly "
            f"uniform and the loss barely trains (SimCLR's temperatures are 0.1 to 0.5). Fix: "
            f"{_temperature_fix(temperature, module)}."
        )


def _temperature_fix(temperature: float | Tensor, module: str | None) -> str:
    """A learnt temperature needs a lower start; a fixed one a lower value or learning."""
    if isinstance(temperature, Tensor) and temperature.requires_grad:
        start = f" (`{module}(temperature=0.1, learn_temperature=True)`)" if module else ""
        return (f"the temperature is learnt but starts too high: start it at 0.1, its log "
                f"at math.log(0.1){start}")
    learn = (f"`{module}(learn_temperature=True)`" if module else
             "`temperature=log_t.exp()` with `log_t` a Parameter at math.log(0.1)")
    return f"temperature=0.1, or learn it ({learn})"


def check_normalized_rows(loss: str, **views: Tensor) -> None:
    """Value check for ``normalize=False``: rows whose norms are far from 1 make dot products,
    not cosine similarities; their scale then acts as an unintended temperature."""
    for name, x in views.items():
        norms = x.detach().float().norm(dim=-1)
        low_t, high_t = torch.aminmax(norms)
        low, high = low_t.item(), high_t.item()
        if low < 0.5 or high > 2.0:
            _warn(
                f"{loss}: normalize=False, but the rows of `{name}` have norms from "
                f"{low:.3g} to {high:.3g}, far from 1, so the similarities are dot products "
                f"whose size sets the effective temperature (large norms saturate the "
                f"softmax, small ones flatten it). Fix: normalize=True for cosine similarity "
                f"(SimCLR, CLIP); if the model already ends in `F.normalize`, check it runs "
                f"before this loss."
            )
            return  # one warning per call: the other view is most likely the same


def check_logit_scale_metadata(loss: str, logit_scale: float | Tensor) -> None:
    """One number: a finite float (not a bool), or a 0-d floating tensor (its value is checked
    by :func:`check_logit_scale`, under the checks mode)."""
    ok = (logit_scale.dim() == 0 and logit_scale.is_floating_point()
          if isinstance(logit_scale, Tensor)
          else _is_number(logit_scale) and math.isfinite(logit_scale))
    if not ok:
        got = describe(logit_scale) if isinstance(logit_scale, Tensor) else repr(logit_scale)
        _refuse_logit_scale(loss, got)


def _refuse_logit_scale(loss: str, got: str) -> None:
    raise LossInputError(
        f"{loss}: `logit_scale` is {got}, but it must be one finite number, the log of the "
        f"scale. Fix: pass a float such as math.log(1 / 0.07), or a 0-d floating tensor (a "
        f"learnt parameter)."
    )


def check_logit_scale(loss: str, logit_scale: float | Tensor, normalize: bool) -> None:
    """Value check: CLIP's ``logit_scale`` is the log of the scale (init log(1/0.07) = 2.66).
    A value above log(100) (rounded to its dtype: CLIP's parked float32 parameter passes) is
    held at log(100); one at or below 0 gives logits in [-1, 1]; NaN or inf is refused."""
    if isinstance(logit_scale, Tensor):
        s, bound = float(logit_scale.detach()), log_max_scale(logit_scale.dtype)
        if not math.isfinite(s):
            _refuse_logit_scale(loss, f"tensor({s!r})")
    else:
        s, bound = float(logit_scale), log_max_scale(torch.float64)
    if s > bound:
        _warn(
            f"{loss}: logit_scale={s:.4g}, but it is the log of the scale: exp({s:.4g}) is "
            f"above 100, so the loss holds the scale at 100 (CLIP's cap) and the gradient is "
            f"the one at logit_scale=log(100), whatever the value. Fix: pass the log, e.g. "
            f"logit_scale=math.log(1 / 0.07) (= 2.659) for CLIP's initial scale 14.3; a scale "
            f"of {s:.4g} is logit_scale=math.log({s:.4g})."
        )
    elif s <= 0.0 and normalize:
        _warn(
            f"{loss}: logit_scale={s:.4g} gives a scale exp({s:.4g}) <= 1 on cosine "
            f"similarities, so every logit lies in [-1, 1] and the softmax stays nearly "
            f"uniform: the loss barely trains. Fix: logit_scale=math.log(1 / 0.07) (CLIP's "
            f"initial value), learnt with `ClipLoss(learn_logit_scale=True)`."
        )


def check_supcon_shapes(loss: str, features: Tensor, labels: Tensor | None) -> None:
    """``features`` (B, V, D) and ``labels`` None or integer (B,)."""
    if features.dim() != 3:
        fix = ("`torch.stack([view1, view2], dim=1)` for two views per sample, or "
               "`features.unsqueeze(1)` for one view, which needs labels with repeated classes "
               "(with one view an anchor's only positives are the other samples of its class)"
               if features.dim() == 2 else "`torch.stack(views, dim=1)` with each view (B, D)")
        raise LossInputError(
            f"{loss}: `features` has {describe(features)}, but it must be (B, V, D): B "
            f"samples, V views of each, D features. Fix: {fix}."
        )
    if labels is None:
        return
    b = features.shape[0]
    if labels.is_floating_point() or labels.dtype == torch.bool or labels.is_complex():
        raise LossInputError(
            f"{loss}: `labels` has {describe(labels)}, but it holds one class index per "
            f"sample (samples with equal labels are positives). Fix: `labels.long()`"
            f"{', or `labels.argmax(1)` for one-hot rows' if labels.dim() == 2 else ''}."
        )
    if tuple(labels.shape) != (b,):
        if labels.dim() == 2 and labels.shape[0] == b and labels.shape[1] == 1:
            fix = "`labels.squeeze(1)`"
        elif labels.dim() == 2 and labels.shape[0] == b:
            fix = ("one label per sample, not per view: all V views of a sample share its "
                   "label (`labels[:, 0]`), or `labels.argmax(1)` for one-hot rows")
        else:
            fix = f"one class index per sample of `features`, shape ({b},)"
        raise LossInputError(
            f"{loss}: `labels` has shape {tuple(labels.shape)}, but `features` has "
            f"{tuple(features.shape)} = (B, V, D), so `labels` must be ({b},). Fix: {fix}."
        )


def check_supcon_has_positives(loss: str, views: int, labels: Tensor | None) -> None:
    """With one view and no labels each sample is its own class: no anchor has a positive and
    the loss is 0 with no gradient, certainly a mistake (metadata only)."""
    if views == 1 and labels is None:
        raise LossInputError(
            f"{loss}: `features` has V = 1 view and `labels` is None, so each sample is its "
            f"own class and no anchor has a positive: the loss would be 0 with no gradient. "
            f"Fix: pass V >= 2 views, `torch.stack([view1, view2], dim=1)`, or `labels` with "
            f"repeated classes."
        )


def check_supcon_class_counts(loss: str, counts: Tensor) -> None:
    """Value check for one view: labels that never repeat (``counts``: samples per class of
    the whole, gathered batch) leave every anchor without a positive: the loss is 0 with no
    gradient. A warning, not an error: a batch drawn from many classes can do so by chance."""
    if int(counts.max()) < 2:
        _warn(
            f"{loss}: `features` has V = 1 view and the {int(counts.sum())} labels are all "
            f"different, so no anchor has a positive: the loss is 0 with no gradient for this "
            f"batch. Fix: pass V >= 2 views, `torch.stack([view1, view2], dim=1)`, or sample "
            f"batches with repeated classes (e.g. several samples per class)."
        )


def check_tile_size(loss: str, chunk_size: int | None) -> None:
    """``chunk_size`` is None (the whole similarity matrix) or a positive tile side."""
    if chunk_size is None:
        return
    ok = isinstance(chunk_size, numbers.Integral) and not isinstance(chunk_size, bool)
    if not (ok and chunk_size > 0):
        raise LossInputError(
            f"{loss}: chunk_size={chunk_size!r}, but it is the side of the square tiles the "
            f"similarity matrix is computed in, so it must be a positive int. Fix: pass e.g. "
            f"chunk_size=1024 (tiles of 1024 x 1024), or chunk_size=None to compute the whole "
            f"matrix at once."
        )
