"""Whether a backward's root is a loss scaled by AMP's ``GradScaler``.

``scaler.scale(loss)`` is ``loss * scaler._scale``. At the start of mixed-precision training the
scale (2**16 by default) is deliberately too large: the float16 gradients overflow, and
``scaler.step`` skips that optimizer step and halves the scale until they fit. Infinite
gradients from such a backward are the scaler at work, not a bug, and a trace says so.

The scaler is found the way a reader of the code would: among the variables of the frame that
called ``backward()`` (its locals, its globals, and their attributes one level down, as
``self.scaler``). The root must be the product of exactly that scaler's scale tensor (the
multiplication's saved ``other``, read without unpacking it). Anything else is not taken as
scaled, so nothing is ever excused by a guess.
"""

from __future__ import annotations

from types import FrameType, ModuleType
from typing import Any

import torch

from .saved import raw_saved
from .source import frame_locals

__all__ = ["scaled_by_grad_scaler"]


def scaled_by_grad_scaler(root: torch.Tensor, frame: FrameType | None) -> bool:
    """Returns whether ``root`` is ``scaler.scale(loss)`` for a ``torch.amp.GradScaler``
    reachable from ``frame``'s variables."""
    fn = root.grad_fn
    if fn is None or type(fn).__name__ != "MulBackward0":
        return False
    factor = None
    for role, saved in raw_saved(fn):
        if role == "other" and saved.unpack_hook is None:
            factor = saved.data
    if not isinstance(factor, torch.Tensor) or factor.numel() != 1:
        return False
    return any(s._scale is factor for s in _scalers(frame))


def _scalers(frame: FrameType | None) -> list[Any]:
    """Returns the enabled GradScalers among ``frame``'s locals and globals and their
    attributes (one level down)."""
    if frame is None:
        return []
    kind = torch.amp.GradScaler
    found: list[Any] = []
    seen: set[int] = set()
    for scope in (frame_locals(frame), frame.f_globals):
        for value in list(scope.values()):
            candidates = [value]
            if not isinstance(value, (type, ModuleType)):  # an object's own attributes only
                try:  # (not getattr: a class's __getattr__ would run the user's code)
                    attrs = object.__getattribute__(value, "__dict__")
                except (AttributeError, TypeError):
                    attrs = None
                if isinstance(attrs, dict):
                    candidates += list(attrs.values())
            for c in candidates:
                if isinstance(c, kind) and id(c) not in seen and c.is_enabled():
                    seen.add(id(c))
                    found.append(c)
    return found
