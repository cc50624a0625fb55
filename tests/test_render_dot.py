"""Tests of gradlens.render.dot: golden DOT, structure, escaping, and what real Graphviz draws."""

from __future__ import annotations

import re
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

import pytest

from gradlens.records import EdgeKind, Graph, GraphEdge, GraphNode, NodeKind, ValueSummary
from gradlens.render.dot import format_shape, html_escape, quote_id, to_dot
from gradlens.render.graphviz import find_dot

SVG = "{http://www.w3.org/2000/svg}"
NASTY = 'a"b<c>&{d}\\e'
needs_dot = pytest.mark.skipif(find_dot() is None, reason="Graphviz 'dot' is not installed")


def _value(*values: float) -> ValueSummary:
    return ValueSummary(shape=(len(values),), dtype="float32", values=list(values))


# ---------------------------------------------------------------------------------------------
# A small structural DOT checker, so the text is checked even where Graphviz is not installed.


@dataclass
class DotStructure:
    nodes: list[str] = field(default_factory=list)
    edges: list[tuple[str, str]] = field(default_factory=list)
    subgraphs: list[str] = field(default_factory=list)


_TOKEN = re.compile(r'\s*(?:(->|[{}\[\];,=])|("(?:[^"\\]|\\.)*")|([A-Za-z0-9_.#-]+)|(<))', re.S)


def _tokens(text: str) -> list[str]:
    tokens, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN.match(text, pos)
        assert match, f"unexpected text at {pos}: {text[pos : pos + 40]!r}"
        if match.group(4):  # an HTML string: <...> with balanced angle brackets
            start, depth, pos = match.end() - 1, 0, match.end() - 1
            while True:
                assert pos < len(text), "unterminated HTML string"
                depth += {"<": 1, ">": -1}.get(text[pos], 0)
                assert text[pos] not in '\n"' or depth > 0, "bad HTML string"
                pos += 1
                if depth == 0:
                    break
            html = text[start:pos]
            # Inside, text must be escaped: no raw '&' outside entities.
            assert not re.search(r"&(?!(amp|lt|gt|quot|#\d+);)", html), html
            tokens.append(html)
            continue
        tokens.append(match.group(1) or match.group(2) or match.group(3))
        pos = match.end()
    return tokens


def check_dot(text: str) -> DotStructure:
    """Parses the subset of DOT that ``to_dot`` writes; fails on anything malformed.

    Every statement must end with ';', braces and brackets must balance, strings must close,
    and every edge endpoint must be declared as a node.
    """
    tokens = _tokens(text)
    found = DotStructure()
    assert tokens[:3] == ["digraph", "gradlens", "{"], tokens[:3]
    try:
        pos = _statements(tokens, 3, found)
    except IndexError:
        raise AssertionError("the text ends in the middle of a statement") from None
    assert pos == len(tokens) - 1 and tokens[-1] == "}", "text after the closing brace"
    declared = set(found.nodes)
    assert len(declared) == len(found.nodes), "a node is declared twice"
    for src, dst in found.edges:
        assert src in declared and dst in declared, f"edge {src} -> {dst} to an undeclared node"
    return found


def _is_id(token: str) -> bool:
    return token not in ("{", "}", "[", "]", ";", ",", "=", "->")


def _statements(tokens: list[str], pos: int, found: DotStructure) -> int:
    while tokens[pos] != "}":
        first = tokens[pos]
        if first == "subgraph":
            assert tokens[pos + 1].startswith("cluster_") and tokens[pos + 2] == "{"
            assert re.fullmatch(r"cluster_\w+", tokens[pos + 1]), tokens[pos + 1]
            found.subgraphs.append(tokens[pos + 1])
            pos = _statements(tokens, pos + 3, found) + 1
            continue
        assert _is_id(first), f"statement starts with {first!r}"
        if tokens[pos + 1] == "=":  # graph attribute: ID = ID ;
            assert _is_id(tokens[pos + 2])
            pos += 3
        elif tokens[pos + 1] == "->":
            assert _is_id(tokens[pos + 2])
            found.edges.append((first, tokens[pos + 2]))
            pos = _attributes(tokens, pos + 3)
        elif first in ("graph", "node", "edge"):
            pos = _attributes(tokens, pos + 1)
        else:
            found.nodes.append(first)
            pos = _attributes(tokens, pos + 1)
        assert tokens[pos] == ";", f"statement not terminated at token {pos}: {tokens[pos]!r}"
        pos += 1
    return pos


