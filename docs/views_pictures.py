"""Draws the pictures of docs/: the auto view of GPT-2 small and ResNet-50, and GPT-2 folded.

Run from the repository root: ``python docs/views_pictures.py`` (needs Graphviz's ``dot``).
Full-size models with random weights (tests/model_zoo.py), one training step each, traced.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from model_zoo import gpt2_step, resnet50_step

import gradlens
from gradlens.analysis.views import is_view, view

DOCS = Path(__file__).resolve().parent


def draw(graph: gradlens.records.Graph, name: str, svg: bool = True) -> None:
    """Writes docs/<name>.svg (if asked) and docs/<name>.png from one DOT text."""
    dot = graph.to_dot()  # a view as it is; a full graph as its auto view
    shown = graph if is_view(graph) else view(graph, depth="auto")
    if svg:
        subprocess.run(["dot", "-Tsvg", "-o", DOCS / f"{name}.svg"], input=dot.encode(), check=True)
    subprocess.run(
        ["dot", "-Tpng", "-Gdpi=72", "-o", DOCS / f"{name}.png"], input=dot.encode(), check=True
    )
    print(
        f"docs/{name}: {len(shown.nodes)} of {len(graph.nodes)} nodes; notes: {list(shown.notes)}"
    )


def main() -> None:
    model, inputs, loss_fn = gpt2_step(seq=32)
    start = time.perf_counter()
    with gradlens.trace(model) as t:
        loss = loss_fn(model, *inputs)
        loss.backward()
    print(f"GPT-2 small traced in {time.perf_counter() - start:.1f} s: {len(t.graph.nodes)} nodes")
    draw(t.graph, "gpt2-auto")  # to_dot with no options: the auto view
    draw(t.view(fold=True), "gpt2-fold", svg=False)

    model, inputs, loss_fn = resnet50_step(batch=2, size=64)
    start = time.perf_counter()
    with gradlens.trace(model) as t:
        loss = loss_fn(model, *inputs)
        loss.backward()
    print(f"ResNet-50 traced in {time.perf_counter() - start:.1f} s: {len(t.graph.nodes)} nodes")
    draw(t.graph, "resnet50-auto")


if __name__ == "__main__":
    main()
