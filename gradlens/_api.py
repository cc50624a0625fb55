"""The public functions: thin compositions of capture, records, analysis and render."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import torch

from ._io import load as _load_record
from ._lens import Lens
from ._trace import Trace
from .capture import build_graph, inspect_tensors
from .records import Graph, TensorStatus, TraceRecord, WatchRecord

__all__ = ["Inspection", "graph", "inspect", "load", "trace"]


def graph(*outputs: torch.Tensor, params: Any = None) -> Graph:
    """Returns the autograd graph behind ``outputs``, read from ``grad_fn`` / ``next_functions``.

    One node per autograd Node (``MulBackward0``), one per leaf reached through
    ``AccumulateGrad``, the tensors each node saved for backward, and the edges between them.
    ``params`` names the leaves: an ``nn.Module`` or a dict of name -> tensor. Raises
    ``NoGraphError`` for an output without ``grad_fn``, saying why it has none.

    >>> w = torch.tensor([1.0], requires_grad=True)
    >>> g = graph(w * w, params={"w": w})
    >>> [n.name for n in g.nodes]  # the output, the op, the two tensors it saved, the leaf
    ['output', 'MulBackward0', 'other', 'self', 'w']
    """
    return build_graph(*outputs, params=params)


def trace(*modules: Any, **named_tensors: torch.Tensor) -> Trace:
    """Returns a context manager recording ops, backward passes and gradients in its body.

    ``modules`` are ``nn.Module``s (parameters named, forward calls grouped) or dicts of
    name -> tensor; keywords name tensors (``trace(model, x=inputs)``). Other tensors are named
    after the variables that hold them.
    """
    return Trace(*modules, **named_tensors)


class Inspection:
    """Status records of tensors, by name; prints as a table in rich and in plain text."""

    def __init__(self, statuses: dict[str, TensorStatus]) -> None:
        self.statuses = statuses

    def __getitem__(self, name: str) -> TensorStatus:
        return self.statuses[name]

    def __iter__(self) -> Iterator[TensorStatus]:
        return iter(self.statuses.values())

    def __len__(self) -> int:
        return len(self.statuses)

    def __rich__(self) -> Any:
        from .render.terminal import status_table

        return status_table(self.statuses)

    def __str__(self) -> str:
        from .render.terminal import status_table, to_text

        return to_text(status_table(self.statuses))


def inspect(*tensors: torch.Tensor, **named_tensors: torch.Tensor) -> Inspection:
    """Returns the autograd status of each tensor (leaf, requires_grad, grad_fn, grad, version).

    Positional tensors are named after the caller's variables; keywords name them explicitly.
    """
    return Inspection(inspect_tensors(*tensors, **named_tensors))


def load(path: str | os.PathLike[str]) -> Graph | Trace | Lens:
    """Returns the Graph, Trace or Lens saved at ``path`` by ``gradlens.save`` (see SCHEMA.md).

    A loaded Trace has ``graph``, ``tensors``, ``events`` and ``diagnostics`` like a live one;
    a loaded Lens has ``steps``, ``diagnostics``, ``report()`` and ``plot()``.
    """
    record = _load_record(path)
    if isinstance(record, TraceRecord):
        return Trace.from_record(record)
    if isinstance(record, WatchRecord):
        return Lens.from_record(record)
    return record
