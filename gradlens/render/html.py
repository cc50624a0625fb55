"""One self-contained, offline HTML page of a graph: pan, zoom, search, node details, and
expand/collapse of the modules a view collapsed or folded.

The page needs no network: its CSS and JavaScript (``page.css``, ``page.js`` next to this file)
and its data are inlined. The data is a JSON document: one SVG per precomputed *state* (the
starting view, then views with modules opened one at a time, breadth-first, up to
``max_states``), the details of every node (keyed by record id: the SVG node ids are the record
ids), and for each node what its Expand / Unfold / Collapse / Fold buttons lead to. A module
the page could not precompute says so, with the Python call that shows it.

Each state is drawn by Graphviz's ``dot`` (SVG): without it :func:`to_html` raises
:class:`GradlensError` saying how to install Graphviz. There is no fallback page: a layout
engine in the page would be a large dependency, and a list of nodes is what the terminal
tree already gives.
"""

from __future__ import annotations

import heapq
import html
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from .._errors import GradlensError
from ..analysis.views import is_view, view
from ..records import EdgeKind, Graph, GraphNode, NodeKind, ValueSummary, format_shape
from ..records.modules import module_depth, within
from .dot import to_dot
from .files import write_atomic
from .graphviz import RenderResult, find_dot, to_svg

__all__ = ["NO_DOT", "PAGE_STATES", "to_html", "write_html"]

#: How many views a page precomputes at most (each is drawn by ``dot`` once).
PAGE_STATES = 32
#: Stop precomputing once the states' DOT text adds up to this many characters (the SVG is
#: about twice as long).
_PAGE_DOT_CHARS = 8_000_000
_CALL = "g"  # the name the page uses for the user's graph or trace in Python calls


@dataclass(frozen=True, order=True)
class _State:
    """A view of the graph: the modules opened, as ``view(..., expand=...)`` takes them.

    A path may appear twice: opening a folded run (``transformer.h.0``: blocks 0-11) unfolds
    it into one node per block, and opening ``transformer.h.0`` again opens block 0 itself.
    """

    expand: tuple[str, ...] = ()  # sorted

    def open(self, path: str) -> _State:
        return _State(tuple(sorted((*self.expand, path))))

    def close(self, path: str) -> _State:
        """Returns this state with ``path`` closed again (the block, when it was opened after
        its run was unfolded) and everything opened inside it."""
        keep = [p for p in self.expand if not within(p, path) or p == path]
        keep.remove(path)
        return _State(tuple(keep))

    def refold(self, instances: tuple[str, ...]) -> _State:
        """Returns this state with a run folded again (its blocks and all inside them closed)."""
        return _State(tuple(p for p in self.expand if not any(within(p, i) for i in instances)))


@dataclass
class _Drawn:
    state: _State
    label: str  # how the page got here: "start view › unfolded transformer.h.0 ×12 › ..."
    graph: Graph
    dot: str
    svg: str = ""
    modules: dict[str, str] = field(default_factory=dict)  # MODULE node id -> module path


def to_html(graph: Graph, *, title: str | None = None, max_states: int = PAGE_STATES) -> str:
    """Returns the interactive page of ``graph`` as one self-contained HTML document.

    Starts from ``view(graph, depth="auto", fold=True)`` (repeated blocks folded) and
    precomputes up to ``max_states`` views with modules opened; a graph that is already a view
    (``g.view(...)``) is drawn as it is. Raises :class:`GradlensError` when Graphviz's ``dot``
    is not installed.
    """
    if find_dot() is None:
        raise GradlensError(NO_DOT)
    drawn, index, cut = _explore(graph, max(max_states, 1))
    _draw_all(drawn)
    details: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    states = []
    full = _Edges(graph)
    runs = {  # folded runs, by the path the view opens them with: their instances
        path: n.instances
        for d in drawn
        for n in d.graph.nodes
        if _count(n) > 1 and (path := _module_path(n)) is not None
    }
    for d in drawn:
        ids: dict[str, int] = {}
        shown = _Edges(d.graph)
        for node in d.graph.nodes:
            entry = _details(node, shown, full)
            key = json.dumps(entry, sort_keys=True)
            if key not in seen:
                seen[key] = len(details)
                details.append(entry)
            ids[node.id] = seen[key]
        states.append(
            {
                "label": d.label,
                "svg": d.svg,
                "count": len(d.graph.nodes),
                "nodes": ids,
                "notes": list(d.graph.notes),
                "actions": _actions(d, index, cut, runs),
            }
        )
    data = {"details": details, "states": states}
    return _page(title or "gradlens graph", data)


