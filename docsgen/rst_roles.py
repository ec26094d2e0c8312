"""A griffe extension that turns the reStructuredText bits of losskit's docstrings into Markdown.

losskit's docstrings are Google-style with a few Sphinx roles, which read well in ``help()`` and
in an editor. mkdocstrings renders Markdown, so at build time this rewrites:

- ``:math:`x``` -> ``\\(x\\)`` and a ``.. math::`` block -> ``\\[ ... \\]``, which
  pymdownx.arithmatex hands to KaTeX;
- ``:class:`~losskit.LossWarning``` and the other object roles -> a cross-reference
  ``[`LossWarning`][losskit.LossWarning]`` when the target is on an API page, else inline code.
  A reference that autorefs cannot resolve fails the strict build.

The source files are not changed.
"""

from __future__ import annotations

import re
from typing import Any

from griffe import Extension, Object

ROLE = re.compile(r":(class|func|meth|attr|data|mod|exc|obj):`([^`]+)`")
MATH_ROLE = re.compile(r":math:`([^`]+)`")
# ".. math::" and the lines indented deeper than it (blank lines included).
MATH_BLOCK = re.compile(
    r"^(?P<indent>[ \t]*)\.\. math::[ \t]*\n(?P<body>(?:(?P=indent)[ \t]+\S.*\n?|[ \t]*\n)+)",
    re.MULTILINE,
)


def documented_paths() -> dict[str, str]:
    """Every name the API pages render, short name -> the path of its heading there."""
    from docsgen.api import api_objects

    paths: dict[str, str] = {}
    for _, objects in api_objects():
        for path in objects:
            paths.setdefault(path.rsplit(".", 1)[-1], path)
            paths[path] = path
    return paths


def _reference(role: str, target: str, known: dict[str, str]) -> str:
    """One object role as Markdown: a link where the target is documented, else code."""
    short = target.startswith("~")
    target = target.lstrip("~").removesuffix("()")
    text = target.rsplit(".", 1)[-1] if short else target
    path = known.get(target)
    if path is None and (target.startswith("losskit.") or "." not in target):
        path = known.get(target.rsplit(".", 1)[-1])  # a re-export's own file, e.g. losses.X
        if role == "mod":
            path = None  # a module link only to a module's own page
    return f"[`{text}`][{path}]" if path else f"`{text}`"


def fence_doctests(text: str) -> str:
    r"""Put each doctest run (``>>>`` lines and their output, up to a blank line) in a ```pycon
    fence, so Markdown shows it as code wherever it sits (an ``Example:`` admonition, prose).

    >>> fence_doctests("Intro.\n\n  >>> 1 + 1\n  2\n\nEnd.").splitlines()
    ['Intro.', '', '  ```pycon', '  >>> 1 + 1', '  2', '  ```', '', 'End.']
    """
    out: list[str] = []
    indent: str | None = None  # the open fence's indent
    for line in text.split("\n"):
        stripped = line.lstrip()
        if indent is None and stripped.startswith(">>>"):
            indent = line[: len(line) - len(stripped)]
            out.append(f"{indent}```pycon")
        elif indent is not None and not stripped:
            out.append(f"{indent}```")
            indent = None
        out.append(line)
    if indent is not None:
        out.append(f"{indent}```")
    return "\n".join(out)


def rst_to_markdown(text: str, known: dict[str, str]) -> str:
    r"""Rewrite the math and object roles of one docstring.

    >>> rst_to_markdown("see :class:`~losskit.Foo` and :math:`x^2`", {"losskit.Foo": "losskit.Foo"})
    'see [`Foo`][losskit.Foo] and \\(x^2\\)'
    >>> rst_to_markdown(":func:`helper`", {})
    '`helper`'
    >>> print(rst_to_markdown("Sum:\n\n.. math::\n    a + b\n\nend", {}))
    Sum:
    <BLANKLINE>
    \[
    a + b
    \]
    <BLANKLINE>
    end
    """

    def block(match: re.Match[str]) -> str:
        lines = [line.strip() for line in match.group("body").strip("\n").splitlines()]
        indent = match.group("indent")
        body = "\n".join(indent + line for line in lines if line)
        return f"{indent}\\[\n{body}\n{indent}\\]\n\n"

    parts = re.split(r"(```pycon\n.*?```)", fence_doctests(text), flags=re.DOTALL)
    for i in range(0, len(parts), 2):  # the prose between fences; code stays as written
        part = MATH_BLOCK.sub(block, parts[i])
        part = MATH_ROLE.sub(lambda m: f"\\({m.group(1)}\\)", part)
        parts[i] = ROLE.sub(lambda m: _reference(m.group(1), m.group(2), known), part)
    return "".join(parts)


class RstRoles(Extension):
    """Apply :func:`rst_to_markdown` to every docstring griffe loads."""

    def __init__(self) -> None:
        super().__init__()
        self.known = documented_paths()

    def on_instance(self, *, obj: Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = rst_to_markdown(obj.docstring.value, self.known)
