"""A dead ReLU: the first layer's bias is so negative that every pre-activation is below 0.
backward() runs, and the first layer's gradients are exactly zero, so training never moves it;
gradlens.explain calls it dead at the ReLU's line. Then the fix, a leaky ReLU."""

from __future__ import annotations

import copy

import torch
from rich.table import Table
from torch import nn

import gradlens

from ._result import ExampleResult

TITLE = "A dead ReLU: all-zero gradients, explained at the ReLU's line; the leaky fix"


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(2, 4)
        self.fc2 = nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.fc1(x))  # every pre-activation is < 0: h is all zeros
        return self.fc2(h)


class LeakyNet(Net):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = nn.functional.leaky_relu(self.fc1(x), 0.01)  # a small slope below 0
        return self.fc2(h)


def _norm(grad: torch.Tensor | None) -> float | None:
    return None if grad is None else grad.norm().item()


def run() -> ExampleResult:
    torch.manual_seed(0)
    x, target = torch.randn(16, 2), torch.randn(16, 1)
    torch.manual_seed(1)
    model = Net()
    with torch.no_grad():
        model.fc1.bias.fill_(-100.0)  # e.g. left there by one too-large optimizer step

    # Plain PyTorch: no error, and the first layer's gradients are exactly zero.
    loss = nn.functional.mse_loss(model(x), target)
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}

    # So training never moves the first layer: 100 SGD steps leave it exactly as it was.
    trained = copy.deepcopy(model)
    optimizer = torch.optim.SGD(trained.parameters(), lr=0.1)
    for _ in range(100):
        optimizer.zero_grad()
        nn.functional.mse_loss(trained(x), target).backward()
        optimizer.step()
    unchanged = {
        name: torch.equal(p, trained.get_parameter(name)) for name, p in model.named_parameters()
    }

    # The same forward pass under gradlens.trace(), then explained.
    model.zero_grad(set_to_none=True)
    with gradlens.trace(model) as t:
        loss = nn.functional.mse_loss(model(x), target)
    why = gradlens.explain(loss, params=model, trace=t)

    # The fix: a leaky ReLU passes a small gradient below 0, so the layer can recover.
    leaky = LeakyNet()
    leaky.load_state_dict(model.state_dict())
    nn.functional.mse_loss(leaky(x), target).backward()
    leaky_grads = {name: p.grad for name, p in leaky.named_parameters()}
    leaky.zero_grad(set_to_none=True)
    with gradlens.trace(leaky) as lt:
        leaky_loss = nn.functional.mse_loss(leaky(x), target)
    leaky_why = gradlens.explain(leaky_loss, params=leaky, trace=lt)

    table = Table(title="gradient norms after loss.backward()")
    table.add_column("parameter")
    table.add_column("relu", justify="right")
    table.add_column("unchanged by 100 SGD steps")
    table.add_column("status")
    table.add_column("leaky_relu", justify="right")
    for name, grad in grads.items():
        table.add_row(
            name,
            f"{_norm(grad):.4g}",
            "yes" if unchanged[name] else "no",
            why.params[name].status,
            f"{_norm(leaky_grads[name]):.4g}",
        )

    dead = [d for d in why.diagnostics if d.name in ("fc1.weight", "fc1.bias")]
    return ExampleResult(
        name="dead-relu",
        title=TITLE,
        trace=t,
        graph=why.graph,  # the trace graph with the dead path drawn in grey
        values={
            "pre-activation max": model.fc1(x).max().item(),
            "grad norms": {name: _norm(g) for name, g in grads.items()},
            "unchanged after 100 SGD steps": unchanged,
            "statuses": {name: p.status for name, p in why.params.items()},
            "kinds": {name: p.kind for name, p in why.params.items()},
            "sources": {name: p.source for name, p in why.params.items()},
            "leaky grad norms": {name: _norm(g) for name, g in leaky_grads.items()},
            "leaky statuses": {name: p.status for name, p in leaky_why.params.items()},
            "leaky diagnostics": [d.kind for d in leaky_why.diagnostics],
        },
        sections=[
            ("PyTorch says nothing: the first layer's gradients are zero", table),
            (
                "gradlens.explain says",
                why.__rich__() if hasattr(why, "__rich__") else str(why),
            ),
            (
                "Explained",
                "\n\n".join(f"{d.name}: {d.message}\nat {d.source}" for d in dead)
                or "nothing to explain",
            ),
            (
                "Why",
                "fc1's bias is -100, so fc1(x) < 0 for every input (largest: "
                f"{model.fc1(x).max().item():.1f}). ReLU's slope is 0 below 0, so the "
                "gradient arriving at the ReLU is multiplied by 0 and nothing reaches fc1; "
                "fc2.weight's gradient is zero too, since its input h is all zeros. Only "
                "fc2.bias learns. A leaky ReLU (slope 0.01 below 0) lets a small gradient "
                "through: fc1.weight's gradient norm is "
                f"{_norm(leaky_grads['fc1.weight']):.4g} instead of 0.",
            ),
        ],
    )
