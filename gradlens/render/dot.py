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
- Nodes created inside an ``nn.Module`` sit in a box labelled with the module's path; boxes
  nest by path (``transformer`` > ``transformer.h`` > ``transformer.h.3``).
- **module** (``MODULE``, made by ``Graph.view``): a lilac box: class, path, shapes in and
  out, parameter count, how many nodes it hides and, after backward, the gradient norm reaching
  its output; a folded run shows ``×12`` and a small table of each instance's gradient norm.
- **stub** (``STUB``): a small grey dashed box, a neighbour outside the module in focus.
- **note** (yellow): what the view collapsed, folded or cut, and how to expand it.
- A graph bigger than a page (``PAGE_NODES``) is drawn as its auto view: never a silent cut.

The output is deterministic: nodes appear in ``graph.nodes`` order under the ids they were given,
so the text can be compared with a golden file.
"""

from __future__ import annotations

import re

from ..analysis.views import PAGE_NODES, is_view, view
from ..records import EdgeKind, Graph, GraphEdge, GraphNode, NodeKind, ValueSummary, format_shape

__all__ = ["PAGE_NODES", "format_shape", "html_escape", "quote_id", "short_source", "to_dot"]

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
    NodeKind.MODULE: 'shape=plain, color="#6a4c93"',  # the label is a table with its own fill
    NodeKind.STUB: (
        'shape=box, style="dashed,filled", fillcolor="#f4f4f4", color="#9a9a9a", '
        'fontcolor="#606060", fontsize=9, margin="0.05,0.02", height=0.2'
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


def to_dot(graph: Graph, *, title: str | None = None, max_nodes: int | None = None) -> str:
    """Returns the graph as DOT text (see the module docstring for the legend).

    A graph of at most ``PAGE_NODES`` nodes, or one made by ``Graph.view``, is drawn as it is,
    nodes in ``graph.nodes`` order under their ids. A bigger one is drawn as its auto view
    (``view(graph, depth="auto")``) and ``max_nodes`` asks for ``view(graph,
    max_nodes=max_nodes)``: both collapse at module boundaries and say so in a note. Needs no
    Graphviz install: :func:`gradlens.render.graphviz.render` draws it.
    """
    if max_nodes is not None and not is_view(graph):
        graph = view(graph, max_nodes=max_nodes)
    elif len(graph.nodes) > PAGE_NODES and not is_view(graph):
        graph = view(graph, depth="auto")
    classes = {info.path: info.cls for info in graph.modules}
    lines = [
        "digraph gradlens {",
        "  rankdir=TB;",
        f'  graph [fontname="{_FONT}", fontsize=11, nodesep=0.3, ranksep=0.35];',
        f'  node [fontname="{_FONT}", fontsize=10, margin="0.1,0.05", height=0.3];',
        f'  edge [fontname="{_FONT}", fontsize=9, color="#505050", arrowsize=0.7];',
    ]
    if title:
        lines.append(f"  labelloc=t; label=<<b>{html_escape(title)}</b>>;")

    tree = _ClusterTree()
    for node in graph.nodes:
        if node.module:
            tree.add(node.module, node)
        else:
            lines.append("  " + _node_stmt(node))
    lines.extend(tree.lines(classes))

    lines.extend("  " + _edge_stmt(e) for e in graph.edges)
    if graph.notes:
        taken = {n.id for n in graph.nodes}
        note_id = _unused_id("notes", taken)
        body = "".join(
            html_escape(_wrap(n)).replace("<br/>", '<br align="left"/>') + '<br align="left"/>'
            for n in graph.notes
        )
        lines.append(
            f"  {quote_id(note_id)} [id={quote_id(note_id)}, shape=note, style=filled, "
            f'fillcolor="#fff5c0", fontsize=9, label=<{body}>];'
        )
    lines.append("}")
    return "\n".join(lines) + "\n"


class _ClusterTree:
    """Nodes by module path, drawn as clusters nested by path ("a" holds "a.b")."""

    def __init__(self) -> None:
        self.members: dict[str, list[GraphNode]] = {}

    def add(self, module: str, node: GraphNode) -> None:
        self.members.setdefault(module, []).append(node)

    def lines(self, classes: dict[str, str]) -> list[str]:
        # Every cluster's ancestors that are clusters too, in first-seen order.
        paths: list[str] = []
        known: set[str] = set()
        for module in self.members:
            chain = []
            p = module
            while p and p not in known:
                chain.append(p)
                known.add(p)
                p = p.rpartition(".")[0]
            paths.extend(reversed(chain))
        kids: dict[str, list[str]] = {}
        tops: list[str] = []
        for p in paths:
            parent = _parent_in(p, known)
            (kids.setdefault(parent, []) if parent else tops).append(p)
        out: list[str] = []
        index = 0
        stack: list[tuple[str, int, bool]] = [(p, 1, False) for p in reversed(tops)]
        while stack:
            path, level, closing = stack.pop()
            pad = "  " * level
            if closing:
                out.append(pad + "}")
                continue
            cluster_id = f"cluster_{index}_{_NOT_ID.sub('_', path).strip('_')}".rstrip("_")
            index += 1
            label = html_escape(path)
            if classes.get(path):
                label += f' <font point-size="{_SMALL}">{html_escape(classes[path])}</font>'
            out.append(f"{pad}subgraph {cluster_id} {{")
            out.append(f"{pad}  label=<{label}>; labeljust=l;")
            out.append(f'{pad}  style="rounded,dashed"; color="#9a9a9a"; fontsize=10;')
            out.extend(f"{pad}  " + _node_stmt(n) for n in self.members.get(path, []))
            stack.append((path, level, True))
            stack.extend((k, level + 1, False) for k in reversed(kids.get(path, [])))
        return out


def _parent_in(path: str, known: set[str]) -> str | None:
    p = path.rpartition(".")[0]
    while p:
        if p in known:
            return p
        p = p.rpartition(".")[0]
    return None


def _wrap(text: str, width: int = 90) -> str:
    """Returns ``text`` with newlines at spaces so no line is much wider than ``width``."""
    out, line = [], ""
    for word in text.split(" "):
        if line and len(line) + 1 + len(word) > width:
            out.append(line)
            line = "    " + word
        else:
            line = f"{line} {word}" if line else word
    out.append(line)
    return "\n".join(out)


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
    if node.kind == NodeKind.MODULE:
        return _module_label(node)
    if node.kind == NodeKind.STUB:
        lines = [html_escape(node.name) if node.name else "<i>(no name)</i>"]
        if node.source:  # a stub's source is the module its node lives in
            lines.append(_small(node.source))
        return "<br/>".join(lines)
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
    if node.aliases:
        lines.append(_small("= " + ", ".join(node.aliases)))
    if node.kind in (NodeKind.OP, NodeKind.LEAF):
        lines.extend(_small(line) for line in _grad_lines(node))
    if node.source:
        lines.append(_small(short_source(node.source), color="#606060"))
    return "<br/>".join(lines)


def _module_label(node: GraphNode) -> str:
    """Returns a MODULE node's label: an HTML table (class ×N, path, shapes, sizes, grads)."""
    rows = []
    title = html_escape(node.module_class or node.name)
    if node.count > 1:
        title += f" ×{node.count}"
    rows.append(f"<b>{title}</b>")
    if node.module_class and node.name:
        rows.append(html_escape(_short_path(node.name)))
    shapes = _shapes_text(node.in_shapes, node.out_shapes)
    if shapes:
        rows.append(_small(shapes))
    facts = []
    if node.params:
        facts.append(f"{_count(node.params)} params")
    if node.inner:
        facts.append(f"{node.inner} nodes inside")
    if facts:
        rows.append(_small(" · ".join(facts)))
    if node.grad_norm is not None:
        rows.append(_small(f"grad norm ← {_num(node.grad_norm)}"))
    cells = "".join(f"<tr><td>{row}</td></tr>" for row in rows)
    norms = [
        (p, g)
        for p, g in zip(node.instances, node.instance_grad_norms, strict=False)
        if g is not None
    ]
    if norms:
        cells += f"<tr><td>{_norm_table(norms)}</td></tr>"
    return (
        '<table border="1" cellborder="0" cellspacing="0" cellpadding="2" style="rounded" '
        f'bgcolor="#e8dcf5" color="#6a4c93">{cells}</table>'
    )


