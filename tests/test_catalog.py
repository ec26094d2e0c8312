"""The loss table behind `losskit losses`: every row names real losses, and every row works.

Each row is run as it describes itself: inputs of the stated shape and dtype go through the
named Module built from the row's own argument string, the named function must give the same
number, the value must match a float64 reference (tests/oracle.py), and no LossWarning may appear
(healthy input, as the table recommends it, must be quiet).
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import io
import re
import warnings
from pathlib import Path

import cases
import oracle
import pytest
import torch
from rich.console import Console

import losskit as lk
import losskit.functional as LF
from losskit import registry
from losskit.catalog import CATALOG, Loss, TaskLosses, format_table, print_table, select

# The public API (docs/design.md): each Module and the function it wraps, from the loss registry
# (not from the catalog), so a row that pairs a Module with the wrong function fails.
DESIGN_PAIRS = {r.module.__name__: r.name for r in registry.records()}

REQUIRED_TASKS = [
    "regression", "outliers", "binary", "multi-class", "soft labels", "label smoothing",
    "multi-label", "imbalanced", "language modelling", "segmentation", "distillation",
    "ranking", "metric learning",
]

ALL_LOSSES = [(row.task, loss) for row in CATALOG for loss in row.losses]


def _id(item: tuple[str, Loss]) -> str:
    task, loss = item
    return f"{task}:{loss.module}({loss.args})"


# ----------------------------------------------------------------------------------------------
# Inputs for each task, shaped and typed exactly as the row says. N=6 samples, C=3 classes.

N, C = 6, 3
NAMES = {"w": torch.tensor([1.0, 2.0, 5.0]), "pw": torch.tensor([1.0, 3.0, 9.0])}


def _regression(g: torch.Generator, loss: Loss) -> tuple:
    pred = torch.randn(N, generator=g)  # (N,)
    target = pred + torch.randn(N, generator=g)
    target[0] += 25.0  # an outlier: must not trip any check
    return pred, target


def _binary(g: torch.Generator, loss: Loss) -> tuple:
    logits = torch.randn(20, generator=g) * 3  # (N,): one logit per sample
    target = (torch.rand(20, generator=g) < 0.5).float()  # (N,) float 0./1.
    if loss.module == "BCELoss":
        return torch.sigmoid(logits), target
    return logits, target


def _multiclass(g: torch.Generator, loss: Loss) -> tuple:
    logits = torch.randn(N, C, generator=g)  # (N, C)
    target = torch.randint(0, C, (N,), generator=g)  # (N,) int64
    if loss.module == "NLLLoss":
        return torch.log_softmax(logits, dim=1), target
    return logits, target


def _soft_labels(g: torch.Generator, loss: Loss) -> tuple:
    logits = torch.randn(N, C, generator=g)  # (N, C)
    if "label_smoothing" in loss.args:
        return logits, torch.randint(0, C, (N,), generator=g)  # (N,) int64
    return logits, torch.softmax(torch.randn(N, C, generator=g), dim=1)  # (N, C) rows sum to 1


def _multilabel(g: torch.Generator, loss: Loss) -> tuple:
    logits = torch.randn(N, C, generator=g) * 3  # (N, C)
    return logits, (torch.rand(N, C, generator=g) < 0.3).float()  # (N, C) float 0./1.


def _imbalanced(g: torch.Generator, loss: Loss) -> tuple:
    if loss.module == "BCEWithLogitsLoss":
        return _multilabel(g, loss)
    logits = torch.randn(N, C, generator=g)  # (N, C)
    return logits, torch.tensor([0, 0, 0, 0, 1, 2])  # (N,) int64, class 0 dominates


def _language_modelling(g: torch.Generator, loss: Loss) -> tuple:
    B, T, V, D = 2, 5, 11, 4
    target = torch.randint(0, V, (B, T), generator=g)  # (B, T) int64
    target[1, 3:] = -100  # padding
    if loss.module == "LinearCrossEntropyLoss":
        hidden = torch.randn(B * T, D, generator=g)  # (B*T, D)
        head = torch.randn(V, D, generator=g)  # (V, D)
        return hidden, head, target.reshape(B * T)  # (B*T,)
    logits = torch.randn(B, T, V, generator=g)  # (B, T, V)
    return logits.reshape(B * T, V), target.reshape(B * T)  # (B*T, V), (B*T,)


def _segmentation(g: torch.Generator, loss: Loss) -> tuple:
    logits = torch.randn(2, C, 4, 5, generator=g)  # (N, C, H, W)
    target = torch.randint(0, C, (2, 4, 5), generator=g)  # (N, H, W) int64
    target[0, 0, :] = 255  # unlabelled pixels
    return logits, target


def _distillation(g: torch.Generator, loss: Loss) -> tuple:
    temperature = 2.0
    student, teacher = torch.randn(N, C, generator=g), torch.randn(N, C, generator=g)
    log_p = torch.log_softmax(student / temperature, dim=1)  # (N, C) log-probabilities
    q = torch.softmax(teacher / temperature, dim=1)  # (N, C) probabilities
    return log_p, q


def _ctc(g: torch.Generator, loss: Loss) -> tuple:
    T, B, V = 12, 3, 6  # frames, batch, classes with the blank 0
    log_probs = torch.randn(T, B, V, generator=g).log_softmax(2)  # (T, N, C)
    targets = torch.randint(1, V, (B, 4), generator=g)  # (N, S) int64 labels without the blank
    return log_probs, targets, torch.tensor([12, 10, 9]), torch.tensor([4, 3, 2])
def _ranking_pairs(g: torch.Generator, loss: Loss) -> tuple:
    scores1, scores2 = torch.randn(N, generator=g), torch.randn(N, generator=g)  # (N,) each
    target = torch.tensor([1.0, -1.0, 1.0, 1.0, -1.0, -1.0])  # (N,) float -1./1.
    return scores1, scores2, target


def _metric_learning(g: torch.Generator, loss: Loss) -> tuple:
    D = 8
    anchor = torch.randn(N, D, generator=g)  # (N, D)
    other = anchor + 0.5 * torch.randn(N, D, generator=g)  # (N, D): a positive or a pair
    target = torch.tensor([1.0, -1.0, 1.0, 1.0, -1.0, -1.0])  # (N,) float -1./1. (pairs)
    if loss.module == "CosineEmbeddingLoss":
        return anchor, other, target
    if loss.module == "HingeEmbeddingLoss":
        return (anchor - other).norm(dim=1), target  # (N,) distances
    return anchor, other, torch.randn(N, D, generator=g)  # (N, D) each: a triplet
def _counts(g: torch.Generator, loss: Loss) -> tuple:
    log_rate = torch.randn(N, generator=g)  # (N,) float log-rates
    return log_rate, torch.poisson(log_rate.exp(), generator=g)  # (N,) float counts >= 0


def _uncertainty(g: torch.Generator, loss: Loss) -> tuple:
    D = 2
    mean = torch.randn(N, D, generator=g)  # (N, D) mean head
    var = torch.nn.functional.softplus(torch.randn(N, D, generator=g)) + 1e-6  # (N, D) > 0
    return mean, mean + var.sqrt() * torch.randn(N, D, generator=g), var


def _margin(g: torch.Generator, loss: Loss) -> tuple:
    scores = torch.randn(N, C, generator=g)  # (N, C)
    if loss.module == "MultiMarginLoss":
        return scores, torch.randint(0, C, (N,), generator=g)  # (N,) int64
    if loss.module == "MultiLabelMarginLoss":
        labels = torch.tensor([[0, -1, -1], [2, 1, -1], [1, -1, -1]] * (N // 3))  # (N, C) int64
        return scores, labels
    if loss.module == "SoftMarginLoss":
        return scores[:, 0], torch.tensor([1.0, -1.0, -1.0, 1.0, 1.0, -1.0])  # (N,) -1./1.
    return scores, (torch.rand(N, C, generator=g) < 0.5).float()  # (N, C) float 0./1.


def _contrastive(g: torch.Generator, loss: Loss) -> tuple:
    D = 8
    z1 = torch.randn(N, D, generator=g)  # (N, D): first view (or images)
    z2 = z1 + 0.5 * torch.randn(N, D, generator=g)  # (N, D): second view (or captions)
    if loss.module == "SupConLoss":
        return torch.stack([z1, z2], dim=1), torch.randint(0, C, (N,), generator=g)  # (N, 2, D)
    return z1, z2


EXAMPLES = {
    "regression": _regression,
    "regression with outliers": _regression,
    "binary classification": _binary,
    "multi-class classification": _multiclass,
    "multi-class with soft labels or label smoothing": _soft_labels,
    "multi-label classification": _multilabel,
    "imbalanced classification": _imbalanced,
    "language modelling": _language_modelling,
    "semantic segmentation": _segmentation,
    "distribution matching / distillation": _distillation,
    "speech / handwriting recognition (CTC)": _ctc,
    "ranking pairs": _ranking_pairs,
    "metric learning / embeddings": _metric_learning,
    "count prediction": _counts,
    "predictive uncertainty": _uncertainty,
    "margin classification (hinge, SVM-style)": _margin,
    "contrastive representation learning": _contrastive,
}


def _kwargs(loss: Loss) -> dict:
    """The row's argument string as keyword arguments (`w`, `pw` name the example tensors)."""
    return eval(f"dict({loss.args})", {"torch": torch}, dict(NAMES))


