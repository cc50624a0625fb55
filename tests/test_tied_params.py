"""Tied and shared parameters: one tensor under several names is one node with every name.

GPT-2 ties ``lm_head.weight`` to ``transformer.wte.weight`` (``tests/model_zoo.py`` does too);
``nn.Sequential(l, l)`` and an RNN cell applied at every time step use one module's parameters
more than once. ``explain`` lists every name with the same answer, ``graph()`` and ``trace()``
draw the tensor once (the first name, the others in ``GraphNode.aliases``), and nothing calls
a name of a used tensor "unused".
"""

from __future__ import annotations

from pathlib import Path

import model_zoo
import pytest
import torch
from torch import nn

import gradlens
from gradlens.records import NodeKind
from gradlens.render.dot import to_dot


@pytest.fixture(scope="module")
def gpt2() -> tuple[nn.Module, torch.Tensor]:
    model, (ids,), _ = model_zoo.gpt2_step(vocab=100, seq=8, ctx=16, d=32, layers=2, heads=4)
    return model, ids


def _loss(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    logits = model(ids)
    return nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 100), ids[:, 1:].reshape(-1))


def _leaves(graph: gradlens.Graph) -> dict[str, tuple[str, ...]]:
    return {n.name: n.aliases for n in graph.nodes if n.kind is NodeKind.LEAF}


def test_explain_lists_both_names_of_gpt2s_tied_weight(
    gpt2: tuple[nn.Module, torch.Tensor],
) -> None:
    model, ids = gpt2
    e = gradlens.explain(_loss(model, ids), model)
    wte, head = e["transformer.wte.weight"], e["lm_head.weight"]
    assert (wte.status, head.status) == ("reachable", "reachable")
    assert wte.aliases == ("lm_head.weight",)
    assert head.aliases == ("transformer.wte.weight",)
    assert (wte.path, wte.reason) == (head.path, head.reason)
    names = [n for n, _ in model.named_parameters(remove_duplicate=False)]
    assert list(e.params) == [names[0], "lm_head.weight", *names[1:-1]]
    assert {p.status for p in e} == {"reachable"}
    assert e.diagnostics == []
    text = str(e)
    assert text.count("lm_head.weight") == 1  # one row for the tensor, both names in it
    assert "transformer.wte.weight" in text and "= lm_head.weight" in text


def test_explain_given_both_names_calls_neither_unused(
    gpt2: tuple[nn.Module, torch.Tensor],
) -> None:
    model, ids = gpt2
    w = model.transformer.wte.weight
    e = gradlens.explain(_loss(model, ids), {"transformer.wte.weight": w, "lm_head.weight": w})
    assert [(p.name, p.status, p.aliases) for p in e] == [
        ("transformer.wte.weight", "reachable", ("lm_head.weight",)),
        ("lm_head.weight", "reachable", ("transformer.wte.weight",)),
    ]
    assert e.diagnostics == []


def test_graph_and_trace_draw_the_tied_weight_once_with_both_names(
    gpt2: tuple[nn.Module, torch.Tensor], tmp_path: Path
) -> None:
    model, ids = gpt2
    loss = _loss(model, ids)
    g = gradlens.graph(loss, params=model)
    leaves = _leaves(g)
    assert leaves["transformer.wte.weight"] == ("lm_head.weight",)
    assert "lm_head.weight" not in leaves
    assert len(leaves) == len(list(model.parameters()))  # one leaf per tensor
    assert sum(bool(a) for a in leaves.values()) == 1
    (node,) = [n for n in g.nodes if n.name == "transformer.wte.weight"]
    dot = to_dot(g.view())  # every node, none collapsed
    (line,) = [ln for ln in dot.splitlines() if f'id="{node.id}"' in ln]
    assert "transformer.wte.weight" in line and "= lm_head.weight" in line
    assert "lm_head.weight" not in dot.replace("= lm_head.weight", "")

    with gradlens.trace(model) as t:
        _loss(model, ids).backward()
    traced = _leaves(t.graph)
    assert traced["transformer.wte.weight"] == ("lm_head.weight",)
    assert "lm_head.weight" not in traced
    assert len(traced) == len(list(model.parameters()))

    path = tmp_path / "g.json"
    gradlens.save(t, path)
    loaded = gradlens.load(path)
    assert _leaves(loaded.graph)["transformer.wte.weight"] == ("lm_head.weight",)
    assert node.module is not None and node.module.startswith("transformer")


def test_a_module_used_twice_is_one_node_reachable_never_unused() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(3, 3)
    model = nn.Sequential(layer, nn.Tanh(), layer)
    x = torch.randn(4, 3)
    loss = model(x).pow(2).sum()
    e = gradlens.explain(loss, model)
    assert [(p.name, p.status, p.aliases) for p in e] == [
        ("0.weight", "reachable", ("2.weight",)),
        ("2.weight", "reachable", ("0.weight",)),
        ("0.bias", "reachable", ("2.bias",)),
        ("2.bias", "reachable", ("0.bias",)),
    ]
    assert e.diagnostics == []
    g = gradlens.graph(loss, params=model)
    assert _leaves(g) == {"0.weight": ("2.weight",), "0.bias": ("2.bias",)}
    # the one leaf feeds both uses: two edges out of it (the two linear layers)
    (wid,) = [n.id for n in g.nodes if n.name == "0.weight"]
    assert len([e for e in g.edges if e.src == wid or e.dst == wid]) == 2


def test_an_rnn_cell_applied_at_every_step_has_one_leaf_per_parameter() -> None:
    torch.manual_seed(0)
    cell = nn.RNNCell(2, 3)
    h = torch.zeros(1, 3)
    for x in torch.randn(4, 1, 2):
        h = cell(x, h)
    loss = h.sum()
    e = gradlens.explain(loss, cell)
    assert [(p.name, p.status, p.aliases) for p in e] == [
        ("weight_ih", "reachable", ()),
        ("weight_hh", "reachable", ()),
        ("bias_ih", "reachable", ()),
        ("bias_hh", "reachable", ()),
    ]
    g = gradlens.graph(loss, params=cell)
    assert _leaves(g) == {"weight_ih": (), "weight_hh": (), "bias_ih": (), "bias_hh": ()}
