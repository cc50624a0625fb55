"""``gradlens.trace``: what it records, that it cleans up, and that it never changes PyTorch."""

from __future__ import annotations

import gc
import math
import os
import sys
import weakref
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

import gradlens
from gradlens._gc import gc_paused
from gradlens.records import (
    BackwardEvent,
    EdgeKind,
    ErrorEvent,
    GradEvent,
    NodeKind,
    OpEvent,
)


def here() -> int:
    """Returns the caller's line number."""
    return sys._getframe(1).f_lineno


def line_of(source: str | None) -> int:
    """Returns the line of a ``"file.py:line"`` source, checking that the file is this one."""
    assert source is not None
    path, _, line = source.rpartition(":")
    assert os.path.samefile(path, __file__), source
    return int(line)


def values(summary: Any) -> Any:
    assert summary is not None
    return summary.values


def of_type(events: Any, cls: type) -> list[Any]:
    return [e for e in events if isinstance(e, cls)]


def mode_stack() -> list[Any]:
    return list(torch.overrides._get_current_function_mode_stack())


def leaves() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor([1.0], requires_grad=True), torch.tensor([2.0], requires_grad=True)


# ---- the classic example, backward twice and a third time ---------------------------------------


def run_classic_three_times() -> tuple[Any, dict[str, int], RuntimeError]:
    w, x = leaves()
    with gradlens.trace() as t:
        base = here()
        a = w + x
        b = w + 1
        y = a * b
        y.backward(retain_graph=True)
        y.backward()
        with pytest.raises(RuntimeError) as info:
            y.backward()
    lines = {"a": base + 1, "b": base + 2, "y": base + 3, "bw1": base + 4, "bw2": base + 5}
    lines["bw3"] = base + 7
    assert w.grad.tolist() == [10.0] and x.grad.tolist() == [4.0]
    del a, b, y
    return t, lines, info.value


def test_forward_op_events() -> None:
    t, lines, _ = run_classic_three_times()
    ops = of_type(t.events, OpEvent)
    assert [e.op for e in ops] == ["add", "add", "mul"]
    assert [line_of(e.source) for e in ops] == [lines["a"], lines["b"], lines["y"]]
    assert [e.index for e in ops] == [0, 1, 2]
    assert [[r.name for r in e.inputs] for e in ops[:2]] == [["w", "x"], ["w"]]
    assert [r.name for r in ops[2].inputs] == ["a", "b"]
    assert [[r.name for r in e.outputs] for e in ops[:2]] == [["a"], ["b"]]
    assert [e.outputs[0].grad_fn for e in ops] == ["AddBackward0", "AddBackward0", "MulBackward0"]
    assert all(e.inplace is False and e.module is None for e in ops)
    # Each op event points at the graph node its output's grad_fn became.
    assert [t.graph.node(e.node).name for e in ops] == [
        "AddBackward0",
        "AddBackward0",
        "MulBackward0",
    ]
    assert [t.graph.node(e.node).op for e in ops] == ["add", "add", "mul"]
    assert [line_of(t.graph.node(e.node).source) for e in ops] == [
        lines["a"],
        lines["b"],
        lines["y"],
    ]


def test_event_kinds_in_order() -> None:
    t, _, _ = run_classic_three_times()
    assert [e.kind for e in t.events] == (
        ["op"] * 3
        + ["backward"]
        + ["grad"] * 5
        + ["backward"]
        + ["grad"] * 5
        + ["backward", "grad"]
    )
    assert [e.index for e in t.events] == list(range(len(t.events)))


def test_backward_events() -> None:
    t, lines, err = run_classic_three_times()
    bws = of_type(t.events, BackwardEvent)
    assert [e.call for e in bws] == ["backward"] * 3
    assert [e.pass_index for e in bws] == [0, 1, 2]
    assert [e.retain_graph for e in bws] == [True, False, False]
    assert [e.create_graph for e in bws] == [False] * 3
    assert [e.gradient for e in bws] == [(), (), ()]
    assert [line_of(e.source) for e in bws] == [lines["bw1"], lines["bw2"], lines["bw3"]]
    assert [e.error for e in bws[:2]] == [None, None]
    assert bws[2].error == str(err).strip()


