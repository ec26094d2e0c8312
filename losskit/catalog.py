"""Which loss fits which task: the data behind ``losskit losses``.

One :class:`TaskLosses` row per task says what the model outputs, what the target looks like
(dtype and shape), which losskit losses fit, and the mistake people make most with them.
:func:`print_table` renders the rows with rich; :func:`format_table` gives the same content as
plain text. docs/choosing-a-loss.md is the long form of this table.

>>> [row.task for row in select("class")][:2]
['binary classification', 'multi-class classification']
"""

from __future__ import annotations

import dataclasses
import io  # noqa: F401  (doctest namespace)
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rich.console import Console, Group
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

__all__ = [
    "CATALOG", "Loss", "TaskLosses", "build_blocks", "build_table", "format_registry",
    "format_table", "print_table", "registry_table", "select", "table_min_width",
]


@dataclass(frozen=True)
class Loss:
    """One loss as losskit names it: ``lk.<module>(<args>)`` and ``LF.<function>``."""

    module: str  # class in `losskit`, e.g. "CrossEntropyLoss"
    function: str  # function in `losskit.functional`, e.g. "cross_entropy"
    args: str = ""  # the constructor arguments that matter for the task, e.g. "ignore_index=-100"

    def __str__(self) -> str:
        return f"lk.{self.module}({self.args}) / LF.{self.function}"


@dataclass(frozen=True)
class TaskLosses:
    """One row of the table: a task and the losses that fit it."""

    task: str
    output: str  # what the model's last layer returns, with its shape
    target: str  # the target's dtype and shape
    losses: tuple[Loss, ...]
    notes: str  # when to use which, and the pitfall


