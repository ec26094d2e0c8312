r"""One record per loss: what the rest of losskit needs to know about it.

Each family file in :mod:`losskit.losses` defines its functions and Modules and registers one
:class:`LossRecord` per loss, next to the code. Everything that must treat losses differently
(the doctor, metrics, global normalisation, the training recipes, ``losskit losses``, the CLI and
the cross-cutting tests) asks the record instead of branching on a loss's name or type.

A record says:

* ``input``: what the loss wants as its first argument, one of :data:`INPUT_KINDS`
  (``"logits"``, ``"probabilities"``, ``"log-probabilities"``, ``"values"`` ...). The doctor
  compares it with the model's last activation; metrics turn the output into probabilities with it.
* ``targets``: the target kinds it accepts, from :data:`TARGET_KINDS`. When several are accepted
  (cross-entropy takes class indices or class probabilities), :meth:`LossRecord.target_kind`
  tells which one a given target is.
* ``mean_count``: the denominator of ``reduction="mean"`` for a Module and a batch (for exact
  normalisation across micro-batches and ranks, :mod:`losskit.distributed.normalise`).
* ``torch_module`` / ``torch_function``: the twin in ``torch.nn``, if any.
* ``cli``: the name ``losskit train --loss`` uses, ``summary``: its line in ``losskit losses``.
* ``explain``: an :class:`Explain` (formula, closed-form derivative, properties, worked example,
  curve) for ``losskit explain`` and the gallery; added by the family file with :func:`describe`.

>>> import losskit as lk
>>> record = lookup(lk.CrossEntropyLoss())
>>> record.name, record.input, record.targets
('cross_entropy', 'logits', ('class-indices', 'class-probabilities'))
>>> record.target_kind(torch.zeros(2, 3), torch.tensor([0, 2]))
'class-indices'
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "INPUT_KINDS",
    "TARGET_KINDS",
    "Curve",
    "Explain",
    "LossRecord",
    "count_elements",
    "count_rows",
    "describe",
    "get",
    "lookup",
    "records",
    "register",
]

INPUT_KINDS = (
    "logits",  # raw scores; the loss applies softmax / sigmoid itself
    "probabilities",  # in [0, 1] (after a sigmoid)
    "log-probabilities",  # log_softmax output
    "values",  # real-valued predictions (regression)
    "scores",  # real-valued scores compared by margins (ranking, hinge)
    "distances",  # non-negative distances or dissimilarities
    "embeddings",  # vectors compared by a distance or similarity
    "hidden",  # hidden states fed through a linear head inside the loss
    "sequence-log-probabilities",  # log p(answer | prompt) per sequence, (B,) (preference losses)
)
TARGET_KINDS = (
    "class-indices",  # integer labels in [0, C), ignore_index allowed
    "class-probabilities",  # a distribution over classes, the input's shape
    "binary",  # 0./1. floats (or probabilities) of the input's shape
    "real",  # real values of the input's shape
    "counts",  # non-negative counts (Poisson)
    "sign",  # -1 / +1 labels
    "label-lists",  # class indices padded with -1 (multi-label margin)
    "label-sequences",  # per-sample label sequences (CTC)
    "none",  # no target (e.g. a triplet of embeddings)
    "teacher",  # a teacher model's logits (input's shape), or hidden states + head (distillation)
    "desirability",  # bool per example, True for a desirable answer (KTO)
)

#: How a loss's ``"mean"`` counts, for a Module and one batch: ``(loss_fn, input, target) -> n``.
MeanCount = Callable[[nn.Module, Tensor, Tensor], Tensor]


def _count_dtype(dtype: torch.dtype) -> torch.dtype:
    # Counts stay exact in float32 up to 2**24 elements; never count in (b)float16.
    return torch.promote_types(dtype, torch.float32) if dtype.is_floating_point else torch.float32


def count_full(like: Tensor, value: int) -> Tensor:
    """``value`` as a 0-d count on ``like``'s device (a fill: no copy from the host, no sync)."""
    return torch.full((), value, dtype=_count_dtype(like.dtype), device=like.device)


def count_elements(loss_fn: nn.Module, input: Tensor, target: Tensor) -> Tensor:
    """``"mean"`` divides by the number of elements of the (broadcast) per-element loss.

    >>> count_elements(None, torch.zeros(3, 4), torch.zeros(3, 4))
    tensor(12.)
    """
    return count_full(input, torch.broadcast_shapes(input.shape, target.shape).numel())


def count_rows(loss_fn: nn.Module, input: Tensor, target: Tensor) -> Tensor:
    """``"mean"`` divides by the batch size ``input.size(0)`` (1 for a 0-d or unbatched input).

    >>> count_rows(None, torch.zeros(3, 4), torch.zeros(3))
    tensor(3.)
    """
    return count_full(input, input.shape[0] if input.dim() > 0 else 1)


@dataclass(frozen=True)
class Curve:
    """How ``losskit explain`` draws a loss: the loss and its gradient against one scalar ``t``.

    ``loss(t, **option)`` maps a 1-D float64 grid ``t`` to the loss at each point, shape ``t``'s,
    by calling the loss itself (one sample per grid point); the gradient is autograd's
    ``d loss / d t``. ``options`` are the settings overlaid, ``(label, option kwargs)`` each.
    """

    axis: str  # the x label, e.g. "residual x - y", "logit of the true class"
    loss: Callable[..., Tensor]
    options: tuple[tuple[str, dict], ...] = (("", {}),)
    span: tuple[float, float] = (-3.0, 3.0)


