"""The command line: ``gradlens list`` and ``gradlens run NAME`` with its output files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

import gradlens.render.graphviz
from gradlens.cli import main
from gradlens.examples import EXAMPLES

SVG_NS = "{http://www.w3.org/2000/svg}"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

needs_dot = pytest.mark.skipif(
    gradlens.render.graphviz.find_dot() is None, reason="Graphviz `dot` is not installed"
)


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """Returns the exit code and the output, whitespace collapsed (rich wraps long lines)."""
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, " ".join((captured.out + captured.err).split())


def _no_constants(name: str) -> Any:
    raise ValueError(f"not strict JSON: {name}")


def svg_nodes(path: Path) -> int:
    root = ET.parse(path).getroot()
    assert root.tag == f"{SVG_NS}svg"
    return sum(1 for g in root.iter(f"{SVG_NS}g") if g.get("class") == "node")


def test_list_prints_every_example(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run_cli(capsys, "list")
    assert code == 0
    for name in EXAMPLES:
        assert name in out


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run_cli(capsys)
    assert code == 2
    assert "list" in out and "run" in out


@needs_dot
def test_run_backward_writes_every_format(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    svg, png, dot, js = (tmp_path / f"graph.{s}" for s in ("svg", "png", "dot", "json"))
    code, out = run_cli(
        capsys,
        "run",
        "backward",
        "--svg",
        str(svg),
        "--png",
        str(png),
        "--dot",
        str(dot),
        "--json",
        str(js),
    )
    assert code == 0, out
    for path in (svg, png, dot, js):
        assert path.is_file() and path.stat().st_size > 0, path
    for word in ("Tensors", "MulBackward0", "backward-twice"):
        assert word in out

    data = json.loads(js.read_text(encoding="utf-8"), parse_constant=_no_constants)
    assert {"example", "tensors", "graph", "events", "diagnostics"} <= set(data)
    assert data["example"] == "backward"
    n_nodes = len(data["graph"]["nodes"])
    assert n_nodes == 8  # y, MulBackward0, two AddBackward0, two saved, w, x

    assert svg_nodes(svg) == n_nodes
    assert png.read_bytes().startswith(PNG_MAGIC)
    dot_text = dot.read_text(encoding="utf-8")
    assert dot_text.startswith("digraph") and "MulBackward0" in dot_text


def test_run_backward_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    js = tmp_path / "backward.json"
    code, out = run_cli(capsys, "run", "backward", "--json", str(js))
    assert code == 0, out
    text = js.read_text(encoding="utf-8")
    data = json.loads(text, parse_constant=_no_constants)
    assert data["tensors"]["w"] == {
        "is_leaf": True,
        "requires_grad": True,
        "grad_fn": None,
        "grad": [10.0],
    }
    assert data["tensors"]["y"]["grad_fn"] == "MulBackward0"
    assert [d["kind"] for d in data["diagnostics"]] == ["backward-twice"]
    assert [e["kind"] for e in data["events"]].count("backward") == 3


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_every_example_json_is_strict(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    js = tmp_path / "out.json"
    code, out = run_cli(capsys, "run", name, "--json", str(js))
    assert code == 0, out
    data = json.loads(js.read_text(encoding="utf-8"), parse_constant=_no_constants)
    assert data["example"] == name


def test_unknown_example_lists_the_examples(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run_cli(capsys, "run", "no-such-example")
    assert code == 2
    assert "no-such-example" in out
    for name in EXAMPLES:
        assert name in out


def test_missing_folder_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "missing" / "graph.svg"
    code, out = run_cli(capsys, "run", "backward", "--svg", str(target))
    assert code == 2
    assert "does not exist" in out
    assert not target.parent.exists()


def test_unknown_suffix_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "out.txt"
    code, out = run_cli(capsys, "run", "backward", "--svg", str(target))
    assert code == 2
    assert "Traceback" not in out
    assert "ending in .svg" in out and "out.txt" in out
    assert not target.exists()


def test_a_format_flag_with_another_suffix_is_refused_before_running(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "out.png"
    code, out = run_cli(capsys, "run", "backward", "--svg", str(target))
    assert code == 2
    assert "--svg takes a path ending in .svg" in " ".join(out.split())
    assert "MulBackward0" not in out  # refused before the example ran
    assert not target.exists()


def test_without_graphviz_writes_dot_and_says_how_to_install(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gradlens.render.graphviz, "find_dot", lambda: None)
    target = tmp_path / "graph.svg"
    code, out = run_cli(capsys, "run", "backward", "--svg", str(target))
    assert code == 0, out
    assert not target.exists()
    dot_file = tmp_path / "graph.dot"
    assert dot_file.is_file()
    assert dot_file.read_text(encoding="utf-8").startswith("digraph")
    assert "Install Graphviz" in out
    assert "apt-get install graphviz" in out


def _script() -> str:
    beside = Path(sys.executable).with_name("gradlens")
    found = str(beside) if beside.is_file() else shutil.which("gradlens")
    if found is None:
        pytest.skip("the gradlens console script is not installed")
    return found


@pytest.mark.parametrize("how", ["python -m gradlens", "gradlens script"])
def test_list_in_a_subprocess(how: str, tmp_path: Path) -> None:
    command = [sys.executable, "-m", "gradlens"] if how.startswith("python") else [_script()]
    done = subprocess.run(
        [*command, "list"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    for name in EXAMPLES:
        assert name in done.stdout


# ---- the trace report's options -----------------------------------------------------------


def test_report_flags_after_an_example_name(capsys: pytest.CaptureFixture[str]) -> None:
    code, full = run_cli(capsys, "run", "backward")
    assert code == 0 and "events ┏" in full and "summarised" not in full
    code, out = run_cli(capsys, "run", "backward", "--events", "summary", "--levels=1")
    assert code == 0, out
    assert "events: 20, summarised per pass" in out
    assert "backward 3 backward of y" in out and "failed: Trying to backward" in out
    assert "… 2 more levels (max_depth=None shows them all)" in out
    code, out = run_cli(capsys, "run", "--events", "full", "backward")
    assert code == 0 and out == full


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--depth", "0"], "--depth: expected a depth of 1 or more, auto or all, not '0'"),
        (["--events", "some"], "--events: expected one of auto, summary, full, not 'some'"),
        (["--levels"], "--levels needs a value"),
    ],
)
def test_bad_report_flags_are_usage_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run_cli(capsys, "run", "backward", *argv)
    assert code == 2
    assert message in out and "Traceback" not in out


SCRIPT = """
import sys
import rich
import torch
import gradlens

w = torch.ones(3, requires_grad=True)
with gradlens.trace(w=w) as t:
    x = w
    for _ in range(40):
        x = x * 1.5
    x.sum().backward()
rich.print(t)
print("argv", sys.argv[1:])
"""


def test_report_flags_before_a_script_apply_to_its_prints(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = tmp_path / "chain.py"
    script.write_text(SCRIPT, encoding="utf-8")
    code, out = run_cli(capsys, "run", str(script))
    assert code == 0, out
    assert "MulBackward0 mul ×40" in out  # 40 alike ops are one line
    assert "events: 84, summarised per pass" in out
    assert "forward 41 ops" in out and "backward 1 backward of" in out
    code, out = run_cli(capsys, "run", "--events", "full", str(script))
    assert code == 0, out
    assert "summarised" not in out and "│ 41 │ backward │" in out
    # After the script's path, the flags are the script's own.
    code, out = run_cli(capsys, "run", str(script), "--events", "full")
    assert code == 0, out
    assert "summarised per pass" in out and "argv ['--events', 'full']" in out
