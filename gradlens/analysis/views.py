"""Module views of a graph: pure functions of a :class:`Graph` record.

``view(graph, depth=2)`` draws every module two levels below the root as one MODULE node;
``module="transformer.h.3"`` keeps one module's nodes, with its neighbours as STUB nodes;
``fold=True`` draws a chain of alike sibling modules (12 ``GPT2Block``\\ s) as one node ×12;
``saved=False`` hides saved-tensor boxes; ``depth="auto"`` (and ``max_nodes``) pick the deepest
view that fits a page, and the result's ``notes`` say what was collapsed and how to expand it.
A graph without modules that is still too big has its runs of the same op drawn as one node
(``MulBackward0 ×10000``), and only then, as a last resort, is cut, with a STUB node and a note
saying how many nodes are not shown.

Works on records only, so a graph loaded from JSON views exactly as a live one.
"""

from __future__ import annotations

import difflib
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from .._errors import GradlensError
from .._gc import gc_paused
from ..records import EdgeKind, Graph, GraphEdge, GraphNode, NodeKind, ValueSummary
from ..records.modules import module_depth, module_parent, within

__all__ = ["PAGE_NODES", "Depth", "is_view", "view"]

#: The most nodes a view drawn with no options (``depth="auto"``) has: about one page.
PAGE_NODES = 60

Depth = int | Literal["auto"] | None

_SELF = "\x00self"  # a node's place in a view when it stays itself (never a module path)
_SHAPE = re.compile(r"^\[([0-9, ]*)\]$")
_FLOW = (EdgeKind.DATA, EdgeKind.CUT)
# Enum members as module constants: ``NodeKind.OP`` is an attribute lookup on the class each
# time, and the loops below run once per node of graphs of thousands.
_OP, _SAVED, _LEAF, _INPUT = NodeKind.OP, NodeKind.SAVED, NodeKind.LEAF, NodeKind.INPUT
_DATA, _CUT, _SAVED_EDGE = EdgeKind.DATA, EdgeKind.CUT, EdgeKind.SAVED
_IS_SAVED, _IS_LEAF, _IS_OTHER = 0, 1, 2  # what _Index.rest says of a node


def is_view(graph: Graph) -> bool:
    """Returns True when ``graph`` was made by :func:`view` (drawn as it is, never re-viewed)."""
    return bool(getattr(graph, "_view", False))


def view(
    graph: Graph,
    depth: Depth = None,
    *,
    module: str | None = None,
    fold: bool = False,
    saved: bool = True,
    max_nodes: int | None = None,
    expand: Sequence[str] = (),
) -> Graph:
    """Returns a smaller Graph drawing the same computation at module level.

    ``depth=k`` collapses every module ``k`` levels below the root (or below ``module``) into
    one MODULE node; ``None`` collapses nothing; ``"auto"`` picks the deepest depth whose view
    has at most :data:`PAGE_NODES` nodes (hiding saved tensors if that is what it takes).
    ``module`` focuses on one module (neighbours become STUB nodes); ``fold`` draws chains of
    alike sibling modules as one node ``×N``; ``saved=False`` hides saved tensors;
    ``max_nodes`` collapses more (at module boundaries) until the view fits; ``expand`` opens
    the named collapsed modules (or folded runs) one level deeper. ``notes`` says what was done.
    """
    with gc_paused():  # an index and candidate views of thousands of nodes (gradlens/_gc.py)
        return _view(graph, depth, module, fold, saved, max_nodes, expand)


def _view(
    graph: Graph,
    depth: Depth,
    module: str | None,
    fold: bool,
    saved: bool,
    max_nodes: int | None,
    expand: Sequence[str],
) -> Graph:
    if depth is not None and depth != "auto" and (not isinstance(depth, int) or depth < 0):
        raise GradlensError(f'depth must be an integer >= 0, "auto" or None, not {depth!r}')
    if max_nodes is not None and (not isinstance(max_nodes, int) or max_nodes < 3):
        raise GradlensError(f"max_nodes must be an integer of at least 3, not {max_nodes!r}")
    ix = _Index(graph)
    focus = ix.resolve(module) if module is not None else None
    base = module_depth(focus) if focus else 0
    opened = tuple(ix.resolve(p) for p in expand)
    if depth == "auto" or max_nodes is not None:
        limit = max_nodes if max_nodes is not None else PAGE_NODES
        start = None if depth == "auto" or depth is None else base + depth
        out = _fit(ix, limit, start, focus, fold, saved, opened, auto=depth == "auto")
    else:
        level = None if depth is None else base + depth
        out = _build(ix, _choose_units(ix, level, focus, fold, opened), saved, focus)
    return _finish(out)