def test_grad_events_have_exact_gradients() -> None:
    t, _, _ = run_classic_three_times()
    grads = of_type(t.events, GradEvent)
    for p in (0, 1):
        in_pass = [e for e in grads if e.pass_index == p]
        by_name = [(e.node_name, values(e.grads[0])) for e in in_pass]
        assert by_name[0] == ("MulBackward0", [1.0])
        assert sorted(by_name[1:3]) == [("AddBackward0", [2.0]), ("AddBackward0", [3.0])]
        assert sorted((e.leaf, values(e.grads[0])) for e in in_pass[3:]) == [
            ("w", [5.0]),
            ("x", [2.0]),
        ]
        assert [e.node_name for e in in_pass[3:]] == ["AccumulateGrad"] * 2
        assert all(e.leaf is None and e.accumulated is None for e in in_pass[:3])
    w_events = [e for e in grads if e.leaf == "w"]
    assert [values(e.grads[0]) for e in w_events] == [[5.0], [5.0]]
    assert [values(e.accumulated) for e in w_events] == [[5.0], [10.0]]
    x_events = [e for e in grads if e.leaf == "x"]
    assert [values(e.accumulated) for e in x_events] == [[2.0], [4.0]]
    # The add that received 3 is b = w + 1 (dy/db = a = 3); the one that got 2 is a = w + x.
    ops = {e.outputs[0].name: e.node for e in of_type(t.events, OpEvent)}
    got = {e.node: values(e.grads[0]) for e in grads if e.pass_index == 0}
    assert got[ops["a"]] == [2.0] and got[ops["b"]] == [3.0]
    # The failed third pass reached only MulBackward0 before PyTorch raised.
    assert [(e.node_name, values(e.grads[0])) for e in grads if e.pass_index == 2] == [
        ("MulBackward0", [1.0])
    ]


def test_graph_gathers_the_gradients_of_every_pass() -> None:
    t, _, _ = run_classic_three_times()
    g = t.graph
    assert Counter(n.name for n in g.of_kind(NodeKind.OP)) == Counter(
        {"MulBackward0": 1, "AddBackward0": 2}
    )
    mul = g.find("MulBackward0")[0]
    assert [values(s) for s in mul.grads] == [[1.0], [1.0], [1.0]]
    (w_node,) = g.find("w")
    (x_node,) = g.find("x")
    assert [values(s) for s in w_node.grads] == [[5.0], [5.0]]
    assert values(w_node.grad) == [10.0] and values(x_node.grad) == [4.0]
    assert len(g.children(w_node.id)) == 2
    saved = g.parents(mul.id, EdgeKind.SAVED)
    assert sorted(n.name for n in saved) == ["other", "self"]
    assert all(n.freed for n in saved)


def test_tensor_statuses_after_the_trace() -> None:
    t, _, _ = run_classic_three_times()
    assert list(t.tensors)[:4] == ["w", "x", "a", "b"]
    w = t.tensors["w"]
    assert values(w.grad) == [10.0]
    assert (w.is_leaf, w.requires_grad, w.grad_fn, w.version) == (True, True, None, 0)
    assert values(t.tensors["x"].grad) == [4.0]
    a = t.tensors["a"]
    assert (a.is_leaf, a.grad_fn, a.grad) == (False, "AddBackward0", None)
    assert values(a.value) == [3.0]


def test_third_backward_raises_pytorchs_own_error() -> None:
    _, _, err = run_classic_three_times()
    w, x = leaves()
    y = (w + x) * (w + 1)
    y.backward()
    with pytest.raises(RuntimeError) as plain:
        y.backward()
    assert type(err) is RuntimeError
    assert str(err) == str(plain.value)
    assert "backward through the graph a second time" in str(err)


def test_backward_twice_diagnostic() -> None:
    t, lines, _ = run_classic_three_times()
    (d,) = t.diagnostics
    assert d.kind == "backward-twice"
    assert d.severity.value == "error"
    assert line_of(d.source) == lines["bw3"]
    # The message names the line of the second call, the one that freed the saved tensors.
    second = of_type(t.events, BackwardEvent)[1].source
    assert f"the backward() at {second} already freed them" in d.message
    assert line_of(second) == lines["bw2"]
    assert "MulBackward0" in d.message
    assert "retain_graph=True" in d.fix


