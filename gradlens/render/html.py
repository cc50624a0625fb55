"""One self-contained, offline HTML page of a graph: pan, zoom, search, node details, and
expand/collapse of the modules a view collapsed or folded.

The page needs no network: its CSS and JavaScript (``page.css``, ``page.js`` next to this file)
and its data are inlined. The data is a JSON document: one SVG per precomputed *state* (the
start view, then views with modules opened: :mod:`gradlens.render.html_states`), the details
of every node (keyed by record id: the SVG node ids are the record ids), and for each node
what its Expand / Unfold / Collapse / Fold buttons lead to. A module the page could not
precompute says so, with the Python call that shows it.

Each state is drawn by Graphviz's ``dot`` (SVG): without it :func:`to_html` raises
:class:`GradlensError` saying how to install Graphviz. There is no fallback page: a layout
engine in the page would be a large dependency, and a list of nodes is what the terminal
tree already gives.
"""

from __future__ import annotations

import html
import json
import os
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any

from .._errors import GradlensError
from ..records import EdgeKind, Graph, GraphNode, NodeKind, ValueSummary, format_shape
from .files import write_atomic
from .graphviz import RenderResult, find_dot, to_svg
from .html_states import PAGE_STATES, Drawn, explore, module_path

__all__ = ["NO_DOT", "PAGE_STATES", "to_html", "write_html"]


def to_html(graph: Graph, *, title: str | None = None, max_states: int = PAGE_STATES) -> str:
    """Returns the interactive page of ``graph`` as one self-contained HTML document.

    Starts from ``view(graph, depth="auto", fold=True)`` (repeated blocks folded) and
    precomputes up to ``max_states`` views with modules opened; a graph that is already a view
    (``g.view(...)``) is drawn as it is. Raises :class:`GradlensError` when Graphviz's ``dot``
    is not installed.
    """
    if find_dot() is None:
        raise GradlensError(NO_DOT)
    explored = explore(graph, max_states)
    _draw_all(explored.drawn)
    details: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    states = []
    full = _Edges(graph)
    for d in explored.drawn:
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
                "actions": explored.actions(d),
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
def _draw_all(drawn: list[Drawn]) -> None:
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
        row("path", " … ".join(first_last) or module_path(node))
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
        "module": module_path(node) or node.module or "",  # where it sits (MODULE: itself)
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