# ---- the index: everything a view needs to know about the graph, computed once -------------


class _Index:
    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.nodes = graph.nodes
        self.outs: dict[str, list[str]] = {}
        self.ins: dict[str, list[str]] = {}
        self.saved_of: dict[str, str] = {}
        # The label of each data edge, parsed into a shape only when a view asks (label_shape).
        self._labels: dict[tuple[str, str], str] = {}
        outs, ins, labels, saved_of = self.outs, self.ins, self._labels, self.saved_of
        for e in graph.edges:
            ekind = e.kind
            if ekind in (_DATA, _CUT):
                src, dst = e.src, e.dst
                if src in outs:
                    outs[src].append(dst)
                else:
                    outs[src] = [dst]
                if dst in ins:
                    ins[dst].append(src)
                else:
                    ins[dst] = [src]
                if e.label:
                    labels[(src, dst)] = e.label
            elif ekind == _SAVED_EDGE:
                saved_of[e.src] = e.dst
        self.by_id: dict[str, GraphNode] = {}
        #: ``(id, module)`` of each OP node, in graph order; the ids of the SAVED nodes.
        self.op_nodes: list[tuple[str, str | None]] = []
        self.saved: list[str] = []
        #: Every node but the ops, in graph order: ``(id, what, linked)`` with the op that saved
        #: it (_IS_SAVED), the nodes it feeds (_IS_LEAF: leaves, inputs), or those feeding it.
        self.rest: list[tuple[str, int, Any]] = []
        # Every module that made a node, and its ancestors; children in named_modules order.
        used: set[str] = set()
        for n in graph.nodes:
            nid = n.id
            self.by_id[nid] = n
            kind = n.kind
            if kind == _OP:
                self.op_nodes.append((nid, n.module))
                path: str | None = n.module
                while path is not None and path not in used:
                    used.add(path)
                    path = module_parent(path)
            elif kind == _SAVED:
                self.saved.append(nid)
                self.rest.append((nid, _IS_SAVED, saved_of.get(nid)))
            elif kind in (_LEAF, _INPUT):
                self.rest.append((nid, _IS_LEAF, outs.get(nid, ())))
            else:
                self.rest.append((nid, _IS_OTHER, ins.get(nid, ())))
        self.saved_set = set(self.saved)
        self.cls: dict[str, str | None] = {}
        self.params: dict[str, int] = {}
        for info in graph.modules:
            self.cls[info.path] = info.cls
            self.params[info.path] = info.params
        order = {info.path: i for i, info in enumerate(graph.modules)}
        self.used = used
        self._order = order
        self.children: dict[str, list[str]] = {}
        for path in sorted(used, key=self.position):
            parent = module_parent(path)
            if parent is not None:
                self.children.setdefault(parent, []).append(path)
        self.max_depth = max((module_depth(p) for p in used), default=0)
        self._shapes: dict[str, tuple[int, ...] | None] = {}
        self._ops: dict[str, Counter[str]] | None = None
        self._exits: dict[str, set[str | None]] | None = None

    def label_shape(self, src: str, dst: str) -> tuple[int, ...] | None:
        """Returns the shape written on the data edge ``src -> dst``, if any."""
        label = self._labels.get((src, dst))
        if label is None:
            return None
        if label not in self._shapes:  # a model has few distinct shapes: each parsed once
            self._shapes[label] = _parse_shape(label)
        return self._shapes[label]

    def position(self, path: str) -> tuple[int, str]:
        """Returns a sort key putting modules in ``named_modules()`` order."""
        return (self._order.get(path, len(self._order)), path)

    def resolve(self, path: str) -> str:
        """Returns a module path as stored, accepting the root class as a prefix."""
        if path in self.used or path in self.cls:
            return path
        root_cls = self.cls.get("")
        head, _, rest = path.partition(".")
        if root_cls and head == root_cls and (rest in self.used or rest in self.cls):
            return rest
        known = sorted(p for p in self.used if p)
        close = difflib.get_close_matches(path, known, n=5, cutoff=0.6) or known[:5]
        raise GradlensError(
            f"no module {path!r} made a node of this graph; known modules include "
            + ", ".join(repr(p) for p in close)
        )

    def ops(self, path: str) -> Counter[str]:
        """Returns how many ops of each name lie inside module ``path``."""
        if self._ops is None:
            self._ops = {}
            for n in self.nodes:
                if n.kind != NodeKind.OP or n.module is None:
                    continue
                p: str | None = n.module
                while p is not None:
                    self._ops.setdefault(p, Counter())[n.name] += 1
                    p = module_parent(p)
        return self._ops.get(path, Counter())

    def exits(self, path: str) -> set[str | None]:
        """Returns the modules (None: outside all) that data leaving module ``path`` reaches."""
        if self._exits is None:
            self._exits = {}
            for n in self.nodes:
                if n.kind != NodeKind.OP or n.module is None:
                    continue
                for dst in self.outs.get(n.id, ()):
                    target = self.by_id[dst].module if self.by_id[dst].kind == NodeKind.OP else None
                    p: str | None = n.module
                    while p is not None and not within(target, p):
                        self._exits.setdefault(p, set()).add(target)
                        p = module_parent(p)
        return self._exits.get(path, set())


