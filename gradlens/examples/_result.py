"""What a worked example hands back to the CLI and the tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .._trace import Trace
from ..records import Graph

__all__ = ["ExampleResult"]


@dataclass
class ExampleResult:
    """A worked example's trace, its own explanations, and the numbers it demonstrates."""

    name: str
    title: str
    trace: Trace
    sections: list[tuple[str, Any]] = field(default_factory=list)  # (heading, text/renderable)
    values: dict[str, Any] = field(default_factory=dict)  # the numbers the example shows
    graph: Graph | None = None  # the diagram to draw; the trace's graph when None

    @property
    def diagram(self) -> Graph:
        """Returns the graph this example draws."""
        return self.graph if self.graph is not None else self.trace.graph
