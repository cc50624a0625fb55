"""Where the first NaN/Inf came from, in a trace: the op, its line, and the first gradient."""

from __future__ import annotations

import inspect

import torch

import gradlens
from gradlens.analysis import explain_nonfinite
from gradlens.records import GradEvent, OpEvent, TensorRef, ValueSummary


def line(fn: object, needle: str) -> str:
    lines, start = inspect.getsourcelines(fn)  # type: ignore[arg-type]
    (hit,) = [start + i for i, t in enumerate(lines) if needle in t and "line(" not in t]
    return f"tests/test_analysis_nonfinite.py:{hit}"


def test_log_of_zero_is_traced_to_its_line_and_to_the_gradient() -> None:
    x = torch.tensor([1.0, 0.0, 2.0])
    w = torch.tensor([0.5, 1.0, -1.0], requires_grad=True)
    with gradlens.trace(w=w, x=x) as t:
        logs = torch.log(x)  # log(0) = -inf
        loss = (logs * w).sum()
        loss.backward()
    where = line(test_log_of_zero_is_traced_to_its_line_and_to_the_gradient, "torch.log(x)")
    assert [(d.kind, d.name, d.source) for d in t.diagnostics] == [
        ("non-finite", "logs", where),
        ("inf-grad", "w", where),
    ]
    assert t.diagnostics[0].message == "log produced NaN/Inf in logs from finite inputs"
    assert t.diagnostics[1].message == (
        f"backward pass 0: the first non-finite gradient reached w; the first non-finite value "
        f"was made by log at {where}"
    )
    assert w.grad is not None and w.grad[1].item() == float("-inf")  # the trace changed nothing


def test_nan_from_sqrt_of_a_negative_number() -> None:
    w = torch.tensor([4.0, -1.0], requires_grad=True)
    with gradlens.trace(w=w) as t:
        roots = torch.sqrt(w)
        roots.sum().backward()
    assert [d.kind for d in t.diagnostics] == ["non-finite", "nan-grad"]
    assert t.diagnostics[0].name == "roots"


def test_nan_flowing_on_is_not_blamed_on_later_ops() -> None:
    x = torch.tensor([float("nan"), 1.0], requires_grad=True)
    with gradlens.trace(x=x) as t:
        y = x * 2
        y.sum().backward()
    assert [d.kind for d in t.diagnostics] == []  # x was NaN already; its grad is finite


def test_finite_traces_have_no_findings() -> None:
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    with gradlens.trace(w=w) as t:
        torch.exp(w).sum().backward()
    assert list(t.diagnostics) == []


def ref(name: str, nonfinite: bool = False) -> TensorRef:
    return TensorRef(name, (2,), "float32", True, False, 0, None, nonfinite)


def test_explain_nonfinite_on_hand_built_events() -> None:
    events = [
        OpEvent(0, "mul", (ref("a"),), (ref("b"),), source="m.py:1"),
        OpEvent(1, "div", (ref("b"),), (ref("c", True),), source="m.py:2"),
        OpEvent(2, "add", (ref("c", True),), (ref("d", True),), source="m.py:3"),
        GradEvent(3, 0, "n1", "DivBackward0", (ValueSummary((2,), "float32", [1.0, 1.0]),)),
        GradEvent(
            4,
            0,
            "n2",
            "AccumulateGrad",
            (ValueSummary((2,), "float32", [float("nan"), 1.0]),),
            leaf="a",
        ),
    ]
    found = explain_nonfinite(events)
    assert [(d.kind, d.name, d.source) for d in found] == [
        ("non-finite", "c", "m.py:2"),
        ("nan-grad", "a", "m.py:2"),
    ]
    big = ValueSummary((100,), "float32", None, norm=1.0, min=0.0, max=1.0, inf=3)
    assert big.nonfinite == (0, 3)
    only_grad = [GradEvent(0, 1, "n0", "AccumulateGrad", (big,), leaf="w")]
    (d,) = explain_nonfinite(only_grad)
    assert (d.kind, d.message) == (
        "inf-grad",
        "backward pass 1: the first non-finite gradient reached w",
    )
