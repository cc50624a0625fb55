"""Three gradlens tools judged on every corpus case by what PyTorch itself does.

``run_plain(case)`` runs a case with no tool; ``judge(tool, case)`` runs it under one tool and
compares with the plain run:

* ``"guard"``: ``gradlens.guard(mode="warn", verify=True)``, its ``violations``;
* ``"trace"``: ``gradlens.trace()``, its ``record.violations`` (the same checks, warn semantics);
* ``"strict"``: ``gradlens.guard(mode="strict")``: raises ``gradlens.InplaceError`` just before
  the backward that would use an overwritten tensor, naming the write's line.

A ``Verdict`` says whether the tool found the case (``found``: a failing or silent case reported
at its ``# WRITE`` line with the right kind; ``None`` for a harmless case), the false alarms it
raised (a report of the wrong kind, or away from the write line, or any report on a harmless
case) and how it changed the program (a different exception or message than plain PyTorch for
warn tools, gradients not bit-identical, an error where PyTorch has none).

``python -m tests.inplace_corpus.table`` prints the recall/precision table (markdown) per family.
"""

from __future__ import annotations

import functools
import os
import re
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import torch

import gradlens

from . import CASES, CASES_BY_NAME, FAILURES, FAMILIES, Case

__all__ = [
    "TOOLS",
    "Outcome",
    "Verdict",
    "judge",
    "markdown_table",
    "run_plain",
    "text_table",
]

TOOLS = ("guard", "trace", "strict")
FLAGS = ("inplace-saved", "inplace-leaf", "silent-write")  # the kinds this corpus judges
# The one kind a report must have to be true, per row; rows not listed (PyTorch refuses the
# write or op itself for a reason no gradlens kind names: a view autograd cannot rebase, a
# mark_dirty contract, ...) accept a report of any kind at the write line.
EXACT_KIND = {
    "fails-saved": "inplace-saved",
    "fails-saved-nested": "inplace-saved",
    "fails-leaf": "inplace-leaf",
    "fails-view-leaf": "inplace-leaf",
    "silent": "silent-write",
}


@dataclass
class Outcome:
    grads: dict[str, torch.Tensor] | None = None
    error: BaseException | None = None
    lines: set[int] = field(default_factory=set)  # lines of the case's file that ran

    def raised_at(self, case: Case) -> int | None:
        """The line of the case function itself where the error left it (the write, the
        backward call, ...; not a line inside a custom Function or hook the case calls)."""
        line = None
        tb = self.error.__traceback__ if self.error is not None else None
        while tb is not None:
            if tb.tb_frame.f_code is case.fn.__code__:
                line = tb.tb_lineno
            tb = tb.tb_next
        return line


@functools.cache
def _real(filename: str) -> str:
    return os.path.realpath(filename)


def _same_file(filename: str, path: Path) -> bool:
    return _real(filename) == _real(str(path))


def _call(case: Case, outcome: Outcome) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # anomaly mode, deprecations: not what is judged
        try:
            outcome.grads = case.fn()
        except Exception as e:
            outcome.error = e


def run_plain(case: Case, *, trace_lines: bool = False) -> Outcome:
    """Runs ``case.fn`` with no tool, catching what it raises (and recording its lines if asked)."""
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
        _call(case, outcome)
    finally:
        if trace_lines:
            sys.settrace(previous)
    return outcome


@functools.cache
def _plain(name: str) -> Outcome:
    return run_plain(CASES_BY_NAME[name])


@dataclass
class Verdict:
    tool: str
    case: Case
    found: bool | None  # None: a harmless case, nothing to find
    reports: list[tuple[str, str | None]]  # (kind, write_source) of everything the tool said
    false_alarms: list[str]
    changed: list[str]  # how the program differed from plain PyTorch

    @property
    def reported(self) -> bool:
        return bool(self.reports)

    def problems(self) -> list[str]:
        return [*self.false_alarms, *self.changed]


def _at_write(source: str | None, case: Case) -> bool:
    """True if a ``"file:line"`` names the case's write line (path relative to the cwd)."""
    if not source or ":" not in source:
        return False
    file, _, line = source.rpartition(":")
    return line.strip().isdigit() and int(line) == case.write_line and _same_file(file, case.path)


def _same_error(a: BaseException | None, b: BaseException | None) -> bool:
    return a is not None and b is not None and (type(a), str(a)) == (type(b), str(b))


