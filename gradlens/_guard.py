"""``gradlens.guard``: catch in-place writes that break backward, at the line that writes."""

from __future__ import annotations

from typing import Any

from rich.console import Console, RenderableType

from ._errors import GradlensError
from .analysis.inplace import explain_violation, explain_violations
from .capture.guard import Guard as _CaptureGuard
from .capture.guard import InplaceError
from .records import Diagnostic, InplaceViolation

__all__ = ["Guard", "InplaceError", "guard"]


def guard(*, mode: str = "warn", verify: bool = False) -> Guard:
    """Returns a ``Guard``: use it as ``with gradlens.guard() as g:`` around forward and backward.

    Every write to a tensor an autograd node saved for backward is checked as it happens.
    ``mode="warn"`` records it (``g.violations``, ``g.diagnostics``) and leaves PyTorch's own
    error to be raised at backward; ``mode="strict"`` raises ``gradlens.InplaceError`` (a
    RuntimeError) at the writing line. ``verify=True`` also checksums every saved tensor and
    compares before each backward, catching writes no hook sees (NumPy views).
    """
    if mode not in ("warn", "strict"):
        raise GradlensError(f"guard(mode=...) takes 'warn' or 'strict', got {mode!r}")
    if not isinstance(verify, bool):
        raise GradlensError(f"guard(verify=...) takes True or False, got {verify!r}")
    return Guard(mode=mode, verify=verify)


class Guard:
    """Checks in-place writes against saved tensors inside its ``with`` block.

    A violation is confirmed when a backward is about to use the node whose saved tensor was
    written (a node no backward reaches never fails, and is not reported). The mode is removed
    when the block ends, also when it raises; the guard keeps no tensor after that.
    """

    def __init__(self, *, mode: str = "warn", verify: bool = False) -> None:
        self._capture = _CaptureGuard(mode="strict" if mode == "strict" else "warn", verify=verify)
        self._capture.explain = lambda v: explain_violation(v).message
        self._used = False

    def __enter__(self) -> Guard:
        if self._used:
            raise GradlensError("a Guard can be used once; start a new one with gradlens.guard()")
        self._used = True
        self._capture.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._capture.__exit__(*exc)

    @property
    def violations(self) -> list[InplaceViolation]:
        """Returns the violations: inplace-saved, silent-write, inplace-leaf, in order."""
        return self._capture.violations

    @property
    def diagnostics(self) -> list[Diagnostic]:
        """Returns each violation explained, with both lines and the fix."""
        return explain_violations(self._capture.violations)

    def report(self, console: Console | None = None) -> None:
        """Prints the table of violations (or that there were none)."""
        (console or Console()).print(self.__rich__())

    def __rich__(self) -> RenderableType:
        from .render.inplace_view import violations_table

        return violations_table(self.violations)

    def __repr__(self) -> str:
        return f"<gradlens Guard: {len(self.violations)} violations>"