def _attributes(tokens: list[str], pos: int) -> int:
    if tokens[pos] != "[":
        return pos
    pos += 1
    while tokens[pos] != "]":
        assert _is_id(tokens[pos]) and tokens[pos + 1] == "=" and _is_id(tokens[pos + 2])
        pos += 3
        if tokens[pos] == ",":
            pos += 1
    return pos + 1


# ---------------------------------------------------------------------------------------------
# Drawing with real Graphviz


@dataclass
class Drawn:
    nodes: dict[str, list[str]]  # node title -> its texts
    edges: list[str]  # edge titles, "src->dst"
    clusters: dict[str, list[str]]  # cluster title -> its label texts
    graph_texts: list[str]


def draw(dot_text: str) -> Drawn:
    """Runs ``dot -Tsvg`` on the text (which must succeed silently) and parses the SVG."""
    dot = find_dot()
    assert dot is not None
    done = subprocess.run([dot, "-Tsvg"], input=dot_text.encode("utf-8"), capture_output=True)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stderr == b"", done.stderr.decode()
    root = ET.fromstring(done.stdout)

    def groups(cls: str) -> list[ET.Element]:
        return [g for g in root.iter(f"{SVG}g") if g.get("class") == cls]

    def title(g: ET.Element) -> str:
        return g.findtext(f"{SVG}title") or ""

    def texts(g: ET.Element) -> list[str]:
        return [t.text or "" for t in g.iter(f"{SVG}text")]

    top = groups("graph")[0]
    return Drawn(
        nodes={title(g): texts(g) for g in groups("node")},
        edges=[title(g) for g in groups("edge")],
        clusters={title(g): texts(g) for g in groups("cluster")},
        graph_texts=[t.text or "" for t in top.findall(f"{SVG}text")],
    )


# ---------------------------------------------------------------------------------------------
# Graphs


def clustered_graph() -> Graph:
    nodes = (
        GraphNode("n0", NodeKind.OUTPUT, "loss", shape=()),
        GraphNode("n1", NodeKind.OP, "MseLossBackward0", op="mse_loss"),
        GraphNode("n2", NodeKind.OP, "AddmmBackward0", op="linear", module="encoder.layer1"),
        GraphNode(
            "n3", NodeKind.LEAF, "encoder.layer1.weight", shape=(4, 3), module="encoder.layer1"
        ),
        GraphNode("n4", NodeKind.LEAF, "encoder.layer1.bias", shape=(4,), module="encoder.layer1"),
        GraphNode("n5", NodeKind.INPUT, "x", shape=(8, 3)),
        GraphNode("n6", NodeKind.OP, "ReluBackward0", op="relu", module="<script>"),
    )
    edges = (
        GraphEdge("n1", "n0", label="[]"),
        GraphEdge("n6", "n1", label="[8, 4]"),
        GraphEdge("n2", "n6", label="[8, 4]"),
        GraphEdge("n3", "n2", label="[4, 3]"),
        GraphEdge("n4", "n2", label="[4]"),
        GraphEdge("n5", "n2", label="[8, 3]"),
    )
    return Graph(nodes, edges)


def nasty_graph() -> Graph:
    names = [NASTY, "new\nline", "ünïcødé α→β ∂y/∂x 😀", "tab\there", "bell\x07", "'single'", ""]
    nodes = [GraphNode("out", NodeKind.OUTPUT, "}{;]->", shape=(1,))]
    edges = []
    for i, name in enumerate(names):
        node_id = f'id"{i}\\'  # ids with a quote and a trailing backslash
        nodes.append(
            GraphNode(
                node_id,
                NodeKind.LEAF,
                name,
                shape=(1,),
                dtype="<dtype>",
                module="<script>" if i % 2 else 'a"b.c\\d',
                source=f"{name}.py:1",
            )
        )
        edges.append(GraphEdge(node_id, "out", label=f"<{name}>"))
    return Graph(tuple(nodes), tuple(edges))


def chain_graph(n: int) -> Graph:
    nodes = [GraphNode(f"n{i}", NodeKind.OP, f"Op{i}") for i in range(n)]
    edges = [GraphEdge(f"n{i + 1}", f"n{i}") for i in range(n - 1)]
    return Graph(tuple(nodes), tuple(edges))