def _changed_result(plain: Outcome, run: Outcome) -> list[str]:
    """The program's result under a tool that should not change it: same error, same gradients."""
    if plain.error is not None:
        if run.error is None:
            return ["PyTorch's error was not raised under the tool"]
        if not _same_error(plain.error, run.error):
            return [f"the error changed under the tool: {run.error!r}"]
        return []
    if run.error is not None:
        return [f"raised under the tool: {run.error!r}"]
    assert plain.grads is not None and run.grads is not None
    if plain.grads.keys() != run.grads.keys():
        return ["different gradients were produced under the tool"]
    differ = [k for k in plain.grads if not torch.equal(plain.grads[k], run.grads[k])]
    return [f"gradients {differ} are not bit-identical under the tool"] if differ else []


def _judge_reports(case: Case, reports: list[tuple[str, str | None]]) -> tuple[bool, list[str]]:
    """(found, false alarms) for what a tool reported on a case."""
    anywhere = case.expect == "silent" and not case.visible
    exact = EXACT_KIND.get(case.row)
    found, alarms = False, []
    for kind, source in reports:
        where = anywhere or _at_write(source, case)
        if case.expect == "ok":
            alarms.append(f"{kind} at {source} on a harmless write")
        elif not where:
            alarms.append(f"{kind} away from the write line, at {source}")
        elif exact is not None and kind != exact:
            alarms.append(f"{kind} at {source}, but PyTorch's verdict is {case.row}")
        else:
            found = True
    return found, alarms


_PYTORCH_VERSION_ERROR = re.compile(
    r"\[\S+ \[([\d, ]*)\]\](?:, which is output \d+ of \w+,)? is at version (\d+); "
    r"expected version (\d+) instead"
)


def _disagrees_with_pytorch(case: Case, plain: Outcome, violations: list[Any]) -> list[str]:
    """For a case PyTorch fails at backward's version check: at least one inplace-saved report
    at the write line must name the tensor PyTorch names (its shape, its version now and the
    version it was saved at), else the report is not the truth."""
    if case.failure != "saved" or plain.error is None:
        return []
    m = _PYTORCH_VERSION_ERROR.search(str(plain.error))
    if m is None:  # a nested tensor's sizes print as a tensor: nothing to compare
        return []
    shape = tuple(int(d) for d in m.group(1).split(",") if d.strip())
    now, then = int(m.group(2)), int(m.group(3))
    mine = [v for v in violations if v.kind == "inplace-saved" and _at_write(v.write_source, case)]
    # The write line may write more than once (``h[1:] += 1`` adds, then copies back): the
    # version reported is the one after the line's first write, at most PyTorch's.
    if not mine or any(
        tuple(v.shape) == shape and v.saved_version == then and then < (v.version or 0) <= now
        for v in mine
    ):
        return []
    said = [(tuple(v.shape), v.version, v.saved_version) for v in mine]
    return [f"reported (shape, version, saved version) {said}; PyTorch says {(shape, now, then)}"]


def _run_warn(tool: str, case: Case) -> tuple[Outcome, list[Any], list[str]]:
    """Runs the case under guard (warn) or trace: (outcome, violations, the tool's own crash)."""
    run = Outcome()
    crashed: list[str] = []
    violations: list[Any] = []
    try:  # the case's own errors are caught inside; whatever escapes is the tool's
        if tool == "guard":
            with gradlens.guard(mode="warn", verify=True) as g:
                _call(case, run)
            violations = g.violations
        else:
            with gradlens.trace() as t:
                _call(case, run)
            violations = list(t.record.violations)
    except Exception as e:
        crashed.append(f"the tool itself raised {e!r}"[:300])
    return run, [v for v in violations if v.kind in FLAGS], crashed


def _judge_strict(case: Case, plain: Outcome) -> Verdict:
    run = Outcome()
    crashed: list[str] = []
    noted: list[Any] = []
    try:  # the case's own errors are caught inside; whatever escapes is the tool's
        with gradlens.guard(mode="strict") as g:
            _call(case, run)
        noted = g.violations
    except Exception as e:
        crashed.append(f"the tool itself raised {e!r}"[:300])
    raised = run.error if isinstance(run.error, gradlens.InplaceError) else None
    failure = FAILURES[case.failure] if case.failure else None
    at_write_failure = failure is not None and failure.where == "write"
    violations: list[Any] = []
    changed: list[str] = crashed
    if raised is not None:
        violations.append(raised.violation)
        line = run.raised_at(case)
        if case.expect == "ok":
            changed.append("InplaceError raised in a program PyTorch runs correctly")
        elif not at_write_failure and line == case.write_line:
            changed.append("InplaceError raised at the write, not just before the backward")
        elif failure is not None and failure.where == "backward":
            expected = plain.raised_at(case)
            if line != expected:
                changed.append(f"InplaceError raised at line {line}, PyTorch raises at {expected}")
    elif at_write_failure:
        # PyTorch refuses the write itself, before strict could: its own error goes up and
        # what the guard noted at that write counts.
        violations += [v for v in noted if v.kind in FLAGS]
        changed += _changed_result(plain, run)
    else:
        changed += _changed_result(plain, run)
    reports = [(v.kind, v.write_source) for v in violations]
    found, alarms = _judge_reports(case, reports)
    alarms += _disagrees_with_pytorch(case, plain, violations)
    return Verdict("strict", case, None if case.expect == "ok" else found, reports, alarms, changed)


