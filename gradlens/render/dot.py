"""The autograd graph as Graphviz DOT text: a pure function of a :class:`Graph` record.

Legend (how the diagram reads, top to bottom in the direction the forward pass ran):

- **parameter** (``LEAF``, a leaf that requires grad): light-blue box with its name, shape and,
  after ``backward()``, its ``.grad``.
- **input** (``INPUT``, a leaf that does not require grad: data, a constant): white dashed oval.
- **op** (``OP``, an autograd node such as ``MulBackward0``): light-grey rounded box with the
  node's name, the forward op that made it, the source line (small) and the gradient it received
  in each backward pass (``grad ← [1.]``, or ``grad#1 ←``, ``grad#2 ←`` ... after several).
- **output** (``OUTPUT``): green box with its name and shape.
- **saved tensor** (``SAVED``): small orange box, ``saved self [1]``, joined by a dotted edge to
  the op that saved it for backward; ``freed`` once a backward without ``retain_graph`` ran.
- **edges**: solid arrows carry a tensor forward (labelled with its shape when known); a dashed
  purple arrow labelled ``d/d`` joins a derivative made by ``autograd.grad`` to its tensor; a
  dashed red arrow labelled ``<kind> at <line>`` is a value whose autograd history was dropped
  there (``gradlens.explain``).
- a **dead** node (``GraphNode.dead``: it received a gradient and passed on only zeros) is grey.
- Nodes created inside an ``nn.Module`` sit in a box labelled with the module's path.
- Past ``max_nodes`` nodes the rest are left out and a note says how many.

The output is deterministic: nodes appear in ``graph.nodes`` order under the ids they were given,
so the text can be compared with a golden file.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from ..records import EdgeKind, Graph, GraphEdge, GraphNode, NodeKind, ValueSummary, format_shape

__all__ = ["DEFAULT_MAX_NODES", "format_shape", "html_escape", "quote_id", "to_dot"]

#: Past this many nodes, ``to_dot`` keeps the first ones in graph order and notes the rest.
DEFAULT_MAX_NODES = 300

_FONT = "Helvetica"
_SMALL = 9  # point size of source lines and gradients

# Node attributes by kind, as DOT attribute text (everything here is ours, never user text).
_NODE_STYLE: dict[NodeKind, str] = {
    NodeKind.LEAF: 'shape=box, style=filled, fillcolor="#cfe2ff", color="#3d6fb4"',
    NodeKind.INPUT: 'shape=oval, style="dashed,filled", fillcolor=white, color="#808080"',
    NodeKind.OP: 'shape=box, style="rounded,filled", fillcolor="#e6e6e6", color="#707070"',
    NodeKind.OUTPUT: 'shape=box, style=filled, fillcolor="#b9e4b0", color="#3b8a32"',
    NodeKind.SAVED: (
        'shape=box, style=filled, fillcolor="#ffd8a8", color="#d9822b", '
        'fontsize=9, margin="0.05,0.02", height=0.2'
    ),
}

_EDGE_STYLE: dict[EdgeKind, str] = {
    EdgeKind.DATA: "",
    EdgeKind.SAVED: 'style=dotted, arrowhead=none, color="#d9822b"',
    # constraint=false: a derivative must not pull the layout out of forward order.
    EdgeKind.DERIVATIVE: 'style=dashed, color="#7b3fa0", fontcolor="#7b3fa0", constraint=false',
    # A value that reached dst with its autograd history dropped (``gradlens.explain``).
    EdgeKind.CUT: 'style=dashed, color="#c62828", fontcolor="#c62828", penwidth=1.5',
}

# XML 1.0 forbids most control characters, even escaped; Graphviz's HTML parser rejects them.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff\ufffe\uffff]")
_NOT_ID = re.compile(r"[^A-Za-z0-9_]+")


def html_escape(text: str) -> str:
    """Returns ``text`` safe inside a Graphviz HTML-like label (``label=<...>``).

    ``& < > " '`` become entities, a newline becomes ``<br/>``, a tab a space (Graphviz would
    drop it), other control characters (invalid in XML even as entities) become ``\\xNN``;
    braces, backslashes and any unicode stay as they are: HTML labels give them no meaning.
    """
    text = (
        text.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .replace("'", "&#39;")
    )
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\t", " ")
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    return text.replace("\n", "<br/>")


def quote_id(text: str) -> str:
    """Returns ``text`` as a double-quoted DOT ID that reads back exactly as ``text``.

    Inside a DOT string only ``\\"`` is an escape, and a backslash before a newline joins lines;
    a backslash that ends up before the closing quote would escape it. Backslashes and newlines
    are therefore spelled out (``\\x5c``, ``\\x0a``): an ID needs to be unique, not pretty.
    """
    text = text.replace("\\", "\\x5c").replace("\n", "\\x0a").replace("\r", "\\x0d")
    return '"' + text.replace('"', '\\"') + '"'


def to_dot(graph: Graph, *, title: str | None = None, max_nodes: int = DEFAULT_MAX_NODES) -> str:
    """Returns the graph as DOT text (see the module docstring for the legend).

    Nodes keep ``graph.nodes`` order and their ids; past ``max_nodes`` nodes, the first
    ``max_nodes`` are kept, edges touching the others are dropped, and a note node says how many
    were left out. Needs no Graphviz install: :func:`gradlens.render.graphviz.render` draws it.
    """
    kept = graph.nodes[: max(max_nodes, 0)]
    omitted = len(graph.nodes) - len(kept)
    kept_ids = {n.id for n in kept}
    edges = [e for e in graph.edges if e.src in kept_ids and e.dst in kept_ids]

    lines = [
        "digraph gradlens {",
        "  rankdir=TB;",
        f'  graph [fontname="{_FONT}", fontsize=11, nodesep=0.3, ranksep=0.35];',
        f'  node [fontname="{_FONT}", fontsize=10, margin="0.1,0.05", height=0.3];',
        f'  edge [fontname="{_FONT}", fontsize=9, color="#505050", arrowsize=0.7];',
    ]
    if title:
        lines.append(f"  labelloc=t; label=<<b>{html_escape(title)}</b>>;")

    by_module: dict[str, list[GraphNode]] = {}
    for node in kept:
        if node.module:
            by_module.setdefault(node.module, []).append(node)
        else:
            lines.append("  " + _node_stmt(node))
    for index, (module, members) in enumerate(by_module.items()):
        lines.extend(_cluster(index, module, members))

    lines.extend("  " + _edge_stmt(e) for e in edges)
    if omitted:
        note_id = _unused_id("omitted", kept_ids)
        text = f"… {omitted} more node{'s' if omitted != 1 else ''} not shown"
        lines.append(
            f'  {quote_id(note_id)} [shape=note, style=filled, fillcolor="#fff5c0", '
            f'label=<{html_escape(text)}<br/><font point-size="{_SMALL}">'
            f"max_nodes={max_nodes}</font>>];"
        )
    lines.append("}")
    return "\n".join(lines) + "\n"


def _cluster(index: int, module: str, members: Iterable[GraphNode]) -> list[str]:
    # Nested module paths ("encoder.layer1") stay flat clusters labelled with the full path.
    cluster_id = f"cluster_{index}_{_NOT_ID.sub('_', module).strip('_')}".rstrip("_")
    lines = [
        f"  subgraph {cluster_id} {{",
        f"    label=<{html_escape(module)}>; labeljust=l;",
        '    style="rounded,dashed"; color="#9a9a9a"; fontsize=10;',
    ]
    lines.extend("    " + _node_stmt(n) for n in members)
    lines.append("  }")
    return lines


_PROBLEM_STYLE = 'color="#c62828", fontcolor="#c62828", penwidth=2.5'
_DEAD_STYLE = 'fillcolor="#bdbdbd", fontcolor="#616161"'


def _node_stmt(node: GraphNode) -> str:
    style = _NODE_STYLE[node.kind]
    label = _label(node)
    if node.dead:
        style = f"{style}, {_DEAD_STYLE}"
        label += "<br/>" + _small("passes on only zeros", color="#616161")
    if node.problem:
        style = f"{style}, {_PROBLEM_STYLE}"
        label += "<br/>" + _small(node.problem, color="#c62828")
    return f"{quote_id(node.id)} [id={quote_id(node.id)}, {style}, label=<{label}>];"


def _edge_stmt(edge: GraphEdge) -> str:
    attrs = [_EDGE_STYLE[edge.kind]] if _EDGE_STYLE[edge.kind] else []
    if edge.kind == EdgeKind.DERIVATIVE:
        attrs.append("label=<d/d>")
    elif edge.label:
        attrs.append(f"label=<{html_escape(edge.label)}>")
    attr_text = f" [{', '.join(attrs)}]" if attrs else ""
    return f"{quote_id(edge.src)} -> {quote_id(edge.dst)}{attr_text};"


def _label(node: GraphNode) -> str:
    """Returns the HTML-like label body of one node: bold name, then one line per fact."""
    if node.kind == NodeKind.SAVED:
        what = node.saved_as or node.name
        lines = [html_escape(f"saved {what} {format_shape(node.shape)}".rstrip())]
        if node.freed:
            lines.append("<i>freed</i>")
        return "<br/>".join(lines)

    # Graphviz rejects an empty element such as <b></b>: a nameless node says so instead.
    lines = [f"<b>{html_escape(node.name)}</b>" if node.name else "<i>(no name)</i>"]
    if node.kind == NodeKind.OP:
        if node.op:
            lines.append(html_escape(node.op))
    else:
        shape = format_shape(node.shape)
        if node.dtype and node.dtype not in ("float32", "torch.float32"):
            shape = f"{shape} {node.dtype}".strip()
        if shape:
            lines.append(html_escape(shape))
    if node.kind in (NodeKind.OP, NodeKind.LEAF):
        lines.extend(_small(line) for line in _grad_lines(node))
    if node.source:
        lines.append(_small(node.source, color="#606060"))
    return "<br/>".join(lines)


def _grad_lines(node: GraphNode) -> list[str]:
    lines = []
    if len(node.grads) == 1:
        lines.append(f"grad ← {_short(node.grads[0])}")
    else:
        lines.extend(f"grad#{i} ← {_short(g)}" for i, g in enumerate(node.grads, start=1))
    if node.kind == NodeKind.LEAF and node.grad is not None:
        lines.append(f".grad = {node.grad.short()}")
    return lines


def _short(value: ValueSummary | None) -> str:
    return value.short() if value is not None else "none"


def _small(text: str, color: str | None = None) -> str:
    if not text:
        return ""
    colour = f' color="{color}"' if color else ""
    return f'<font point-size="{_SMALL}"{colour}>{html_escape(text)}</font>'


def _unused_id(base: str, taken: set[str]) -> str:
    candidate = f"gradlens_{base}"
    while candidate in taken:
        candidate += "_"
    return candidate
