"""The in-place-write corpus (``tests/inplace_corpus``), judged by PyTorch itself.

1. PyTorch agrees with every label: "fails" raises the RuntimeError its ``failure`` names, where
   it says (at backward, at the write, ...); "ok" runs; "silent" runs but its gradient differs
   from the reference's (what the program should get).
2. Three tools run every case (``inplace_corpus.judge``): ``gradlens.guard(verify=True)`` (warn),
   ``gradlens.trace()`` and ``gradlens.guard(mode="strict")``. None may change the program
   (same error and message as plain PyTorch, bit-identical gradients; strict may only replace
   PyTorch's error by ``InplaceError`` before the failing backward) or report what is not true
   (precision 100%): the known exceptions are ``KNOWN_BUGS``, marked xfail(strict=True).
3. What each tool misses is listed exactly in ``EXPECTED_MISSES``, with the reason: a fix shows
   up as a failure to update the list, and so does a regression.
4. The corpus is big and balanced enough to mean something.

``pytest -s`` prints the recall/precision table; ``python -m tests.inplace_corpus.table`` prints
it as markdown for the README.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import torch
from inplace_corpus import CASES, CASES_BY_NAME, FAILURES, FAMILIES, Case
from inplace_corpus.judge import TOOLS, judge, markdown_table, run_plain, text_table

# ---------------------------------------------------------------------------------------------
# What the tools miss, and why (case name -> {tool: reason})
# ---------------------------------------------------------------------------------------------

_VIEW = (
    "PyTorch refuses this write on a view itself (a view autograd cannot rebase: one of several "
    "views, made in no_grad/inference_mode or inside a custom Function), with its own message; "
    "gradlens has no check for it"
)
_MARK_DIRTY = (
    "PyTorch refuses the custom Function's mark_dirty contract at apply, with its own message; "
    "gradlens does not check mark_dirty"
)
_FUNCTION_LEAF = (
    "a custom Function wrote a leaf (or a view of one) inside forward and marked it dirty: "
    "PyTorch refuses at apply with 'has been used'; gradlens watches the leaf error of ops only"
)
_HOOKS = (
    "write under saved_tensors_hooks: PyTorch's own version check is off and gradlens skips "
    "hooked saved values (reading them would run the user's hooks)"
)
_CHECKPOINT = (
    "non-reentrant checkpointing saves through its own saved-tensor hooks: guard and trace skip "
    "those saved values (strict matches the write when PyTorch's check fires)"
)
_SAC = (
    "selective checkpointing's cache is checked by PyTorch during recomputation; gradlens skips "
    "the checkpoint's hooked saved values"
)
_DETACH = (
    "detach_() changes no value and no version; gradlens checks writes, not in-place detaching "
    "of a saved tensor"
)
_PACK_HOOK = "the write happens inside a pack hook, which PyTorch refuses at the forward op"
_INFERENCE = (
    "inference tensors have no version counter and PyTorch refuses the write itself; "
    "nothing saved is involved"
)
_NEGATIVE_SLOPE = (
    "an in-place leaky_relu_ with a negative slope cannot be inverted, and PyTorch says so at "
    "backward; nothing overwrites a saved tensor afterwards, so gradlens has nothing to report"
)
_CROSS_DTYPE = (
    "a PyTorch bug (issue 49825) pinned by its own test: transpose_ on a view_as_real view "
    "gives the transposed gradient; no saved tensor is written"
)
_NESTED = "nested tensors (strided or jagged) have no plain memory: gradlens skips what they save"
_IN_BACKWARD = (
    "the write runs inside a backward (an optimizer step in a post-accumulate-grad hook) and "
    "breaks a node of the retained graph that the next backward runs: not matched"
)
_DOUBLE_BACKWARD = (
    "the node that saved x was made by the engine inside grad(create_graph=True), where no op "
    "reaches gradlens: guard and trace do not match the write (strict does)"
)
_ENGINE_WRITE = (
    "the write is the autograd engine's own in-place accumulation into .grad during a "
    "backward (AccumulateGrad), which no torch-function mode sees; the .grad tensor had been "
    "saved by a later op"
)
_TRACE_LEAF = "trace() does not record the leaf writes PyTorch refuses (guard does)"
_TRACE_DATA = (
    "trace() runs without verify checksums: NumPy writes, and a .data assignment to a saved "
    "leaf, are not seen"
)
_TRACE_FUSED = (
    "trace() runs without verify checksums: a fused optimizer kernel that moves no version "
    "counter is not seen"
)
_STRICT_NUMPY = (
    "strict runs without verify=True: a NumPy write goes through no torch op, only the "
    "checksums of verify find it"
)


def _every(reason: str) -> dict[str, str]:
    return dict.fromkeys(TOOLS, reason)


EXPECTED_MISSES: dict[str, dict[str, str]] = {
    "data_assignment_of_saved_leaf": {"trace": _TRACE_DATA},
    "numpy_write_on_saved_output": {"trace": _TRACE_DATA, "strict": _STRICT_NUMPY},
    "numpy_write_on_saved_leaf": {"trace": _TRACE_DATA, "strict": _STRICT_NUMPY},
    "detach_in_place_a_saved_input": _every(_DETACH),
    "leaky_relu_in_place_with_a_negative_slope": _every(_NEGATIVE_SLOPE),
    "write_between_a_gradient_and_its_gradient": {
        "guard": _DOUBLE_BACKWARD,
        "trace": _DOUBLE_BACKWARD,
    },
    "second_backward_accumulates_into_a_saved_grad": _every(_ENGINE_WRITE),
    "mul_one_output_of_unbind": _every(_VIEW),
    "mul_a_view_of_an_unbind_output": _every(_VIEW),
    "mul_an_unbind_output_of_a_view": _every(_VIEW),
    "mul_split_outputs_together": _every(_VIEW),
    "add_to_a_view_of_a_leaf": {"trace": _TRACE_LEAF},
    "relu_on_a_narrowed_leaf": {"trace": _TRACE_LEAF},
    "add_to_an_unbind_output_under_grad": _every(_VIEW),
    "add_to_a_view_made_under_no_grad": _every(_VIEW),
    "divide_a_view_of_a_no_grad_view": _every(_VIEW),
    "add_to_a_view_made_in_inference_mode": _every(_VIEW),
    "transpose_in_place_a_real_view_of_complex": _every(_CROSS_DTYPE),
    "add_a_grad_requiring_tensor_to_a_custom_function_view": _every(_VIEW),
    "add_to_a_view_returned_by_a_custom_function": _every(_VIEW),
    "zero_a_custom_function_view_made_under_no_grad": _every(_VIEW),
    "unsqueeze_in_place_an_unbind_output": _every(_VIEW),
    "copy_a_grad_requiring_tensor_into_a_custom_function_view": _every(_VIEW),
    "copy_a_grad_requiring_tensor_into_an_unbind_output": _every(_VIEW),
    "two_output_function_adds_into_a_view_input": _every(_MARK_DIRTY),
    "function_marks_dirty_but_returns_a_clone": _every(_MARK_DIRTY),
    "function_marks_a_non_input_dirty": _every(_MARK_DIRTY),
    "function_adds_into_one_output_of_split": _every(_VIEW),
    "function_adds_into_a_view_of_a_leaf": _every(_FUNCTION_LEAF),
    "function_adds_into_a_leaf": _every(_FUNCTION_LEAF),
    "write_the_output_of_a_function_that_returns_its_input": _every(_VIEW),
    "write_saved_output_under_identity_hooks": _every(_HOOKS),
    "write_saved_input_under_identity_hooks": _every(_HOOKS),
    "write_saved_output_under_save_on_cpu": _every(_HOOKS),
    "pack_hook_writes_its_input": _every(_PACK_HOOK),
    "write_the_input_of_a_non_reentrant_checkpoint": {"guard": _CHECKPOINT, "trace": _CHECKPOINT},
    "mutate_a_cached_output_of_selective_checkpoint": _every(_SAC),
    "optimizer_step_in_a_hook_then_a_retained_second_backward": _every(_IN_BACKWARD),
    "add_after_nested_sum_saved_its_input": _every(_NESTED),
    "add_to_an_inference_tensor_outside_inference_mode": _every(_INFERENCE),
    "mul_a_jagged_nested_tensor_sin_saved": _every(_NESTED),
    "fused_adam_step_between_forward_and_backward": {"trace": _TRACE_FUSED},
}

# (tool, case name) -> why the tool breaks the program or reports something untrue there; each
# is marked xfail(strict=True), so a fix shows up as an XPASS to remove here.
KNOWN_BUGS: dict[tuple[str, str], str] = {}


# ---------------------------------------------------------------------------------------------
# 1. PyTorch agrees with every label
# ---------------------------------------------------------------------------------------------


def _differs(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> list[str]:
    assert a.keys() == b.keys(), f"gradient names differ: {sorted(a)} vs {sorted(b)}"
    return [k for k in a if not torch.allclose(a[k], b[k])]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_pytorch_agrees_with_every_label(case: Case) -> None:
    assert case.write_line is not None, f"{case.name}: '# WRITE' found at {case.write_lines}"
    got = run_plain(case)
    # Again under a line tracer, to see the write line run (the first run did the slow
    # one-off imports, e.g. torch.optim's first step(), outside the tracer).
    traced = run_plain(case, trace_lines=True)
    assert case.write_line in traced.lines, f"{case.name}: # WRITE never ran"

    if case.expect == "fails":
        assert case.failure is not None
        assert isinstance(got.error, RuntimeError), (
            f"{case.name} is labelled 'fails' but PyTorch "
            + (f"raised {got.error!r}" if got.error else "ran it without error")
        )
        text = str(got.error)
        kinds = [k for k, f in FAILURES.items() if f.matches(text)]
        assert kinds == [case.failure], f"{case.name}: the error reads as {kinds}: {text}"
        where, rule = got.raised_at(case), FAILURES[case.failure].where
        if rule == "write":
            assert where == case.write_line, f"{case.name}: raised at line {where}"
        elif rule in ("backward", "elsewhere"):
            assert where is not None
            assert where != case.write_line, f"{case.name}: raised at the write itself"
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
# 2. Every tool leaves the program as it is and reports only what is true
# ---------------------------------------------------------------------------------------------


def _tool_params() -> list[Any]:
    params = []
    for tool in TOOLS:
        for c in CASES:
            reason = KNOWN_BUGS.get((tool, c.name))
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            params.append(pytest.param(tool, c, id=f"{tool}-{c.name}", marks=marks))
    return params


@pytest.mark.parametrize(("tool", "case"), _tool_params())
def test_tool_changes_nothing_and_reports_only_the_truth(tool: str, case: Case) -> None:
    v = judge(tool, case)
    assert not v.problems(), f"{tool} on {case.name} ({case.row}, {case.source}): " + "; ".join(
        v.problems()
    )


# ---------------------------------------------------------------------------------------------
# 3. The misses are exactly the expected ones
# ---------------------------------------------------------------------------------------------


def test_misses_are_exactly_the_expected_ones() -> None:
    print()
    print(text_table(by="family"))
    print()
    print(text_table(by="row"))
    missed = {(c.name, t) for c in CASES for t in TOOLS if judge(t, c).found is False}
    expected = {(name, t) for name, by_tool in EXPECTED_MISSES.items() for t in by_tool}
    new = sorted(missed - expected)
    fixed = sorted(expected - missed)
    lines = [f"new miss: {t} on {n} ({CASES_BY_NAME[n].row})" for n, t in new]
    lines += [f"no longer missed (update EXPECTED_MISSES): {t} on {n}" for n, t in fixed]
    for line in lines:
        print(line)
    assert not lines, "\n".join(lines)


def test_tables_count_every_case_once() -> None:
    for by, rows in (("family", FAMILIES), ("row", sorted({c.row for c in CASES}))):
        lines = markdown_table(by=by).splitlines()
        assert lines[0].startswith(f"| {by} | cases |")
        body = {line.split(" | ")[0].strip("| *"): line for line in lines[2:]}
        assert set(body) == {*rows, "all"}, sorted(body)
        counts = {k: int(v.split(" | ")[1]) for k, v in body.items()}
        assert counts["all"] == len(CASES) == sum(n for k, n in counts.items() if k != "all")
        positives = sum(c.expect != "ok" for c in CASES)
        assert (
            f" {sum(judge('guard', c).found is True for c in CASES)}/{positives} |" in body["all"]
        )


def test_expected_misses_and_known_bugs_name_real_cases() -> None:
    for name, by_tool in EXPECTED_MISSES.items():
        assert name in CASES_BY_NAME, name
        assert CASES_BY_NAME[name].expect != "ok", f"{name}: a harmless case cannot be missed"
        assert by_tool and set(by_tool) <= set(TOOLS), (name, by_tool)
        assert all(reason.strip() for reason in by_tool.values()), name
    for (tool, name), reason in KNOWN_BUGS.items():
        assert tool in TOOLS and name in CASES_BY_NAME and reason.strip(), (tool, name)


# ---------------------------------------------------------------------------------------------
# 4. The corpus itself
# ---------------------------------------------------------------------------------------------


def test_corpus_is_big_and_balanced() -> None:
    by_expect = Counter(c.expect for c in CASES)
    assert len(CASES) >= 200, len(CASES)
    assert by_expect["fails"] >= 80, by_expect
    assert by_expect["ok"] >= 80, by_expect
    assert by_expect["silent"] >= 10, by_expect
    assert {c.failure for c in CASES if c.expect == "fails"} == set(FAILURES)
    assert {c.family for c in CASES} == set(FAMILIES)
    from_pytorch = [c for c in CASES if c.family.startswith("pytorch_")]
    assert len(from_pytorch) >= 60, len(from_pytorch)
    for c in from_pytorch:
        assert "test_" in (c.fn.__doc__ or ""), f"{c.name}: name the PyTorch test it comes from"
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
