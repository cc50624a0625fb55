"""Writing files so that a failed write never leaves a broken one: every file gradlens writes
(JSON, DOT/SVG/PNG/PDF, plots) goes through :func:`atomic_path` or :func:`write_atomic`.

The new content is written to a temporary file in the same folder and moved over the target
with ``os.replace`` only once it is complete; if anything fails on the way, the old file is left
as it was and the temporary file is removed. :func:`check_writable` tells, before a long run,
whether a path can be written at all, by creating (and removing) a file next to it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path

from .._errors import GradlensError

__all__ = ["atomic_path", "check_writable", "write_atomic"]

_TEMP_SUFFIX = ".gradlens-tmp"


def check_writable(path: str | os.PathLike[str]) -> Path:
    """Returns ``path`` as a Path if a file can be written there; else raises GradlensError
    saying what is wrong (a missing folder, a file where the folder should be, a folder where
    the file should be, no permission) and what to do.

    It creates and removes an empty temporary file in the folder, so that a read-only file
    system or missing permissions are found too, not only missing folders.
    """
    path = Path(path)
    folder = _folder_problem(path)
    if folder is not None:
        raise GradlensError(folder)
    if path.is_dir():
        raise GradlensError(
            f"cannot write {str(path)!r}: it is a folder; give a file name inside it "
            f"(for example {str(path / ('out' + (path.suffix or '.json')))!r})"
        )
    if _is_special(path):  # /dev/stdout, a named pipe: written in place, nothing to probe
        if not os.access(path, os.W_OK):
            raise GradlensError(f"cannot write {str(path)!r}: permission denied")
        return path
    target = _target(path)
    try:
        fd, temp = _create_temp(target)
    except OSError as error:
        raise _write_error(path, error, kept=False) from error
    os.close(fd)
    _remove(temp)
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yields a temporary path next to ``path``; when the block ends without an exception, the
    temporary file replaces ``path`` in one step. On any exception (also KeyboardInterrupt) the
    temporary file is removed and ``path`` keeps its old content. An OSError while writing
    becomes a GradlensError naming ``path``.

    For writers that take a file name (``dot -o``, ``Figure.savefig``)::

        with atomic_path("plot.png") as temp:
            figure.savefig(temp, format="png")
    """
    path = Path(path)
    problem = _folder_problem(path)
    if problem is not None:
        raise GradlensError(problem)
    if _is_special(path):  # a device or a pipe cannot be replaced: it is written as it is
        try:
            yield path
        except OSError as error:
            raise _write_error(path, error, kept=False) from error
        return
    target = _target(path)
    try:
        fd, temp = _create_temp(target)
    except OSError as error:
        raise _write_error(path, error) from error
    os.close(fd)
    try:
        yield temp
        _flush_to_disk(temp)
        os.replace(temp, target)
    except OSError as error:
        _remove(temp)
        raise _write_error(path, error) from error
    except BaseException:
        _remove(temp)
        raise


def write_atomic(path: str | os.PathLike[str], data: str | bytes) -> Path:
    """Writes ``data`` (text is written as UTF-8) to ``path`` atomically; returns ``path``."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    path = Path(path)
    with atomic_path(path) as temp, open(temp, "wb") as file:
        file.write(payload)
    return path


def _folder_problem(path: Path) -> str | None:
    """Returns why files cannot go into ``path``'s folder, or None when it is a folder."""
    folder = path.parent
    if folder.is_dir():
        return None
    # Name the first part of the folder that is missing or is not a folder.
    part = folder
    while not part.exists() and part.parent != part:
        part = part.parent
    if part.exists() and not part.is_dir():
        return (
            f"cannot write {str(path)!r}: {str(part)!r} is a file, not a folder; "
            "choose a path inside a folder"
        )
    return (
        f"cannot write {str(path)!r}: the folder {str(folder)!r} does not exist; create it "
        f"first (for example: mkdir -p {str(folder)!r}) or choose another path"
    )


def _target(path: Path) -> Path:
    """Returns the file to replace: the file a symbolic link points to, else ``path`` itself
    (replacing a link would turn it into a plain file, where a plain write goes through it)."""
    if path.is_symlink():
        return Path(os.path.realpath(path))
    return path


def _is_special(target: Path) -> bool:
    """Returns whether ``target`` exists and is not a regular file (a device, a pipe)."""
    try:
        mode = target.stat().st_mode
    except OSError:
        return False
    return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)


def _create_temp(target: Path) -> tuple[int, Path]:
    """Creates an empty, new temporary file next to ``target``; returns its descriptor and path.

    Created with mode 0o666 less the umask, as a plain ``open(path, "w")`` would be, and with the
    old file's permissions when there is one, so replacing a file does not change its mode.
    """
    try:
        mode: int | None = stat.S_IMODE(target.stat().st_mode)
    except OSError:
        mode = None
    while True:
        temp = target.with_name(f".{target.name}.{secrets.token_hex(4)}{_TEMP_SUFFIX}")
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
            fd = os.open(temp, flags, 0o666)
        except FileExistsError:
            continue
        break
    if mode is not None:  # the content matters more than the mode: a failed chmod is let be
        with contextlib.suppress(OSError):
            os.chmod(temp, mode)
    return fd, temp


def _flush_to_disk(temp: Path) -> None:
    """Makes the temporary file's bytes durable before it replaces the target."""
    fd = os.open(temp, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as error:
        # A file system that cannot fsync at all is fine (the replace is atomic all the same);
        # a write error reported at fsync (EIO, ENOSPC) means the bytes may not be there.
        if error.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def _remove(temp: Path) -> None:
    with contextlib.suppress(OSError):
        os.unlink(temp)


def _write_error(path: Path, error: OSError, *, kept: bool = True) -> GradlensError:
    reason = error.strerror or str(error)
    advice = {
        "EACCES": "check the folder's permissions or choose another path",
        "EPERM": "check the folder's permissions or choose another path",
        "EROFS": "the file system is read-only; choose another path",
        "ENOSPC": "the disk is full; free some space or choose another path",
        "EDQUOT": "the disk quota is used up; free some space or choose another path",
    }
    name = errno.errorcode.get(error.errno or 0, "")
    fix = advice.get(name, "choose another path")
    kept_note = " (the old file, if any, is unchanged)" if kept else ""
    return GradlensError(f"cannot write {str(path)!r}: {reason}; {fix}{kept_note}")
