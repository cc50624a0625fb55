"""Find the user's line: the innermost frame that is not torch's or gradlens's own code."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from types import FrameType

__all__ = ["user_frame", "user_source"]

_TORCH_DIR = str(Path(str(__import__("torch").__file__)).resolve().parent) + os.sep
_GRADLENS_DIR = str(Path(__file__).resolve().parent.parent) + os.sep
# Worked examples live inside the package but are user code: their lines are the point.
_EXAMPLES_DIR = _GRADLENS_DIR + "examples" + os.sep
_cache: dict[str, bool] = {}


def _is_internal(filename: str) -> bool:
    hit = _cache.get(filename)
    if hit is None:
        path = os.path.realpath(filename)
        hit = (
            path.startswith(_TORCH_DIR)
            or (path.startswith(_GRADLENS_DIR) and not path.startswith(_EXAMPLES_DIR))
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


def user_frame() -> tuple[FrameType | None, str | None]:
    """Returns the innermost user frame and its ``"file.py:line"`` (None, None if none)."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        filename = frame.f_code.co_filename
        if not _is_internal(filename):
            return frame, f"{_short(filename)}:{frame.f_lineno}"
        frame = frame.f_back
    return None, None
