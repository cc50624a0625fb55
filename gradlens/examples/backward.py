"""y = (w + x)(w + 1): backward twice with retain_graph, then a third time without a graph."""

from __future__ import annotations

import torch

import gradlens

from ._result import ExampleResult

TITLE = "backward() and retain_graph: w.grad = 5, then 10; a freed graph explained"


def run() -> ExampleResult:
    w = torch.tensor([1.0], requires_grad=True)
    x = torch.tensor([2.0], requires_grad=True)
    values: dict[str, object] = {}
    with gradlens.trace(w=w, x=x) as t:
        a = torch.add(w, x)
        b = torch.add(w, 1)
        y = torch.mul(a, b)

        y.backward(retain_graph=True)  # keep the saved tensors for another pass
        values["w.grad after 1st backward"] = w.grad.tolist()
        values["x.grad after 1st backward"] = x.grad.tolist()

        y.backward()  # gradients add up in .grad; this pass frees the graph
        values["w.grad after 2nd backward"] = w.grad.tolist()

        try:
            y.backward()  # the graph's saved tensors are gone now
        except RuntimeError as e:
            values["error of 3rd backward"] = str(e).split(".")[0]
    explained = [d.message + "\nFix: " + (d.fix or "") for d in t.diagnostics]
    return ExampleResult(
        name="backward",
        title=TITLE,
        trace=t,
        values=values,
        sections=[
            (
                "What happened",
                "dy/dw = b + a = 2 + 3 = 5 and dy/dx = b = 2. The second backward() adds another "
                "5 to w.grad (10): gradients accumulate. It ran without retain_graph, so "
                "autograd freed the saved tensors, and the third backward() fails.",
            ),
            ("PyTorch's error, explained", "\n\n".join(explained) or "no error was raised"),
        ],
    )
