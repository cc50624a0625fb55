"""The watcher's bookkeeping: what it knows of each parameter (``ParamState``), backward call
(``BackwardCall``) and optimizer (``OptState``), the mode that routes torch calls to it, and the
small pure helpers its steps use. ``watch.py`` holds the logic; this file holds its state.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import torch
from torch.optim import Optimizer
from torch.overrides import TorchFunctionMode

from ..records import ParamInfo
from . import gradstats
from .distributed import local
from .pending import Group, Part, Pending
from .quiet import quiet
from .source import is_internal
from .stash import Stash

__all__ = [
    "BackwardCall",
    "OptState",
    "ParamState",
    "RoutingMode",
    "group_name",
    "group_stats",
    "losses_of",
    "lr_value",
    "own_ops",
    "sum_losses",
    "user_line",
]


@dataclass(eq=False, slots=True)
class ParamState:
    """A watched parameter: its hook's counts and what the last reset and step of .grad were."""

    slot: int
    tensor: torch.Tensor
    info: ParamInfo
    hooked: bool = False
    late: bool = False  # hooked late: backward calls before the hook were not counted
    broken: bool = False
    epoch: int = 0  # bumped whenever .grad is found reset
    adds: int = 0  # gradients backward added to .grad
    grad_ref: weakref.ref[torch.Tensor] | None = None  # the .grad object last seen
    reset_at: int = 0  # the last backward call before .grad was last reset
    fresh: bool = True  # .grad was None when last seen: the next one continues this epoch
    stepped_epoch: int = -1  # the epoch in which some step last used .grad
    stale: tuple[int, tuple[str, int] | None] | None = None  # (epoch, backward line) on top
    frozen_noted: bool = False

    @property
    def name(self) -> str:
        return self.info.name


@dataclass(eq=False, slots=True)
class BackwardCall:
    """One ``backward()`` call: its loss (in the watcher's stash) and the parameters it
    reached."""

    index: int
    loss: Part
    touched: set[int] = field(default_factory=set)  # slots of the parameters it reached


@dataclass(eq=False, slots=True)
class OptState:
    """One optimizer (or the hand-written updates): its own steps, loss and ``seen`` state."""

    label: str
    optimizer: Optimizer | None  # None: hand-written steps
    late: bool = False  # adopted at its first step (after that step's backward ran)
    steps: int = 0
    recorded: int = 0
    seen: dict[int, tuple[int, int, bool]] = field(default_factory=dict)  # slot -> epoch, adds
    last_backward: int = 0
    members: list[ParamState] = field(default_factory=list)
    slots: set[int] = field(default_factory=set)
    key: tuple[tuple[int, int], ...] = ()
    open: Pending | None = None
    closure: bool = False
    written: set[int] = field(default_factory=set)  # hand-written: parameters written this step
    stale: list[ParamState] = field(default_factory=list)  # hand-written: found stale this step
    broken: bool = False


class RoutingMode(TorchFunctionMode):
    """Passes every call through; only the handled ones reach the watcher."""

    def __init__(self, handlers: dict[Any, Callable[..., Any]]) -> None:
        super().__init__()
        self._handlers = handlers

    def __torch_function__(self, func, types, args=(), kwargs=None):
        handler = self._handlers.get(func)
        if handler is None:
            return func(*args, **(kwargs or {}))
        return handler(func, args, kwargs or {})


def group_stats(
    group: list[ParamState],
    detail: bool,
    *,
    snapshot: bool,
    stash: Stash,
    scratch: gradstats.Scratch | None = None,
) -> Group:
    """Returns the statistics of ``group``'s gradients (one device), put in ``stash``
    (``scratch``: the work buffers of the detail counts, kept from one step to the next)."""
    # A DTensor (FSDP2) is measured by its local shard: capture/distributed combines the ranks.
    grads = [local(p.tensor.grad) for p in group if p.tensor.grad is not None]
    weights = [local(p.tensor) for p in group]
    pairs = zip(group, weights, strict=True)
    numels = [w.numel() if w is not p.tensor else p.info.numel for p, w in pairs]
    out = Group([p.name for p in group], numels, stash.put(gradstats.light_stats(grads)))
    if detail:
        out.detail = stash.put(gradstats.detail_stats(grads, weights, scratch))
        if snapshot:
            out.snapshot = (
                scratch.copies(weights) if scratch is not None else gradstats.clone_weights(weights)
            )
    return out


def own_ops() -> Any:
    """Returns a context in which gradlens's own tensor ops skip every torch-function mode
    (its own and the user's) and every active dispatch mode (a user's op logger, a FLOP
    counter): they are bookkeeping, not the user's computation."""
    return quiet()


def sum_losses(losses: list[torch.Tensor]) -> torch.Tensor | None:
    if not losses:
        return None
    return losses[0] if len(losses) == 1 else torch.stack(losses).sum()


def losses_of(backs: list[BackwardCall]) -> tuple[Part, ...]:
    """Returns the losses of ``backs`` (summed on the host, by ``pending``)."""
    return tuple(b.loss for b in backs if b.loss is not None)


def lr_value(lr: Any) -> torch.Tensor | float | None:
    if isinstance(lr, torch.Tensor):
        return lr.detach().reshape(())
    if isinstance(lr, (int, float)) and not isinstance(lr, bool):
        return float(lr)
    return None


def group_name(t: torch.Tensor, opt: Optimizer | None) -> str:
    if opt is not None:
        for g, group in enumerate(opt.param_groups):
            for i, x in enumerate(group["params"]):
                if x is t:
                    return f"param_groups[{g}][{i}]"
    return f"tensor{tuple(t.shape)}"


def user_line(frame: FrameType | None) -> tuple[str, int] | None:
    """Returns the file and line of the first user frame at or above ``frame``."""
    while frame is not None:
        if not is_internal(frame.f_code.co_filename):
            return frame.f_code.co_filename, frame.f_lineno
        frame = frame.f_back
    return None
