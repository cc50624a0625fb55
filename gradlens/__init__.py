"""gradlens: see the autograd graph, the gradients that flow through it, and what breaks it.

Public API::

    gradlens.graph(*outputs, params=None) -> Graph
    gradlens.trace(*modules, **named_tensors) -> Trace     # a context manager
    gradlens.inspect(*tensors, **named_tensors) -> Inspection
    gradlens.watch(model, optimizer, *, every=1, live=None, sinks=()) -> Lens  # a context manager
    gradlens.guard(*, mode="warn", verify=False) -> Guard   # a context manager
    gradlens.explain(loss, params=None, *, trace=None) -> Explanation
    gradlens.save(obj, path) / gradlens.load(path)
"""

from . import sinks as sinks  # watch(sinks=[gradlens.sinks.TensorBoard(dir)])
from ._api import Inspection, graph, inspect, load, trace
from ._errors import GradlensError, NoGraphError, SchemaError
from ._explain import Explanation, explain
from ._guard import Guard, InplaceError, InplaceWarning, guard
from ._io import save
from ._lens import Lens, watch
from ._trace import Trace
from .records import (
    Diagnostic,
    Graph,
    GraphEdge,
    GraphNode,
    InplaceViolation,
    ParamStats,
    StepRecord,
    TensorStatus,
    TraceRecord,
    WatchRecord,
)

__version__ = "0.1.0"

__all__ = [
    "Diagnostic",
    "Explanation",
    "GradlensError",
    "Graph",
    "GraphEdge",
    "GraphNode",
    "Guard",
    "InplaceError",
    "InplaceViolation",
    "InplaceWarning",
    "Inspection",
    "Lens",
    "NoGraphError",
    "ParamStats",
    "SchemaError",
    "StepRecord",
    "TensorStatus",
    "Trace",
    "TraceRecord",
    "WatchRecord",
    "__version__",
    "explain",
    "graph",
    "guard",
    "inspect",
    "load",
    "save",
    "trace",
    "watch",
]
