r"""Contrastive losses: InfoNCE / NT-Xent (SimCLR), the symmetric CLIP loss, supervised
contrastive (SupCon).

Each is a positive similarity per query minus a log-sum-exp over keys (the other samples, the
negatives, and the positive itself),

.. math::
    l_i = \log \sum_{j \ne i} e^{s\, q_i \cdot k_j} - s\, \mathrm{pos}_i,

so three options work the same way for all three:

* ``chunk_size=n``: the log-sum-exp is computed in ``n x n`` tiles with the gradient computed
  tile by tile (:mod:`losskit.kernels.contrastive`): the ``B x B`` similarity matrix never
  exists, and the scratch memory is independent of the batch size. ``None`` (the default)
  computes the whole matrix, which is faster for small batches.
* ``gather=True`` (with ``group=``, default the world): the keys are every rank's embeddings,
  gathered with :func:`losskit.distributed.gather.all_gather_rows`, which carries the gradient
  back to the rank that owns them (``torch.distributed.all_gather`` does not: a silent bug).
  Each rank's loss covers its own queries; under DDP (which averages gradients over ranks) a
  ``"mean"`` step equals one process on the gathered batch, and with ``"sum"`` the summed
  rank losses do.
* ``normalize=True`` (default): cosine similarity (each row divided by its norm first).

Inputs in float16/bfloat16 are computed in float32; the loss has the input's dtype. Two
inputs of different dtypes follow torch's promotion (float32 with float64 gives float64).
Under ``torch.autocast`` the losses run in float32 and return float32, as torch's do.
"""

from __future__ import annotations

import contextlib
import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from losskit import _reduction, checks, registry
from losskit.checks import contrastive as cchecks
from losskit.kernels.contrastive import chunked_logsumexp
from losskit.losses._common import HALF, autocast_on, no_autocast

__all__ = [
    "ClipLoss",
    "InfoNCELoss",
    "SupConLoss",
    "clip_loss",
    "info_nce",
    "supcon_loss",
]

CLIP_INIT = math.log(1 / 0.07)  # CLIP's initial logit_scale: a scale of 14.3
CLIP_MAX_SCALE = cchecks.MAX_SCALE  # CLIP keeps exp(logit_scale) at or below 100


# ----------------------------------------------------------------------------------------------
# Shared steps


def _dtypes(*tensors: Tensor) -> tuple[torch.dtype, torch.dtype]:
    """``(compute, result)`` dtypes: torch's promotion of the inputs' dtypes; float32 for the
    result under ``torch.autocast`` (float64 stays, as autocast leaves it); halves computed in
    float32."""
    result = functools.reduce(torch.promote_types, [t.dtype for t in tensors])
    if result != torch.float64 and any(autocast_on(t) for t in tensors):
        result = torch.float32
    return (torch.float32 if result in HALF else result), result


def _as_written(*tensors: Tensor):
    """The loss's math in its own precision inside ``torch.autocast`` (whose matmuls would
    otherwise run in half precision)."""
    on = [t for t in tensors if autocast_on(t)]
    return no_autocast(on[0]) if on else contextlib.nullcontext()


def _unit(x: Tensor, normalize: bool, dtype: torch.dtype) -> Tensor:
    """Rows in the compute dtype, divided by their norm when ``normalize``."""
    x = x.to(dtype)
    return F.normalize(x, dim=-1) if normalize else x


def _keys(x: Tensor, gather: bool, group) -> tuple[Tensor, int]:
    """Every rank's rows of ``x`` (with gradient) and where this rank's start; ``(x, 0)``
    without ``gather``. Imported here: the losses sit below :mod:`losskit.distributed`."""
    if not gather:
        return x, 0
    from losskit.distributed.gather import all_gather_rows

    return all_gather_rows(x, group=group)


def _gathering(gather: bool, group) -> bool:
    """Whether ``gather`` will see other ranks (then the local batch may be a single row)."""
    if not gather:
        return False
    from losskit.distributed.group import world_size

    return world_size(group) > 1


def _lse(q: Tensor, k: Tensor, scale: Tensor, skip: Tensor, chunk_size: int | None) -> Tensor:
    r""":math:`\log \sum_{j \ne skip_i} e^{s\, q_i \cdot k_j}` per row of ``q`` (N, D) over
    ``k`` (M, D): the whole (N, M) matrix, or tile by tile with ``chunk_size``."""
    if chunk_size is not None:
        return chunked_logsumexp(q, k, scale=scale, skip=skip, chunk=chunk_size)
    cols = torch.arange(k.shape[0], device=q.device)  # (M,)
    logits = (q @ k.T) * scale  # (N, M)
    return logits.masked_fill(cols[None, :] == skip[:, None], float("-inf")).logsumexp(1)


def _scale_from_temperature(temperature: float | Tensor, like: Tensor) -> Tensor:
    """``1 / temperature`` as a 0-d tensor of ``like``'s dtype (differentiable for a tensor)."""
    if isinstance(temperature, Tensor):
        return 1.0 / temperature.to(like.dtype)
    return torch.tensor(1.0 / temperature, dtype=like.dtype, device=like.device)


