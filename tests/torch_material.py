"""PyTorch's own loss test material, replayed against losskit.

torch 2.13's wheel ships the inputs its own test suite feeds the 22 criteria of ``torch.nn``:

- ``common_modules.module_db``: one ``ModuleInfo`` per loss Module, with constructor and forward
  inputs (``module``) and inputs that must raise (``module-error``);
- ``common_methods_invocations.op_db``: one ``OpInfo`` per ``nn.functional`` loss, with sample
  inputs (``op``), the extra reference inputs some define (``op-ref``) and inputs that must raise
  (``op-error``);
- ``common_nn.criterion_tests``: the no-batch-dim cases (``common_nn``). Their constructors read
  the loop variable ``reduction`` late, so every one of them builds ``reduction="sum"``; this
  module rebuilds them with the reduction their name states.

Every case runs twice, once through torch (the oracle) and once through the twin under test
(``lk.<ClassName>`` or ``losskit.functional.<fn>``), on the same inputs in float64 (integer
targets stay integers). A value case compares the outputs and the gradients of every floating
input that requires grad (those torch can differentiate); an error case asks that the twin raises
an instance of torch's exception class. Where losskit departs from torch on purpose, the case is
classified by :data:`DEPARTURES` and the documented behaviour is checked instead.

``LOSSKIT_MATERIAL_TARGET=torch`` points the "twin" at ``torch.nn`` / ``torch.nn.functional``
themselves, which checks the harness: every case must then agree (error cases must also match
torch's message pattern), and no departure applies.

``python tests/torch_material.py --summary`` runs every case in one process and prints pass /
departure / fail counts per loss and source.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import os
import re
import sys
import traceback
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

LOSSES = {
    "MSELoss": "mse_loss",
    "L1Loss": "l1_loss",
    "HuberLoss": "huber_loss",
    "SmoothL1Loss": "smooth_l1_loss",
    "BCELoss": "binary_cross_entropy",
    "BCEWithLogitsLoss": "binary_cross_entropy_with_logits",
    "CrossEntropyLoss": "cross_entropy",
    "NLLLoss": "nll_loss",
    "KLDivLoss": "kl_div",
    "PoissonNLLLoss": "poisson_nll_loss",
    "GaussianNLLLoss": "gaussian_nll_loss",
    "HingeEmbeddingLoss": "hinge_embedding_loss",
    "SoftMarginLoss": "soft_margin_loss",
    "MultiLabelSoftMarginLoss": "multilabel_soft_margin_loss",
    "MultiLabelMarginLoss": "multilabel_margin_loss",
    "MultiMarginLoss": "multi_margin_loss",
    "CosineEmbeddingLoss": "cosine_embedding_loss",
    "MarginRankingLoss": "margin_ranking_loss",
    "TripletMarginLoss": "triplet_margin_loss",
    "TripletMarginWithDistanceLoss": "triplet_margin_with_distance_loss",
    "CTCLoss": "ctc_loss",
    "LinearCrossEntropyLoss": "linear_cross_entropy",
}
CLASS_OF = {fn: cls for cls, fn in LOSSES.items()}
SOURCES = ("module", "module-error", "op", "op-ref", "op-error", "common_nn")
TARGET_ENV = "LOSSKIT_MATERIAL_TARGET"


def target() -> str:
    """``"losskit"`` (default) or ``"torch"`` (the harness check), from the environment."""
    value = os.environ.get(TARGET_ENV, "losskit")
    if value not in ("losskit", "torch"):
        raise ValueError(
            f"{TARGET_ENV}={value!r} is not a target; expected 'losskit' or 'torch'. "
            f"Fix: unset it, or set it to 'torch' to check the harness against torch itself."
        )
    return value


# ---------------------------------------------------------------------------------------------
# Cases


@dataclass(frozen=True)
class Case:
    """One call of one loss, taken from torch's material.

    ``args``/``kwargs`` are the call's (the forward's, for a Module); ``ctor`` holds a Module's
    constructor ``(args, kwargs)`` and is ``None`` for a functional call. An error case carries
    torch's exception class and message pattern, and ``on_construct`` when the constructor
    itself must raise.
    """

    id: str
    loss: str
    source: str
    args: tuple
    kwargs: dict
    ctor: tuple[tuple, dict] | None = None
    error: type[BaseException] | None = None
    error_regex: str = ""
    on_construct: bool = False

    @property
    def is_module(self) -> bool:
        return self.ctor is not None


@dataclass
class Collected:
    cases: list[Case] = field(default_factory=list)
    excluded: Counter = field(default_factory=Counter)  # (loss, source, reason) -> count


def _tensors(obj: Any) -> Iterator[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            yield from _tensors(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _tensors(item)


def _off_cpu(*objs: Any) -> bool:
    return any(t.device.type != "cpu" for obj in objs for t in _tensors(obj))


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text).strip("_")[:60]


def _case_id(source: str, loss: str, index: int, desc: str) -> str:
    tail = f"-{_slug(desc)}" if desc else ""
    return f"{source}-{loss}-{index:03d}{tail}"


def _add(out: Collected, case: Case) -> None:
    if _off_cpu(case.args, case.kwargs, case.ctor):
        out.excluded[(case.loss, case.source, "needs a non-CPU device")] += 1
    else:
        out.cases.append(case)


def _module_cases(out: Collected) -> None:
    from torch.testing._internal.common_modules import ModuleErrorEnum, module_db

    for info in module_db:
        loss = info.module_cls.__name__
        if loss not in LOSSES:
            continue
        torch.manual_seed(0)
        inputs = info.module_inputs_func(
            info, device="cpu", dtype=torch.float64, requires_grad=True, training=True
        )
        for i, mi in enumerate(inputs):
            ctor = (tuple(mi.constructor_input.args), dict(mi.constructor_input.kwargs))
            fwd = mi.forward_input
            _add(out, Case(_case_id("module", loss, i, mi.desc), loss, "module",
                           tuple(fwd.args), dict(fwd.kwargs), ctor))
        if info.module_error_inputs_func is None:
            continue
        torch.manual_seed(0)
        errors = info.module_error_inputs_func(
            info, device="cpu", dtype=torch.float64, requires_grad=False, training=True
        )
        for i, ei in enumerate(errors):
            mi = ei.module_error_input
            ctor = (tuple(mi.constructor_input.args), dict(mi.constructor_input.kwargs))
            fwd_args, fwd_kwargs = (), {}
            if mi.forward_input is not None:  # None when the constructor must raise
                fwd_args, fwd_kwargs = tuple(mi.forward_input.args), dict(mi.forward_input.kwargs)
            _add(out, Case(
                _case_id("module-error", loss, i, mi.desc or ei.error_regex), loss,
                "module-error", fwd_args, fwd_kwargs, ctor, error=ei.error_type,
                error_regex=ei.error_regex,
                on_construct=ei.error_on == ModuleErrorEnum.CONSTRUCTION_ERROR,
            ))


def _op_name(info: Any) -> str | None:
    if not info.name.startswith("nn.functional."):
        return None
    fn = info.name.removeprefix("nn.functional.")
    return fn if fn in CLASS_OF else None


def _op_cases(out: Collected) -> None:
    from torch.testing._internal.common_methods_invocations import op_db

    for info in op_db:
        fn = _op_name(info)
        if fn is None:
            continue
        loss = CLASS_OF[fn]
        variant = f"{fn}.{info.variant_test_name}" if info.variant_test_name else fn
        # The raw *_inputs_func: OpInfo's wrappers crawl the stack (inspect.stack) on every
        # sample, which reads source files and takes seconds under pytest.
        torch.manual_seed(0)
        samples = list(info.sample_inputs_func(info, "cpu", torch.float64, True))
        refs = []
        if info.reference_inputs_func is not None:
            # reference_inputs yields the sample inputs first, then the extra ones
            torch.manual_seed(0)
            refs = list(info.reference_inputs_func(info, "cpu", torch.float64, True))
            refs = refs[len(samples):]
        for i, si in enumerate(samples + refs):
            source = "op" if i < len(samples) else "op-ref"
            _add(out, Case(_case_id(source, variant, i, si.name), loss, source,
                           (si.input, *si.args), dict(si.kwargs)))
        if info.error_inputs_func is None:
            continue
        torch.manual_seed(0)
        for i, ei in enumerate(info.error_inputs_func(info, "cpu")):
            si = ei.sample_input
            _add(out, Case(
                _case_id("op-error", variant, i, ei.error_regex), loss, "op-error",
                (si.input, *si.args), dict(si.kwargs), error=ei.error_type,
                error_regex=ei.error_regex,
            ))


def _common_nn_cases(out: Collected) -> None:
    from torch.testing._internal.common_nn import criterion_tests

    for i, info in enumerate(criterion_tests):
        name = info["fullname"]
        loss, _, reduction = name.partition("_no_batch_dim_")
        if loss not in LOSSES:
            continue
        torch.manual_seed(i)
        # The constructor closure would give reduction="sum" whatever the name says: rebuild it.
        if "input_fn" in info:
            inp = info["input_fn"]()
        else:
            inp = torch.randn(info["input_size"], dtype=torch.float64)
        if "target_fn" in info:
            tgt = info["target_fn"]()
        else:
            tgt = torch.randn(info["target_size"], dtype=torch.float64)
        inputs = tuple(inp) if isinstance(inp, (tuple, list)) else (inp,)
        inputs = tuple(x.requires_grad_() if x.is_floating_point() else x for x in inputs)
        _add(out, Case(_case_id("common_nn", loss, i, name), loss, "common_nn",
                       (*inputs, tgt), {}, ((), {"reduction": reduction})))


@cache
def collect() -> Collected:
    """Every case of the three sources, in a fixed order with fixed seeds (same ids in every
    pytest-xdist worker)."""
    out = Collected()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _module_cases(out)
        _op_cases(out)
        _common_nn_cases(out)
    return out


# ---------------------------------------------------------------------------------------------
# Running one side


class Missing(Exception):
    """The twin under test has no such loss."""


def _twin(case: Case) -> Callable:
    """The callable under test: a Module class or a function, from losskit or (harness check)
    from torch."""
    if target() == "torch":
        return getattr(nn, case.loss) if case.is_module else getattr(F, LOSSES[case.loss])
    import losskit
    import losskit.functional as LF

    name = case.loss if case.is_module else LOSSES[case.loss]
    where = losskit if case.is_module else LF
    if not hasattr(where, name):
        shown = case.loss if case.is_module else f"functional.{name}"
        raise Missing(f"losskit has no {shown}")
    return getattr(where, name)


def _oracle(case: Case) -> Callable:
    return getattr(nn, case.loss) if case.is_module else getattr(F, LOSSES[case.loss])


def _copy(obj: Any, cast: bool) -> Any:
    """Fresh leaves: floating tensors in float64 (when ``cast``) keeping ``requires_grad``."""
    if isinstance(obj, torch.Tensor):
        x = obj.detach()
        if cast and x.is_floating_point():
            x = x.to(torch.float64)
        return x.clone().requires_grad_(obj.requires_grad)
    if isinstance(obj, tuple):
        return tuple(_copy(o, cast) for o in obj)
    if isinstance(obj, list):
        return [_copy(o, cast) for o in obj]
    if isinstance(obj, dict):
        return {k: _copy(v, cast) for k, v in obj.items()}
    return obj


@dataclass
class Outcome:
    value: list[torch.Tensor] | None = None
    error: BaseException | None = None
    leaves: list[torch.Tensor] = field(default_factory=list)
    warned: list[warnings.WarningMessage] = field(default_factory=list)


def _build(fn: Callable, case: Case, cast: bool) -> Callable:
    """The callable for one side: the function itself, or a Module built from the case."""
    if not case.is_module:
        return fn
    args, kwargs = _copy(case.ctor, cast)
    if case.loss == "LinearCrossEntropyLoss":
        torch.manual_seed(1234)  # the same initial weight on both sides, then copied exactly
        module = fn(*args, **kwargs)
        torch.manual_seed(1234)
        reference = nn.LinearCrossEntropyLoss(*args, **kwargs)
        module.load_state_dict(reference.state_dict())
    else:
        module = fn(*args, **kwargs)
    return module.double() if cast else module


def run_side(fn: Callable, case: Case, cast: bool = True) -> Outcome:
    """Call one side on fresh copies of the case's inputs, recording warnings and errors."""
    out = Outcome()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            call = _build(fn, case, cast)
            if case.on_construct:
                return out
            args, kwargs = _copy(case.args, cast), _copy(case.kwargs, cast)
            out.leaves = [t for t in _tensors((args, kwargs)) if t.requires_grad]
            result = call(*args, **kwargs)
            out.value = list(_tensors(result))
        except Exception as exc:
            out.error = exc
        finally:
            out.warned = list(caught)
    return out


