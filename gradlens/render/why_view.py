"""``gradlens.explain``'s answer as a table: parameter, status, reason, line."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from ..records import WhyRecord
from .terminal import to_text

__all__ = ["format_why", "why_table"]

_STATUS_STYLE = {
    "reachable": "green",
    "cut": "bold red",
    "unused": "yellow",
    "dead": "magenta",
    "not-leaf": "cyan",
    "unreachable": "yellow",
}


def why_table(record: WhyRecord) -> Table:
    """Returns a table with one row per parameter: name (and ``= other name`` for each other
    name of the same tensor), status (and cut kind), reason, line."""
    title = Text(f"why gradients reach (or miss) the parameters of {record.loss}")
    table = Table(title=title, title_justify="left")  # Text: a name is never read as markup
    table.add_column("parameter", style="bold", overflow="fold")
    table.add_column("status", no_wrap=True)
    table.add_column("reason", ratio=3)
    table.add_column("line", style="dim", overflow="fold")
    shown: set[str] = set()
    for p in record.params.values():
        if p.name in shown:
            continue  # another name of a tensor already listed (tied weights)
        shown.update((p.name, *p.aliases))
        status = p.status if p.status != "cut" or not p.kind else f"cut ({p.kind})"
        table.add_row(
            Text("\n".join((p.name, *(f"= {a}" for a in p.aliases)))),
            Text(status, style=_STATUS_STYLE.get(p.status, "")),
            Text(p.reason),
            Text(p.source or ""),
        )
    return table


def format_why(record: WhyRecord, width: int = 100) -> str:
    """Returns :func:`why_table` as plain text."""
    return to_text(why_table(record), width)