def write_html(
    graph: Graph, path: str | Path, *, title: str | None = None, max_states: int = PAGE_STATES
) -> RenderResult:
    """Writes :func:`to_html` of ``graph`` to ``path`` (atomically); returns what was written."""
    path = Path(path)
    write_atomic(path, to_html(graph, title=title, max_states=max_states))
    return RenderResult(path=path, format="html")


# ---------------------------------------------------------------------------- the states
class _Views:
    """Draws a state: ``view(graph, depth, fold=True, saved=..., expand=...)`` at the depth and
    saved-box choice of the graph's auto view, so that states differ only in what they open
    (``depth="auto"`` itself would pick a shallower depth once a module is opened)."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.start = graph
        self.can_open = False
        self.depth: int | None = None
        self.saved = True
        if is_view(graph):  # the user's own view is drawn as given (its record holds no more)
            return
        self.start = view(graph, depth="auto", fold=True)
        target = _signature(self.start)
        deepest = max((module_depth(n.module) for n in graph.nodes if n.module), default=0)
        for depth in (None, *range(deepest, 0, -1)):
            for saved in (True, False):
                if _signature(view(graph, depth, fold=True, saved=saved)) == target:
                    self.can_open, self.depth, self.saved = True, depth, saved
                    return
        # The auto view folded runs of ops or cut the graph: only that view can be shown.

    def draw(self, state: _State) -> Graph:
        if not self.can_open or state == _State():
            return self.start
        return view(self.graph, self.depth, fold=True, saved=self.saved, expand=state.expand)


def _signature(graph: Graph) -> tuple[tuple[str, int], ...]:
    """Returns what makes two views the same drawing: their nodes and what each stands for."""
    return tuple((n.id, _count(n)) for n in graph.nodes)


def _explore(graph: Graph, max_states: int) -> tuple[list[_Drawn], dict[_State, int], bool]:
    """Draws states breadth-first from the start view (all ways to open one module, and
    modules inside it, before two side by side; bigger modules first). Returns them, the index
    of each state reached (states whose view is the same as an earlier one share its index),
    and whether the budget left states out."""
    views = _Views(graph)
    drawn: list[_Drawn] = []
    index: dict[_State, int] = {}
    by_nodes: dict[tuple[Any, ...], int] = {}
    queue: list[tuple[int, int, int, int, _State]] = [(0, 0, 0, 0, _State())]
    queued = {_State()}
    labels = {_State(): "start view"}
    order = 0
    chars = 0
    while queue and len(drawn) < max_states and chars < _PAGE_DOT_CHARS:
        *_, state = heapq.heappop(queue)
        shown = views.draw(state)
        signature = _signature(shown)
        if signature in by_nodes:  # opening it changed nothing
            index[state] = by_nodes[signature]
            continue
        dot = to_dot(shown)  # a view: drawn as it is
        chars += len(dot)
        d = _Drawn(state, labels[state], shown, dot)
        for node in shown.nodes:
            path = _module_path(node)
            if path is None:
                continue
            d.modules[node.id] = path
        index[state] = by_nodes[signature] = len(drawn)
        drawn.append(d)
        if not views.can_open:  # this view cannot be redrawn with modules opened
            continue
        for node_id, path in d.modules.items():
            child = state.open(path)
            if child in queued:
                continue
            queued.add(child)
            node = shown.node(node_id)
            count = _count(node)
            step = f"unfolded {path} ×{count}" if count > 1 else f"opened {path}"
            labels[child] = f"{d.label} › {step}"
            order += 1
            hidden = -node.inner  # the bigger module first
            heapq.heappush(queue, (_chains(child), len(child.expand), hidden, order, child))
    return drawn, index, bool(queue)


def _actions(
    d: _Drawn, index: dict[_State, int], cut: bool, runs: dict[str, tuple[str, ...]]
) -> dict[str, dict[str, Any]]:
    """Returns, per node id of one state, where its buttons lead (state indices) and, for a
    module that cannot be opened here, why and the Python call that shows it."""
    me = index[d.state]
    out: dict[str, dict[str, Any]] = {}
    for node_id, path in d.modules.items():
        node = d.graph.node(node_id)
        opens = list(node.instances) or [path]  # what to centre on after
        action: dict[str, Any] = {"path": path, "count": _count(node), "opens": opens}
        target = index.get(d.state.open(path))
        if target is not None and target != me:
            action["expand"] = target
        elif target == me:
            action["why"] = (
                f"Nothing more inside {path} in this record (a view's record keeps only what "
                f"it drew). In Python, view it from the full graph: {_CALL}.view(module="
                f"{json.dumps(path)})"
            )
        elif cut:
            action["why"] = (
                f"Not precomputed on this page (it holds {len(set(index.values()))} views; "
                f"gradlens.render.html.write_html({_CALL}, path, max_states=100) holds more). "
                f"In Python: {_CALL}.view(module={json.dumps(path)})"
            )
        else:
            action["why"] = (
                f"This page cannot open {path}: it shows the graph's auto view only. "
                f"In Python: {_CALL}.view(module={json.dumps(path)})"
            )
        out[node_id] = action
    for node in d.graph.nodes:  # Collapse / Fold: the opened modules this node sits in
        closers = []
        for text, state in _closings(d.state, _module_path(node) or node.module or "", runs):
            target = index.get(state)
            if target is not None and target != me:
                closers.append([text, target])
        if closers:
            out.setdefault(node.id, {})["collapse"] = closers
    return out


def _closings(
    state: _State, inside: str, runs: dict[str, tuple[str, ...]]
) -> list[tuple[str, _State]]:
    """Returns the buttons that close what ``inside`` (a module path) sits in: each opened
    module around it ("Collapse transformer.h.3"), and an unfolded run it belongs to
    ("Fold transformer.h.0–11"), innermost first."""
    found = []
    for path in sorted(set(state.expand), key=len, reverse=True):
        instances = runs.get(path)
        unfolded_only = instances is not None and state.expand.count(path) == 1
        if within(inside, path) and not unfolded_only:
            found.append((f"Collapse {path}", state.close(path)))
        if instances is not None and any(within(inside, i) for i in instances):
            found.append((f"Fold {path} ×{len(instances)}", state.refold(instances)))
    return found


def _chains(state: _State) -> int:
    """Returns how many opened modules have no opened module inside them: the page first opens
    one module deeper and deeper (one chain), then two side by side."""
    opened = set(state.expand)
    return sum(not any(q != p and within(q, p) for q in opened) for p in opened)


def _draw_all(drawn: list[_Drawn]) -> None:
    """Runs ``dot -Tsvg`` on every state, a few at a time (each is its own process)."""
    workers = max(1, min(4, os.cpu_count() or 1, len(drawn)))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for d, svg in zip(drawn, pool.map(_svg, (d.dot for d in drawn)), strict=True):
            d.svg = svg


def _svg(dot: str) -> str:
    """Returns the SVG element ``dot`` draws (no XML prolog)."""
    text = to_svg(dot)
    if text is None:  # dot went away since to_html looked
        raise GradlensError(NO_DOT)
    return text[text.index("<svg") :]


def _module_path(node: GraphNode) -> str | None:
    """Returns the module path a MODULE node stands for (folded: its first instance)."""
    if node.kind != NodeKind.MODULE:
        return None
    if node.instances:
        return node.instances[0]
    # "m:" + path; other ids ("r:n4000", a run of one op drawn as one node) are no module
    return node.id[2:] if node.id.startswith("m:") else None


def _count(node: GraphNode) -> int:
    return node.count


# ---------------------------------------------------------------------------- node details
class _Edges:
    """A graph's edges by node: data edges in and out, and the SAVED nodes of each op."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.into: dict[str, list[tuple[str, str | None]]] = {}
        self.out_of: dict[str, list[tuple[str, str | None]]] = {}
        self.saved: dict[str, list[GraphNode]] = {}
        known = {n.id for n in graph.nodes}
        for e in graph.edges:
            if e.src not in known or e.dst not in known:
                continue
            if e.kind == EdgeKind.DATA:
                self.into.setdefault(e.dst, []).append((e.src, e.label))
                self.out_of.setdefault(e.src, []).append((e.dst, e.label))
            elif e.kind == EdgeKind.SAVED:
                self.saved.setdefault(e.dst, []).append(graph.node(e.src))

    def names(self, ends: list[tuple[str, str | None]]) -> str:
        text = [f"{self.graph.node(i).name} {label or ''}".strip() for i, label in ends[:8]]
        if len(ends) > 8:
            text.append(f"… {len(ends) - 8} more")
        return ", ".join(text)