def _grad_outputs(values: list[torch.Tensor]) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    return [torch.randn(v.shape, generator=g, dtype=v.dtype) for v in values]


def gradients(out: Outcome, which: list[int], grad_out: list[torch.Tensor]) -> list[Any]:
    """Gradients of the outputs w.r.t. the leaves ``which``; per leaf, a tensor, ``None`` (not
    reached) or the exception autograd raised."""
    outs = [v for v in out.value if v.requires_grad]
    gos = [g for v, g in zip(out.value, grad_out, strict=True) if v.requires_grad]
    leaves = [out.leaves[i] for i in which]
    if not outs or not leaves:
        return [None] * len(which)
    with warnings.catch_warnings():  # backward's own warnings are not part of the contract
        warnings.simplefilter("ignore")
        return _grads(outs, leaves, gos)


def _grads(outs: list[torch.Tensor], leaves: list[torch.Tensor], gos: list[torch.Tensor]) -> list:
    try:
        return list(torch.autograd.grad(outs, leaves, gos, retain_graph=True, allow_unused=True))
    except Exception:  # one leaf autograd cannot do (e.g. a target): ask leaf by leaf
        grads: list[Any] = []
        for leaf in leaves:
            try:
                grads.append(torch.autograd.grad(outs, [leaf], gos, retain_graph=True,
                                                 allow_unused=True)[0])
            except Exception as exc:
                grads.append(exc)
        return grads


