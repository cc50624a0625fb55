"""One traced forward/backward of the seeds' logistic regression: hours studied -> pass."""

from __future__ import annotations

import torch
from torch import nn

import gradlens

from ._result import ExampleResult

TITLE = "Logistic regression (Linear(1, 1) + sigmoid + BCELoss): the graph and its gradients"


class LogisticRegression(nn.Module):
    """p(pass | hours) = sigmoid(w · hours + b)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.linear(x))


def run() -> ExampleResult:
    torch.manual_seed(0)
    hours = torch.tensor([[1.0], [2.0], [3.0]])
    passed = torch.tensor([[0.0], [0.0], [1.0]])
    model = LogisticRegression()
    criterion = nn.BCELoss()
    with gradlens.trace(model, hours=hours, passed=passed) as t:
        prob = model(hours)
        loss = criterion(prob, passed)
        loss.backward()
    weight, bias = model.linear.weight, model.linear.bias
    return ExampleResult(
        name="logistic-graph",
        title=TITLE,
        trace=t,
        values={
            "weight": weight.tolist(),
            "bias": bias.tolist(),
            "prob": prob.tolist(),
            "loss": loss.item(),
            "weight.grad": weight.grad.tolist(),
            "bias.grad": bias.grad.tolist(),
        },
        sections=[
            (
                "The gradients",
                "For sigmoid + BCELoss (mean), dL/dw = mean((p - y) · x) and dL/db = mean(p - y):"
                f"\nweight.grad = {weight.grad.tolist()}, bias.grad = {bias.grad.tolist()}",
            )
        ],
    )
