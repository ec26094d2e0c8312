"""The API reference pages, written from the packages' ``__all__`` at build time, so every public
name gets its entry without anyone keeping a list (mkdocs hook: docsgen/hooks.py)."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from types import ModuleType

import torch

# (page, module, what the page is about). A module that does not exist gets a page saying so.
PAGES = [
    ("api/losskit.md", "losskit", "Loss Modules, errors and warnings, checks, doctor, fit"),
    ("api/functional.md", "losskit.functional", "every loss as a function"),
    ("api/distributed.md", "losskit.distributed", "one loss across ranks and micro-batches"),
    ("api/registry.md", "losskit.registry", "the record of each loss"),
    ("api/integrations.md", "losskit.integrations.transformers",
     "Hugging Face models with the fused loss"),
]


def _module(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name:
            raise  # a real import error inside the package must fail the build
        return None


def _path(module: ModuleType, name: str, obj: object) -> str:
    """Where the entry's heading points: the public path, except where static analysis cannot
    see the name there (a lazy import, or a name that shadows a submodule of the same name)."""
    public = f"{module.__name__}.{name}"
    lazy = name in getattr(module, "_LAZY", {})
    shadows = hasattr(module, "__path__") and importlib.util.find_spec(public) is not None
    if (lazy or shadows) and hasattr(obj, "__module__") and hasattr(obj, "__qualname__"):
        return f"{obj.__module__}.{obj.__qualname__}"
    return public


def _group(obj: object) -> str:
    if inspect.isclass(obj) and issubclass(obj, torch.nn.Module):
        return "Loss Modules"
    if inspect.isclass(obj) and issubclass(obj, (Exception, Warning)):
        return "Errors and warnings"
    return "Classes" if inspect.isclass(obj) else "Functions"


def api_objects() -> list[tuple[str, dict[str, str]]]:
    """Per page: every public object's path -> its group heading."""
    pages = []
    for page, name, _ in PAGES:
        module = _module(name)
        if module is None:
            continue
        objects = {}
        for public in getattr(module, "__all__", []):
            obj = getattr(module, public)
            if not inspect.ismodule(obj):
                objects[_path(module, public, obj)] = _group(obj)
        pages.append((page, objects))
    return pages


def object_page(page: str, path: str) -> str:
    """Where one object's own page goes: ``api/functional.md`` + ``cross_entropy`` ->
    ``api/functional/cross_entropy.md``."""
    return f"{page.removesuffix('.md')}/{path.rsplit('.', 1)[-1]}.md"


def _summary(path: str, known: dict[str, str]) -> str:
    """The first paragraph of an object's docstring as one Markdown line, for the module page's
    index (roles turned into links as on the object's own page)."""
    from docsgen.rst_roles import rst_to_markdown

    module, _, name = path.rpartition(".")
    doc = inspect.getdoc(getattr(importlib.import_module(module), name)) or ""
    first = " ".join(doc.strip().split("\n\n", 1)[0].split())
    return rst_to_markdown(first, known).replace("|", "\\|")


def generated_pages() -> dict[str, str]:
    """Every API page's path -> its Markdown: one per module (its docstring and an index) and
    one per public object."""
    from docsgen.rst_roles import documented_paths

    pages = {}
    found = dict(api_objects())
    known = documented_paths()
    for page, name, about in PAGES:
        lines = [f"# `{name}`: {about}", ""]
        if page not in found:
            pages[page] = "\n".join(
                [*lines, "!!! note", f"    `{name}` is not in this version of losskit.", ""])
            continue
        lines += [f"::: {name}", "    options:", "      members: false",
                  "      show_root_heading: false", ""]
        for group in GROUPS:
            paths = sorted(p for p, g in found[page].items() if g == group)
            if not paths:
                continue
            lines += [f"## {group}", "", "| name | |", "| --- | --- |"]
            for path in paths:
                link = object_page(page, path).removeprefix("api/")
                lines.append(f"| [`{path.rsplit('.', 1)[-1]}`]({link}) | {_summary(path, known)} |")
                entry = f"::: {path}\n    options:\n      heading_level: 1\n"
                pages[object_page(page, path)] = entry
            lines.append("")
        pages[page] = "\n".join(lines)
    return pages


def nav() -> list[dict[str, list]]:
    """The API reference's navigation: per module, its page, then its objects' pages."""
    found = dict(api_objects())
    entries: list[dict[str, list]] = []
    for page, name, _ in PAGES:
        children: list = [page]
        for group in GROUPS:
            paths = sorted(p for p, g in found.get(page, {}).items() if g == group)
            children += [{p.rsplit(".", 1)[-1]: object_page(page, p)} for p in paths]
        entries.append({name: children})
    return entries


GROUPS = ["Loss Modules", "Functions", "Classes", "Errors and warnings"]