@dataclass(frozen=True)
class Explain:
    """What ``losskit explain`` prints and draws for one loss (see docs/design.md, "What a record
    needs for explain").

    ``example()`` returns ``(args, kwargs)``: a few float64 numbers the loss accepts.
    ``steps(*args, **kwargs)`` computes the loss on them by hand, as ``(label, value)`` pairs,
    the last being the loss under ``kwargs``'s reduction. ``gradient(*args, **kwargs)`` is the
    closed-form derivative of the ``reduction="sum"`` loss with respect to ``args[0]``, the same
    shape; the test suite checks it against autograd in float64.
    """

    formula: str  # plain text, per element / per sample
    latex: str
    derivative: str  # with respect to the first argument, plain text
    derivative_latex: str
    gradient: Callable[..., Tensor]
    example: Callable[[], tuple[tuple, dict]]
    steps: Callable[..., list[tuple[str, Tensor]]]
    curve: Curve
    convex: bool  # in the first argument
    bounded_gradient: bool
    robust: str  # to outliers / wrong labels: "yes: ...", "no: ...", "partly: ..."
    note: str = ""  # where the derivative is given at a coarser level, caveats


@dataclass(frozen=True)
class LossRecord:
    """What losskit knows about one loss. See the module docstring for each field."""

    function: Callable[..., Tensor | tuple[Tensor, Tensor]]  # (loss, lse) with return_lse
    module: type[nn.Module]
    family: str  # the file in losskit/losses/ that holds it
    input: str
    targets: tuple[str, ...]
    summary: str
    mean_count: MeanCount | None = None  # None: "mean" is not a plain mean of counted terms
    torch_function: Callable[..., Tensor | tuple[Tensor, Tensor]] | None = None
    torch_module: type[nn.Module] | None = None
    cli: str | None = None  # name for `losskit train --loss`, when a built-in task fits
    estimates: str | None = None  # what the minimiser is: "mean", "median", "probabilities", ...
    aliases: tuple[str, ...] = field(default=())  # other names users search for
    # Rows of the `losskit losses` table (losskit/catalog.py) this loss also belongs to, with the
    # constructor arguments to show there: (("regression with outliers", "delta=1.0"),).
    catalog: tuple[tuple[str, str], ...] = field(default=())
    explain: Explain | None = None

    def __post_init__(self) -> None:
        if self.input not in INPUT_KINDS:
            raise ValueError(f"{self.name}: input kind {self.input!r} not in {INPUT_KINDS}")
        unknown = [t for t in self.targets if t not in TARGET_KINDS]
        if unknown or not self.targets:
            raise ValueError(f"{self.name}: target kinds {unknown} not in {TARGET_KINDS}")

    @property
    def name(self) -> str:
        """The function's name in :mod:`losskit.functional`, e.g. ``"cross_entropy"``."""
        return self.function.__name__

    def target_kind(self, input: Tensor, target: Tensor) -> str:
        """Which of :attr:`targets` ``target`` is, for losses that accept several.

        A floating target of ``input``'s shape is ``"class-probabilities"`` or ``"binary"``
        when the loss takes one; an integer target is ``"class-indices"`` when it takes those.
        """
        if len(self.targets) == 1:
            return self.targets[0]
        if target.is_floating_point() and target.shape == input.shape:
            for kind in ("class-probabilities", "binary"):
                if kind in self.targets:
                    return kind
        if not target.is_floating_point() and "class-indices" in self.targets:
            return "class-indices"
        return self.targets[0]


_RECORDS: dict[str, LossRecord] = {}


def register(record: LossRecord) -> LossRecord:
    """Add ``record``; a second record for the same function or Module name is an error."""
    for other in _RECORDS.values():
        if other.module.__name__ == record.module.__name__:
            raise ValueError(f"{record.module.__name__} is registered twice")
    if record.name in _RECORDS:
        raise ValueError(f"{record.name} is registered twice")
    _RECORDS[record.name] = record
    return record


def describe(function: Callable[..., Any], explain: Explain) -> LossRecord:
    """Give the registered record of ``function`` its :class:`Explain` (a family file calls
    this after its ``register`` calls, so the records themselves stay short)."""
    import dataclasses

    record = dataclasses.replace(_RECORDS[function.__name__], explain=explain)
    _RECORDS[function.__name__] = record
    return record


def records() -> Iterator[LossRecord]:
    """Every registered loss, in registration order (family by family)."""
    _load()
    return iter(list(_RECORDS.values()))


def get(name: str) -> LossRecord:
    """The record of a loss by function name, Module name or CLI name.

    >>> get("MSELoss").name, get("huber").name
    ('mse_loss', 'huber_loss')
    """
    _load()
    for record in _RECORDS.values():
        if name in (record.name, record.module.__name__, record.cli, *record.aliases):
            return record
    raise KeyError(name)


def lookup(loss_fn: object) -> LossRecord | None:
    """The record for a loss Module or function, or None for a loss losskit does not know.

    A subclass of a registered Module (e.g. a recipe's ``SigmoidBCELoss``) or of its
    ``torch.nn`` twin resolves to that record: the nearest registered class in its MRO wins.

    >>> import torch.nn as nn
    >>> lookup(nn.MSELoss()).name, lookup(lambda x, y: x) is None
    ('mse_loss', True)
    """
    _load()
    if isinstance(loss_fn, nn.Module):
        for klass in type(loss_fn).__mro__:
            for record in _RECORDS.values():
                if klass is record.module or klass is record.torch_module:
                    return record
        return None
    for record in _RECORDS.values():
        if loss_fn is record.function or loss_fn is record.torch_function:
            return record
    return None


def _load() -> None:
    """Import every family so its records exist (the families import this module)."""
    import losskit.losses  # noqa: F401
