"""2-D logistic regression on two Gaussian clouds, SGD with momentum, and its decision boundary."""

from __future__ import annotations

import math

import torch
from torch import nn

import gradlens

from ._result import ExampleResult

TRAINING = True  # a watched training run: it draws plots (--plot), not a graph
TITLE = "Logistic regression on two 2-D clouds: train until 99% accuracy, test on held-out points"


def two_clouds(n: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns 2n points, class 0 around (2.7, 2.7) and class 1 around (-0.7, -0.7), and labels."""
    ones = torch.ones(n, 2)
    class0 = torch.normal(1.7 * ones, 1) + 1
    class1 = torch.normal(-1.7 * ones, 1) + 1
    points = torch.cat([class0, class1])
    labels = torch.cat([torch.zeros(n), torch.ones(n)])
    return points, labels


def train_test_split(
    points: torch.Tensor, labels: torch.Tensor, test_size: float = 0.33, seed: int = 42
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns x_train, y_train, x_test, y_test: a fixed shuffle, ``test_size`` held out."""
    order = torch.randperm(len(points), generator=torch.Generator().manual_seed(seed))
    n_test = math.ceil(test_size * len(points))
    test, train = order[:n_test], order[n_test:]
    return points[train], labels[train], points[test], labels[test]


class LogisticRegression2D(nn.Module):
    """p(class 1 | x1, x2) = sigmoid(w1·x1 + w2·x2 + b)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(2, 1)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.sigmoid(self.linear(x))


def accuracy(prob: torch.Tensor, labels: torch.Tensor) -> float:
    """Returns the fraction of points on the right side of 0.5."""
    return ((prob >= 0.5).float() == labels).float().mean().item()


def run() -> ExampleResult:
    from ..render.plots import BoundarySnapshot, decision_boundary_figure

    torch.manual_seed(10)
    points, labels = two_clouds()
    x_train, y_train, x_test, y_test = train_test_split(points, labels)

    model = LogisticRegression2D()
    criterion = nn.BCELoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    snapshots = []
    with gradlens.watch(model, optimizer, live=False) as lens:
        for iteration in range(1000):
            prob = model(x_train).squeeze(1)
            loss = criterion(prob, y_train)
            lens.log(loss=loss)
            if iteration % 20 == 0:  # the model that made this prediction, before it steps
                (w1, w2), b = model.linear.weight[0].tolist(), model.linear.bias.item()
                acc = accuracy(prob, y_train)
                snapshots.append(BoundarySnapshot(iteration, (w1, w2), b, acc, loss.item()))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if iteration % 20 == 0 and acc > 0.99:
                break

    with torch.no_grad():
        train_acc = accuracy(model(x_train).squeeze(1), y_train)
        test_acc = accuracy(model(x_test).squeeze(1), y_test)
        p_new = model(torch.tensor([[1.0, 1.0]])).item()
    (w1, w2), b = model.linear.weight[0].tolist(), model.linear.bias.item()
    new_class = int(p_new >= 0.5)
    iterations = iteration + 1

    figure = decision_boundary_figure(
        [(p[0], p[1]) for p in x_train.tolist()], [int(c) for c in y_train.tolist()], snapshots
    )
    return ExampleResult(
        name="logistic-2d",
        title=TITLE,
        lens=lens,
        figures={"boundary": figure},
        values={
            "iterations": iterations,
            "train size": len(x_train),
            "test size": len(x_test),
            "train accuracy": train_acc,
            "test accuracy": test_acc,
            "w": [w1, w2],
            "b": b,
            "new point": [1.0, 1.0],
            "p(class 1 | new point)": p_new,
            "class of new point": new_class,
            "diagnostics": len(lens.diagnostics),
            "snapshots": [
                {"step": s.step, "w": list(s.w), "b": s.b, "accuracy": s.accuracy, "loss": s.loss}
                for s in snapshots
            ],
        },
        sections=[
            (
                "Result",
                f"Training stopped after {iterations} iterations, the first check (every 20) "
                f"with more than 99% of the {len(x_train)} training points right. The boundary "
                f"{w1:.3f}·x1 {w2:+.3f}·x2 {b:+.3f} = 0 gets {train_acc:.1%} of the training "
                f"points and {test_acc:.1%} of the {len(x_test)} held-out points right.",
            ),
            (
                "A new point",
                f"For (1, 1) the model gives p(class 1) = {p_new:.3f}: class {new_class} "
                f"({'blue' if new_class else 'red'}). The point lies between the two clouds, "
                "so the answer depends on where training put the line.",
            ),
            (
                "gradlens",
                "No diagnostics: zero_grad() runs every step, BCELoss gets probabilities, and "
                "both parameters get a gradient."
                if not lens.diagnostics
                else "Diagnostics: " + ", ".join(d.kind for d in lens.diagnostics),
            ),
        ],
    )
