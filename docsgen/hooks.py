"""mkdocs hooks: the pages generated from the code (API reference, loss table) and from
benchmarks/, added to the site at build time and never written into docs/."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

from docsgen.api import generated_pages, nav
from docsgen.tables import loss_table_markdown

ROOT = Path(__file__).resolve().parents[1]


def on_config(config: Any) -> Any:
    """The API reference section of the nav: one entry per module and per public object."""
    for section in config["nav"]:
        if isinstance(section, dict) and "API reference" in section:
            section["API reference"] = nav()
    return config


def on_files(files: Files, config: Any) -> Files:
    for page, content in generated_pages().items():
        files.append(File.generated(config, page, content=content))
    files.append(File.generated(config, "loss-table.md", content=loss_table_markdown()))
    results = (ROOT / "benchmarks" / "results.md").read_text()
    files.append(File.generated(config, "benchmarks.md", content=results))
    changelog = (ROOT / "CHANGELOG.md").read_text()
    files.append(File.generated(config, "changelog.md", content=changelog))
    return files
