"""Saving a graph or a trace to a JSON file, and loading it back (the format is in SCHEMA.md).

Files are written atomically (a failed write leaves the old file as it was). Before decoding,
``load`` checks the file's size and how deeply its JSON nests, so that a file that is not a
gradlens record fails with a SchemaError saying so, never with a RecursionError or MemoryError.
"""

from __future__ import annotations

import itertools
import os
import re
from pathlib import Path

from ._errors import GradlensError, SchemaError
from .records import Graph, TraceRecord, WatchRecord
from .records.serialize import dumps, loads
from .render.files import write_atomic

__all__ = ["MAX_BYTES", "MAX_DEPTH", "load", "save"]

#: The most levels of JSON nesting ``load`` reads. gradlens's own files nest 5 levels plus
#: one per dimension of a small tensor whose values they hold (PyTorch's autograd stops at 64
#: dimensions), and decoding takes about two Python frames per level, so 256 leaves room both
#: ways: every record gradlens writes loads, and decoding stays far from the recursion limit.
MAX_DEPTH = 256
#: The largest file ``load`` reads: 2 GiB. A watched run keeps about 350 bytes per parameter
#: tensor and kept step, so the default 2000 kept steps of a model with 3000 parameter tensors
#: still fit; decoding a file this size takes several times its size in memory.
MAX_BYTES = 2 * 1024**3

_ESCAPE = re.compile(r"\\.", re.S)
_NOT_BRACKET_OR_QUOTE = re.compile(r'[^\[\]{}"]+')
_STRING = re.compile(r'"[^"]*"')
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def save(obj: object, path: str | os.PathLike[str]) -> Path:
    """Writes a Graph or a trace to ``path`` as JSON and returns the path.

    ``obj`` is a :class:`Graph`, a :class:`TraceRecord`, or anything with a ``.record`` that is
    a TraceRecord, such as a finished ``gradlens.Trace``. The folder must already exist::

        with gradlens.trace() as t:
            loss.backward()
        gradlens.save(t, "run.json")
        record = gradlens.load("run.json")
    """
    record = _record_of(obj)
    path = Path(path)
    folder = path.parent
    if not folder.is_dir():
        problem = "is not a folder" if folder.exists() else "does not exist"
        raise GradlensError(
            f"cannot save to {path}: the folder {folder} {problem}; create it first"
        )
    text = dumps(record)
    depth = json_depth(text)
    if depth > MAX_DEPTH:
        raise GradlensError(
            f"cannot save to {path}: the record nests {depth} levels deep, more than the "
            f"{MAX_DEPTH} that gradlens.load reads (a tensor with about {depth - 5} dimensions "
            "has its values in it); nothing was written"
        )
    write_atomic(path, text + "\n")
    return path


def load(path: str | os.PathLike[str]) -> Graph | TraceRecord | WatchRecord:
    """Returns the Graph, TraceRecord or WatchRecord saved in the JSON file at ``path``.

    Raises GradlensError when the file is missing, SchemaError (a GradlensError) when it is not
    a gradlens file or was written by a newer gradlens.
    """
    path = Path(path)
    if not path.exists():
        raise GradlensError(f"cannot load {path}: no such file")
    if path.is_dir():
        raise GradlensError(f"cannot load {path}: it is a folder, not a file")
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise SchemaError(
                f"{path}: not loaded: the file is {size / 1024**3:.1f} GiB, more than the "
                f"{MAX_BYTES // 1024**3} GiB gradlens.load reads (decoding takes several times "
                "the file's size in memory); is it a gradlens file?"
            )
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise SchemaError(f"{path}: not a gradlens file: it is not UTF-8 text") from e
    except OSError as e:
        raise GradlensError(f"cannot load {path}: {e.strerror or e}") from e
    depth = json_depth(text)
    if depth > MAX_DEPTH:
        raise SchemaError(
            f"{path}: not loaded: its JSON nests {depth} levels deep, more than the "
            f"{MAX_DEPTH} levels gradlens.load reads (gradlens.save refuses to write a record "
            "nesting deeper)"
        )
    try:
        return loads(text)
    except SchemaError as e:
        raise SchemaError(f"{path}: {e}") from e


def json_depth(text: str) -> int:
    """Returns how many levels of objects and lists nest in JSON ``text`` (0 for a scalar),
    without recursion and without decoding it. Brackets inside strings do not count."""
    bare = _ESCAPE.sub("", text) if "\\" in text else text
    bare = _STRING.sub("", _NOT_BRACKET_OR_QUOTE.sub("", bare)).replace('"', "")
    steps = map(_STEP.__getitem__, bare.encode("ascii"))
    return max(itertools.accumulate(steps, initial=0))


def _record_of(obj: object) -> Graph | TraceRecord | WatchRecord:
    """Returns the record to write: ``obj`` itself, or the record of a Trace or a Lens."""
    if isinstance(obj, (Graph, TraceRecord, WatchRecord)):
        return obj
    record = getattr(obj, "record", None)
    if isinstance(record, (TraceRecord, WatchRecord)):
        return record
    given = type(obj).__name__
    if record is not None:
        given += f" whose .record is a {type(record).__name__}"
    raise GradlensError(
        "save() takes a Graph, a TraceRecord, a WatchRecord, a Trace or a Lens (anything with a "
        f".record that is a TraceRecord or WatchRecord); got a {given}"
    )
