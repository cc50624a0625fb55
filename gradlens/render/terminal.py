"""Records as rich renderables for the terminal, and as plain text.

``status_table``, ``graph_tree``, ``event_log`` and ``diagnostics_table`` return renderables;
printing them is the caller's job (``rich.console.Console().print(...)`` drops colour by itself
when the output is not a terminal). ``format_*`` return the same as plain text, for tests, logs
and files. User text (tensor names, messages) is always wrapped in :class:`rich.text.Text`, so a
name such as ``"[red]x"`` is printed as it is, never read as rich markup.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any, Literal, Union

from rich import box
from rich.console import Console, Group, RenderableType
from rich.padding import Padding
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from ..analysis.views import PAGE_NODES, view
from ..records import (
    BackwardEvent,
    Diagnostic,
    EdgeKind,
    ErrorEvent,
    Event,
    GradEvent,
    Graph,
    GraphNode,
    NodeKind,
    OpEvent,
    Severity,
    TensorRef,
    TensorStatus,
    TraceRecord,
    ValueSummary,
)
from .dot import format_shape

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "PAGE_NODES",
    "SCREEN_NODES",
    "SUMMARY_EVENTS",
    "SUMMARY_TENSORS",
    "ReportOptions",
    "current_report_options",
    "diagnostics_list",
    "diagnostics_table",
    "event_log",
    "event_summary",
    "format_diagnostics",
    "format_event_log",
    "format_graph_tree",
    "format_status",
    "format_trace_report",
    "graph_tree",
    "report_events",
    "report_graph",
    "report_options",
    "report_tensors",
    "report_tree",
    "status_table",
    "to_text",
    "trace_report",
]

#: How many levels ``graph_tree`` expands. rich indents each level by 4 columns, so past ~16
#: levels a 100-column terminal has no room left for the text (and rich drops such lines).
DEFAULT_MAX_DEPTH = 16


#: The most nodes the report's own auto view draws: a tree of about one screen.
SCREEN_NODES = 40

#: Past this many events the report summarises the log per pass; past this many tensors it
#: lists only the tensors worth a look (``events="full"``/``tensors="full"``: everything).
SUMMARY_EVENTS = 60
SUMMARY_TENSORS = 30

_SEVERITY_STYLE = {Severity.ERROR: "bold red", Severity.WARNING: "yellow", Severity.INFO: "cyan"}


def to_text(renderable: RenderableType, width: int = 100) -> str:
    """Returns ``renderable`` printed as plain text (no colour, no ANSI codes) ``width`` wide."""
    console = Console(
        file=io.StringIO(),
        width=width,
        color_system=None,
        force_terminal=False,
        force_jupyter=False,
        legacy_windows=False,
        emoji=False,
        highlight=False,
    )
    console.print(renderable)
    output = console.file
    assert isinstance(output, io.StringIO)
    # rich pads every line to the full width; plain text has no use for trailing blanks.
    return "".join(line.rstrip() + "\n" for line in output.getvalue().splitlines())


# ---------------------------------------------------------------------------------------------
# tensor status


def status_table(
    tensors: Mapping[str, TensorStatus] | Iterable[TensorStatus], *, full: bool = True
) -> Table:
    """Returns a table of each tensor's autograd status, with why ``.grad`` is None if it is.

    ``full=False`` lists only the tensors worth a look (non-leaves, and leaves that require
    grad but have no ``.grad``), at most ``SUMMARY_TENSORS`` of them; the caption counts the
    rest (parameters with a gradient, constants) and says how to list them all.
    """
    statuses = list(tensors.values()) if isinstance(tensors, Mapping) else list(tensors)
    caption = None
    if not full:
        statuses, caption = _worth_a_look(statuses)
    table = Table(
        title="tensors",
        caption=caption,
        caption_justify="left",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    longest = max((len(s.name) for s in statuses), default=4)
    table.add_column("name", style="bold", overflow="fold", min_width=min(longest, 24))
    table.add_column("shape", no_wrap=True)
    table.add_column("dtype", no_wrap=True)
    table.add_column("leaf", no_wrap=True)
    table.add_column("req grad", no_wrap=True)
    table.add_column("grad_fn", no_wrap=True)
    table.add_column("retains", no_wrap=True)
    table.add_column("ver", justify="right", no_wrap=True)
    grads = [s.grad.short() if s.grad is not None else "None" for s in statuses]
    widest = max((len(g) for g in grads), default=4)
    table.add_column("grad", style="green", overflow="fold", min_width=min(widest, 12))
    table.add_column("note", style="dim", ratio=1)
    for status, grad in zip(statuses, grads, strict=True):
        note = _grad_note(status)
        table.add_row(
            Text(status.name),
            Text(format_shape(status.shape)),
            Text(status.dtype.removeprefix("torch.")),
            _yes_no(status.is_leaf),
            _yes_no(status.requires_grad),
            Text(status.grad_fn or "—"),
            _yes_no(status.retains_grad),
            Text(str(status.version)),
            Text(grad),
            Text(note or ""),
        )
    return table


def format_status(
    tensors: Mapping[str, TensorStatus] | Iterable[TensorStatus], width: int = 100
) -> str:
    """Returns :func:`status_table` as plain text."""
    return to_text(status_table(tensors), width)


def _worth_a_look(statuses: list[TensorStatus]) -> tuple[list[TensorStatus], str]:
    """Returns the tensors a summary lists, and the caption that counts the others."""
    with_grad = [s for s in statuses if s.is_leaf and s.requires_grad and s.grad is not None]
    constants = [s for s in statuses if s.is_leaf and not s.requires_grad]
    rest = [s for s in statuses if s not in with_grad and s not in constants]
    listed = rest[:SUMMARY_TENSORS]
    parts = []
    if with_grad:
        parts.append(f"{len(with_grad)} leaves with a .grad")
    if constants:
        parts.append(f"{len(constants)} leaves that need no gradient")
    if len(rest) > len(listed):
        parts.append(f"{len(rest) - len(listed)} more")
    caption = (
        f"{len(listed)} of {len(statuses)} tensors listed; not listed: {', '.join(parts)} "
        "(tensors='full' lists them all)"
    )
    return listed, caption


def _grad_note(status: TensorStatus) -> str | None:
    """Returns a short reason why ``.grad`` is None, or None when there is nothing to say."""
    if status.grad is not None or not status.requires_grad:
        return None
    if not status.is_leaf and not status.retains_grad:
        return "non-leaf: call .retain_grad() to keep it"
    return "no backward() reached it yet"


def _yes_no(flag: bool) -> Text:
    return Text("yes" if flag else "no")


# ---------------------------------------------------------------------------------------------
# graph tree

#: Consecutive nodes of one chain with the same name, op and module are drawn as one line
#: ("MulBackward0  mul  ×9998") from this many on.
_MIN_RUN = 3
#: A tree deeper than this is drawn compactly (12 levels of 4 columns: half a terminal).
_COMPACT_HEIGHT = 12


def graph_tree(
    graph: Graph, *, max_depth: int | None = DEFAULT_MAX_DEPTH, compact: bool | None = None
) -> Tree:
    """Returns the graph as a tree, from each output back through the ops to the leaves.

    Each line shows a node's name, its op or shape, and the gradient it received; an op's saved
    tensors are listed under it, dimmed. A node reached a second time (a leaf used twice) is
    shown as ``(see above)``. A run of ``_MIN_RUN`` or more same ops in a chain is one line
    with ``×N``. ``compact`` (by default: when the graph has more than ``PAGE_NODES`` nodes, is
    deeper than ``_COMPACT_HEIGHT`` or ``max_depth`` levels, or is a module view) draws a chain
    of single-input nodes as ``↑`` lines under each other rather than ever deeper, so only real
    branches indent. Past ``max_depth`` levels the rest is one line, "… N more levels", saying
    how to see them (``max_depth=None``: every level). A value whose autograd history was cut
    (a CUT edge: ``.detach()``, ``.item()``) shows where it came from behind ``✂ <how>:``; nodes
    no output reaches are drawn from where they end, so nothing is dropped without a line.
    MODULE nodes of a view (``graph.view(...)``) show their class, path, shapes, parameter
    count and gradient norm; a folded one (``×12``) adds a line with each instance's norm.
    Built without recursion, so a chain thousands of ops deep is fine.
    """
    parents: dict[str, list[str]] = {n.id: [] for n in graph.nodes}
    saved: dict[str, list[str]] = {n.id: [] for n in graph.nodes}
    cuts: dict[tuple[str, str], str] = {}  # (src, dst) of a CUT edge: its label
    for edge in graph.edges:
        if edge.src not in parents or edge.dst not in parents:
            continue
        if edge.kind == EdgeKind.DATA:
            parents[edge.dst].append(edge.src)
        elif edge.kind == EdgeKind.SAVED:
            saved[edge.dst].append(edge.src)
        elif edge.kind == EdgeKind.CUT:
            cuts[(edge.src, edge.dst)] = edge.label or "history dropped"
    for src, dst in cuts:  # after the real inputs: where a value came from, its history cut
        parents[dst].append(src)
    heights = _heights(parents)
    limit = max_depth if max_depth is not None else len(graph.nodes) + 1
    if compact is None:
        compact = (
            len(graph.nodes) > PAGE_NODES
            or max(heights.values(), default=0) > min(limit, _COMPACT_HEIGHT)
            or any(n.kind in (NodeKind.MODULE, NodeKind.STUB) for n in graph.nodes)
        )

    roots = graph.outputs or _sinks(graph, parents, set())
    tree = Tree(_tree_title(graph))
    shown: set[str] = set()

    def run_from(node_id: str) -> list[str]:
        """Returns the ids of the run of same nodes that starts at ``node_id`` (itself first)."""
        run = [node_id]
        first = graph.node(node_id)
        key = (first.kind, first.name, first.op, first.module)
        while True:
            ins = parents[run[-1]]
            if len(ins) != 1 or ins[0] in shown or ins[0] in run or (ins[0], run[-1]) in cuts:
                break
            nxt = graph.node(ins[0])
            if (nxt.kind, nxt.name, nxt.op, nxt.module) != key:
                break
            run.append(ins[0])
        return run if len(run) >= _MIN_RUN else [node_id]

    # Depth-first, in order, with an explicit stack: (node id, tree to add it to, depth, the
    # node it feeds). Nodes no output reaches (a focused module's) are drawn from their sinks.
    stack: list[tuple[str, Tree, int, str | None]] = [
        (n.id, tree, 0, None) for n in reversed(roots)
    ]
    drawable = sum(1 for n in graph.nodes if n.kind != NodeKind.SAVED)
    beyond: set[str] = set()  # nodes past max_depth: counted by a "… N more levels" line
    while stack or len(shown | beyond) < drawable:
        if not stack:
            rest = _sinks(graph, parents, shown | beyond)
            if not rest:
                break
            stack = [(n.id, tree, 0, None) for n in reversed(rest)]
        node_id, into, depth, feeds = stack.pop()
        cut = cuts.get((node_id, feeds)) if feeds is not None else None
        if node_id in shown:
            into.add(_cut_mark(cut, _tree_label(graph.node(node_id), seen=True)))
            continue
        # The entry's label: one node, or (compact) a chain of them, one (marker, text) a line.
        lines: list[tuple[str, Text]] = []
        children: list[Text] = []
        current = node_id
        while True:
            run = run_from(current)
            shown.update(run)
            node = graph.node(current)
            entry = _tree_label(node, count=len(run), last=graph.node(run[-1]))
            if not lines:
                entry = _cut_mark(cut, entry)
            extra = [_saved_label(graph.node(s), len(run)) for s in saved[current]]
            extra += _instance_lines(node)
            if compact:
                lines.append(("↑ " if lines else "", entry))
                lines += [("", Text("  ").append_text(e)) for e in extra]
            else:
                lines.append(("", entry))
                children += extra
            current = run[-1]
            ins = parents[current]
            if ins and depth >= limit:
                more = _more_levels(heights[current])
                _add_ancestors(parents, ins, beyond)
                if compact:
                    lines.append(("↑ ", more))
                else:
                    children.append(more)
                ins = []
            if not compact or len(ins) != 1 or ins[0] in shown or (ins[0], current) in cuts:
                break
            current = ins[0]
            depth += 1
        branch = into.add(_chain_label(lines))
        for child in children:
            branch.add(child)
        stack.extend((p, branch, depth + 1, current) for p in reversed(ins))
    for note in graph.notes:
        tree.add(Text("note: " + note, style="dim"))
    return tree


def _sinks(graph: Graph, parents: Mapping[str, list[str]], shown: set[str]) -> list[GraphNode]:
    """Returns the nodes not shown yet that feed no other such node (where a tree starts), or
    the first one not shown when every one feeds another (a cycle)."""
    rest = [n for n in graph.nodes if n.kind != NodeKind.SAVED and n.id not in shown]
    feeding = {p for n in rest for p in parents[n.id]}
    return [n for n in rest if n.id not in feeding] or rest[:1]


def _add_ancestors(parents: Mapping[str, list[str]], start: list[str], into: set[str]) -> None:
    """Adds ``start`` and every node above it to ``into``."""
    todo = [n for n in start if n not in into]
    into.update(todo)
    while todo:
        for p in parents[todo.pop()]:
            if p not in into:
                into.add(p)
                todo.append(p)


def _cut_mark(cut: str | None, label: Text) -> Text:
    """Returns ``label`` marked as reached through a cut edge (its history dropped there)."""
    if cut is None:
        return label
    return Text.assemble(("✂ ", "red"), (f"{cut}: ", "red"), label)


def _chain_label(lines: Sequence[tuple[str, Text]]) -> RenderableType:
    """Returns the label of one tree entry: its first line as it is, the chain below it in a
    grid so that a long line wraps under its own text, not under the ``↑`` markers."""
    if len(lines) == 1:
        return lines[0][1]
    rest = Table.grid(padding=0)
    rest.add_column(no_wrap=True)
    rest.add_column(ratio=1)
    for marker, text in lines[1:]:
        rest.add_row(Text(marker), text)
    return Group(lines[0][1], rest)


def format_graph_tree(
    graph: Graph,
    width: int = 100,
    *,
    max_depth: int | None = DEFAULT_MAX_DEPTH,
    compact: bool | None = None,
) -> str:
    """Returns :func:`graph_tree` as plain text."""
    return to_text(graph_tree(graph, max_depth=max_depth, compact=compact), width)


def _tree_title(graph: Graph) -> Text:
    text = Text(f"autograd graph: {len(graph.nodes)} nodes", style="bold")
    modules = [n for n in graph.nodes if n.kind == NodeKind.MODULE]
    if modules:
        hidden = sum(n.inner for n in modules)
        text.append(f", {len(modules)} of them standing for {hidden}", style="bold")
    return text


def _more_levels(more: int) -> Text:
    return Text(
        f"… {more} more level{'s' if more != 1 else ''} (max_depth=None shows them all)",
        style="dim",
    )


def _tree_label(
    node: GraphNode, *, seen: bool = False, count: int = 1, last: GraphNode | None = None
) -> Text:
    text = Text(node.name, style="bold")
    if seen:
        text.append("  (see above)", style="dim")
        return text
    if node.kind == NodeKind.MODULE:
        return _module_label(node)
    if node.kind == NodeKind.STUB:
        text.stylize("dim")
        if node.source:
            text.append(f"  (neighbour in {node.source})", style="dim")
        return text
    if node.kind == NodeKind.OP:
        if node.op:
            text.append(f"  {node.op}", style="cyan")
    else:
        text.append(f"  {node.kind.value} {format_shape(node.shape)}".rstrip(), style="cyan")
    if count > 1:
        text.append(f"  ×{count}", style="bold magenta")
    if count > 1 and last is not None and last.grads and node.grads:
        first_grad, last_grad = node.grads[-1], last.grads[-1]
        text.append(f"  grad ← {_short(first_grad)} … {_short(last_grad)}", style="green")
    elif len(node.grads) == 1:
        text.append(f"  grad ← {_short(node.grads[0])}", style="green")
    else:
        for i, grad in enumerate(node.grads, start=1):
            text.append(f"  grad#{i} ← {_short(grad)}", style="green")
    if node.kind == NodeKind.LEAF and node.grad is not None:
        text.append(f"  .grad = {node.grad.short()}", style="green")
    aliases = node.aliases
    if aliases:
        text.append("  = " + ", ".join(aliases), style="cyan")
    if node.source:
        text.append(f"  {node.source}", style="dim")
    return text


def _module_label(node: GraphNode) -> Text:
    """Returns one line for a MODULE node: class (×count), path(s), shapes, params, grad norm;
    for a folded run of one op (a view's ``r:`` node): the op, ×count, grad norm, line."""
    if node.module_class is None:
        text = Text(node.name, style="bold")
        if node.op:
            text.append(f"  {node.op}", style="cyan")
        text.append(f"  ×{node.count}", style="bold magenta")
        if node.grad_norm is not None:
            text.append(f"  grad norm={_num(node.grad_norm)}", style="green")
        if node.source:
            text.append(f"  {node.source}", style="dim")
        return text
    count = node.count
    text = Text(node.module_class, style="bold")
    if count > 1:
        text.append(f" ×{count}", style="bold magenta")
    text.append(f"  {node.name}", style="cyan")
    ins = node.in_shapes
    outs = node.out_shapes
    if ins or outs:
        text.append(f"  {_shapes(ins)} → {_shapes(outs)}")
    params = node.params
    if params:
        text.append(f"  {_count(params)} params", style="dim")
    grad_norm = node.grad_norm
    if grad_norm is not None:
        text.append(f"  grad norm={_num(grad_norm)}", style="green")
    return text


def _instance_lines(node: GraphNode) -> list[Text]:
    """Returns, for a folded MODULE node, one line of each instance's gradient norm."""
    norms, instances = node.instance_grad_norms, node.instances
    if node.count < 2 or not norms or all(n is None for n in norms):
        return []
    names = _short_names(instances) if len(instances) == len(norms) else []
    parts = [f"{names[i]} {_num(n, 3)}" if names else _num(n, 3) for i, n in enumerate(norms)]
    return [Text("grad norm of each: " + "  ".join(parts), style="green")]


def _short_names(paths: Sequence[str]) -> list[str]:
    """Returns the paths with their common dotted prefix cut off (``h.0``, ``h.1``, …)."""
    split = [p.split(".") for p in paths]
    common = 0
    while all(len(s) > common + 1 for s in split) and len({s[common] for s in split}) == 1:
        common += 1
    keep = max(common - 1, 0)  # keep the last shared part: "h.0" reads better than "0"
    return [".".join(s[keep:]) for s in split]


def _shapes(shapes: Sequence[Sequence[int]]) -> str:
    """Returns the first shape as ``[1×64×768]``, and how many more there are (``+2``)."""
    if not shapes:
        return "—"
    first = "[" + "×".join(str(d) for d in shapes[0]) + "]"
    return first + (f" +{len(shapes) - 1}" if len(shapes) > 1 else "")


def _count(n: int) -> str:
    """Returns ``124.4M``, ``7.1k`` or ``512``."""
    for size, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def _num(x: float | None, digits: int = 4) -> str:
    return "?" if x is None else f"{x:.{digits}g}"


def _saved_label(node: GraphNode, count: int = 1) -> Text:
    what = node.saved_as or node.name
    text = f"saved {what} {format_shape(node.shape)}".rstrip()
    text += " (freed)" if node.freed else ""
    text += f" (each of the {count})" if count > 1 else ""
    return Text(text, style="dim")


def _heights(parents: Mapping[str, list[str]]) -> dict[str, int]:
    """Returns, for each node, how many levels of parents lie above it (0 for a leaf)."""
    heights: dict[str, int] = {}
    for start in parents:
        if start in heights:
            continue
        stack = [start]
        while stack:
            node_id = stack[-1]
            pending = [p for p in parents[node_id] if p not in heights]
            if pending:
                heights.setdefault(node_id, 0)  # provisional: breaks a cycle, should one appear
                stack.extend(pending)
                continue
            stack.pop()
            heights[node_id] = max((heights[p] + 1 for p in parents[node_id]), default=0)
    return heights


# ---------------------------------------------------------------------------------------------
# event log


def event_log(events: Sequence[Event]) -> Table:
    """Returns a table of what the trace recorded, one row per event, in order."""
    table = Table(title="events", title_justify="left")
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    table.add_column("what", style="bold", overflow="fold")
    table.add_column("tensors", overflow="fold")
    table.add_column("gradient", style="green", overflow="fold")
    table.add_column("source", style="dim", no_wrap=True)
    for event in events:
        table.add_row(
            Text(str(event.index)),
            Text(event.kind),
            _event_what(event),
            Text(_event_tensors(event)),
            Text(_event_gradient(event)),
            Text(_file_line(getattr(event, "source", None))),
        )
    return table


def event_summary(events: Sequence[Event], graph: Graph | None = None) -> Table:
    """Returns the event log summarised per pass, one row each: a forward stretch (how many
    ops, by module with repeated blocks folded, and by op), then each backward call (its
    roots, how many gradients reached how many ops and leaves, errors, non-finite values).

    ``graph`` (the trace's) gives the number of leaves a backward could reach.
    """
    table = Table(
        title=f"events: {len(events)}, summarised per pass",
        caption="the full log: events='full'",
        caption_justify="left",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        show_header=False,
    )
    table.add_column("pass", style="bold", no_wrap=True)
    table.add_column("what", ratio=1)
    leaves = len(graph.of_kind(NodeKind.LEAF)) if graph is not None else None
    for title, chunk in _passes(events):
        if isinstance(chunk[0], BackwardEvent):
            table.add_row(Text(title), _backward_summary(chunk, leaves))
        else:
            table.add_row(Text(title), _forward_summary(chunk))
    return table


def _passes(events: Sequence[Event]) -> list[tuple[str, list[Event]]]:
    """Returns the events cut into forward stretches and backward calls (each with the
    gradients it delivered), titled "forward", "backward 1", …"""
    chunks: list[tuple[str, list[Event]]] = []
    forwards = 0
    for event in events:
        if isinstance(event, BackwardEvent):
            call = "autograd.grad" if event.call == "grad" else "backward"
            chunks.append((f"{call} {event.pass_index + 1}", [event]))
        elif (
            isinstance(event, GradEvent) and chunks and isinstance(chunks[-1][1][0], BackwardEvent)
        ) or (chunks and not isinstance(chunks[-1][1][0], BackwardEvent)):
            chunks[-1][1].append(event)
        else:
            forwards += 1
            chunks.append((f"forward {forwards}", [event]))
    if forwards == 1:
        chunks = [("forward" if t == "forward 1" else t, c) for t, c in chunks]
    return chunks


def _forward_summary(chunk: Sequence[Event]) -> Text:
    ops = [e for e in chunk if isinstance(e, OpEvent)]
    errors = [e for e in chunk if isinstance(e, ErrorEvent)]
    others = len(chunk) - len(ops) - len(errors)
    text = Text(f"{len(ops)} op{'s' if len(ops) != 1 else ''}")
    if len({e.op for e in ops}) == 1:
        text.append(f": {ops[0].op}")
    inplace = sum(1 for e in ops if e.inplace)
    no_grad = sum(1 for e in ops if not e.grad_enabled)
    flags = [f"{inplace} in-place"] if inplace else []
    flags += [f"{no_grad} without grad mode"] if no_grad else []
    if others:
        flags.append(f"{others} gradient{'s' if others != 1 else ''} outside a backward call")
    if flags:
        text.append(f" ({', '.join(flags)})")
    sources = [e.source for e in ops if e.source]
    if sources:
        first, last = _file_line(sources[0]), _file_line(sources[-1])
        text.append(f", {first}" + (f" … {last}" if last != first else ""), style="dim")
    if any(e.module for e in ops):
        text.append("\nby module: ", style="dim")
        text.append(" · ".join(_module_groups([e.module for e in ops])))
    kinds: dict[str, int] = {}
    for e in ops:
        kinds[e.op] = kinds.get(e.op, 0) + 1
    if len(kinds) > 1:
        top = sorted(kinds.items(), key=lambda kv: -kv[1])
        parts = [f"{op} {n}" for op, n in top[:_TOP_KINDS]]
        if len(top) > _TOP_KINDS:
            more = len(top) - _TOP_KINDS
            parts.append(f"{more} more kind{'s' if more != 1 else ''}")
        text.append("\nby op: ", style="dim")
        text.append(" · ".join(parts))
    for error in errors:
        text.append(f"\nerror in {error.op}", style="red")
        if error.source:
            text.append(f" at {_file_line(error.source)}", style="red")
        text.append(f": {_first_line(error.error)}", style="red")
    return text


def _backward_summary(chunk: Sequence[Event], leaves: int | None) -> Text:
    call = chunk[0]
    assert isinstance(call, BackwardEvent)
    grads = [e for e in chunk if isinstance(e, GradEvent)]
    text = Text(_event_what(call).plain.partition("\n")[0].rpartition(" pass ")[0] + " of ")
    text.append(", ".join(call.roots) or "—", style="bold")
    if call.inputs:
        text.append(" → d/d " + ", ".join(call.inputs))
    flags = [
        f
        for f, on in (("retain_graph", call.retain_graph), ("create_graph", call.create_graph))
        if on
    ]
    if flags:
        text.append(f" ({', '.join(flags)})")
    if call.source:
        text.append(f", {_file_line(call.source)}", style="dim")
    nodes = {e.node for e in grads if e.leaf is None}
    reached = {e.leaf for e in grads if e.leaf is not None}
    text.append(f"\n{len(grads)} gradient{'s' if len(grads) != 1 else ''} reached ")
    text.append(f"{len(nodes)} op{'s' if len(nodes) != 1 else ''} and ")
    if leaves is not None and leaves >= len(reached):
        text.append(f"{len(reached)} of {leaves} leaves")
    else:
        text.append(f"{len(reached)} lea{'ves' if len(reached) != 1 else 'f'}")
    bad = [e for e in grads if any(g is not None and any(g.nonfinite) for g in e.grads)]
    if bad:
        text.append(
            f"\n{len(bad)} gradient{'s' if len(bad) != 1 else ''} with NaN or Inf, "
            f"first at {bad[0].node_name}",
            style="red",
        )
    if call.error:
        text.append(f"\nfailed: {_first_line(call.error)}", style="red")
    return text


#: How many op kinds the forward summary names; the rest are counted.
_TOP_KINDS = 8
#: How many module groups the forward summary aims for (it picks the finest path depth that
#: stays within this, repeated blocks folded).
_MAX_GROUPS = 16


def _module_groups(modules: Sequence[str | None]) -> list[str]:
    """Returns "path N" parts counting ops per module, at the finest depth that gives at most
    ``_MAX_GROUPS`` parts; sibling blocks with the same count fold ("h.0–11 ×12: 36 each")."""
    deepest = max((m.count(".") + 1 for m in modules if m), default=1)
    best: list[str] = []
    for depth in range(1, deepest + 1):
        counts: dict[str, int] = {}
        for m in modules:
            key = ".".join(m.split(".")[:depth]) if m else "(no module)"
            counts[key] = counts.get(key, 0) + 1
        parts = _fold_counts(list(counts.items()))
        if best and len(parts) > _MAX_GROUPS:
            break
        best = parts
    return best


def _fold_counts(items: list[tuple[str, int]]) -> list[str]:
    """Returns "key n" parts, runs of numbered siblings with equal counts folded into one."""
    parts: list[str] = []
    i = 0
    while i < len(items):
        key, n = items[i]
        head, _, tail = key.rpartition(".")
        j = i + 1
        if tail.isdigit():
            while j < len(items):
                head2, _, tail2 = items[j][0].rpartition(".")
                if head2 != head or not tail2.isdigit() or items[j][1] != n:
                    break
                j += 1
        if j - i >= 2:
            last = items[j - 1][0].rpartition(".")[2]
            parts.append(f"{key}–{last} ×{j - i}: {n} each")
        else:
            parts.append(f"{key} {n}")
        i = j
    return parts


def _first_line(message: str) -> str:
    line = message.strip().partition("\n")[0]
    return line if len(line) <= 160 else line[:159] + "…"


def _file_line(source: str | None) -> str:
    """Returns ``"file.py:12"`` without its folders: the table's narrowest useful form."""
    return "" if source is None else source.replace("\\", "/").rpartition("/")[2]


def format_event_log(events: Sequence[Event], width: int = 100) -> str:
    """Returns :func:`event_log` as plain text."""
    return to_text(event_log(events), width)


def _event_what(event: Event) -> Text:
    if isinstance(event, OpEvent):
        text = Text(event.op)
        if event.module:
            text.append(f" in {event.module}", style="dim")
        return text
    if isinstance(event, GradEvent):
        return Text(event.node_name)
    if isinstance(event, ErrorEvent):
        text = Text(event.op)
        text.append(f"\n{event.error}", style="red")
        return text
    call = "autograd.grad" if event.call == "grad" else event.call
    flags = [
        f
        for f, on in (("retain_graph", event.retain_graph), ("create_graph", event.create_graph))
        if on
    ]
    text = Text(f"{call} pass {event.pass_index + 1}")
    if flags:
        text.append(f" ({', '.join(flags)})")
    if event.error:
        text.append(f"\n{event.error}", style="red")
    return text


def _event_tensors(event: Event) -> str:
    if isinstance(event, OpEvent):
        text = f"{_refs(event.inputs)} → {_refs(event.outputs)}"
        return text + " (in-place)" if event.inplace else text
    if isinstance(event, ErrorEvent):
        return _refs(event.inputs)
    if isinstance(event, GradEvent):
        return event.leaf or ""
    text = ", ".join(event.roots)
    if event.inputs:
        text += " → d/d " + ", ".join(event.inputs)
    return text


def _event_gradient(event: Event) -> str:
    if isinstance(event, GradEvent):
        text = ", ".join(_short(g) for g in event.grads)
        if event.leaf is not None and event.accumulated is not None:
            text += f" → .grad = {event.accumulated.short()}"
        return text
    if isinstance(event, BackwardEvent):
        parts = []
        if any(g is not None for g in event.gradient):
            parts.append("gradient=" + ", ".join(_short(g) for g in event.gradient))
        if event.results:
            parts.append("→ " + ", ".join(_short(g) for g in event.results))
        return " ".join(parts)
    return ""


def _refs(refs: Sequence[TensorRef]) -> str:
    return ", ".join(f"{r.name} v{r.version}" for r in refs) or "—"


# ---------------------------------------------------------------------------------------------
# diagnostics


def diagnostics_table(diagnostics: Sequence[Diagnostic]) -> Table:
    """Returns a table of findings: kind, severity, tensor, message, how to fix it, source."""
    table = Table(title="diagnostics", title_justify="left")
    table.add_column("kind", no_wrap=True)
    table.add_column("severity", no_wrap=True)
    table.add_column("name", style="bold", overflow="fold")
    table.add_column("message", ratio=2)
    table.add_column("fix", ratio=2)
    table.add_column("source", style="dim", overflow="fold")
    for finding in diagnostics:
        severity = Severity(finding.severity)
        table.add_row(
            Text(finding.kind),
            Text(severity.value, style=_SEVERITY_STYLE[severity]),
            Text(finding.name or ""),
            Text(finding.message),
            Text(finding.fix or ""),
            Text(finding.source or ""),
        )
    return table


def diagnostics_list(diagnostics: Sequence[Diagnostic]) -> Group:
    """Returns the findings as blocks that read well at any width: a heading line (severity,
    kind, tensor, source), then the message and the fix, indented."""
    blocks: list[RenderableType] = []
    for finding in diagnostics:
        severity = Severity(finding.severity)
        head = Text.assemble(
            (severity.value, _SEVERITY_STYLE[severity]),
            "  ",
            (finding.kind, "bold"),
        )
        if finding.name:
            head.append(f"  {finding.name}")
        if finding.source:
            head.append(f"  {finding.source}", style="dim")
        body = Text(finding.message)
        if finding.fix:
            body.append("\nfix: ", style="green")
            body.append(finding.fix)
        blocks += [head, Padding(body, (0, 0, 0, 2))]
    return Group(*blocks)


def format_diagnostics(diagnostics: Sequence[Diagnostic], width: int = 100) -> str:
    """Returns :func:`diagnostics_table` as plain text."""
    return to_text(diagnostics_table(diagnostics), width)


def _short(value: ValueSummary | None) -> str:
    return value.short() if value is not None else "None"


# ---------------------------------------------------------------------------------------------
# everything a trace recorded


Depth = Union[int, Literal["auto"], None]
EventsMode = Literal["auto", "summary", "full"]
TensorsMode = Literal["auto", "full"]


@dataclass(frozen=True)
class ReportOptions:
    """How much of a trace :func:`trace_report` shows.

    - ``depth``: ``"auto"`` (default) draws a graph bigger than ``PAGE_NODES`` by module, at
      the depth the views pick for ``SCREEN_NODES`` (``view(depth="auto", fold=True,
      saved=False)``: repeated blocks folded) and a small one op by op; ``k`` collapses every
      module at depth ``k`` (``view(k, saved=False)``, nothing folded); ``None`` every op.
    - ``module``: only that module's ops (its neighbours as stubs), ``depth`` relative to it.
    - ``events``: ``"auto"`` summarises a log of more than ``SUMMARY_EVENTS`` events per
      pass; ``"summary"`` / ``"full"`` always do / never do.
    - ``tensors``: ``"auto"`` lists only the tensors worth a look when there are more than
      ``SUMMARY_TENSORS``; ``"full"`` lists them all.
    - ``max_depth``: how many tree levels are drawn: ``"auto"`` all of a view (it is made to
      fit) and ``DEFAULT_MAX_DEPTH`` of a whole graph; ``None`` all of them.
    """

    depth: Depth = "auto"
    module: str | None = None
    events: EventsMode = "auto"
    tensors: TensorsMode = "auto"
    max_depth: int | Literal["auto"] | None = "auto"


_OPTIONS: ContextVar[ReportOptions | None] = ContextVar("gradlens_report_options", default=None)


@contextmanager
def report_options(**changes: Any) -> Iterator[ReportOptions]:
    """Within the block, reports made with no options of their own (``print(trace)``) use
    these (``gradlens run --depth 3`` sets them around the script); yields the options."""
    options = replace(current_report_options(), **changes)
    token = _OPTIONS.set(options)
    try:
        yield options
    finally:
        _OPTIONS.reset(token)


def current_report_options() -> ReportOptions:
    """Returns the options a report made now uses by default."""
    return _OPTIONS.get() or ReportOptions()


class _Default(Enum):
    DEFAULT = 0


_DEFAULT = _Default.DEFAULT


def report_graph(graph: Graph, options: ReportOptions | None = None) -> Graph:
    """Returns the graph a report draws: ``graph`` itself, or a module view of it (see
    :class:`ReportOptions`)."""
    opts = options if options is not None else current_report_options()
    if opts.module is None and opts.depth is None:
        return graph
    if opts.module is None and opts.depth == "auto" and len(graph.nodes) <= PAGE_NODES:
        return graph
    if opts.module is not None:
        depth = None if opts.depth == "auto" else opts.depth
        return view(graph, depth, module=opts.module)
    if opts.depth == "auto":
        return view(graph, "auto", fold=True, saved=False, max_nodes=SCREEN_NODES)
    return view(graph, opts.depth, saved=False)  # deeper means every block, unfolded


def report_tree(graph: Graph, options: ReportOptions | None = None) -> RenderableType:
    """Returns the tree a report draws of ``graph`` (a module view of a big one) and, under a
    view, a line saying how to see more."""
    opts = options if options is not None else current_report_options()
    shown = report_graph(graph, opts)
    if shown is graph:
        levels = DEFAULT_MAX_DEPTH if opts.max_depth == "auto" else opts.max_depth
        return graph_tree(graph, max_depth=levels)
    levels = None if opts.max_depth == "auto" else opts.max_depth  # a view fits a page
    return Group(graph_tree(shown, max_depth=levels), _how_to_see_more(graph, shown))


def report_tensors(
    tensors: Mapping[str, TensorStatus], options: ReportOptions | None = None
) -> RenderableType:
    """Returns the status table a report shows: every tensor, or those worth a look (when
    none is, one line saying what there is)."""
    opts = options if options is not None else current_report_options()
    if opts.tensors == "full" or len(tensors) <= SUMMARY_TENSORS:
        return status_table(tensors)
    listed, caption = _worth_a_look(list(tensors.values()))
    if not listed:
        rest = caption.partition("not listed: ")[2]
        return Text(f"tensors: {len(tensors)}, none that needs a look: {rest}", style="dim")
    return status_table(tensors, full=False)


def report_events(
    events: Sequence[Event], graph: Graph | None = None, options: ReportOptions | None = None
) -> Table:
    """Returns the event log a report shows: in full, or summarised per pass."""
    opts = options if options is not None else current_report_options()
    summary = opts.events == "summary" or (opts.events == "auto" and len(events) > SUMMARY_EVENTS)
    return event_summary(events, graph) if summary else event_log(events)


def trace_report(
    record: TraceRecord,
    *,
    max_depth: int | Literal["auto"] | _Default | None = _DEFAULT,
    depth: Depth | _Default = _DEFAULT,
    module: str | _Default | None = _DEFAULT,
    events: EventsMode | _Default = _DEFAULT,
    tensors: TensorsMode | _Default = _DEFAULT,
) -> Group:
    """Returns the graph tree, tensor statuses, event log and findings of a trace, in that order.

    Options left out come from :func:`report_options` (see :class:`ReportOptions`): by
    default a big trace (a real model) fits a screen or two: the tree by module with repeated
    blocks folded, the tensors worth a look, the events summarised per pass. A small one is
    shown in full. Parts with nothing to show (no events, no findings) are left out.
    """
    given: dict[str, Any] = {
        k: v
        for k, v in (
            ("max_depth", max_depth),
            ("depth", depth),
            ("module", module),
            ("events", events),
            ("tensors", tensors),
        )
        if v is not _DEFAULT
    }
    opts = replace(current_report_options(), **given)
    parts: list[RenderableType] = [report_tree(record.graph, opts)]
    if record.tensors:
        parts.append(report_tensors(record.tensors, opts))
    if record.events:
        parts.append(report_events(record.events, record.graph, opts))
    if record.diagnostics:
        parts.append(diagnostics_table(record.diagnostics))
    return Group(*parts)


def _how_to_see_more(graph: Graph, shown: Graph) -> Text:
    """Returns the line under a module view: what it shows and how to see more of it."""
    modules = [n for n in shown.nodes if n.kind == NodeKind.MODULE and n.id.startswith("m:")]
    example = next((n for n in modules if n.instances), modules[0] if modules else None)
    text = Text(f"{len(shown.nodes)} of {len(graph.nodes)} nodes shown; ", style="dim")
    text.append("gradlens run …: --depth N shows modules N deep", style="dim")
    if example is not None:
        first = (example.instances or (example.id.removeprefix("m:"),))[0]
        text.append(f", --module {first} one of them", style="dim")
    text.append(", --depth all every op; Python: trace_report(t.record, depth=N)", style="dim")
    return text


def format_trace_report(record: TraceRecord, width: int = 100, **options: Any) -> str:
    """Returns :func:`trace_report` as plain text."""
    return to_text(trace_report(record, **options), width)