CATALOG: tuple[TaskLosses, ...] = (
    TaskLosses(
        task="regression",
        output="(N,) or (N, D) float, no activation",
        target="float, same shape as the output",
        losses=(
            Loss("MSELoss", "mse_loss"),
            Loss("L1Loss", "l1_loss"),
            Loss("HuberLoss", "huber_loss", "delta=1.0"),
            Loss("SmoothL1Loss", "smooth_l1_loss", "beta=1.0"),
        ),
        notes=(
            "MSE fits the conditional mean and is the default for Gaussian-like noise; L1 fits "
            "the median; Huber is quadratic for |error| < delta and linear beyond; SmoothL1 = "
            "Huber / beta. Pitfall: an (N, 1) output against an (N,) target broadcasts to (N, N) "
            "in torch; losskit raises."
        ),
    ),
    TaskLosses(
        task="regression with outliers",
        output="(N,) or (N, D) float, no activation",
        target="float, same shape as the output",
        losses=(
            Loss("HuberLoss", "huber_loss", "delta=1.0"),
            Loss("L1Loss", "l1_loss"),
            Loss("SmoothL1Loss", "smooth_l1_loss", "beta=1.0"),
        ),
        notes=(
            "A squared error lets a few large residuals dominate the gradient; Huber and L1 "
            "grow linearly instead. delta is in target units: standardise the targets or pick "
            "delta near the typical size of a normal residual."
        ),
    ),
    TaskLosses(
        task="binary classification",
        output="(N,) float logits: one logit per sample, no sigmoid",
        target="float 0./1., shape (N,)",
        losses=(
            Loss("BCEWithLogitsLoss", "binary_cross_entropy_with_logits"),
            Loss("BCELoss", "binary_cross_entropy"),
        ),
        notes=(
            "Use BCEWithLogitsLoss on raw logits (stable for any logit). BCELoss only on "
            "probabilities after a sigmoid; its log is clamped at -100. Pitfall: a sigmoid before "
            "BCEWithLogitsLoss (losskit warns); integer or {-1, 1} targets (losskit raises)."
        ),
    ),
    TaskLosses(
        task="multi-class classification",
        output="(N, C) float logits, no softmax",
        target="int64 class indices in [0, C), shape (N,)",
        losses=(
            Loss("CrossEntropyLoss", "cross_entropy"),
            Loss("NLLLoss", "nll_loss"),
        ),
        notes=(
            "CrossEntropyLoss applies log_softmax itself. NLLLoss only on log_softmax output. "
            "Pitfall: a softmax before the loss (losskit warns); targets shaped (N, 1), float or "
            "one-hot (losskit raises)."
        ),
    ),
    TaskLosses(
        task="multi-class with soft labels or label smoothing",
        output="(N, C) float logits, no softmax",
        target="float probabilities (N, C), rows sum to 1; or int64 (N,) with label_smoothing",
        losses=(
            Loss("CrossEntropyLoss", "cross_entropy"),
            Loss("CrossEntropyLoss", "cross_entropy", "label_smoothing=0.1"),
        ),
        notes=(
            "A target with the input's shape is read as class probabilities (mixup, "
            "distillation targets); 'mean' then divides by N, not by the class weights. "
            "label_smoothing=eps mixes eps/C into every class. Pitfall: rows that do not sum to "
            "1 (losskit warns)."
        ),
    ),
    TaskLosses(
        task="multi-label classification",
        output="(N, C) float logits, one per label, no sigmoid",
        target="float 0./1., shape (N, C)",
        losses=(Loss("BCEWithLogitsLoss", "binary_cross_entropy_with_logits", "pos_weight=pw"),),
        notes=(
            "Each label is its own binary problem; do not use CrossEntropyLoss (it makes the "
            "labels compete). pos_weight has shape (C,), e.g. negatives/positives per label, "
            "and scales only the positive term."
        ),
    ),
    TaskLosses(
        task="imbalanced classification",
        output="logits as for binary, multi-class or multi-label",
        target="as for that task",
        losses=(
            Loss("FocalLoss", "focal_loss", "alpha=0.25, gamma=2.0"),
            Loss("CrossEntropyLoss", "cross_entropy", "weight=w"),
            Loss("BCEWithLogitsLoss", "binary_cross_entropy_with_logits", "pos_weight=pw"),
        ),
        notes=(
            "Class weights w (C,) reweight the rare classes; the weighted mean divides by the sum "
            "of w[y] over the batch. FocalLoss down-weights easy examples by (1 - p_t)^gamma. "
            "Judge the result with per-class recall or F1, not accuracy."
        ),
    ),
    TaskLosses(
        task="language modelling",
        output="(B, T, V) float logits, or hidden states flattened to (B*T, D) for a (V, D) head",
        target="int64 next-token ids, shape (B, T), padding = -100",
        losses=(
            Loss("CrossEntropyLoss", "cross_entropy", "ignore_index=-100"),
            Loss("LinearCrossEntropyLoss", "linear_cross_entropy", "ignore_index=-100"),
        ),
        notes=(
            "Flatten to logits (B*T, V) and target (B*T,), or move the classes to dim 1: "
            "(B, V, T). Padding tokens set to ignore_index do not count in the mean. For a "
            "large V, LinearCrossEntropyLoss(D, V) owns the head and never builds the (B*T, V) "
            "logits; LF.linear_cross_entropy(hidden, head.weight, target) takes it. Pitfall: "
            "(B, T, V) logits with a (B, T) target (losskit raises, naming both fixes)."
        ),
    ),
    TaskLosses(
        task="semantic segmentation",
        output="(N, C, H, W) float logits, no softmax",
        target="int64 class per pixel, shape (N, H, W)",
        losses=(
            Loss("CrossEntropyLoss", "cross_entropy", "ignore_index=255"),
            Loss("DiceLoss", "dice_loss", "ignore_index=255"),
        ),
        notes=(
            "Cross-entropy per pixel, often added to Dice, which measures overlap per class and "
            "copes with small foreground classes. Mark unlabelled pixels with ignore_index "
            "(255 in many datasets) in both losses."
        ),
    ),
    TaskLosses(
        task="distribution matching / distillation",
        output="(N, C) log-probabilities: log_softmax(student_logits / T)",
        target="float probabilities (N, C): softmax(teacher_logits / T)",
        losses=(Loss("KLDivLoss", "kl_div", 'reduction="batchmean"'),),
        notes=(
            "The input must be log-probabilities; the target probabilities, or log-probabilities "
            "with log_target=True. 'batchmean' gives the KL per sample; 'mean' divides by N*C as "
            "well. Multiply by T**2 to keep gradient scale when distilling at temperature T."
        ),
    ),
    TaskLosses(
        task="speech / handwriting recognition (CTC)",
        output="(T, N, C) float log-probabilities: log_softmax(2) of the scores, time first",
        target=(
            "int64 label sequences without the blank: padded (N, S) or concatenated 1-D, "
            "with input_lengths and target_lengths (N,)"
        ),
        losses=(Loss("CTCLoss", "ctc_loss", "blank=0"),),
        notes=(
            "CTC sums over every alignment of the labels to the frames, so no per-frame labels "
            "are needed. 'mean' divides each sample's loss by its target length, then averages. "
            "A sample needs as many frames as labels plus adjacent repeats, else its loss is inf "
            "(zero_infinity=True zeroes it). Pitfall: batch-first (N, T, C) output (losskit "
            "raises), raw scores without log_softmax (losskit warns), the blank used as a label "
            "(losskit raises)."
        ),
    ),
    TaskLosses(
        task="ranking pairs",
        output="two (N,) float scores: one per item of each pair, no activation",
        target="float -1./1., shape (N,): 1 where the first item ranks higher",
        losses=(Loss("MarginRankingLoss", "margin_ranking_loss", "margin=0.5"),),
        notes=(
            "Each pair should be ordered by at least margin; the loss is 0 for pairs already "
            "ordered that well. Pitfall: 0/1 labels (a 0 gives a constant, zero-gradient loss: "
            "use 2 * target - 1; losskit raises); (N, 1) scores against (N,) labels."
        ),
    ),
    TaskLosses(
        task="metric learning / embeddings",
        output="(N, D) float embeddings (anchor, positive, negative), or pairs of them",
        target="none for triplets; float -1./1., shape (N,), for pairs (1 = similar)",
        losses=(
            Loss("TripletMarginLoss", "triplet_margin_loss", "margin=1.0"),
            Loss("TripletMarginWithDistanceLoss", "triplet_margin_with_distance_loss",
                 "margin=0.5"),
            Loss("CosineEmbeddingLoss", "cosine_embedding_loss", "margin=0.2"),
            Loss("HingeEmbeddingLoss", "hinge_embedding_loss", "margin=1.0"),
        ),
        notes=(
            "Triplets pull each anchor nearer its positive than its negative by margin (p-norm, "
            "or any distance_function); CosineEmbeddingLoss takes labelled pairs; "
            "HingeEmbeddingLoss takes a distance per pair. Pitfall: 0/1 pair labels (losskit "
            "raises), and triplets of different shapes, which torch broadcasts silently."
        ),
    ),
    TaskLosses(
        task="count prediction",
        output="(N,) or (N, D) float log-rates, no activation",
        target="float counts >= 0, same shape as the output",
        losses=(Loss("PoissonNLLLoss", "poisson_nll_loss"),),
        notes=(
            "Poisson NLL: the model outputs log(rate) (log_input=True, the default) and "
            "exp(output) is the predicted mean count. With log_input=False the output is the rate "
            "itself and must be >= 0 (losskit raises on negatives). full=True adds the Stirling "
            "term, a constant in the input. Pitfall: standardised or negative counts (losskit "
            "warns)."
        ),
    ),
    TaskLosses(
        task="predictive uncertainty",
        output="two heads of the same shape: mean (N, D) and variance (N, D) > 0",
        target="float, same shape as the mean",
        losses=(Loss("GaussianNLLLoss", "gaussian_nll_loss"),),
        notes=(
            "Gaussian NLL fits a mean and a variance per element: residuals are down-weighted "
            "where the predicted variance is large. Make the variance positive with "
            "softplus(raw) + 1e-6 or exp(log_var); var may also be (N,) or (N, 1), one per "
            "sample. Pitfall: a raw head with negative variances (losskit raises, as torch)."
        ),
    ),
    TaskLosses(
        task="margin classification (hinge, SVM-style)",
        output="(N, C) float scores, no activation; (N,) for two classes",
        target=(
            "MultiMargin: int64 class indices (N,); MultiLabelMargin: int64 (N, C) label lists "
            "padded with -1; SoftMargin: float -1./1. (N,); MultiLabelSoftMargin: float 0./1. "
            "(N, C)"
        ),
        losses=(
            Loss("MultiMarginLoss", "multi_margin_loss", "margin=1.0"),
            Loss("MultiLabelMarginLoss", "multilabel_margin_loss"),
            Loss("SoftMarginLoss", "soft_margin_loss"),
            Loss("MultiLabelSoftMarginLoss", "multilabel_soft_margin_loss"),
        ),
        notes=(
            "The hinge losses stop pushing once the true class beats the others by the margin "
            "(p=2 squares the hinge); the soft-margin losses are logistic and never quite stop. "
            "Pitfall: {0, 1} labels for SoftMarginLoss, multi-hot rows for MultiLabelMarginLoss, "
            "(N, 1) targets for MultiMarginLoss (losskit raises, with the conversion)."
        ),
    ),
    TaskLosses(
        task="contrastive representation learning",
        output="(N, D) float embeddings of two views (or image and text); SupCon: (N, V, D)",
        target="none (row i of each view is a positive pair); SupCon: int64 labels (N,) or none",
        losses=(),  # InfoNCELoss, ClipLoss, SupConLoss join from their records (contrastive.py)
        notes=(
            "InfoNCE / NT-Xent (SimCLR) contrasts two augmented views, the other 2N - 2 rows "
            "being negatives; ClipLoss is the symmetric image-text form with a learnt scale; "
            "SupConLoss makes same-label samples positives. Bigger batches give more negatives: "
            "chunk_size=1024 keeps memory flat in N, gather=True uses every rank's rows. "
            "Pitfall: temperature 1 on cosine similarities (losskit warns), views of different "
            "shapes or one transposed (losskit raises)."
        ),
    ),
    TaskLosses(
        task="preference optimisation (RLHF / alignment)",
        output=(
            "per-sequence log-probabilities (B,) of the chosen and the rejected answer: summed "
            "over the answer's tokens (DPO, KTO) or their mean (SimPO, ORPO); or hidden states "
            "(B, S, H) with the head (V, H)"
        ),
        target=(
            "none: the chosen answer comes first; the frozen reference model's log-probabilities "
            "(B,) for DPO and KTO; KTO: bool (B,), True = desirable"
        ),
        losses=(),  # from the records (losskit/losses/preference.py)
        notes=(
            "DPO needs a frozen reference model; SimPO and ORPO need none (ORPO adds the SFT "
            "loss, so it can start from a base model); KTO takes unpaired thumbs-up/down data. "
            "LinearPreferenceLoss takes hidden states and never builds the (B, S, V) logits. "
            "Pitfall: reference log-probs that require grad (losskit warns), per-token (B, S) "
            "log-probs or probabilities instead of log-probabilities (losskit raises)."
        ),
    ),
)


