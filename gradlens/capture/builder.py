"""Build a ``Graph`` record by walking ``grad_fn`` / ``next_functions`` without recursion.

One builder can take several walks (a trace walks before each backward and again at the end);
nodes are matched across walks through a token stored in each autograd Node's ``metadata``
dict, because Nodes cannot be weakly referenced and holding them would keep the graph alive.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from ..records import (
    EdgeKind,
    Graph,
    GraphEdge,
    GraphNode,
    ModuleInfo,
    NodeKind,
    ValueSummary,
    format_shape,
)
from .fast import record_maker
from .names import TensorNames
from .saved import saved_attributes, saved_slots
from .summary import shape_of

__all__ = ["GraphBuilder", "node_name"]

_META_KEY = "gradlens"
_OP, _SAVED, _SAVED_EDGE = NodeKind.OP, NodeKind.SAVED, EdgeKind.SAVED


def _meta_shape(meta: Any, i: int) -> tuple[int, ...] | None:
    """Returns the shape autograd expects at a node's input ``i`` (None when it has no single
    one: a nested tensor's sizes are symbolic)."""
    try:
        return tuple(map(int, meta[i].shape))
    except (RuntimeError, TypeError, AttributeError, ValueError):
        return None


def _label(meta: Any, i: int) -> str | None:
    shape = _meta_shape(meta, i) if i < len(meta) else None
    if shape is None:
        return None
    text = _LABELS.get(shape)
    if text is None:
        if len(_LABELS) > 10_000:
            _LABELS.clear()
        text = _LABELS[shape] = format_shape(shape)
    return text


_LABELS: dict[tuple[int, ...], str] = {}  # a model has few distinct shapes: each made once


def _input_labels(meta: Any) -> tuple[list[str | None], tuple[int, ...] | None]:
    """Returns the shape label of each of a node's inputs (``_label``) and the shape of its
    first, from its input metadata, read once."""
    labels: list[str | None] = []
    first: tuple[int, ...] | None = None
    for m in meta:
        try:
            shape = tuple(map(int, m.shape))
        except (RuntimeError, TypeError, AttributeError, ValueError):
            labels.append(None)
            continue
        if not labels:
            first = shape
        text = _LABELS.get(shape)
        if text is None:
            if len(_LABELS) > 10_000:
                _LABELS.clear()
            text = _LABELS[shape] = format_shape(shape)
        labels.append(text)
    return labels, first


_DTYPES: dict[Any, str] = {}  # torch.float32 -> "float32"


def _dtype_name(dtype: Any) -> str:
    """Returns a dtype's name without "torch." ("float32"), made once per dtype."""
    text = _DTYPES.get(dtype)
    if text is None:
        text = _DTYPES[dtype] = str(dtype).removeprefix("torch.")
    return text


def _same(x: Any) -> Any:
    return x


def node_name(fn: Any) -> str:
    """Returns an autograd Node's class name ("MulBackward0", "AccumulateGrad")."""
    kind = type(fn)
    name = _NODE_NAMES.get(kind)
    if name is None:
        name = str(fn.name()).rpartition("::")[2]
        if kind.__name__ != "CppFunction":  # one Python type per node class but this one
            _NODE_NAMES[kind] = name
    return name


_NODE_NAMES: dict[type, str] = {}  # node type -> its name (a few hundred types at most)


@dataclass(slots=True)
class _Draft:
    id: str
    kind: NodeKind
    name: str = ""
    tensor_key: int | None = None  # leaf/input/output nodes: the tensor's key in TensorNames
    shape: tuple[int, ...] | None = None
    dtype: str | None = None
    op: str | None = None
    module: str | None = None
    source: str | None = None
    saved_as: str | None = None
    grads: list[Any] = field(default_factory=list)  # summaries, or what build(value=) reads
    grad: ValueSummary | None = None
    freed: bool = False
    expanded: bool = False


