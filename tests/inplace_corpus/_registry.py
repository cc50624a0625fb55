"""The ``@case`` decorator and the ``Case`` record of the in-place-write corpus.

A case is a tiny module-level function that builds tensors, runs a forward pass, does one
in-place write (the line marked with a ``# WRITE`` comment) and runs backward. It returns the
gradients it produced, ``{name: tensor}``. Its label says what PyTorch itself does with it:

* ``"fails"``: PyTorch raises a RuntimeError, either at ``backward()`` because a tensor saved
  for backward was modified (``failure="saved"``), or at the write itself because the write
  hits a leaf that requires grad (``failure="leaf"``);
* ``"ok"``: PyTorch succeeds and the gradient is right (the write is harmless);
* ``"silent"``: PyTorch succeeds but the gradient is wrong, because the write changed a saved
  tensor without PyTorch noticing (``.data``, numpy). ``reference`` is the same computation
  without the write, so the two gradients can be compared. ``visible=False`` marks a write
  that does not go through torch at all (numpy), which a tool can only find afterwards.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["EXPECTS", "FAILURES", "REPO_ROOT", "Case", "CaseFn", "Grads", "case"]

REPO_ROOT = Path(__file__).resolve().parents[2]
EXPECTS = ("fails", "ok", "silent")
FAILURES = ("saved", "leaf")

Grads = dict[str, torch.Tensor]
CaseFn = Callable[[], Grads]

_WRITE_MARK = re.compile(r"#\s*WRITE\b")


@dataclass(frozen=True)
class Case:
    name: str
    fn: CaseFn
    expect: str  # "fails" | "ok" | "silent"
    reference: CaseFn | None  # silent: the computation without the write
    file: str  # relative to the repo root, "tests/inplace_corpus/cases_x.py"
    write_line: int | None  # the line marked "# WRITE" (None unless found exactly once)
    write_lines: tuple[int, ...] = ()  # every marked line found in the function
    failure: str | None = None  # fails: "saved" (raised at backward) | "leaf" (at the write)
    visible: bool = True  # False: the write bypasses torch (numpy), no op reports it
    doc: str = ""

    @property
    def source(self) -> str:
        """``"tests/inplace_corpus/cases_x.py:LINE"``, the write's line."""
        return f"{self.file}:{self.write_line}"

    @property
    def path(self) -> Path:
        return REPO_ROOT / self.file

    @property
    def row(self) -> str:
        """The confusion-table row: ``fails-saved``, ``fails-leaf``, ``ok`` or ``silent``."""
        return f"fails-{self.failure}" if self.expect == "fails" else self.expect


def case(
    expect: str,
    *,
    reference: CaseFn | None = None,
    failure: str | None = None,
    visible: bool = True,
) -> Callable[[CaseFn], CaseFn]:
    """Labels a corpus function; the function itself is returned unchanged."""
    if expect not in EXPECTS:
        raise ValueError(f"expect must be one of {EXPECTS}, not {expect!r}")
    if expect == "fails":
        failure = failure or "saved"
        if failure not in FAILURES:
            raise ValueError(f"failure must be one of {FAILURES}, not {failure!r}")
    elif failure is not None:
        raise ValueError("failure= only applies to expect='fails'")
    if expect == "silent" and reference is None:
        raise ValueError("a silent case needs reference= (the same computation, no write)")
    if not visible and expect != "silent":
        raise ValueError("visible=False only applies to expect='silent'")

    def register(fn: CaseFn) -> CaseFn:
        lines, start = inspect.getsourcelines(fn)
        marks = tuple(start + i for i, text in enumerate(lines) if _WRITE_MARK.search(text))
        path = Path(inspect.getsourcefile(fn) or "").resolve()
        fn.__inplace_case__ = Case(  # type: ignore[attr-defined]
            name=fn.__name__,
            fn=fn,
            expect=expect,
            reference=reference,
            file=path.relative_to(REPO_ROOT).as_posix(),
            write_line=marks[0] if len(marks) == 1 else None,
            write_lines=marks,
            failure=failure,
            visible=visible,
            doc=inspect.cleandoc(fn.__doc__ or "").split("\n", 1)[0],
        )
        return fn

    return register
