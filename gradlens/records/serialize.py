"""Records to JSON and back: the file format that SCHEMA.md describes.

Writing walks the dataclasses. Reading is a small validator driven by the same dataclasses' type
hints, so a new record field needs no code here, and every bad value is reported with its JSON
path (``data.nodes[3].kind: expected one of 'leaf', ... got 'bogus'``). JSON has no NaN or
infinity, so non-finite floats are written as the strings "nan", "inf" and "-inf".
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from enum import Enum
from functools import cache
from typing import Any, Literal, Union, get_args, get_origin

from .._errors import GradlensError, SchemaError
from .graph import Graph
from .steps import WatchRecord
from .trace import TraceRecord

__all__ = ["FORMAT", "SCHEMA_VERSION", "dumps", "from_json_dict", "loads", "to_json_dict"]

#: The value of the envelope's "format" key.
FORMAT = "gradlens"
#: The schema this gradlens writes, and the newest one it reads. Bumped on incompatible changes.
SCHEMA_VERSION = 1

_TYPES: dict[str, type] = {"graph": Graph, "trace": TraceRecord, "watch": WatchRecord}
_Record = Graph | TraceRecord | WatchRecord
# Decoded to the ``math`` constants, so values built from them compare equal after a round trip
# (NaN != NaN, but lists compare items by identity first).
_NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
_VALUES_TEXT = 'a number, true, false, "nan", "inf", "-inf", or a list of them'


# ---- writing -----------------------------------------------------------------------------------


def to_json_dict(obj: _Record) -> dict[str, Any]:
    """Returns ``obj`` as a JSON-ready dict: ``{"format", "schema", "type", "data"}``."""
    for type_name, cls in _TYPES.items():
        if isinstance(obj, cls):
            return {
                "format": FORMAT,
                "schema": SCHEMA_VERSION,
                "type": type_name,
                "data": _encode(obj, "data"),
            }
    raise GradlensError(
        f"only a Graph, TraceRecord or WatchRecord can be written as JSON, got {type(obj).__name__}"
    )


def dumps(obj: _Record, *, indent: int | None = 1) -> str:
    """Returns ``obj`` as strict JSON text (no NaN or Infinity literals)."""
    return json.dumps(to_json_dict(obj), indent=indent, ensure_ascii=False, allow_nan=False)


def _encode(value: Any, path: str) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {}
        for field in _fields(type(value)):
            item, item_path = getattr(value, field.name), f"{path}.{field.name}"
            if field.omit_default and item == field.default:
                continue
            out[field.name] = (
                _encode_values(item, item_path) if field.holds_values else _encode(item, item_path)
            )
        return out
    if isinstance(value, Enum):  # before str: the record enums are str enums
        return value.value
    if isinstance(value, (tuple, list)):
        return [_encode(item, f"{path}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise GradlensError(f"{path}: keys must be strings, got {key!r}")
        return {key: _encode(item, _key_path(path, key)) for key, item in value.items()}
    if isinstance(value, float):
        return _encode_float(value)
    if value is None or isinstance(value, (str, int)):  # bool is an int
        return value
    raise GradlensError(f"{path}: cannot write a {type(value).__name__} as JSON")


def _encode_values(value: Any, path: str) -> Any:
    """Encodes a ValueSummary's ``values``: None, a number, or nested lists of numbers."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return [_encode_values_item(item, f"{path}[{i}]") for i, item in enumerate(value)]
    return _encode_values_item(value, path)