# ---- which modules collapse ------------------------------------------------------------------


@dataclass
class _Units:
    """The modules drawn as one node each (``unit -> group id``; a folded run shares one)."""

    group: dict[str, str] = field(default_factory=dict)
    runs: dict[str, list[str]] = field(default_factory=dict)  # group id -> instances (folded)
    level: int | None = None


def _choose_units(
    ix: _Index, level: int | None, focus: str | None, fold: bool, opened: Sequence[str]
) -> _Units:
    units = _Units(level=level)
    root = focus if focus is not None else ""
    if level is not None and level <= module_depth(root) and root in ix.used:
        units.group[root] = "m:" + root  # depth 0: the whole model (or module) is one node
        return units
    stack = [root] if root in ix.used else []
    while stack:
        path = stack.pop()
        kids = ix.children.get(path, [])
        in_run: set[str] = set()
        if fold:
            for run in _runs(ix, kids):
                if level is not None and module_depth(run[0]) > level:
                    continue
                gid = "m:" + run[0]
                units.runs[gid] = run
                for p in run:
                    units.group[p] = gid
                in_run.update(run)
        for kid in reversed(kids):
            if kid in in_run:
                continue
            if level is not None and module_depth(kid) >= level:
                units.group[kid] = "m:" + kid
            else:
                stack.append(kid)
    for path in sorted(opened, key=module_depth):
        _open(ix, units, path)
    return units


def _open(ix: _Index, units: _Units, path: str) -> None:
    """Expands one collapsed module (or unfolds one folded run) of ``units``."""
    gid = units.group.get(path)
    if gid is not None and gid in units.runs:
        for p in units.runs.pop(gid):
            units.group[p] = "m:" + p
        return
    if gid is None:
        return
    del units.group[path]
    for kid in ix.children.get(path, []):
        units.group[kid] = "m:" + kid


def _runs(ix: _Index, siblings: list[str]) -> list[list[str]]:
    """Returns chains of >= 2 alike siblings (same class and ops), each feeding only the next."""
    by_sig: dict[tuple[object, ...], list[str]] = {}
    for s in siblings:
        ops = ix.ops(s)
        if ops:
            by_sig.setdefault((ix.cls.get(s), *sorted(ops.items())), []).append(s)
    runs = []
    for members in by_sig.values():
        if len(members) < 2:
            continue
        succ: dict[str, str] = {}
        for m in members:
            exits = ix.exits(m)
            nxt = [o for o in members if o != m and exits and all(within(x, o) for x in exits)]
            if len(nxt) == 1:
                succ[m] = nxt[0]
        heads = [m for m in members if m in succ and m not in succ.values()]
        for head in heads:
            chain, seen = [head], {head}
            while chain[-1] in succ and succ[chain[-1]] not in seen:
                chain.append(succ[chain[-1]])
                seen.add(chain[-1])
            runs.append(chain)
    return runs