def _reference(loss: Loss, inputs: tuple, kwargs: dict) -> torch.Tensor:
    """float64 value of the loss from tests/oracle.py (torch in float64 or the formula)."""
    if loss.module == "LinearCrossEntropyLoss":
        hidden, head, target = inputs
        logits = oracle.to64(hidden) @ oracle.to64(head).T  # (B*T, V)
        return oracle.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                                    **kwargs)
    if loss.module == "FocalLoss":
        return oracle.focal_multiclass(*inputs, **kwargs)
    if loss.module == "DiceLoss":
        return oracle.dice(*inputs, **kwargs)
    if hasattr(oracle, loss.function):
        return getattr(oracle, loss.function)(*inputs, **kwargs)
    # A loss without a torch twin: the formula its case table (tests/cases/) compares with.
    reference = next(c.reference for c in cases.ALL if c.loss == loss.function and c.reference)
    return reference(*(oracle.to64(t) for t in inputs), **kwargs)


# ----------------------------------------------------------------------------------------------
# Every row names real losses


@pytest.mark.parametrize("item", ALL_LOSSES, ids=_id)
def test_row_names_a_losskit_module_and_its_function(item: tuple[str, Loss]) -> None:
    _, loss = item
    module = getattr(lk, loss.module)
    assert isinstance(module, type) and issubclass(module, torch.nn.Module)
    assert loss.module in lk.__all__
    assert callable(getattr(LF, loss.function))
    assert loss.function in LF.__all__
    assert DESIGN_PAIRS[loss.module] == loss.function


