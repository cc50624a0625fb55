"""Find the user's line: the innermost frame that is not torch's or gradlens's own code."""

from __future__ import annotations

import functools
import inspect
import os
import sys
import sysconfig
from pathlib import Path
from types import CodeType, FrameType
from typing import Any

import torch

__all__ = [
    "format_location",
    "frame_locals",
    "is_internal",
    "line_at",
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
# Model definitions shipped with transformers are where ops happen: their lines are shown.
_MODELS_DIR = os.sep + os.path.join("transformers", "models") + os.sep
_HEAVY = (torch.Tensor, torch.nn.Module)
# Installed code is shown from its package down (``transformers/.../modeling_gpt2.py``).
_PACKAGE_DIRS = ("site-packages", "dist-packages")
_STDLIB_DIRS = tuple(
    {str(Path(sysconfig.get_paths()[k]).resolve()) + os.sep for k in ("stdlib", "platstdlib")}
)
_TORCH_PARENT = os.path.dirname(_TORCH_DIR.rstrip(os.sep)) + os.sep
# The call sites seen: code object and line -> (is the user's, "file.py:line", cwd then).
_sites: dict[tuple[CodeType, int], tuple[bool, str, str]] = {}
_MAX_SITES = 50_000


def _is_internal(filename: str) -> bool:
    hit = _cache.get(filename)
    if hit is None:
        path = os.path.realpath(filename)
        hit = (
            path.startswith(_TORCH_DIR)
            or (path.startswith(_GRADLENS_DIR) and not path.startswith(_EXAMPLES_DIR))
            or (path.startswith(_FRAMEWORK_DIRS) and _MODELS_DIR not in path)
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


def line_at(code: CodeType, lasti: int) -> int | None:
    """Returns the line of the instruction at byte offset ``lasti`` of ``code`` (a frame's
    ``f_lasti``): what that frame's ``f_lineno`` was then (None for an instruction with no
    line). Cheaper to keep ``(code, lasti)`` per op and ask this only when a line is shown."""
    if lasti < 0:
        return code.co_firstlineno
    for start, end, line in code.co_lines():
        if start <= lasti < end:
            return line
    return None


def format_location(filename: str, line: int | None) -> str:
    """Returns ``"file.py:line"`` as ``user_source`` writes it, for a line remembered earlier."""
    return f"{_short(filename)}:{line}"


def _short(filename: str) -> str:
    """Returns how a path is shown: installed code from its package down, with the folders
    between elided (``transformers/.../modeling_gpt2.py``, ``json/decoder.py``); the user's
    own files relative to the working directory when inside it, else as given."""
    return _short_from(filename, os.getcwd())


@functools.lru_cache(maxsize=1024)
def _short_from(filename: str, cwd: str) -> str:
    if filename.startswith(_GRADLENS_DIR):  # the worked examples, wherever installed
        if not os.path.relpath(filename, cwd).startswith(".."):
            return os.path.relpath(filename, cwd)
        package_parent = os.path.dirname(_GRADLENS_DIR.rstrip(os.sep)) + os.sep
        return filename[len(package_parent) :]
    installed = _installed(filename)
    if installed is not None:
        return installed
    try:
        rel = os.path.relpath(filename, cwd)
    except ValueError:
        rel = ".."
    if not rel.startswith(".."):
        return rel
    return filename


def _installed(filename: str) -> str | None:
    """Returns ``package/.../file.py`` for a file of an installed package, the standard library
    or torch; None for any other file."""
    if not os.path.isabs(filename):
        return None  # "<stdin>", "<frozen runpy>", a relative path: shown as given
    parts = filename.split(os.sep)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] in _PACKAGE_DIRS:
            return _elide(parts[i + 1 :])
    for root in (*_STDLIB_DIRS, _TORCH_PARENT):
        if filename.startswith(root):
            return _elide(filename[len(root) :].split(os.sep))
    return None


def _elide(parts: list[str]) -> str | None:
    """Returns ``first/.../last`` (``first/last`` or ``last`` when that is all there is)."""
    parts = [p for p in parts if p]
    if not parts:
        return None
    if len(parts) <= 2:
        return "/".join(parts)
    return f"{parts[0]}/.../{parts[-1]}"


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
    """Returns the innermost user frame and its ``"file.py:line"`` (None, None if none).

    Each call site (code object and line) is looked at once; later calls from it cost a dict
    lookup per frame.
    """
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        code = frame.f_code
        # Whether a file is internal never changes: torch's frames are passed without
        # computing their line number (which decodes the code's line table).
        internal = _cache.get(code.co_filename)
        if internal is None:
            internal = _is_internal(code.co_filename)
        if not internal:
            key = (code, frame.f_lineno)
            site = _sites.get(key)
            if site is None or site[2] != os.getcwd():
                site = _site(*key)
            return frame, site[1]
        frame = frame.f_back
    return None, None


def _site(code: CodeType, line: int) -> tuple[bool, str, str]:
    """Returns (whether the line is the user's, its ``"file.py:line"``, the working directory
    the text was made in), remembered for the next time."""
    if len(_sites) >= _MAX_SITES:
        _sites.clear()  # code made on the fly (exec, lambdas) must not pile up forever
    filename = code.co_filename
    cwd = os.getcwd()
    user = not _is_internal(filename)
    site = (user, f"{_short_from(filename, cwd)}:{line}" if user else "", cwd)
    _sites[(code, line)] = site
    return site


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