# ---------------------------------------------------------------------------------------------
# Tests


def test_classic_graph_matches_golden(graph: Graph, golden) -> None:
    golden("classic.dot", to_dot(graph, title="y = (w + x) * (w + 1)"))


def test_output_is_deterministic(graph: Graph) -> None:
    assert to_dot(graph) == to_dot(graph)


def test_classic_graph_is_well_formed(graph: Graph) -> None:
    found = check_dot(to_dot(graph))
    assert found.nodes == [quote_id(f"n{i}") for i in range(8)]
    assert len(found.edges) == 8
    assert found.subgraphs == []


def test_labels_follow_the_legend(graph: Graph) -> None:
    text = to_dot(graph)
    lines = {line.split(" [", 1)[0].strip(): line for line in text.splitlines()}
    assert "rankdir=TB;" in text
    assert 'fillcolor="#cfe2ff"' in lines['"n5"'] and ".grad = [5.]" in lines['"n5"']
    assert "<b>MulBackward0</b><br/>mul" in lines['"n1"']
    assert "grad ← [1.]" in lines['"n1"'] and "example.py:5" in lines['"n1"']
    assert 'fillcolor="#b9e4b0"' in lines['"n0"']
    assert "label=<saved self [1]>" in lines['"n2"']
    assert '"n2" -> "n1" [style=dotted' in text
    assert '"n1" -> "n0" [label=<[1]>];' in text


def test_several_passes_and_freed_saved_tensors() -> None:
    graph = Graph(
        (
            GraphNode("n0", NodeKind.OP, "MulBackward0", grads=(_value(1.0), None, _value(2.0))),
            GraphNode("n1", NodeKind.SAVED, "a", shape=(2,), saved_as="other", freed=True),
        ),
        (GraphEdge("n1", "n0", EdgeKind.SAVED),),
    )
    text = to_dot(graph)
    assert "grad#1 ← [1.]" in text and "grad#2 ← none" in text and "grad#3 ← [2.]" in text
    assert "label=<saved other [2]<br/><i>freed</i>>" in text
    check_dot(text)


def test_derivative_edges_are_dashed_purple() -> None:
    graph = Graph(
        (
            GraphNode("n0", NodeKind.OUTPUT, "dy/dx", shape=(1,)),
            GraphNode("n1", NodeKind.LEAF, "x", shape=(1,)),
        ),
        (GraphEdge("n0", "n1", EdgeKind.DERIVATIVE, label="ignored"),),
    )
    edge = next(line for line in to_dot(graph).splitlines() if "->" in line)
    assert edge == (
        '  "n0" -> "n1" [style=dashed, color="#7b3fa0", fontcolor="#7b3fa0", '
        "constraint=false, label=<d/d>];"
    )


def test_modules_become_clusters_nested_by_path_with_sanitized_ids() -> None:
    text = to_dot(clustered_graph())
    found = check_dot(text)
    assert found.subgraphs == ["cluster_0_encoder", "cluster_1_encoder_layer1", "cluster_2_script"]
    # encoder.layer1 sits inside encoder: its subgraph opens before encoder's closes.
    lines = text.splitlines()
    outer = lines.index("  subgraph cluster_0_encoder {")
    inner = lines.index("    subgraph cluster_1_encoder_layer1 {")
    assert outer < inner < lines.index("  subgraph cluster_2_script {")


def test_html_escape() -> None:
    assert html_escape(NASTY) == "a&quot;b&lt;c&gt;&amp;{d}\\e"
    assert html_escape("<script>") == "&lt;script&gt;"
    assert html_escape("a\nb\r\nc\td") == "a<br/>b<br/>c d"
    assert html_escape("bell\x07 nul\x00") == "bell\\x07 nul\\x00"
    assert html_escape("it's α→β 😀") == "it&#39;s α→β 😀"
    assert html_escape("&amp;") == "&amp;amp;"


def test_quote_id() -> None:
    assert quote_id("n0") == '"n0"'
    assert quote_id('a"b') == '"a\\"b"'
    assert quote_id("ends\\") == '"ends\\x5c"'
    assert quote_id("two\nlines") == '"two\\x0alines"'


def test_format_shape() -> None:
    assert format_shape((2, 3)) == "[2, 3]"
    assert format_shape(()) == "[]"
    assert format_shape(None) == ""


