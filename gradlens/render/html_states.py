"""The states of the interactive HTML page: which views of a graph it precomputes, and where
each node's Expand / Unfold / Collapse / Fold button leads. Pure functions of records (the
``dot`` runs are :mod:`gradlens.render.html`'s).

A *state* is ``view(graph, depth, fold=True, saved=saved, expand=E)`` at the depth and
saved-box choice of the graph's auto view; states differ only in ``E``, the modules opened.
They are explored breadth-first from the start view, up to a budget.
"""

from __future__ import annotations

import heapq
import json
from dataclasses import dataclass, field
from typing import Any

from ..analysis.views import is_view, view
from ..records import Graph, GraphNode, NodeKind
from ..records.modules import module_depth, within
from .dot import to_dot

__all__ = ["PAGE_STATES", "Drawn", "Explored", "State", "explore", "module_path"]

#: How many views a page precomputes at most (each is drawn by ``dot`` once).
PAGE_STATES = 32
#: Stop precomputing once the states' DOT text adds up to this many characters (the SVG is
#: about twice as long).
_PAGE_DOT_CHARS = 8_000_000
_CALL = "g"  # the name the page uses for the user's graph or trace in Python calls


@dataclass(frozen=True, order=True)
class State:
    """A view of the graph: the modules opened, as ``view(..., expand=...)`` takes them.

    A path may appear twice: opening a folded run (``transformer.h.0``: blocks 0-11) unfolds
    it into one node per block, and opening ``transformer.h.0`` again opens block 0 itself.
    """

    expand: tuple[str, ...] = ()  # sorted

    def open(self, path: str) -> State:
        """Returns this state with ``path`` opened too (a second time: see above)."""
        return State(tuple(sorted((*self.expand, path))))

    def close(self, path: str) -> State:
        """Returns this state with ``path`` closed again (the block, when it was opened after
        its run was unfolded) and everything opened inside it."""
        keep = [p for p in self.expand if not within(p, path) or p == path]
        keep.remove(path)
        return State(tuple(keep))

    def refold(self, instances: tuple[str, ...]) -> State:
        """Returns this state with a run folded again (its blocks and all inside them closed)."""
        return State(tuple(p for p in self.expand if not any(within(p, i) for i in instances)))


@dataclass
class Drawn:
    """One distinct view the page holds: its state, the view record, its DOT text and SVG."""

    state: State
    label: str  # how the page got here: "start view › unfolded transformer.h.0 ×12 › ..."
    graph: Graph
    dot: str
    svg: str = ""
    modules: dict[str, str] = field(default_factory=dict)  # MODULE node id -> module path


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

    def draw(self, state: State) -> Graph:
        if not self.can_open or state == State():
            return self.start
        return view(self.graph, self.depth, fold=True, saved=self.saved, expand=state.expand)


def _signature(graph: Graph) -> tuple[tuple[str, int], ...]:
    """Returns what makes two views the same drawing: their nodes and what each stands for."""
    return tuple((n.id, n.count) for n in graph.nodes)


@dataclass
class Explored:
    """The states a page holds, and how to get from one to another."""

    drawn: list[Drawn]  # each distinct view, the start view first
    index: dict[State, int]  # every state reached -> its view (same nodes, same view)
    cut: bool  # the budget left states out
    runs: dict[str, tuple[str, ...]]  # folded runs, by the path that opens them -> instances

    def actions(self, d: Drawn) -> dict[str, dict[str, Any]]:
        """Returns, per node id of one state, where its buttons lead (state indices) and, for
        a module that cannot be opened here, why and the Python call that shows it."""
        return _actions(d, self.index, self.cut, self.runs)


def explore(graph: Graph, max_states: int = PAGE_STATES) -> Explored:
    """Returns the states of ``graph``'s page, breadth-first from the start view: all ways to
    open one module (and modules inside it) before two side by side, bigger modules first,
    up to ``max_states`` views (and :data:`_PAGE_DOT_CHARS` of DOT text)."""
    views = _Views(graph)
    drawn: list[Drawn] = []
    index: dict[State, int] = {}
    by_nodes: dict[tuple[Any, ...], int] = {}
    queue: list[tuple[int, int, int, int, State]] = [(0, 0, 0, 0, State())]
    queued = {State()}
    labels = {State(): "start view"}
    order = 0
    chars = 0
    while queue and len(drawn) < max(max_states, 1) and chars < _PAGE_DOT_CHARS:
        *_, state = heapq.heappop(queue)
        shown = views.draw(state)
        signature = _signature(shown)
        if signature in by_nodes:  # opening it changed nothing
            index[state] = by_nodes[signature]
            continue
        dot = to_dot(shown)  # a view: drawn as it is
        chars += len(dot)
        d = Drawn(state, labels[state], shown, dot)
        for node in shown.nodes:
            path = module_path(node)
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
            count = node.count
            step = f"unfolded {path} ×{count}" if count > 1 else f"opened {path}"
            labels[child] = f"{d.label} › {step}"
            order += 1
            hidden = -node.inner  # the bigger module first
            heapq.heappush(queue, (_chains(child), len(child.expand), hidden, order, child))
    runs = {
        path: n.instances
        for d in drawn
        for n in d.graph.nodes
        if n.count > 1 and (path := module_path(n)) is not None
    }
    return Explored(drawn, index, bool(queue), runs)


def _actions(
    d: Drawn, index: dict[State, int], cut: bool, runs: dict[str, tuple[str, ...]]
) -> dict[str, dict[str, Any]]:
    """Returns, per node id of one state, where its buttons lead (state indices) and, for a
    module that cannot be opened here, why and the Python call that shows it."""
    me = index[d.state]
    out: dict[str, dict[str, Any]] = {}
    for node_id, path in d.modules.items():
        node = d.graph.node(node_id)
        opens = list(node.instances) or [path]  # what to centre on after
        action: dict[str, Any] = {"path": path, "count": node.count, "opens": opens}
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
        for text, state in _closings(d.state, module_path(node) or node.module or "", runs):
            target = index.get(state)
            if target is not None and target != me:
                closers.append([text, target])
        if closers:
            out.setdefault(node.id, {})["collapse"] = closers
    return out


def _closings(
    state: State, inside: str, runs: dict[str, tuple[str, ...]]
) -> list[tuple[str, State]]:
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


def _chains(state: State) -> int:
    """Returns how many opened modules have no opened module inside them: the page first opens
    one module deeper and deeper (one chain), then two side by side."""
    opened = set(state.expand)
    return sum(not any(q != p and within(q, p) for q in opened) for p in opened)


def module_path(node: GraphNode) -> str | None:
    """Returns the module path a MODULE node stands for (folded: its first instance)."""
    if node.kind != NodeKind.MODULE:
        return None
    if node.instances:
        return node.instances[0]
    # "m:" + path; other ids ("r:n4000", a run of one op drawn as one node) are no module
    return node.id[2:] if node.id.startswith("m:") else None
