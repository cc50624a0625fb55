"""``gradlens.guard``: catch in-place writes that break backward, at the line that writes."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from types import FrameType
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.text import Text

from ._errors import GradlensError
from .analysis.inplace import explain_violation, explain_violations
from .capture.guard import Guard as _CaptureGuard
from .capture.guard import InplaceError, InplaceWarning
from .records import Diagnostic, InplaceViolation

__all__ = ["Guard", "InplaceError", "InplaceWarning", "guard", "strict_message", "warn_confirmed"]


def strict_message(v: InplaceViolation) -> str:
    """Returns the text of ``InplaceError``: what broke, both lines, and the fix."""
    d = explain_violation(v)
    return f"{d.message}\nfix: {d.fix}" if d.fix else d.message


def warn_confirmed(v: InplaceViolation, frame: FrameType | None) -> None:
    """Issues an ``InplaceWarning`` for ``v`` at the user's line (the backward about to fail).

    Never raises: where the user's filters turn warnings into errors (``-W error``), the
    warning is shown instead, so that gradlens never stops a program that runs without it.
    """
    d = explain_violation(v)
    text = f"{d.message}\nfix: {d.fix}" if d.fix else d.message
    warning = InplaceWarning(text, v)
    filename = frame.f_code.co_filename if frame is not None else "<unknown>"
    lineno = frame.f_lineno if frame is not None else 0
    try:
        if frame is None:
            warnings.warn(warning, stacklevel=2)
        else:
            registry = frame.f_globals.setdefault("__warningregistry__", {})
            module = frame.f_globals.get("__name__", "<string>")
            warnings.warn_explicit(
                warning, InplaceWarning, filename, lineno, module=module, registry=registry
            )
    except Warning:
        warnings.showwarning(warning, InplaceWarning, filename, lineno)


def skipped_text(skipped: Mapping[str, int], notes: list[str]) -> Text | None:
    """Returns what was not checked (saved values by reason, and notes), or None."""
    lines = [f"not checked: {n} saved value{'s' if n != 1 else ''}: {why}"
             for why, n in sorted(skipped.items())]  # fmt: skip
    lines += notes
    return Text("\n".join(lines), style="yellow") if lines else None


def guard(*, mode: str = "warn", verify: bool = False) -> Guard:
    """Returns a ``Guard``: use it as ``with gradlens.guard() as g:`` around forward and backward.

    Every write to a tensor an autograd node saved for backward is checked as it happens.
    A write is confirmed as a violation when a backward is about to use what it overwrote
    (a write no backward reaches is harmless, and never reported). ``mode="warn"`` then issues
    an ``InplaceWarning`` naming the write's line, records it (``g.violations``,
    ``g.diagnostics``) and lets PyTorch raise its own error, unchanged; ``mode="strict"``
    raises ``gradlens.InplaceError`` (a RuntimeError) instead of running that backward, and
    also for writes PyTorch cannot see (``.data``). ``verify=True`` also checksums every saved
    tensor and compares before each backward, catching writes no hook sees (NumPy views).
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
        self._capture.explain = strict_message
        if mode != "strict":
            self._capture.on_confirm = warn_confirmed
        self._used = False

    def __enter__(self) -> Guard:
        if self._used:
            raise GradlensError("a Guard can be used once; start a new one with gradlens.guard()")
        self._used = True
        self._capture.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        __tracebackhide__ = True
        self._capture.__exit__(*exc)

    @property
    def violations(self) -> list[InplaceViolation]:
        """Returns the violations: inplace-saved, silent-write, inplace-leaf, in order."""
        return self._capture.violations

    @property
    def skipped(self) -> dict[str, int]:
        """Returns the saved values gradlens could not check, counted by reason."""
        return self._capture.skipped

    @property
    def notes(self) -> list[str]:
        """Returns what gradlens could not do (compiled regions, a failure of its own)."""
        return list(self._capture.notes)

    @property
    def diagnostics(self) -> list[Diagnostic]:
        """Returns each violation explained, with both lines and the fix."""
        return explain_violations(self._capture.violations)

    def report(self, console: Console | None = None) -> None:
        """Prints the table of violations (or that there were none)."""
        (console or Console()).print(self.__rich__())

    def __rich__(self) -> RenderableType:
        from .render.inplace_view import violations_table

        table = violations_table(self.violations)
        extra = skipped_text(self.skipped, self.notes)
        return table if extra is None else Group(table, extra)

    def __repr__(self) -> str:
        return f"<gradlens Guard: {len(self.violations)} violations>"