def _with_registered(rows: tuple[TaskLosses, ...]) -> tuple[TaskLosses, ...]:
    """Each row plus the losses whose registry record names the row's task
    (:attr:`losskit.registry.LossRecord.catalog`), so a new loss joins a task from its record."""
    from losskit import registry

    out = []
    for row in rows:
        extra = tuple(
            Loss(record.module.__name__, record.name, args)
            for record in registry.records()
            for task, args in record.catalog
            if task == row.task
        )
        out.append(dataclasses.replace(row, losses=row.losses + extra) if extra else row)
    return tuple(out)


CATALOG = _with_registered(CATALOG)


def select(task: str | None = None) -> tuple[TaskLosses, ...]:
    """The rows whose task name contains ``task`` (case-insensitive); all rows for None.

    Raises:
        ValueError: no task matches; the message lists the known tasks.

    >>> [row.task for row in select("LANGUAGE")]
    ['language modelling']
    """
    if task is None:
        return CATALOG
    wanted = task.strip().lower()
    rows = tuple(row for row in CATALOG if wanted in row.task.lower())
    if not rows:
        known = ", ".join(repr(row.task) for row in CATALOG)
        raise ValueError(
            f"task={task!r} matches no task in the loss table. Known tasks: {known}. "
            f"Fix: pass part of one of these names, e.g. 'segmentation'."
        )
    return rows