@pytest.mark.parametrize("item", ALL_LOSSES, ids=_id)
def test_row_arguments_are_constructor_arguments(item: tuple[str, Loss]) -> None:
    _, loss = item
    params = inspect.signature(getattr(lk, loss.module)).parameters
    for name in _kwargs(loss):
        assert name in params, f"{loss.module} has no argument {name!r}"


def test_every_required_task_has_a_row() -> None:
    tasks = [row.task for row in CATALOG]
    for wanted in REQUIRED_TASKS:
        assert any(wanted in task for task in tasks), wanted
    assert len(set(tasks)) == len(tasks), "task names must be unique"
    assert set(EXAMPLES) == set(tasks), "every row needs an example in this file"


def test_rows_are_frozen() -> None:
    row = CATALOG[0]
    assert isinstance(row, TaskLosses)
    with pytest.raises(dataclasses.FrozenInstanceError):
        row.task = "something else"  # type: ignore[misc]


# ----------------------------------------------------------------------------------------------
# Every row works as it describes itself


def _owning_head(inputs: tuple, kwargs: dict) -> torch.nn.Module:
    """LinearCrossEntropyLoss(D, V, **row args) with the example's head in its linear layer."""
    _, head, _ = inputs
    module = lk.LinearCrossEntropyLoss(head.shape[1], head.shape[0], **kwargs)
    with torch.no_grad():
        module.linear.weight.copy_(head)
    return module