def _common_checks(
    loss: str, reduction: str, chunk_size: int | None, temperature: float | Tensor | None,
    **tensors: Tensor | None,
) -> str:
    reduction = _reduction.resolve(reduction)
    for name, t in tensors.items():
        if t is not None and name != "labels":
            _check_floating(loss, name, t)
    checks.check_same_device(loss, **tensors)
    cchecks.check_tile_size(loss, chunk_size)
    if temperature is not None:
        cchecks.check_temperature(loss, temperature)
    return reduction


def _check_floating(loss: str, name: str, t: Tensor) -> None:
    if not t.is_floating_point():
        raise checks.LossNotImplementedError(
            f"{loss}: `{name}` has {checks.describe(t)}, but embeddings must be floating "
            f"point. Fix: pass the model output, or `{name}.float()`."
        )


def _value_checks(loss: str, normalize: bool, temperature: float | Tensor | None,
                  module: str | None = None, **views: Tensor) -> None:
    checks.check_finite(loss, **views)  # type: ignore[arg-type]  # no key named allow_neg_inf
    if temperature is not None:
        cchecks.check_temperature_value(loss, temperature)
    if temperature is not None and normalize:
        cchecks.check_cosine_temperature(loss, temperature, module)
    if not normalize:
        cchecks.check_normalized_rows(loss, **views)


# ----------------------------------------------------------------------------------------------
# InfoNCE / NT-Xent


def info_nce(
    z1: Tensor,
    z2: Tensor,
    *,
    temperature: float | Tensor = 0.1,
    normalize: bool = True,
    reduction: str = "mean",
    chunk_size: int | None = None,
    gather: bool = False,
    group=None,
) -> Tensor:
    r"""InfoNCE over two views, as SimCLR's NT-Xent (normalised temperature-scaled
    cross-entropy).

    With :math:`z = [z^{(1)}; z^{(2)}]` (2B rows, each divided by its norm when ``normalize``),
    :math:`s_{ij} = z_i \cdot z_j / \tau` and :math:`p(i)` the other view of sample i:

    .. math::
        l_i = -\log \frac{e^{s_{i,p(i)}}}{\sum_{j \ne i} e^{s_{ij}}},
        \qquad i = 1 \dots 2B

    so each row has one positive and 2B - 2 negatives (the other samples' views).

    Args:
        z1: ``(B, D)`` embeddings of the first view. z2: ``(B, D)``, row i the second view
            of sample i.
        temperature: :math:`\tau > 0`, a float or a 0-d tensor (e.g. ``log_t.exp()`` learnt,
            as :class:`InfoNCELoss` does with ``learn_temperature=True``).
        normalize: cosine similarity (True) or plain dot products of the rows as given.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"`` over the 2B rows.
        chunk_size: tile side: compute without the (2B, 2B) matrix (see the module docs).
        gather: use every rank's rows as negatives (``torch.distributed``), with gradient.
        group: the process group for ``gather`` (None: the world).

    Shape: ``"none"`` gives ``(2B,)``: the rows of ``z1``, then those of ``z2``.

    One-direction InfoNCE with explicit negatives (query, positive key, negative keys) is not a
    separate signature: with in-batch negatives it is
    ``cross_entropy(q @ k.T / t, arange(B))``, and :func:`clip_loss` is its symmetric form.

    Reference: Chen et al., "A Simple Framework for Contrastive Learning of Visual
    Representations" (SimCLR), 2020; van den Oord et al., "Representation Learning with
    Contrastive Predictive Coding" (InfoNCE), 2018. Same value as pytorch-metric-learning's
    ``NTXentLoss`` on ``cat([z1, z2])`` with labels ``cat([arange(B), arange(B)])``.

    Example:
        >>> z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        >>> info_nce(z1, z1, temperature=0.5)  # two aligned views: -log(e^2 / (e^2 + 2))
        tensor(0.2395)
    """
    loss = "info_nce"
    reduction = _common_checks(loss, reduction, chunk_size, temperature, z1=z1, z2=z2)
    cchecks.check_pair_shapes(loss, "z1", z1, "z2", z2)
    if not _gathering(gather, group):
        cchecks.check_negatives_exist(loss, z1.shape[0], "`z1`")
    if checks.values_enabled(loss, z1, z2):
        _value_checks(loss, normalize, temperature, "InfoNCELoss", z1=z1, z2=z2)
    dtype, result = _dtypes(z1, z2)
    with _as_written(z1, z2):
        out = _info_nce(z1, z2, temperature, normalize, chunk_size, gather, group, dtype)
    return _reduction.reduce(out, reduction).to(result)


def _info_nce(z1, z2, temperature, normalize, chunk_size, gather, group, dtype) -> Tensor:
    """The (2B,) rows of :func:`info_nce`, after its checks."""
    a, b = _unit(z1, normalize, dtype), _unit(z2, normalize, dtype)  # (B, D) each
    scale = _scale_from_temperature(temperature, a)
    n = a.shape[0]
    q = torch.cat([a, b])  # (2B, D): the queries, this rank's rows
    if gather:
        k1, start = _keys(a, gather, group)  # (B_all, D)
        k2, _ = _keys(b, gather, group)
        k = torch.cat([k1, k2])  # (2 B_all, D)
        rows = torch.arange(n, device=a.device) + start
        skip = torch.cat([rows, rows + k1.shape[0]])  # (2B,): each query's own column
    else:
        k, skip = q, torch.arange(2 * n, device=a.device)
    positive = (a * b).sum(1) * scale  # (B,)
    return _lse(q, k, scale, skip, chunk_size) - torch.cat([positive, positive])  # (2B,)