# ---------------------------------------------------------------------------------------------
# Departures: documented places where losskit answers differently from torch


def _signature(case: Case) -> inspect.Signature:
    fn = _oracle(case)
    return inspect.signature(fn.forward if case.is_module else fn)


def bound(case: Case) -> dict[str, Any]:
    """The call's arguments by torch's parameter names, constructor arguments included."""
    names: dict[str, Any] = {}
    if case.is_module:
        ctor = inspect.signature(_oracle(case).__init__).bind(None, *case.ctor[0], **case.ctor[1])
        names.update({k: v for k, v in ctor.arguments.items() if k != "self"})
        fwd = _signature(case).bind(None, *case.args, **case.kwargs)
        names.update({k: v for k, v in fwd.arguments.items() if k != "self"})
    else:
        names.update(_signature(case).bind(*case.args, **case.kwargs).arguments)
    for key in ("kwargs",):  # a **kwargs catch-all, if any
        names.update(names.pop(key, {}) or {})
    return names


def reduction_of(args: dict[str, Any]) -> str:
    """The reduction the call resolves to, legacy ``size_average``/``reduce`` included."""
    size_average, reduce = args.get("size_average"), args.get("reduce")
    if size_average is not None or reduce is not None:
        if reduce is False:
            return "none"
        return "sum" if size_average is False else "mean"
    return args.get("reduction", "mean")


