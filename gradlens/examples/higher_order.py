"""y = x², differentiated three times with torch.autograd.grad(create_graph=True): 6, 2, 0."""

from __future__ import annotations

import torch

import gradlens

from ._result import ExampleResult

TITLE = "torch.autograd.grad with create_graph=True: dy/dx = 6, d²y/dx² = 2, d³y/dx³ = 0"


def run() -> ExampleResult:
    x = torch.tensor([3.0], requires_grad=True)
    with gradlens.trace(x=x) as t:
        y = torch.pow(x, 2)
        (grad_1,) = torch.autograd.grad(y, x, create_graph=True)  # 2x = 6, with a graph
        (grad_2,) = torch.autograd.grad(grad_1, x, create_graph=True)  # 2
        (grad_3,) = torch.autograd.grad(grad_2, x)  # 0: 2 does not depend on x
    first = gradlens.graph(grad_1, params={"x": x, "grad_1": grad_1})
    return ExampleResult(
        name="higher-order",
        title=TITLE,
        trace=t,
        graph=first,
        values={
            "grad_1": grad_1.tolist(),
            "grad_2": grad_2.tolist(),
            "grad_3": grad_3.tolist(),
            "grad_1.grad_fn": type(grad_1.grad_fn).__name__,
        },
        sections=[
            (
                "What happened",
                "create_graph=True makes autograd record the backward computation itself, so "
                "grad_1 = 2·x has a grad_fn and can be differentiated again. The diagram is "
                "the graph of the first derivative: the ops that compute 2·x from x.",
            )
        ],
    )
