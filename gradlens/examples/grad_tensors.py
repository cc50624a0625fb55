"""loss = cat([y0, y1]) backpropagated with gradient=[1., 2.]: w.grad = 1·5 + 2·2 = 9."""

from __future__ import annotations

import torch

import gradlens

from ._result import ExampleResult

TITLE = "grad_tensors / gradient=: weighting several outputs, w.grad = 1·5 + 2·2 = 9"


def run() -> ExampleResult:
    w = torch.tensor([1.0], requires_grad=True)
    x = torch.tensor([2.0], requires_grad=True)
    with gradlens.trace(w=w, x=x) as t:
        a = torch.add(w, x)
        b = torch.add(w, 1)
        y0 = torch.mul(a, b)  # dy0/dw = b + a = 5
        y1 = torch.add(a, b)  # dy1/dw = 1 + 1 = 2
        loss = torch.cat([y0, y1], dim=0)
        weights = torch.tensor([1.0, 2.0])
        # Each part's gradient, on its own, to show where 9 comes from:
        (dy0_dw,) = torch.autograd.grad(y0, w, retain_graph=True)
        (dy1_dw,) = torch.autograd.grad(y1, w, retain_graph=True)
        loss.backward(gradient=weights)
    parts = [weights[0].item(), dy0_dw.item(), weights[1].item(), dy1_dw.item()]
    decomposition = (
        f"w.grad = {parts[0]:g}·{parts[1]:g} + {parts[2]:g}·{parts[3]:g} "
        f"= {parts[0] * parts[1] + parts[2] * parts[3]:g}"
    )
    return ExampleResult(
        name="grad-tensors",
        title=TITLE,
        trace=t,
        values={
            "w.grad": w.grad.tolist(),
            "x.grad": x.grad.tolist(),
            "dy0/dw": dy0_dw.tolist(),
            "dy1/dw": dy1_dw.tolist(),
            "decomposition": decomposition,
        },
        sections=[
            (
                "Where 9 comes from",
                "backward(gradient=g) computes the sum over outputs of g[i] · d(loss[i])/dw:\n"
                + decomposition,
            )
        ],
    )