REGRESSION = ("MSELoss", "L1Loss", "HuberLoss", "SmoothL1Loss")
SAME_SHAPE = (*REGRESSION, "PoissonNLLLoss", "GaussianNLLLoss", "HingeEmbeddingLoss",
              "SoftMarginLoss", "MultiLabelSoftMarginLoss")  # input and target shapes equal
ON_LOGITS = ("BCEWithLogitsLoss", "MultiLabelSoftMarginLoss")  # targets in [0, 1], no sigmoid
CLASS_INDEX = ("CrossEntropyLoss", "NLLLoss")


SIGN_TARGET = ("HingeEmbeddingLoss", "MarginRankingLoss", "CosineEmbeddingLoss", "SoftMarginLoss")
PAIRWISE = ("MarginRankingLoss",)  # input1, input2 and target of one shape


def _pair_shapes_differ(args: dict[str, Any]) -> bool:
    shapes = {tuple(t.shape) for t in _tensors([args.get("input1"), args.get("input2"),
                                                 args.get("target")])}
    return len(shapes) > 1


def _first_two(args: dict[str, Any]) -> tuple[Any, Any]:
    return args.get("input"), args.get("target")


def _allowed_neg_inf(loss: str, args: dict[str, Any]) -> set[str]:
    """Tensors in which losskit lets ``-inf`` through: masked logits, log-probabilities."""
    if loss in ("CrossEntropyLoss", "NLLLoss", "LinearCrossEntropyLoss"):
        return {"input"}
    if loss == "KLDivLoss":
        return {"input", "target"} if args.get("log_target") else {"input"}
    return set()


