"""What a worked example hands back to the CLI and the tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .._lens import Lens
from .._trace import Trace
from ..records import Graph

__all__ = ["ExampleResult"]


@dataclass
class ExampleResult:
    """A worked example's trace or watched training run, its explanations, and its numbers.

    Autograd examples fill ``trace``; training examples fill ``lens`` (and may also trace one
    step). ``figures`` are extra matplotlib figures (e.g. "boundary"), written by
    ``gradlens run NAME --plot out.png`` next to the training plot as ``out-boundary.png``.
    """

    name: str
    title: str
    trace: Trace | None = None
    sections: list[tuple[str, Any]] = field(default_factory=list)  # (heading, text/renderable)
    values: dict[str, Any] = field(default_factory=dict)  # the numbers the example shows
    graph: Graph | None = None  # the diagram to draw; the trace's graph when None
    lens: Lens | None = None
    figures: dict[str, Any] = field(default_factory=dict)  # name -> matplotlib Figure

    @property
    def diagram(self) -> Graph | None:
        """Returns the graph this example draws (None for a training run without a trace)."""
        if self.graph is not None:
            return self.graph
        return self.trace.graph if self.trace is not None else None
