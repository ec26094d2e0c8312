"""``losskit explain LOSS``: a loss's formula, derivative, properties, a worked example, its curves.

Everything comes from the loss's :class:`losskit.registry.Explain` (its record's ``explain``).
The worked example is computed twice, by hand (the record's ``steps``) and by the loss itself,
and the two must agree; the curves call the loss itself and take the gradient with autograd, so
a picture shows the code, not a drawing of it.

>>> text, result = explain_text("huber")
>>> print(text.splitlines()[0])
huber_loss (HuberLoss, CLI name huber): regression
>>> result.matches
True
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass

import torch
from torch import Tensor

from losskit import registry

__all__ = ["WorkedExample", "explain_text", "gradient_curves", "plot_curves", "resolve",
           "worked_example"]


def _names(record: registry.LossRecord) -> list[str]:
    names = [record.name, record.module.__name__, *record.aliases]
    if record.cli:
        names.append(record.cli)
    if record.torch_function is not None:
        names.append(record.torch_function.__name__)
    return names


def resolve(name: str) -> registry.LossRecord:
    """The record of ``name``: a function, Module, CLI or alias name, any case, ``-`` or ``_``.

    An unknown name raises ``KeyError`` with the close matches (difflib) and the fix.

    >>> resolve("CrossEntropyLoss").name, resolve("smooth-l1").name, resolve("MSE").name
    ('cross_entropy', 'smooth_l1_loss', 'mse_loss')
    """
    def key(text: str) -> str:
        return text.lower().replace("-", "_")

    by_key: dict[str, tuple[str, registry.LossRecord]] = {}
    for record in registry.records():
        for n in _names(record):
            by_key.setdefault(key(n), (n, record))
    found = by_key.get(key(name))
    if found is not None:
        return found[1]
    close = difflib.get_close_matches(key(name), list(by_key), n=6, cutoff=0.5)
    close = list(dict.fromkeys(by_key[c][0] for c in close))[:4]
    hint = f"Close matches: {', '.join(close)}. " if close else ""
    raise KeyError(f"no loss named {name!r}. {hint}Fix: use a name from `losskit losses --all` "
                   f"(function, Module or CLI name, e.g. cross_entropy, HuberLoss, huber).")


@dataclass(frozen=True)
class WorkedExample:
    """The hand computation of a loss on its example, beside the loss's own output."""

    inputs: list[tuple[str, Tensor]]
    steps: list[tuple[str, Tensor]]
    by_hand: Tensor
    by_loss: Tensor

    @property
    def matches(self) -> bool:
        return self.by_hand.shape == self.by_loss.shape and bool(
            torch.allclose(self.by_hand, self.by_loss, rtol=1e-10, atol=1e-12))


def worked_example(record: registry.LossRecord) -> WorkedExample:
    """Run the record's hand computation and the loss itself on the record's example."""
    info = _explain(record)
    args, kwargs = info.example()
    steps = info.steps(*args, **kwargs)
    by_loss = record.function(*args, **kwargs)
    names = _argument_names(record, len(args))
    inputs = [(n, a) for n, a in zip(names, args, strict=True) if isinstance(a, Tensor)]
    inputs += [(k, v) for k, v in kwargs.items()]
    return WorkedExample(inputs, steps, steps[-1][1], by_loss)


def _argument_names(record: registry.LossRecord, n: int) -> list[str]:
    import inspect

    params = list(inspect.signature(record.function).parameters)
    return params[:n]


def _explain(record: registry.LossRecord) -> registry.Explain:
    if record.explain is None:
        raise KeyError(f"{record.name} has no explain data yet. Fix: add a registry.describe("
                       f"{record.name}, registry.Explain(...)) call in losskit/losses/"
                       f"{record.family}.py (docs/design.md, 'What a record needs for explain').")
    return record.explain


def _fmt(value: object) -> str:
    if isinstance(value, Tensor):
        if value.is_floating_point():
            text = repr(value.detach().double().numpy().round(6).tolist())
        else:
            text = repr(value.tolist())
        return text.replace("\n", " ")
    return repr(value)


def explain_text(name: str) -> tuple[str, WorkedExample]:
    """The text ``losskit explain NAME`` prints, and its worked example (for the tests)."""
    record = resolve(name)
    info = _explain(record)
    cli = f", CLI name {record.cli}" if record.cli else ""
    lines = [f"{record.name} ({record.module.__name__}{cli}): {record.family}",
             f"  {record.summary}", "", "formula", f"  {info.formula}", f"  LaTeX: {info.latex}",
             "", "derivative (with respect to the first argument)", f"  {info.derivative}",
             f"  LaTeX: {info.derivative_latex}"]
    if info.note:
        lines += [f"  note: {info.note}"]
    lines += ["", "properties",
              f"  convex in the input:  {'yes' if info.convex else 'no'}",
              f"  bounded gradient:     {'yes' if info.bounded_gradient else 'no'}",
              f"  robust to outliers:   {info.robust}",
              f"  estimates:            {record.estimates or '-'}"]
    example = worked_example(record)
    lines += ["", "worked example"]
    lines += [f"  {label} = {_fmt(value)}" for label, value in example.inputs]
    lines += [f"  {i}. {label}: {_fmt(value)}" for i, (label, value) in
              enumerate(example.steps, 1)]
    verdict = "equal" if example.matches else "DIFFERENT: a bug in the hand steps or the loss"
    lines += [f"  by hand: {_fmt(example.by_hand)}",
              f"  {record.name}(...) returns: {_fmt(example.by_loss)} ({verdict})"]
    return "\n".join(lines), example


def gradient_curves(
    record: registry.LossRecord, points: int = 241
) -> tuple[str, Tensor, list[tuple[str, Tensor, Tensor]]]:
    """The record's curves: ``(axis label, t, [(option label, loss(t), dloss/dt)])``, float64,
    the gradient by autograd through the loss itself."""
    curve = _explain(record).curve
    t = torch.linspace(*curve.span, points, dtype=torch.float64)
    lines = []
    for label, option in curve.options:
        x = t.clone().requires_grad_(True)
        loss = curve.loss(x, **option)
        (grad,) = torch.autograd.grad(loss.sum(), x)
        lines.append((label, loss.detach(), grad))
    return curve.axis, t, lines


def plot_curves(record: registry.LossRecord, axes=None, path: str | os.PathLike | None = None,
                fmt: str = "png") -> None:
    """Draw the loss (left) and its gradient (right) into ``axes`` (two matplotlib axes), or
    into a new figure saved at ``path``."""
    from losskit.train.plots import _pyplot

    plt = _pyplot()
    fig = None
    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    axis, t, lines = gradient_curves(record)
    for label, loss, grad in lines:
        axes[0].plot(t, loss, label=label or None)
        axes[1].plot(t, grad, label=label or None)
    axes[0].set(title=f"{record.name}", xlabel=axis, ylabel="loss")
    axes[1].set(title="gradient", xlabel=axis, ylabel="d loss / d (x axis)")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.axhline(0, color="0.6", lw=0.6)
        if any(label for label, _, _ in lines):
            ax.legend(fontsize=7)
    if fig is not None:
        fig.tight_layout()
        fig.savefig(path, format=fmt, dpi=90)
        plt.close(fig)