def _non_finite(case: Case, args: dict[str, Any]) -> str | None:
    allowed = _allowed_neg_inf(case.loss, args)
    for name, value in args.items():
        for t in _tensors(value):
            if not (t.is_floating_point() and t.numel()):
                continue
            x = t.detach()
            bad = x.isnan() | x.isposinf() | (x.isneginf() if name not in allowed else False)
            if bool(bad.any()):
                return name
    return None


def _counted(case: Case, args: dict[str, Any]) -> int:
    """How many elements a ``"mean"`` divides by, in the unweighted sense (0 = mean over
    nothing)."""
    inp, tgt = _first_two(args)
    if case.loss in CLASS_INDEX and isinstance(tgt, torch.Tensor) and not tgt.is_floating_point():
        ignore = args.get("ignore_index", -100)
        return int((tgt != ignore).sum())
    return min(t.numel() for t in _tensors([inp, tgt])) if inp is not None else 1


@dataclass(frozen=True)
class Departure:
    """What losskit does instead of torch's answer: raise ``raises``, or warn ``warns`` (a
    message pattern) and return ``value`` ("torch": torch's value and gradients; "zero": 0 with
    zero gradients)."""

    name: str
    doc: str
    raises: type[BaseException] | None = None
    warns: str = ""
    value: str = "torch"


def _departure(case: Case, torch_out: Outcome) -> Departure | None:
    """The documented departure that applies to a case torch accepted, or ``None``."""
    from losskit.checks import LossInputError, LossRuntimeError

    args = bound(case)
    inp, tgt = _first_two(args)
    if (case.loss in SAME_SHAPE and isinstance(inp, torch.Tensor)
            and isinstance(tgt, torch.Tensor) and inp.shape != tgt.shape):
        return Departure("broadcast", "shapes that would broadcast raise (docs/mistakes.md)",
                         raises=LossInputError)
    if (bad := _non_finite(case, args)) is not None:
        return Departure(f"non-finite {bad}", "NaN or Inf inputs raise (docs/mistakes.md)",
                         raises=LossRuntimeError)
    if case.loss in SIGN_TARGET and isinstance(tgt, torch.Tensor) and tgt.numel() and bool(
            ((tgt != 1) & (tgt != -1)).any()):
        return Departure("sign target", "targets other than -1 / 1 raise (docs/mistakes.md)",
                         raises=LossInputError)
    if case.loss in PAIRWISE and _pair_shapes_differ(args):
        return Departure("broadcast", "shapes that would broadcast raise (docs/mistakes.md)",
                         raises=LossInputError)
    if case.loss in ON_LOGITS and bool(((tgt < 0) | (tgt > 1)).any()):
        return Departure("bce-logits target range", "BCE targets outside [0, 1] raise "
                         "(docs/mistakes.md)", raises=LossRuntimeError)
    if (case.loss == "PoissonNLLLoss" and args.get("log_input") is False
            and bool((inp.detach() < 0).any())):
        return Departure("negative rates", "rates given with log_input=False must be >= 0 "
                         "(docs/mistakes.md)", raises=LossInputError)
    if (margin := _margin_label_departure(case, tgt)) is not None:
        return margin
    if reduction_of(args) == "mean" and _counted(case, args) == 0:
        return Departure("mean over nothing", "0 with zero gradient and a LossWarning where "
                         "torch gives NaN (docs/mistakes.md)", warns="mean is over nothing",
                         value="zero")
    return _warning_departure(case, args, inp, tgt)


