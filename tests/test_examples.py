"""The worked examples show the numbers of the seed article, and recording never changes them.

Each example's ``run()`` is executed once (cached); every expectation is checked against plain
PyTorch recomputed here, or against lines found by reading the example's own source file.
"""

from __future__ import annotations

import functools
import inspect
import math
import struct
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch
from torch import nn

from gradlens.examples import EXAMPLES, ExampleResult, load_example, run_example
from gradlens.records import BackwardEvent, EdgeKind, NodeKind
from gradlens.render.graphviz import find_dot, to_svg

SVG_NS = "{http://www.w3.org/2000/svg}"
FREED = "Trying to backward through the graph a second time"

needs_dot = pytest.mark.skipif(find_dot() is None, reason="Graphviz `dot` is not installed")


@functools.cache
def result(name: str) -> ExampleResult:
    return run_example(name)


def example_lines(name: str, needle: str) -> list[int]:
    """Returns the 1-based numbers of example ``name``'s lines whose code has ``needle``."""
    path = Path(inspect.getsourcefile(load_example(name)))  # type: ignore[arg-type]
    lines = path.read_text(encoding="utf-8").splitlines()
    return [i for i, line in enumerate(lines, start=1) if needle in line.split("#")[0]]


def bits(values: list[float]) -> list[bytes]:
    """Returns the exact bit patterns of floats (so -0.0 != 0.0, unlike ==)."""
    return [struct.pack("<d", v) for v in values]


def test_every_example_has_a_title_and_its_name() -> None:
    assert list(EXAMPLES) == [
        "backward",
        "grad-tensors",
        "higher-order",
        "accumulation",
        "requires-grad",
        "inplace-leaf",
        "inplace-vs-outplace",
        "logistic-graph",
        "logistic-1d",
        "logistic-logits",
        "logistic-2d",
        "forgot-zero-grad",
        "inplace-saved",
        "inplace-optimizer",
        "inplace-silent",
        "why-no-grad",
        "dead-relu",
        "backward-twice",
    ]
    for name in EXAMPLES:
        module = load_example(name)
        assert isinstance(module.TITLE, str) and module.TITLE
        r = result(name)
        assert r.name == name
        assert r.title == module.TITLE


# ---- backward ----------------------------------------------------------------------------------


def test_backward_values() -> None:
    v = result("backward").values
    assert v["w.grad after 1st backward"] == [5.0]
    assert v["x.grad after 1st backward"] == [2.0]
    assert v["w.grad after 2nd backward"] == [10.0]
    assert v["error of 3rd backward"].startswith(FREED)


def test_backward_twice_diagnostic_points_at_the_third_call_and_names_the_second() -> None:
    calls = example_lines("backward", "y.backward(")
    assert len(calls) == 3, calls
    second, third = calls[1], calls[2]
    diagnostics = [d for d in result("backward").trace.diagnostics if d.kind == "backward-twice"]
    assert len(diagnostics) == 1
    (d,) = diagnostics
    assert d.source is not None and d.source.endswith(f"backward.py:{third}")
    assert f"backward.py:{second}" in d.message
    assert d.name == "y"
    assert d.fix and "retain_graph=True" in d.fix


def test_backward_events_record_each_call() -> None:
    events = [e for e in result("backward").trace.events if isinstance(e, BackwardEvent)]
    calls = example_lines("backward", "y.backward(")
    assert [e.pass_index for e in events] == [0, 1, 2]
    assert [e.retain_graph for e in events] == [True, False, False]
    assert [e.source.rsplit(":", 1)[1] for e in events] == [str(n) for n in calls]  # type: ignore[union-attr]
    assert [e.error is None for e in events] == [True, True, False]
    assert events[2].error.startswith(FREED)  # type: ignore[union-attr]


