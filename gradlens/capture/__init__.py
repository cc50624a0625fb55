"""Capture: the only layer that touches torch internals (hooks, modes, the grad_fn walk).

It turns live tensors and autograd Nodes into records and never keeps a tensor alive.
"""

from .graph import build_graph, no_grad_fn_reason
from .inspect import inspect_tensors
from .recorder import Recorder
from .summary import summarize, tensor_status

__all__ = [
    "Recorder",
    "build_graph",
    "inspect_tensors",
    "no_grad_fn_reason",
    "summarize",
    "tensor_status",
]