def _margin_label_departure(case: Case, tgt: Any) -> Departure | None:
    """Multi-hot rows given to multi-label margin, which takes label lists padded with -1
    (losskit/checks/margin.py). Soft margin's -1 / 1 labels are SIGN_TARGET's."""
    from losskit.checks import LossInputError

    if not isinstance(tgt, torch.Tensor) or not tgt.numel():
        return None
    zero_one = bool(((tgt == 0) | (tgt == 1)).all())
    if case.loss == "MultiLabelMarginLoss" and zero_one and tgt.dim() and tgt.shape[-1] >= 3:
        return Departure("multi-hot label lists", "multi-hot targets for MultiLabelMarginLoss "
                         "raise (docs/mistakes.md)", raises=LossInputError)
    return None


def _warning_departure(case: Case, args: dict[str, Any], inp: Any, tgt: Any) -> Departure | None:
    """The mistakes losskit only warns about: torch's value stands, with a LossWarning."""
    if case.loss == "NLLLoss" and inp.dim() >= 1:
        class_dim = 0 if inp.dim() == 1 else 1
        if inp.numel() and inp.shape[class_dim] >= 2:
            lse = torch.logsumexp(inp.detach(), dim=class_dim)
            if bool(((lse.abs() > 1e-3) & lse.isfinite()).any()):
                return Departure("nll logits", "NLLLoss input that is not log-probabilities "
                                 "warns (docs/mistakes.md)", warns="does not look like log-prob")
    if case.loss == "LinearCrossEntropyLoss" and tgt.is_floating_point() and tgt.numel():
        class_dim = 0 if tgt.dim() == 1 else 1  # the logits' class dim (the target's shape)
        sums = tgt.detach().sum(class_dim)
        if bool((tgt < 0).any()) or bool(((sums - 1).abs() > 1e-4).any()):
            return Departure("soft target not a distribution", "probability targets that "
                             "are not distributions warn (docs/mistakes.md)",
                             warns="read as class probabilities")
    if case.loss == "CrossEntropyLoss" and inp.dim() >= 1:
        class_dim = 0 if inp.dim() == 1 else 1
        if tgt.is_floating_point() and tgt.shape == inp.shape and tgt.numel():
            sums = tgt.detach().sum(class_dim)
            if bool((tgt < 0).any()) or bool(((sums - 1).abs() > 1e-4).any()):
                return Departure("soft target not a distribution", "probability targets that "
                                 "are not distributions warn (docs/mistakes.md)",
                                 warns="read as class probabilities")
        x = inp.detach()
        if (inp.shape[class_dim] >= 2 and inp.numel() >= 16 and bool(((x >= 0) & (x <= 1)).all())
                and bool(((x.sum(class_dim) - 1).abs() <= 1e-4).all())):
            return Departure("softmax before CE", "probabilities given to cross-entropy warn "
                             "(docs/mistakes.md)", warns="looks like probabilities")
    if case.loss == "PoissonNLLLoss" and bool((tgt.detach() < 0).any()):
        return Departure("negative counts", "negative Poisson targets warn (docs/mistakes.md)",
                         warns="negative count")
    var = args.get("var")
    zero_var = (bool((var.detach() == 0).any()) if isinstance(var, torch.Tensor)
                else isinstance(var, float) and var == 0.0)
    if case.loss == "GaussianNLLLoss" and zero_var:
        return Departure("zero variance", "a variance of 0 warns (docs/mistakes.md)",
                         warns="clamps a zero variance")
    if case.loss in ON_LOGITS and inp.numel() >= 16:
        lo, hi = inp.detach().min(), inp.detach().max()
        if bool((lo >= 0) & (hi <= 1) & (lo < 0.5) & (hi > 0.5)):
            return Departure("sigmoid before BCE-with-logits", "sigmoid output given to "
                             "BCEWithLogitsLoss warns (docs/mistakes.md)",
                             warns="looks like sigmoid output")
    return None


