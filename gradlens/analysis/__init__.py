"""Analysis: pure functions from records to findings (``Diagnostic``s). No torch here."""

from collections.abc import Callable, Sequence

from ..records import Diagnostic, Event
from .errors import explain_errors
from .nonfinite import explain_nonfinite

#: Every built-in check, each ``(events) -> list[Diagnostic]``; run in this order.
CHECKS: tuple[Callable[[Sequence[Event]], list[Diagnostic]], ...] = (
    explain_errors,
    explain_nonfinite,
)

__all__ = ["CHECKS", "diagnose", "explain_errors", "explain_nonfinite"]


def diagnose(events: Sequence[Event]) -> list[Diagnostic]:
    """Returns the findings of every check over a trace's events, in order."""
    out: list[Diagnostic] = []
    for check in CHECKS:
        out.extend(check(events))
    return out