# ---- building one view -----------------------------------------------------------------------


@dataclass
class _View:
    nodes: list[GraphNode]
    edges: list[GraphEdge]
    notes: list[str]
    units: _Units
    saved: bool
    source: Graph
    hidden_saved: int = 0


def _place(
    ix: _Index, units: _Units, focus: str | None
) -> tuple[dict[str, str | None], dict[str, str]]:
    """Returns where each node goes in the view of ``units`` (saved tensors shown) and the STUB
    ids of the neighbours of ``focus``.

    ``place``: node id -> the unit path it disappears into ("" is the root), ``_SELF`` to stay
    itself, None when it is out of the view."""
    group = units.group
    unit_cache: dict[str | None, str | None] = {}
    place: dict[str, str | None] = {}
    for nid, path in ix.op_nodes:
        if path in unit_cache:
            place[nid] = unit_cache[path]
            continue
        if focus is not None and not within(path, focus):
            where: str | None = None
        else:
            p, where = path, _SELF
            while p is not None:
                if p in group:
                    where = p
                    break
                p = module_parent(p)
        unit_cache[path] = where
        place[nid] = where
    get = place.get
    orphan = _SELF if focus is None else None  # a saved tensor of no op
    for nid, what, linked in ix.rest:
        if what == _IS_SAVED:
            place[nid] = get(linked) if linked is not None else orphan
        elif what == _IS_LEAF:
            users = [get(d) for d in linked]
            inside = [u for u in users if u is not None]
            if focus is not None and not inside:
                place[nid] = None
            elif inside and len(inside) == len(users) and len(set(inside)) == 1:
                place[nid] = inside[0]
            else:
                place[nid] = _SELF
        elif focus is None:
            place[nid] = _SELF
        else:
            place[nid] = _SELF if any(get(s) is not None for s in linked) else None
    return place, _stubs(ix, place, focus)


def _stubs(ix: _Index, place: dict[str, str | None], focus: str | None) -> dict[str, str]:
    """Returns ``{node id: STUB id}`` for the neighbours of ``focus`` (none without one)."""
    stubs: dict[str, str] = {}
    if focus is not None:
        get = place.get
        for e in ix.graph.edges:
            if e.kind == EdgeKind.SAVED:
                continue
            a, b = get(e.src), get(e.dst)
            if a is None and b is not None:
                stubs[e.src] = "s:" + e.src
            elif b is None and a is not None:
                stubs[e.dst] = "s:" + e.dst
    return stubs


def _count(
    ix: _Index, units: _Units, place: dict[str, str | None], stubs: dict[str, str]
) -> tuple[int, int]:
    """Returns how many nodes the view placed by ``place`` has with saved tensors shown and
    with them hidden (what ``_build`` makes with ``saved=True`` / ``False``), building neither."""
    group = units.group
    saved = ix.saved_set
    wheres: set[str] = set()
    plain: set[str] = set()
    shown = hidden = 0
    for nid, where in place.items():
        if where is None:
            if nid in stubs:
                shown += 1
                hidden += 1
        elif where is _SELF:
            shown += 1
            hidden += nid not in saved
        else:
            wheres.add(where)
            if nid not in saved:
                plain.add(where)
    gids = {group[w] for w in wheres}
    plain_gids = {group[w] for w in plain}
    return shown + len(gids), hidden + len(plain_gids)


