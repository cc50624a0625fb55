"""Records as rich renderables for the terminal, and as plain text.

``status_table``, ``graph_tree``, ``event_log`` and ``diagnostics_table`` return renderables;
printing them is the caller's job (``rich.console.Console().print(...)`` drops colour by itself
when the output is not a terminal). ``format_*`` return the same as plain text, for tests, logs
and files. User text (tensor names, messages) is always wrapped in :class:`rich.text.Text`, so a
name such as ``"[red]x"`` is printed as it is, never read as rich markup.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping, Sequence

from rich import box
from rich.console import Console, Group, RenderableType
from rich.padding import Padding
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

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
    "diagnostics_list",
    "diagnostics_table",
    "event_log",
    "format_diagnostics",
    "format_event_log",
    "format_graph_tree",
    "format_status",
    "format_trace_report",
    "graph_tree",
    "status_table",
    "to_text",
    "trace_report",
]

#: How many levels ``graph_tree`` expands. rich indents each level by 4 columns, so past ~16
#: levels a 100-column terminal has no room left for the text (and rich drops such lines).
DEFAULT_MAX_DEPTH = 16

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


def status_table(tensors: Mapping[str, TensorStatus] | Iterable[TensorStatus]) -> Table:
    """Returns a table of each tensor's autograd status, with why ``.grad`` is None if it is."""
    statuses = list(tensors.values()) if isinstance(tensors, Mapping) else list(tensors)
    table = Table(
        title="tensors",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    table.add_column("name", style="bold", overflow="fold")
    table.add_column("shape", no_wrap=True)
    table.add_column("dtype", no_wrap=True)
    table.add_column("leaf", no_wrap=True)
    table.add_column("req grad", no_wrap=True)
    table.add_column("grad_fn", no_wrap=True)
    table.add_column("retains", no_wrap=True)
    table.add_column("ver", justify="right", no_wrap=True)
    table.add_column("grad", style="green", overflow="fold")
    table.add_column("note", style="dim", ratio=1)
    for status in statuses:
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
            Text(status.grad.short() if status.grad is not None else "None"),
            Text(note or ""),
        )
    return table


def format_status(
    tensors: Mapping[str, TensorStatus] | Iterable[TensorStatus], width: int = 100
) -> str:
    """Returns :func:`status_table` as plain text."""
    return to_text(status_table(tensors), width)


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


def graph_tree(graph: Graph, *, max_depth: int = DEFAULT_MAX_DEPTH) -> Tree:
    """Returns the graph as a tree, from each output back through the ops to the leaves.

    Each line shows a node's name, its op or shape, and the gradient it received; an op's saved
    tensors are listed under it, dimmed. A node reached a second time (a leaf used twice) is
    shown as ``(see above)``. Levels past ``max_depth`` are summarized as "… N more levels".
    Built without recursion, so a chain thousands of ops deep is fine.
    """
    parents: dict[str, list[str]] = {n.id: [] for n in graph.nodes}
    saved: dict[str, list[str]] = {n.id: [] for n in graph.nodes}
    for edge in graph.edges:
        if edge.src not in parents or edge.dst not in parents:
            continue
        if edge.kind == EdgeKind.DATA:
            parents[edge.dst].append(edge.src)
        elif edge.kind == EdgeKind.SAVED:
            saved[edge.dst].append(edge.src)

    roots = graph.outputs or [n for n in graph.nodes if n.kind != NodeKind.SAVED][:1]
    tree = Tree(Text(f"autograd graph: {len(graph.nodes)} nodes", style="bold"))
    heights: dict[str, int] | None = None
    shown: set[str] = set()
    # Depth-first, in order, with an explicit stack: (node id, tree to add it to, depth).
    stack: list[tuple[str, Tree, int]] = [(n.id, tree, 0) for n in reversed(roots)]
    while stack:
        node_id, into, depth = stack.pop()
        node = graph.node(node_id)
        if node_id in shown:
            into.add(_tree_label(node, seen=True))
            continue
        shown.add(node_id)
        branch = into.add(_tree_label(node))
        for saved_id in saved[node_id]:
            branch.add(_saved_label(graph.node(saved_id)))
        if not parents[node_id]:
            continue
        if depth >= max_depth:
            if heights is None:
                heights = _heights(parents)
            more = heights[node_id]
            branch.add(Text(f"… {more} more level{'s' if more != 1 else ''}", style="dim"))
            continue
        stack.extend((p, branch, depth + 1) for p in reversed(parents[node_id]))
    return tree


def format_graph_tree(graph: Graph, width: int = 100, *, max_depth: int = DEFAULT_MAX_DEPTH) -> str:
    """Returns :func:`graph_tree` as plain text."""
    return to_text(graph_tree(graph, max_depth=max_depth), width)


def _tree_label(node: GraphNode, *, seen: bool = False) -> Text:
    text = Text(node.name, style="bold")
    if seen:
        text.append("  (see above)", style="dim")
        return text
    if node.kind == NodeKind.OP:
        if node.op:
            text.append(f"  {node.op}", style="cyan")
    else:
        text.append(f"  {node.kind.value} {format_shape(node.shape)}".rstrip(), style="cyan")
    if len(node.grads) == 1:
        text.append(f"  grad ← {_short(node.grads[0])}", style="green")
    else:
        for i, grad in enumerate(node.grads, start=1):
            text.append(f"  grad#{i} ← {_short(grad)}", style="green")
    if node.kind == NodeKind.LEAF and node.grad is not None:
        text.append(f"  .grad = {node.grad.short()}", style="green")
    if node.source:
        text.append(f"  {node.source}", style="dim")
    return text


def _saved_label(node: GraphNode) -> Text:
    what = node.saved_as or node.name
    text = f"saved {what} {format_shape(node.shape)}".rstrip()
    return Text(text + (" (freed)" if node.freed else ""), style="dim")


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


def trace_report(record: TraceRecord, *, max_depth: int = DEFAULT_MAX_DEPTH) -> Group:
    """Returns the graph tree, tensor statuses, event log and findings of a trace, in that order.

    Parts with nothing to show (no events, no findings) are left out.
    """
    parts: list[RenderableType] = [graph_tree(record.graph, max_depth=max_depth)]
    if record.tensors:
        parts.append(status_table(record.tensors))
    if record.events:
        parts.append(event_log(record.events))
    if record.diagnostics:
        parts.append(diagnostics_table(record.diagnostics))
    return Group(*parts)


def format_trace_report(record: TraceRecord, width: int = 100) -> str:
    """Returns :func:`trace_report` as plain text."""
    return to_text(trace_report(record), width)