def test_names_come_from_the_callers_variables() -> None:
    w, x = leaves()
    with gradlens.trace() as t:
        a = w + x
        b = w + 1
        y = a * b
        y.backward()
    assert list(t.tensors) == ["w", "x", "a", "b", "y"]
    assert of_type(t.events, BackwardEvent)[0].roots == ("y",)
    assert [r.name for r in of_type(t.events, OpEvent)[2].outputs] == ["y"]
    assert [n.name for n in t.graph.outputs] == ["y"]
    del a, b, y


def test_leaf_used_by_one_op_is_named() -> None:
    w = torch.ones(2, requires_grad=True)
    with gradlens.trace() as t, pytest.raises(RuntimeError):
        w.add_(1)
    (err,) = of_type(t.events, ErrorEvent)
    assert [r.name for r in err.inputs] == ["w"]


def test_keyword_names_win() -> None:
    w, x = leaves()
    with gradlens.trace(weight=w, inp=x) as t:
        a = w + x
        loss = a * 2
        loss.backward()
    assert [r.name for r in of_type(t.events, OpEvent)[0].inputs] == ["weight", "inp"]
    assert {e.leaf for e in of_type(t.events, GradEvent) if e.leaf} == {"weight", "inp"}
    assert values(t.tensors["weight"].grad) == [2.0]
    assert "w" not in t.tensors
    del a, loss


def test_dict_argument_names_tensors() -> None:
    w, x = leaves()
    with gradlens.trace({"ww": w, "xx": x}) as t:
        y = w * x
        y.sum().backward()
    assert {e.leaf: values(e.accumulated) for e in of_type(t.events, GradEvent) if e.leaf} == {
        "ww": [2.0],
        "xx": [1.0],
    }
    del y


# ---- backward with a gradient, autograd.grad --------------------------------------------------


def test_backward_with_gradient_argument() -> None:
    w, x = leaves()
    with gradlens.trace(w=w, x=x) as t:
        a = w + x
        b = w + 1
        loss = torch.cat([a * b, a + b])
        loss.backward(gradient=torch.tensor([1.0, 2.0]))
    (bw,) = of_type(t.events, BackwardEvent)
    assert len(bw.gradient) == 1
    assert values(bw.gradient[0]) == [1.0, 2.0]
    assert bw.gradient[0].shape == (2,)
    assert bw.retain_graph is False
    assert w.grad.tolist() == [9.0]  # 1 * 5 + 2 * 2
    assert values(t.tensors["w"].grad) == [9.0]
    (cat,) = t.graph.find("CatBackward0")
    assert [values(s) for s in cat.grads] == [[1.0, 2.0]]
    del loss


def test_autograd_backward_with_grad_tensors() -> None:
    w, x = leaves()
    with gradlens.trace(w=w, x=x) as t:
        y = torch.cat([w * x, w + x])
        torch.autograd.backward([y], grad_tensors=[torch.tensor([3.0, 1.0])])
    (bw,) = of_type(t.events, BackwardEvent)
    assert bw.call == "backward"
    assert values(bw.gradient[0]) == [3.0, 1.0]
    assert w.grad.tolist() == [7.0]  # 3 * x + 1
    del y


def test_higher_order_autograd_grad() -> None:
    x = torch.tensor([3.0], requires_grad=True)
    with gradlens.trace(x=x) as t:
        y = x**2
        (g1,) = torch.autograd.grad(y, x, create_graph=True)
        (g2,) = torch.autograd.grad(g1, x, create_graph=True)
        (g3,) = torch.autograd.grad(g2, x, create_graph=True)
    assert (g1.item(), g2.item(), g3.item()) == (6.0, 2.0, 0.0)
    bws = of_type(t.events, BackwardEvent)
    assert [e.call for e in bws] == ["grad"] * 3
    assert [[values(r) for r in e.results] for e in bws] == [[[6.0]], [[2.0]], [[0.0]]]
    assert [e.inputs for e in bws] == [("x",)] * 3
    assert [e.create_graph for e in bws] == [True] * 3
    assert [e.retain_graph for e in bws] == [True] * 3  # defaults to create_graph
    assert x.grad is None

    g = t.graph
    (pow_op,) = [n for n in g.of_kind(NodeKind.OP) if n.op == "pow"]
    (y_out,) = g.children(pow_op.id)
    assert y_out.kind is NodeKind.OUTPUT
    derivative = [(e.src, e.dst) for e in g.edges if e.kind is EdgeKind.DERIVATIVE]
    into_y = [src for src, dst in derivative if dst == y_out.id]
    assert len(into_y) == 1
    g1_out = g.node(into_y[0])
    assert g1_out.kind is NodeKind.OUTPUT and g1_out.shape == (1,)
    # g1 = 2 * x: its graph is MulBackward0 <- ... <- the leaf x
    assert g.parents(g1_out.id)[0].name == "MulBackward0"
    # g2 is the derivative of g1; g3 = 0 has no grad_fn, so no node.
    assert len(derivative) == 2
    assert [dst for _, dst in derivative if dst == g1_out.id] == [g1_out.id]
    assert len(g.of_kind(NodeKind.OUTPUT)) == 3
    (x_node,) = g.of_kind(NodeKind.LEAF)
    assert x_node.name == "x"
    del y, g1, g2, g3