def test_backward_plain_pytorch_is_bit_identical() -> None:
    w = torch.tensor([1.0], requires_grad=True)
    x = torch.tensor([2.0], requires_grad=True)
    a = torch.add(w, x)
    b = torch.add(w, 1)
    y = torch.mul(a, b)
    y.backward(retain_graph=True)
    first_w, first_x = w.grad.tolist(), x.grad.tolist()  # type: ignore[union-attr]
    y.backward()
    second_w = w.grad.tolist()  # type: ignore[union-attr]
    with pytest.raises(RuntimeError, match=FREED) as error:
        y.backward()

    v = result("backward").values
    assert bits(v["w.grad after 1st backward"]) == bits(first_w)
    assert bits(v["x.grad after 1st backward"]) == bits(first_x)
    assert bits(v["w.grad after 2nd backward"]) == bits(second_w)
    assert v["error of 3rd backward"] == str(error.value).split(".")[0]


# ---- grad-tensors ------------------------------------------------------------------------------


def test_grad_tensors_values() -> None:
    v = result("grad-tensors").values
    assert v["w.grad"] == [9.0]
    assert v["dy0/dw"] == [5.0]
    assert v["dy1/dw"] == [2.0]
    assert v["decomposition"] == "w.grad = 1·5 + 2·2 = 9"


def test_grad_tensors_backward_event_records_the_weights() -> None:
    events = [
        e
        for e in result("grad-tensors").trace.events
        if isinstance(e, BackwardEvent) and e.call == "backward"
    ]
    assert len(events) == 1
    (event,) = events
    assert event.roots == ("loss",)
    assert len(event.gradient) == 1 and event.gradient[0] is not None
    assert event.gradient[0].values == [1.0, 2.0]
    assert event.source is not None
    assert event.source.endswith(f":{example_lines('grad-tensors', 'loss.backward(')[0]}")


def test_grad_tensors_plain_pytorch_is_bit_identical() -> None:
    w = torch.tensor([1.0], requires_grad=True)
    x = torch.tensor([2.0], requires_grad=True)
    a = torch.add(w, x)
    b = torch.add(w, 1)
    y0 = torch.mul(a, b)
    y1 = torch.add(a, b)
    loss = torch.cat([y0, y1], dim=0)
    (dy0_dw,) = torch.autograd.grad(y0, w, retain_graph=True)
    (dy1_dw,) = torch.autograd.grad(y1, w, retain_graph=True)
    loss.backward(gradient=torch.tensor([1.0, 2.0]))

    v = result("grad-tensors").values
    assert bits(v["w.grad"]) == bits(w.grad.tolist())  # type: ignore[union-attr]
    assert bits(v["x.grad"]) == bits(x.grad.tolist())  # type: ignore[union-attr]
    assert bits(v["dy0/dw"]) == bits(dy0_dw.tolist())
    assert bits(v["dy1/dw"]) == bits(dy1_dw.tolist())


# ---- higher-order ------------------------------------------------------------------------------


def test_higher_order_values() -> None:
    v = result("higher-order").values
    assert v["grad_1"] == [6.0]
    assert v["grad_2"] == [2.0]
    assert v["grad_3"] == [0.0]


def test_higher_order_diagram_is_the_first_derivatives_graph() -> None:
    diagram = result("higher-order").diagram
    assert [n.name for n in diagram.outputs] == ["grad_1"]
    assert [n.name for n in diagram.of_kind(NodeKind.LEAF)] == ["x"]


def test_higher_order_trace_links_each_derivative_to_what_it_differentiates() -> None:
    graph = result("higher-order").trace.graph
    derivative = [e for e in graph.edges if e.kind == EdgeKind.DERIVATIVE]
    assert derivative, "the trace graph has no derivative edge"
    pairs = {(graph.node(e.src).name, graph.node(e.dst).name) for e in derivative}
    assert ("grad_1", "y") in pairs
    assert ("grad_2", "grad_1") in pairs


