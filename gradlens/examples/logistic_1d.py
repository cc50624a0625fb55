"""Hours studied -> pass: Linear(1, 1) + sigmoid trained 1000 epochs with a summed BCELoss."""

from __future__ import annotations

import torch
from torch import nn

import gradlens

from ._result import ExampleResult

TRAINING = True  # a watched training run: it draws plots (--plot), not a graph
TITLE = "Logistic regression on hours -> pass: 1000 epochs of SGD, and the probability curve"


class LogisticRegression(nn.Module):
    """p(pass | hours) = sigmoid(w · hours + b)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.linear(x))


def run() -> ExampleResult:
    from ..render.plots import probability_curve_figure

    hours = torch.tensor([[1.0], [2.0], [3.0]])
    passed = torch.tensor([[0.0], [0.0], [1.0]])

    torch.manual_seed(0)
    model = LogisticRegression()
    criterion = nn.BCELoss(reduction="sum")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)

    with gradlens.watch(model, optimizer, live=False) as lens:
        for _ in range(1000):
            prob = model(hours)
            loss = criterion(prob, passed)
            lens.log(loss=loss)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    w, b = model.linear.weight.item(), model.linear.bias.item()
    with torch.no_grad():
        p4 = model(torch.tensor([[4.0]])).item()
        grid = torch.linspace(0, 10, 200).view(200, 1)
        curve = model(grid).view(-1).tolist()
    xs = grid.view(-1).tolist()
    threshold = -b / w  # sigmoid(w·x + b) = 0.5 where w·x + b = 0

    figure = probability_curve_figure(xs, curve, hours.view(-1).tolist(), passed.view(-1).tolist())
    verdict = "pass" if p4 > 0.5 else "fail"
    return ExampleResult(
        name="logistic-1d",
        title=TITLE,
        lens=lens,
        figures={"curve": figure},
        values={
            "w": w,
            "b": b,
            "loss": loss.item(),  # the last epoch's summed BCE loss
            "p(pass | 4 hours)": p4,
            "4 hours passes": p4 > 0.5,
            "0.5 crossing (hours)": threshold,
            "curve": {"hours": xs, "probability": curve},
        },
        sections=[
            (
                "Result",
                f"After 1000 epochs the model is p(pass) = sigmoid({w:.3f} · hours {b:+.3f}), "
                f"with a summed loss of {loss.item():.4f} over the three students. "
                f"The curve crosses 0.5 at {threshold:.2f} hours, between the failing 2 hours "
                f"and the passing 3, so 4 hours of study gives p = {p4:.3f}: "
                f"the model predicts a {verdict}.",
            )
        ],
    )
