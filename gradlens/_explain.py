"""``gradlens.explain``: why does (or doesn't) each parameter get a gradient from a loss?"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import torch

from ._errors import GradlensError
from .analysis.why import ParamFacts, analyze
from .capture.names import TensorNames, named_params
from .capture.recorder import Recorder, _Mode
from .capture.why import gradient_pass, walk_loss
from .records import Diagnostic, Graph, ParamWhy, TraceRecord, WhyRecord

if TYPE_CHECKING:
    from ._trace import Trace

__all__ = ["Explanation", "explain"]


class Explanation:
    """The answer of :func:`explain`: ``params`` (name -> ``ParamWhy``), ``diagnostics``,
    a table in rich and plain text, and ``to_dot()``."""

    def __init__(self, record: WhyRecord) -> None:
        self.record = record

    @property
    def params(self) -> dict[str, ParamWhy]:
        """Returns each parameter's status (``.status``, ``.kind``, ``.source``, ``.reason``,
        ``.path``), by name."""
        return self.record.params

    @property
    def diagnostics(self) -> list[Diagnostic]:
        """Returns one Diagnostic per parameter that is not reachable (or is dead/not a leaf)."""
        return list(self.record.diagnostics)

    @property
    def graph(self) -> Graph | None:
        """Returns the graph with cut edges and dead nodes marked."""
        return self.record.graph

    def __getitem__(self, name: str) -> ParamWhy:
        return self.record.params[name]

    def __iter__(self) -> Any:
        return iter(self.record.params.values())

    def __len__(self) -> int:
        return len(self.record.params)

    def to_dot(self) -> str:
        """Returns the graph as DOT text: cuts as dashed red edges, dead nodes grey."""
        from .render.dot import to_dot

        return to_dot(self.record.graph or Graph(nodes=(), edges=()))

    def __rich__(self) -> Any:
        from .render.why_view import why_table

        return why_table(self.record)

    def __str__(self) -> str:
        from .render.why_view import format_why

        return format_why(self.record)

    def __repr__(self) -> str:
        counts: dict[str, int] = {}
        for p in self.record.params.values():
            counts[p.status] = counts.get(p.status, 0) + 1
        text = ", ".join(f"{n} {s}" for s, n in counts.items())
        return f"<Explanation of {self.record.loss}: {text or 'no parameters'}>"


def _current_recorder() -> Recorder | None:
    try:
        stack = torch.overrides._get_current_function_mode_stack()
    except AttributeError:  # pragma: no cover - an older torch
        return None
    for mode in reversed(stack):
        if isinstance(mode, _Mode):
            return mode.recorder
    return None


def explain(loss: torch.Tensor, params: Any = None, *, trace: Trace | None = None) -> Explanation:
    """Returns, for every parameter, whether the loss's gradient reaches it, and if not why.

    ``params``: an ``nn.Module`` (``named_parameters()`` names), a dict of name -> tensor, or
    None for every leaf requiring grad the trace saw (or the loss's graph reaches). ``trace``:
    the ``gradlens.trace()`` that recorded the forward (default: the one recording now, if
    any); without one, a parameter the loss does not reach is "unreachable", with no line.

    Runs one gradient pass of its own (``torch.autograd.grad`` with ``retain_graph=True``):
    ``.grad`` is left alone and the graph stays usable for the user's ``backward()``.
    """
    recorder: Recorder | None
    record: TraceRecord | None
    if trace is not None:
        recorder, record = trace._recorder, None
        if recorder is None or not recorder.recording:
            record = trace.record
    else:
        recorder, record = _current_recorder(), None
    with torch._C.DisableTorchFunction():  # a trace recording now must not see explain's ops
        return Explanation(_explain(loss, params, recorder, record))


def _explain(
    loss: Any, params: Any, recorder: Recorder | None, record: TraceRecord | None
) -> WhyRecord:
    if not isinstance(loss, torch.Tensor):
        raise GradlensError(
            f"explain() needs the loss tensor, got a {type(loss).__name__}: pass the tensor "
            "you call backward() on (not loss.item())"
        )
    if recorder is not None:
        recorder.name_now()
        if record is None:
            record = recorder.record  # a snapshot while recording
    named = _default_params(loss, recorder) if params is None else named_params(params)
    # One tensor under several names (tied weights, a module used twice): judged once, under
    # its first name, and every other name gets the same answer.
    named, aliases = _one_name_each(named)
    names = getattr(recorder, "_names", None)
    if params is None and isinstance(names, TensorNames):  # the trace's names: trace(model)
        aliases = {n: a for n, t in named.items() if (a := names.aliases_of(t))}

    def trace_name(name: str, t: torch.Tensor) -> str:
        found = recorder.name_of(t) if recorder is not None else None
        return found or name

    facts = [
        ParamFacts(name, trace_name(name, t), is_leaf=t.is_leaf, requires_grad=t.requires_grad)
        for name, t in named.items()
    ]
    leaves_only = {n: t for n, t in named.items() if t.is_leaf}
    walked = walk_loss(loss, leaves_only)
    reached = {n: named[n] for n in walked.leaves if named[n].requires_grad}
    passed = gradient_pass(loss, reached)
    flows, leaf_nonzero = passed if passed is not None else (None, None)
    loss_name = "loss"
    trace_loss = None
    if recorder is not None:
        trace_loss = recorder.name_of(loss)
        loss_name = trace_loss or loss_name
    why = analyze(
        loss=loss_name,
        params=facts,
        loss_graph=walked.graph,
        root=walked.root,
        leaves=walked.leaves,
        flows=flows,
        leaf_nonzero=leaf_nonzero,
        trace=record,
        trace_loss=trace_loss,
    )
    return _with_aliases(why, aliases) if aliases else why


def _one_name_each(
    named: dict[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, tuple[str, ...]]]:
    """Returns ``named`` with each tensor under its first name only, and the other names of
    each (``{"transformer.wte.weight": ("lm_head.weight",)}``)."""
    first: dict[int, str] = {}
    unique: dict[str, torch.Tensor] = {}
    others: dict[str, list[str]] = {}
    for name, t in named.items():
        seen = first.get(id(t))
        if seen is None:
            first[id(t)] = name
            unique[name] = t
        else:
            others.setdefault(seen, []).append(name)
    return unique, {k: tuple(v) for k, v in others.items()}


def _with_aliases(record: WhyRecord, aliases: dict[str, tuple[str, ...]]) -> WhyRecord:
    """Returns ``record`` with every other name of a tensor listed after its first, with the
    same answer (``ParamWhy.aliases`` names the others, both ways)."""
    params: dict[str, ParamWhy] = {}
    for name, p in record.params.items():
        others = aliases.get(name, ())
        params[name] = replace(p, aliases=others) if others else p
        for alias in others:
            rest = tuple(n for n in (name, *others) if n != alias)
            params[alias] = replace(p, name=alias, aliases=rest)
    return replace(record, params=params)


def _default_params(loss: torch.Tensor, recorder: Recorder | None) -> dict[str, torch.Tensor]:
    if recorder is not None:
        return recorder.grad_leaves()
    # No trace: every leaf the loss's graph reaches, named by position.
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    stack = [loss.grad_fn] if loss.grad_fn is not None else []
    visited: set[int] = set()
    keep: list[Any] = []  # held so that no id is reused during the walk
    while stack:
        fn = stack.pop()
        if id(fn) in visited:
            continue
        visited.add(id(fn))
        keep.append(fn)
        leaf = getattr(fn, "variable", None)
        if isinstance(leaf, torch.Tensor) and id(leaf) not in seen:
            seen.add(id(leaf))
            out[f"leaf{len(out)}"] = leaf
        stack.extend(child for child, _ in fn.next_functions if child is not None)
    return out