@functools.cache
def _judge(tool: str, name: str) -> Verdict:
    case = CASES_BY_NAME[name]
    plain = _plain(name)
    if tool == "strict":
        return _judge_strict(case, plain)
    run, violations, crashed = _run_warn(tool, case)
    reports = [(v.kind, v.write_source) for v in violations]
    found, alarms = _judge_reports(case, reports)
    alarms += _disagrees_with_pytorch(case, plain, violations)
    changed = crashed or _changed_result(plain, run)
    return Verdict(tool, case, None if case.expect == "ok" else found, reports, alarms, changed)


def judge(tool: str, case: Case) -> Verdict:
    """Runs ``case`` under ``tool`` (once per session) and judges it against plain PyTorch."""
    if tool not in TOOLS:
        raise ValueError(f"tool must be one of {TOOLS}, not {tool!r}")
    return _judge(tool, case.name)


# ---------------------------------------------------------------------------------------------
# Recall and precision per tool and family
# ---------------------------------------------------------------------------------------------


@dataclass
class _Cell:
    positives: int = 0  # fails + silent cases
    found: int = 0
    reported: int = 0  # cases the tool reported anything on
    alarmed: int = 0  # of those, cases with a false alarm
    changed: int = 0  # cases whose result the tool changed (or where it crashed)

    def add(self, v: Verdict) -> None:
        if v.found is not None:
            self.positives += 1
            self.found += bool(v.found)
        if v.reported:
            self.reported += 1
            self.alarmed += bool(v.false_alarms)
        self.changed += bool(v.changed)

    def recall(self) -> str:
        return f"{self.found}/{self.positives}" if self.positives else "-"

    def precision(self) -> str:
        if not self.reported:
            return "-"
        return f"{100 * (self.reported - self.alarmed) / self.reported:.0f}%"


def _key(case: Case, by: str) -> str:
    return case.family if by == "family" else case.row


def _rows(cases: list[Case], by: str) -> list[str]:
    if by == "family":
        order: list[str] = list(FAMILIES)
    else:
        order = [f"fails-{k}" for k in FAILURES] + ["silent", "ok"]
    present = {_key(c, by) for c in cases}
    return [r for r in order if r in present]


def _cells(cases: list[Case], by: str) -> dict[str, dict[str, _Cell]]:
    """``{family or row, then "all": {tool: cell}}`` over ``cases``."""
    table = {row: {tool: _Cell() for tool in TOOLS} for row in [*_rows(cases, by), "all"]}
    for case in cases:
        for tool in TOOLS:
            v = judge(tool, case)
            table[_key(case, by)][tool].add(v)
            table["all"][tool].add(v)
    return table


def _table(cases: list[Case] | None, by: str) -> list[list[str]]:
    """Header and rows: family/row, case counts, then recall, precision, changed per tool."""
    if by not in ("family", "row"):
        raise ValueError(f"by must be 'family' or 'row', not {by!r}")
    cases = CASES if cases is None else cases
    cells = _cells(cases, by)
    head = [by, "cases"]
    for tool in TOOLS:
        head += [f"{tool} recall", f"{tool} precision", f"{tool} changed"]
    out = [head]
    for row, by_tool in cells.items():
        n = sum(row in ("all", _key(c, by)) for c in cases)
        line = [row, str(n)]
        for tool in TOOLS:
            cell = by_tool[tool]
            line += [cell.recall(), cell.precision(), str(cell.changed)]
        out.append(line)
    return out


def markdown_table(cases: list[Case] | None = None, *, by: str = "family") -> str:
    """Recall (found / failing+silent cases), precision (reported cases with no false alarm)
    and the number of cases whose program the tool changed, per tool, by family or by row."""
    head, *rows = _table(cases, by)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [f"**{row[0]}**" if row[0] == "all" else row[0], *row[1:]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def text_table(cases: list[Case] | None = None, *, by: str = "family") -> str:
    """The same table in fixed-width text, for ``pytest -s``."""
    table = _table(cases, by)
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    return "\n".join(
        " ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in table
    )