def test_higher_order_plain_pytorch_is_bit_identical() -> None:
    x = torch.tensor([3.0], requires_grad=True)
    y = torch.pow(x, 2)
    (grad_1,) = torch.autograd.grad(y, x, create_graph=True)
    (grad_2,) = torch.autograd.grad(grad_1, x, create_graph=True)
    (grad_3,) = torch.autograd.grad(grad_2, x)

    v = result("higher-order").values
    assert bits(v["grad_1"]) == bits(grad_1.tolist())
    assert bits(v["grad_2"]) == bits(grad_2.tolist())
    assert bits(v["grad_3"]) == bits(grad_3.tolist())
    assert v["grad_1.grad_fn"] == type(grad_1.grad_fn).__name__


# ---- accumulation ------------------------------------------------------------------------------


def test_accumulation_values() -> None:
    v = result("accumulation").values
    assert v["without zeroing"] == [5.0, 10.0, 15.0, 20.0]
    assert v["with zero_"] == [5.0, 5.0, 5.0, 5.0]


def test_accumulation_plain_pytorch_is_bit_identical() -> None:
    def steps(zero: bool) -> list[float]:
        w = torch.tensor([1.0], requires_grad=True)
        x = torch.tensor([2.0], requires_grad=True)
        after = []
        for _ in range(4):
            a = torch.add(w, x)
            b = torch.add(w, 1)
            y = torch.mul(a, b)
            y.backward()
            after.append(w.grad.item())  # type: ignore[union-attr]
            if zero:
                w.grad.zero_()  # type: ignore[union-attr]
        return after

    v = result("accumulation").values
    assert bits(v["without zeroing"]) == bits(steps(zero=False))
    assert bits(v["with zero_"]) == bits(steps(zero=True))


# ---- requires-grad -----------------------------------------------------------------------------


def test_requires_grad_leaves_and_non_leaves() -> None:
    v = result("requires-grad").values
    assert v["w"] == {"requires_grad": True, "is_leaf": True, "grad": [5.0]}
    assert v["x"] == {"requires_grad": True, "is_leaf": True, "grad": [2.0]}
    for name in ("a", "b", "y"):
        assert v[name] == {"requires_grad": True, "is_leaf": False, "grad": None}, name
    assert v["a with retain_grad"] == {"grad": [2.0], "retains_grad": True}


def test_requires_grad_trace_statuses() -> None:
    tensors = result("requires-grad").trace.tensors
    assert tensors["w"].role == "leaf (requires grad)"
    assert tensors["x"].role == "leaf (requires grad)"
    assert {n: tensors[n].grad_fn for n in ("a", "b", "y")} == {
        "a": "AddBackward0",
        "b": "AddBackward0",
        "y": "MulBackward0",
    }
    why = tensors["a"].why_no_grad()
    assert why is not None and "retain_grad()" in why


# ---- inplace-leaf ------------------------------------------------------------------------------


def test_inplace_leaf_error_is_pytorchs() -> None:
    expected = "a leaf Variable that requires grad is being used in an in-place operation."
    assert result("inplace-leaf").values["error"] == expected
    w = torch.tensor([1.0], requires_grad=True)
    with pytest.raises(RuntimeError) as error:
        w.add_(1)
    assert str(error.value) == expected


def test_inplace_leaf_diagnostic_names_w_its_line_and_the_fix() -> None:
    line = example_lines("inplace-leaf", "w.add_(1)")[0]  # the first one, outside no_grad
    diagnostics = [d for d in result("inplace-leaf").trace.diagnostics if d.kind == "inplace-leaf"]
    assert len(diagnostics) == 1
    (d,) = diagnostics
    assert d.name == "w"
    assert d.source is not None and d.source.endswith(f"inplace_leaf.py:{line}")
    assert d.fix is not None and "torch.no_grad()" in d.fix


def test_inplace_leaf_fixes_work() -> None:
    v = result("inplace-leaf").values
    assert v["w after no_grad add_"] == [2.0]
    assert v["w_next"] == [3.0]
    assert v["w._version"] == 1


# ---- inplace-vs-outplace -----------------------------------------------------------------------