class InfoNCELoss(nn.Module):
    """InfoNCE / NT-Xent over two views; see :func:`losskit.functional.info_nce`.

    With ``learn_temperature=True`` the Module holds ``log_temperature``, a Parameter
    initialised at ``log(temperature)`` (learnt in log space, as CLIP learns its scale) and
    passes ``temperature=log_temperature.exp()``; give the loss's parameters to the optimizer.

    >>> loss = InfoNCELoss(temperature=0.5)
    >>> z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> loss(z1, z1)
    tensor(0.2395)
    >>> learnt = InfoNCELoss(temperature=0.5, learn_temperature=True)
    >>> round(learnt.log_temperature.exp().item(), 4), learnt(z1, z1).requires_grad
    (0.5, True)
    """

    def __init__(
        self,
        temperature: float = 0.1,
        *,
        learn_temperature: bool = False,
        normalize: bool = True,
        reduction: str = "mean",
        chunk_size: int | None = None,
        gather: bool = False,
        group=None,
    ) -> None:
        super().__init__()
        cchecks.check_temperature("InfoNCELoss", temperature)
        if learn_temperature:
            self.log_temperature = nn.Parameter(torch.tensor(math.log(temperature)))
        else:
            self.temperature = temperature
        self.learn_temperature = learn_temperature
        self.normalize = normalize
        self.reduction = reduction
        self.chunk_size = chunk_size
        self.gather = gather
        self.group = group

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        t = self.log_temperature.exp() if self.learn_temperature else self.temperature
        return info_nce(
            z1, z2, temperature=t, normalize=self.normalize, reduction=self.reduction,
            chunk_size=self.chunk_size, gather=self.gather, group=self.group,
        )


# ----------------------------------------------------------------------------------------------
# CLIP


def clip_loss(
    image_embeds: Tensor,
    text_embeds: Tensor,
    *,
    logit_scale: float | Tensor = CLIP_INIT,
    normalize: bool = True,
    reduction: str = "mean",
    chunk_size: int | None = None,
    gather: bool = False,
    group=None,
) -> Tensor:
    r"""The symmetric CLIP loss: cross-entropy over image-to-text and text-to-image logits.

    With :math:`a, b` the image and text rows (unit norm when ``normalize``) and
    :math:`s = e^{\min(\text{logit\_scale},\, \log 100)}`, logits :math:`L = s\, a b^\top`
    (B, B):

    .. math::
        l_i = \tfrac12 \Big( -\log \mathrm{softmax}(L_{i,:})_i
                             -\log \mathrm{softmax}(L_{:,i})_i \Big)

    Args:
        image_embeds: ``(B, D)``. text_embeds: ``(B, D)``, row i the caption of image i.
        logit_scale: the **log** of the scale (a float, or a 0-d tensor to learn it, as CLIP
            does); CLIP's initial value log(1/0.07) = 2.659 is the default.
        normalize, reduction, chunk_size, gather, group: as :func:`info_nce`.

    Shape: ``"none"`` gives ``(B,)``: the mean of pair i's two cross-entropy terms.

    Departure from CLIP: CLIP clamps the ``logit_scale`` parameter itself to at most log(100)
    after each optimizer step and uses ``exp(logit_scale)``; here the parameter is left alone
    and the loss uses ``min(logit_scale, log 100)``, with log(100) rounded to the parameter's
    dtype (CLIP's parked float32 parameter, whose exp is 100.0000076, is used as is), and passes
    the gradient straight through the min. So up to log(100) value and gradient are CLIP's
    (:math:`\partial l / \partial \text{logit\_scale} = s\, \partial l / \partial s`); beyond
    it the scale is 100 and the gradient is CLIP's at its clamped parameter, never 0 (a
    parameter past the cap is not stuck: the gradient can bring it back).

    Reference: Radford et al., "Learning Transferable Visual Models From Natural Language
    Supervision" (CLIP), 2021.

    Example:
        >>> a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        >>> clip_loss(a, a, logit_scale=0.0, normalize=False)  # log(1 + e^-1)
        tensor(0.3133)
    """
    loss = "clip_loss"
    reduction = _common_checks(loss, reduction, chunk_size, None, image_embeds=image_embeds,
                               text_embeds=text_embeds)
    cchecks.check_pair_shapes(loss, "image_embeds", image_embeds, "text_embeds", text_embeds)
    cchecks.check_logit_scale_metadata(loss, logit_scale)
    if not _gathering(gather, group):
        cchecks.check_negatives_exist(loss, image_embeds.shape[0], "`image_embeds`")
    if checks.values_enabled(loss, image_embeds, text_embeds, logit_scale):
        _value_checks(loss, normalize, None, image_embeds=image_embeds, text_embeds=text_embeds)
        cchecks.check_logit_scale(loss, logit_scale, normalize)
    dtype, result = _dtypes(image_embeds, text_embeds)
    with _as_written(image_embeds, text_embeds):
        out = _clip_rows(image_embeds, text_embeds, logit_scale, normalize, chunk_size, gather,
                         group, dtype)
    return _reduction.reduce(out, reduction).to(result)