# ---------------------------------------------------------------------------------------------
# Verdicts


class Mismatch(AssertionError):
    """The twin disagrees with torch (or with the documented departure)."""


@dataclass(frozen=True)
class Verdict:
    status: str  # "pass" | "departure"
    detail: str = ""


def _loss_warnings(out: Outcome) -> list[str]:
    from losskit.checks import LossWarning

    return [str(w.message) for w in out.warned if issubclass(w.category, LossWarning)]


def _check_error_case(case: Case) -> Verdict:
    oracle = run_side(_oracle(case), case, cast=False)
    if not isinstance(oracle.error, case.error):
        raise Mismatch(f"torch itself does not raise {case.error.__name__} here (got "
                       f"{oracle.error!r}); the material is stale for this torch version")
    twin = run_side(_twin(case), case, cast=False)
    if isinstance(twin.error, Missing):
        raise twin.error
    if not isinstance(twin.error, case.error):
        raise Mismatch(f"expected an instance of {case.error.__name__} (torch: "
                       f"{oracle.error!r}); got {twin.error!r}")
    if target() == "torch" and not re.search(case.error_regex, str(twin.error)):
        raise Mismatch(f"torch's message {str(twin.error)!r} does not match the case's "
                       f"pattern {case.error_regex!r}")
    return Verdict("pass")


def _close(actual: Any, expected: Any, what: str) -> None:
    try:
        torch.testing.assert_close(actual, expected, equal_nan=True)
    except AssertionError as exc:
        raise Mismatch(f"{what}: {exc}") from None


def _compare_values(twin: Outcome, oracle: Outcome, zero: bool = False) -> None:
    if len(twin.value) != len(oracle.value):
        raise Mismatch(f"{len(twin.value)} output tensors, torch gives {len(oracle.value)}")
    for a, b in zip(twin.value, oracle.value, strict=True):
        _close(a.detach(), torch.zeros_like(b) if zero else b.detach(), "value")


def _compare_grads(twin: Outcome, oracle: Outcome, zero: bool = False) -> None:
    grad_out = _grad_outputs(oracle.value)
    which = list(range(len(oracle.leaves)))
    expected = gradients(oracle, which, grad_out)
    usable = [i for i, g in zip(which, expected, strict=True) if not isinstance(g, Exception)]
    if not usable:
        return
    if not any(v.requires_grad for v in twin.value) and any(
        isinstance(expected[i], torch.Tensor) for i in usable
    ):
        raise Mismatch("the output does not require grad, torch's does")
    got = gradients(twin, usable, grad_out)
    for i, g in zip(usable, got, strict=True):
        want = expected[i]
        if isinstance(g, Exception):
            raise Mismatch(f"gradient of argument {i} raised {g!r}; torch gives one")
        if want is None:
            want = torch.zeros_like(oracle.leaves[i])
        if g is None:
            g = torch.zeros_like(twin.leaves[i])
        _close(g, torch.zeros_like(want) if zero else want, f"gradient of argument {i}")


def _check_departure(case: Case, dep: Departure, twin: Outcome, oracle: Outcome) -> Verdict:
    detail = f"{dep.name}: {dep.doc}"
    if dep.raises is not None:
        if not isinstance(twin.error, dep.raises):
            raise Mismatch(f"departure '{dep.name}' expects {dep.raises.__name__}; got "
                           f"{twin.error!r} (value {twin.value})")
        return Verdict("departure", detail)
    if twin.error is not None:
        raise Mismatch(f"departure '{dep.name}' expects a value; got {twin.error!r}")
    if not any(dep.warns in w for w in _loss_warnings(twin)):
        raise Mismatch(f"departure '{dep.name}' expects a LossWarning matching {dep.warns!r}; "
                       f"got {_loss_warnings(twin)}")
    _compare_values(twin, oracle, zero=dep.value == "zero")
    _compare_grads(twin, oracle, zero=dep.value == "zero")
    return Verdict("departure", detail)


