"""Why a parameter gets no gradient: pure functions over a trace's events and graphs.

Value provenance is followed by tensor name through the recorded ops (a trace names each
tensor once, uniquely), so this works on a loaded trace exactly as on a live one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from itertools import pairwise

from ..records import (
    CutPoint,
    Diagnostic,
    EdgeKind,
    Event,
    GradEvent,
    GradFlow,
    Graph,
    GraphEdge,
    GraphNode,
    NodeKind,
    OpEvent,
    ParamWhy,
    Severity,
    TraceRecord,
    ValueSummary,
    WhyRecord,
)

__all__ = [
    "HOST_READS",
    "ParamFacts",
    "align",
    "analyze",
    "cut_kind",
    "find_cuts",
    "flows_from_events",
    "leaf_paths",
    "why_diagnostics",
]

HOST_READS = frozenset(
    {"item", "tolist", "numpy", "__float__", "__int__", "__bool__", "__index__", "__complex__"}
)
_REWRAP = frozenset({"tensor", "as_tensor", "asarray", "new_tensor", "from_numpy"})
# Ops whose result does not depend on the input's values: no provenance, never a cut.
_VALUE_FREE = frozenset(
    {
        "zeros_like",
        "ones_like",
        "empty_like",
        "full_like",
        "rand_like",
        "randn_like",
        "randint_like",
        "new_zeros",
        "new_ones",
        "new_empty",
        "new_full",
    }
)
_HOST_TEXT = {
    "__float__": "float()",
    "__int__": "int()",
    "__bool__": "bool()",
    "__index__": "an index",
    "__complex__": "complex()",
}


@dataclass(frozen=True)
class ParamFacts:
    """A parameter as ``explain`` was given it: its name, its name in the trace, its flags."""

    name: str
    trace_name: str
    is_leaf: bool = True
    requires_grad: bool = True


def cut_kind(event: OpEvent) -> str:
    """Returns how ``event`` dropped autograd history (one of ``CUT_KINDS``)."""
    op = event.op
    if op == "data":
        return "data"
    if op in HOST_READS:
        return "host"
    if op == "detach":
        return "detach"
    if op in ("requires_grad_", "detach_"):
        return "requires_grad_"
    if op in _REWRAP:
        return "rewrap"
    if event.inference_mode:
        return "inference_mode"
    if not event.grad_enabled:
        return "no_grad"
    return "non-differentiable"


def find_cuts(events: Sequence[Event], loss: str | None = None) -> list[CutPoint]:
    """Returns every recorded op that dropped the history of a value coming from a leaf that
    requires grad, in forward order; ``reached_loss`` tells whether its result flowed on into
    the tensor named ``loss``."""
    prov: dict[str, frozenset[str]] = {}  # tensor name -> leaves whose values flowed into it
    marks: dict[str, frozenset[int]] = {}  # tensor name -> cuts whose results flowed into it
    cuts: list[CutPoint] = []
    for e in events:
        if not isinstance(e, OpEvent) or e.op in _VALUE_FREE:
            continue
        values: set[str] = set()
        tracked: set[str] = set()  # leaves reaching the op *with* their history
        seen: set[int] = set()
        first_tracked: str | None = None
        for r in e.inputs:
            p = prov.get(r.name)
            if p is None:
                p = frozenset({r.name}) if r.is_leaf and r.requires_grad else frozenset()
                prov[r.name] = p
            values |= p
            seen |= marks.get(r.name, frozenset())
            if r.requires_grad:
                tracked |= p
                first_tracked = first_tracked or r.name
        lost = (
            e.op in HOST_READS
            or e.op == "data"
            or (bool(e.outputs) and not any(r.requires_grad for r in e.outputs))
        )
        if tracked and lost and first_tracked is not None:
            seen = seen | {len(cuts)}
            cuts.append(
                CutPoint(
                    index=e.index,
                    op=e.op,
                    kind=cut_kind(e),
                    source=e.source,
                    params=tuple(sorted(tracked)),
                    input=first_tracked,
                    output=e.outputs[0].name if e.outputs else None,
                )
            )
        for r in e.outputs:
            # A leaf made inside the trace (torch.randn(..., requires_grad=True)) is its own
            # source, as one made before it would be at its first use.
            own = frozenset({r.name}) if r.is_leaf and r.requires_grad else frozenset()
            prov[r.name] = frozenset(values) | own | prov.get(r.name, frozenset())
            marks[r.name] = frozenset(seen) | marks.get(r.name, frozenset())
    if loss is not None:
        reached = marks.get(loss, frozenset())
        cuts = [replace(c, reached_loss=i in reached) for i, c in enumerate(cuts)]
    return cuts


def first_uses(events: Iterable[Event]) -> dict[str, str | None]:
    """Returns ``{tensor name: source of the first op that read it}``."""
    out: dict[str, str | None] = {}
    for e in events:
        if isinstance(e, OpEvent):
            for r in e.inputs:
                out.setdefault(r.name, e.source)
    return out


def _parents(graph: Graph) -> dict[str, list[str]]:
    """Returns ``{node id: ids of its forward inputs (OP and LEAF nodes), in edge order}``."""
    kinds = {n.id: n.kind for n in graph.nodes}
    out: dict[str, list[str]] = {n.id: [] for n in graph.nodes}
    for e in graph.edges:
        if e.kind == EdgeKind.DATA and kinds.get(e.src) in (NodeKind.OP, NodeKind.LEAF):
            out.setdefault(e.dst, []).append(e.src)
    return out


def leaf_paths(graph: Graph, root: str | None, leaves: Mapping[str, str]) -> dict[str, list[str]]:
    """Returns, per parameter whose LEAF node the loss reaches, the shortest list of node ids
    from the loss's node (``root``) to it."""
    if root is None:
        return {}
    parents = _parents(graph)
    back: dict[str, str | None] = {root: None}
    queue = deque([root])
    while queue:
        nid = queue.popleft()
        for p in parents.get(nid, []):
            if p not in back:
                back[p] = nid
                queue.append(p)
    out: dict[str, list[str]] = {}
    for name, leaf in leaves.items():
        if leaf not in back:
            continue
        path: list[str] = []
        cur: str | None = leaf
        while cur is not None:
            path.append(cur)
            cur = back[cur]
        out[name] = path[::-1]
    return out


