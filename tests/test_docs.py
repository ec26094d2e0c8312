"""docs/mistakes.md runs as written: each "before" snippet gets the outcome and the message shown.

The page's Python snippets run in order in one namespace. A snippet followed by a ```text block
that starts with ``SomeError:`` or ``SomeWarning:`` must raise (or warn) that class with exactly
that message (whitespace aside), so the pasted messages cannot go stale. Every other snippet, the
fixes included, must run without an exception or a LossWarning.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest

import losskit as lk

PAGE = Path(__file__).resolve().parents[1] / "docs" / "mistakes.md"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```$", re.S | re.M)
OUTCOME = re.compile(r"^(\w+(?:Error|Warning)): (.*)", re.S)


def snippets() -> list[tuple[str, str | None, str | None]]:
    """(python code, expected class name or None, expected message or None), in page order."""
    blocks = BLOCK.findall(PAGE.read_text())
    out = []
    for i, (lang, body) in enumerate(blocks):
        if lang != "python":
            continue
        follow = blocks[i + 1] if i + 1 < len(blocks) else ("", "")
        match = OUTCOME.match(follow[1]) if follow[0] == "text" else None
        out.append((body, *(match.groups() if match else (None, None))))
    return out


def normalise(text: str) -> str:
    return " ".join(text.split())


def test_the_page_has_its_snippets():
    found = snippets()
    assert len(found) >= 30
    assert sum(name is not None for _, name, _ in found) >= 18


def test_mistakes_page_snippets_give_the_documented_outcomes():
    namespace: dict = {}
    with lk.checks("always"):
        for code, name, message in snippets():
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    exec(compile(code, str(PAGE), "exec"), namespace)
                    raised = None
                except Exception as error:  # compared with the page below
                    raised = error
            loss_warnings = [w for w in caught if issubclass(w.category, lk.LossWarning)]
            if name is None:
                assert raised is None, f"{code}\nraised {raised!r}"
                assert not loss_warnings, f"{code}\nwarned {loss_warnings[0].message}"
            elif name.endswith("Warning"):
                assert raised is None, f"{code}\nraised {raised!r}"
                assert [w.category.__name__ for w in loss_warnings] == [name], code
                assert normalise(str(loss_warnings[0].message)) == normalise(message), code
            else:
                if raised is None:
                    pytest.fail(f"{code}\ndid not raise {name}")
                assert type(raised).__name__ == name, code
                assert normalise(str(raised)) == normalise(message), code
