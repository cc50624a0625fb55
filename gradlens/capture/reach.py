"""Which autograd nodes a backward call will run.

``backward()`` runs every node reachable from its roots. ``torch.autograd.grad(outputs,
inputs)`` and ``backward(inputs=...)`` run only the nodes on a path from a root to one of the
inputs, and stop there: a node off those paths, or below an input, is never run, so what it
saved is never checked by PyTorch, and a write to it must not be reported.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any

import torch
from torch.autograd.graph import get_gradient_edge

from .summary import grad_fn_of

__all__ = ["executed_nodes"]


def executed_nodes(roots: Sequence[torch.Tensor], inputs: Sequence[Any]) -> set[int] | None:
    """Returns the ids of the nodes a backward from ``roots`` towards ``inputs`` will run, or
    None when it runs every node it can reach (no inputs given)."""
    targets: set[int] = set()
    for t in inputs:
        if isinstance(t, torch.Tensor) and t.requires_grad:
            try:
                targets.add(id(get_gradient_edge(t).node))
            except RuntimeError:
                continue
    if not targets:
        return None
    parents: dict[int, list[int]] = {}
    queue: deque[Any] = deque(fn for t in roots if (fn := grad_fn_of(t)) is not None)
    seen: set[int] = set()
    keep: list[Any] = []  # the nodes themselves, so no id is reused during the walk
    while queue:
        fn = queue.popleft()
        if id(fn) in seen:
            continue
        seen.add(id(fn))
        keep.append(fn)
        if id(fn) in targets:
            continue  # the engine stops here
        for child, _ in fn.next_functions:
            if child is not None:
                parents.setdefault(id(child), []).append(id(fn))
                queue.append(child)
    needed: set[int] = set()
    up: deque[int] = deque(t for t in targets if t in seen)
    while up:
        for parent in parents.get(up.popleft(), ()):
            if parent not in needed:
                needed.add(parent)
                up.append(parent)
    return needed