def _clip_rows(image_embeds, text_embeds, logit_scale, normalize, chunk_size, gather, group,
               dtype) -> Tensor:
    """The (B,) rows of :func:`clip_loss`, after its checks."""
    a, b = _unit(image_embeds, normalize, dtype), _unit(text_embeds, normalize, dtype)
    scale = _clip_scale(logit_scale, dtype, a.device)
    ka, _ = _keys(a, gather, group)  # (B_all, D)
    kb, _ = _keys(b, gather, group)
    none = torch.full((a.shape[0],), -1, dtype=torch.long, device=a.device)  # skip nothing
    positive = (a * b).sum(1) * scale  # (B,)
    out = 0.5 * (_lse(a, kb, scale, none, chunk_size) + _lse(b, ka, scale, none, chunk_size))
    return out - positive


def _clip_scale(logit_scale: float | Tensor, dtype: torch.dtype, device) -> Tensor:
    r""":math:`s = e^{\min(p,\, \log 100)}` as a 0-d tensor of ``dtype``, log(100) rounded to
    ``p``'s dtype, with :math:`\partial s / \partial p = s` everywhere: the min passes the
    gradient straight through (``held + (p - p.detach())`` is ``held`` exactly, gradient 1).

    >>> p = torch.tensor(math.log(100.0), dtype=torch.float32, requires_grad=True)  # CLIP's cap
    >>> s = _clip_scale(p, torch.float32, "cpu"); s.backward()
    >>> s.item(), p.grad.item()  # exp(p) and its gradient, as CLIP's parked parameter gives
    (100.00000762939453, 100.00000762939453)
    """
    if not isinstance(logit_scale, Tensor):  # min first: exp(1000.0) overflows a float
        held = min(float(logit_scale), cchecks.log_max_scale(torch.float64))
        return torch.tensor(min(math.exp(held), CLIP_MAX_SCALE), dtype=dtype, device=device)
    p = logit_scale.to(dtype)
    held_log: Tensor = p.detach().clamp(max=cchecks.log_max_scale(logit_scale.dtype))
    return (held_log + (p - p.detach())).exp()


class ClipLoss(nn.Module):
    """The symmetric CLIP loss; see :func:`losskit.functional.clip_loss`.

    With ``learn_logit_scale=True`` the Module holds ``logit_scale``, a Parameter initialised
    at the given value (CLIP learns it); otherwise the float is used as is.

    >>> a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> ClipLoss(logit_scale=0.0, normalize=False)(a, a)
    tensor(0.3133)
    """

    def __init__(
        self,
        logit_scale: float = CLIP_INIT,
        *,
        learn_logit_scale: bool = False,
        normalize: bool = True,
        reduction: str = "mean",
        chunk_size: int | None = None,
        gather: bool = False,
        group=None,
    ) -> None:
        super().__init__()
        cchecks.check_logit_scale_metadata("ClipLoss", logit_scale)
        self.logit_scale: nn.Parameter | float
        if learn_logit_scale:
            self.logit_scale = nn.Parameter(torch.tensor(float(logit_scale)))
        else:
            self.logit_scale = logit_scale
        self.learn_logit_scale = learn_logit_scale
        self.normalize = normalize
        self.reduction = reduction
        self.chunk_size = chunk_size
        self.gather = gather
        self.group = group

    def forward(self, image_embeds: Tensor, text_embeds: Tensor) -> Tensor:
        return clip_loss(
            image_embeds, text_embeds, logit_scale=self.logit_scale, normalize=self.normalize,
            reduction=self.reduction, chunk_size=self.chunk_size, gather=self.gather,
            group=self.group,
        )


# ----------------------------------------------------------------------------------------------
# Supervised contrastive


def supcon_loss(
    features: Tensor,
    labels: Tensor | None = None,
    *,
    temperature: float | Tensor = 0.1,
    normalize: bool = True,
    reduction: str = "mean",
    chunk_size: int | None = None,
    gather: bool = False,
    group=None,
) -> Tensor:
    r"""Supervised contrastive loss, :math:`\mathcal{L}^{sup}_{out}` (Khosla et al., 2020).

    Every view of every sample is an anchor i (N = B V anchors); its positives :math:`P(i)` are
    the other views with the same label, and with :math:`s_{ij} = z_i \cdot z_j / \tau`:

    .. math::
        l_i = -\frac{1}{|P(i)|} \sum_{p \in P(i)}
              \log \frac{e^{s_{ip}}}{\sum_{j \ne i} e^{s_{ij}}}

    (the "out" form, the mean outside the log, which the paper found better). With
    ``labels=None`` each sample is its own class: SimCLR's loss over V views (for V = 2 equal
    to :func:`info_nce`).

    Args:
        features: ``(B, V, D)``: V views (augmentations) of each of B samples.
        labels: ``(B,)`` integer classes, or None (unsupervised).
        temperature, normalize, chunk_size, gather, group: as :func:`info_nce`.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``; an anchor with no positive (V = 1
            and a class seen once) counts 0 and is left out of ``"mean"``'s count.

    With V = 1 only labels give positives: ``labels=None`` raises, and labels that are all
    different warn (LossWarning; the loss is 0 with no gradient, as a mean over nothing).

    Shape: ``"none"`` gives ``(B, V)``.

    Departure from the authors' code: no ``temperature / base_temperature`` factor (the
    paper's formula has none; with their defaults 0.07 / 0.07 it is 1).

    Example:
        >>> f = torch.tensor([[[1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [0.0, 1.0]]])
        >>> supcon_loss(f, torch.tensor([0, 1]), temperature=0.5)  # as info_nce's example
        tensor(0.2395)
    """
    loss = "supcon_loss"
    reduction = _common_checks(loss, reduction, chunk_size, temperature, features=features,
                               labels=labels)
    cchecks.check_supcon_shapes(loss, features, labels)
    cchecks.check_supcon_has_positives(loss, features.shape[1], labels)
    if not _gathering(gather, group):
        cchecks.check_negatives_exist(loss, features.shape[0], "`features`")
    values = checks.values_enabled(loss, features, labels)
    if values:
        _value_checks(loss, normalize, temperature, features=features)
    dtype, result = _dtypes(features)
    with _as_written(features):
        out, counted = _supcon_rows(features, labels, temperature, normalize, chunk_size,
                                    gather, group, dtype, values)
    if reduction == "none":
        return out.reshape(features.shape[1], features.shape[0]).T.to(result)  # (B, V)
    return _reduction.reduce(out, reduction, counted).to(result)


