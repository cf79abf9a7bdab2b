"""Result tables for ``raft eval`` and ``raft bench``: one header and rows, rendered for people
(rich) or for documents (markdown), so both renderings always show the same columns."""

from __future__ import annotations

from rich.table import Table


def markdown_table(header: list[str], rows: list[list[str]], labels: int = 1) -> str:
    """A GitHub markdown table; the first ``labels`` columns left-aligned, numbers right-aligned."""
    align = [":--"] * labels + ["--:"] * (len(header) - labels)
    return "\n".join("| " + " | ".join(cells) + " |" for cells in (header, align, *rows))


def rich_table(title: str, header: list[str], rows: list[list[str]], labels: int = 1) -> Table:
    """The same table for a terminal; label columns left-aligned, the first in bold."""
    table = Table(title=title, title_justify="left")
    for index, name in enumerate(header):
        table.add_column(name, justify="left" if index < labels else "right", no_wrap=True, style="bold" if index == 0 else None)
    for row in rows:
        table.add_row(*row)
    return table
