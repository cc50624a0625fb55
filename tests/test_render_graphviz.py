"""Tests of gradlens.render.graphviz: writing files with and without the ``dot`` program."""

from __future__ import annotations

import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from gradlens._errors import GradlensError
from gradlens.records import Graph
from gradlens.render import graphviz
from gradlens.render.dot import to_dot
from gradlens.render.graphviz import RenderResult, is_dot_available, render, to_svg

needs_dot = pytest.mark.skipif(graphviz.find_dot() is None, reason="Graphviz 'dot' is missing")
SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture
def no_dot(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(graphviz, "find_dot", lambda: None)


@needs_dot
def test_render_svg(graph: Graph, tmp_path: Path) -> None:
    result = render(to_dot(graph), tmp_path / "graph.svg")
    assert result == RenderResult(path=tmp_path / "graph.svg", format="svg")
    root = ET.fromstring(result.path.read_bytes())
    nodes = [g for g in root.iter(f"{SVG}g") if g.get("class") == "node"]
    assert len(nodes) == 8


@needs_dot
@pytest.mark.parametrize(("suffix", "magic"), [(".png", b"\x89PNG"), (".pdf", b"%PDF")])
def test_render_binary_formats(graph: Graph, tmp_path: Path, suffix: str, magic: bytes) -> None:
    result = render(to_dot(graph), str(tmp_path / f"graph{suffix}"))
    assert result.path == tmp_path / f"graph{suffix}"
    assert result.format == suffix[1:] and result.message is None
    assert result.path.read_bytes().startswith(magic)


@needs_dot
def test_suffix_case_does_not_matter(graph: Graph, tmp_path: Path) -> None:
    assert render(to_dot(graph), tmp_path / "graph.SVG").format == "svg"


def test_render_dot_writes_the_text(graph: Graph, tmp_path: Path) -> None:
    text = to_dot(graph)
    result = render(text, tmp_path / "graph.dot")
    assert result == RenderResult(tmp_path / "graph.dot", "dot", dot_path=tmp_path / "graph.dot")
    assert result.path.read_text(encoding="utf-8") == text


def test_without_dot_the_dot_text_is_written(graph: Graph, tmp_path: Path, no_dot: None) -> None:
    text = to_dot(graph)
    with pytest.warns(UserWarning, match="Graphviz's 'dot' program was not found"):
        result = render(text, tmp_path / "graph.svg")
    assert result.path == result.dot_path == tmp_path / "graph.dot"
    assert result.format == "dot"
    assert result.path.read_text(encoding="utf-8") == text
    assert not (tmp_path / "graph.svg").exists()
    assert result.message is not None
    assert "apt-get install graphviz" in result.message
    assert "brew install graphviz" in result.message
    assert "conda install graphviz" in result.message
    assert f"dot -Tsvg {tmp_path / 'graph.dot'} -o {tmp_path / 'graph.svg'}" in result.message


def test_without_dot(graph: Graph, no_dot: None) -> None:
    assert not is_dot_available()
    assert to_svg(to_dot(graph)) is None


@needs_dot
def test_to_svg(graph: Graph) -> None:
    assert is_dot_available()
    svg = to_svg(to_dot(graph))
    assert svg is not None and svg.lstrip().startswith("<?xml")
    assert ET.fromstring(svg).tag == f"{SVG}svg"


@pytest.mark.parametrize("name", ["graph.jpg", "graph", "graph.svg.txt"])
def test_unknown_suffix(graph: Graph, tmp_path: Path, name: str) -> None:
    with pytest.raises(GradlensError, match=r"\.svg, \.png, \.pdf, \.dot"):
        render(to_dot(graph), tmp_path / name)
    assert list(tmp_path.iterdir()) == []


def test_missing_folder_is_not_created(graph: Graph, tmp_path: Path) -> None:
    folder = tmp_path / "not" / "there"
    with pytest.raises(GradlensError, match="does not exist; create it") as error:
        render(to_dot(graph), folder / "graph.svg")
    assert str(folder) in str(error.value)
    assert not (tmp_path / "not").exists()


@needs_dot
def test_dot_errors_carry_its_message(tmp_path: Path) -> None:
    with pytest.raises(GradlensError, match=r"dot -Tsvg' failed .*syntax error"):
        render("digraph { a -> }", tmp_path / "bad.svg")
    with pytest.raises(GradlensError, match="syntax error"):
        to_svg("digraph {")


def test_a_program_that_cannot_run(
    graph: Graph, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(graphviz, "find_dot", lambda: str(tmp_path / "no-such-dot"))
    with pytest.raises(GradlensError, match="could not run Graphviz"):
        render(to_dot(graph), tmp_path / "graph.svg")


@needs_dot
def test_graph_record_methods(graph: Graph, tmp_path: Path) -> None:
    assert graph.to_dot() == to_dot(graph)
    assert graph.render(tmp_path / "g.svg").path.exists()
    svg = graph._repr_svg_()
    assert svg is not None and "<svg" in svg


def test_without_dot_a_library_call_warns_at_the_callers_line(
    graph: Graph, tmp_path: Path, no_dot: None
) -> None:
    # Graph.render falls back to the .dot file: it must say so, pointing at the user's call.
    with pytest.warns(UserWarning) as caught:
        result = graph.render(tmp_path / "g.svg")
    (warning,) = caught.list
    message = str(warning.message)
    assert f"written as DOT text to {str(tmp_path / 'g.dot')!r} instead of" in message
    assert "apt-get install graphviz" in message
    assert warning.filename == __file__
    assert result.path == tmp_path / "g.dot" and result.path.exists()
    assert not (tmp_path / "g.svg").exists()


def test_without_dot_a_trace_render_warns_too(tmp_path: Path, no_dot: None) -> None:
    import torch

    import gradlens

    w = torch.tensor([1.0], requires_grad=True)
    with gradlens.trace(w=w) as t:
        (w * 2).sum().backward()
    with pytest.warns(UserWarning, match="dot -Tpng") as caught:
        t.render(tmp_path / "t.png")
    assert caught.list[0].filename == __file__


def test_with_warn_false_nothing_is_issued(graph: Graph, tmp_path: Path, no_dot: None) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = render(to_dot(graph), tmp_path / "graph.pdf", warn=False)
    assert result.message is not None and "dot -Tpdf" in result.message


def test_the_cli_prints_the_fallback_once_and_issues_no_warning(
    tmp_path: Path, no_dot: None, capsys: pytest.CaptureFixture[str]
) -> None:
    from gradlens.cli import main

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        code = main(["run", "backward", "--svg", str(tmp_path / "b.svg")])
    out = " ".join(capsys.readouterr().out.split())
    assert code == 0
    assert out.count("Graphviz's 'dot' program was not found") == 1
    assert (tmp_path / "b.dot").exists() and not (tmp_path / "b.svg").exists()


def test_a_missing_folder_inside_a_file_says_so(graph: Graph, tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("", encoding="utf-8")
    with pytest.raises(GradlensError, match="is a file, not a folder"):
        render(to_dot(graph), afile / "graph.svg")
