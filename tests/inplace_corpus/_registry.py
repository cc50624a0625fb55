"""The ``@case`` decorator and the ``Case`` record of the in-place-write corpus.

A case is a tiny module-level function that builds tensors, runs a forward pass, does one
in-place write (the line marked with a ``# WRITE`` comment) and runs backward. It returns the
gradients it produced, ``{name: tensor}``. Its label says what PyTorch itself does with it:

* ``"fails"``: PyTorch raises a RuntimeError; ``failure=`` names which one (``FAILURES``: the
  message it carries and where it is raised): at ``backward()`` because a tensor saved for
  backward was modified (``"saved"``; ``"saved-nested"`` when it is a jagged nested tensor and
  PyTorch fails to print its size), at the write itself because it hits a leaf that requires
  grad (``"leaf"``) or a view of one (``"view-leaf"``), at the write on a view autograd cannot
  rebase (``"view"``: a view made in ``no_grad``/``inference_mode``, one of several views, or a
  view made inside a custom Function), at a custom Function's ``apply`` that broke the
  ``mark_dirty`` contract (``"mark-dirty"``), at ``backward()`` on a saved tensor later detached
  in place (``"detached"``) or one a selective checkpoint cached and the program mutated
  (``"checkpoint"``), at the forward op whose saved-tensor pack hook wrote its input
  (``"pack-hook"``), at a write to an inference tensor outside inference mode
  (``"inference"``), or at the backward of an in-place ``leaky_relu_`` with a negative slope
  (``"negative-slope"``);
* ``"ok"``: PyTorch succeeds and the gradient is right (the write is harmless);
* ``"silent"``: PyTorch succeeds but the gradient is wrong, because the write changed a saved
  tensor without PyTorch noticing (``.data``, numpy, saved-tensor hooks, a preserved version
  counter). ``reference`` computes the gradient the program should get (the same computation
  without the write, or with the write done out of place), so the two can be compared.
  ``visible=False`` marks a write that leaves no trace a tool can see as it happens (numpy;
  a fused optimizer kernel that moves no version counter): it can only be found afterwards.

The family of a case is its module's name without ``cases_`` (``ops``, ``pytorch_views``, ...).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = [
    "EXPECTS",
    "FAILURES",
    "REPO_ROOT",
    "Case",
    "CaseFn",
    "Failure",
    "Grads",
    "case",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
EXPECTS = ("fails", "ok", "silent")


@dataclass(frozen=True)
class Failure:
    """How PyTorch refuses a failing case: a pattern of its message and where it raises.

    ``where``: ``"backward"`` (a later line, the backward call), ``"write"`` (the ``# WRITE``
    line itself), ``"elsewhere"`` (another line of the case, e.g. the op whose pack hook wrote)
    or ``"any"`` (a checkpointed function re-runs its write inside backward and raises there).
    """

    pattern: str  # a regular expression searched in str(error)
    where: str

    def matches(self, text: str) -> bool:
        return re.search(self.pattern, text) is not None


FAILURES: dict[str, Failure] = {
    "saved": Failure(r"modified by an inplace operation", "backward"),
    # The same version check on a jagged nested tensor: PyTorch fails to print its sizes.
    "saved-nested": Failure(r"^aten\._nested_tensor_size\.default$", "backward"),
    "leaf": Failure(
        r"(?<!view of )a leaf Variable that requires grad (is being|has been) used in an "
        r"in-place operation",
        "write",
    ),
    "view-leaf": Failure(
        r"a view of a leaf Variable that requires grad is being used in an in-place operation",
        "write",
    ),
    "view": Failure(
        r"is a view and (is being|its base or another view of its base has been) modified "
        r"inplace|A view was created in (no_grad|inference) mode and is being modified inplace"
        r"|a view of a view .* is being .* inside the (no_grad block|inference_mode)"
        r"|output of a function that returns multiple views",
        "write",
    ),
    "mark-dirty": Failure(
        r"marked as dirty during the forward method were not returned"
        r"|mark_dirty.*received a tensor that was not an input"
        r"|modifies inplace an input that is a view of another Tensor",
        "write",
    ),
    "detached": Failure(r"Trying to use a saved tensor that has been detached", "backward"),
    "checkpoint": Failure(r"cached during selective activation checkpoint has been mutated", "any"),
    "pack-hook": Failure(r"A saved tensor pack hook is modifying its input in place", "elsewhere"),
    "inference": Failure(r"Inplace update to inference tensor outside InferenceMode", "write"),
    "negative-slope": Failure(r"In-place leakyReLu backward .* negative slope", "backward"),
}

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
    failure: str | None = None  # fails: a key of FAILURES
    visible: bool = True  # False: no op or version shows the write (numpy, fused kernels)
    doc: str = ""

    @property
    def source(self) -> str:
        """``"tests/inplace_corpus/cases_x.py:LINE"``, the write's line."""
        return f"{self.file}:{self.write_line}"

    @property
    def path(self) -> Path:
        return REPO_ROOT / self.file

    @property
    def family(self) -> str:
        """The module's name without ``cases_``: ``"ops"``, ``"pytorch_views"``, ..."""
        return Path(self.file).stem.removeprefix("cases_")

    @property
    def row(self) -> str:
        """The confusion-table row: ``fails-saved``, ``fails-leaf``, ..., ``ok`` or ``silent``."""
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
            raise ValueError(f"failure must be one of {sorted(FAILURES)}, not {failure!r}")
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
