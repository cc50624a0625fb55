"""Find the user's line: the innermost frame that is not torch's or gradlens's own code."""

from __future__ import annotations

import functools
import inspect
import os
import sys
from pathlib import Path
from types import FrameType
from typing import Any

import torch

__all__ = [
    "format_location",
    "frame_locals",
    "is_internal",
    "user_frame",
    "user_site",
    "user_source",
]

_TORCH_DIR = str(Path(str(torch.__file__)).resolve().parent) + os.sep
_GRADLENS_DIR = str(Path(__file__).resolve().parent.parent) + os.sep
# Worked examples live inside the package but are user code: their lines are the point.
_EXAMPLES_DIR = _GRADLENS_DIR + "examples" + os.sep
_cache: dict[str, bool] = {}


def _framework_dirs() -> tuple[str, ...]:
    """Training frameworks' own folders (found, not imported): their frames call the user's
    code (a Lightning ``manual_backward``, a Trainer's ``training_step``), so they are not it."""
    import importlib.util

    out = []
    names = ("lightning", "pytorch_lightning", "lightning_fabric", "transformers", "accelerate")
    for name in names:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            continue
        for folder in (spec.submodule_search_locations or []) if spec is not None else []:
            out.append(os.path.realpath(folder) + os.sep)
    return tuple(out)


_FRAMEWORK_DIRS = _framework_dirs()
_HEAVY = (torch.Tensor, torch.nn.Module)


def _is_internal(filename: str) -> bool:
    hit = _cache.get(filename)
    if hit is None:
        path = os.path.realpath(filename)
        hit = (
            path.startswith(_TORCH_DIR)
            or (path.startswith(_GRADLENS_DIR) and not path.startswith(_EXAMPLES_DIR))
            or path.startswith(_FRAMEWORK_DIRS)
            or filename.startswith("<frozen")
            or os.sep + "contextlib.py" in filename
        )
        _cache[filename] = hit
    return hit


def user_source(skip: int = 1) -> str | None:
    """Returns ``"file.py:line"`` of the innermost user frame, or None if there is none."""
    frame = sys._getframe(skip)
    while frame is not None:
        filename = frame.f_code.co_filename
        if not _is_internal(filename):
            return f"{_short(filename)}:{frame.f_lineno}"
        frame = frame.f_back  # type: ignore[assignment]
    return None


def is_internal(filename: str) -> bool:
    """Whether ``filename`` is torch's, gradlens's or a training framework's own code (not
    the user's)."""
    return _is_internal(filename)


def format_location(filename: str, line: int) -> str:
    """Returns ``"file.py:line"`` as ``user_source`` writes it, for a line remembered earlier."""
    return f"{_short(filename)}:{line}"


def _short(filename: str) -> str:
    """Returns the path relative to the working directory when inside it, else as given."""
    return _short_from(filename, os.getcwd())


@functools.lru_cache(maxsize=1024)
def _short_from(filename: str, cwd: str) -> str:
    try:
        rel = os.path.relpath(filename, cwd)
    except ValueError:
        rel = ".."
    if not rel.startswith(".."):
        return rel
    if filename.startswith(_GRADLENS_DIR):  # the worked examples, wherever installed
        package_parent = os.path.dirname(_GRADLENS_DIR.rstrip(os.sep)) + os.sep
        return filename[len(package_parent) :]
    return filename


_CO_OPTIMIZED = inspect.CO_OPTIMIZED


def frame_locals(frame: FrameType) -> dict[str, Any]:
    """Returns a copy of ``frame``'s local variables, without keeping them alive.

    Before Python 3.13, reading ``f_locals`` of a function's frame fills a dict stored on the
    frame, which holds every local until the next read or until the function returns: a tensor
    the user ``del``s afterwards would stay alive. So the tensors and modules are taken out of
    that snapshot again (the next read, by anyone, rebuilds it from the real variables, and a
    tracer such as pdb always rebuilds it before writing it back). Module and class bodies,
    whose ``f_locals`` is the namespace itself, are only read.
    """
    snapshot = frame.f_locals
    found = dict(snapshot)
    if frame.f_code.co_flags & _CO_OPTIMIZED and sys.version_info < (3, 13):
        for name, value in found.items():
            if isinstance(value, _HEAVY):
                snapshot.pop(name, None)
    return found


def user_frame() -> tuple[FrameType | None, str | None]:
    """Returns the innermost user frame and its ``"file.py:line"`` (None, None if none)."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        filename = frame.f_code.co_filename
        if not _is_internal(filename):
            return frame, f"{_short(filename)}:{frame.f_lineno}"
        frame = frame.f_back
    return None, None


def user_site() -> tuple[str, int] | None:
    """Returns the innermost user frame's ``(filename, line)``, unformatted (cheaper than
    ``user_frame`` on a hot path; ``format_location`` makes the text when it is needed)."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        filename = frame.f_code.co_filename
        if not _is_internal(filename):
            return filename, frame.f_lineno
        frame = frame.f_back
    return None
