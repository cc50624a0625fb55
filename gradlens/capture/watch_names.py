"""Stable, distinct names for the parameters a watcher adopts without being told their names.

A parameter is named by its module path under the user's variable that holds the model
(``netD.main.0.weight``), found in the user's frames when the watcher adopts the parameter (at
an optimizer's first step, or a hand-written update's first write): the frame that called
``step()`` first, then its callers; in each, the local variables, then the modules held by
``self``, then the globals. A parameter several variables reach is named under the one holding
the most parameters (the whole model, not one of its layers). A tensor no module holds is named
after its own variable (``w``). The names depend only on the program's variable names, never on
``id()`` or on the order of hooks, so the same program gets the same names on every run.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import FrameType
from typing import Any

import torch

from .source import frame_locals, is_internal

__all__ = ["names_in_frames", "user_frames"]

_COMPILED = "_orig_mod."  # torch.compile's wrapper puts the model under this attribute
_MAX_FRAMES = 32


def user_frames(frame: FrameType | None) -> list[FrameType]:
    """Returns the user's frames from ``frame`` outwards (torch's and gradlens's skipped)."""
    out: list[FrameType] = []
    while frame is not None and len(out) < _MAX_FRAMES:
        if not is_internal(frame.f_code.co_filename):
            out.append(frame)
        frame = frame.f_back
    return out


def names_in_frames(wanted: dict[int, torch.Tensor], frames: list[FrameType]) -> dict[int, str]:
    """Returns names for the tensors in ``wanted`` (by id) that the frames' variables reach."""
    best: dict[int, tuple[int, str]] = {}  # id -> (parameters in the holding model, name)
    tensors: dict[int, str] = {}
    for var, value in _variables(frames):
        if isinstance(value, torch.nn.Module):
            named = list(value.named_parameters())
            for pname, t in named:
                if id(t) in wanted and t is wanted[id(t)]:
                    held = best.get(id(t))
                    if held is None or len(named) > held[0]:
                        best[id(t)] = (len(named), f"{var}.{pname.replace(_COMPILED, '')}")
        elif isinstance(value, torch.Tensor) and value is wanted.get(id(value)):
            tensors.setdefault(id(value), var)
    out = {k: name for k, (_, name) in best.items()}
    for k, name in tensors.items():
        out.setdefault(k, name)
    return out


def _variables(frames: list[FrameType]) -> Iterator[tuple[str, Any]]:
    """Yields (name, value) of the frames' variables: locals, ``self``'s modules, globals."""
    seen_globals: set[int] = set()
    for frame in frames:
        local = frame_locals(frame)
        for name, value in local.items():
            if not name.startswith("__"):
                yield name, value
        owner = local.get("self")
        if owner is not None and not isinstance(owner, torch.nn.Module):
            for name, value in getattr(owner, "__dict__", {}).items():
                if isinstance(value, torch.nn.Module):
                    yield name, value
        if id(frame.f_globals) not in seen_globals:
            seen_globals.add(id(frame.f_globals))
            for name, value in list(frame.f_globals.items()):
                if not name.startswith("__"):
                    yield name, value