def test_inplace_vs_outplace_values() -> None:
    v = result("inplace-vs-outplace").values
    assert v["a"] == [3.0]
    assert v["a + 1 is a new tensor"] is True
    assert v["a += 1 is the same tensor"] is True
    assert v["versions"] == [0, 0, 1]
    assert v["recorded ops"] == [("add", False), ("add_", True)]


# ---- logistic-graph ----------------------------------------------------------------------------

HOURS = [[1.0], [2.0], [3.0]]
PASSED = [[0.0], [0.0], [1.0]]


def test_logistic_gradients_match_plain_pytorch_and_the_closed_form() -> None:
    torch.manual_seed(0)
    linear = nn.Linear(1, 1)
    hours, passed = torch.tensor(HOURS), torch.tensor(PASSED)
    prob = torch.sigmoid(linear(hours))
    loss = nn.BCELoss()(prob, passed)
    loss.backward()

    v = result("logistic-graph").values
    assert v["weight"] == linear.weight.tolist()
    assert v["bias"] == linear.bias.tolist()
    assert v["loss"] == pytest.approx(loss.item(), abs=1e-6)
    assert [p[0] for p in v["prob"]] == pytest.approx(prob.flatten().tolist(), abs=1e-6)
    assert v["weight.grad"][0][0] == pytest.approx(linear.weight.grad.item(), abs=1e-6)  # type: ignore[union-attr]
    assert v["bias.grad"][0] == pytest.approx(linear.bias.grad.item(), abs=1e-6)  # type: ignore[union-attr]

    # The closed form for sigmoid + mean BCE, in float64 from the example's own parameters.
    w, b = v["weight"][0][0], v["bias"][0]
    xs, ys = [h[0] for h in HOURS], [t[0] for t in PASSED]
    ps = [1.0 / (1.0 + math.exp(-(w * x + b))) for x in xs]
    n = len(xs)
    dw = sum((p - y) * x for p, y, x in zip(ps, ys, xs, strict=True)) / n
    db = sum(p - y for p, y in zip(ps, ys, strict=True)) / n
    assert v["weight.grad"][0][0] == pytest.approx(dw, abs=1e-6)
    assert v["bias.grad"][0] == pytest.approx(db, abs=1e-6)


def test_logistic_trace_graph() -> None:
    graph = result("logistic-graph").trace.graph
    leaves = {n.name: n for n in graph.of_kind(NodeKind.LEAF)}
    assert set(leaves) == {"linear.weight", "linear.bias"}
    for leaf in leaves.values():
        assert leaf.module == "linear"
    ops = {n.name for n in graph.of_kind(NodeKind.OP)}
    assert {"AddmmBackward0", "SigmoidBackward0", "BinaryCrossEntropyBackward0"} <= ops
    inputs = {n.name for n in graph.of_kind(NodeKind.INPUT)}
    assert inputs == {"hours", "passed"}
    assert [n.name for n in graph.outputs] == ["loss"]
    assert graph.find("AddmmBackward0")[0].module == "linear"


# ---- every diagram draws -----------------------------------------------------------------------


TRAINING = ("logistic-1d", "logistic-logits", "logistic-2d", "forgot-zero-grad")


def test_training_examples_draw_plots_not_graphs() -> None:
    for name in TRAINING:
        assert result(name).diagram is None and result(name).lens is not None


@needs_dot
@pytest.mark.parametrize("name", [n for n in EXAMPLES if n not in TRAINING])
def test_diagram_renders_with_real_dot(name: str) -> None:
    diagram = result(name).diagram
    assert diagram is not None
    svg = to_svg(diagram.to_dot())
    assert svg is not None
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG_NS}svg"
    nodes = [g for g in root.iter(f"{SVG_NS}g") if g.get("class") == "node"]
    assert len(nodes) == len(diagram.nodes)
    titles = {g.findtext(f"{SVG_NS}title") for g in nodes}
    assert titles == {n.id for n in diagram.nodes}
