"""``gradlens.graph``: the autograd graph behind tensors, checked against what PyTorch exposes."""

from __future__ import annotations

import gc
import sys
from collections import Counter, deque
from typing import Any

import pytest
import torch
from torch import nn

import gradlens
from gradlens.records import EdgeKind, Graph, GraphNode, NodeKind


def classic() -> tuple[torch.Tensor, ...]:
    """w = [1.], x = [2.]; a = w + x; b = w + 1; y = a * b (dy/dw = 5, dy/dx = 2)."""
    w = torch.tensor([1.0], requires_grad=True)
    x = torch.tensor([2.0], requires_grad=True)
    a = w + x
    b = w + 1
    y = a * b
    return w, x, a, b, y


def torch_nodes(root: Any) -> list[Any]:
    """Returns every autograd Node reachable from ``root``, each once, walked by hand."""
    seen: dict[int, Any] = {}
    queue = deque([root])
    while queue:
        fn = queue.popleft()
        if id(fn) in seen:
            continue
        seen[id(fn)] = fn
        queue.extend(child for child, _ in fn.next_functions if child is not None)
    return list(seen.values())


def torch_edges(root: Any) -> set[tuple[int, int]]:
    """Returns ``(id(child), id(parent))`` for every ``next_functions`` link, each once."""
    return {
        (id(child), id(fn))
        for fn in torch_nodes(root)
        for child, _ in fn.next_functions
        if child is not None
    }


def data_edges(g: Graph) -> list[tuple[str, str]]:
    return [(e.src, e.dst) for e in g.edges if e.kind is EdgeKind.DATA]


def only(nodes: list[GraphNode]) -> GraphNode:
    assert len(nodes) == 1, nodes
    return nodes[0]


# ---- the classic example ----------------------------------------------------------------------


def test_op_nodes_match_the_nodes_pytorch_exposes() -> None:
    w, x, _a, _b, y = classic()
    g = gradlens.graph(y, params={"w": w, "x": x})

    fns = torch_nodes(y.grad_fn)
    expected_ops = Counter(
        type(fn).__name__ for fn in fns if not hasattr(fn, "variable")
    )  # AccumulateGrad nodes are the leaves
    assert expected_ops == Counter({"MulBackward0": 1, "AddBackward0": 2})
    assert Counter(n.name for n in g.of_kind(NodeKind.OP)) == expected_ops
    assert Counter(n.kind for n in g.nodes) == Counter(
        {NodeKind.OUTPUT: 1, NodeKind.OP: 3, NodeKind.LEAF: 2, NodeKind.SAVED: 2}
    )
    assert [n.id for n in g.nodes] == [f"n{i}" for i in range(len(g.nodes))]


def test_edges_match_next_functions() -> None:
    w, x, _a, _b, y = classic()
    g = gradlens.graph(y, params={"w": w, "x": x})

    links = torch_edges(y.grad_fn)
    assert len(links) == 5  # a<-w, a<-x, b<-w, y<-a, y<-b
    # One DATA edge per next_functions link, plus MulBackward0 -> the output node.
    assert len(data_edges(g)) == len(links) + 1 == 6
    assert len([e for e in g.edges if e.kind is EdgeKind.SAVED]) == 2
    assert len(g.edges) == 8
    assert len(set(data_edges(g))) == 6  # no duplicates
    assert {e.label for e in g.edges if e.kind is EdgeKind.DATA} == {"[1]"}
    assert {e.label for e in g.edges if e.kind is EdgeKind.SAVED} == {None}

    out = only(g.outputs)
    mul = only(g.find("MulBackward0"))
    assert out.name == "output"
    assert [p.id for p in g.parents(out.id)] == [mul.id]
    assert sorted(p.name for p in g.parents(mul.id)) == ["AddBackward0", "AddBackward0"]


def test_shared_leaf_is_one_node_feeding_both_adds() -> None:
    w, x, _a, _b, y = classic()
    g = gradlens.graph(y, params={"w": w, "x": x})

    # In PyTorch both AddBackward0 nodes point at the very same AccumulateGrad of w.
    add_a, add_b = (child for child, _ in y.grad_fn.next_functions)
    acc_w = add_a.next_functions[0][0]
    assert acc_w.variable is w
    assert add_b.next_functions[0][0] is acc_w

    w_node = only(g.find("w"))
    x_node = only(g.find("x"))
    assert w_node.kind is NodeKind.LEAF and x_node.kind is NodeKind.LEAF
    assert (w_node.shape, w_node.dtype) == ((1,), "float32")
    assert [c.name for c in g.children(w_node.id)] == ["AddBackward0", "AddBackward0"]
    assert len({c.id for c in g.children(w_node.id)}) == 2
    assert [c.name for c in g.children(x_node.id)] == ["AddBackward0"]
    # x feeds the add that also takes w: a = w + x
    assert g.children(x_node.id)[0].id in {c.id for c in g.children(w_node.id)}


