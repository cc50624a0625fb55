"""The in-place-write corpus (``tests/inplace_corpus``), judged by PyTorch itself.

1. PyTorch agrees with every label: "fails" raises the expected RuntimeError (saved tensor
   modified at backward, or a leaf written), "ok" runs, "silent" runs but its gradient differs
   from the same computation without the write.
2. ``gradlens.guard(mode="warn", verify=True)`` reports each failing write at its ``# WRITE``
   line, each silent write, and nothing on the harmless ones, without changing what PyTorch
   raises or computes.
3. The corpus is big and balanced enough to mean something.
"""

from __future__ import annotations

import functools
import os
import sys
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
import torch
from inplace_corpus import CASES, Case

import gradlens

SAVED_ERROR = "modified by an inplace operation"
LEAF_ERROR = "a leaf Variable that requires grad is being used in an in-place operation"
FLAGS = ("inplace-saved", "inplace-leaf", "silent-write")  # the kinds this corpus judges
ROWS = ("fails-saved", "fails-leaf", "ok", "silent")
COLUMNS = (*FLAGS, "nothing")
ALLOWED = {  # the flagged kinds each row may carry; any other is a false alarm
    "fails-saved": {"inplace-saved"},
    "fails-leaf": {"inplace-leaf"},
    "ok": set(),
    "silent": {"silent-write"},
}
REQUIRED = {
    "fails-saved": "inplace-saved",
    "fails-leaf": "inplace-leaf",
    "silent": "silent-write",
}


@dataclass
class Outcome:
    grads: dict[str, torch.Tensor] | None = None
    error: BaseException | None = None
    lines: set[int] = field(default_factory=set)  # lines of the case's file that ran

    def raised_at(self, case: Case) -> int | None:
        """The innermost line of the case's file in the error's traceback."""
        line = None
        tb = self.error.__traceback__ if self.error is not None else None
        while tb is not None:
            if _same_file(tb.tb_frame.f_code.co_filename, case.path):
                line = tb.tb_lineno
            tb = tb.tb_next
        return line


@functools.cache
def _real(filename: str) -> str:
    return os.path.realpath(filename)


def _same_file(filename: str, path: Path) -> bool:
    return _real(filename) == _real(str(path))


def _run(case: Case, *, trace_lines: bool = False) -> Outcome:
    """Runs ``case.fn`` plainly, catching what it raises (and recording its lines if asked)."""
    outcome = Outcome()
    target = _real(str(case.path))

    def local(frame: FrameType, event: str, arg: Any) -> Any:
        if event == "line":
            outcome.lines.add(frame.f_lineno)
        return local

    def tracer(frame: FrameType, event: str, arg: Any) -> Any:
        if event == "call" and _real(frame.f_code.co_filename) == target:
            outcome.lines.add(frame.f_lineno)
            return local
        return None

    previous = sys.gettrace()
    if trace_lines:
        sys.settrace(tracer)
    try:
        outcome.grads = case.fn()
    except Exception as e:
        outcome.error = e
    finally:
        if trace_lines:
            sys.settrace(previous)
    return outcome