class GraphBuilder:
    """Collects nodes and edges from walks over autograd graphs; ``build()`` returns a Graph."""

    def __init__(self, names: TensorNames, *, marks: bool = True) -> None:
        """``marks=False`` (one walk, the builder dropped after ``build``, as ``graph()``):
        Nodes are known by a dict holding them rather than by marks in their ``metadata``, so
        nothing is written into the autograd graph, and there are no marks to take off."""
        self.names = names
        self._ids: dict[Any, str] | None = None if marks else {}
        #: Optional ``(node, role) -> shape`` for saved tensors that can no longer be read.
        self.saved_shape: Callable[[Any, str], tuple[int, ...] | None] | None = None
        self._token = object()
        # One key per builder, so graph() inside a trace never touches the trace's marks.
        self._key = (_META_KEY, id(self._token))
        self._drafts: dict[str, _Draft] = {}
        self._edges: dict[tuple[str, str, EdgeKind], str | None] = {}
        self._by_tensor: dict[tuple[NodeKind, int], str] = {}
        self._saved: dict[tuple[str, str], str] = {}  # (op node id, attribute) -> node id
        self._linked: set[str] = set()  # op nodes whose input edges are drawn
        self._labels: dict[str, list[str | None]] = {}  # node id -> shape label of each input
        self._released: set[str] = set()  # op nodes whose saved values a backward freed, all

    # -- node identity -------------------------------------------------------------------
    def _new(self, kind: NodeKind, **kw: Any) -> _Draft:
        draft = _Draft(id=f"n{len(self._drafts)}", kind=kind, **kw)
        self._drafts[draft.id] = draft
        return draft

    def draft(self, node_id: str) -> _Draft:
        """Returns the mutable draft of a node."""
        return self._drafts[node_id]

    def known_id(self, fn: Any) -> str | None:
        """Returns the node id this builder gave ``fn``, or None."""
        if self._ids is not None:
            return self._ids.get(fn)
        mark = fn.metadata.get(self._key)
        if mark is not None and mark[0] is self._token:
            return str(mark[1])
        return None

    def node_for(self, fn: Any) -> str:
        """Returns the node id of autograd Node ``fn``, creating a draft the first time."""
        ids = self._ids
        if ids is not None:
            known = ids.get(fn)
            if known is not None:
                return known
        else:
            marks = fn.metadata
            mark = marks.get(self._key)
            if mark is not None and mark[0] is self._token:
                return str(mark[1])
        variable = getattr(fn, "variable", None)
        meta = fn._input_metadata  # read once: the node's shape and its input edges' labels
        labels, first = _input_labels(meta)
        if isinstance(variable, torch.Tensor):  # AccumulateGrad: the node *is* the leaf
            nid = self.tensor_node(variable, NodeKind.LEAF)
        else:
            drafts = self._drafts
            nid = f"n{len(drafts)}"
            one = len(meta) == 1
            drafts[nid] = _Draft(
                nid,
                _OP,
                node_name(fn),
                None,
                first if one else None,
                _dtype_name(meta[0].dtype) if one else None,
            )
        if nid not in self._labels:
            self._labels[nid] = labels
        if ids is not None:
            ids[fn] = nid
        else:
            marks[self._key] = (self._token, nid)
        return nid

    def tensor_node(self, t: torch.Tensor, kind: NodeKind) -> str:
        """Returns the id of the LEAF/INPUT/OUTPUT node standing for tensor ``t``."""
        k = self.names.key(t)
        nid = self._by_tensor.get((kind, k))
        if nid is None:
            nid = self._new(
                kind,
                tensor_key=k,
                shape=shape_of(t),
                dtype=_dtype_name(t.dtype),
            ).id
            self._by_tensor[(kind, k)] = nid
        return nid

    def edge(self, src: str, dst: str, kind: EdgeKind = EdgeKind.DATA, label: str | None = None):
        """Adds an edge (once)."""
        self._edges.setdefault((src, dst, kind), label)

    # -- walking -------------------------------------------------------------------------
    def add_output(self, t: torch.Tensor, reached: list[tuple[Any, str]] | None = None) -> str:
        """Adds ``t`` as an OUTPUT node, walks its graph (adding what it reached to ``reached``
        when given), and returns the output node id."""
        out = self.tensor_node(t, NodeKind.OUTPUT)
        if t.grad_fn is not None:
            self.edge(self.node_for(t.grad_fn), out, label=format_shape(shape_of(t)))
            found = self.walk([t.grad_fn])
            if reached is not None:
                reached.extend(found)
        return out

    def link_new(self, fn: Any) -> None:
        """Adds the edges from ``fn``'s inputs to it, and of any node not seen before behind it,
        so a branch that no backward will walk (a detached one) is still drawn connected."""
        queue: deque[Any] = deque([fn])
        while queue:
            node = queue.popleft()
            nid = self.node_for(node)
            if nid in self._linked:
                continue
            self._linked.add(nid)
            for child, nr in node.next_functions:
                if child is None:
                    continue
                cid = self.known_id(child)
                if cid is None:
                    cid = self.node_for(child)
                    queue.append(child)
                self.edge(cid, nid, label=self._label(child, cid, nr))

    def walk(self, roots: list[Any]) -> list[tuple[Any, str]]:
        """Walks breadth-first from autograd Nodes ``roots``; returns every ``(fn, id)`` reached.

        Iterative, so a graph thousands of ops deep cannot raise RecursionError.
        """
        reached: list[tuple[Any, str]] = []
        seen: set[str] = set()
        queue: deque[tuple[Any, str]] = deque((fn, self.node_for(fn)) for fn in roots)
        edges, node_for, data = self._edges, self.node_for, EdgeKind.DATA
        drafts, labels_of, op_kind, has_saved = self._drafts, self._labels, _OP, saved_attributes
        pop, push = queue.popleft, queue.append
        while queue:
            fn, nid = pop()
            if nid in seen:
                continue
            seen.add(nid)
            reached.append((fn, nid))
            draft = drafts[nid]
            if draft.kind is op_kind and has_saved(fn):  # most ops save nothing
                self._read_saved(fn, draft)
            for child, nr in fn.next_functions:
                if child is None:
                    continue
                cid = node_for(child)
                key = (cid, nid, data)
                if key not in edges:
                    labels = labels_of.get(cid)
                    if labels is None:
                        edges[key] = self._label(child, cid, nr)
                    else:
                        edges[key] = labels[nr] if nr < len(labels) else None
                if cid not in seen:
                    push((child, cid))
            draft.expanded = True
        return reached

    def _label(self, fn: Any, nid: str, i: int) -> str | None:
        """Returns the shape label of input ``i`` of node ``fn`` (id ``nid``), reading the
        node's input metadata once."""
        labels = self._labels.get(nid)
        if labels is None:
            meta = fn._input_metadata
            labels = self._labels[nid] = [_label(meta, j) for j in range(len(meta))]
        return labels[i] if i < len(labels) else None

    def _read_saved(self, fn: Any, draft: _Draft) -> None:
        """Adds a SAVED node per saved value of ``fn`` (read without unpacking: no unpack hook
        runs), or marks one freed by a backward without retain_graph. A node whose every saved
        value was freed is not read again: freeing is for good, so the answer cannot change."""
        if draft.id in self._released:
            return
        freed = kept = 0
        saved, nid = self._saved, draft.id
        for slot in saved_slots(fn, lambda role: (nid, role) in saved):
            key = (draft.id, slot.role)
            existing = self._saved.get(key)
            if slot.freed:
                if existing is None:
                    existing = self._add_saved(draft, slot.role, None)
                    shape = self.saved_shape(fn, slot.role) if self.saved_shape else None
                    self._drafts[existing].shape = shape
                self._drafts[existing].freed = True
                freed += 1
                continue
            kept += 1
            if existing is None and (slot.tensor is not None or slot.skipped is not None):
                self._add_saved(draft, slot.role, slot.tensor)
        if freed and not kept:
            self._released.add(draft.id)

    def _add_saved(self, op: _Draft, role: str, t: torch.Tensor | None) -> str:
        where = "output" if role.startswith("result") else "input"
        drafts = self._drafts
        nid = f"n{len(drafts)}"
        drafts[nid] = _Draft(
            nid,
            _SAVED,
            role,
            None,
            None if t is None else shape_of(t),
            None if t is None else _dtype_name(t.dtype),
            saved_as=f"{where} {role}",
        )
        self._saved[(op.id, role)] = nid
        self._edges.setdefault((nid, op.id, _SAVED_EDGE), None)
        return nid

    def refresh_saved(self, reached: list[tuple[Any, str]]) -> None:
        """Re-reads saved tensors of the reached op nodes, marking the ones now freed."""
        drafts, op_kind, has_saved = self._drafts, _OP, saved_attributes
        for fn, nid in reached:
            draft = drafts[nid]
            if draft.kind is op_kind and has_saved(fn):  # as walk(): most ops save nothing
                self._read_saved(fn, draft)

    def forget_marks(self, roots: list[Any]) -> None:
        """Removes this builder's marks from the Nodes reachable from ``roots``."""
        if self._ids is not None:
            self._ids.clear()  # no marks: only the references to let go
            return
        queue: deque[Any] = deque(roots)
        while queue:
            fn = queue.popleft()
            if self.known_id(fn) is None:
                continue
            del fn.metadata[self._key]
            queue.extend(child for child, _ in fn.next_functions if child is not None)

    def forget(self, fns: Iterable[Any]) -> None:
        """Removes this builder's marks from the Nodes ``fns`` (all a walk reached)."""
        if self._ids is not None:
            self._ids.clear()
            return
        for fn in fns:
            fn.metadata.pop(self._key, None)

    # -- result --------------------------------------------------------------------------
    def build(
        self,
        leaf_grads: dict[int, Any] | None = None,
        value: Callable[[Any], ValueSummary | None] | None = None,
        modules: tuple[ModuleInfo, ...] = (),
    ) -> Graph:
        """Returns the Graph of everything collected so far; ``value`` turns what the drafts and
        ``leaf_grads`` hold into summaries (``Summaries.get``), when they are not ones already."""
        get = value or _same
        make_node, make_edge = record_maker(GraphNode), record_maker(GraphEdge)
        names, leaf = self.names, NodeKind.LEAF
        nodes = []
        for d in self._drafts.values():
            name = d.name
            aliases: tuple[str, ...] = ()
            key = d.tensor_key
            grad = d.grad
            if key is not None:
                name = names.name(key)
                aliases = names.aliases(key)  # tied weights: the other names
                if leaf_grads is not None and d.kind is leaf:
                    grad = get(leaf_grads.get(key, grad))
            grads = d.grads
            # Every field this builder sets, in GraphNode's order (its checks made once, by
            # record_maker: a node per draft, thousands on a real model).
            fields: dict[str, Any] = {
                "id": d.id,
                "kind": d.kind,
                "name": name,
                "shape": d.shape,
                "dtype": d.dtype,
                "op": d.op,
                "module": d.module,
                "source": d.source,
                "saved_as": d.saved_as,
                "grads": tuple([get(g) for g in grads]) if grads else (),
                "grad": grad,
                "freed": d.freed,
                "aliases": aliases,
            }
            nodes.append(make_node(fields))
        edges = tuple(
            [
                make_edge({"src": s, "dst": t, "kind": k, "label": label})
                for (s, t, k), label in self._edges.items()
            ]
        )
        return Graph(nodes=tuple(nodes), edges=edges, modules=modules)