def test_saved_tensors_of_mul() -> None:
    _w, _x, _a, _b, y = classic()
    g = gradlens.graph(y)
    mul = only(g.find("MulBackward0"))
    saved = g.parents(mul.id, EdgeKind.SAVED)
    assert sorted(n.name for n in saved) == ["other", "self"]
    for n in saved:
        assert n.kind is NodeKind.SAVED
        assert n.shape == (1,)
        assert n.dtype == "float32"
        assert n.freed is False
        assert n.saved_as == f"input {n.name}"
    # AddBackward0 saves no tensor (only alpha).
    for add in g.find("AddBackward0"):
        assert g.parents(add.id, EdgeKind.SAVED) == []


def test_after_backward_leaves_show_grad_and_saved_are_freed() -> None:
    w, x, _a, _b, y = classic()
    y.backward()
    assert w.grad.tolist() == [5.0] and x.grad.tolist() == [2.0]
    g = gradlens.graph(y, params={"w": w, "x": x})

    assert only(g.find("w")).grad.values == [5.0]
    assert only(g.find("x")).grad.values == [2.0]
    saved = g.of_kind(NodeKind.SAVED)
    assert sorted(n.name for n in saved) == ["other", "self"]
    assert all(n.freed for n in saved)
    assert all(n.shape is None for n in saved)  # their values are gone
    assert only(g.outputs).grad is None


def test_before_backward_leaves_have_no_grad() -> None:
    w, x, _a, _b, y = classic()
    g = gradlens.graph(y, params={"w": w, "x": x})
    assert only(g.find("w")).grad is None
    assert only(g.find("x")).grad is None


def test_retain_graph_keeps_saved_tensors() -> None:
    _w, _x, _a, _b, y = classic()
    y.backward(retain_graph=True)
    g = gradlens.graph(y)
    assert [n.freed for n in g.of_kind(NodeKind.SAVED)] == [False, False]


# ---- naming -----------------------------------------------------------------------------------


def test_leaves_named_by_shape_without_params() -> None:
    _w, _x, _a, _b, y = classic()
    g = gradlens.graph(y)
    assert sorted(n.name for n in g.of_kind(NodeKind.LEAF)) == ["leaf[1]", "leaf[1]#2"]


def test_shape_names_of_matrix_and_scalar_leaves() -> None:
    m = torch.ones(2, 3, requires_grad=True)
    s = torch.tensor(2.0, requires_grad=True)
    g = gradlens.graph((m * s).sum())
    assert sorted(n.name for n in g.of_kind(NodeKind.LEAF)) == ["leaf[2×3]", "leaf[scalar]"]


def test_leaves_named_from_a_module() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    loss = model(torch.randn(4, 2)).sum()
    g = gradlens.graph(loss, params=model)

    expected = {name: tuple(p.shape) for name, p in model.named_parameters()}
    assert {n.name: n.shape for n in g.of_kind(NodeKind.LEAF)} == expected
    assert set(expected) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    # The input does not require grad: it has no AccumulateGrad, so it is not in the graph.
    assert g.of_kind(NodeKind.INPUT) == []
    ops = Counter(n.name for n in g.of_kind(NodeKind.OP))
    expected_ops = Counter(
        type(fn).__name__ for fn in torch_nodes(loss.grad_fn) if not hasattr(fn, "variable")
    )
    assert ops == expected_ops


def test_params_name_some_leaves_and_shapes_name_the_rest() -> None:
    w, _x, _a, _b, y = classic()
    g = gradlens.graph(y, params={"w": w})
    assert sorted(n.name for n in g.of_kind(NodeKind.LEAF)) == ["leaf[1]", "w"]


def test_several_outputs() -> None:
    w, x, a, _b, y = classic()
    g = gradlens.graph(y, a, params={"w": w, "x": x})
    assert [n.name for n in g.outputs] == ["output 0", "output 1"]
    # a's graph is part of y's: no node is duplicated.
    assert Counter(n.name for n in g.of_kind(NodeKind.OP)) == Counter(
        {"MulBackward0": 1, "AddBackward0": 2}
    )
    add_a = only([p for p in g.parents(g.outputs[1].id)])
    assert add_a.name == "AddBackward0"
    assert sorted(p.name for p in g.parents(add_a.id)) == ["w", "x"]


# ---- deep graphs ------------------------------------------------------------------------------


def test_deep_chain_of_adds_builds_without_recursion() -> None:
    x0 = torch.ones(2, requires_grad=True)
    x = x0
    for _ in range(5000):
        x = x + 1
    g = gradlens.graph(x, params={"x0": x0})
    assert len(g.nodes) == 5002  # output, 5000 AddBackward0, the leaf
    assert len(g.edges) == 5001
    assert Counter(n.name for n in g.of_kind(NodeKind.OP)) == Counter({"AddBackward0": 5000})
    assert only(g.of_kind(NodeKind.LEAF)).name == "x0"