def _details(node: GraphNode, shown: _Edges, full: _Edges) -> dict[str, Any]:
    """Returns what the details panel shows for one node: title, kind, rows of facts, the
    tensors it saved for backward (from the full graph: a view may hide them), folded
    instances, and the text search looks in."""
    rows: list[list[str]] = []

    def row(key: str, value: Any) -> None:
        if value not in (None, "", (), []):
            rows.append([key, str(value)])

    row("module class", node.module_class)
    row("op", node.op)
    if node.kind == NodeKind.MODULE:
        first_last = (node.instances[0], node.instances[-1]) if node.instances else ()
        row("path", " … ".join(first_last) or _module_path(node))
        row("inside", node.module)
    else:
        row("module", node.module)
    row("source", node.source)
    if node.kind != NodeKind.OP:
        row("shape", format_shape(node.shape))
    row("dtype", node.dtype)
    if node.count > 1:
        row("repeats", f"×{node.count}")
    row("parameters", f"{node.params:,}" if node.params is not None else None)
    row("inputs", _shapes(node.in_shapes))
    row("outputs", _shapes(node.out_shapes))
    if node.grad_norm is not None:
        row("grad norm", _num(node.grad_norm))
    row("nodes inside", node.inner or None)
    row("also named", ", ".join(node.aliases))
    row("saved as", node.saved_as)
    if node.freed:
        row("freed", "yes: a backward without retain_graph released it")
    row("from", shown.names(shown.into.get(node.id, [])))
    row("to", shown.names(shown.out_of.get(node.id, [])))
    for i, grad in enumerate(node.grads, start=1):
        key = "grad in" if len(node.grads) == 1 else f"grad in #{i}"
        row(key, _stats(grad) if grad is not None else "none")
    if node.grad is not None:
        row(".grad", _stats(node.grad))
    row("problem", node.problem)
    if node.dead:
        row("dead", "received a gradient and passed on only zeros")
    row("id", node.id)

    saved = [
        [s.saved_as or s.name, format_shape(s.shape) + (" freed" if s.freed else "")]
        for s in full.saved.get(node.id, [])
    ]
    norms = [*node.instance_grad_norms, *[None] * len(node.instances)]
    instances = [
        [path, "–" if norm is None else _num(norm)]
        for path, norm in zip(node.instances, norms, strict=False)
    ]
    words = [node.name, node.op, node.module, node.module_class, node.id, node.source]
    words += [*node.instances, *node.aliases]
    return {
        "title": node.name or "(no name)",
        "kind": node.kind.value,
        "module": _module_path(node) or node.module or "",  # where it sits (MODULE: itself)
        "rows": rows,
        "saved": saved,
        "instances": instances,
        "search": " ".join(w for w in words if w).lower(),
    }


