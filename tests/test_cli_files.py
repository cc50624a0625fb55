"""Every file gradlens writes (JSON by ``save`` and ``--json``, DOT/SVG/PNG/PDF by ``render``,
plots by ``Lens.plot``) is written whole or not at all: a write that fails half-way leaves the
old file as it was and no temporary file behind; a path that cannot be written is a
GradlensError that says why, not a raw OSError."""

from __future__ import annotations

import errno
import io
import os
import stat
from pathlib import Path
from typing import Any

import pytest
import torch
from matplotlib.figure import Figure

import gradlens
from gradlens import GradlensError
from gradlens.render import files, graphviz
from gradlens.render.files import atomic_path, check_writable, write_atomic

OLD = b"the old content, complete\n"


class _DiskFull(io.BufferedWriter):
    """A file whose disk fills up half-way through the first large write."""

    def write(self, data: Any) -> int:
        view = memoryview(data)
        super().write(view[: len(view) // 2])
        self.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _disk_full_open(path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
    assert "b" in mode
    return _DiskFull(io.FileIO(path, mode.replace("b", "")))


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".gradlens-tmp"))


@pytest.fixture
def trace() -> gradlens.Trace:
    w = torch.tensor([1.0], requires_grad=True)
    x = torch.tensor([2.0], requires_grad=True)
    with gradlens.trace(w=w, x=x) as t:
        y = (w + x) * (w + 1)
        y.backward()
    return t


@pytest.fixture
def lens() -> gradlens.Lens:
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with gradlens.watch(model, opt, live=False) as watched:
        for _ in range(3):
            opt.zero_grad()
            model(torch.ones(4, 2)).pow(2).mean().backward()
            opt.step()
    return watched


# ---- a write that fails half-way --------------------------------------------------------------


def test_save_that_fails_half_way_keeps_the_old_file(
    trace: gradlens.Trace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "run.json"
    gradlens.save(trace, path)
    good = path.read_bytes()
    monkeypatch.setattr(files, "open", _disk_full_open, raising=False)
    with pytest.raises(GradlensError, match="No space left on device; the disk is full") as e:
        gradlens.save(trace, path)
    assert "run.json" in str(e.value) and "the old file, if any, is unchanged" in str(e.value)
    assert path.read_bytes() == good
    assert leftovers(tmp_path) == []
    monkeypatch.undo()
    assert isinstance(gradlens.load(path), gradlens.Trace)


def test_a_write_that_is_interrupted_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    path.write_bytes(OLD)
    with pytest.raises(KeyboardInterrupt), atomic_path(path) as temp:
        temp.write_bytes(b'{"half": ')
        raise KeyboardInterrupt
    assert path.read_bytes() == OLD
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("suffix", [".svg", ".png", ".pdf"])
def test_dot_that_dies_half_way_keeps_the_old_diagram(
    suffix: str, trace: gradlens.Trace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / f"graph{suffix}"
    path.write_bytes(OLD)

    def dies(command: list[str], **kwargs: Any) -> Any:
        out = Path(command[command.index("-o") + 1])
        out.write_bytes(b"<svg half")  # dot wrote part of its output, then was killed
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(graphviz, "find_dot", lambda: "/usr/bin/dot")
    monkeypatch.setattr(graphviz.subprocess, "run", dies)
    with pytest.raises(GradlensError, match="could not run Graphviz"):
        trace.render(path)
    assert path.read_bytes() == OLD
    assert leftovers(tmp_path) == []


def test_dot_text_that_fails_half_way_keeps_the_old_file(
    trace: gradlens.Trace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "graph.dot"
    path.write_bytes(OLD)
    monkeypatch.setattr(files, "open", _disk_full_open, raising=False)
    with pytest.raises(GradlensError, match="disk is full"):
        trace.render(path)
    assert path.read_bytes() == OLD
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("suffix", [".png", ".svg", ".pdf"])
def test_a_plot_that_fails_half_way_keeps_the_old_file(
    suffix: str, lens: gradlens.Lens, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / f"training{suffix}"
    path.write_bytes(OLD)

    def fails_half_way(self: Figure, fname: Any, **kwargs: Any) -> None:
        Path(fname).write_bytes(b"\x89PNG half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Figure, "savefig", fails_half_way)
    with pytest.raises(GradlensError, match="disk is full"):
        lens.plot(path)
    assert path.read_bytes() == OLD
    assert leftovers(tmp_path) == []


def test_a_failed_fsync_does_not_replace_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "r.json"
    path.write_bytes(OLD)

    def eio(fd: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(files.os, "fsync", eio)
    with pytest.raises(GradlensError, match="Input/output error"):
        write_atomic(path, "{}")
    assert path.read_bytes() == OLD
    assert leftovers(tmp_path) == []


# ---- what a successful write keeps -----------------------------------------------------------


def test_a_replaced_file_keeps_its_mode_and_a_new_one_gets_the_usual_mode(
    tmp_path: Path,
) -> None:
    old = tmp_path / "old.json"
    old.write_bytes(OLD)
    old.chmod(0o640)
    write_atomic(old, "{}")
    assert old.read_text(encoding="utf-8") == "{}"
    assert stat.S_IMODE(old.stat().st_mode) == 0o640

    plain = tmp_path / "plain.json"
    plain.write_text("{}", encoding="utf-8")  # what open() gives: 0o666 less the umask
    new = write_atomic(tmp_path / "new.json", "{}")
    assert stat.S_IMODE(new.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)


def test_a_symbolic_link_is_written_through(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "r.json"
    target.write_bytes(OLD)
    link = tmp_path / "r.json"
    link.symlink_to(target)
    write_atomic(link, "new")
    assert link.is_symlink()
    assert target.read_text(encoding="utf-8") == "new"


# ---- paths that cannot be written ------------------------------------------------------------


def test_check_writable_says_what_is_wrong(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("", encoding="utf-8")
    with pytest.raises(GradlensError, match="afile' is a file, not a folder") as e:
        check_writable(afile / "sub" / "r.json")
    assert str(afile) in str(e.value)
    with pytest.raises(GradlensError, match="does not exist; create it first"):
        check_writable(tmp_path / "missing" / "r.json")
    with pytest.raises(GradlensError, match="it is a folder"):
        check_writable(tmp_path)
    assert check_writable(tmp_path / "ok.json") == tmp_path / "ok.json"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]  # the probe is gone


def test_check_writable_finds_what_the_folder_refuses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tests run as root, which every permission lets through: the folder's refusal is faked
    # where the probe file is created.
    def refuses(path: Any, flags: int, mode: int = 0o777) -> int:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(files.os, "open", refuses)
    with pytest.raises(GradlensError, match="Read-only file system; the file system is read-only"):
        check_writable(tmp_path / "r.json")


@pytest.mark.parametrize("how", ["save", "render", "plot"])
def test_unwritable_paths_are_gradlens_errors(
    how: str, trace: gradlens.Trace, lens: gradlens.Lens, tmp_path: Path
) -> None:
    afile = tmp_path / "afile"
    afile.write_text("", encoding="utf-8")
    suffix = {"save": ".json", "render": ".dot", "plot": ".png"}[how]
    for path in (afile / f"x{suffix}", tmp_path / "missing" / f"x{suffix}"):
        with pytest.raises(GradlensError) as e:
            if how == "save":
                gradlens.save(trace, path)
            elif how == "render":
                trace.render(path)
            else:
                lens.plot(path)
        assert str(path.parent.name) in str(e.value)
    assert afile.read_text(encoding="utf-8") == ""


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes")
def test_a_named_pipe_is_written_in_place_not_replaced(
    trace: gradlens.Trace, tmp_path: Path
) -> None:
    # Like /dev/stdout or /dev/null: a file that is not a regular file cannot be swapped for
    # a temporary one (that would replace the device itself); it is written as it is.
    import threading

    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    check_writable(fifo)
    gradlens.save(trace, fifo)
    reader.join(timeout=30)
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    assert b'"format": "gradlens"' in received[0]
    assert leftovers(tmp_path) == []