def test_nasty_names_are_well_formed() -> None:
    found = check_dot(to_dot(nasty_graph(), title=NASTY))
    assert len(found.nodes) == 8 and len(found.edges) == 7
    assert found.subgraphs == ["cluster_0_a_b", "cluster_1_a_b_c_d", "cluster_2_script"]


def test_big_graphs_are_never_cut_silently() -> None:
    # 350 different ops, no modules, no runs: the last resort keeps 59 and one "more" stub.
    text = to_dot(chain_graph(350))
    found = check_dot(text)
    assert len(found.nodes) == 61  # 59 ops, the stub, the note
    assert found.nodes[-3:] == ['"n58"', '"s:more"', '"gradlens_notes"']
    assert ('"s:more"', '"n58"') in found.edges and len(found.edges) == 59
    assert "… 291 more nodes" in text and "cut: 291 nodes" in text
    # Small graphs are drawn as they are, with no note.
    assert "gradlens_notes" not in to_dot(chain_graph(60))
    assert len(check_dot(to_dot(chain_graph(10), max_nodes=9)).nodes) == 10  # 8 + stub + note


def test_runs_of_one_op_are_drawn_as_one_node() -> None:
    nodes = [GraphNode(f"n{i}", NodeKind.OP, "MulBackward0", op="mul") for i in range(500)]
    edges = [GraphEdge(f"n{i + 1}", f"n{i}", label="[1]") for i in range(499)]
    text = to_dot(Graph(tuple(nodes), tuple(edges)))
    found = check_dot(text)
    assert found.nodes == ['"r:n499"', '"gradlens_notes"']  # a run is named by its first op
    assert (
        "MulBackward0 ×500" in text
        and "drew 1 chain of one op as one node (MulBackward0 ×500)" in text
    )


def test_note_id_avoids_existing_ids() -> None:
    nodes = (GraphNode("gradlens_notes", NodeKind.OP, "A"),)
    nodes += tuple(GraphNode(f"n{i}", NodeKind.OP, f"Op{i}") for i in range(70))
    found = check_dot(to_dot(Graph(nodes, ()), max_nodes=5))
    assert found.nodes == [
        '"gradlens_notes"',
        '"n0"',
        '"n1"',
        '"n2"',
        '"s:more"',
        '"gradlens_notes_"',
    ]


def test_checker_rejects_malformed_dot() -> None:
    good = to_dot(chain_graph(2))
    for bad in (
        good.replace("];", "]", 1),  # statement not terminated
        good.rstrip().removesuffix("}"),  # unbalanced braces
        good.replace('"n1"', '"n1', 1),  # unclosed quote
        good.replace('"n1" -> "n0"', '"n1" -> "n9"'),  # undeclared endpoint
        good.replace("<b>Op0</b>", "<b>O&p0</b>"),  # unescaped ampersand
    ):
        with pytest.raises(AssertionError):
            check_dot(bad)


@needs_dot
def test_dot_draws_the_classic_graph(graph: Graph) -> None:
    drawn = draw(to_dot(graph, title="y = (w + x) * (w + 1)"))
    assert sorted(drawn.nodes) == [f"n{i}" for i in range(8)]
    assert len(drawn.edges) == 8
    assert "n5&#45;&gt;n4" in drawn.edges or "n5->n4" in drawn.edges
    assert drawn.graph_texts == ["y = (w + x) * (w + 1)"]
    assert drawn.nodes["n1"] == ["MulBackward0", "mul", "grad ← [1.]", "example.py:5"]
    assert drawn.nodes["n5"] == ["w", "[1]", ".grad = [5.]"]
    assert drawn.nodes["n2"] == ["saved self [1]"]
    assert drawn.clusters == {}


@needs_dot
def test_dot_draws_module_clusters() -> None:
    drawn = draw(to_dot(clustered_graph()))
    assert drawn.clusters == {
        "cluster_0_encoder": ["encoder"],
        "cluster_1_encoder_layer1": ["encoder.layer1"],
        "cluster_2_script": ["<script>"],
    }
    assert len(drawn.nodes) == 7 and len(drawn.edges) == 6


