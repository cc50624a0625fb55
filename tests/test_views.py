"""Tests of module views (gradlens.analysis.views) on a GPT-2-small-shaped transformer and a
ResNet-50-shaped CNN (tests/model_zoo.py; small vocab, sequence and images: node counts do not
depend on widths), and of how graph() infers module paths, against trace()'s hooks."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from typing import Any

import pytest
import torch
from model_zoo import gpt2_step, resnet50_step

import gradlens
from gradlens import GradlensError
from gradlens.analysis.views import PAGE_NODES, is_view, view
from gradlens.capture.builder import GraphBuilder
from gradlens.capture.module_paths import infer_modules
from gradlens.capture.names import TensorNames, named_params
from gradlens.records import EdgeKind, Graph, GraphEdge, GraphNode, ModuleInfo, NodeKind
from gradlens.records.modules import module_depth, within
from gradlens.records.serialize import dumps, loads
from gradlens.render.dot import to_dot
from gradlens.render.graphviz import find_dot

needs_dot = pytest.mark.skipif(find_dot() is None, reason="Graphviz 'dot' is not installed")
GPT2 = {"vocab": 1000, "seq": 16, "ctx": 16, "d": 64, "heads": 4}  # 12 layers, as GPT-2 small


@pytest.fixture(scope="module")
def gpt2() -> Graph:
    model, inputs, loss_fn = gpt2_step(**GPT2)
    return gradlens.graph(loss_fn(model, *inputs), params=model)


@pytest.fixture(scope="module")
def resnet_model() -> Any:
    return resnet50_step(batch=1, size=64, classes=10)


@pytest.fixture(scope="module")
def resnet(resnet_model: Any) -> Graph:
    model, inputs, loss_fn = resnet_model
    return gradlens.graph(loss_fn(model, *inputs), params=model)


@pytest.fixture(scope="module")
def gpt2_trace() -> gradlens.Trace:
    model, inputs, loss_fn = gpt2_step(layers=2, **GPT2)
    with gradlens.trace(model) as t:
        loss_fn(model, *inputs).backward()
    return t


def kinds(g: Graph) -> Counter[str]:
    return Counter(n.kind.value for n in g.nodes)


def modules_of(g: Graph) -> list[GraphNode]:
    return [n for n in g.nodes if n.kind == NodeKind.MODULE]


def dot_json(text: str) -> dict[str, Any]:
    """Returns what ``dot -Tjson`` makes of the text (it must succeed silently)."""
    dot = find_dot()
    assert dot is not None
    done = subprocess.run([dot, "-Tjson"], input=text.encode(), capture_output=True)
    assert done.returncode == 0 and done.stderr == b"", done.stderr.decode()
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def drawn_ids(text: str) -> set[str]:
    """Returns the ids of the nodes ``dot`` drew (every node carries ``id=<record id>``)."""
    objects = dot_json(text).get("objects", [])
    return {o["id"] for o in objects if "nodes" not in o and "id" in o}


# ---- depth -----------------------------------------------------------------------------------


def test_gpt2_depth_counts(gpt2: Graph) -> None:
    assert len(gpt2.nodes) == 1076
    counts = {d: len(gpt2.view(depth=d).nodes) for d in (1, 2, 3, 4)}
    print("gpt2 depth node counts", counts)
    assert counts == {1: 12, 2: 22, 3: 44, 4: 104}
    assert {d: len(gpt2.view(depth=d, saved=False).nodes) for d in (1, 2, 3)} == {
        1: 8,
        2: 16,
        3: 30,
    }
    one = gpt2.view(depth=1)
    assert [(n.name, n.module_class) for n in modules_of(one)] == [
        ("lm_head", "Linear"),
        ("transformer", "GPT2Model"),
    ]
    three = gpt2.view(depth=3)
    blocks = [n for n in modules_of(three) if n.module_class == "GPT2Block"]
    assert sorted(n.name for n in blocks) == sorted(f"transformer.h.{i}" for i in range(12))
    block = three.node("m:transformer.h.3")
    assert block.module == "transformer.h" and block.count == 1
    assert block.in_shapes == ((1, 16, 64),) and block.out_shapes == ((1, 16, 64),)
    model = gpt2_step(**GPT2)[0]
    assert block.params == sum(p.numel() for p in model.transformer.h[3].parameters()) == 49984
    assert block.inner == 87  # 46 ops, 29 saved tensors, 12 parameters


def test_resnet_depth_counts(resnet: Graph, resnet_model: Any) -> None:
    assert len(resnet.nodes) == 821
    counts = {d: len(resnet.view(depth=d).nodes) for d in (1, 2, 3)}
    print("resnet50 depth node counts", counts)
    assert counts == {1: 17, 2: 49, 3: 245}
    assert {d: len(resnet.view(depth=d, saved=False).nodes) for d in (1, 2, 3)} == {
        1: 13,
        2: 32,
        3: 180,
    }
    stages = {n.name: n for n in modules_of(resnet.view(depth=1))}
    assert {"layer1", "layer2", "layer3", "layer4", "conv1", "bn1", "fc"} <= set(stages)
    assert stages["layer1"].params == sum(p.numel() for p in resnet_model[0].layer1.parameters())


# ---- auto ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["gpt2", "resnet"])
def test_auto_view_fits_a_page_and_names_every_top_level_module(
    name: str, request: pytest.FixtureRequest
) -> None:
    g: Graph = request.getfixturevalue(name)
    auto = g.view(depth="auto")
    print(name, "auto view nodes", len(auto.nodes))
    assert len(auto.nodes) <= PAGE_NODES
    top = {info.path for info in g.modules if module_depth(info.path) == 1}
    made = {n.module.split(".")[0] for n in g.nodes if n.kind == NodeKind.OP and n.module}
    shown = {n.name for n in auto.nodes if n.kind == NodeKind.MODULE} | {
        n.module for n in auto.nodes if n.module
    }
    for path in top & made:
        assert any(s == path or s.startswith(path + ".") for s in shown), path
    assert auto.notes[0].startswith(f"auto view: {len(auto.nodes)} of {len(g.nodes)} nodes")
    assert is_view(auto) and not is_view(g)


def test_auto_view_of_gpt2_is_its_12_blocks(gpt2: Graph) -> None:
    auto = gpt2.view(depth="auto")
    assert len(auto.nodes) == 44  # depth 3: every block one node, saved tensors kept
    assert auto.notes == (
        "auto view: 44 of 1076 nodes at depth 3 (a page holds 60)",
        "collapsed 12 GPT2Block (transformer.h.0–11): g.view(depth=4) or "
        'g.view(module="transformer.h.0")',
    )
    # to_dot with no options draws exactly this view.
    assert to_dot(gpt2) == to_dot(auto)


def test_auto_view_of_resnet(resnet: Graph) -> None:
    auto = resnet.view(depth="auto")
    assert len(auto.nodes) == 49
    assert auto.notes[0] == "auto view: 49 of 821 nodes at depth 2 (a page holds 60)"
    assert auto.notes[1].startswith("collapsed 16 Bottleneck (layer1.0 … layer4.2)")


def test_small_graphs_are_not_viewed() -> None:
    w = torch.tensor([2.0], requires_grad=True)
    g = gradlens.graph(w * w, params={"w": w})
    assert g.view(depth="auto") == g and g.view(depth="auto").notes == ()


# ---- fold ------------------------------------------------------------------------------------


def test_gpt2_fold_is_one_block_times_12(gpt2: Graph) -> None:
    folded = gpt2.view(fold=True)
    (block,) = modules_of(folded)
    assert (block.id, block.name, block.module_class, block.count) == (
        "m:transformer.h.0",
        "transformer.h.0–11",
        "GPT2Block",
        12,
    )
    assert block.instances == tuple(f"transformer.h.{i}" for i in range(12))
    assert block.instance_grad_norms == (None,) * 12  # graph(): no gradient reached the ops
    assert block.inner == 12 * 87
    assert len(folded.nodes) == 33 and len(gpt2.view(fold=True, saved=False).nodes) == 19
    # Nothing leads into a block but the one before, so the fold has one way in and out.
    ins = [e for e in folded.edges if e.dst == block.id and e.kind == EdgeKind.DATA]
    outs = [e for e in folded.edges if e.src == block.id]
    assert len(ins) == 1 and len(outs) == 1


def test_resnet_fold_keeps_each_stages_first_bottleneck(resnet: Graph) -> None:
    folded = resnet.view(fold=True, saved=False)
    runs = {n.name: (n.module_class, n.count) for n in modules_of(folded)}
    assert runs == {
        "layer1.1–2": ("Bottleneck", 2),
        "layer2.1–3": ("Bottleneck", 3),
        "layer3.1–5": ("Bottleneck", 5),
        "layer4.1–2": ("Bottleneck", 2),
    }
    # The first bottleneck of each stage (with its downsample) is drawn op by op.
    ops = {n.module for n in folded.nodes if n.kind == NodeKind.OP and n.module}
    assert {"layer1.0.downsample.0", "layer2.0.conv1", "layer4.0.bn3"} <= ops
    # With auto depth the first bottlenecks collapse too: 4 runs and 4 single blocks.
    auto = resnet.view(depth="auto", fold=True)
    assert len(auto.nodes) == 41
    assert Counter(n.count for n in modules_of(auto) if n.module_class == "Bottleneck") == {
        1: 4,
        2: 2,
        3: 1,
        5: 1,
    }


def test_fold_shows_per_instance_gradient_norms_after_backward(gpt2_trace: Any) -> None:
    (block,) = [n for n in modules_of(gpt2_trace.view(fold=True)) if n.count > 1]
    assert block.instances == ("transformer.h.0", "transformer.h.1")
    norms = block.instance_grad_norms
    assert len(norms) == 2 and all(isinstance(x, float) and x > 0 for x in norms)
    assert block.grad_norm == norms[-1]
    # Each instance's norm is that of the gradient reaching its output op (the last add).
    g = gpt2_trace.graph
    adds = [
        n
        for n in g.nodes
        if n.module == "transformer.h.1"
        and n.name == "AddBackward0"
        and any(
            not within(g.node(e.dst).module, "transformer.h.1") for e in g.edges if e.src == n.id
        )
    ]
    assert len(adds) == 1 and adds[0].grads[-1] is not None
    assert norms[1] == pytest.approx(adds[0].grads[-1].norm)


def test_expand_opens_a_collapsed_module_and_unfolds_a_run(gpt2: Graph) -> None:
    opened = gpt2.view(depth=3, expand=("transformer.h.3",))
    names = {n.name for n in modules_of(opened)}
    assert "transformer.h.3" not in names
    assert {"transformer.h.3.ln_1", "transformer.h.3.attn", "transformer.h.3.mlp"} <= names
    unfolded = gpt2.view(fold=True, expand=("transformer.h.0",))
    assert sorted((n.name, n.count) for n in modules_of(unfolded)) == sorted(
        (f"transformer.h.{i}", 1) for i in range(12)
    )
    assert len(opened.nodes) == 49 and len(unfolded.nodes) == 44


# ---- module, saved, max_nodes ------------------------------------------------------------------


def test_module_view_of_one_block(gpt2: Graph) -> None:
    block = gpt2.view(module="transformer.h.3")
    assert block == gpt2.view(module="GPT2LMHeadModel.transformer.h.3")  # root class prefix
    count = kinds(block)
    print("gpt2 module view of transformer.h.3", dict(count))
    assert count == {"op": 46, "saved": 29, "leaf": 12, "stub": 3}
    stubs = [n for n in block.nodes if n.kind == NodeKind.STUB]
    assert sorted((n.name, n.source) for n in stubs) == [
        ("AddBackward0", "transformer.h.2"),  # the block's input: h.2's last add
        ("AddBackward0", "transformer.h.4"),  # its output feeds h.4's residual add ...
        ("NativeLayerNormBackward0", "transformer.h.4.ln_1"),  # ... and h.4's first LayerNorm
    ]
    ops = [n for n in block.nodes if n.kind == NodeKind.OP]
    assert all(within(n.module, "transformer.h.3") for n in ops)
    # The block's input comes from h.2's last add and its output goes to h.4 (and its add).
    stub_edges = [
        (e.src, e.dst) for e in block.edges if e.src.startswith("s:") or e.dst.startswith("s:")
    ]
    assert len(stub_edges) == 4
    assert block.notes[0] == "module 'transformer.h.3' only; its neighbours are drawn as stubs"
    inner = gpt2.view(module="transformer.h.3", depth=1)
    assert sorted(n.name for n in modules_of(inner)) == [
        "transformer.h.3.attn",
        "transformer.h.3.ln_1",
        "transformer.h.3.ln_2",
        "transformer.h.3.mlp",
    ]


def test_saved_false_hides_saved_tensors(gpt2: Graph) -> None:
    v = gpt2.view(depth=2, saved=False)
    assert kinds(v)["saved"] == 0 and all(e.kind != EdgeKind.SAVED for e in v.edges)
    assert v.notes[-1] == "6 saved-tensor boxes hidden: g.view(..., saved=True) shows them"


def test_max_nodes_cuts_at_module_boundaries(gpt2: Graph) -> None:
    v = gpt2.view(max_nodes=20)
    assert len(v.nodes) <= 20
    assert not any(n.kind == NodeKind.STUB for n in v.nodes)  # no ragged cut, no "more" node
    assert v.notes[0].startswith("max_nodes=20: ")
    assert len(gpt2.view(depth=4, max_nodes=50).nodes) == 44  # collapsed up to depth 3
    assert to_dot(gpt2, max_nodes=20) == to_dot(v)


def test_bad_arguments_are_explained(gpt2: Graph) -> None:
    with pytest.raises(GradlensError, match=r"no module 'transformer\.h\.99'.*'transformer\.h"):
        gpt2.view(module="transformer.h.99")
    with pytest.raises(GradlensError, match="depth must be"):
        gpt2.view(depth=-1)
    with pytest.raises(GradlensError, match="max_nodes must be"):
        gpt2.view(max_nodes=1)


# ---- records: JSON, trace, tied weights -------------------------------------------------------


def test_json_round_trip_views_identically(gpt2: Graph, resnet: Graph, gpt2_trace: Any) -> None:
    loaded_trace = gradlens.Trace.from_record(loads(dumps(gpt2_trace.record)))  # type: ignore[arg-type]
    for g, loaded in ((gpt2, loads(dumps(gpt2))), (resnet, loads(dumps(resnet)))):
        assert isinstance(loaded, Graph) and loaded == g and loaded.modules == g.modules
        for kw in (
            {"depth": "auto"},
            {"depth": 2},
            {"fold": True},
            {"fold": True, "depth": "auto", "saved": False},
            {"max_nodes": 25},
        ):
            assert loaded.view(**kw) == g.view(**kw), kw
            assert to_dot(loaded.view(**kw)) == to_dot(g.view(**kw)), kw
        assert to_dot(loaded) == to_dot(g)
    assert loaded_trace.view(fold=True) == gpt2_trace.view(fold=True)
    # A view itself round-trips too (MODULE and STUB nodes, notes).
    v = gpt2.view(fold=True, module="transformer")
    assert loads(dumps(v)) == v


def test_old_files_and_small_graphs_keep_their_json() -> None:
    node = GraphNode("n0", NodeKind.OP, "MulBackward0")
    text = dumps(Graph((node,), ()))
    for key in ("module_class", "count", "instances", "aliases", "modules", "notes"):
        assert f'"{key}"' not in text
    assert loads(text) == Graph((node,), ())


def test_trace_modules_and_nested_clusters(gpt2_trace: Any) -> None:
    g = gpt2_trace.graph
    assert g.modules[0] == ModuleInfo(
        "", "GPT2LMHeadModel", 64 * 1000 + 16 * 64 + 2 * 49984 + 128, ()
    )
    assert g.modules[0].params == sum(
        p.numel() for p in gpt2_step(layers=2, **GPT2)[0].parameters()
    )
    paths = {n.module for n in g.nodes if n.kind == NodeKind.OP}
    assert "transformer.h.1.attn.c_attn" in paths and None in paths
    # matmul's own expand/bmm/view nodes carry the module that ran matmul.
    bmm = [n for n in g.nodes if n.name == "BmmBackward0"]
    assert bmm and all(n.module == f"transformer.h.{n.module.split('.')[2]}.attn" for n in bmm)
    text = to_dot(g.view(depth=4, saved=False))
    lines = text.splitlines()
    outer = next(
        i for i, s in enumerate(lines) if "subgraph cluster_" in s and "_transformer {" in s
    )
    inner = next(
        i
        for i, s in enumerate(lines)
        if s.strip().startswith("subgraph") and "transformer_h_1 {" in s
    )
    assert outer < inner and lines[inner].startswith("      subgraph")  # nested two levels deep


def test_a_tied_parameter_is_one_node_with_both_names() -> None:
    nodes = (
        GraphNode("n0", NodeKind.OUTPUT, "loss", shape=()),
        GraphNode("n1", NodeKind.OP, "MmBackward0", module="lm_head"),
        GraphNode("n2", NodeKind.OP, "EmbeddingBackward0", module="wte"),
        GraphNode(
            "n3",
            NodeKind.LEAF,
            "wte.weight",
            shape=(10, 4),
            module="wte",
            aliases=("lm_head.weight",),
        ),
    )
    edges = (
        GraphEdge("n1", "n0"),
        GraphEdge("n2", "n1"),
        GraphEdge("n3", "n2"),
        GraphEdge("n3", "n1"),
    )
    modules = (
        ModuleInfo("", "LM", 40),
        ModuleInfo("wte", "Embedding", 40, ("wte.weight",)),
        ModuleInfo("lm_head", "Linear", 40, ("lm_head.weight",)),
    )
    g = Graph(nodes, edges, modules=modules)
    v = view(g, depth=1)
    leaves = [n for n in v.nodes if n.kind == NodeKind.LEAF]
    assert [(n.name, n.aliases) for n in leaves] == [("wte.weight", ("lm_head.weight",))]
    assert {(e.src, e.dst) for e in v.edges} == {
        ("m:lm_head", "n0"),
        ("m:wte", "m:lm_head"),
        ("n3", "m:wte"),
        ("n3", "m:lm_head"),
    }
    assert "= lm_head.weight" in to_dot(v)


# ---- drawing ---------------------------------------------------------------------------------


@needs_dot
@pytest.mark.parametrize(
    "kw",
    [
        {"depth": "auto"},
        {"depth": 1},
        {"depth": 2},
        {"fold": True},
        {"module": "transformer.h.3"},
        {"module": "transformer.h.3", "depth": 1, "saved": False},
    ],
)
def test_every_gpt2_view_draws(gpt2: Graph, kw: dict[str, Any]) -> None:
    v = gpt2.view(**kw)
    ids = drawn_ids(to_dot(v))
    assert ids == {n.id for n in v.nodes} | {"gradlens_notes"}


@needs_dot
@pytest.mark.parametrize("kw", [{"depth": "auto"}, {"fold": True, "saved": False}, {"depth": 3}])
def test_every_resnet_view_draws(resnet: Graph, kw: dict[str, Any]) -> None:
    v = resnet.view(**kw)
    assert drawn_ids(to_dot(v)) == {n.id for n in v.nodes} | {"gradlens_notes"}


@needs_dot
def test_module_nodes_draw_their_facts(gpt2_trace: Any) -> None:
    v = gpt2_trace.view(fold=True)
    objects = dot_json(to_dot(v))["objects"]
    (folded,) = [o for o in objects if o.get("id") == "m:transformer.h.0"]
    assert "GPT2Block ×2" in folded["label"] and "grad norm per instance" in folded["label"]
    assert "transformer.h.0–1" in folded["label"] and "[1, 16, 64] → [1, 16, 64]" in folded["label"]


# ---- huge graphs -----------------------------------------------------------------------------


def test_a_long_chain_without_modules_is_one_page() -> None:
    w = torch.ones(3, requires_grad=True)
    x = w
    for _ in range(2000):
        x = x * 1.0001
    g = gradlens.graph(x.sum(), params={"w": w})
    assert len(g.nodes) == 4003
    auto = g.view(depth="auto")
    assert [(n.kind.value, n.name, n.count) for n in auto.nodes] == [
        ("output", "output", 1),
        ("op", "SumBackward0", 1),
        ("module", "MulBackward0", 2000),
        ("leaf", "w", 1),
    ]
    assert auto.notes == (
        "auto view: 4 of 4003 nodes (a page holds 60)",
        "2000 saved-tensor boxes hidden: g.view(..., saved=True) shows them",
        "drew 1 chain of one op as one node (MulBackward0 ×2000); g.view(depth=None) draws "
        "every op",
    )
    if find_dot() is not None:
        assert drawn_ids(to_dot(g)) == {n.id for n in auto.nodes} | {"gradlens_notes"}


# ---- graph() infers what trace() hooks see ---------------------------------------------------


def _inferred_and_hooked(
    model: torch.nn.Module, loss_fn: Any, inputs: Any
) -> list[tuple[str, Any, Any]]:
    """Returns (node name, trace()'s module, graph()'s inferred module) for each op node."""
    rows = []
    with gradlens.trace(model) as t:
        loss = loss_fn(model, *inputs)
        recorder = t._recorder
        assert recorder is not None
        builder = GraphBuilder(TensorNames(named_params(model)))
        builder.add_output(loss)
        reached = builder.walk([loss.grad_fn])
        try:
            infer_modules(reached, builder, model)
            for fn, nid in reached:
                draft = builder.draft(nid)
                if draft.kind != NodeKind.OP:
                    continue
                hooked = recorder._builder.draft(recorder._builder.known_id(fn)).module
                rows.append((draft.name, hooked, draft.module))
        finally:
            builder.forget_marks([loss.grad_fn])
    return rows


def _cut(path: str | None, depth: int) -> str | None:
    return None if path is None else ".".join(path.split(".")[:depth])


def test_graph_infers_gpt2_modules_as_trace_hooks_see_them() -> None:
    model, inputs, loss_fn = gpt2_step(layers=2, **GPT2)
    rows = _inferred_and_hooked(model, loss_fn, inputs)
    assert len(rows) == 105
    for depth in (1, 2, 3, 4):  # blocks, attention, MLP, layer norms: every op where hooks put it
        assert [r for r in rows if _cut(r[1], depth) != _cut(r[2], depth)] == [], depth
    # Deeper, only modules without parameters (dropout, GELU) differ: they leave no trace.
    deep = Counter(r[1].rsplit(".", 1)[-1] for r in rows if r[1] != r[2])
    assert deep == {"attn_dropout": 2, "resid_dropout": 2, "dropout": 2, "act": 2}


def test_graph_infers_resnet_modules_as_trace_hooks_see_them(resnet_model: Any) -> None:
    # trace() of ResNet-50 is slow: its stem and first stage only, hooks against inference.
    model = resnet_model[0]
    stem = torch.nn.Sequential()
    stem.conv1, stem.bn1, stem.relu, stem.maxpool = (
        model.conv1,
        model.bn1,
        model.relu,
        model.maxpool,
    )
    stem.layer1 = model.layer1
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    rows = _inferred_and_hooked(stem, lambda m, x: m(x).mean(), (x,))
    assert len(rows) == 37
    assert [r for r in rows if _cut(r[1], 2) != _cut(r[2], 2)] == []
    # Each block's ReLU module is reused three times: its ops are the block's, not ``relu``'s.
    deep = Counter(r[1].rsplit(".", 1)[-1] for r in rows if r[1] != r[2])
    assert deep == {"relu": 9}


def test_depth_0_is_the_whole_model_as_one_node(gpt2: Graph) -> None:
    v = gpt2.view(depth=0)
    (model,) = modules_of(v)
    assert (model.id, model.name, model.module_class) == ("m:", "", "GPT2LMHeadModel")
    assert model.params == 1000 * 64 + 16 * 64 + 12 * 49984 + 2 * 64  # wte tied with lm_head
    assert [n.name for n in v.nodes if n.kind == NodeKind.OP] == [
        "NllLossBackward0",
        "LogSoftmaxBackward0",
        "ViewBackward0",
        "SliceBackward0",
    ]
    assert v.notes == ("collapsed 1 GPT2LMHeadModel (the whole model): g.view(depth=1)",)
    block = gpt2.view(module="transformer.h.3", depth=0)
    assert [n.kind.value for n in block.nodes].count("module") == 1 and len(block.nodes) == 4


def test_gpt2_tied_embedding_is_one_node_with_both_names(gpt2: Graph) -> None:
    one = gpt2.view(depth=1)
    (leaf,) = [n for n in one.nodes if n.kind == NodeKind.LEAF]
    assert (leaf.name, leaf.aliases) == ("transformer.wte.weight", ("lm_head.weight",))
    assert sorted(e.dst for e in one.edges if e.src == leaf.id) == ["m:lm_head", "m:transformer"]
    assert "= lm_head.weight" in to_dot(one)


# ---- the auto view counts candidates without building them ----------------------------------


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"fold": True},
        {"focus": "transformer.h.3"},
        {"focus": "transformer.h.3", "fold": True},
        {"opened": ("transformer.h.3",)},
    ],
)
def test_fit_counts_equal_the_views_built(gpt2: Graph, resnet: Graph, kw: dict[str, Any]) -> None:
    """``_fit`` picks the depth from ``_count`` and builds only that view: each count must be
    the node count of the view ``_build`` makes, saved tensors shown and hidden, at every
    depth of both models."""
    from gradlens.analysis.views import _build, _choose_units, _count, _Index, _place

    for g in (gpt2, resnet):
        ix = _Index(g)
        focus = kw.get("focus") if g is gpt2 else None
        opened = kw.get("opened", ()) if g is gpt2 else ()
        for level in (None, *range(ix.max_depth + 1)):
            units = _choose_units(ix, level, focus, kw.get("fold", False), opened)
            placed = _place(ix, units, focus)
            shown, hidden = _count(ix, units, *placed)
            assert shown == len(_build(ix, units, True, focus, placed).nodes)
            assert hidden == len(_build(ix, units, False, focus, placed).nodes)
            assert hidden == len(_build(ix, units, False, focus).nodes)


def test_module_infos_count_parameters_as_each_module_sees_them() -> None:
    """module_infos counts each module's parameters in one pass over the names; a shared
    submodule (under two paths) and a tied weight must count as ``m.parameters()`` does: each
    tensor once per module."""
    from gradlens.capture.modules import module_infos

    shared = torch.nn.Linear(3, 3)
    net = torch.nn.Module()
    net.a = shared
    net.b = torch.nn.Sequential(shared, torch.nn.Linear(3, 2))
    net.head = torch.nn.Linear(3, 3)
    net.head.weight = shared.weight  # tied
    net.scale = torch.nn.Parameter(torch.ones(5))
    modules = dict(net.named_modules())
    infos = module_infos(net)
    assert [i.path for i in infos] == list(modules)
    for info in infos:
        m = modules[info.path]
        assert info.cls == type(m).__name__
        assert info.params == sum(p.numel() for p in m.parameters()), info.path
        prefix = f"{info.path}." if info.path else ""
        own = [prefix + n for n, _ in m.named_parameters(recurse=False, remove_duplicate=False)]
        assert list(info.param_names) == own
    assert {i.path: i.params for i in infos} == {
        "": 12 + 8 + 3 + 5,
        "a": 12,
        "b": 20,
        "b.1": 8,
        "head": 12,
    }
