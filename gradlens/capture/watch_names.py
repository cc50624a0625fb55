"""Stable, distinct names for the parameters a watcher adopts without being told their names.

A parameter is named by its module path under the *root* model that holds it: a module seen in
forward that no other module seen in forward contains. A root is named by its class; when two
roots share a class, they are numbered in the order of their first forward call
(``Discriminator.main.0.weight``, ``Discriminator#2.main.0.weight``), never by ``id()``, so the
same program gets the same names on every run. A tensor that no module holds (a hand-made
``w = torch.randn(..., requires_grad=True)``) is named after the user's variable that holds it.
"""

from __future__ import annotations

import weakref
from types import FrameType

import torch

from .source import frame_locals

__all__ = ["ModuleOrder", "variable_name"]


class ModuleOrder:
    """The modules seen in forward, in the order of their first call, and the names they give."""

    def __init__(self) -> None:
        self._seen: dict[int, weakref.ref[torch.nn.Module]] = {}
        self._labels: dict[int, tuple[weakref.ref[torch.nn.Module], str]] = {}  # fixed once given
        self._class_counts: dict[str, int] = {}

    def saw(self, module: torch.nn.Module) -> None:
        """Notes a forward call (the global forward pre-hook calls this; it must stay cheap)."""
        key = id(module)
        ref = self._seen.get(key)
        if ref is None or ref() is not module:
            self._seen[key] = weakref.ref(module)

    def clear(self) -> None:
        self._seen.clear()
        self._labels.clear()

    def names(self, wanted: set[int]) -> dict[int, str]:
        """Returns names for the tensors whose ids are in ``wanted`` that a seen module holds."""
        modules = [m for m in (r() for r in self._seen.values()) if m is not None]
        inner: set[int] = set()
        for m in modules:
            for child in m.modules():
                if child is not m:
                    inner.add(id(child))
        out: dict[int, str] = {}
        for m in modules:  # roots, in first-forward order
            if id(m) in inner:
                continue
            label: str | None = None
            for pname, t in m.named_parameters():
                if id(t) in wanted and id(t) not in out:
                    label = label or self._label(m)
                    out[id(t)] = f"{label}.{pname}"
        return out

    def _label(self, module: torch.nn.Module) -> str:
        known = self._labels.get(id(module))
        if known is not None and known[0]() is module:
            return known[1]
        cls = type(module).__name__
        n = self._class_counts.get(cls, 0) + 1
        self._class_counts[cls] = n
        label = cls if n == 1 else f"{cls}#{n}"
        self._labels[id(module)] = (weakref.ref(module), label)
        return label


def variable_name(t: torch.Tensor, frame: FrameType | None) -> str | None:
    """Returns the name of a variable in ``frame`` (its locals, then its globals) bound to
    ``t``, or None. Only called when a tensor is adopted, never per step."""
    if frame is None:
        return None
    for space in (frame_locals(frame), frame.f_globals):
        for name, value in space.items():
            if value is t and not name.startswith("_"):
                return name
    return None
