"""Everything one ``gradlens.trace`` recorded, as a plain record."""

from __future__ import annotations

from dataclasses import dataclass, field

from .diagnostics import Diagnostic
from .events import Event
from .graph import Graph
from .inplace import InplaceViolation
from .tensors import TensorStatus

__all__ = ["TraceRecord"]


@dataclass(frozen=True)
class TraceRecord:
    """The graph, tensor statuses (by name, in first-seen order), events, diagnostics, and the
    in-place writes that touched tensors saved for backward."""

    graph: Graph
    tensors: dict[str, TensorStatus] = field(default_factory=dict, hash=False)
    events: tuple[Event, ...] = ()
    diagnostics: tuple[Diagnostic, ...] = ()
    violations: tuple[InplaceViolation, ...] = ()
    #: What the trace could not record or check, said once each (compiled regions, tensor kinds).
    notes: tuple[str, ...] = ()
