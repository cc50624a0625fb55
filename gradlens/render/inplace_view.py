"""In-place violations as a rich table: the write, the op that saved the tensor, both lines."""

from __future__ import annotations

from collections.abc import Sequence

from rich import box
from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from ..records import InplaceViolation
from .terminal import to_text

__all__ = ["format_violations", "violations_table"]

_STYLE = {"inplace-saved": "bold red", "silent-write": "bold magenta", "inplace-leaf": "red"}


def violations_table(violations: Sequence[InplaceViolation]) -> RenderableType:
    """Returns a table with one row per violation, or a one-line all-clear."""
    if not violations:
        return Text("no in-place write touched a tensor saved for backward", style="green")
    table = Table(title="in-place violations", box=box.SIMPLE_HEAD, title_justify="left")
    for column in ("kind", "tensor", "written by", "at", "saved by", "saved at", "versions"):
        table.add_column(column, overflow="fold", no_wrap=column in ("kind", "versions"))
    for v in violations:
        saved = f"{v.saved_op or v.saved_by or '—'}"
        if v.saved_as:
            saved += f" ({v.saved_as})"
        versions = "—" if v.saved_version is None else f"{v.saved_version} → {v.version}"
        table.add_row(
            Text(v.kind, style=_STYLE.get(v.kind, "")),
            Text(v.tensor),
            Text(v.write_op),
            Text(v.write_source or "?"),
            Text(saved),
            Text(v.saved_source or "—"),
            Text(versions),
        )
    return table


def format_violations(violations: Sequence[InplaceViolation], width: int = 100) -> str:
    """Returns ``violations_table`` as plain text."""
    return to_text(violations_table(violations), width)
