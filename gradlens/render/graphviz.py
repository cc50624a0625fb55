"""Drawing DOT text with the Graphviz ``dot`` program: the one place the render layer writes files.

Without ``dot`` installed nothing fails: :func:`render` writes the ``.dot`` text instead, warns,
and its result says how to install Graphviz and convert the file by hand. Every file is written
atomically (:mod:`gradlens.render.files`): a failed write leaves the old file as it was.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

from .._errors import GradlensError
from .files import atomic_path, write_atomic

__all__ = ["FORMATS", "RenderResult", "find_dot", "is_dot_available", "render", "to_svg"]

#: File suffixes :func:`render` understands, and the ``dot -T`` format each one asks for.
FORMATS: dict[str, str] = {".svg": "svg", ".png": "png", ".pdf": "pdf", ".dot": "dot"}


@dataclass(frozen=True)
class RenderResult:
    """What :func:`render` wrote.

    ``path`` is the file actually written (the ``.dot`` fallback when Graphviz is missing),
    ``dot_path`` the DOT file written, if any, and ``message`` explains a fallback.
    """

    path: Path
    format: str
    dot_path: Path | None = None
    message: str | None = None


def find_dot() -> str | None:
    """Returns the path of the Graphviz ``dot`` program, or None when it is not installed."""
    return shutil.which("dot")


def is_dot_available() -> bool:
    """Returns True when the Graphviz ``dot`` program can be run."""
    return find_dot() is not None


def render(dot_text: str, path: str | Path, *, warn: bool = True) -> RenderResult:
    """Writes ``dot_text`` drawn to ``path``; the suffix (.svg .png .pdf .dot) picks the format.

    Without the ``dot`` program, writes ``path`` with a ``.dot`` suffix instead and returns a
    result whose ``message`` says how to install Graphviz; with ``warn`` (the default) it also
    issues that message as a ``UserWarning``, so that a library call does not fall back silently
    (the CLI, which prints the message itself, passes ``warn=False``). Raises
    :class:`GradlensError` for an unknown suffix, a missing or unwritable folder, or when ``dot``
    rejects the text; the file at ``path`` is then left as it was.

    Example::

        result = render(to_dot(graph), "graph.svg")
        if result.message:
            print(result.message)
    """
    path = Path(path)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        allowed = ", ".join(FORMATS)
        raise GradlensError(
            f"cannot tell what to write for {str(path)!r}: the file name must end in one of "
            f"{allowed} (got {path.suffix or 'no suffix'!r})"
        )
    if fmt == "dot":
        write_atomic(path, dot_text)
        return RenderResult(path=path, format="dot", dot_path=path)

    executable = find_dot()
    if executable is None:
        dot_path = path.with_suffix(".dot")
        write_atomic(dot_path, dot_text)
        message = _missing_dot_message(dot_path, path, fmt)
        if warn:
            warnings.warn(message, UserWarning, stacklevel=_caller_level())
        return RenderResult(path=dot_path, format="dot", dot_path=dot_path, message=message)
    with atomic_path(path) as temp:
        _run_dot(executable, fmt, dot_text, output=temp)
    return RenderResult(path=path, format=fmt)


def to_svg(dot_text: str) -> str | None:
    """Returns ``dot_text`` drawn as SVG text, or None when Graphviz is not installed."""
    executable = find_dot()
    if executable is None:
        return None
    return _run_dot(executable, "svg", dot_text).decode("utf-8")


def _run_dot(executable: str, fmt: str, dot_text: str, output: Path | None = None) -> bytes:
    """Runs ``dot -T<fmt>`` on the text; returns its stdout (empty when it wrote ``output``)."""
    command = [executable, f"-T{fmt}"]
    if output is not None:
        command += ["-o", str(output)]
    try:
        done = subprocess.run(command, input=dot_text.encode("utf-8"), capture_output=True)
    except OSError as error:
        raise GradlensError(f"could not run Graphviz {executable!r}: {error}") from error
    if done.returncode != 0:
        stderr = done.stderr.decode("utf-8", errors="replace").strip()
        raise GradlensError(
            f"Graphviz 'dot -T{fmt}' failed with exit status {done.returncode}: "
            f"{stderr or '(no message)'}"
        )
    return done.stdout


def _caller_level() -> int:
    """Returns the ``stacklevel`` that points a warning at the first caller outside gradlens
    (``Graph.render`` and ``Trace.render`` call :func:`render` on the user's behalf)."""
    package = str(Path(__file__).resolve().parent.parent) + os.sep
    frame = sys._getframe(1)  # render()
    level = 1
    while frame is not None and str(Path(frame.f_code.co_filename).resolve()).startswith(package):
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    return level


def _missing_dot_message(dot_path: Path, wanted: Path, fmt: str) -> str:
    return (
        f"Graphviz's 'dot' program was not found, so the graph was written as DOT text to "
        f"{str(dot_path)!r} instead of {str(wanted)!r}.\n"
        "Install Graphviz to draw it:\n"
        "  Debian/Ubuntu: sudo apt-get install graphviz\n"
        "  macOS:         brew install graphviz\n"
        "  conda:         conda install graphviz\n"
        f"then convert the file by hand: dot -T{fmt} {_shell_quote(dot_path)} "
        f"-o {_shell_quote(wanted)}"
    )


def _shell_quote(path: Path) -> str:
    return shlex.quote(str(path))
