"""Records: plain frozen dataclasses of names, shapes and numbers. They never hold a tensor.

Everything downstream (analysis, render, JSON) works on these, live or loaded from a file.
"""

from .diagnostics import Diagnostic, Severity
from .events import BackwardEvent, ErrorEvent, Event, GradEvent, OpEvent
from .graph import EdgeKind, Graph, GraphEdge, GraphNode, NodeKind
from .inplace import InplaceViolation, ViolationKind
from .modules import ModuleInfo
from .steps import (
    FactKind,
    ModuleCall,
    ParamInfo,
    ParamStats,
    StepRecord,
    WatchFact,
    WatchRecord,
)
from .tensors import TensorRef, TensorStatus
from .trace import TraceRecord
from .values import SMALL_NUMEL, ValueSummary, format_shape
from .why import CUT_KINDS, STATUSES, CutPoint, GradFlow, ParamWhy, WhyRecord

__all__ = [
    "CUT_KINDS",
    "SMALL_NUMEL",
    "STATUSES",
    "BackwardEvent",
    "CutPoint",
    "Diagnostic",
    "EdgeKind",
    "ErrorEvent",
    "Event",
    "FactKind",
    "GradEvent",
    "GradFlow",
    "Graph",
    "GraphEdge",
    "GraphNode",
    "InplaceViolation",
    "ModuleCall",
    "ModuleInfo",
    "NodeKind",
    "OpEvent",
    "ParamInfo",
    "ParamStats",
    "ParamWhy",
    "Severity",
    "StepRecord",
    "TensorRef",
    "TensorStatus",
    "TraceRecord",
    "ValueSummary",
    "ViolationKind",
    "WatchFact",
    "WatchRecord",
    "WhyRecord",
    "format_shape",
]
