"""A two-branch model where two parameters silently get no gradient: branch b's output is
.detach()ed, and the scale's contribution goes through .item() and back into a tensor.
backward() runs without a word; gradlens.explain names each cut and its line. Then the fix."""

from __future__ import annotations

import torch
from rich.table import Table
from torch import nn

import gradlens

from ._result import ExampleResult

TITLE = "Why is .grad None? A .detach() and an .item() cut two parameters off the loss"


class TwoBranch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(3, 1)
        self.b = nn.Linear(3, 1, bias=False)
        self.scale = nn.Parameter(torch.tensor(2.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ya = self.a(x)
        yb = self.b(x).detach()  # the bug: branch b leaves the graph here
        s = (self.scale * x).mean().item()  # the bug: a Python float carries no history
        return ya + yb + torch.tensor(s)


class FixedTwoBranch(TwoBranch):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ya = self.a(x)
        yb = self.b(x)  # no .detach(): b stays in the graph
        s = (self.scale * x).mean()  # a 0-d tensor, not a float: it keeps its history
        return ya + yb + s


def _grad_text(grad: torch.Tensor | None) -> str:
    return "None" if grad is None else f"norm {grad.norm().item():.4f}"


def run() -> ExampleResult:
    torch.manual_seed(0)
    x, target = torch.randn(8, 3), torch.randn(8, 1)
    torch.manual_seed(1)
    model = TwoBranch()

    # Plain PyTorch: backward() runs, and two parameters simply get no gradient.
    loss = nn.functional.mse_loss(model(x), target)
    loss.backward()
    grads = {name: p.grad for name, p in model.named_parameters()}

    # The same forward pass under gradlens.trace(), then explained.
    model.zero_grad(set_to_none=True)
    with gradlens.trace(model) as t:
        loss = nn.functional.mse_loss(model(x), target)
    why = gradlens.explain(loss, params=model, trace=t)

    # The fix, with the same weights: every parameter gets a gradient.
    fixed = FixedTwoBranch()
    fixed.load_state_dict(model.state_dict())
    nn.functional.mse_loss(fixed(x), target).backward()
    fixed_grads = {name: p.grad for name, p in fixed.named_parameters()}
    fixed.zero_grad(set_to_none=True)
    with gradlens.trace(fixed) as ft:
        fixed_loss = nn.functional.mse_loss(fixed(x), target)
    fixed_why = gradlens.explain(fixed_loss, params=fixed, trace=ft)

    table = Table(title="after loss.backward()")
    table.add_column("parameter")
    table.add_column(".grad")
    table.add_column("status")
    table.add_column("cut by")
    table.add_column("at")
    for name, grad in grads.items():
        p = why.params[name]
        table.add_row(name, _grad_text(grad), p.status, p.kind or "", p.source or "")

    explained = "\n\n".join(
        f"{d.name}: {d.message}\nat {d.source}" + (f"\nfix: {d.fix}" if d.fix else "")
        for d in why.diagnostics
    )
    return ExampleResult(
        name="why-no-grad",
        title=TITLE,
        trace=t,
        graph=why.graph,  # the trace graph with the cuts drawn as dashed red edges
        values={
            "loss": loss.item(),
            "grad is None": [name for name, grad in grads.items() if grad is None],
            "statuses": {name: p.status for name, p in why.params.items()},
            "kinds": {name: p.kind for name, p in why.params.items()},
            "sources": {name: p.source for name, p in why.params.items()},
            "diagnostics": [(d.name, d.source) for d in why.diagnostics],
            "fixed grad is None": [name for name, g in fixed_grads.items() if g is None],
            "fixed statuses": {name: p.status for name, p in fixed_why.params.items()},
            "fixed diagnostics": [d.kind for d in fixed_why.diagnostics],
        },
        sections=[
            ("PyTorch says nothing: backward() ran, two .grad are None", table),
            (
                "gradlens.explain says",
                why.__rich__() if hasattr(why, "__rich__") else str(why),
            ),
            ("Explained", explained or "nothing to explain"),
            (
                "The fix",
                "Drop the .detach() and keep the scale's mean as a tensor (no .item(), no "
                "torch.tensor(...)): "
                + ", ".join(f"{n}.grad {_grad_text(g)}" for n, g in fixed_grads.items())
                + f". gradlens.explain finds {len(fixed_why.diagnostics)} problems.",
            ),
        ],
    )