def align(a: Graph, a_root: str, b: Graph, b_root: str) -> dict[str, str]:
    """Returns ``{node id in a: node id in b}`` for two graphs of the same autograd graph,
    matched from the roots down by node name, inputs in order."""
    pa, pb = _parents(a), _parents(b)
    na = {n.id: n.name for n in a.nodes}
    nb = {n.id: n.name for n in b.nodes}
    if na.get(a_root) != nb.get(b_root):
        return {}
    out = {a_root: b_root}
    queue = deque([a_root])
    while queue:
        x = queue.popleft()
        free = list(pb.get(out[x], []))
        for p in pa.get(x, []):
            if p in out:
                continue
            match = next((q for q in free if nb.get(q) == na.get(p)), None)
            if match is None:
                continue
            free.remove(match)
            out[p] = match
            queue.append(p)
    return out


def _is_zero(v: ValueSummary | None) -> bool:
    if v is None:
        return True
    if v.nan or v.inf:
        return False
    if v.values is not None:
        stack: list[object] = [v.values]
        while stack:
            item = stack.pop()
            if isinstance(item, (list, tuple)):
                stack.extend(item)
            elif item != 0:
                return False
        return True
    return v.norm == 0


def flows_from_events(events: Sequence[Event], to_trace: Mapping[str, str]) -> dict[str, GradFlow]:
    """Returns what each node received in the trace's last backward pass, by the ids of
    ``to_trace``'s keys (``{id: trace node id}``); gradients sent on are unknown."""
    last = max((e.pass_index for e in events if isinstance(e, GradEvent)), default=None)
    if last is None:
        return {}
    incoming: dict[str, bool] = {}
    for e in events:
        if isinstance(e, GradEvent) and e.pass_index == last:
            nz = any(not _is_zero(g) for g in e.grads if g is not None)
            incoming[e.node] = incoming.get(e.node, False) or nz
    return {a: GradFlow(incoming[b]) for a, b in to_trace.items() if b in incoming}


