"""gradlens: see the autograd graph, the gradients that flow through it, and what breaks it.

Public API::

    gradlens.graph(*outputs, params=None) -> Graph
    gradlens.trace(*modules, **named_tensors) -> Trace     # a context manager
    gradlens.inspect(*tensors, **named_tensors) -> Inspection
    gradlens.save(obj, path) / gradlens.load(path)
"""

from ._api import Inspection, graph, inspect, load, trace
from ._errors import GradlensError, NoGraphError, SchemaError
from ._io import save
from ._trace import Trace
from .records import Diagnostic, Graph, GraphEdge, GraphNode, TensorStatus, TraceRecord

__version__ = "0.1.0"

__all__ = [
    "Diagnostic",
    "GradlensError",
    "Graph",
    "GraphEdge",
    "GraphNode",
    "Inspection",
    "NoGraphError",
    "SchemaError",
    "TensorStatus",
    "Trace",
    "TraceRecord",
    "__version__",
    "graph",
    "inspect",
    "load",
    "save",
    "trace",
]