def _supcon_rows(features, labels, temperature, normalize, chunk_size, gather, group, dtype,
                 values) -> tuple[Tensor, Tensor]:
    """The (V*B,) anchor losses of :func:`supcon_loss` (view-major) and how many anchors have
    a positive, after its checks; ``values``: run the class-count value check."""
    loss = "supcon_loss"
    bsz, views, d = features.shape
    x = _unit(features.transpose(0, 1).reshape(views * bsz, d), normalize, dtype)  # (V*B, D)
    scale = _scale_from_temperature(temperature, x)
    k, start = _keys(x, gather, group)  # (V*B_all, D) when gathering
    if labels is None:
        labels = torch.arange(bsz, device=x.device) + start // views  # unique across ranks
    y, _ = _keys(labels.repeat(views), gather, group)  # (V*B_all,) no gradient
    n = x.shape[0]
    classes, inverse = torch.unique(y, return_inverse=True)
    sums = torch.zeros(len(classes), d, dtype=dtype, device=x.device).index_add(0, inverse, k)
    counts = torch.bincount(inverse, minlength=len(classes))  # (K,)
    if values and views == 1:  # unique has read the labels already (a GPU sync): no new one
        cchecks.check_supcon_class_counts(loss, counts)
    mine = inverse[start : start + n]  # (V*B,): each anchor's class
    positives = sums[mine] - x  # (V*B, D): sum over P(i)
    n_pos = counts[mine] - 1  # (V*B,)
    skip = torch.arange(n, device=x.device) + start
    mean_pos = (x * positives).sum(1) * scale / n_pos.clamp(min=1).to(dtype)
    out = torch.where(n_pos > 0, _lse(x, k, scale, skip, chunk_size) - mean_pos, 0.0)
    return out, (n_pos > 0).sum().to(dtype)


class SupConLoss(nn.Module):
    """Supervised contrastive loss; see :func:`losskit.functional.supcon_loss`.

    >>> f = torch.tensor([[[1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [0.0, 1.0]]])
    >>> SupConLoss(temperature=0.5)(f, torch.tensor([0, 1]))
    tensor(0.2395)
    """

    def __init__(
        self,
        temperature: float = 0.1,
        *,
        normalize: bool = True,
        reduction: str = "mean",
        chunk_size: int | None = None,
        gather: bool = False,
        group=None,
    ) -> None:
        super().__init__()
        cchecks.check_temperature("SupConLoss", temperature)
        self.temperature = temperature
        self.normalize = normalize
        self.reduction = reduction
        self.chunk_size = chunk_size
        self.gather = gather
        self.group = group

    def forward(self, features: Tensor, labels: Tensor | None = None) -> Tensor:
        return supcon_loss(
            features, labels, temperature=self.temperature, normalize=self.normalize,
            reduction=self.reduction, chunk_size=self.chunk_size, gather=self.gather,
            group=self.group,
        )


# ----------------------------------------------------------------------------------------------
# Records


def count_view_rows(loss_fn: nn.Module, z1: Tensor, *rest: Tensor) -> Tensor:
    """``"mean"`` of :func:`info_nce` divides by the 2B rows of both views.

    >>> count_view_rows(None, torch.zeros(3, 4), torch.zeros(3, 4))
    tensor(6.)
    """
    return registry.count_full(z1, 2 * z1.shape[0])


def count_anchors_with_positives(
    loss_fn: nn.Module, features: Tensor, labels: Tensor | None = None
) -> Tensor:
    """``"mean"`` of :func:`supcon_loss` divides by the anchors (B V of them) that have a
    positive: all of them when V >= 2.

    >>> count_anchors_with_positives(None, torch.zeros(3, 1, 2), torch.tensor([0, 0, 1]))
    tensor(2.)
    """
    bsz, views = features.shape[:2]
    if labels is None or views > 1:
        return registry.count_full(features, bsz * views if views > 1 else 0)
    _, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    return (counts[inverse] > 1).sum().to(registry.count_full(features, 0).dtype)


