"""Why a parameter gets (or does not get) a gradient from a loss: plain records."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from .diagnostics import Diagnostic
from .graph import Graph

__all__ = ["CUT_KINDS", "STATUSES", "CutPoint", "GradFlow", "ParamWhy", "WhyRecord"]

#: Every status a parameter can have relative to a loss.
STATUSES = ("reachable", "cut", "unused", "dead", "not-leaf", "unreachable")
#: Every way a value can lose its autograd history.
CUT_KINDS = (
    "detach",
    "data",
    "host",
    "no_grad",
    "inference_mode",
    "requires_grad_",
    "non-differentiable",
    "rewrap",
)

Status = Literal["reachable", "cut", "unused", "dead", "not-leaf", "unreachable"]


@dataclass(frozen=True)
class CutPoint:
    """A recorded op whose inputs carried autograd history that its result no longer has.

    ``params`` names the leaves (requiring grad) whose values reached the op with history;
    ``reached_loss`` is True when the op's (history-less) result flowed on into the loss.
    """

    index: int  # the OpEvent's index in the trace
    op: str  # "detach", "data", "item", "argmax", ...
    kind: str  # one of CUT_KINDS
    source: str | None
    params: tuple[str, ...]
    input: str  # the tensor whose history was dropped
    output: str | None = None  # the history-less result (None for a host read)
    reached_loss: bool = False


@dataclass(frozen=True)
class GradFlow:
    """What one autograd node of the loss's graph received and passed on in a gradient pass.

    ``incoming``: the gradient arriving was not all zeros; ``outgoing``: per next node id,
    whether the gradient sent to it was not all zeros (empty when unknown).
    """

    incoming: bool
    outgoing: dict[str, bool] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class ParamWhy:
    """One parameter's status relative to a loss, explained.

    ``path``: autograd node names from the loss to the parameter (``"AccumulateGrad"`` last)
    for "reachable" and "dead"; ``kind``: the cut kind (one of ``CUT_KINDS``) for "cut", the
    node name that zeroed the gradient for "dead"; ``source``: the user's ``"file.py:line"``
    of the cutting op or of the forward op of the dead node; ``node``: that node's id in
    the explanation's graph. A parameter that does not require grad (frozen) and that no
    traced op cut is "unreachable" with ``frozen=True`` and gets no Diagnostic.
    """

    name: str
    status: Status
    reason: str
    kind: str | None = None
    source: str | None = None
    path: tuple[str, ...] = ()
    node: str | None = None
    frozen: bool = False  # does not require grad: listed, never flagged by a Diagnostic
    aliases: tuple[str, ...] = ()  # the same tensor's other names (tied weights), same answer


@dataclass(frozen=True)
class WhyRecord:
    """The answer of ``gradlens.explain``: every parameter's status, the cuts seen, the graph
    (the trace's when there was one) with cut edges and dead nodes marked."""

    loss: str
    params: dict[str, ParamWhy] = field(default_factory=dict, hash=False)
    cuts: tuple[CutPoint, ...] = ()
    graph: Graph | None = None
    diagnostics: tuple[Diagnostic, ...] = ()
    traced: bool = False  # a trace recorded the forward: cuts can be told from unused
    dead_known: bool = True  # a gradient pass (or the trace's gradients) told dead-ness