def check_case(case: Case) -> Verdict:
    """Run one case on both sides and judge it; raises :class:`Missing` or :class:`Mismatch`."""
    if case.error is not None:
        return _check_error_case(case)
    oracle = run_side(_oracle(case), case)
    twin = run_side(_twin(case), case)
    if isinstance(twin.error, Missing):
        raise twin.error
    if oracle.error is not None:
        if not isinstance(twin.error, type(oracle.error)):
            raise Mismatch(f"torch raises {oracle.error!r}; expected an instance of "
                           f"{type(oracle.error).__name__}, got {twin.error!r}")
        return Verdict("pass")
    dep = None if target() == "torch" else _departure(case, oracle)
    if dep is not None:
        return _check_departure(case, dep, twin, oracle)
    if twin.error is not None:
        tb = "".join(traceback.format_exception_only(twin.error)).strip()
        raise Mismatch(f"raised where torch gives a value: {tb}")
    if target() == "losskit" and (warned := _loss_warnings(twin)):
        raise Mismatch(f"LossWarning where torch gives a value and no departure applies: "
                       f"{warned[0]}")
    _compare_values(twin, oracle)
    _compare_grads(twin, oracle)
    return Verdict("pass")


@contextlib.contextmanager
def value_checks_always() -> Iterator[None]:
    """Value checks on every call, so the verdict does not depend on the call count."""
    if target() == "torch":
        yield
        return
    import losskit as lk

    with lk.checks("always"):
        yield


# ---------------------------------------------------------------------------------------------
# Summary


def summarise(collected: Collected) -> tuple[str, int]:
    """Run every case and format pass / departure / fail counts per loss and source."""
    rows: dict[str, Counter] = {loss: Counter() for loss in LOSSES}
    reasons: Counter = Counter()
    for case in collected.cases:
        with value_checks_always():
            try:
                verdict = check_case(case)
                status = verdict.status
                if status == "departure":
                    reasons[(case.loss, "departure: " + verdict.detail.split(":")[0])] += 1
            except Missing:
                status = "fail"
                reasons[(case.loss, "missing")] += 1
            except Exception as exc:
                status = "fail"
                reasons[(case.loss, _reason(exc))] += 1
        rows[case.loss][status] += 1
        rows[case.loss][case.source] += 1
    return _format(rows, collected, reasons), sum(r["fail"] for r in rows.values())


def _reason(exc: BaseException) -> str:
    text = str(exc).split("\n")[0]
    return re.sub(r"\d+(\.\d+)?", "#", text)[:110]


def _format(rows: dict[str, Counter], collected: Collected, reasons: Counter) -> str:
    head = f"{'loss':30} {'cases':>5} {'pass':>5} {'dep':>5} {'fail':>5}  " + " ".join(
        f"{s:>12}" for s in SOURCES
    )
    lines = [f"target: {target()}", head]
    total: Counter = Counter()
    for loss, c in rows.items():
        n = c["pass"] + c["departure"] + c["fail"]
        total.update(c)
        lines.append(f"{loss:30} {n:5d} {c['pass']:5d} {c['departure']:5d} {c['fail']:5d}  "
                     + " ".join(f"{c[s]:12d}" for s in SOURCES))
    n = total["pass"] + total["departure"] + total["fail"]
    lines.append(f"{'total':30} {n:5d} {total['pass']:5d} {total['departure']:5d} "
                 f"{total['fail']:5d}  " + " ".join(f"{total[s]:12d}" for s in SOURCES))
    excluded = sum(collected.excluded.values())
    lines.append(f"excluded at collection: {excluded}")
    for (loss, source, why), k in sorted(collected.excluded.items()):
        lines.append(f"  {loss} {source}: {k} ({why})")
    if reasons:
        lines.append("departure and failure classes:")
        for (loss, why), k in sorted(reasons.items()):
            lines.append(f"  {loss:28} {k:4d}  {why}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--summary", action="store_true", help="run every case, print counts")
    opts = parser.parse_args(argv)
    collected = collect()
    if not opts.summary:
        print(f"{len(collected.cases)} cases; pass --summary to run them")
        return 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        text, fails = summarise(collected)
    print(text)
    return 1 if fails else 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.exit(main())

