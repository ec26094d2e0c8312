"""Validate a training setup in seconds, before a long run shows it does not learn.

``doctor(model, loss_fn, batch)`` runs one batch through a copy of the model and checks, in order:

============================  ====================================================================
check                         what it looks at (status when it goes wrong)
============================  ====================================================================
``forward``                   ``model(inputs)`` runs and returns a floating tensor (fail)
``loss checks``               the loss on that output under ``lk.checks("always")``: a
                              :class:`~losskit.LossInputError` or a non-finite / non-scalar /
                              graph-less loss fails, a :class:`~losskit.LossWarning` warns
``output activation``         the model's last layer and its outputs against what the loss wants:
                              probabilities (Softmax) or a Sigmoid before a loss that wants logits,
                              logits before NLLLoss, a bounded head that cannot reach the
                              regression targets (fail); a final ReLU before logits (warn)
``loss at init``              the first loss against the value an uninformed prediction gets (warn)
``gradients``                 every trainable parameter gets a finite gradient; the culprits
                              are named (fail); no trainable parameter at all (fail); an
                              all-zero gradient warns, and passes once the overfit check sees
                              the parameter move (zero-initialised LoRA ``B``, ReZero gains)
``overfit one batch``         Adam on a few samples brings the loss 90% of the way to its floor
                              within ``overfit_steps`` steps (fail); it gets there only because
                              samples with identical inputs have different targets (warn)
``class balance``             class counts in the batch, with suggested ``weight`` /
                              ``pos_weight`` (warn)
============================  ====================================================================

A check that raises (say a BatchNorm layer given one row) reports the error as its own ``fail``
(``warn`` for the warning-only checks) and the doctor goes on: a report, never a traceback.
The Sigmoid check trusts the last layer's type as well as its values, which a handful of
outputs cannot tell apart from raw scores.

Expected loss at initialisation: the loss of the *uninformed* prediction, computed by calling the
loss itself on a reference input (so class weights, ``pos_weight``, ``ignore_index`` and label
smoothing are all accounted for). For ``C`` classes:

* cross-entropy, focal and Dice (logits): zero logits, the uniform prediction
  -- cross-entropy gives :math:`\\ln C` (also with class weights, or with label smoothing;
  with both, torch's weighted smoothing term gives
  :math:`\\ln C \\,(1 - \\varepsilon + \\varepsilon\\, \\bar w / \\bar w_y)`, :math:`\\bar w`
  the mean class weight and :math:`\\bar w_y` the mean weight of the targets);
  focal gives :math:`(1 - 1/C)^{\\gamma} \\ln C`;
* BCE with logits: zero logits, :math:`\\ln 2` per element
  (times :math:`w \\,(1 + (p_c - 1) y)` with ``weight`` :math:`w` and ``pos_weight`` :math:`p_c`);
* BCE on probabilities: :math:`p = 0.5`, again :math:`\\ln 2` per element;
* NLL: uniform log-probabilities :math:`-\\ln C`, giving :math:`\\ln C`;
  KL divergence: the same input, giving :math:`\\mathrm{KL}(y \\,\\|\\, \\mathrm{uniform}) =
  \\ln C + \\sum_c y_c \\ln y_c`;
* MSE: the target mean, giving :math:`\\mathrm{Var}(y)`;
* L1: the target median, giving :math:`\\operatorname{mean}_i |y_i - \\operatorname{median}(y)|`;
  Huber and smooth L1: the target median as well (the minimiser lies between mean and median).

A well-initialised model lands near this value; more than 1.5 times it means over-confident
initial outputs (classification) or targets that are not centred and scaled (regression).

The overfit check's *floor* is the loss at the ideal prediction (0 for hard targets; the target
entropy for soft targets or label smoothing), so "falls by 90%" means 90% of the way from the
initial loss to that floor. Samples whose inputs are identical but whose targets differ (noisy
or duplicated labels) cannot all be fitted by any model: the floor is then the loss of the best
prediction shared by each group of duplicates (the frequency of each class among them, their
mean target for BCE and MSE, their median for L1 and Huber), and a model reaching that floor
gets a warning naming the rows, not a failure: a failure means the setup itself is broken.

The caller's model, its gradients, its train/eval mode, its ``requires_grad`` flags and the global
random state are left exactly as they were: the checks run on a deep copy under a forked RNG. On
CPU the doctor runs with one intra-op thread (restored afterwards): its tensors are tiny.
Losses are recognised by class (``torch.nn`` and losskit Modules and their subclasses) or by
function name (``torch.nn.functional`` / ``losskit.functional``); a wrapper the doctor does not
recognise still gets the forward, loss, gradient and overfit checks.

Example:
    >>> import torch, losskit as lk
    >>> _ = torch.manual_seed(0)
    >>> model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 3))
    >>> x, y = torch.randn(64, 8), torch.randint(0, 3, (64,))
    >>> report = lk.doctor(model, lk.CrossEntropyLoss(), (x, y))
    >>> report.ok, [c.status for c in report.checks]
    (True, ['pass', 'pass', 'pass', 'pass', 'pass', 'pass', 'pass'])
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import math
import textwrap
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from losskit import registry
from losskit.checks import LossInputError, LossWarning, checks

STATUSES = ("pass", "warn", "fail")
INIT_TOLERANCE = 1.5  # warn when the first loss exceeds 1.5x the uninformed prediction's loss
IMBALANCE_RATIO = 3.0  # most / least frequent class before suggesting weights
OVERFIT_SHARE_LEFT = 0.1  # overfit goal: 90% of the way from the first loss to the floor
OVERFIT_TARGETS = 32  # target values the overfit check fits at most: 16 rows, or 1 sequence
MIN_BATCHNORM_ROWS = 2  # BatchNorm raises in train mode on a single row
MAX_BALANCE_CLASSES = 100  # above this the classes are a vocabulary: weighting is rarely wanted


# ----------------------------------------------------------------------------------------------
# Report


@dataclass(frozen=True)
class CheckResult:
    """One check's outcome: ``status`` is ``"pass"``, ``"warn"`` or ``"fail"``; ``message`` says
    what was seen and, unless it passed, the fix."""

    name: str
    status: str
    message: str

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"CheckResult status={self.status!r}: use one of {STATUSES}.")


@dataclass
class Report:
    """The doctor's findings, one :class:`CheckResult` per check, in the order they ran.

    ``report.ok`` is True when nothing failed; ``report["gradients"]`` looks a check up by name;
    ``print(report)`` shows a plain table and ``report.print()`` a coloured one (rich).

    >>> report = Report([
    ...     CheckResult("gradients", "pass", "all 4 trainable parameters got gradients."),
    ...     CheckResult("class balance", "warn", "counts [90, 10]. Fix: pass `weight`."),
    ... ])
    >>> report.ok, [c.name for c in report.warnings], report["gradients"].status
    (True, ['class balance'], 'pass')
    >>> print(report)
    losskit doctor: OK - 1 passed, 1 warned, 0 failed (0.00 s)
    check          status  message
    gradients      pass    all 4 trainable parameters got gradients.
    class balance  warn    counts [90, 10]. Fix: pass `weight`.
    """

    checks: list[CheckResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(c.status != "fail" for c in self.checks)

    @property
    def failures(self) -> list[CheckResult]:
        return [c for c in self.checks if c.status == "fail"]

    @property
    def warnings(self) -> list[CheckResult]:
        return [c for c in self.checks if c.status == "warn"]

    def __getitem__(self, name: str) -> CheckResult:
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(f"no check named {name!r}; the report has {[c.name for c in self.checks]}")

    def summary(self) -> str:
        n = {s: sum(c.status == s for c in self.checks) for s in STATUSES}
        verdict = "OK" if self.ok else "FAILED"
        return (
            f"losskit doctor: {verdict} - {n['pass']} passed, {n['warn']} warned, "
            f"{n['fail']} failed ({self.seconds:.2f} s)"
        )

    def __str__(self) -> str:
        width = max([len(c.name) for c in self.checks] + [5])
        lines = [self.summary(), f"{'check':<{width}}  status  message"]
        for c in self.checks:
            wrapped = textwrap.wrap(c.message, 100 - width - 10) or [""]
            lines.append(f"{c.name:<{width}}  {c.status:<6}  {wrapped[0]}")
            lines += [f"{'':<{width}}  {'':<6}  {more}" for more in wrapped[1:]]
        return "\n".join(lines)

    def __rich__(self) -> Any:
        from rich.table import Table
        from rich.text import Text

        table = Table(title=self.summary(), show_lines=True, title_justify="left")
        table.add_column("check", style="bold", no_wrap=True)
        table.add_column("status", no_wrap=True)
        table.add_column("message", overflow="fold")
        colour = {"pass": "green", "warn": "yellow", "fail": "bold red"}
        for c in self.checks:
            # Text, not markup: a message such as "alpha[y]" must not be read as a style tag.
            table.add_row(Text(c.name), Text(c.status, style=colour[c.status]), Text(c.message))
        return table

    def print(self, console: Any = None) -> None:
        """Print the report as a rich table (to ``console``, or standard output)."""
        if console is None:
            from rich.console import Console

            console = Console()
        console.print(self)


# ----------------------------------------------------------------------------------------------
# Recognising the loss


def _record(loss_fn: Callable) -> registry.LossRecord | None:
    return registry.lookup(getattr(loss_fn, "func", loss_fn))  # functools.partial: its function


def _family(loss_fn: Callable, output: Tensor, target: Tensor) -> str:
    """What the doctor expects of ``loss_fn``, from its registry record's input and target kinds:

    ============================  =========================================  ==============
    input kind                    target kind                                doctor family
    ============================  =========================================  ==============
    logits                        class indices or class probabilities       ``"ce"``
    logits                        binary                                     ``"bce_logits"``
    probabilities                 binary                                     ``"bce"``
    log-probabilities             class indices                              ``"nll"``
    log-probabilities             class probabilities                        ``"kl"``
    values                        real; the record estimates the mean        ``"mse"``
    values                        real; any other estimate                   ``"l1"``
    ============================  =========================================  ==============

    Anything else (ranking, embeddings, sequences, an unknown callable) is ``"unknown"``: the
    doctor then skips the checks that need an expected value. A loss declaring
    ``output_kind = "logits"`` (one that applies its own sigmoid / log-softmax, like the recipes'
    ``SigmoidBCELoss``) counts as taking logits.
    """
    record = _record(loss_fn)
    if record is None:
        return "unknown"
    fn = getattr(loss_fn, "func", loss_fn)
    wants = getattr(fn, "output_kind", None) or record.input
    kind = record.target_kind(output, target)
    if wants == "logits":
        return "bce_logits" if kind == "binary" else "ce" if kind.startswith("class") else "unknown"
    if wants == "probabilities" and kind == "binary":
        return "bce"
    if wants == "log-probabilities" and kind in ("class-indices", "class-probabilities"):
        return "nll" if kind == "class-indices" else "kl"
    if wants == "values" and kind == "real":
        return "mse" if record.estimates == "mean" else "l1"
    return "unknown"


def _torch_twin(loss_fn: Callable) -> Callable | None:
    """For a plain ``torch.nn`` loss, the losskit loss computing the same value, so its value
    checks can run; None for losskit's own losses (they check themselves) and unknown callables.

    A torch Module's twin is losskit's Module of the same record holding the same settings (its
    subclass, so the attributes carry over); a ``torch.nn.functional`` loss's twin is losskit's
    function of the same name."""
    fn = getattr(loss_fn, "func", loss_fn)
    record = _record(loss_fn)
    if record is None:
        return None
    if fn is record.torch_function:
        return record.function
    if type(fn) is not record.torch_module:
        return None
    twin = record.module.__new__(record.module)
    twin.__dict__.update(fn.__dict__)  # same settings and buffers, losskit's forward
    # losskit-only settings (keyword-only, after torch's) take their defaults.
    for name, param in inspect.signature(record.module.__init__).parameters.items():
        if param.kind is param.KEYWORD_ONLY and not hasattr(twin, name):
            setattr(twin, name, param.default)
    return twin


_REGRESSION = ("mse", "l1")


def _class_dim(output: Tensor) -> int:
    return 1 if output.dim() >= 2 else 0


def _quiet(loss_fn: Callable, x: Tensor, y: Tensor) -> float:
    """The loss as a float, with losskit's value checks off and warnings silenced: for the
    reference inputs below, which are unusual on purpose (zeros, log one-hots)."""
    with checks("off"), warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        return float(loss_fn(x, y))


def _reference_input(family: str, output: Tensor, target: Tensor) -> tuple[Tensor, str] | None:
    """The uninformed prediction for ``family`` and a few words on what it is (module docstring)."""
    c = output.shape[_class_dim(output)] if output.dim() else 1
    if family == "ce":
        return torch.zeros_like(output), f"zero logits (uniform), ln C = ln {c} = {math.log(c):.4g}"
    if family == "bce_logits":
        return torch.zeros_like(output), "zero logits, ln 2 = 0.6931 per element"
    if family == "bce":
        return torch.full_like(output, 0.5), "p = 0.5, ln 2 = 0.6931 per element"
    if family in ("nll", "kl"):
        dim_size = output.shape[-1 if family == "kl" else _class_dim(output)]
        return torch.full_like(output, -math.log(dim_size)), "uniform log-probabilities"
    y = target.to(output.dtype)
    if family == "mse":
        return torch.full_like(output, float(y.mean())), "the target mean, Var(y)"
    if family == "l1":
        return torch.full_like(output, float(y.median())), "the target median"
    return None


def _ideal_input(family: str, output: Tensor, target: Tensor, loss_fn: Callable) -> Tensor | None:
    """The prediction with the lowest loss (the overfit check's floor), or None if unknown."""
    dim = _class_dim(output)
    if family == "ce" and target.is_floating_point():  # probability targets: log of the target
        return target.to(output.dtype).clamp_min(1e-12).log()
    if family == "ce":
        ignore = getattr(loss_fn, "ignore_index", -100)
        t = torch.where(target == ignore, 0, target).long().unsqueeze(dim)
        eps = float(getattr(loss_fn, "label_smoothing", 0.0) or 0.0)
        c = output.shape[dim]
        q = torch.full_like(output, eps / c).scatter(dim, t, 1 - eps + eps / c)  # smoothed one-hot
        return q.clamp_min(1e-12).log()
    if family == "bce_logits":
        return torch.logit(target.to(output.dtype).clamp(1e-6, 1 - 1e-6))
    if family == "bce":
        return target.to(output.dtype).clamp(1e-6, 1 - 1e-6)
    if family in _REGRESSION:
        return target.to(output.dtype).expand_as(output)
    return None


def _sample_keys(inputs: Any, n: int) -> Tensor | None:
    """One integer per sample (dim 0), equal for samples whose inputs are identical; None when
    the inputs are not all tensors with ``n`` rows."""
    tensors = list(inputs.values()) if isinstance(inputs, dict) else (
        list(inputs) if isinstance(inputs, (tuple, list)) else [inputs])
    if not tensors or not all(isinstance(t, Tensor) and t.dim() and t.shape[0] == n
                              for t in tensors):
        return None
    rows = torch.cat([t.detach().reshape(n, -1).double() for t in tensors], dim=1)  # (n, F)
    return torch.unique(rows, dim=0, return_inverse=True)[1]  # (n,)


def _to_prediction(family: str, ideal: Tensor, dim: int) -> Tensor:
    """The ideal input as a prediction one can average over samples (probabilities, values)."""
    if family == "ce":
        return ideal.softmax(dim)
    return ideal.sigmoid() if family == "bce_logits" else ideal


def _from_prediction(family: str, p: Tensor) -> Tensor:
    if family == "ce":
        return p.clamp_min(1e-12).log()
    return torch.logit(p.clamp(1e-6, 1 - 1e-6)) if family == "bce_logits" else p


def _shared_ideal(
    family: str, ideal: Tensor, keys: Tensor, target: Tensor, loss_fn: Callable
) -> Tensor:
    """The best prediction a function of the inputs can make: samples with identical inputs get
    one prediction, the average of their ideal ones (their median for L1 and Huber); for class
    indices, the frequency of each target among the duplicates, ignored positions left out."""
    dim = _class_dim(ideal)
    p = _to_prediction(family, ideal, dim)
    counted = torch.ones_like(p[:, :1] if p.dim() > 1 else p)  # (n, 1, ...) or (n,)
    if family == "ce" and not target.is_floating_point():
        ignore = getattr(loss_fn, "ignore_index", -100)
        counted = (target != ignore).to(p.dtype).unsqueeze(dim)  # (n, 1, d1, ...)
    shared = p.clone()
    for key in keys.unique():
        rows = keys == key
        if int(rows.sum()) < 2:
            continue
        if family in ("l1", "huber"):
            shared[rows] = p[rows].median(0).values
            continue
        w = counted[rows].expand_as(p[rows])
        mean = (p[rows] * w).sum(0) / w.sum(0).clamp_min(1)
        shared[rows] = torch.where(w.sum(0) > 0, mean, p[rows][0])
    return _from_prediction(family, shared)


def _floors(
    family: str, output: Tensor, inputs: Any, target: Tensor, loss_fn: Callable
) -> tuple[float, str]:
    """The overfit check's floor, and a few words on the conflicting duplicates that raise it
    (empty when none do). The floor is the loss at :func:`_ideal_input`; when samples with
    identical inputs have different targets, no model can give both, and the floor is the loss
    at :func:`_shared_ideal` instead."""
    ideal = _ideal_input(family, output, target, loss_fn)
    if ideal is None:
        return 0.0, ""
    floor = max(_quiet(loss_fn, ideal, target), 0.0)
    keys = _sample_keys(inputs, target.shape[0]) if target.dim() else None
    if keys is None or keys.unique().numel() == keys.numel():
        return floor, ""
    shared = max(_quiet(loss_fn, _shared_ideal(family, ideal, keys, target, loss_fn), target), 0.0)
    if shared <= floor + 1e-6 * max(1.0, abs(floor)):
        return floor, ""
    groups = [torch.nonzero(keys == k).flatten().tolist() for k in keys.unique()]
    rows = [g for g in groups if len(g) > 1 and not all(
        torch.equal(target[g[0]], target[i]) for i in g[1:])]
    shown = "; ".join(", ".join(str(i) for i in g) for g in rows[:3])
    return shared, (f"{len(rows)} group{'s' * (len(rows) != 1)} of samples with identical inputs "
                    f"but different targets (rows {shown}{'; ...' if len(rows) > 3 else ''})")


def _token_floor(
    family: str, output: Tensor, inputs: Any, target: Tensor, loss_fn: Callable
) -> tuple[float, str] | None:
    """Token sequences (an integer ``(B, T)`` input, a ``(B, T)`` next-token target, ``(B, C,
    T)`` logits): the lowest loss a model that reads one token at a time (a bigram model) can
    reach, when the same token is followed by different targets; None when nothing conflicts.
    Such a model is healthy: the overfit check warns instead of failing when it reaches this
    floor but not the usual goal (a model with context reaches the usual goal)."""
    tokens = inputs[0] if isinstance(inputs, (tuple, list)) and len(inputs) == 1 else inputs
    if not (family == "ce" and isinstance(tokens, Tensor) and not tokens.is_floating_point()
            and not target.is_floating_point() and target.dim() == 2
            and tokens.shape == target.shape and output.dim() == 3):
        return None
    ideal = _ideal_input(family, output, target, loss_fn)
    if ideal is None:  # no ideal input for this loss: no floor to raise
        return None
    floor = max(_quiet(loss_fn, ideal, target), 0.0)
    c = ideal.shape[1]
    flat = ideal.movedim(1, -1).reshape(-1, c)  # (B*T, C)
    shared = _shared_ideal(family, flat, tokens.reshape(-1), target.reshape(-1), loss_fn)
    shared = shared.reshape(*target.shape, c).movedim(-1, 1)  # (B, C, T)
    raised = max(_quiet(loss_fn, shared, target), 0.0)
    if raised <= floor + 1e-6 * max(1.0, abs(floor)):
        return None
    pairs = torch.stack([tokens.reshape(-1), target.reshape(-1)], 1).unique(dim=0)  # (P, 2)
    ambiguous = int((pairs[:, 0].unique(return_counts=True)[1] > 1).sum())
    return raised, (f"{ambiguous} input token{'s' * (ambiguous != 1)} followed by different "
                    f"targets in this batch (a model that reads one token at a time, like a "
                    f"bigram model, cannot fit them)")


# ----------------------------------------------------------------------------------------------
# Isolation: never touch the caller's model, gradients or random state


@contextlib.contextmanager
def _isolated(model: nn.Module, loss_fn: Callable) -> Iterator[tuple[nn.Module, Callable]]:
    """Yield copies of the model and loss (one deepcopy, so shared parameters stay shared) under a
    forked RNG. Models that cannot be deep-copied are used in place and restored afterwards."""
    devices = sorted({p.device.index or 0 for p in model.parameters() if p.is_cuda})
    try:
        copies = copy.deepcopy((model, loss_fn))
    except Exception:  # e.g. a non-picklable attribute: work in place, restore everything after
        copies = None
    with torch.random.fork_rng(devices=devices):
        if copies is not None:
            yield copies
            return
        owners = [m for m in (model, loss_fn) if isinstance(m, nn.Module)]
        # Parameters and persistent buffers of the model and of the loss (a loss may own a head).
        states = [{k: v.detach().clone() for k, v in m.state_dict(keep_vars=True).items()}
                  for m in owners]
        # Every buffer, persistent or not (state_dict skips non-persistent ones), and the
        # object each module held: a forward that reassigns a buffer gets the original back.
        buffers = [(m, k, b, None if b is None else b.detach().clone())
                   for owner in owners for m in owner.modules() for k, b in m._buffers.items()]
        params = [p for m in owners for p in m.parameters()]
        grads = [None if p.grad is None else p.grad.detach().clone() for p in params]
        flags = [p.requires_grad for p in params]
        modes = [m.training for m in model.modules()]
        try:
            yield model, loss_fn
        finally:
            with torch.no_grad():
                for m, k, b, saved in buffers:
                    m._buffers[k] = b
                    if b is not None and saved is not None:  # saved is b's clone
                        b.copy_(saved)
                for m, state in zip(owners, states, strict=True):
                    for k, v in m.state_dict(keep_vars=True).items():
                        v.copy_(state[k])
            for p, g, f in zip(params, grads, flags, strict=True):
                p.grad, p.requires_grad = g, f
            for m, t in zip(model.modules(), modes, strict=True):
                m.training = t


@contextlib.contextmanager
def _single_thread(device: torch.device) -> Iterator[None]:
    """One intra-op thread on CPU: the doctor's tensors are a few samples wide, where more threads
    only add synchronisation (tens of times slower on a busy machine). Restored afterwards."""
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# ----------------------------------------------------------------------------------------------
# Running the model


def _to(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: _to(v, device) for k, v in obj.items()}
    if isinstance(obj, (tuple, list)):
        return type(obj)(_to(v, device) for v in obj)
    return obj


def _forward(model: nn.Module, inputs: Any) -> Tensor:
    """``model(inputs)`` (a tuple/list is unpacked, a dict passed as keywords); from a tuple or
    dict output, the first element or ``"logits"``."""
    if isinstance(inputs, dict):
        out = model(**inputs)
    elif isinstance(inputs, (tuple, list)):
        out = model(*inputs)
    else:
        out = model(inputs)
    if isinstance(out, dict) or hasattr(out, "logits"):
        out = out["logits"] if isinstance(out, dict) else out.logits
    elif isinstance(out, (tuple, list)) and out:
        out = out[0]
    if not isinstance(out, Tensor):
        raise TypeError(
            f"the model returned {type(out).__name__}; the doctor needs a tensor of predictions "
            f"(or a tuple/dict whose first element/'logits' is one)"
        )
    return out


def _take(obj: Any, n: int) -> Any:
    """The first ``n`` samples (dim 0) of every tensor in ``obj``."""
    if isinstance(obj, Tensor):
        return obj[:n]
    if isinstance(obj, dict):
        return {k: _take(v, n) for k, v in obj.items()}
    if isinstance(obj, (tuple, list)):
        return type(obj)(_take(v, n) for v in obj)
    return obj


def _batch_sizes(obj: Any) -> set[int]:
    if isinstance(obj, Tensor):
        return {obj.shape[0]} if obj.dim() else {-1}
    if isinstance(obj, dict):
        obj = list(obj.values())
    if isinstance(obj, (tuple, list)):
        return set().union(*(_batch_sizes(v) for v in obj))
    return set()


def _last_layer(model: nn.Module, inputs: Any) -> tuple[str, nn.Module, bool] | None:
    """The leaf module that ran last in a forward pass (by forward hooks), with its name and
    whether its output is the model's output (not, say, a gate multiplied in afterwards)."""
    names = {m: n for n, m in model.named_modules()}
    calls: list[tuple[nn.Module, Any]] = []
    leaves = [m for m in model.modules() if not list(m.children())]
    hooks = [m.register_forward_hook(lambda m, i, o: calls.append((m, o))) for m in leaves]
    try:
        with torch.no_grad():
            out = _forward(model, inputs)
    finally:
        for h in hooks:
            h.remove()
    if not calls:
        return None
    module, last = calls[-1]
    final = last is out or (isinstance(last, Tensor) and last.numel() == out.numel()
                            and torch.equal(last.reshape(-1), out.reshape(-1)))
    return names[module] or type(module).__name__, module, final


# ----------------------------------------------------------------------------------------------
# The checks: each returns one CheckResult


def _run_twin(twin: Callable, output: Tensor, target: Tensor) -> None:
    """Run losskit's version of a torch loss for its checks: its LossInputError and warnings
    count; any other error is left for torch's own call to report."""
    try:
        twin(output, target)
    except LossInputError:
        raise
    except Exception:
        pass


def _check_loss(
    loss_fn: Callable, output: Tensor, target: Tensor, *, trainable: bool = True
) -> tuple[CheckResult, Tensor | None]:
    twin = _torch_twin(loss_fn)
    with checks("always"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", LossWarning)
        try:
            if twin is not None:  # a torch.nn loss: run losskit's checks on a detached copy
                _run_twin(twin, output.detach(), target)
            loss = loss_fn(output, target)
        except LossInputError as exc:
            return CheckResult("loss checks", "fail", str(exc)), None
        except Exception as exc:
            return CheckResult(
                "loss checks", "fail",
                f"loss_fn(output {tuple(output.shape)} {output.dtype}, target "
                f"{tuple(target.shape)} {target.dtype}) raised {type(exc).__name__}: {exc}",
            ), None
    problems = [str(w.message) for w in caught if issubclass(w.category, LossWarning)]
    if not isinstance(loss, Tensor) or loss.numel() != 1:
        shape = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
        return CheckResult(
            "loss checks", "fail",
            f"the loss is {shape}, not a scalar. Fix: use reduction='mean' (or 'sum').",
        ), None
    if not torch.isfinite(loss.detach()).all():
        return CheckResult(
            "loss checks", "fail",
            f"the loss is {float(loss.detach())} on the first batch. Fix: look for NaN/Inf in the "
            f"inputs or targets, log(0) in a custom loss, or probabilities of exactly 0/1 given "
            f"to BCE.",
        ), None
    if loss.grad_fn is None and not trainable:  # no graph because nothing trains: see 'gradients'
        return CheckResult(
            "loss checks", "warn" if problems else "pass",
            " | ".join([*problems, f"loss = {float(loss.detach()):.4g}; it has no graph "
                                   f"because the model has no trainable parameters (see "
                                   f"'gradients')."]),
        ), loss
    if loss.grad_fn is None:
        return CheckResult(
            "loss checks", "fail",
            "the loss does not depend on any trainable tensor (no grad_fn): the output was "
            "detached, computed under torch.no_grad(), or converted with .item()/.numpy().",
        ), None
    if problems:
        return CheckResult("loss checks", "warn", " | ".join(problems)), loss
    how = "losskit's checks" if twin is None else "losskit's checks for the same torch loss"
    return CheckResult(
        "loss checks", "pass",
        f"loss = {float(loss.detach()):.4g} on output {tuple(output.shape)} and target "
        f"{tuple(target.shape)} {target.dtype}; {how} (mode 'always') found nothing.",
    ), loss


def _signature(output: Tensor, dim: int) -> str:
    """What the outputs look like: probabilities, log-probabilities, sigmoid, relu or raw."""
    x = output.detach().float()
    if x.numel() == 0:
        return "raw"
    lo, hi = float(x.min()), float(x.max())
    if x.dim() and x.shape[dim] >= 2:
        if lo >= 0 and float((x.sum(dim) - 1).abs().max()) < 1e-3:
            return "probabilities"
        if hi <= 0 and float(x.logsumexp(dim).abs().max()) < 1e-3:
            return "log-probabilities"
    # Sigmoid output near init straddles 0.5; a zero-initialised or prior-bias head's logits sit
    # on one side of it (or are all 0), so they are not taken for a sigmoid.
    if x.numel() >= 16 and 0 < lo < 0.5 < hi < 1:
        return "sigmoid"
    if lo >= 0 and hi > 0 and bool((x == 0).any()):
        return "relu"
    return "raw"


_SIGMOIDS = ("Sigmoid", "Hardsigmoid")  # final layers squashing every output into [0, 1]
_BOUNDS = {  # final layers that bound the output: the range they can reach
    "Sigmoid": (0.0, 1.0), "Softmax": (0.0, 1.0), "Hardsigmoid": (0.0, 1.0),
    "Tanh": (-1.0, 1.0), "Hardtanh": (-1.0, 1.0), "Softsign": (-1.0, 1.0),
    "ReLU": (0.0, math.inf), "ReLU6": (0.0, 6.0), "Softplus": (0.0, math.inf),
}


def _check_activation(
    family: str, output: Tensor, target: Tensor, last: tuple[str, nn.Module, bool] | None,
    record: Any = None,
) -> CheckResult:
    name = "output activation"
    layer = f"the model's last layer `{last[0]}` ({type(last[1]).__name__})" if last else ""
    where = layer or "the model's outputs"
    dim = _class_dim(output)
    seen = _signature(output, dim)
    if last and last[2] and type(last[1]).__name__ in _SIGMOIDS and seen != "probabilities":
        seen = "sigmoid"  # the layer says so: its values may not, on a handful of outputs
    logits_fix = "Fix: remove the final activation; the loss applies it internally."
    if family == "ce":
        if seen == "probabilities":
            return CheckResult(name, "fail",
                f"{where} outputs probabilities (rows sum to 1), but cross-entropy wants logits: "
                f"it applies log_softmax itself, so softmax twice flattens the gradient. "
                f"{logits_fix} (Or use NLLLoss after LogSoftmax.)")
        if seen == "sigmoid":
            return CheckResult(name, "fail",
                f"{where} squashes every output into (0, 1) (a Sigmoid), but cross-entropy wants "
                f"unbounded logits: the best reachable probability stays low. "
                f"{logits_fix}")
    if family == "bce_logits" and seen in ("sigmoid", "probabilities"):
        return CheckResult(name, "fail",
            f"{where} outputs values in [0, 1] ({seen}), but this loss wants logits and "
            f"applies the sigmoid itself. {logits_fix} (Or use BCELoss, less stable.)")
    if family in ("ce", "bce_logits") and seen == "relu":
        return CheckResult(name, "warn",
            f"{where} outputs no negative values (a final ReLU?): logits below 0 cannot be "
            f"expressed. Fix: end the model with a Linear layer, without activation.")
    if family == "nll" and seen != "log-probabilities":
        what = "probabilities (Softmax)" if seen == "probabilities" else "raw scores"
        return CheckResult(name, "fail",
            f"NLLLoss wants log-probabilities, but {where} gives {what}, so the loss is unbounded "
            f"below. Fix: end the model with nn.LogSoftmax(dim=1), or use CrossEntropyLoss "
            f"on the logits.")
    if family == "kl" and seen == "probabilities":
        return CheckResult(name, "fail",
            f"KLDivLoss wants log-probabilities as input, but {where} gives probabilities. "
            f"Fix: use nn.LogSoftmax instead of nn.Softmax.")
    if family == "bce" and (float(output.min()) < 0 or float(output.max()) > 1):
        return CheckResult(name, "fail",
            f"BCELoss wants probabilities in [0, 1], but {where} gives values in "
            f"[{float(output.min()):.3g}, {float(output.max()):.3g}]. Fix: use BCEWithLogitsLoss "
            f"on the raw outputs (stable), or add nn.Sigmoid().")
    if family in _REGRESSION:
        kind = type(last[1]).__name__ if last else ""
        bounds = _BOUNDS.get(kind, (0.0, 1.0) if seen == "sigmoid" else None)
        lo, hi = float(target.min()), float(target.max())
        if bounds and (lo < bounds[0] or hi > bounds[1]):
            return CheckResult(name, "fail",
                f"{where} bounds the predictions to [{bounds[0]:g}, {bounds[1]:g}], but the "
                f"targets range over [{lo:.3g}, {hi:.3g}]. Fix: remove the final activation "
                f"(or rescale the targets into its range).")
    if family == "unknown" and record is not None and record.input == "embeddings":
        return CheckResult(name, "pass", f"not assessed: {record.name} takes embeddings, which "
                                         f"have no expected activation or range (the doctor "
                                         f"checks activations of losses on logits, "
                                         f"probabilities and values).")
    if family == "unknown":
        return CheckResult(name, "pass", "not assessed: the doctor does not know this loss.")
    if family == "ce" and seen == "log-probabilities":
        return CheckResult(name, "pass", "outputs are log-probabilities (a LogSoftmax): fine "
                                         "for cross-entropy, whose log_softmax leaves them as "
                                         "they are, but redundant.")
    return CheckResult(name, "pass", f"outputs look like {_SEEN[seen]}; this loss wants "
                                     f"{_WANTS[family]}.")


_SEEN = {"raw": "raw scores", "probabilities": "probabilities",
         "log-probabilities": "log-probabilities", "sigmoid": "values in (0, 1)",
         "relu": "non-negative values"}
_WANTS = {"ce": "logits", "bce_logits": "logits", "nll": "log-probabilities",
          "kl": "log-probabilities", "bce": "probabilities", "mse": "unbounded predictions",
          "l1": "unbounded predictions"}


def expected_init_loss(
    loss_fn: Callable[[Tensor, Tensor], Tensor], output: Tensor, target: Tensor
) -> tuple[float, str] | None:
    """The loss an uninformed prediction gets on ``target`` (formulas in the module docstring),
    with a few words on which prediction that is; None for a loss the doctor does not know.

    Args:
        loss_fn: the loss, called on the reference prediction (so its weights count).
        output: a model output, for its shape, dtype and class count: ``(N, C, ...)`` or ``(N, *)``.
        target: the targets the loss is given with ``output``.

    >>> import losskit as lk
    >>> y = torch.arange(6) % 4
    >>> value, how = expected_init_loss(lk.CrossEntropyLoss(), torch.randn(6, 4), y)
    >>> round(value, 4), how
    (1.3863, 'zero logits (uniform), ln C = ln 4 = 1.386')
    >>> y = torch.tensor([1.0, 2.0, 3.0, 4.0])
    >>> round(expected_init_loss(lk.MSELoss(), torch.zeros(4), y)[0], 4)  # Var(y)
    1.25
    """
    ref = _reference_input(_family(loss_fn, output, target), output.detach(), target)
    return None if ref is None else (_quiet(loss_fn, ref[0], target), ref[1])


def _check_init(
    family: str, loss_fn: Callable, loss0: float, output: Tensor, target: Tensor
) -> CheckResult:
    name = "loss at init"
    ref = expected_init_loss(loss_fn, output, target)
    if ref is None:
        return CheckResult(name, "pass", f"loss = {loss0:.4g}; no reference value for this loss.")
    expected = ref[0]
    if not math.isfinite(expected) or expected <= 0:
        return CheckResult(name, "pass", f"loss = {loss0:.4g}; the reference value is 0.")
    ratio = loss0 / expected
    text = f"loss = {loss0:.4g}, expected about {expected:.4g} from {ref[1]} (x{ratio:.2f})"
    if ratio <= INIT_TOLERANCE:
        return CheckResult(name, "pass", text + ".")
    if family in _REGRESSION:
        fix = ("the targets are far from what an untrained model outputs (not centred or "
               "scaled). Fix: standardise the targets, or set the last layer's bias to the "
               "target mean.")
    else:
        fix = ("the initial outputs are over-confident (large logits). Fix: scale down the last "
               "layer's initial weights (e.g. nn.init.zeros_ on its weight and bias) and check "
               "the inputs are standardised.")
    return CheckResult(name, "warn", f"{text}: {fix}")


_ZERO_CAUSES = (
    "an exactly-zero gradient on the first batch is normal for zero-initialised adapters and "
    "gates: LoRA's B = 0 zeroes A's gradient, and a ReZero / LayerScale gain of 0 zeroes its "
    "branch's; they move once the gain or B has taken a step"
)


def _loss_parameters(loss_fn: Callable | None) -> list[tuple[str, nn.Parameter]]:
    """A loss's own trainable parameters (``LinearCrossEntropyLoss``'s head, a learned
    temperature): ``fit`` trains them with the model, so the doctor checks them too."""
    if not isinstance(loss_fn, nn.Module):
        return []
    return [(f"loss_fn.{n}", p) for n, p in loss_fn.named_parameters() if p.requires_grad]


def _check_gradients(
    model: nn.Module, loss: Tensor, loss_fn: Callable | None = None
) -> tuple[CheckResult, list[tuple[str, nn.Parameter]]]:
    """The gradients check, and the parameters whose gradient is all zeros. No gradient or a
    non-finite one fails; an all-zero gradient only warns (see :data:`_ZERO_CAUSES`), and the
    doctor passes it once the overfit check has seen those parameters move."""
    name = "gradients"
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    trainable += _loss_parameters(loss_fn)
    frozen = sum(1 for p in model.parameters() if not p.requires_grad)
    if not trainable:
        return CheckResult(name, "fail",
            f"the model has no trainable parameters ({frozen} frozen): nothing can "
            f"learn. Fix: set requires_grad=True on the layers to train (or do not freeze them "
            f"all)."), []
    for _, p in trainable:
        p.grad = None
    loss.backward()
    missing = [n for n, p in trainable if p.grad is None]
    non_finite = [n for n, p in trainable
                  if p.grad is not None and not bool(torch.isfinite(p.grad).all())]
    zero = [(n, p) for n, p in trainable
            if p.grad is not None and n not in non_finite and not bool(p.grad.any())]
    zero_text = (f"{', '.join(n for n, _ in zero)} got an all-zero gradient on this batch"
                 if zero else "")
    found = [f"{', '.join(missing)} got no gradient (not in the loss's graph: unused, or "
             f"detached)" if missing else "",
             f"{', '.join(non_finite)} got a NaN/Inf gradient" if non_finite else ""]
    found = [f for f in found if f]
    if found:
        note = f" (Also: {zero_text}; {_ZERO_CAUSES}.)" if zero else ""
        return CheckResult(name, "fail",
            "; ".join(found) + ". Fix: make sure every parameter is used in forward on a path "
            "to the output without .detach()/.data/no_grad, freeze the ones meant to stay "
            "fixed (requires_grad=False), and for NaN/Inf look for sqrt/log/division at 0 in "
            "the model." + note), zero
    note = f" ({frozen} frozen parameters skipped)" if frozen else ""
    if zero:
        return CheckResult(name, "warn",
            f"{zero_text}; the other {len(trainable) - len(zero)} trainable parameters got "
            f"finite, non-zero gradients{note}. {_ZERO_CAUSES[0].upper()}{_ZERO_CAUSES[1:]}. "
            f"Fix: if none of these is such a zero-initialised partner, look for a dead ReLU, a "
            f"saturated activation or a multiplication by 0 on their path."), zero
    return CheckResult(name, "pass", f"all {len(trainable)} trainable parameters got finite, "
                                     f"non-zero gradients{note}."), []


def _zero_gradients_moved(
    result: CheckResult, zero: list[tuple[str, nn.Parameter]], before: list[Tensor]
) -> CheckResult:
    """The gradients check after the overfit check: all-zero gradients pass if their parameters
    moved (the zero was the initialisation's, not a dead path), and keep warning if not."""
    if result.status != "warn" or not zero:
        return result
    still = [n for (n, p), b in zip(zero, before, strict=True) if torch.equal(p.detach(), b)]
    if still:
        moved = len(zero) - len(still)
        return CheckResult(result.name, "warn",
            f"{result.message} ({len(still)} of them did not move during the overfit check"
            f"{f'; {moved} did' if moved else ''}: {', '.join(still)}.)")
    names = ", ".join(n for n, _ in zero)
    return CheckResult(result.name, "pass",
        f"every trainable parameter got a finite gradient; {names} got an all-zero one on the "
        f"first batch but moved during the overfit check, as zero-initialised adapters and "
        f"gates (LoRA's B = 0, a ReZero gain of 0) do.")


class _Adam:
    """Adam (Kingma & Ba, 2015) with torch's defaults, in a few lines: constructing the first
    ``torch.optim`` optimizer of a process imports ``torch._dynamo``, which costs seconds, more
    than the rest of the doctor."""

    def __init__(self, params: list[Tensor], lr: float, betas=(0.9, 0.999), eps=1e-8) -> None:
        self.params, self.lr, self.betas, self.eps, self.t = params, lr, betas, eps, 0
        self.m = [torch.zeros_like(p) for p in params]  # first moment
        self.v = [torch.zeros_like(p) for p in params]  # second moment

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        b1, b2 = self.betas
        for p, m, v in zip(self.params, self.m, self.v, strict=True):
            if p.grad is None:
                continue
            m.lerp_(p.grad, 1 - b1)
            v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
            denom = (v / (1 - b2**self.t)).sqrt_().add_(self.eps)
            p.addcdiv_(m, denom, value=-self.lr / (1 - b1**self.t))


def _check_overfit(
    model: nn.Module, loss_fn: Callable, inputs: Any, target: Tensor, family: str,
    *, steps: int, lr: float, samples: int,
) -> CheckResult:
    name = "overfit one batch"
    if len(_batch_sizes((inputs, target))) == 1:  # every tensor shares dim 0: take a few samples
        per_sample = max(1, target[:1].numel())  # e.g. 32 tokens per sequence
        # BatchNorm cannot train on one row: give it two (more targets than one sequence holds
        # would make the check harder for every other model).
        batch_norm = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
        least = MIN_BATCHNORM_ROWS if batch_norm else 1
        n = min(samples, max(least, OVERFIT_TARGETS // per_sample))
        inputs, target = _take(inputs, n), _take(target, n)
    params: list[Tensor] = [p for p in model.parameters() if p.requires_grad]
    params += [p for _, p in _loss_parameters(loss_fn)]
    if not params:
        return CheckResult(name, "fail", "no trainable parameters to fit (see 'gradients'). "
                                         "Fix: set requires_grad=True on the layers to train.")
    optimizer = _Adam(params, lr=lr)
    model.train()
    losses: list[float] = []
    with checks("off"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for step in range(steps + 1):
            output = _forward(model, inputs)
            if step == 0:
                floor, conflicts = _floors(family, output.detach(), inputs, target, loss_fn)
                bigram = _token_floor(family, output.detach(), inputs, target, loss_fn)
            loss = loss_fn(output, target)
            losses.append(float(loss.detach()))
            goal = floor + OVERFIT_SHARE_LEFT * (losses[0] - floor)
            taken = step
            if not math.isfinite(losses[-1]) or losses[-1] <= goal or step == steps:
                break
            model.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        mode = ""
        if math.isfinite(losses[-1]) and losses[-1] > goal:  # dropout may hide a fit: try eval
            model.eval()
            with torch.no_grad():
                evaluated = float(loss_fn(_forward(model, inputs), target))
            if evaluated <= goal:
                losses.append(evaluated)
                mode = " (eval mode)"
    start, end = losses[0], losses[-1]
    floor_note = f" (floor {floor:.3g})" if floor > 1e-4 else ""
    count = target.shape[0] if target.dim() else 1
    text = (f"Adam(lr={lr:g}) on {count} sample{'s' * (count != 1)}: loss {start:.4g} -> "
            f"{end:.4g}{mode} in {taken} steps, goal <= {goal:.4g}{floor_note}")
    if not math.isfinite(end):
        return CheckResult(name, "fail",
            f"{text}: the loss became {end}. Fix: lower the learning rate, or look for log(0) / "
            f"division by zero in the model or loss.")
    if end <= goal and conflicts:
        return CheckResult(name, "warn",
            f"{text}: fitted, but {conflicts} raise the lowest reachable loss, so the loss "
            f"cannot reach 0. Fix: check those labels (duplicated rows with "
            f"different targets); if the task is noisy by nature, this is expected.")
    if end <= goal:
        return CheckResult(name, "pass", text + ".")
    if bigram is not None and end <= bigram[0] + OVERFIT_SHARE_LEFT * (start - bigram[0]):
        return CheckResult(name, "warn",
            f"{text}: not reached, but the loss fell to near {bigram[0]:.3g}, the lowest a model "
            f"without context can reach here: {bigram[1]}. Fix: if the model should use context "
            f"(earlier tokens), check that it does (attention mask, the shift of the targets); "
            f"a model that reads one token at a time is healthy and this is its limit.")
    return CheckResult(name, "fail",
        f"{text}: the model cannot fit even one small batch. Fix: check the learning rate "
        f"(lr={lr:g} here), that targets and outputs are aligned (same order, right class "
        f"dim), that nothing is frozen or detached by mistake, and that the model has the "
        f"capacity; drop regularisation (dropout, weight decay) while debugging.")


def _check_balance(family: str, loss_fn: Callable, output: Tensor, target: Tensor) -> CheckResult:
    name = "class balance"
    if family == "ce" and not target.is_floating_point():
        c = output.shape[_class_dim(output)]
        if c > MAX_BALANCE_CLASSES:
            return CheckResult(name, "pass",
                f"not assessed: {c} classes is a vocabulary, where frequency weights rarely "
                f"help.")
        if getattr(loss_fn, "weight", None) is not None or isinstance(
            getattr(loss_fn, "alpha", None), Tensor
        ):
            return CheckResult(name, "pass", "class weights are set on the loss.")
        t = target[target != getattr(loss_fn, "ignore_index", -100)].long().flatten()
        counts = torch.bincount(t.clamp(0, c - 1), minlength=c)[None]  # (1, C)
        arg = "weight"
    elif family in ("bce_logits", "bce") and target.is_floating_point():
        if any(getattr(loss_fn, a, None) is not None for a in ("pos_weight", "weight", "alpha")):
            return CheckResult(name, "pass", "weight / pos_weight / alpha is set on the loss.")
        y = target.reshape(-1, target.shape[-1]) if target.dim() == 2 else target.reshape(-1, 1)
        pos = (y > 0.5).sum(0)  # (labels,)
        counts = torch.stack([y.shape[0] - pos, pos], dim=1)  # (labels, 2): negatives, positives
        arg = "pos_weight"
    else:
        return CheckResult(name, "pass", "not assessed: needs class-index or 0/1 targets.")
    counts = counts.double()
    # A class that is never a target (e.g. the padding token) is no skew; a label that is never
    # positive is.
    present = counts > 0 if arg == "weight" else torch.ones_like(counts, dtype=torch.bool)
    n, k = counts.sum(1), present.sum(1).clamp_min(1)
    rare = torch.where(present, counts, math.inf).min(1).values.clamp_min(1)
    common = counts.max(1).values
    spread = (n * (1 / k) * (1 - 1 / k)).sqrt()  # binomial sd of a count under balance
    skewed = (common >= IMBALANCE_RATIO * rare) & (n / k - rare > 3 * spread)
    shown = ", ".join(f"{int(v)}" for v in counts.flatten()[:20])
    if not bool(skewed.any()):
        return CheckResult(name, "pass", f"counts [{shown}] are balanced enough (or the batch "
                                         f"too small to tell).")
    if arg == "weight":
        w = n[0] / (k[0] * counts[0].clamp_min(1))  # sklearn's "balanced": N / (C * count_c)
        w = torch.where(present[0], w, 0.0)  # classes never seen as targets: weight 0
        fix = f"weight=torch.tensor([{', '.join(f'{v:.3g}' for v in w.tolist())}])"
        what = f"class counts [{shown}]"
    else:
        w = counts[:, 0] / counts[:, 1].clamp_min(1)  # negatives / positives per label
        fix = f"pos_weight=torch.tensor([{', '.join(f'{v:.3g}' for v in w.tolist())}])"
        what = f"(negatives, positives) per label [{shown}]"
    return CheckResult(name, "warn",
        f"{what} are imbalanced (>= {IMBALANCE_RATIO:g}x): the model may learn to predict the "
        f"majority. Fix: pass {fix} to the loss (or resample), and track F1 / AUROC rather "
        f"than accuracy.")


# ----------------------------------------------------------------------------------------------
# Entry point


def doctor(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    batch: tuple[Any, Tensor],
    *,
    overfit_steps: int = 150,
    lr: float = 1e-2,
    overfit_samples: int = 16,
    seed: int = 0,
) -> Report:
    """Check a training setup on one batch; the model is never changed.

    Args:
        model: the ``nn.Module`` to check (a copy is used; train/eval mode does not matter).
        loss_fn: ``loss_fn(output, target) -> scalar``: a losskit or ``torch.nn`` loss Module, a
            functional loss, or any callable (fewer checks apply to callables it doesn't know).
        batch: ``(inputs, targets)``; ``inputs`` a tensor, a tuple (unpacked into ``model``) or a
            dict (passed as keywords). Outputs must already be in the loss's layout, e.g.
            ``(N, C, T)`` for sequence cross-entropy.
        overfit_steps: Adam steps allowed to bring the loss 90% of the way down.
        lr: Adam's learning rate for the overfit check.
        overfit_samples: how many samples of the batch (dim 0) the overfit check fits at most;
            fewer when each holds many targets (about 32 target values in all, so a sequence
            model fits one sequence): a few samples test the loop, not the model's capacity.
        seed: seeds dropout and other randomness inside the doctor (the caller's RNG is untouched).

    Returns:
        a :class:`Report`; ``report.ok`` is False when a check failed.

    The checks and the expected-loss formulas are described in the module docstring above.

    Example: a Softmax head before cross-entropy, which applies log_softmax itself.

    >>> import losskit as lk
    >>> _ = torch.manual_seed(0)
    >>> model = torch.nn.Sequential(
    ...     torch.nn.Linear(4, 32), torch.nn.ReLU(), torch.nn.Linear(32, 3), torch.nn.Softmax(dim=1)
    ... )
    >>> x, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
    >>> report = lk.doctor(model, lk.CrossEntropyLoss(), (x, y))
    >>> report.ok, report["output activation"].status
    (False, 'fail')
    >>> print(report["output activation"].message)
    the model's last layer `3` (Softmax) outputs probabilities ... Fix: remove the final
    activation; the loss applies it internally. (Or use NLLLoss after LogSoftmax.)
    >>> lk.doctor(model[:-1], lk.CrossEntropyLoss(), (x, y)).ok  # the same model, logits out
    True
    """
    start = time.perf_counter()
    report = Report()
    if not isinstance(model, nn.Module):
        raise TypeError(f"doctor(model=...) got {type(model).__name__}; pass an nn.Module.")
    if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
        raise TypeError(
            f"doctor(batch=...) got {type(batch).__name__}"
            f"{f' of length {len(batch)}' if isinstance(batch, (tuple, list)) else ''}; "
            f"pass (inputs, targets)."
        )
    for arg, value in (("overfit_steps", overfit_steps), ("overfit_samples", overfit_samples)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"doctor({arg}={value!r}): must be a positive int. Fix: e.g. 16.")
    if not (lr >= 0 and math.isfinite(lr)):
        raise ValueError(f"doctor(lr={lr!r}): must be a finite number >= 0. Fix: e.g. lr=1e-2.")
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    inputs, target = _to(batch[0], device), _to(batch[1], device)
    with _isolated(model, loss_fn) as (net, loss_fn), _single_thread(device):
        torch.manual_seed(seed)
        net.train()
        try:
            output = _forward(net, inputs)
        except Exception as exc:
            report.checks.append(CheckResult("forward", "fail",
                f"model(inputs) raised {type(exc).__name__}: {exc}"))
            return _done(report, start)
        shape = f"{tuple(output.shape)} {output.dtype} on {output.device}"
        report.checks.append(CheckResult("forward", "pass", f"model(inputs) -> {shape}."))
        trainable = any(p.requires_grad for p in net.parameters())
        result, loss = _check_loss(loss_fn, output, target, trainable=trainable)
        report.checks.append(result)
        if loss is None:
            return _done(report, start)
        family = _family(loss_fn, output, target)
        # Each check catches its own error: a report, never a traceback. The failure checks
        # fail on one; the warning-only checks (init, balance) warn.
        report.checks.append(_guarded("output activation", "fail", lambda: _check_activation(
            family, output, target, _last_layer(net, inputs), _record(loss_fn))))
        report.checks.append(_guarded("loss at init", "warn", lambda: _check_init(
            family, loss_fn, float(loss.detach()), output, target)))
        gradients = _guarded("gradients", "fail", lambda: _check_gradients(net, loss, loss_fn))
        gradients, zero = gradients if isinstance(gradients, tuple) else (gradients, [])
        before = [p.detach().clone() for _, p in zero]
        report.checks.append(gradients)
        report.checks.append(_guarded("overfit one batch", "fail", lambda: _check_overfit(
            net, loss_fn, inputs, target, family, steps=overfit_steps, lr=lr,
            samples=overfit_samples)))
        report.checks[-2] = _guarded("gradients", "warn",
                                     lambda: _zero_gradients_moved(gradients, zero, before))
        report.checks.append(_guarded("class balance", "warn", lambda: _check_balance(
            family, loss_fn, output, target)))
    return _done(report, start)


def _guarded(name: str, status: str, check: Callable[[], Any]) -> Any:
    """``check()``, or a ``status`` CheckResult naming the error it raised."""
    try:
        return check()
    except Exception as exc:
        return CheckResult(name, status,
            f"the {name!r} check raised {type(exc).__name__}: {' '.join(str(exc).split())}. "
            f"Fix: a training step runs the same code, so correct the model or loss where this "
            f"error points (run this check's step by hand to see the traceback).")


def _done(report: Report, start: float) -> Report:
    report.seconds = time.perf_counter() - start
    return report
