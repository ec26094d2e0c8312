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
import textwrap
from dataclasses import dataclass
from typing import cast

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
    return WorkedExample(inputs, steps, steps[-1][1], cast(Tensor, by_loss))  # no return_lse


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
            # + 0.0 turns -0.0 (a tiny negative rounded, or an exact -0.0) into 0.0
            text = repr((value.detach().double().numpy().round(6) + 0.0).tolist())
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
                fmt: str = "png", points: int = 241) -> None:
    """Draw the loss (left) and its gradient (right) into ``axes`` (two matplotlib axes), or
    into a new figure saved at ``path``."""
    from losskit.train.plots import _pyplot

    plt = _pyplot()
    fig = None
    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    axis, t, lines = gradient_curves(record, points)
    for label, loss, grad in lines:
        axes[0].plot(t, loss, label=label or None)
        axes[1].plot(t, grad, label=label or None)
    axis = textwrap.fill(axis, width=42)  # a long label must not run off a 3.5-inch panel
    axes[0].set(title=f"{record.name}", xlabel=axis, ylabel="loss")
    axes[1].set(title="gradient", xlabel=axis, ylabel="d loss / d (x axis)")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.axhline(0, color="0.6", lw=0.6)
        if any(label for label, _, _ in lines):
            ax.legend(fontsize=7)
    if fig is not None:
        fig.tight_layout()
        fig.savefig(path, format=fmt, dpi=90, bbox_inches="tight", pad_inches=0.08)
        plt.close(fig)


def plot_side_by_side(records: list[registry.LossRecord], path: str | os.PathLike,
                      fmt: str = "png", title: str | None = None) -> None:
    """Several losses in one figure, one column each: the loss on top, its gradient below."""
    from losskit.train.plots import _pyplot

    plt = _pyplot()
    width = max(3.2 * len(records), 4.5)  # inches; one loss still gets a readable title
    fig, axes = plt.subplots(2, len(records), figsize=(width, 5.2), squeeze=False)
    for column, record in enumerate(records):
        plot_curves(record, axes=(axes[0][column], axes[1][column]), points=121)
        axes[1][column].set_title(f"{record.name}: gradient", fontsize=9)
        axes[0][column].set_title(record.name, fontsize=9)
        axes[0][column].set_xlabel("")
        for ax in axes[:, column]:
            ax.xaxis.label.set_fontsize(7)
            ax.yaxis.label.set_fontsize(8)
            ax.tick_params(labelsize=7)
        # A long axis label wider than its column ran off the figure's right edge: wrap it to
        # the column (about 0.06 inch per character at 7 points).
        label = axes[1][column].get_xlabel()
        axes[1][column].set_xlabel(textwrap.fill(label, width=int(2.6 / 0.06)))
    if title:
        fig.suptitle(title)
    # Fixed margins: tight_layout costs seconds per figure on a busy machine. bbox_inches="tight"
    # still grows the saved canvas to hold anything the margins missed (one extra text layout).
    fig.subplots_adjust(left=0.75 / width, right=1 - 0.15 / width, top=0.88, bottom=0.12,
                        wspace=0.35, hspace=0.35)
    fig.savefig(path, format=fmt, dpi=80, bbox_inches="tight", pad_inches=0.08)
    plt.close(fig)


def families() -> dict[str, list[registry.LossRecord]]:
    """The registered losses by family, in registration order."""
    grouped: dict[str, list[registry.LossRecord]] = {}
    for record in registry.records():
        grouped.setdefault(record.family, []).append(record)
    return grouped


GALLERY_IMAGES = "images/gallery"  # under docs/, where docs/gallery.md finds the pictures