def _build(
    ix: _Index,
    units: _Units,
    saved: bool,
    focus: str | None,
    placed: tuple[dict[str, str | None], dict[str, str]] | None = None,
) -> _View:
    place, stubs = placed if placed is not None else _place(ix, units, focus)
    if not saved and ix.saved:
        place = dict(place)
        for nid in ix.saved:
            place[nid] = None
        stubs = _stubs(ix, place, focus)
    group = units.group
    # Where each node's edges end in the view: itself, its unit's node, its stub, or nowhere.
    ends = {nid: nid if w is _SELF else group[w] for nid, w in place.items() if w is not None}
    for nid, stub in stubs.items():
        ends.setdefault(nid, stub)
    edges: dict[tuple[str, str, EdgeKind], GraphEdge] = {}
    get = ends.get
    for e in ix.graph.edges:
        kind = e.kind
        if kind == _SAVED_EDGE and not saved:
            continue
        src, dst = e.src, e.dst
        s = get(src)
        d = get(dst)
        if s is None or d is None or s == d or (src in stubs and dst in stubs):
            continue
        key = (s, d, kind)
        if key not in edges:  # the record itself when it is unchanged: no copy of a big graph
            edges[key] = e if s == src and d == dst else GraphEdge(s, d, kind, e.label)

    members: dict[str, list[GraphNode]] = {}
    order: list[tuple[str, GraphNode | None]] = []
    for n in ix.nodes:
        where = place.get(n.id)
        if where is not None and where != _SELF:
            gid = units.group[where]
            if gid not in members:
                members[gid] = []
                order.append((gid, None))
            members[gid].append(n)
        elif where == _SELF:
            order.append((n.id, n))
        elif n.id in stubs:
            order.append((stubs[n.id], _stub(n, stubs[n.id])))
    nodes = [
        node if node is not None else _module_node(ix, units, gid, members[gid], place)
        for gid, node in order
    ]
    v = _View(nodes, list(edges.values()), [], units, saved, ix.graph)
    if not saved:
        v.hidden_saved = sum(
            1
            for n in ix.nodes
            if n.kind == NodeKind.SAVED and place.get(ix.saved_of.get(n.id, "")) == _SELF
        )
    v.notes = _notes(ix, v, focus)
    return v


def _stub(n: GraphNode, stub_id: str) -> GraphNode:
    return GraphNode(
        id=stub_id,
        kind=NodeKind.STUB,
        name=n.name,
        shape=n.shape,
        module=None,
        op=n.op,
        source=n.module,  # where the neighbour lives, shown small
    )


def _module_node(
    ix: _Index,
    units: _Units,
    gid: str,
    members: list[GraphNode],
    place: dict[str, str | None],
) -> GraphNode:
    instances = units.runs.get(gid) or [gid[2:]]
    first = instances[0]
    per_unit: dict[str, list[GraphNode]] = {p: [] for p in instances}
    for n in members:
        where = place[n.id]
        per_unit.setdefault(where if where is not None and where != _SELF else first, []).append(n)
    norms = [_unit_grad_norm(ix, per_unit.get(p, []), p, place) for p in instances]
    params = sum(_params(ix, p, per_unit.get(p, [])) for p in instances)
    in_shapes = _crossing(ix, per_unit.get(first, []), place, first, into=True)
    out_shapes = _crossing(ix, per_unit.get(instances[-1], []), place, instances[-1], into=False)
    return GraphNode(
        id=gid,
        kind=NodeKind.MODULE,
        name=_paths_text(instances) if len(instances) > 1 else first,
        shape=out_shapes[0] if len(out_shapes) == 1 else None,
        module=module_parent(first) or None,
        module_class=ix.cls.get(first),
        count=len(instances),
        instances=tuple(instances) if len(instances) > 1 else (),
        instance_grad_norms=tuple(norms) if len(instances) > 1 else (),
        params=params,
        in_shapes=tuple(in_shapes),
        out_shapes=tuple(out_shapes),
        grad_norm=norms[-1],
        inner=len(members),
    )


def _params(ix: _Index, path: str, members: list[GraphNode]) -> int:
    if path in ix.params:
        return ix.params[path]
    return sum(math.prod(n.shape or ()) for n in members if n.kind == NodeKind.LEAF)