@pytest.mark.parametrize("item", ALL_LOSSES, ids=_id)
def test_row_runs_quietly_and_matches_the_reference(item: tuple[str, Loss], gen) -> None:
    task, loss = item
    inputs = EXAMPLES[task](gen, loss)
    kwargs = _kwargs(loss)
    with warnings.catch_warnings():
        warnings.simplefilter("error", lk.LossWarning)
        with lk.checks("always"):
            module = eval(f"lk.{loss.module}({loss.args})", {"lk": lk}, dict(NAMES)) \
                if loss.module != "LinearCrossEntropyLoss" else _owning_head(inputs, kwargs)
            by_module = module(*inputs) if loss.module != "LinearCrossEntropyLoss" \
                else module(inputs[0], inputs[2])
            by_function = getattr(LF, loss.function)(*inputs, **kwargs)
    expected = _reference(loss, inputs, kwargs)
    assert by_module.dim() == 0 and torch.isfinite(by_module)
    torch.testing.assert_close(by_function, by_module, rtol=0, atol=0)
    torch.testing.assert_close(by_module.double(), expected, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# Filtering and rendering


def test_no_filter_gives_every_row_and_the_text_names_every_task() -> None:
    assert select() == CATALOG
    text = format_table()
    for row in CATALOG:
        assert f"\n{row.task}\n" in f"\n{text}"
        for loss in row.losses:
            assert f"lk.{loss.module}({loss.args}) / LF.{loss.function}" in text


def test_filter_is_a_case_insensitive_substring() -> None:
    assert [row.task for row in select("SEGMENT")] == ["semantic segmentation"]
    assert [row.task for row in select("  Language ")] == ["language modelling"]
    assert [row.task for row in select("regression")] == [
        "regression", "regression with outliers"
    ]
    text = format_table("distill")
    assert text.splitlines()[0] == "distribution matching / distillation"
    assert "KLDivLoss" in text and "CrossEntropyLoss" not in text


@pytest.mark.parametrize("call", [select, format_table, lambda t: print_table(
    Console(file=io.StringIO()), task=t)])
def test_unknown_task_raises_naming_the_known_tasks(call) -> None:
    with pytest.raises(ValueError, match="'object detection'") as err:
        call("object detection")
    for row in CATALOG:
        assert repr(row.task) in str(err.value)


def test_print_table_renders_every_loss_without_eating_brackets() -> None:
    console = Console(file=io.StringIO(), width=250, color_system=None)
    print_table(console)
    out = console.file.getvalue()
    for row in CATALOG:
        for loss in row.losses:
            assert f"lk.{loss.module}" in out and f"LF.{loss.function}" in out
    assert "w[y]" in out  # rich markup would swallow "[y]"
    assert "[0, C)" in out


def test_print_table_filters() -> None:
    console = Console(file=io.StringIO(), width=250, color_system=None)
    print_table(console, task="multi-label")
    out = console.file.getvalue()
    assert "multi-label" in out and "BCEWithLogitsLoss" in out
    assert "KLDivLoss" not in out and "regression" not in out


# ----------------------------------------------------------------------------------------------
# docs/choosing-a-loss.md is the long form of the table: same rows, and its snippets run

CHOOSING = Path(__file__).resolve().parent.parent / "docs" / "choosing-a-loss.md"


def _markdown_row(row: TaskLosses) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    losses = "<br>".join(f"`lk.{x.module}({x.args})` / `LF.{x.function}`" for x in row.losses)
    cells = [row.task, cell(row.output), cell(row.target), losses, cell(row.notes)]
    return "| " + " | ".join(cells) + " |"


def test_docs_table_has_exactly_the_catalog_rows() -> None:
    lines = CHOOSING.read_text().splitlines()
    header = lines.index("| task | model output | target | loss | notes |")
    table = lines[header + 2 : header + 2 + len(CATALOG) + 1]
    assert table[:-1] == [_markdown_row(row) for row in CATALOG]
    assert not table[-1].startswith("|"), "the docs table has a row the catalog does not"


def test_docs_snippets_run_without_warnings() -> None:
    blocks = re.findall(r"```python\n(.*?)```", CHOOSING.read_text(), flags=re.S)
    assert len(blocks) >= len(CATALOG)
    namespace: dict = {}
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("error")
        for code in blocks:
            exec(compile(code, str(CHOOSING), "exec"), namespace)


def test_every_registered_loss_is_listed_and_has_a_task_row():
    """`losskit losses --all` lists every record; the task table names every Module somewhere."""
    from losskit import registry
    from losskit.catalog import format_registry

    listing = format_registry()
    in_rows = {loss.module for row in CATALOG for loss in row.losses}
    for record in registry.records():
        assert f"lk.{record.module.__name__} / LF.{record.name}" in listing
        assert record.module.__name__ in in_rows, f"no task row names {record.module.__name__}"


def test_cli_losses_all_prints_every_loss(capsys):
    from losskit import cli, registry

    assert cli.main(["losses", "--all"]) == 0
    out = capsys.readouterr().out
    for record in registry.records():
        assert record.module.__name__ in out