registry.register(registry.LossRecord(
    function=info_nce, module=InfoNCELoss, family="contrastive", input="embeddings",
    targets=("none",),
    summary="InfoNCE / NT-Xent over two views (SimCLR); chunked and multi-rank paths",
    mean_count=count_view_rows, aliases=("nt_xent", "NTXentLoss", "simclr", "infonce"),
    catalog=(("contrastive representation learning", "temperature=0.1"),),
))
registry.register(registry.LossRecord(
    function=clip_loss, module=ClipLoss, family="contrastive", input="embeddings",
    targets=("none",),
    summary="symmetric image-text cross-entropy (CLIP) with a learnable logit scale",
    mean_count=registry.count_rows, aliases=("clip", "contrastive_image_text"),
    catalog=(("contrastive representation learning", ""),),
))
registry.register(registry.LossRecord(
    function=supcon_loss, module=SupConLoss, family="contrastive", input="embeddings",
    targets=("class-indices",),
    summary="supervised contrastive (SupCon, L_out): same-label views are positives",
    mean_count=count_anchors_with_positives, aliases=("supcon", "supervised_contrastive"),
    catalog=(("contrastive representation learning", "temperature=0.1"),),
))


# ----------------------------------------------------------------------------------------------
# What `losskit explain` prints and draws (registry.Explain); the gradients are checked against
# autograd in tests/test_explain.py. The derivative is given with respect to the similarity
# (logit) matrix, where it has the cross-entropy form, and carried to the first argument through
# the matrix product and the row normalisation.


def _explain_unit(x: Tensor, normalize: bool) -> Tensor:
    return x / x.norm(dim=-1, keepdim=True) if normalize else x


def _explain_unnormalize(x: Tensor, grad: Tensor, normalize: bool) -> Tensor:
    """Back through u = x / |x|: (g - u (u . g)) / |x|."""
    if not normalize:
        return grad
    norm = x.norm(dim=-1, keepdim=True)
    u = x / norm
    return (grad - u * (u * grad).sum(-1, keepdim=True)) / norm


def _explain_masked_similarity(z: Tensor, temperature: float) -> Tensor:
    """S = Z Z^T / tau ``(n, n)`` with the diagonal at -inf (a row is not its own negative)."""
    s = z @ z.T / temperature
    return s.masked_fill(torch.eye(len(z), dtype=torch.bool), float("-inf"))


def _info_nce_parts(z1, z2, temperature, normalize):
    z = torch.cat([_explain_unit(z1, normalize), _explain_unit(z2, normalize)])  # (2B, D)
    n = len(z1)
    positive = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])  # row i's other view
    return z, positive, _explain_masked_similarity(z, temperature)


def _info_nce_gradient(z1, z2, temperature=0.1, normalize=True, **kw):
    """dl/dS = softmax_row(S) - onehot(positive) (G); S = Z Z^T / tau gives dl/dZ = (G + G^T)
    Z / tau; the first B rows are z1's, then back through the normalisation."""
    z, positive, s = _info_nce_parts(z1, z2, temperature, normalize)
    g = s.softmax(dim=1) - F.one_hot(positive, len(z)).to(z.dtype)
    dz = (g + g.T) @ z / temperature
    return _explain_unnormalize(z1, dz[: len(z1)], normalize)


def _info_nce_steps(z1, z2, reduction="mean", temperature=0.1, normalize=True):
    z, positive, s = _info_nce_parts(z1, z2, temperature, normalize)
    lse, pos = s.logsumexp(dim=1), s.gather(1, positive[:, None])[:, 0]
    rows = [("z = [z1; z2], rows divided by their norm", z),
            (f"S = z z^T / tau, tau={temperature}, own column at -inf", s),
            ("log-sum-exp of each row over j != i", lse), ("positive S_i,p(i)", pos),
            ("l_i = lse_i - S_i,p(i)", lse - pos)]
    return rows + _explain_reduce(lse - pos, reduction, "rows")


def _explain_reduce(loss: Tensor, reduction: str, what: str):
    if reduction == "sum":
        return [(f"sum over the {loss.numel()} {what}", loss.sum())]
    if reduction == "none":
        return [("no reduction", loss)]
    return [(f"mean over the {loss.numel()} {what}", loss.mean())]


def _explain_clip_scale(logit_scale: float) -> float:
    return min(math.exp(logit_scale), CLIP_MAX_SCALE)


def _clip_gradient(image, text, logit_scale=CLIP_INIT, normalize=True, **kw):
    """L = s a b^T; dl/dL = (softmax_row(L) + softmax_col(L)) / 2 - I (G); dl/da = s G b."""
    a, b = _explain_unit(image, normalize), _explain_unit(text, normalize)
    scale = _explain_clip_scale(logit_scale)
    logits = scale * a @ b.T
    g = 0.5 * (logits.softmax(dim=1) + logits.softmax(dim=0)) - torch.eye(len(a), dtype=a.dtype)
    return _explain_unnormalize(image, scale * g @ b, normalize)


