"""Module views, measured: graph()'s inferred module paths against trace()'s hooks on GPT-2
small and ResNet-50 shapes, and the 10,000-op chain built, viewed and drawn.

Run from the repository root: ``python benchmarks/views_check.py`` (needs Graphviz's ``dot``).
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import torch
from model_zoo import gpt2_step, resnet50_step

import gradlens
from gradlens.capture.builder import GraphBuilder
from gradlens.capture.module_paths import infer_modules
from gradlens.capture.modules import module_infos
from gradlens.capture.names import TensorNames, named_params
from gradlens.render.graphviz import render


def _cut(path: str | None, depth: int) -> str | None:
    return None if path is None else ".".join(path.split(".")[:depth])


def compare(name: str, model: torch.nn.Module, inputs: Any, loss_fn: Any) -> None:
    """Prints how often graph()'s inferred module equals the hooks' module, per depth."""
    rows = []
    with gradlens.trace(model) as t:
        loss = loss_fn(model, *inputs)
        recorder = t._recorder
        assert recorder is not None
        builder = GraphBuilder(TensorNames(named_params(model)))
        builder.add_output(loss)
        reached = builder.walk([loss.grad_fn])
        try:
            infer_modules(reached, builder, model)
            for fn, nid in reached:
                draft = builder.draft(nid)
                if draft.kind.value == "op":
                    hooked = recorder._builder.draft(recorder._builder.known_id(fn)).module
                    rows.append((draft.name, hooked, draft.module))
        finally:
            builder.forget_marks([loss.grad_fn])
    n = len(rows)
    print(f"{name}: {n} op nodes, inferred module == trace()'s hooks:")
    for depth in (1, 2, 3, 4, 99):
        same = sum(_cut(h, depth) == _cut(i, depth) for _, h, i in rows)
        print(f"  to depth {depth}: {same}/{n} = {100 * same / n:.1f}%")
    has = {info.path for info in module_infos(model) if info.params}
    known = [(h, i) for _, h, i in rows if h is None or h == "" or h in has]
    same = sum(h == i for h, i in known)
    print(f"  ops of modules with parameters: {same}/{len(known)} exact")
    for (op, h, i), count in Counter(r for r in rows if r[1] != r[2]).most_common(5):
        print(f"    {count} x {op}: hooks {h!r}, inferred {i!r}")


def chain() -> None:
    """Prints the time to build, view and draw (auto view) a 10,000-op chain."""
    w = torch.ones(3, requires_grad=True)
    x = w
    for _ in range(10000):
        x = x * 1.0001
    loss = x.sum()
    t0 = time.perf_counter()
    g = gradlens.graph(loss, params={"w": w})
    t1 = time.perf_counter()
    dot = g.to_dot()
    t2 = time.perf_counter()
    render(dot, Path("chain-auto.svg"))
    t3 = time.perf_counter()
    print(
        f"10,000-op chain ({len(g.nodes)} nodes): graph() {t1 - t0:.2f} s, view + to_dot "
        f"{t2 - t1:.2f} s, dot -Tsvg {t3 - t2:.2f} s, total {t3 - t0:.2f} s"
    )


if __name__ == "__main__":
    compare("GPT-2 small shape", *gpt2_step(vocab=1000, seq=16, ctx=16, d=64, heads=4))
    compare("ResNet-50 shape", *resnet50_step(batch=2, size=64, classes=10))
    chain()