@needs_dot
def test_dot_draws_nasty_names_exactly() -> None:
    drawn = draw(to_dot(nasty_graph(), title=NASTY))
    assert drawn.graph_texts == [NASTY]
    assert len(drawn.nodes) == 8 and len(drawn.edges) == 7
    texts = [t for node_texts in drawn.nodes.values() for t in node_texts]
    assert NASTY in texts and f"{NASTY}.py:1" in texts
    assert "ünïcødé α→β ∂y/∂x 😀" in texts
    assert "new" in texts and "line" in texts  # a newline in a name becomes a line break
    assert "bell\\x07" in texts and "tab here" in texts
    assert "'single'" in texts and "}{;]->" in texts
    assert sorted(drawn.clusters.values()) == [["<script>"], ['a"b'], ['a"b.c\\d']]


@needs_dot
def test_dot_draws_big_graphs() -> None:
    drawn = draw(to_dot(chain_graph(320), max_nodes=20))
    assert len(drawn.nodes) == 21 and len(drawn.edges) == 19  # 19 ops, the stub, the note
    assert drawn.nodes["s:more"] == ["… 301 more nodes"]
    assert drawn.nodes["gradlens_notes"][0].startswith("max_nodes=20: 20 of 320 nodes")


def test_site_packages_sources_are_shortened() -> None:
    from gradlens.render.dot import short_source

    long = "/opt/py/lib/python3.11/site-packages/transformers/models/gpt2/modeling_gpt2.py:569"
    assert short_source(long) == "transformers/.../modeling_gpt2.py:569"
    assert short_source("/opt/py/lib/python3.11/site-packages/torch/nn/functional.py:9") == (
        "torch/nn/functional.py:9"
    )
    assert short_source("train.py:12") == "train.py:12"
    node = GraphNode("n0", NodeKind.OP, "AddmmBackward0", source=long)
    assert "transformers/.../modeling_gpt2.py:569" in to_dot(Graph((node,), ()))


def module_graph() -> Graph:
    folded = GraphNode(
        "m:h.0",
        NodeKind.MODULE,
        "h.0–2",
        module="h",
        module_class="Block",
        count=3,
        instances=("h.0", "h.1", "h.2"),
        instance_grad_norms=(0.5, None, 0.25),
        params=3 * 1200,
        in_shapes=((1, 8),),
        out_shapes=((1, 8),),
        grad_norm=0.25,
        inner=30,
    )
    stub = GraphNode("s:n9", NodeKind.STUB, "AddBackward0", source="h.3")
    leaf = GraphNode("n3", NodeKind.LEAF, "wte.weight", shape=(10, 8), aliases=("lm_head.weight",))
    notes = ("collapsed 3 Block (h.0–2): g.view(depth=3)",)
    edges = (GraphEdge("n3", "m:h.0", label="[10, 8]"), GraphEdge("m:h.0", "s:n9"))
    return Graph((folded, stub, leaf), edges, notes=notes)


def test_module_stub_and_note_nodes() -> None:
    text = to_dot(module_graph())
    found = check_dot(text)
    assert found.nodes == ['"s:n9"', '"n3"', '"m:h.0"', '"gradlens_notes"']  # clusters last
    assert found.subgraphs == ["cluster_0_h"]
    module_line = next(line for line in text.splitlines() if line.strip().startswith('"m:h.0"'))
    assert 'id="m:h.0"' in module_line and "<b>Block ×3</b>" in module_line
    assert "[1, 8] → [1, 8]" in module_line and "3.6k params · 30 nodes inside" in module_line
    assert (
        "grad norm ← 0.25" in module_line and "0: 0.5" in module_line and "2: 0.25" in module_line
    )
    assert "1: " not in module_line  # an instance without a gradient has no cell
    assert "= lm_head.weight" in text and 'style="dashed,filled"' in text


@needs_dot
def test_dot_draws_module_stub_and_note_nodes() -> None:
    drawn = draw(to_dot(module_graph()))
    assert sorted(drawn.nodes) == ["gradlens_notes", "m:h.0", "n3", "s:n9"]
    assert drawn.nodes["m:h.0"][:3] == ["Block ×3", "h.0–2", "[1, 8] → [1, 8]"]
    assert drawn.nodes["s:n9"] == ["AddBackward0", "h.3"]
    assert drawn.nodes["n3"] == ["wte.weight", "[10, 8]", "= lm_head.weight"]
    assert drawn.nodes["gradlens_notes"] == ["collapsed 3 Block (h.0–2): g.view(depth=3)"]
