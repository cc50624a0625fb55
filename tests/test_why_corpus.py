"""The why-no-grad corpus (``tests/why_corpus``): every planted cause, judged twice.

1. Plain PyTorch agrees with every label, with no gradlens at all: after ``loss.backward()``
   a cut, unused or non-leaf parameter's ``.grad`` is None, a dead one's is all zeros, a
   reachable one's is non-zero; every marked line runs; every dead kind is a node of the graph.
2. ``gradlens.explain(loss, params=model, trace=t)`` reports each parameter's status, kind and
   source line exactly as labelled, and nothing about correct models (skipped until
   ``gradlens.explain`` exists).
3. The corpus is big and varied enough to mean something.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections import Counter
from types import FrameType
from typing import Any

import pytest
import torch
from why_corpus import CUT_KINDS, PROGRAMS, STATUSES, Program, named_params

import gradlens

HAS_EXPLAIN = hasattr(gradlens, "explain")
needs_explain = pytest.mark.skipif(
    not HAS_EXPLAIN, reason="gradlens.explain is not implemented yet (the why-no-grad API)"
)
NO_GRAD = ("cut", "unused", "not-leaf", "frozen")  # statuses whose .grad stays None
IDS = [p.name for p in PROGRAMS]


def _status(program: Program, name: str, tensor: torch.Tensor) -> str:
    """The labelled status, with "frozen" for a parameter that does not require grad."""
    expect = program.expect.get(name)
    if expect is not None:
        return expect.status
    return "reachable" if tensor.requires_grad else "frozen"


def _grad(tensor: torch.Tensor) -> torch.Tensor | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # reading a non-leaf's .grad warns
        return tensor.grad


def _graph_names(root: torch.Tensor) -> set[str]:
    """The names of every autograd node reachable from ``root.grad_fn``."""
    seen: set[Any] = set()
    stack = [root.grad_fn]
    names: set[str] = set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(node.name())
        stack.extend(fn for fn, _ in node.next_functions)
    return names


def _run_recording_lines(program: Program) -> tuple[Any, torch.Tensor, set[int]]:
    """Builds the program and runs its forward pass, recording which of its lines ran."""
    target = os.path.realpath(program.path)
    ran: set[int] = set()

    def local(frame: FrameType, event: str, arg: Any) -> Any:
        if event == "line":
            ran.add(frame.f_lineno)
        return local

    def tracer(frame: FrameType, event: str, arg: Any) -> Any:
        if event == "call" and os.path.realpath(frame.f_code.co_filename) == target:
            return local
        return None

    model, run = program.build()
    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.tensor(t) warns about copy-constructing
            loss = run()
    finally:
        sys.settrace(previous)
    return model, loss, ran


# ---------------------------------------------------------------------------------------------
# 1. Plain PyTorch agrees with every label
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("program", PROGRAMS, ids=IDS)
def test_labels_are_well_formed(program: Program) -> None:
    model, _ = program.build()
    params = named_params(model)
    assert program.doc, f"{program.name} has no docstring"
    for name, e in program.expect.items():
        assert name in params, f"{program.name}: EXPECT names {name!r}, not a parameter"
        assert e.status in STATUSES, f"{program.name}: {name}: unknown status {e.status!r}"
        if e.status == "cut":
            assert e.kind in CUT_KINDS, f"{program.name}: {name}: unknown cut kind {e.kind!r}"
        elif e.status == "dead":
            assert e.kind is not None and e.kind[-1].isdigit() and "Backward" in e.kind
        else:
            assert e.kind is None, f"{program.name}: {name}: {e.status} takes no kind"
        if e.status in ("cut", "dead"):
            assert e.marker is not None, f"{program.name}: {name}: a {e.status} needs a marker"
        if e.marker is not None:
            assert len(e.lines) == 1, f"{program.name}: '# {e.marker}' found at {e.lines}"


@pytest.mark.parametrize("program", PROGRAMS, ids=IDS)
def test_pytorch_agrees_with_every_label(program: Program) -> None:
    model, loss, ran = _run_recording_lines(program)
    assert loss.dim() == 0 and loss.requires_grad, f"{program.name}: run() gave no scalar loss"
    graph = _graph_names(loss)
    params = named_params(model)
    loss.backward()

    for name, tensor in params.items():
        status = _status(program, name, tensor)
        grad = _grad(tensor)
        if status in NO_GRAD:
            assert grad is None, f"{program.name}: {name} is {status} but has a gradient"
        elif status == "dead":
            assert grad is not None, f"{program.name}: {name} is dead but its .grad is None"
            assert torch.count_nonzero(grad) == 0, f"{program.name}: {name}'s grad is not zero"
        else:
            assert grad is not None, f"{program.name}: {name} is reachable but .grad is None"
            assert torch.count_nonzero(grad) > 0, f"{program.name}: {name}'s grad is all zero"

    for name, e in program.expect.items():
        if e.line is not None:
            assert e.line in ran, f"{program.name}: the '# {e.marker}' line never ran"
        if e.status == "dead":
            assert e.kind in graph, f"{program.name}: no {e.kind} in the graph: {sorted(graph)}"
        if e.status == "not-leaf":
            tensor = params[name]
            assert tensor.requires_grad and not tensor.is_leaf
        if e.status == "unused":
            assert params[name].requires_grad


@pytest.mark.parametrize("program", [p for p in PROGRAMS if p.correct], ids=lambda p: p.name)
def test_correct_models_give_every_trainable_parameter_a_gradient(program: Program) -> None:
    model, run = program.build()
    run().backward()
    trainable = {n: t for n, t in named_params(model).items() if t.requires_grad}
    assert trainable
    for name, tensor in trainable.items():
        assert tensor.grad is not None and torch.count_nonzero(tensor.grad) > 0, name


# ---------------------------------------------------------------------------------------------
# 2. gradlens.explain judged by the labels
# ---------------------------------------------------------------------------------------------


def _explain(program: Program) -> tuple[Any, Any, torch.Tensor]:
    model, run = program.build()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with gradlens.trace(model) as t:
            loss = run()
        why = gradlens.explain(loss, params=model, trace=t)  # type: ignore[attr-defined]
    return model, why, loss


@needs_explain
@pytest.mark.parametrize("program", PROGRAMS, ids=IDS)
def test_explain_reports_every_label(program: Program) -> None:
    model, why, _ = _explain(program)
    params = named_params(model)
    problems: list[str] = []
    for name, tensor in params.items():
        e = program.expect.get(name)
        if e is None and not tensor.requires_grad:
            continue  # frozen: explain may list it or not, but must not flag it (below)
        if name not in why.params:
            problems.append(f"{name}: missing from why.params")
            continue
        p = why.params[name]
        want = (e.status, e.kind, e.source) if e else ("reachable", None, None)
        got = (p.status, p.kind, p.source)
        if e is None:
            got = (p.status, p.kind, None)  # a reachable parameter's source is not judged
        if got != want:
            problems.append(f"{name}: expected {want}, got {got} ({p.reason})")
        if p.status == "reachable":
            if not p.path:
                problems.append(f"{name}: reachable but its path is empty")
        elif not (isinstance(p.reason, str) and p.reason):
            problems.append(f"{name}: {p.status} but no reason")
    assert not problems, f"{program.name}:\n" + "\n".join(problems)


@needs_explain
@pytest.mark.parametrize("program", PROGRAMS, ids=IDS)
def test_explain_diagnoses_each_non_reachable_parameter_and_nothing_else(
    program: Program,
) -> None:
    _, why, _ = _explain(program)
    flagged = {n for n, e in program.expect.items() if e.status != "reachable"}
    for d in why.diagnostics:
        assert isinstance(d, gradlens.Diagnostic)
    if program.correct:
        assert list(why.diagnostics) == [], [d.message for d in why.diagnostics]
        return
    names = {d.name for d in why.diagnostics}
    assert names == flagged, f"{program.name}: diagnostics name {sorted(map(str, names))}"
    for d in why.diagnostics:
        e = program.expect[d.name]
        if e.source is not None:
            assert d.source == e.source, f"{program.name}: {d.name}: {d.source} != {e.source}"


@needs_explain
@pytest.mark.parametrize("program", PROGRAMS, ids=IDS)
def test_explain_changes_nothing_pytorch_computes(program: Program) -> None:
    _, run = program.build()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = run().item()
    _, _, traced = _explain(program)
    assert traced.item() == plain


# ---------------------------------------------------------------------------------------------
# 3. The corpus is big and varied
# ---------------------------------------------------------------------------------------------


def _summary() -> tuple[Counter[str], Counter[str]]:
    statuses: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    for program in PROGRAMS:
        model, _ = program.build()
        for name, tensor in named_params(model).items():
            e = program.expect.get(name)
            statuses[_status(program, name, tensor)] += 1
            if e is not None and e.kind is not None:
                kinds[f"{e.status}: {e.kind}"] += 1
    return statuses, kinds


def test_corpus_is_big_and_covers_every_cause() -> None:
    statuses, kinds = _summary()
    print(f"\nwhy-no-grad corpus: {len(PROGRAMS)} programs")
    print(f"{'status':<14}{'params':>8}")
    for status in (*STATUSES, "frozen"):
        print(f"{status:<14}{statuses[status]:>8}")
    print(f"\n{'kind':<34}{'params':>8}")
    for kind, n in sorted(kinds.items()):
        print(f"{kind:<34}{n:>8}")

    assert len(PROGRAMS) >= 26
    assert len({p.name[:3] for p in PROGRAMS}) == len(PROGRAMS), "two programs share a number"
    cut_kinds = {e.kind for p in PROGRAMS for e in p.expect.values() if e.status == "cut"}
    assert cut_kinds == set(CUT_KINDS)
    dead_kinds = {e.kind for p in PROGRAMS for e in p.expect.values() if e.status == "dead"}
    assert len(dead_kinds) >= 7, dead_kinds
    for status in ("cut", "dead", "unused", "not-leaf", "reachable", "frozen"):
        assert statuses[status] > 0, status
    assert sum(p.correct for p in PROGRAMS) >= 3
    multi = [p for p in PROGRAMS if len({(e.status, e.kind) for e in p.expect.values()}) >= 2]
    assert len(multi) >= 2