def _clip_steps(image, text, reduction="mean", logit_scale=CLIP_INIT, normalize=True):
    a, b = _explain_unit(image, normalize), _explain_unit(text, normalize)
    scale = _explain_clip_scale(logit_scale)
    logits = scale * a @ b.T
    rows_ce = logits.logsumexp(dim=1) - logits.diagonal()
    cols_ce = logits.logsumexp(dim=0) - logits.diagonal()
    rows = [(f"s = min(exp(logit_scale), 100) = {scale:.6g}",
             torch.tensor(scale, dtype=logits.dtype)),
            ("L = s a b^T (unit rows)", logits),
            ("image -> text: lse_j L_ij - L_ii", rows_ce),
            ("text -> image: lse_j L_ji - L_ii", cols_ce),
            ("l_i = mean of the two", 0.5 * (rows_ce + cols_ce))]
    return rows + _explain_reduce(0.5 * (rows_ce + cols_ce), reduction, "pairs")


def _supcon_parts(features, labels, temperature, normalize):
    bsz, views, d = features.shape
    x = _explain_unit(features.transpose(0, 1).reshape(views * bsz, d), normalize)  # (V*B, D)
    y = (torch.arange(bsz) if labels is None else labels).repeat(views)
    same = (y[:, None] == y[None, :]) & ~torch.eye(len(y), dtype=torch.bool)  # P(i)
    return x, same, _explain_masked_similarity(x, temperature)


def _supcon_gradient(features, labels=None, temperature=0.1, normalize=True, **kw):
    """dl/dS_ij = softmax_row(S)_ij - [j in P(i)] / |P(i)| (G, zero for an anchor without a
    positive); dl/dX = (G + G^T) X / tau, then back to (B, V, D) and through the normalisation."""
    bsz, views, d = features.shape
    x, same, s = _supcon_parts(features, labels, temperature, normalize)
    same = same.to(x.dtype)
    n_pos = same.sum(1, keepdim=True)
    g = (s.softmax(dim=1) - same / n_pos.clamp(min=1)) * (n_pos > 0)
    dx = ((g + g.T) @ x / temperature).reshape(views, bsz, d).transpose(0, 1)
    return _explain_unnormalize(features, dx, normalize)


def _supcon_steps(features, labels=None, reduction="mean", temperature=0.1, normalize=True):
    x, same, s = _supcon_parts(features, labels, temperature, normalize)
    lse = s.logsumexp(dim=1)
    mean_pos = (s.masked_fill(~same, 0.0)).sum(1) / same.sum(1)
    rows = [("x: every view as a row (view-major), divided by its norm", x),
            (f"S = x x^T / tau, tau={temperature}, own column at -inf", s),
            ("positives P(i): same label, not i", same.to(x.dtype)),
            ("log-sum-exp of each row over j != i", lse),
            ("mean of S_ip over p in P(i)", mean_pos), ("l_i = lse_i - mean", lse - mean_pos)]
    return rows + _explain_reduce(lse - mean_pos, reduction, "anchors")


def _positive_pair(c: Tensor, dims: int = 4) -> Tensor:
    """The unit row [c, sqrt(1 - c^2), 0, ...]: its cosine with e1 is c; the second axis is
    used by no other row, so the loss depends on c alone (its square root is held fixed)."""
    row = torch.zeros(dims, dtype=c.dtype)
    return torch.cat([c[None], (1 - c.detach() ** 2).clamp(min=0).sqrt()[None], row[2:]])


def _e(i: int, like: Tensor, dims: int = 4) -> Tensor:
    return F.one_hot(torch.tensor(i), dims).to(like.dtype)


def _info_nce_curve(t, temperature=0.1):
    """Two samples: sample 0's views e1 and a row at cosine t to it; sample 1's both e3."""
    return torch.stack([
        info_nce(torch.stack([_e(0, c), _e(2, c)]), torch.stack([_positive_pair(c), _e(2, c)]),
                 temperature=temperature, normalize=False) for c in t])


def _clip_curve(t, logit_scale=0.0):
    return torch.stack([
        clip_loss(torch.stack([_e(0, c), _e(2, c)]), torch.stack([_positive_pair(c), _e(2, c)]),
                  logit_scale=logit_scale, normalize=False) for c in t])


def _supcon_curve(t, temperature=0.1):
    """Three samples of 2 views, labels [0, 1, 0]: sample 0's views e1 and a row at cosine t to
    it, sample 2's both e1 (same label), sample 1's both e3."""
    labels = torch.tensor([0, 1, 0])
    return torch.stack([
        supcon_loss(torch.stack([torch.stack([_e(0, c), _positive_pair(c)]),
                                 torch.stack([_e(2, c), _e(2, c)]),
                                 torch.stack([_e(0, c), _e(0, c)])]), labels,
                    temperature=temperature, normalize=False) for c in t])


def _explain_example(*args, **kwargs):
    """Fresh float64 tensors (integer tensors as given) on every call."""

    def make():
        return tuple(a.clone() if isinstance(a, Tensor) else torch.tensor(a, dtype=torch.float64)
                     for a in args), dict(kwargs)

    return make


_Z1, _Z2 = [[1.0, 0.5], [-0.3, 1.0]], [[0.8, 0.7], [0.1, 1.2]]
_CONTRASTIVE_NOTE = ("the derivative is given with respect to the similarity matrix (a "
                     "cross-entropy's softmax - onehot) and carried to the embeddings through "
                     "S = Z Z^T / tau and the row normalisation; convex in the similarities, "
                     "not in the embeddings. The pull per similarity is at most 2 / tau (with "
                     "normalize, the embeddings' gradient also scales with 1 / |z|). The curve "
                     "uses unit rows with normalize=False, the same values")