# ---- modules ----------------------------------------------------------------------------------


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))


def test_module_paths_and_parameter_names() -> None:
    model = mlp()
    inp = torch.randn(4, 2)
    with gradlens.trace(model, inp=inp) as t:
        line = here() + 1
        out = model(inp)
        loss = out.sum()
        loss.backward()
    ops = of_type(t.events, OpEvent)
    assert [(e.op, e.module) for e in ops] == [
        ("linear", "0"),
        ("relu", "1"),
        ("linear", "2"),
        ("sum", None),
    ]
    assert [line_of(e.source) for e in ops] == [line, line, line, line + 1]
    assert [r.name for r in ops[0].inputs] == ["inp", "0.weight", "0.bias"]

    g = t.graph
    by_op = {(n.op, n.module): n.name for n in g.of_kind(NodeKind.OP) if n.op}
    assert by_op == {
        ("linear", "0"): "AddmmBackward0",
        ("relu", "1"): "ReluBackward0",
        ("linear", "2"): "AddmmBackward0",
        ("sum", None): "SumBackward0",
    }
    leaf_modules = {n.name: n.module for n in g.of_kind(NodeKind.LEAF)}
    assert leaf_modules == {
        "0.weight": "0",
        "0.bias": "0",
        "2.weight": "2",
        "2.bias": "2",
    }
    for name, p in model.named_parameters():
        (node,) = g.find(name)
        assert node.shape == tuple(p.shape)
        assert values(node.grad) == p.grad.tolist()
        assert values(t.tensors[name].grad) == p.grad.tolist()
    (inp_node,) = g.of_kind(NodeKind.INPUT)
    assert inp_node.name == "inp" and inp_node.shape == (4, 2)
    del out, loss


def test_nested_module_paths_are_named_modules_paths() -> None:
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = nn.Sequential(nn.Linear(2, 2), nn.Tanh())

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x) * 2

    torch.manual_seed(0)
    block = Block()
    inp = torch.randn(1, 2)
    with gradlens.trace(block) as t:
        block(inp).sum().backward()
    assert [(e.op, e.module) for e in of_type(t.events, OpEvent)] == [
        ("linear", "inner.0"),
        ("tanh", "inner.1"),
        ("mul", ""),
        ("sum", None),
    ]
    assert {n.name: n.module for n in t.graph.of_kind(NodeKind.LEAF)} == {
        "inner.0.weight": "inner.0",
        "inner.0.bias": "inner.0",
    }


# ---- cleanup ----------------------------------------------------------------------------------


def module_hooks(model: nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._forward_hooks_always_called)
        for m in model.modules()
    )


