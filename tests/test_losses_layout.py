"""`losskit losses` in a narrow and a wide terminal: every line fits, and no word is broken.

A word broken by wrapping ("activatio" / "n", "LF.huber_lo" / "ss") leaves fragments that are
not words of the table's text, so the test collects the words the catalog and registry hold and
requires every word on screen to be one of them.
"""

from __future__ import annotations

import re

import pytest

from losskit import catalog, cli

BOX = re.compile(r"[\u2500-\u257f]")  # rich's border characters
CHROME = "Which loss for which task Every losskit loss task model output target loss notes " \
         "family input what it is"


def _vocabulary() -> set[str]:
    text = [CHROME, catalog.format_table(), catalog.format_registry(), cli.GALLERY_NOTE]
    for row in catalog.CATALOG:
        text += [catalog._losses_cell(row), *(str(loss) for loss in row.losses)]
    for cells in catalog._registry_rows():
        text += cells
    return {word for chunk in text for word in chunk.split()}


VOCABULARY = _vocabulary()


def _screen(argv: list[str], columns: int, monkeypatch, capsys) -> list[str]:
    monkeypatch.setenv("COLUMNS", str(columns))
    monkeypatch.setenv("LINES", "50")
    assert cli.main(argv) == 0
    return capsys.readouterr().out.splitlines()


@pytest.mark.parametrize("argv", [["losses"], ["losses", "--all"]])
@pytest.mark.parametrize("columns", [80, 100, 160])
def test_every_line_fits_and_no_word_is_broken(argv, columns, monkeypatch, capsys):
    lines = _screen(argv, columns, monkeypatch, capsys)
    assert len(lines) > 20
    too_long = [line for line in lines if len(line) > columns]
    assert not too_long, too_long[:3]
    words = {word for line in lines for word in BOX.sub(" ", line).split()}
    broken = sorted(words - VOCABULARY)
    assert not broken, f"fragments on screen at {columns} columns: {broken[:10]}"


def test_layout_follows_the_width(monkeypatch, capsys):
    narrow = "\n".join(_screen(["losses"], 80, monkeypatch, capsys))
    wide = "\n".join(_screen(["losses"], 160, monkeypatch, capsys))
    assert "┃" not in narrow and narrow.startswith("regression\n  model output")
    assert "┃ task" in wide and "lk.TripletMarginWithDistanceLoss" in wide
    table = catalog.build_table()
    assert 100 < catalog.table_min_width(table) <= 160  # 80 and 100 columns get the blocks


def test_the_vocabulary_check_catches_a_broken_word():
    # The check above is only as good as its vocabulary: fragments must not be in it.
    assert "activation" in VOCABULARY and "LF.huber_loss" in VOCABULARY
    assert not {"activatio", "n", "LF.huber_lo", "ss"} & VOCABULARY
