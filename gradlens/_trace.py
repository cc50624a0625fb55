"""``gradlens.trace``: record while user code runs, then explain and draw what happened."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from ._gc import OldObjectsSet, gc_paused
from ._guard import warn_confirmed
from .analysis import diagnose
from .analysis.inplace import explain_violations, mark_violations
from .capture import Recorder
from .records import Diagnostic, Event, Graph, TensorStatus, TraceRecord
from .render.graphviz import RenderResult

__all__ = ["Trace"]


class Trace:
    """A context manager that records the forward ops, backward passes and gradients in its body.

    Use it as ``with gradlens.trace(model) as t: ...``; afterwards ``t.graph``, ``t.tensors``,
    ``t.events`` and ``t.diagnostics`` hold what happened. Hooks and the torch-function mode are
    removed when the block ends, also when it raises; tensors are only weakly referenced.
    A Trace returned by ``gradlens.load`` holds a saved record and cannot be entered.
    """

    def __init__(self, *modules: Any, **named_tensors: Any) -> None:
        self._recorder: Recorder | None = Recorder(*modules, **named_tensors)
        self._recorder.on_confirm = warn_confirmed  # as guard() does, before PyTorch's error
        self._record: TraceRecord | None = None
        self._old = OldObjectsSet()  # no collector pass over the model's objects (_gc.py)

    @classmethod
    def from_record(cls, record: TraceRecord) -> Trace:
        """Returns a finished Trace holding ``record`` (for example one loaded from JSON)."""
        trace = cls.__new__(cls)
        trace._recorder = None
        trace._record = record
        trace._old = OldObjectsSet()
        return trace

    def __enter__(self) -> Trace:
        if self._recorder is None:
            from ._errors import GradlensError

            raise GradlensError("this Trace holds a saved record; start a new gradlens.trace()")
        self._old.start()
        try:
            self._recorder.__enter__()
        except BaseException:
            self._old.stop()
            raise
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        assert self._recorder is not None
        try:
            with gc_paused():  # gradlens's own work only: the user's code has run
                try:
                    self._recorder.__exit__(exc_type, exc, tb)
                finally:
                    self._record = self._finish(self._recorder.record)
        finally:
            self._old.stop()

    @staticmethod
    def _finish(record: TraceRecord) -> TraceRecord:
        diagnostics = list(diagnose(record.events))
        seen = {(d.kind, d.source) for d in diagnostics}  # inplace-leaf: from events already
        diagnostics += [
            d for d in explain_violations(record.violations) if (d.kind, d.source) not in seen
        ]
        graph = mark_violations(record.graph, record.violations)
        return replace(record, graph=graph, diagnostics=tuple(diagnostics))

    @property
    def record(self) -> TraceRecord:
        """Returns everything recorded, as a plain record (a snapshot while recording)."""
        if self._record is not None:
            return self._record
        assert self._recorder is not None
        return self._finish(self._recorder.record)

    @property
    def graph(self) -> Graph:
        """Returns the graph: forward op names, modules, source lines and gradients received."""
        return self.record.graph

    @property
    def tensors(self) -> dict[str, TensorStatus]:
        """Returns the status of every tensor still alive when the trace ended, by name."""
        return self.record.tensors

    @property
    def events(self) -> tuple[Event, ...]:
        """Returns forward ops, backward calls and gradient arrivals, in order."""
        return self.record.events

    @property
    def diagnostics(self) -> tuple[Diagnostic, ...]:
        """Returns the errors and mistakes found, explained."""
        return self.record.diagnostics

    def explain(self, loss: Any = None, params: Any = None) -> Any:
        """Returns ``gradlens.explain(loss, params, trace=self)``; ``loss`` None means the root
        of the last backward call, else the last output of the recorded graph."""
        from ._errors import GradlensError
        from ._explain import explain

        if loss is None:
            loss = self._recorder.default_loss() if self._recorder is not None else None
            if loss is None:
                raise GradlensError(
                    "this trace has no loss left to explain (none alive, or a loaded trace): "
                    "pass it, t.explain(loss)"
                )
        return explain(loss, params, trace=self)

    def view(
        self,
        depth: int | str | None = None,
        *,
        module: str | None = None,
        fold: bool = False,
        saved: bool = True,
        max_nodes: int | None = None,
        expand: tuple[str, ...] = (),
    ) -> Graph:
        """Returns the graph at module level: ``self.graph.view(...)`` (see ``Graph.view``)."""
        return self.graph.view(
            depth, module=module, fold=fold, saved=saved, max_nodes=max_nodes, expand=expand
        )

    def to_dot(self) -> str:
        """Returns the graph as DOT text."""
        return self.graph.to_dot()

    def render(self, path: str | Path) -> RenderResult:
        """Writes the graph diagram to ``path`` (.svg/.png/.pdf/.dot, or .html: an interactive
        page); returns what was written."""
        return self.graph.render(path)

    def __rich__(self) -> Any:
        from .render.terminal import trace_report

        return trace_report(self.record)

    def __str__(self) -> str:
        """Returns the terminal report as plain text, 100 columns wide (``print(t)``)."""
        from .render.terminal import to_text, trace_report

        return to_text(trace_report(self.record))

    def _repr_svg_(self) -> str | None:
        return self.graph._repr_svg_()