def _dead_node(path: Sequence[str], flows: Mapping[str, GradFlow]) -> str | None:
    """Returns the first node on ``path`` that received a non-zero gradient and passed only
    zeros to the next node of the path."""
    for here, nxt in pairwise(path):
        f = flows.get(here)
        if f is None or not f.incoming:
            continue
        sent = f.outgoing.get(nxt)
        if sent is None:  # unknown: judge by what the next node received
            g = flows.get(nxt)
            sent = g.incoming if g is not None else None
        if sent is False:
            return here
    return None


def _kind_text(cut: CutPoint) -> str:
    op = cut.op
    if cut.kind == "host":
        return f"{_HOST_TEXT[op]}" if op in _HOST_TEXT else f".{op}()"
    return {
        "detach": ".detach()",
        "data": ".data",
        "no_grad": f"{op}, run under torch.no_grad()",
        "inference_mode": f"{op}, run under torch.inference_mode()",
        "requires_grad_": f".{op}()",
        "rewrap": f"torch.{op}(tensor), which copies the value into a new tensor without history",
        "non-differentiable": f"{op}, which has no gradient",
    }.get(cut.kind, op)


_CUT_FIX = {
    "detach": "remove .detach() where the gradient should flow (detach only targets and "
    "statistics)",
    "data": "use the tensor itself instead of .data (or torch.no_grad() for an update)",
    "host": "keep the value a tensor: a Python number (.item(), float(), .tolist()) has no "
    "history; use the tensor in the loss and call .item() only for logging",
    "no_grad": "compute this outside torch.no_grad()",
    "inference_mode": "compute this outside torch.inference_mode()",
    "requires_grad_": "do not call requires_grad_(False) / detach_() on a tensor the loss needs",
    "non-differentiable": "use a differentiable stand-in (softmax instead of argmax, a float "
    "mask instead of a comparison, no integer casts) on the path to the loss",
    "rewrap": "use the tensor as it is (or .clone()) instead of torch.tensor(t)",
}


def _cut_reason(name: str, cut: CutPoint) -> str:
    where = f" at {cut.source}" if cut.source else ""
    what = _kind_text(cut)
    if cut.reached_loss:
        return (
            f"{name}'s value reaches the loss only through {what}{where}: the autograd history "
            f"stops there, so no gradient flows back to {name}"
        )
    return (
        f"{name}'s value lost its autograd history at {what}{where}, and nothing with its "
        "history reached the loss"
    )


def _pick_cut(name: str, cuts: Sequence[CutPoint]) -> CutPoint | None:
    mine = [c for c in cuts if name in c.params]
    return next((c for c in mine if c.reached_loss), None) or (mine[0] if mine else None)


