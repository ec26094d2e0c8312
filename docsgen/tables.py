"""The loss table page: the rows behind ``losskit losses`` and ``losskit losses --all``, so the
site and the terminal show the same data. An HTML table rather than a Markdown one, so the loss
names stay on one line each (docs/assets/losskit.css) and the columns get sensible widths."""

from __future__ import annotations

from html import escape

from losskit import catalog


def _losses(lines: list[str]) -> str:
    return "<br>".join(f"<code>{escape(line)}</code>" for line in lines)


def _loss(loss: catalog.Loss) -> str:
    """``lk.Module(args)`` over ``LF.function``, as one block."""
    names = _losses([f"lk.{loss.module}({loss.args})", f"LF.{loss.function}"])
    return f'<div class="loss">{names}</div>'


def _table(css: str, header: list[str], rows: list[list[str]]) -> list[str]:
    """An HTML table; each row's cells are HTML already."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = ["<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows]
    return [f'<table class="{css}">', f"<thead><tr>{head}</tr></thead>", "<tbody>", *body,
            "</tbody>", "</table>", ""]


def loss_table_markdown() -> str:
    """The whole page: front matter (no side bars: the table needs the width), intro, tables."""
    rows = [
        [escape(r.task), escape(r.output), escape(r.target),
         "".join(_loss(loss) for loss in r.losses),
         escape(r.notes)]
        for r in catalog.CATALOG
    ]
    every = [
        [escape(family), _losses(names.split("\n")), escape(input), escape(target),
         escape(summary)]
        for family, names, input, target, summary in catalog._registry_rows()
    ]
    return "\n".join([
        "---", "hide:", "  - navigation", "  - toc", "---", "",
        "# Which loss for which task", "",
        "The table `losskit losses` prints, from the same rows (`losskit/catalog.py`). "
        "[Choosing a loss](choosing-a-loss.md) explains each task at length, with a snippet per "
        "task; the [API reference](api/functional.md) has every loss's formula and arguments.", "",
        *_table("loss-table", ["task", "model output", "target", "losses", "notes"], rows),
        "## Every loss", "",
        "`losskit losses --all`: each registered loss, family by family.", "",
        *_table("loss-table", ["family", "loss", "input", "target", "what it is"], every),
    ])