def _crossing(
    ix: _Index, members: list[GraphNode], place: dict[str, str | None], unit: str, into: bool
) -> list[tuple[int, ...]]:
    """Returns the shapes of data crossing into (or out of) one unit, in order, unique.

    A tensor that needs no gradient and is read only inside (a buffer, a mask, token ids)
    counts as an input only when nothing else flows in (an embedding's ids)."""
    shapes: list[tuple[int, ...]] = []
    absorbed: list[tuple[int, ...]] = []
    links = ix.ins if into else ix.outs
    get = place.get
    for n in members:
        kind = n.kind
        if kind == _INPUT:
            if into and n.shape is not None and n.shape not in absorbed:
                absorbed.append(n.shape)
            continue
        if kind != _OP:
            continue
        nid = n.id
        for other in links.get(nid, ()):
            if get(other) != unit:
                shape = _edge_shape(ix, other, nid) if into else _edge_shape(ix, nid, other)
                if shape is not None and shape not in shapes:
                    shapes.append(shape)
    return (shapes or absorbed)[:4]


def _edge_shape(ix: _Index, src: str, dst: str) -> tuple[int, ...] | None:
    return ix.label_shape(src, dst) or ix.by_id[src].shape


def _parse_shape(label: str) -> tuple[int, ...] | None:
    m = _SHAPE.match(label.strip())
    if m is None:
        return None
    body = m.group(1).strip()
    return tuple(int(x) for x in body.split(",")) if body else ()


def _unit_grad_norm(
    ix: _Index, members: list[GraphNode], unit: str, place: dict[str, str | None]
) -> float | None:
    """Returns the L2 norm of the gradients (last pass) reaching the unit's output ops."""
    total, seen = 0.0, False
    for n in members:
        if not n.grads or n.kind != _OP:
            continue
        if all(place.get(d) == unit for d in ix.outs.get(n.id, ())):
            continue
        norm = _norm(n.grads[-1])
        if norm is not None:
            total += norm * norm
            seen = True
    return math.sqrt(total) if seen else None


def _norm(value: ValueSummary | None) -> float | None:
    if value is None:
        return None
    if value.norm is not None:
        return value.norm
    if value.values is None:
        return None
    flat: list[float] = []
    stack: list[object] = [value.values]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, (int, float)) and math.isfinite(item):
            flat.append(float(item))
    return math.sqrt(sum(x * x for x in flat))


def _paths_text(paths: Sequence[str]) -> str:
    """Returns ``transformer.h.0–11`` for a numbered run, else the paths joined."""
    if len(paths) == 1:
        return paths[0] or "the whole model"
    parents = {p.rpartition(".")[0] for p in paths}
    tails = [p.rpartition(".")[2] for p in paths]
    if len(parents) == 1 and all(t.isdigit() for t in tails):
        nums = [int(t) for t in tails]
        if nums == list(range(nums[0], nums[0] + len(nums))):
            parent = parents.pop()
            return f"{parent}.{nums[0]}–{nums[-1]}" if parent else f"{nums[0]}–{nums[-1]}"
    return ", ".join(paths) if len(paths) <= 3 else f"{paths[0]} … {paths[-1]}"


# ---- notes -----------------------------------------------------------------------------------


def _notes(ix: _Index, v: _View, focus: str | None) -> list[str]:
    notes: list[str] = []
    units = v.units
    plain = sorted((p for p, gid in units.group.items() if gid not in units.runs), key=ix.position)
    by_cls: dict[str, list[str]] = {}
    for p in plain:
        by_cls.setdefault(ix.cls.get(p) or "module", []).append(p)
    if by_cls:
        parts = [f"{len(ps)} {c} ({_paths_text(ps)})" for c, ps in by_cls.items()]
        if len(parts) > 4:
            parts = [*parts[:4], f"{len(parts) - 4} more kinds"]
        deeper = [p for p in plain if ix.children.get(p)]
        how = []
        if units.level is not None and deeper:
            rel = units.level - (module_depth(focus) if focus else 0)
            how.append(_call(depth=rel + 1, module=focus))
        if deeper and deeper[0]:
            how.append(_call(module=deeper[0]))
        tail = f": {' or '.join(how)}" if how else ""
        notes.append("collapsed " + ", ".join(parts) + tail)
    for run in units.runs.values():
        notes.append(
            f"folded {len(run)} alike {ix.cls.get(run[0]) or 'module'} ({_paths_text(run)}) "
            f"into one node ×{len(run)}: {_call(module=run[0])} shows one, "
            f'g.view(..., expand=("{run[0]}",)) unfolds them'
        )
    if not v.saved:
        hidden = v.hidden_saved
        if hidden:
            notes.append(f"{hidden} saved-tensor boxes hidden: g.view(..., saved=True) shows them")
    if focus is not None:
        notes.insert(0, f"module {focus!r} only; its neighbours are drawn as stubs")
    return notes


