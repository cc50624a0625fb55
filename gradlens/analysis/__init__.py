"""Analysis: pure functions from records to findings (``Diagnostic``s). No torch here."""

from .errors import explain_errors

#: Every built-in check, each ``(events) -> list[Diagnostic]``; run in this order.
CHECKS = (explain_errors,)

__all__ = ["CHECKS", "diagnose", "explain_errors"]


def diagnose(events):  # type: ignore[no-untyped-def]
    """Returns the findings of every check over a trace's events, in order."""
    out = []
    for check in CHECKS:
        out.extend(check(events))
    return out