def test_deep_chain_of_muls_builds_with_a_low_recursion_limit() -> None:
    x = torch.ones(2, requires_grad=True)
    for _ in range(5000):
        x = x * 1.0001
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(200)
    try:
        g = gradlens.graph(x)
    finally:
        sys.setrecursionlimit(limit)
    # output, 5000 MulBackward0, each with the saved scalar "other", and one leaf
    assert len(g.nodes) == 10002
    assert Counter(n.kind for n in g.nodes) == Counter(
        {NodeKind.OUTPUT: 1, NodeKind.OP: 5000, NodeKind.SAVED: 5000, NodeKind.LEAF: 1}
    )


# ---- bad inputs -------------------------------------------------------------------------------


def test_no_outputs() -> None:
    with pytest.raises(gradlens.GradlensError, match="at least one output"):
        gradlens.graph()


@pytest.mark.parametrize(
    ("value", "type_name"), [([1.0], "list"), (1.5, "float"), ("loss", "str"), (None, "NoneType")]
)
def test_not_a_tensor(value: Any, type_name: str) -> None:
    with pytest.raises(gradlens.GradlensError, match=f"output 0 is a {type_name}, not a tensor"):
        gradlens.graph(value)


def test_second_output_not_a_tensor() -> None:
    *_, y = classic()
    with pytest.raises(gradlens.GradlensError, match="output 1 is a list, not a tensor"):
        gradlens.graph(y, [y])


def test_leaf_tensor_has_no_graph() -> None:
    w = torch.tensor([1.0], requires_grad=True)
    with pytest.raises(gradlens.NoGraphError, match="leaf tensor") as info:
        gradlens.graph(w)
    assert "output 0 has no autograd graph" in str(info.value)
    assert "grad_fn" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_constant_has_no_graph() -> None:
    with pytest.raises(gradlens.NoGraphError, match="does not require grad"):
        gradlens.graph(torch.ones(3))


def test_tensor_made_under_no_grad() -> None:
    w = torch.tensor([1.0], requires_grad=True)
    with torch.no_grad():
        y = w * 2
    with pytest.raises(gradlens.NoGraphError, match=r"torch\.no_grad\(\)"):
        gradlens.graph(y)


def test_detached_tensor() -> None:
    w = torch.tensor([1.0], requires_grad=True)
    y = (w * 2).detach()
    with pytest.raises(gradlens.NoGraphError, match=r"\.detach\(\)"):
        gradlens.graph(y)


def test_second_output_without_graph_is_named_by_position() -> None:
    *_, y = classic()
    with pytest.raises(gradlens.NoGraphError, match="output 1 has no autograd graph"):
        gradlens.graph(y, torch.ones(1))


def test_params_of_a_wrong_type() -> None:
    w, x, _a, _b, y = classic()
    with pytest.raises(
        gradlens.GradlensError, match=r"params must be an nn\.Module or a dict of name -> tensor"
    ):
        gradlens.graph(y, params=[w, x])


def test_params_dict_with_a_non_tensor() -> None:
    w, _x, _a, _b, y = classic()
    with pytest.raises(gradlens.GradlensError, match=r"params\['x'\] is a float, not a tensor"):
        gradlens.graph(y, params={"w": w, "x": 2.0})


# ---- no side effects --------------------------------------------------------------------------


def test_graph_leaves_no_marks_on_autograd_nodes() -> None:
    _w, _x, a, _b, y = classic()
    y.grad_fn.metadata["mine"] = 1
    gradlens.graph(y, a)
    fns = torch_nodes(y.grad_fn)
    assert len(fns) == 5
    for fn in fns:
        assert fn.metadata == ({"mine": 1} if fn is y.grad_fn else {})


def test_graph_leaves_no_garbage_for_the_cycle_collector() -> None:
    """graph() frees everything it made by reference counting: no reference cycles (its names
    once held one per tensor) left for the garbage collector to find."""
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    loss = model(torch.randn(3, 4)).sum()
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        g = gradlens.graph(loss, params=model)
        assert len(g.nodes) > 5
        del g
        assert gc.collect() == 0
    finally:
        if was_enabled:
            gc.enable()


def test_graph_does_not_change_gradients() -> None:
    w, x, _a, _b, y = classic()
    gradlens.graph(y)
    y.backward()
    assert w.grad.tolist() == [5.0] and x.grad.tolist() == [2.0]


def test_graph_twice_gives_equal_graphs() -> None:
    w, x, _a, _b, y = classic()
    assert gradlens.graph(y, params={"w": w, "x": x}) == gradlens.graph(y, params={"w": w, "x": x})