def _norm_table(norms: list[tuple[str, float]]) -> str:
    """Returns a small table of per-instance gradient norms, three to a row."""
    cells = [
        f'<td align="right"><font point-size="{_SMALL - 1}">'
        f"{html_escape(p.rpartition('.')[2])}: {_num(g)}</font></td>"
        for p, g in norms
    ]
    rows = ["".join(cells[i : i + 3]) for i in range(0, len(cells), 3)]
    body = "".join(f"<tr>{r}</tr>" for r in rows)
    font = f'<font point-size="{_SMALL - 1}">'
    head = f'<tr><td colspan="3">{font}grad norm per instance</font></td></tr>'
    return f'<table border="0" cellborder="0" cellspacing="0" cellpadding="1">{head}{body}</table>'


def _shapes_text(ins: tuple[tuple[int, ...], ...], outs: tuple[tuple[int, ...], ...]) -> str:
    def text(shapes: tuple[tuple[int, ...], ...]) -> str:
        return " ".join(format_shape(s) for s in shapes[:2]) + (" …" if len(shapes) > 2 else "")

    if not ins and not outs:
        return ""
    return f"{text(ins) or '?'} → {text(outs) or '?'}"


def _count(n: int) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return str(n)


def _num(x: float) -> str:
    return f"{x:.3g}"


def _short_path(path: str, width: int = 40) -> str:
    """Returns a long module path with its middle left out (``transformer…h.3.attn``)."""
    if len(path) <= width:
        return path
    parts = path.split(".")
    head, tail = parts[0], parts[1:]
    while tail and len(head) + 2 + len(".".join(tail)) > width:
        tail = tail[1:]
    return f"{head}…{'.'.join(tail)}" if tail else path[: width - 1] + "…"


_SITE = re.compile(r"^.*[/\\](?:site|dist)-packages[/\\]")


def short_source(source: str) -> str:
    """Returns a ``file.py:line`` short enough to draw: inside site-packages the package and
    the file (``transformers/.../modeling_gpt2.py:569``), else long paths shortened likewise."""
    text = _SITE.sub("", source)
    if len(text) <= 40:
        return text
    parts = re.split(r"[/\\]", text)
    if len(parts) > 2:
        return f"{parts[0]}/.../{parts[-1]}"
    return text


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