def _call(**kw: object) -> str:
    args = [f"{k}={v!r}".replace("'", '"') for k, v in kw.items() if v is not None]
    return f"g.view({', '.join(args)})"


# ---- fitting a page --------------------------------------------------------------------------


def _fit(
    ix: _Index,
    limit: int,
    start: int | None,
    focus: str | None,
    fold: bool,
    saved: bool,
    opened: Sequence[str],
    auto: bool,
) -> _View:
    """Returns the deepest view with at most ``limit`` nodes; failing that, op runs folded,
    and failing that, a cut with a note."""
    base = module_depth(focus) if focus else 0
    deepest = ix.max_depth if start is None else start
    levels: list[int | None] = [None] if start is None else []
    levels += list(range(deepest, base, -1))
    # Each candidate is only placed and counted (_count); only the one drawn is built.
    last: tuple[_Units, bool, tuple[dict[str, str | None], dict[str, str]] | None] | None = None
    n_saved = len(ix.saved)
    for level in levels:
        units = _choose_units(ix, level, focus, fold, opened)
        placed: tuple[dict[str, str | None], dict[str, str]] | None = None
        counts = (0, 0)
        # Units never nest and each holds an op, so each is a node: more units than fit, and
        # the view is too big whatever else it draws.
        too_many = len(set(units.group.values())) > limit
        for show_saved in (saved, False) if saved else (False,):
            if (
                not units.group
                and focus is None
                and last is None
                and len(ix.nodes) - (0 if show_saved else n_saved) > limit
            ):
                continue  # nothing collapses: the view is the whole graph, known too big
            if too_many:
                last = (units, show_saved, None)
                continue
            if placed is None:
                placed = _place(ix, units, focus)
                counts = _count(ix, units, *placed)
            last = (units, show_saved, placed)
            if (counts[0] if show_saved else counts[1]) <= limit:
                v = _build(ix, units, show_saved, focus, placed)
                return _explain_fit(ix, v, level, limit, len(ix.nodes), auto, base)
    if last is None:
        built = _build(ix, _choose_units(ix, None, focus, fold, opened), False, focus)
    else:
        built = _build(ix, last[0], last[1], focus, last[2])
    v = _fold_op_runs(built)
    if len(v.nodes) <= limit:
        return _explain_fit(ix, v, v.units.level, limit, len(ix.nodes), auto, base)
    return _explain_fit(ix, _cut(v, limit), v.units.level, limit, len(ix.nodes), auto, base)


def _explain_fit(
    ix: _Index, v: _View, level: int | None, limit: int, total: int, auto: bool, base: int
) -> _View:
    if level is None and not v.notes:
        return v  # it fits as it is: nothing collapsed, nothing to say
    what = "auto view" if auto else f"max_nodes={limit}"
    at = "" if level is None else f" at depth {level - base}"
    head = f"{what}: {len(v.nodes)} of {total} nodes{at} (a page holds {limit})"
    v.notes.insert(0, head)
    return v


