"""The report document as GitHub-flavoured Markdown; figures are linked PNG files beside it."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the document model lives in build.py, which imports this module lazily
    from mtpeft.report.build import Block, Document, Figure, Table


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table_markdown(table: Table) -> str:
    lines = [f"**{table.title}**", "", f"_{table.caption}_", ""]
    lines.append("| " + " | ".join(_cell(c) for c in table.columns) + " |")
    lines.append("|" + "|".join("---" for _ in table.columns) + "|")
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in table.rows]
    return "\n".join(lines)


def figure_markdown(figure: Figure, figure_dir: str) -> str:
    return f"![{figure.title}]({figure_dir}/{figure.name}.png)\n\n_{figure.caption}_"


def _block(block: Block, figure_dir: str) -> str:
    from mtpeft.report.build import Figure, Table

    renderers: dict[type, Callable[[object], str]] = {
        str: lambda b: b,
        Table: table_markdown,
        Figure: lambda b: figure_markdown(b, figure_dir),
    }
    return renderers[type(block)](block)


def render_markdown(document: Document, *, figure_dir: str = "figures") -> str:
    parts = [f"# {document.title}"]
    for section in document.sections:
        parts.append(f"## {section.title}")
        parts += [_block(b, figure_dir) for b in section.blocks]
    return "\n\n".join(parts) + "\n"