def analyze(
    *,
    loss: str,
    params: Sequence[ParamFacts],
    loss_graph: Graph,
    root: str | None,
    leaves: Mapping[str, str],
    flows: Mapping[str, GradFlow] | None,
    leaf_nonzero: Mapping[str, bool] | None,
    trace: TraceRecord | None = None,
    trace_loss: str | None = None,
) -> WhyRecord:
    """Returns every parameter's status relative to the loss.

    ``loss_graph``/``root``/``leaves`` come from a walk of the loss (``leaves``: parameter name
    -> LEAF node id); ``flows``/``leaf_nonzero`` from a gradient pass over that walk's ids
    (None when there was none: a trace's recorded gradients are used if it has them).
    ``trace``/``trace_loss`` (the loss's name in the trace) tell cuts from unused parameters.
    """
    names = {n.id: n for n in loss_graph.nodes}
    paths = leaf_paths(loss_graph, root, leaves)
    to_trace: dict[str, str] = {}
    if trace is not None and root is not None and trace_loss is not None:
        troot = _trace_node_of(trace, trace_loss)
        if troot is not None:
            to_trace = align(loss_graph, root, trace.graph, troot)
    dead_known = flows is not None
    if flows is None and trace is not None and to_trace:
        flows = flows_from_events(trace.events, to_trace)
        if flows:
            dead_known = True
            leaf_nonzero = {
                p: flows[leaves[p]].incoming
                for p in paths
                if leaves.get(p) in flows  # a leaf no backward reached stays unknown
            }
    cuts = find_cuts(trace.events, trace_loss) if trace is not None else []
    uses = first_uses(trace.events) if trace is not None else {}

    def source_of(nid: str) -> str | None:
        tid = to_trace.get(nid)
        src = trace.graph.node(tid).source if (trace is not None and tid) else None
        return src or names[nid].source

    out: dict[str, ParamWhy] = {}
    dead_ids: list[str] = []
    for p in params:
        if not p.is_leaf and p.requires_grad:
            out[p.name] = ParamWhy(
                p.name,
                "not-leaf",
                f"{p.name} is not a leaf (it was computed by an op), so autograd never fills "
                "its .grad; call .retain_grad() on it before backward() to keep its gradient, "
                "or name the leaf it was computed from",
                path=_path_names(paths.get(p.name), names),
            )
            continue
        path = paths.get(p.name)
        if path is not None:
            pnames = _path_names(path, names)
            if leaf_nonzero is not None and p.name in leaf_nonzero and not leaf_nonzero[p.name]:
                culprit = _dead_node(path, flows or {})
                if culprit is not None:
                    dead_ids.append(culprit)
                    node = names[culprit]
                    src = source_of(culprit)
                    where = f" (the forward op at {src})" if src else ""
                    out[p.name] = ParamWhy(
                        p.name,
                        "dead",
                        f"{p.name} is reachable but its gradient is exactly zero: {node.name}"
                        f"{where} receives a non-zero gradient and passes on only zeros (a ReLU "
                        "with all-negative inputs, a saturated sigmoid/tanh, a clamp, a zero "
                        "mask or factor, or a step function such as round/floor/sign)",
                        kind=node.name,
                        source=src,
                        path=pnames,
                        node=to_trace.get(culprit, culprit),
                    )
                else:
                    out[p.name] = ParamWhy(
                        p.name,
                        "dead",
                        f"{p.name} is reachable but its gradient is exactly zero (the gradient "
                        "of the loss itself is zero)",
                        path=pnames,
                    )
                continue
            reason = "gradient flows from the loss: " + " → ".join(pnames)
            if not dead_known:
                reason += (
                    " (whether it is zero is unknown: the graph was freed by an earlier "
                    "backward(); trace that backward, or call explain before it)"
                )
            out[p.name] = ParamWhy(p.name, "reachable", reason, path=pnames)
            continue
        if trace is None and not p.requires_grad:
            out[p.name] = ParamWhy(
                p.name,
                "unreachable",
                f"{p.name} does not require grad (requires_grad=False: frozen), so autograd "
                "computes no gradient for it",
                frozen=True,
            )
            continue
        if trace is None:
            out[p.name] = ParamWhy(
                p.name,
                "unreachable",
                f"no path from the loss reaches {p.name}"
                + ("" if p.requires_grad else " (it does not require grad)")
                + "; run the forward inside gradlens.trace() (`with gradlens.trace(model) as t:`) "
                "and pass trace=t to find the line that cut it",
            )
            continue
        cut = _pick_cut(p.trace_name, cuts)
        if cut is not None:
            out[p.name] = ParamWhy(
                p.name,
                "cut",
                _cut_reason(p.name, cut),
                kind=cut.kind,
                source=cut.source,
                node=None,
            )
            continue
        if not p.requires_grad:
            out[p.name] = ParamWhy(
                p.name,
                "unreachable",
                f"{p.name} does not require grad (requires_grad=False: frozen), so autograd "
                "computes no gradient for it; set requires_grad=True if it should train",
                frozen=True,
            )
            continue
        used = uses.get(p.trace_name, "missing")
        if used == "missing":
            reason = f"{p.name} was never used by any op of the traced forward"
        else:
            where = f" (first at {used})" if used else ""
            reason = f"{p.name} was used{where}, but nothing computed from it reached the loss"
        out[p.name] = ParamWhy(p.name, "unused", reason, source=None if used == "missing" else used)
    graph = _marked_graph(
        trace,
        loss_graph,
        cuts,
        [to_trace.get(d, d) for d in dead_ids] if trace is not None else dead_ids,
    )
    record = WhyRecord(
        loss=loss,
        params=out,
        cuts=tuple(cuts),
        graph=graph,
        traced=trace is not None,
        dead_known=dead_known,
    )
    return replace(record, diagnostics=tuple(why_diagnostics(record)))