class CountSummaries:
    """Counts the values a recorder reads (``Summaries.add``): every gradlens backward hook
    reads the gradient it sees."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from gradlens.capture.summary import Summaries

        self.calls = 0
        real = Summaries.add

        def counting(summaries: Summaries, t: Any) -> Any:
            self.calls += 1
            return real(summaries, t)

        monkeypatch.setattr(Summaries, "add", counting)


def test_hooks_and_mode_installed_while_recording_and_gone_after() -> None:
    model = mlp()
    before = mode_stack()
    assert module_hooks(model) == 0
    with gradlens.trace(model) as t:
        assert len(mode_stack()) == len(before) + 1
        assert module_hooks(model) > 0
        model(torch.randn(2, 2)).sum().backward()
    assert mode_stack() == before
    assert module_hooks(model) == 0
    assert len(of_type(t.events, BackwardEvent)) == 1


class Boom(Exception):
    pass


def test_body_exception_propagates_unchanged_and_cleanup_happens() -> None:
    model = mlp()
    before = mode_stack()
    err = Boom("the body failed")
    inp = torch.randn(2, 2)
    with pytest.raises(Boom) as info, gradlens.trace(model) as t:
        model(inp)
        raise err
    assert info.value is err
    assert info.value.args == ("the body failed",)
    assert mode_stack() == before
    assert module_hooks(model) == 0
    assert [e.op for e in of_type(t.events, OpEvent)] == ["linear", "relu", "linear"]


def test_exception_inside_a_module_forward_leaves_no_hook() -> None:
    class Fails(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise Boom("in forward")

    model = nn.Sequential(nn.Linear(2, 2), Fails())
    before = mode_stack()
    with pytest.raises(Boom, match="in forward"), gradlens.trace(model):
        model(torch.randn(1, 2))
    assert mode_stack() == before
    assert module_hooks(model) == 0


def test_node_hooks_observed_while_recording(monkeypatch: pytest.MonkeyPatch) -> None:
    # The control for the next tests: the counter does see gradlens's backward hooks.
    w, x = leaves()
    y = (w + x) * (w + 1)
    with gradlens.trace():
        counter = CountSummaries(monkeypatch)
        y.backward(retain_graph=True)
        during_backward = counter.calls
    assert during_backward > 0


def test_node_hooks_removed_after_backward_and_after_the_trace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    w, x = leaves()
    with gradlens.trace() as t:
        a = w + x
        y = a * (w + 1)
        y.backward(retain_graph=True)
    n_events = len(t.events)
    assert w._post_accumulate_grad_hooks in (None, {})
    counter = CountSummaries(monkeypatch)
    y.backward(retain_graph=True)  # outside the trace: must record nothing
    assert counter.calls == 0
    assert w.grad.tolist() == [10.0]
    assert len(t.events) == n_events
    del a


def test_node_hooks_removed_when_backward_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    w, x = leaves()
    y = (w + x) * (w + 1)
    handle = y.register_hook(lambda g: (_ for _ in ()).throw(Boom("in a hook")))
    before = mode_stack()
    with pytest.raises(Boom, match="in a hook"), gradlens.trace() as t:
        y.backward(retain_graph=True)
    assert mode_stack() == before
    (bw,) = of_type(t.events, BackwardEvent)
    assert bw.error == "in a hook"
    handle.remove()
    counter = CountSummaries(monkeypatch)
    y.backward()
    assert counter.calls == 0
    assert w.grad.tolist() == [5.0]


def test_trace_leaves_no_marks_on_autograd_nodes() -> None:
    w, x = leaves()
    with gradlens.trace():
        a = w + x
        y = a * (w + 1)
    fns, queue = [], [y.grad_fn]
    while queue:
        fn = queue.pop()
        fns.append(fn)
        queue.extend(c for c, _ in fn.next_functions if c is not None)
    assert len(fns) == 6  # Mul, 2 Add, AccumulateGrad w twice, AccumulateGrad x
    assert all(fn.metadata == {} for fn in fns)


def test_graph_inside_a_trace_does_not_duplicate_nodes() -> None:
    w, x = leaves()
    with gradlens.trace(w=w, x=x) as t:
        a = w + x
        b = w + 1
        y = a * b
        gradlens.graph(y)
        y.backward()
    ops = t.graph.of_kind(NodeKind.OP)
    assert Counter(n.name for n in ops) == Counter({"MulBackward0": 1, "AddBackward0": 2})
    assert all(n.op is not None for n in ops)
    del a, b


def test_no_tensor_kept_alive() -> None:
    def run() -> tuple[gradlens.Trace, list[weakref.ref[torch.Tensor]]]:
        w = torch.randn(3, requires_grad=True)
        v = torch.randn(2, 3, requires_grad=True)
        with gradlens.trace(w=w) as t:
            a = w * 2
            b = (v @ a).sin()
            loss = b.sum()
            loss.backward()
        refs = [weakref.ref(tensor) for tensor in (w, v, a, b, loss, w.grad, v.grad)]
        return t, refs

    t, refs = run()
    gc.collect()
    assert [r() is None for r in refs] == [True] * len(refs)
    # The finished trace is alive and still readable.
    assert [e.op for e in of_type(t.events, OpEvent)] == ["mul", "matmul", "sin", "sum"]
    assert len(of_type(t.events, BackwardEvent)) == 1
    assert values(t.tensors["w"].value) is not None
    assert values(t.tensors["w"].grad) is not None
    assert len(t.graph.find("w")) == 1
    assert len(t.graph.find("v")) == 1


def test_no_module_or_parameter_kept_alive() -> None:
    def run() -> tuple[gradlens.Trace, list[weakref.ref[Any]]]:
        model = nn.Linear(3, 2)
        inp = torch.randn(1, 3)
        with gradlens.trace(model) as t:
            model(inp).sum().backward()
        return t, [weakref.ref(model), weakref.ref(model.weight), weakref.ref(model.bias)]

    t, refs = run()
    gc.collect()
    assert [r() is None for r in refs] == [True, True, True]
    assert {n.name for n in t.graph.of_kind(NodeKind.LEAF)} == {"weight", "bias"}


# ---- recording never changes what PyTorch does ------------------------------------------------

Outcome = tuple[dict[str, torch.Tensor], tuple[type, str] | None]


def classic_program() -> dict[str, torch.Tensor]:
    w, x = leaves()
    y = (w + x) * (w + 1)
    y.backward(retain_graph=True)
    y.backward()
    return {"w.grad": w.grad, "x.grad": x.grad, "y": y.detach()}


def backward_three_times() -> dict[str, torch.Tensor]:
    w, x = leaves()
    y = (w + x) * (w + 1)
    y.backward()
    y.backward()
    return {}


def grad_tensors_program() -> dict[str, torch.Tensor]:
    w, x = leaves()
    a, b = w + x, w + 1
    torch.cat([a * b, a + b]).backward(gradient=torch.tensor([1.0, 2.0]))
    return {"w.grad": w.grad, "x.grad": x.grad}


def higher_order_program() -> dict[str, torch.Tensor]:
    x = torch.tensor([3.0], requires_grad=True)
    (g1,) = torch.autograd.grad(x**2, x, create_graph=True)
    (g2,) = torch.autograd.grad(g1, x, create_graph=True)
    (g3,) = torch.autograd.grad(g2, x, create_graph=True)
    return {"g1": g1.detach(), "g2": g2.detach(), "g3": g3.detach()}


def sgd_program() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(inplace=True), nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    data, target = torch.randn(16, 4), torch.randn(16, 1)
    out: dict[str, torch.Tensor] = {}
    for step in range(3):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(data), target)
        loss.backward()
        opt.step()
        out[f"loss{step}"] = loss.detach()
    for name, p in model.named_parameters():
        out[name] = p.detach().clone()
        out[name + ".grad"] = p.grad.clone()
    return out


def inplace_after_save_program() -> dict[str, torch.Tensor]:
    x = torch.randn(3, generator=torch.Generator().manual_seed(1), requires_grad=True)
    s = torch.sigmoid(x)
    s.mul_(2)
    s.sum().backward()
    return {"x.grad": x.grad}


def inplace_on_detached_program() -> dict[str, torch.Tensor]:
    x = torch.randn(3, generator=torch.Generator().manual_seed(1), requires_grad=True)
    s = torch.sigmoid(x)
    s.detach().mul_(2)  # shares the version counter: backward fails
    s.sum().backward()
    return {"x.grad": x.grad}


def inplace_through_data_program() -> dict[str, torch.Tensor]:
    x = torch.randn(3, generator=torch.Generator().manual_seed(1), requires_grad=True)
    s = torch.sigmoid(x)
    s.data.mul_(2)  # silent, and the gradient is wrong: identically so in a trace
    s.sum().backward()
    return {"x.grad": x.grad}


def inplace_on_leaf_program() -> dict[str, torch.Tensor]:
    w = torch.ones(2, requires_grad=True)
    w.add_(1)
    return {}


def inplace_on_view_program() -> dict[str, torch.Tensor]:
    x = torch.arange(4.0, requires_grad=True)
    a = x * 2
    v = a[1:3]
    v.mul_(3)
    a[0] = 5.0
    a += 1
    (a**2).sum().backward()
    return {"x.grad": x.grad, "a": a.detach()}


def user_hooks_program() -> dict[str, torch.Tensor]:
    w, x = leaves()
    a = w + x
    a.retain_grad()
    a.register_hook(lambda g: g * 10)
    y = a * (w + 1)
    y.backward()
    return {"w.grad": w.grad, "x.grad": x.grad, "a.grad": a.grad}


def backward_without_graph_program() -> dict[str, torch.Tensor]:
    w = torch.ones(2, requires_grad=True)
    with torch.no_grad():
        y = (w * 2).sum()
    y.backward()
    return {}


PROGRAMS: dict[str, Callable[[], dict[str, torch.Tensor]]] = {
    "classic": classic_program,
    "backward three times": backward_three_times,
    "grad_tensors": grad_tensors_program,
    "higher order": higher_order_program,
    "sgd": sgd_program,
    "inplace after save": inplace_after_save_program,
    "inplace on detached": inplace_on_detached_program,
    "inplace through .data": inplace_through_data_program,
    "inplace on leaf": inplace_on_leaf_program,
    "inplace on view": inplace_on_view_program,
    "user hooks": user_hooks_program,
    "backward without graph": backward_without_graph_program,
}
# What each program does when run plainly: (exception type, words of its message) or None.
EXPECTED_ERRORS: dict[str, tuple[type, str] | None] = {
    "classic": None,
    "backward three times": (RuntimeError, "backward through the graph a second time"),
    "grad_tensors": None,
    "higher order": None,
    "sgd": None,
    "inplace after save": (RuntimeError, "modified by an inplace operation"),
    "inplace on detached": (RuntimeError, "modified by an inplace operation"),
    "inplace through .data": None,
    "inplace on leaf": (RuntimeError, "leaf Variable that requires grad"),
    "inplace on view": None,
    "user hooks": None,
    "backward without graph": (RuntimeError, "does not require grad"),
}


def run(program: Callable[[], dict[str, torch.Tensor]], traced: bool) -> Outcome:
    try:
        if traced:
            with gradlens.trace():
                return program(), None
        return program(), None
    except Exception as e:
        return {}, (type(e), str(e))


@pytest.mark.parametrize("name", list(PROGRAMS))
def test_recording_never_changes_what_pytorch_does(name: str) -> None:
    plain_values, plain_error = run(PROGRAMS[name], traced=False)
    traced_values, traced_error = run(PROGRAMS[name], traced=True)

    expected = EXPECTED_ERRORS[name]
    if expected is None:
        assert plain_error is None
        assert plain_values
    else:
        assert plain_error is not None
        assert plain_error[0] is expected[0]
        assert expected[1] in plain_error[1]
    assert traced_error == plain_error
    assert traced_values.keys() == plain_values.keys()
    for key, value in plain_values.items():
        assert torch.equal(traced_values[key], value), key
        assert traced_values[key].dtype == value.dtype


def test_sgd_program_records_the_optimizer_ops() -> None:
    with gradlens.trace() as t:
        sgd_program()
    assert len(of_type(t.events, BackwardEvent)) == 3
    ops = [e.op for e in of_type(t.events, OpEvent)]
    assert ops.count("linear") == 6
    assert ops.count("mse_loss") == 3


def test_inplace_after_save_is_recorded_as_an_inplace_op() -> None:
    with gradlens.trace() as t, pytest.raises(RuntimeError, match="inplace operation"):
        inplace_after_save_program()
    (mul_,) = [e for e in of_type(t.events, OpEvent) if e.op == "mul_"]
    assert mul_.inplace is True
    assert [r.version for r in mul_.inputs] == [0]
    assert [r.version for r in mul_.outputs] == [1]
    (bw,) = of_type(t.events, BackwardEvent)
    assert "modified by an inplace operation" in bw.error


def test_inplace_on_leaf_diagnostic() -> None:
    w = torch.ones(2, requires_grad=True)
    with gradlens.trace(w=w) as t, pytest.raises(RuntimeError) as info:
        line = here() + 1
        w.add_(1)
    (err,) = of_type(t.events, ErrorEvent)
    assert err.op == "add_"
    assert err.error == str(info.value).strip()
    assert line_of(err.source) == line
    (d,) = t.diagnostics
    assert d.kind == "inplace-leaf"
    assert d.name == "w"
    assert line_of(d.source) == line
    assert "torch.no_grad()" in d.fix


# ---- argument errors --------------------------------------------------------------------------


def test_non_tensor_keyword() -> None:
    with pytest.raises(gradlens.GradlensError, match="x= is a list, not a tensor"):
        gradlens.trace(x=[1.0, 2.0])


def test_list_instead_of_a_module() -> None:
    model = mlp()
    with pytest.raises(
        gradlens.GradlensError,
        match=r"argument 0 must be an nn\.Module or a dict of name -> tensor, not list",
    ):
        gradlens.trace([model])


def test_dict_with_a_non_tensor() -> None:
    with pytest.raises(gradlens.GradlensError, match=r"argument 1\['lr'\] is a float"):
        gradlens.trace(mlp(), {"lr": 0.1})


def test_entering_the_same_trace_twice() -> None:
    before = mode_stack()
    t = gradlens.trace()
    with t:
        pass
    with pytest.raises(gradlens.GradlensError, match="entered only once"), t:
        pass
    assert mode_stack() == before


def test_entering_a_trace_while_it_records() -> None:
    before = mode_stack()
    t = gradlens.trace()
    w = torch.ones(1, requires_grad=True)
    with t:
        with pytest.raises(gradlens.GradlensError, match="entered only once"), t:
            pass
        w * 2
    assert mode_stack() == before
    assert [e.op for e in of_type(t.events, OpEvent)] == ["mul"]


def test_a_loaded_trace_cannot_be_entered() -> None:
    with gradlens.trace() as t:
        torch.ones(1, requires_grad=True) * 2
    loaded = gradlens.Trace.from_record(t.record)
    assert loaded.events == t.events
    with pytest.raises(gradlens.GradlensError, match="saved record"), loaded:
        pass


def test_outputs_of_ops_that_keep_values_finite_are_not_read_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # relu of a clean input, and views of it, cannot hold a NaN or an infinity: the check of
    # their outputs is the input's. A NaN going in, or bits read as another dtype, are read.
    import gradlens.capture.summary as summary

    reads: list[tuple[int, ...]] = []
    real = summary._has_nonfinite

    def counting(t: torch.Tensor) -> bool:
        reads.append(tuple(t.shape))
        return real(t)

    monkeypatch.setattr(summary, "_has_nonfinite", counting)
    x = torch.randn(4, 6, requires_grad=True)
    bad = torch.randn(5)
    bad[2] = math.nan
    bits = torch.tensor([0x7FC00000, 0], dtype=torch.int32)  # a float32 NaN's bits
    with gradlens.trace(x=x) as t:
        h = torch.relu(x * 2)
        v = h.t().reshape(24)
        r = torch.relu(bad)
        f = bits.view(torch.float32)
    outputs = {e.op: e.outputs[0] for e in t.events if isinstance(e, OpEvent)}
    assert reads == [(4, 6), (4, 6), (5,), (5,), (2,), (2,)]  # x, x*2, bad, relu(bad), bits, f
    assert not outputs["reshape"].nonfinite
    assert [e.outputs[0].nonfinite for e in t.events if e.op == "relu"] == [False, True]
    assert outputs["view"].nonfinite and f.isnan().any()
    assert not (h.isnan().any() or v.isnan().any()) and r.isnan().any()


def test_a_finished_trace_is_freed_by_reference_counting() -> None:
    # The recorder and its torch-function mode held each other: a finished trace (builder,
    # events, names) waited for a full garbage collection. With the collector off, dropping
    # the trace must free its recorder at once. (The trace runs in a function of its own:
    # reading a frame's f_locals keeps a snapshot of its variables until the function returns.)
    def traced() -> tuple[Any, int]:
        x = torch.randn(3, requires_grad=True)
        with gradlens.trace() as t:
            (x * 2).sin().sum().backward()
        return weakref.ref(t._recorder), len(t.record.events)

    with gc_paused():  # no collection may free it: reference counting alone
        recorder, events = traced()
        assert events and recorder() is None