#: What a reader might not expect in a family's picture (written after looking at each one).
GALLERY_NOTES: dict[str, str] = {
    "classification": (
        "Two shapes surprise at first sight. Label smoothing gives cross-entropy a minimum at a "
        "finite logit: past it the gradient turns positive and pulls a confident logit back, "
        "which is the point of smoothing. Focal loss's gradient is not monotone: for a wrong "
        "prediction near logit -3 its pull is stronger than BCE's (gamma=0, -0.953 at -3): "
        "at its steepest -1.129 for gamma=2 (logit -2.79) and -1.3146 for gamma=5 (logit "
        "-2.94; -1.314 at -3), before it falls back to -1. Focal loss down-weights easy "
        "examples; it does not down-weight hard ones, and it is not convex. Poly-1 with a large "
        "epsilon does the same near the decision point: at epsilon=4 the pull reaches about "
        "-1.56 near logit 0.2 (epsilon p (1 - p) adds to cross-entropy's), and the loss is no "
        "longer convex there."),
    "contrastive": (
        "SupCon's gradient (tau=0.1) has a shoulder: the moving view is one positive of three "
        "for the other same-label views, whose two other positives sit at cosine 1. Their "
        "'out' form pulls each positive with a fixed 1/|P| share until its softmax weight "
        "catches up, so the pull stays between -1.8 and -1.6 from cosine 0.25 to 0.7 and only "
        "vanishes as the "
        "cosine reaches 1, while the moving view's own row (all its positives at cosine c) "
        "stops pulling past cosine 0.3 as InfoNCE's does. CLIP at its initial scale 14.3 is "
        "nearly a switch: almost no loss once the positive beats the zero-cosine negatives."),
    "distillation": (
        "JSD at beta=1 (reverse KL, mode-seeking) stops pulling a student that ignores the "
        "teacher's mode: for a class-0 logit far below the teacher's, the loss flattens near "
        "1.5 and the gradient goes to 0, while forward KL (beta=0, kd_loss at T=1) keeps a "
        "pull of about -0.79. The symmetric JSD (beta=0.5) fades the same way (it is bounded by "
        "ln 2). With the T^2 factor the KD curves agree near the teacher's logit for every T; "
        "T changes how far the pull reaches."),
    "preference": (
        "KTO's pull vanishes on both sides: a desirable answer far below the reference "
        "(log-ratio -10 at beta=2) gets almost no gradient, the sigmoid's saturation that also "
        "makes it robust to mislabelled examples. ORPO's NLL term never stops pulling: its "
        "gradient is -1 however likely the chosen answer already is, and the odds-ratio term "
        "adds to it, most where the chosen answer is unlikely."),
    "likelihood": (
        "Poisson NLL goes below zero (it drops the log(y!) term unless full=True) and its "
        "minimum sits at log-rate log(y); its gradient grows like exp(x) for too high a rate "
        "but is capped at -y for too low a one: asymmetric."),
    "margin": (
        "multi_margin_loss with p=2 (squared hinge) has a gradient that grows with the "
        "violation, unlike the p=1 hinge whose pull is flat."),
    "ranking": (
        "The triplet curves move the anchor along a line from the positive (0) towards the "
        "negative (2), 0.5 off that line: the loss is zero only while the anchor is near enough "
        "to the positive, then rises towards margin + 2 past the negative; the "
        "gradient is largest between the two, not at either end. With the L1 distance the "
        "pull is a flat 2 between the two and 0 past the negative, with the Euclidean a smooth "
        "bump."),
    "segmentation": (
        "Dice's pull on a confidently wrong pixel (logit -6, target 1) is nearly zero: the "
        "sigmoid saturates and, unlike BCE with logits, nothing cancels it. Its loss does not "
        "reach 0 even at a perfect pixel, because Dice pools the whole image and the other 9 "
        "pixels are held at logits +-2. Tversky against one pixel's probability is a ratio of "
        "two linear functions, so nearly straight; beta (false negatives) sets the slope for a "
        "missed foreground pixel. Focal Tversky's pull grows as the pixel gets better (for "
        "gamma > 1): (1 - TI)^(1/gamma - 1) rises as 1 - TI falls, so the classes nearly "
        "right are pushed hardest, the opposite of focal loss. Lovasz-softmax's gradient "
        "steps wherever the pixel's error passes another pixel's (at logits 1, 1.5, 2, 2.5 "
        "and 3 for the pixel labelled 1, mirrored for 0): "
        "the loss is piecewise linear in the sorted errors."),
    "sequence": (
        "With T=4 frames for a one-label target, CTC's gradient is zero near logit 0 and "
        "negative on both sides: at uniform outputs the expected number of label frames "
        "already equals the posterior's (2 of 4), a flat spot that T=1 and T=2 do not have. "
        "The loss is not convex in the logits."),
}


def write_gallery(image_dir: str | os.PathLike, page: str | os.PathLike | None = None,
                  notes: dict[str, str] | None = None) -> list[str]:
    """One picture per family (every loss side by side) into ``image_dir``, and the Markdown
    page ``page`` linking them (paths relative to the page). Returns the picture paths.

    ``notes`` (family -> text) adds a paragraph under a family's picture.
    """
    os.makedirs(image_dir, exist_ok=True)
    paths, sections = [], []
    for family, records in families().items():
        missing = [r.name for r in records if r.explain is None]
        if missing:
            raise KeyError(f"no explain data for {', '.join(missing)}. Fix: describe them in "
                           f"losskit/losses/{family}.py (docs/design.md, 'What a record needs "
                           f"for explain').")
        path = os.path.join(image_dir, f"{family}.png")
        plot_side_by_side(records, path, title=f"{family}: loss (top) and gradient (bottom)")
        paths.append(path)
        sections.append((family, records, path))
    if page is not None:
        _write_gallery_page(page, sections, notes or {})
    return paths


def _write_gallery_page(page, sections, notes: dict[str, str]) -> None:
    folder = os.path.dirname(os.path.abspath(page))
    lines = ["# Gallery: every loss and its gradient", "",
             "Generated from the loss registry by `losskit gallery` (`make gallery`); do not edit "
             "by hand. Each column is one loss: the loss on top, its gradient (autograd through "
             "the loss itself, float64) below, against the residual, logit or margin named on "
             "the axis, with the options that change the shape overlaid. "
             "`losskit explain LOSS` prints the formula, derivative and a worked example.", ""]
    for family, records, path in sections:
        rel = os.path.relpath(os.path.abspath(path), folder).replace(os.sep, "/")
        names = ", ".join(f"`{r.name}`" for r in records)
        lines += [f"## {family}", "", names, "", f"![{family} losses and gradients]({rel})", ""]
        if family in notes:
            lines += [notes[family], ""]
    with open(page, "w") as f:
        f.write("\n".join(lines))