def _fold_op_runs(v: _View) -> _View:
    """Draws each chain of the same op (each link the only way in and out) as one node ×N."""
    outs: dict[str, list[str]] = {}
    ins: dict[str, list[str]] = {}
    for e in v.edges:
        if e.kind in _FLOW:
            outs.setdefault(e.src, []).append(e.dst)
            ins.setdefault(e.dst, []).append(e.src)
    by_id = {n.id: n for n in v.nodes}

    def link(a: str) -> str | None:
        """Returns the op after ``a`` in a run of one op name, if the link is a plain chain."""
        na = by_id[a]
        nxt = outs.get(a, [])
        if na.kind != NodeKind.OP or len(nxt) != 1:
            return None
        nb = by_id[nxt[0]]
        if nb.kind != NodeKind.OP or nb.name != na.name or len(ins.get(nb.id, [])) != 1:
            return None
        return nb.id

    head_of: dict[str, str] = {}
    runs: dict[str, list[str]] = {}
    for n in v.nodes:
        if n.id in head_of or n.kind != NodeKind.OP:
            continue
        prev = ins.get(n.id, [])
        if len(prev) == 1 and link(prev[0]) == n.id:
            continue  # not the start of its run
        run, cur = [n.id], link(n.id)
        while cur is not None and cur not in head_of and cur != n.id:
            run.append(cur)
            cur = link(cur)
        if len(run) >= 3:
            rid = "r:" + n.id
            runs[rid] = run
            for r in run:
                head_of[r] = rid
    if not runs:
        return v
    # Saved tensors of the ops in a run go with it.
    for e in v.edges:
        if e.kind == EdgeKind.SAVED and e.dst in head_of:
            head_of[e.src] = head_of[e.dst]
    nodes: list[GraphNode] = []
    emitted: set[str] = set()
    for node in v.nodes:
        run_id = head_of.get(node.id)
        if run_id is None:
            nodes.append(node)
        elif run_id not in emitted:
            emitted.add(run_id)
            chain = [by_id[r] for r in runs[run_id]]
            first, last = chain[0], chain[-1]
            inner = sum(1 for x in head_of.values() if x == run_id)
            nodes.append(
                replace(
                    first,
                    id=run_id,
                    kind=NodeKind.MODULE,
                    name=first.name,
                    count=len(chain),
                    inner=inner,
                    grads=(),
                    grad_norm=_norm(last.grads[-1]) if last.grads else None,
                    source=first.source,
                )
            )
    edges: dict[tuple[str, str, EdgeKind], str | None] = {}
    for e in v.edges:
        a, b = head_of.get(e.src, e.src), head_of.get(e.dst, e.dst)
        if a != b:
            edges.setdefault((a, b, e.kind), e.label)
    chains = sorted(((by_id[r[0]].name, len(r)) for r in runs.values()), key=lambda c: -c[1])
    shown = ", ".join(f"{name} ×{n}" for name, n in chains[:4]) + (" …" if len(chains) > 4 else "")
    many = len(chains) > 1
    note = (
        f"drew {len(chains)} chain{'s' if many else ''} of one op as one node "
        f"{'each' if many else ''} ({shown}); g.view(depth=None) draws every op"
    ).replace("  ", " ")
    out = _View(
        nodes,
        [GraphEdge(a, b, k, lab) for (a, b, k), lab in edges.items()],
        [*v.notes, note],
        v.units,
        v.saved,
        v.source,
        v.hidden_saved,
    )
    return out


def _cut(v: _View, limit: int) -> _View:
    """Keeps the first ``limit - 1`` nodes (graph order: outputs first) and one STUB for the
    rest, joined to every kept node that had an edge to a dropped one."""
    kept = v.nodes[: limit - 1]
    kept_ids = {n.id for n in kept}
    dropped = len(v.nodes) - len(kept)
    taken = {n.id for n in v.nodes}
    stub_id = "s:more"
    while stub_id in taken:
        stub_id += "_"
    stub = GraphNode(stub_id, NodeKind.STUB, f"… {dropped} more nodes")
    edges: dict[tuple[str, str, EdgeKind], str | None] = {}
    for e in v.edges:
        s = e.src if e.src in kept_ids else stub_id
        d = e.dst if e.dst in kept_ids else stub_id
        if s == d or (s == stub_id and e.kind == EdgeKind.SAVED):
            continue
        edges.setdefault((s, d, EdgeKind.DATA if stub_id in (s, d) else e.kind), e.label)
    note = (
        f"cut: {dropped} nodes that still did not fit are drawn as one '… more' node; "
        "g.view(module=...) or g.view(depth=None) draws them"
    )
    return _View(
        [*kept, stub],
        [GraphEdge(s, d, k, lab) for (s, d, k), lab in edges.items()],
        [*v.notes, note],
        v.units,
        v.saved,
        v.source,
    )


def _finish(v: _View) -> Graph:
    g = Graph(
        nodes=tuple(v.nodes),
        edges=tuple(v.edges),
        modules=v.source.modules,
        notes=tuple(v.notes),
    )
    object.__setattr__(g, "_view", True)  # drawn as it is: to_dot never re-views a view
    return g
