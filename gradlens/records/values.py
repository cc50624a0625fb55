"""A tensor's value as plain numbers, detached from torch."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

__all__ = ["SMALL_NUMEL", "ValueSummary", "format_shape"]

#: Tensors with at most this many elements keep their exact values; larger ones keep statistics.
SMALL_NUMEL = 16


def format_shape(shape: Any) -> str:
    """Returns a shape as ``[2, 3]`` (``[]`` for a scalar), or ``""`` when it is unknown."""
    if shape is None:
        return ""
    return "[" + ", ".join(str(int(d)) for d in shape) + "]"


@dataclass(frozen=True)
class ValueSummary:
    """The value of a tensor: exact nested lists when it is small, statistics when it is large.

    ``norm``, ``min`` and ``max`` ignore NaN/Inf entries; ``nan`` and ``inf`` count them, so a
    single NaN is never lost in a summary.
    """

    shape: tuple[int, ...]
    dtype: str
    values: Any | None = None
    norm: float | None = None
    min: float | None = None
    max: float | None = None
    nan: int = 0
    inf: int = 0

    @property
    def numel(self) -> int:
        """Returns the number of elements."""
        return math.prod(self.shape)

    @property
    def nonfinite(self) -> tuple[int, int]:
        """Returns how many elements are NaN and how many are infinite."""
        if self.values is None:
            return self.nan, self.inf
        flat = list(_flatten(self.values))
        nans = sum(1 for v in flat if isinstance(v, float) and math.isnan(v))
        infs = sum(1 for v in flat if isinstance(v, float) and math.isinf(v))
        return nans, infs

    @property
    def is_exact(self) -> bool:
        """Returns True when ``values`` holds every element."""
        return self.values is not None

    def short(self) -> str:
        """Returns a one-line text: the values of a small tensor, or its shape and norm."""
        if self.values is not None:
            return _format_values(self.values)
        shape = "×".join(str(d) for d in self.shape) or "scalar"
        text = f"[{shape}] norm={_num(self.norm)}"
        if self.nan or self.inf:
            text += f" nan={self.nan} inf={self.inf}"
        return text


def _flatten(values: Any) -> Any:
    if isinstance(values, list):
        for v in values:
            yield from _flatten(v)
    else:
        yield values


def _num(x: float | None) -> str:
    if x is None:
        return "?"
    if math.isnan(x) or math.isinf(x):
        return str(x)
    return f"{x:.4g}"


def _format_values(values: Any) -> str:
    if isinstance(values, list):
        return "[" + ", ".join(_format_values(v) for v in values) + "]"
    if isinstance(values, bool):
        return str(values)
    if isinstance(values, float):
        if values.is_integer() and abs(values) < 1e15:
            return f"{values:.0f}."
        return _num(values)
    return str(values)
