"""Frozen records made fast: a trace makes thousands (nodes, edges, tensor references, events)
and a frozen dataclass's ``__init__`` sets each field with ``object.__setattr__``, which is most
of their cost. ``make_record`` and ``replaced`` give the instance its ``__dict__`` in one step
when that is all ``__init__`` would do, and fall back to the class itself otherwise."""

from __future__ import annotations

import dataclasses
from typing import Any

__all__ = ["make_record", "record_from", "record_maker", "renamed", "replaced"]


def _find_defaults(cls: type) -> dict[str, Any] | None:
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
# cls -> (its defaults, its field names, its required field names), or None (use the class).
_SPECS: dict[type, tuple[dict[str, Any], Any, frozenset[str]] | None] = {}


def _spec(cls: type) -> tuple[dict[str, Any], Any, frozenset[str]] | None:
    try:
        return _SPECS[cls]
    except KeyError:
        pass
    defaults = _find_defaults(cls)
    spec = None
    if defaults is not None:
        required = frozenset(k for k, v in defaults.items() if v is _REQUIRED)
        spec = (defaults, defaults.keys(), required)
    _SPECS[cls] = spec
    return spec


def make_record(cls: Any, **fields: Any) -> Any:
    """Returns ``cls(**fields)``, made as ``record_from`` makes it."""
    return record_from(cls, fields)


def record_from(cls: Any, fields: dict[str, Any]) -> Any:
    """Returns ``cls(**fields)``: thousands of nodes are made at once, and a frozen dataclass's
    ``__init__`` (one ``object.__setattr__`` per field) is most of their cost, so the instance
    gets its ``__dict__`` in one step when that is all ``__init__`` would do (taking ``fields``
    as a dict: packing keyword arguments would cost as much again)."""
    spec = _SPECS.get(cls) or _spec(cls)
    if spec is None:
        return cls(**fields)
    defaults, _, required = spec
    merged = defaults | fields
    if len(merged) != len(defaults) or not required <= fields.keys():
        return cls(**fields)  # raises the TypeError a wrong or missing argument gets
    obj = _NEW(cls)
    _SET(obj, "__dict__", merged)
    return obj


_NEW = object.__new__
_SET = object.__setattr__  # a frozen dataclass refuses its own __setattr__


def replaced(obj: Any, **changes: Any) -> Any:
    """Returns ``dataclasses.replace(obj, **changes)``, as ``make_record`` makes records."""
    cls: type = type(obj)
    spec = _SPECS.get(cls) or _spec(cls)
    if spec is None or not changes.keys() <= spec[1]:
        return dataclasses.replace(obj, **changes)
    new: Any = object.__new__(cls)
    d = new.__dict__
    d.update(obj.__dict__)
    d.update(changes)
    return new


def record_maker(cls: Any) -> Any:
    """Returns a function of a dict of ``cls``'s fields (every required one, and only fields)
    that returns ``cls(**fields)``, as ``record_from`` makes it, checked once here rather than
    per record: for a loop that makes thousands of one class from fields it always names."""
    spec = _SPECS.get(cls) or _spec(cls)
    if spec is None:
        return lambda fields: cls(**fields)
    defaults = spec[0]
    new, set_ = _NEW, _SET

    def make(fields: dict[str, Any]) -> Any:
        obj = new(cls)
        set_(obj, "__dict__", defaults | fields)
        return obj

    return make


def renamed(obj: Any, name: str) -> Any:
    """Returns ``replaced(obj, name=name)`` (a trace names every tensor reference it made this
    way when it ends), in one step."""
    cls: type = type(obj)
    spec = _SPECS.get(cls) or _spec(cls)
    if spec is None or "name" not in spec[1]:
        return replaced(obj, name=name)
    new: Any = _NEW(cls)
    _SET(new, "__dict__", {**obj.__dict__, "name": name})
    return new