def _encode_values_item(value: Any, path: str) -> Any:
    if isinstance(value, (list, tuple)):
        return [_encode_values_item(item, f"{path}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, float):
        return _encode_float(value)
    if isinstance(value, int):  # bool too
        return value
    raise GradlensError(
        f"{path}: tensor values must be {_VALUES_TEXT}; got a {type(value).__name__}"
    )


def _encode_float(x: float) -> float | str:
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return float(x)


# ---- reading -----------------------------------------------------------------------------------


def loads(text: str | bytes) -> _Record:
    """Returns the record in JSON ``text``; SchemaError says what is wrong."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise SchemaError(
            f"not a gradlens file: not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}"
        ) from e
    return from_json_dict(data)


def from_json_dict(d: Any) -> _Record:
    """Returns the record in a dict made by :func:`to_json_dict` (or ``json.load``), validated.

    Unknown keys are ignored; fields with a default may be left out. Raises SchemaError naming
    the JSON path of the first bad value.
    """
    if not isinstance(d, dict):
        raise SchemaError(
            f'not a gradlens file: expected a JSON object with "format": "gradlens", got {_show(d)}'
        )
    if "format" not in d:
        raise SchemaError('not a gradlens file: it has no "format" key (expected "gradlens")')
    if d["format"] != FORMAT:
        raise SchemaError(
            f"not a gradlens file: format is {_show(d['format'])}, expected 'gradlens'"
        )
    _check_schema(d)
    type_name = d.get("type")
    if not (isinstance(type_name, str) and type_name in _TYPES):
        choices = ", ".join(repr(name) for name in _TYPES)
        got = "missing" if "type" not in d else f"got {_show(type_name)}"
        raise SchemaError(f"type: expected one of {choices}, {got}")
    if "data" not in d:
        raise SchemaError("data: missing (expected an object)")
    record: _Record = _decode(d["data"], _TYPES[type_name], "data")
    return record


def _check_schema(d: dict[str, Any]) -> None:
    if "schema" not in d:
        raise SchemaError("schema: missing (expected the integer schema version)")
    version = d["schema"]
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise SchemaError(f"schema: expected a positive integer, got {_show(version)}")
    if version > SCHEMA_VERSION:
        raise SchemaError(
            f"this file has gradlens schema version {version}, but this gradlens reads schema "
            f"version {SCHEMA_VERSION} and older; upgrade gradlens (pip install --upgrade "
            "gradlens) to load it"
        )


def _decode(value: Any, tp: Any, path: str, or_null: bool = False) -> Any:
    """Returns ``value`` (parsed JSON) as an instance of type hint ``tp``, or raises SchemaError.

    ``or_null`` only changes the message: the field also accepts null.
    """
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        return _decode_union(value, get_args(tp), path)
    if tp is Any:  # the one Any is ValueSummary.values
        return _decode_values(value, path)
    if origin is tuple:
        item_type, ellipsis = get_args(tp)
        assert ellipsis is Ellipsis, f"only tuple[X, ...] is supported, not {tp}"
        items = _expect(value, list, tp, path, or_null)
        return tuple(_decode(item, item_type, f"{path}[{i}]") for i, item in enumerate(items))
    if origin is dict:
        _, item_type = get_args(tp)
        obj = _expect(value, dict, tp, path, or_null)
        return {key: _decode(item, item_type, _key_path(path, key)) for key, item in obj.items()}
    if origin is Literal or (isinstance(tp, type) and issubclass(tp, Enum)):
        choices = get_args(tp) if origin is Literal else [member.value for member in tp]
        if isinstance(value, str) and value in choices:
            return value if origin is Literal else tp(value)
        raise _mismatch(value, tp, path, or_null)
    if dataclasses.is_dataclass(tp):
        return _decode_dataclass(value, tp, path, or_null)
    if tp is float:
        return _decode_float(value, path, or_null)
    if tp in (str, int, bool):
        # JSON true/false arrive as bool, a subclass of int: never accept one for the other.
        if isinstance(value, tp) and (tp is bool) == isinstance(value, bool):
            return value
        raise _mismatch(value, tp, path, or_null)
    raise TypeError(f"{path}: gradlens cannot read a field of type {tp!r}")  # a gradlens bug


def _decode_union(value: Any, args: tuple[Any, ...], path: str) -> Any:
    options = [a for a in args if a is not type(None)]
    nullable = len(options) < len(args)
    if value is None and nullable:
        return None
    if len(options) == 1:
        return _decode(value, options[0], path, or_null=nullable)
    # A union of records (the events): the "kind" field says which one.
    by_kind = _records_by_kind(tuple(options))
    obj = _expect(value, dict, Union[tuple(options)], path, nullable)
    kind = obj.get("kind")
    if not (isinstance(kind, str) and kind in by_kind):
        choices = ", ".join(repr(k) for k in by_kind)
        got = "missing" if "kind" not in obj else f"got {_show(kind)}"
        raise SchemaError(f"{path}.kind: expected one of {choices}, {got}")
    return _decode_dataclass(obj, by_kind[kind], path)


def _decode_dataclass(value: Any, cls: Any, path: str, or_null: bool = False) -> Any:
    obj = _expect(value, dict, cls, path, or_null)
    kwargs = {}
    for field in _fields(cls):
        field_path = f"{path}.{field.name}"
        if field.name in obj:
            kwargs[field.name] = _decode(obj[field.name], field.type, field_path)
        elif field.required:
            raise SchemaError(f"{field_path}: missing (expected {_describe(field.type)})")
    record = cls(**kwargs)
    if isinstance(record, Graph):
        _check_graph(record, path)
    return record


def _check_graph(graph: Graph, path: str) -> None:
    """Node ids must be unique, and every edge must join two of them."""
    ids: set[str] = set()
    for i, node in enumerate(graph.nodes):
        if node.id in ids:
            raise SchemaError(f"{path}.nodes[{i}].id: duplicate node id {node.id!r}")
        ids.add(node.id)
    for i, edge in enumerate(graph.edges):
        for end in ("src", "dst"):
            node_id = getattr(edge, end)
            if node_id not in ids:
                raise SchemaError(f"{path}.edges[{i}].{end}: no node has id {node_id!r}")


def _decode_float(value: Any, path: str, or_null: bool) -> float:
    if isinstance(value, str) and value in _NON_FINITE:
        return _NON_FINITE[value]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:  # an integer too large for a float
            pass
    raise _mismatch(value, float, path, or_null)


def _decode_values(value: Any, path: str) -> Any:
    """Decodes a ValueSummary's ``values``: a number or bool, or nested lists of them."""
    if isinstance(value, list):
        return [_decode_values(item, f"{path}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, str) and value in _NON_FINITE:
        return _NON_FINITE[value]
    if isinstance(value, (int, float)):  # bool too
        return value
    raise SchemaError(f"{path}: expected {_VALUES_TEXT}, got {_show(value)}")


# ---- helpers -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Field:
    name: str
    type: Any  # the resolved type hint
    required: bool  # no default: a file must have it
    omit_default: bool = False  # left out of the JSON while it holds its default
    default: Any = None

    @property
    def holds_values(self) -> bool:
        return self.type is Any or Any in get_args(self.type)


@cache
def _fields(cls: Any) -> tuple[_Field, ...]:
    """Returns the fields a record's constructor takes, with resolved type hints."""
    hints = typing.get_type_hints(cls)
    return tuple(
        _Field(
            f.name,
            hints[f.name],
            f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
            bool(f.metadata.get("omit_default")),
            f.default,
        )
        for f in dataclasses.fields(cls)
        if f.init
    )


@cache
def _records_by_kind(classes: tuple[Any, ...]) -> dict[str, Any]:
    """Returns {kind: class} for records that have a ``kind: Literal[...]`` field."""
    by_kind: dict[str, Any] = {}
    for cls in classes:
        kind_type = typing.get_type_hints(cls)["kind"]
        assert get_origin(kind_type) is Literal, f"{cls.__name__}.kind must be a Literal"
        by_kind.update((kind, cls) for kind in get_args(kind_type))
    return by_kind


def _expect(value: Any, json_type: type, tp: Any, path: str, or_null: bool) -> Any:
    if not isinstance(value, json_type):
        raise _mismatch(value, tp, path, or_null)
    return value


def _mismatch(value: Any, tp: Any, path: str, or_null: bool) -> SchemaError:
    expected = _describe(tp) + (" or null" if or_null else "")
    return SchemaError(f"{path}: expected {expected}, got {_show(value)}")


def _describe(tp: Any) -> str:
    """Returns what a value of type hint ``tp`` looks like in JSON, in words."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        options = [a for a in get_args(tp) if a is not type(None)]
        text = (
            _describe(options[0])
            if len(options) == 1
            else "an object with a kind of "
            + ", ".join(map(repr, _records_by_kind(tuple(options))))
        )
        return text + (" or null" if len(options) < len(get_args(tp)) else "")
    if tp is Any:
        return _VALUES_TEXT
    if origin is Literal:
        return "one of " + ", ".join(repr(v) for v in get_args(tp))
    if isinstance(tp, type) and issubclass(tp, Enum):
        return "one of " + ", ".join(repr(member.value) for member in tp)
    if origin is tuple:
        return "a list"
    if origin is dict or dataclasses.is_dataclass(tp):
        return "an object"
    words: dict[Any, str] = {str: "a string", int: "an integer", bool: "true or false"}
    return words.get(tp, 'a number, "nan", "inf" or "-inf"' if tp is float else repr(tp))


def _show(value: Any) -> str:
    """Returns a JSON value as an error message shows it: 'text', 3, true, null, a list."""
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else value[:37] + "...")
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "a list"
    return "an object" if isinstance(value, dict) else type(value).__name__


def _key_path(path: str, key: str) -> str:
    return f"{path}[{json.dumps(key, ensure_ascii=False)}]"