def _longest_word(cells: list[str]) -> int:
    """Width of the longest space-free run in ``cells``: the narrowest a column may get before
    rich has to break a word."""
    return max(len(word) for cell in cells for word in cell.split())


def build_table(task: str | None = None, width: int | None = None) -> Table:
    """The rows as a :class:`rich.table.Table` (one loss per line in the loss column), sized for
    a console ``width`` columns wide (None: the narrowest that breaks no word).

    Every column is at least as wide as its longest word (the loss column: its longest line), so
    rich wraps between words and never inside one; below :func:`table_min_width` columns use
    :func:`build_blocks`.
    """
    cells = [(r.task, r.output, r.target, _losses_cell(r), r.notes) for r in select(task)]
    columns = [("task", 2), ("model output", 3), ("target", 3), ("loss", 4), ("notes", 6)]
    return _sized_table("Which loss for which task", columns, cells, width, lines_fit=(3,))


def _sized_table(title: str, columns: list[tuple[str, int]], cells: Sequence[Sequence[str]],
                 width: int | None, lines_fit: tuple[int, ...] = ()) -> Table:
    """A table whose column ``i`` is its longest word wide (its longest line for ``i`` in
    ``lines_fit``) plus its ratio's share of whatever ``width`` leaves over.

    Widths are set here, not by rich's ratios: rich gives a ratio column its share even below
    that column's ``min_width``, and then breaks words.
    """
    mins = []
    for i, _ in enumerate(columns):
        column = [row[i] for row in cells]
        lines = "\n".join(column).splitlines() if i in lines_fit else []
        mins.append(max([_longest_word(column), *map(len, lines)]))
    spare = max(0, (width or 0) - _table_width(mins))
    total = sum(ratio for _, ratio in columns)
    table = Table(title=title, show_lines=True)
    for (name, ratio), least in zip(columns, mins, strict=True):
        table.add_column(name, width=least + spare * ratio // total, overflow="fold")
    for row in cells:
        # Text, not markup: "w[y]" must not be read as a rich style tag.
        table.add_row(*(Text(cell) for cell in row))
    return table


def _table_width(widths: list[int]) -> int:
    """Console columns a table with these column widths takes: one space of padding each side
    of every column, and the borders (one more than the columns)."""
    return sum(w + 3 for w in widths) + 1


def table_min_width(table: Table) -> int:
    """The narrowest console that shows ``table`` (built with ``width=None``) without breaking a
    word."""
    return _table_width([column.width or 0 for column in table.columns])


def build_blocks(task: str | None = None) -> Group:
    """The rows for a narrow terminal: one block per task, a label column beside wrapped text.

    >>> console = Console(file=io.StringIO(), width=60)
    >>> console.print(build_blocks("distillation"))
    >>> print(console.file.getvalue().splitlines()[0])
    distribution matching / distillation
    """
    blocks: list[Any] = []
    for row in select(task):
        grid = Table.grid(padding=(0, 1))
        grid.add_column(style="bold", no_wrap=True)  # the labels
        grid.add_column(ratio=1)
        grid.add_row("model output", Text(row.output))
        grid.add_row("target", Text(row.target))
        grid.add_row("loss", Text("\n".join(str(loss) for loss in row.losses)))
        grid.add_row("notes", Text(row.notes))
        blocks += [Text(row.task, style="bold underline"), Padding(grid, (0, 0, 1, 2))]
    return Group(*blocks)


def _losses_cell(row: TaskLosses) -> str:
    return "\n".join(line for loss in row.losses for line in _loss_lines(loss))


def _loss_lines(loss: Loss) -> list[str]:
    """``lk.Module`` / ``  args`` / ``  LF.function``: short lines for a narrow table column."""
    args = [f"  {loss.args}"] if loss.args else []
    return [f"lk.{loss.module}", *args, f"  LF.{loss.function}"]


def print_table(console: Console | None = None, task: str | None = None) -> None:
    """Print the rows (all tasks, or those matching ``task``) to ``console`` (stdout by default):
    the table where the console is wide enough for it (:func:`table_min_width`, about 150
    columns for every task), one block per task below that. No layout breaks a word.

    >>> console = Console(file=io.StringIO(), width=160)
    >>> print_table(console, task="distillation")
    >>> "KLDivLoss" in console.file.getvalue()
    True
    """
    console = console or Console()
    if console.width >= table_min_width(build_table(task)):
        console.print(build_table(task, console.width))
    else:
        console.print(build_blocks(task))


def format_table(task: str | None = None) -> str:
    """The table as plain text, one block per task; for tests, files and pipes.

    >>> text = format_table("multi-label")
    >>> print(text.splitlines()[0])
    multi-label classification
    >>> "BCEWithLogitsLoss" in text
    True
    """
    blocks = []
    for row in select(task):
        lines = [
            row.task,
            f"  model output: {row.output}",
            f"  target:       {row.target}",
            *(f"  loss:         {loss}" for loss in row.losses),
            f"  notes:        {row.notes}",
        ]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


# ----------------------------------------------------------------------------------------------
# Every loss, from the registry (``losskit losses --all``)


def _registry_rows() -> list[tuple[str, ...]]:
    from losskit import registry

    return [
        (record.family, f"lk.{record.module.__name__}\nLF.{record.name}",
         record.input, ", ".join(record.targets), record.summary)
        for record in registry.records()
    ]


def registry_table(width: int | None = None) -> Table:
    """Every registered loss, family by family: its names, input and target kinds, summary;
    sized as :func:`build_table`."""
    columns = [("family", 1), ("loss", 3), ("input", 2), ("target", 3), ("what it is", 6)]
    return _sized_table("Every losskit loss", columns, _registry_rows(), width, lines_fit=(1,))


def format_registry() -> str:
    """:func:`registry_table` as plain text, one line per loss.

    >>> print(format_registry().splitlines()[0])
    binary: lk.BCELoss / LF.binary_cross_entropy (probabilities -> binary): ...
    """
    lines = []
    for family, names, input, targets, summary in _registry_rows():
        module, function = names.split("\n")
        lines.append(f"{family}: {module} / {function} ({input} -> {targets}): {summary}")
    return "\n".join(lines) + "\n"
