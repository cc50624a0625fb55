"""Frozen records made fast: a trace makes thousands (nodes, edges, tensor references, events)
and a frozen dataclass's ``__init__`` sets each field with ``object.__setattr__``, which is most
of their cost. ``make_record`` and ``replaced`` give the instance its ``__dict__`` in one step
when that is all ``__init__`` would do, and fall back to the class itself otherwise."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

__all__ = ["make_record", "replaced"]


@functools.cache
def _defaults(cls: type) -> dict[str, Any] | None:
    """Returns every field of frozen dataclass ``cls`` with its default, or None when its
    ``__init__`` does more than set fields (a ``__post_init__``, a default factory); required
    fields map to ``_REQUIRED``."""
    if hasattr(cls, "__post_init__") or "__slots__" in vars(cls):
        return None
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if not f.init or f.default_factory is not dataclasses.MISSING:
            return None
        out[f.name] = _REQUIRED if f.default is dataclasses.MISSING else f.default
    return out


_REQUIRED = object()


def make_record(cls: Any, **fields: Any) -> Any:
    """Returns ``cls(**fields)``: thousands of nodes are made at once, and a frozen dataclass's
    ``__init__`` (one ``object.__setattr__`` per field) is most of their cost, so the instance
    gets its ``__dict__`` in one step when that is all ``__init__`` would do."""
    defaults = _defaults(cls)
    if defaults is None or not fields.keys() <= defaults.keys():
        return cls(**fields)
    if not _required(cls) <= fields.keys():
        return cls(**fields)  # raises the TypeError a missing argument gets
    obj = object.__new__(cls)
    obj.__dict__.update(defaults)
    obj.__dict__.update(fields)
    return obj


@functools.cache
def _required(cls: type) -> frozenset[str]:
    return frozenset(k for k, v in (_defaults(cls) or {}).items() if v is _REQUIRED)


def replaced(obj: Any, **changes: Any) -> Any:
    """Returns ``dataclasses.replace(obj, **changes)``, as ``make_record`` makes records."""
    cls: type = type(obj)
    defaults = _defaults(cls)
    if defaults is None or not changes.keys() <= defaults.keys():
        return dataclasses.replace(obj, **changes)
    new: Any = object.__new__(cls)
    new.__dict__.update(obj.__dict__)
    new.__dict__.update(changes)
    return new
