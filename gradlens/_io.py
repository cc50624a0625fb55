"""Saving a graph or a trace to a JSON file, and loading it back (the format is in SCHEMA.md)."""

from __future__ import annotations

import os
from pathlib import Path

from ._errors import GradlensError, SchemaError
from .records import Graph, TraceRecord, WatchRecord
from .records.serialize import dumps, loads

__all__ = ["load", "save"]


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
    try:
        path.write_text(dumps(record) + "\n", encoding="utf-8")
    except OSError as e:
        raise GradlensError(f"cannot save to {path}: {e.strerror or e}") from e
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
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise SchemaError(f"{path}: not a gradlens file: it is not UTF-8 text") from e
    except OSError as e:
        raise GradlensError(f"cannot load {path}: {e.strerror or e}") from e
    try:
        return loads(text)
    except SchemaError as e:
        raise SchemaError(f"{path}: {e}") from e


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