def _differs(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> list[str]:
    assert a.keys() == b.keys(), f"gradient names differ: {sorted(a)} vs {sorted(b)}"
    return [k for k in a if not torch.allclose(a[k], b[k])]


# ---------------------------------------------------------------------------------------------
# 1. PyTorch agrees with every label
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_pytorch_agrees_with_every_label(case: Case) -> None:
    assert case.write_line is not None, f"{case.name}: '# WRITE' found at {case.write_lines}"
    got = _run(case)
    # Again under a line tracer, to see the write line run (the first run did the slow
    # one-off imports, e.g. torch.optim's first step(), outside the tracer).
    assert case.write_line in _run(case, trace_lines=True).lines, f"{case.name}: # WRITE never ran"

    if case.expect == "fails":
        assert isinstance(got.error, RuntimeError), (
            f"{case.name} is labelled 'fails' but PyTorch "
            + (f"raised {got.error!r}" if got.error else "ran it without error")
        )
        text = str(got.error)
        where = got.raised_at(case)
        if case.failure == "saved":
            assert SAVED_ERROR in text, text
            assert LEAF_ERROR not in text, text
            # PyTorch notices later, at backward, not at the write.
            assert where is not None
            assert where != case.write_line, f"{case.name}: raised at the write itself"
        else:
            assert LEAF_ERROR in text, text
            assert SAVED_ERROR not in text, text
            # PyTorch refuses the write itself.
            assert where == case.write_line, f"{case.name}: raised at line {where}"
        return

    assert got.error is None, f"{case.name} is labelled {case.expect!r} but raised {got.error!r}"
    assert got.grads, f"{case.name} returned no gradients"
    if case.reference is None:
        assert case.expect == "ok"
        return
    ref = case.reference()
    diff = _differs(got.grads, ref)
    if case.expect == "silent":
        assert diff, f"{case.name}: the write left every gradient as the reference's"
    else:
        assert not diff, f"{case.name}: gradients {diff} differ from the reference's"


# ---------------------------------------------------------------------------------------------
# 2. gradlens.guard judged by PyTorch
# ---------------------------------------------------------------------------------------------


@dataclass
class Judged:
    case: Case
    plain: Outcome
    guarded: Outcome
    diagnostics: list[Any]

    def flagged(self) -> list[Any]:
        return [d for d in self.diagnostics if getattr(d, "kind", None) in FLAGS]

    def kinds(self) -> set[str]:
        return {d.kind for d in self.flagged()}

    def at_write(self, d: Any) -> bool:
        return _source_is(d.source, self.case)


def _source_is(source: str | None, case: Case) -> bool:
    """True if a ``"file:line"`` names the case's write line (path relative to the cwd)."""
    if not source or ":" not in source:
        return False
    file, _, line = source.rpartition(":")
    return line.strip().isdigit() and int(line) == case.write_line and _same_file(file, case.path)


def _run_guarded(case: Case) -> tuple[Outcome, list[Any]]:
    outcome = Outcome()
    entered = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # mode="warn" may also report through warnings
        try:
            with gradlens.guard(mode="warn", verify=True) as g:
                entered = g
                outcome.grads = case.fn()
        except Exception as e:
            if entered is None:  # the guard itself failed to start
                raise
            outcome.error = e
    return outcome, list(entered.diagnostics)


def _problems(j: Judged) -> list[str]:
    c, row, out = j.case, j.case.row, []
    # PyTorch's verdict is unchanged under the guard.
    if c.expect == "fails":
        if j.guarded.error is None:
            out.append("PyTorch's error was not raised under the guard")
        elif (type(j.guarded.error), str(j.guarded.error)) != (
            type(j.plain.error),
            str(j.plain.error),
        ):
            out.append(f"the error changed under the guard: {j.guarded.error!r}")
    elif j.guarded.error is not None:
        out.append(f"raised under the guard: {j.guarded.error!r}")
    else:
        assert j.plain.grads is not None and j.guarded.grads is not None
        if j.plain.grads.keys() != j.guarded.grads.keys():
            out.append("different gradients were produced under the guard")
        else:
            changed = [
                k for k in j.plain.grads if not torch.equal(j.plain.grads[k], j.guarded.grads[k])
            ]
            if changed:
                out.append(f"gradients {changed} are not bit-identical under the guard")
    # The expected report, at the write line.
    required = REQUIRED.get(row)
    if required is not None:
        hits = [d for d in j.flagged() if d.kind == required]
        anywhere = row == "silent" and not c.visible
        if not any(anywhere or j.at_write(d) for d in hits):
            seen = [(d.kind, d.source) for d in j.flagged()]
            out.append(f"missing {required} at {c.source}; reported {seen}")
    # No false alarms: no wrong kind, and no flag away from the write line.
    for d in j.flagged():
        if d.kind not in ALLOWED[row]:
            out.append(f"false alarm {d.kind} at {d.source}: {d.message}")
        elif not j.at_write(d) and not (row == "silent" and not c.visible):
            out.append(f"{d.kind} away from the write line, at {d.source}: {d.message}")
    return out


def _table(judged: list[Judged]) -> str:
    counts = {row: Counter[str]() for row in ROWS}
    totals = Counter(j.case.row for j in judged)
    for j in judged:
        kinds = j.kinds()
        counts[j.case.row].update(kinds or {"nothing"})
    width = max(len(c) for c in COLUMNS)
    lines = [
        "gradlens.guard(mode='warn', verify=True) vs PyTorch, cases per row reporting each kind",
        f"{'expected':<12} {'cases':>5} " + " ".join(f"{c:>{width}}" for c in COLUMNS),
    ]
    for row in ROWS:
        cells = " ".join(f"{counts[row][c]:>{width}}" for c in COLUMNS)
        lines.append(f"{row:<12} {totals[row]:>5} {cells}")
    return "\n".join(lines)


def test_guard_judged_by_pytorch() -> None:
    if not hasattr(gradlens, "guard"):
        pytest.skip("gradlens.guard is not implemented yet")
    judged: list[Judged] = []
    for case in CASES:
        plain = _run(case)
        guarded, diagnostics = _run_guarded(case)
        judged.append(Judged(case, plain, guarded, diagnostics))

    print()
    print(_table(judged))
    problems = [
        f"{j.case.name} ({j.case.row}, {j.case.source}): {p}" for j in judged for p in _problems(j)
    ]
    for p in problems:
        print(p)
    assert not problems, f"{len(problems)} problem(s):\n" + "\n".join(problems)


# ---------------------------------------------------------------------------------------------
# 3. The corpus itself
# ---------------------------------------------------------------------------------------------


def test_corpus_is_big_and_balanced() -> None:
    by_expect = Counter(c.expect for c in CASES)
    assert len(CASES) >= 44, len(CASES)
    assert by_expect["fails"] >= 16, by_expect
    assert by_expect["ok"] >= 16, by_expect
    assert by_expect["silent"] >= 5, by_expect
    assert {c.failure for c in CASES if c.expect == "fails"} == {"saved", "leaf"}
    names = [c.name for c in CASES]
    assert len(names) == len(set(names)), [n for n, k in Counter(names).items() if k > 1]
    for c in CASES:
        assert len(c.write_lines) == 1, f"{c.name}: '# WRITE' at lines {c.write_lines}"
        assert c.write_line == c.write_lines[0]
        assert c.file.startswith("tests/inplace_corpus/cases_"), c.file
        assert c.source == f"{c.file}:{c.write_line}"
        assert c.path.is_file()
        written = c.path.read_text().splitlines()[c.write_line - 1]
        assert "# WRITE" in written, f"{c.source}: {written!r}"
        if c.expect == "fails":
            assert c.reference is None, f"{c.name}: a failing case has no reference"
        if c.expect == "silent":
            assert c.reference is not None, c.name