_COSINE_AXIS = "cosine similarity of one positive pair (unit rows)"

registry.describe(info_nce, registry.Explain(
    formula="l_i = -log( exp(S_i,p(i)) / sum_{j != i} exp(S_ij) ),  S = z z^T / tau over the 2B "
            "rows z = [z1; z2] (unit rows), p(i) the other view of sample i; mean over 2B rows",
    latex=r"\ell_i = -\log\frac{e^{S_{i,p(i)}}}{\sum_{j\ne i} e^{S_{ij}}},\ "
          r"S = zz^\top/\tau",
    derivative="dl/dS_ij = softmax_{j != i}(S_i)_j - [j = p(i)];  dl/dz = (G + G^T) z / tau;  "
               "through the normalisation: (g - u (u . g)) / |z1|",
    derivative_latex=r"\frac{\partial\ell}{\partial S_{ij}} = \operatorname{softmax}_{j\ne i}"
                     r"(S_i)_j - \mathbb 1[j = p(i)]",
    gradient=_info_nce_gradient,
    example=_explain_example(_Z1, _Z2, temperature=0.5), steps=_info_nce_steps,
    curve=registry.Curve(_COSINE_AXIS, _info_nce_curve,
                         tuple((f"tau={v}", {"temperature": v}) for v in (0.1, 0.5, 1.0)),
                         span=(-1.0, 1.0)),
    convex=False, bounded_gradient=True,
    robust="partly: a false negative (a same-class sample treated as negative) pulls with at "
           "most 1 / tau, and a small tau concentrates the pull on the hardest negatives",
    note=_CONTRASTIVE_NOTE,
))
registry.describe(clip_loss, registry.Explain(
    formula="l_i = (CE(L_i,:, i) + CE(L_:,i, i)) / 2,  L = s a b^T (unit rows), s = "
            "min(exp(logit_scale), 100); mean over the B pairs",
    latex=r"\ell_i = \tfrac12\bigl(-\log\operatorname{softmax}(L_{i,:})_i - "
          r"\log\operatorname{softmax}(L_{:,i})_i\bigr),\ L = s\,ab^\top",
    derivative="dl/dL = (softmax_row(L) + softmax_col(L)) / 2 - I (G);  dl/da = s G b;  through "
               "the normalisation: (g - u (u . g)) / |a|",
    derivative_latex=r"\frac{\partial\ell}{\partial L} = \tfrac12\bigl(\operatorname{softmax}"
                     r"_\text{row}(L) + \operatorname{softmax}_\text{col}(L)\bigr) - I",
    gradient=_clip_gradient,
    example=_explain_example(_Z1, _Z2, logit_scale=1.0), steps=_clip_steps,
    curve=registry.Curve(_COSINE_AXIS, _clip_curve,
                         tuple((f"scale={math.exp(v):.3g}", {"logit_scale": v})
                               for v in (0.0, 1.0, CLIP_INIT)), span=(-1.0, 1.0)),
    convex=False, bounded_gradient=True,
    robust="partly: a mismatched pair's pull per logit is capped (at s in the cosine), its "
           "loss grows linearly",
    note=_CONTRASTIVE_NOTE.replace("S = Z Z^T / tau", "L = s a b^T").replace("2 / tau", "s"),
))
registry.describe(supcon_loss, registry.Explain(
    formula="l_i = lse_{j != i}(S_ij) - mean_{p in P(i)} S_ip,  S = x x^T / tau over the B V "
            "views (unit rows), P(i) the other views with i's label; mean over anchors with a "
            "positive",
    latex=r"\ell_i = -\frac{1}{|P(i)|}\sum_{p\in P(i)}\log\frac{e^{S_{ip}}}"
          r"{\sum_{j\ne i}e^{S_{ij}}}",
    derivative="dl/dS_ij = softmax_{j != i}(S_i)_j - [j in P(i)] / |P(i)|;  dl/dx = (G + G^T) x "
               "/ tau;  through the normalisation: (g - u (u . g)) / |x|",
    derivative_latex=r"\frac{\partial\ell}{\partial S_{ij}} = \operatorname{softmax}_{j\ne i}"
                     r"(S_i)_j - \frac{\mathbb 1[j\in P(i)]}{|P(i)|}",
    gradient=_supcon_gradient,
    example=_explain_example([[[1.0, 0.5], [0.8, 0.7]], [[-0.3, 1.0], [0.1, 1.2]],
                              [[0.9, 0.2], [1.0, -0.4]]], torch.tensor([0, 1, 0]),
                             temperature=0.5),
    steps=_supcon_steps,
    curve=registry.Curve(_COSINE_AXIS + "; another same-label sample at the anchor",
                         _supcon_curve,
                         tuple((f"tau={v}", {"temperature": v}) for v in (0.1, 0.5, 1.0)),
                         span=(-1.0, 1.0)),
    convex=False, bounded_gradient=True,
    robust="partly: a wrong label makes a false positive whose pull is capped at 1 / (tau |P|), "
           "shared with the true positives",
    note=_CONTRASTIVE_NOTE,
))