def _trace_node_of(trace: TraceRecord, name: str) -> str | None:
    for e in reversed(trace.events):
        if isinstance(e, OpEvent) and e.node is not None and any(r.name == name for r in e.outputs):
            return e.node
    return None


def _path_names(path: Sequence[str] | None, nodes: Mapping[str, GraphNode]) -> tuple[str, ...]:
    if not path:
        return ()
    return tuple(
        "AccumulateGrad" if nodes[n].kind is NodeKind.LEAF else nodes[n].name for n in path
    )


def _marked_graph(
    trace: TraceRecord | None, loss_graph: Graph, cuts: Sequence[CutPoint], dead: Sequence[str]
) -> Graph:
    base = trace.graph if trace is not None else loss_graph
    dead_set = set(dead)
    nodes = [replace(n, dead=True) if n.id in dead_set else n for n in base.nodes]
    edges = list(base.edges)
    if trace is not None:
        taken = {n.id for n in nodes}
        for i, cut in enumerate(cuts):
            src = _producer(trace, cut.input, cut.index) or _by_name(nodes, cut.input)
            if src is None:  # a leaf no walk reached: draw it
                src = _fresh(f"leaf_{len(nodes)}", taken)
                nodes.append(GraphNode(src, NodeKind.LEAF, cut.input))
            dst = None
            if cut.output is not None:
                dst = _by_name(nodes, cut.output, NodeKind.INPUT)
            if dst is None:
                dst = _fresh(f"cut{i}", taken)
                nodes.append(
                    GraphNode(
                        dst,
                        NodeKind.INPUT,
                        cut.output or f"{_HOST_TEXT.get(cut.op, '.' + cut.op + '()')} value",
                        source=cut.source,
                    )
                )
            where = f" at {cut.source}" if cut.source else ""
            edges.append(GraphEdge(src, dst, EdgeKind.CUT, f"{cut.kind}{where}"))
    return Graph(nodes=tuple(nodes), edges=tuple(edges))


def _fresh(base: str, taken: set[str]) -> str:
    while base in taken:
        base += "_"
    taken.add(base)
    return base


def _producer(trace: TraceRecord, name: str, before: int) -> str | None:
    for e in reversed(trace.events):
        if (
            isinstance(e, OpEvent)
            and e.index < before
            and e.node is not None
            and any(r.name == name for r in e.outputs)
        ):
            return e.node
    return None


def _by_name(nodes: Sequence[GraphNode], name: str, kind: NodeKind | None = None) -> str | None:
    for n in nodes:
        if n.name == name and (
            n.kind == kind if kind is not None else n.kind in (NodeKind.LEAF, NodeKind.INPUT)
        ):
            return n.id
    return None


_FIX = {
    "unused": "use the parameter in the forward that computes the loss, or leave it out of the "
    "optimizer (or freeze it with requires_grad_(False))",
    "dead": "check the inputs of that op: they sit where its derivative is zero",
    "not-leaf": "call .retain_grad() on it before backward(), or inspect the leaf parameter",
    "unreachable": "run the forward inside gradlens.trace() and pass trace= to find the line",
}


def why_diagnostics(record: WhyRecord) -> list[Diagnostic]:
    """Returns one Diagnostic per parameter that is not simply reachable."""
    out: list[Diagnostic] = []
    cut_by_name = {c.kind: _CUT_FIX.get(c.kind) for c in record.cuts}
    for p in record.params.values():
        if p.status == "reachable" or p.frozen:
            continue
        fix = cut_by_name.get(p.kind or "") if p.status == "cut" else _FIX.get(p.status)
        out.append(
            Diagnostic(
                kind=p.status,
                message=p.reason,
                severity=Severity.INFO if p.status == "not-leaf" else Severity.WARNING,
                name=p.name,
                source=p.source,
                fix=fix,
            )
        )
    return out