def _shapes(shapes: Any) -> str:
    return ", ".join(format_shape(s) for s in shapes)


def _stats(value: ValueSummary) -> str:
    parts = [f"{format_shape(value.shape)} {value.dtype}"]
    if value.values is not None:
        parts.append(value.short())
    if value.norm is not None:
        parts.append(f"norm {_num(value.norm)}")
    if value.min is not None and value.max is not None:
        parts.append(f"min {_num(value.min)} max {_num(value.max)}")
    nans, infs = value.nonfinite
    if nans or infs:
        parts.append(f"nan {nans} inf {infs}")
    return ", ".join(parts)


def _num(x: float) -> str:
    return f"{x:.4g}"


# ---------------------------------------------------------------------------- the page
def _page(title: str, data: dict[str, Any]) -> str:
    css = _asset("page.css")
    js = _asset("page.js")
    return _TEMPLATE.format(
        title=html.escape(title),
        css=css,
        js=js,
        data=_script_json(data),
    )


def _asset(name: str) -> str:
    text = resources.files("gradlens.render").joinpath(name).read_text(encoding="utf-8")
    if "</" + ("script" if name.endswith(".js") else "style") in text.lower():
        raise GradlensError(f"gradlens's own {name} would end its own <script>/<style> early")
    return text


def _script_json(data: Any) -> str:
    """Returns ``data`` as JSON safe inside ``<script>``: no ``<``, ``>`` or ``&`` appear
    literally (so no ``</script>`` or ``<!--``), nor the line separators JavaScript rejects."""
    text = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    for char, escape in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(char, escape)
    return text


_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; \
style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:">
<title>{title}</title>
<style>
{css}</style>
</head>
<body>
<header>
<h1 title="{title}">{title}</h1>
<input id="search" type="search" placeholder="search names, ops, modules  (/)" \
aria-label="search nodes">
<span id="hits"></span>
<button id="fit" title="fit the whole graph (f)">Fit</button>
<button id="back" title="previous view (Backspace)" disabled>Back</button>
<span id="count"></span>
<span id="state"></span>
</header>
<div id="notes" hidden></div>
<main id="view"></main>
<aside id="details"></aside>
<script type="application/json" id="gradlens-data">{data}</script>
<script>
{js}</script>
</body>
</html>
"""

#: What to do when the page cannot be drawn: Graphviz's ``dot`` is missing.
NO_DOT = (
    "the HTML page draws its graph with Graphviz's 'dot' program, which was not found.\n"
    "Install Graphviz:\n"
    "  Debian/Ubuntu: sudo apt-get install graphviz\n"
    "  macOS:         brew install graphviz\n"
    "  conda:         conda install graphviz\n"
    "or write the diagram as DOT text instead (render('graph.dot')), which needs nothing."
)
