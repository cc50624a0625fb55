"""The 2-D logistic regression loop with optimizer.zero_grad() left out, and the same loop done
right: gradlens flags the first step that adds to a gradient the optimizer already used."""

from __future__ import annotations

import torch
from rich.table import Table
from torch import nn

import gradlens

from ._result import ExampleResult
from .logistic_2d import LogisticRegression2D, train_test_split, two_clouds

TRAINING = True  # a watched training run: it draws plots (--plot), not a graph
TITLE = "Forgot optimizer.zero_grad(): gradlens points at the backward() line at step 1"

STEPS = (0, 10, 50, 99)  # the steps whose weight gradient norms are compared


def _setup() -> tuple[torch.Tensor, torch.Tensor, LogisticRegression2D, torch.optim.Optimizer]:
    """Returns the training points and labels, and a fresh model and optimizer (seed 10)."""
    torch.manual_seed(10)
    points, labels = two_clouds()
    x_train, y_train, _, _ = train_test_split(points, labels)
    model = LogisticRegression2D()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    return x_train, y_train, model, optimizer


def run() -> ExampleResult:
    criterion = nn.BCELoss()

    # The bug: nothing zeroes .grad, so each backward() adds to every gradient before it.
    x_train, y_train, model, optimizer = _setup()
    with gradlens.watch(model, optimizer, live=False) as lens:
        for _ in range(100):
            prob = model(x_train).squeeze(1)
            loss = criterion(prob, y_train)
            lens.log(loss=loss)
            loss.backward()
            optimizer.step()
    w_bug, b_bug = model.linear.weight[0].tolist(), model.linear.bias.item()

    # The same loop, done right.
    x_train, y_train, model, optimizer = _setup()
    with gradlens.watch(model, optimizer, live=False) as correct:
        for _ in range(100):
            prob = model(x_train).squeeze(1)
            loss = criterion(prob, y_train)
            correct.log(loss=loss)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    w_ok, b_ok = model.linear.weight[0].tolist(), model.linear.bias.item()

    (finding,) = [d for d in lens.diagnostics if d.kind == "grad-accumulation"]
    bug = {s.step: s.grads["linear.weight"].grad_norm for s in lens.steps}
    ok = {s.step: s.grads["linear.weight"].grad_norm for s in correct.steps}
    bias = {s.step: s.grads["linear.bias"].grad_norm for s in lens.steps}
    peak = max(bug, key=bug.__getitem__)

    table = Table(title="linear.weight gradient norm")
    table.add_column("step", justify="right")
    table.add_column("without zero_grad()", justify="right")
    table.add_column("with zero_grad()", justify="right")
    table.add_column("ratio", justify="right")
    for step in STEPS:
        table.add_row(
            str(step), f"{bug[step]:.4f}", f"{ok[step]:.4f}", f"{bug[step] / ok[step]:.0f}×"
        )

    return ExampleResult(
        name="forgot-zero-grad",
        title=TITLE,
        lens=lens,
        values={
            "diagnostic": finding.kind,
            "diagnostic step": finding.step,
            "diagnostic source": finding.source,
            "steps": list(STEPS),
            "weight grad norm": [bug[s] for s in STEPS],
            "weight grad norm, with zero_grad": [ok[s] for s in STEPS],
            "bias grad norm": [bias[s] for s in STEPS],
            "peak step": peak,
            "peak weight grad norm": bug[peak],
            "final w": w_bug,
            "final b": b_bug,
            "final w, with zero_grad": w_ok,
            "final b, with zero_grad": b_ok,
            "diagnostics, with zero_grad": [d.kind for d in correct.diagnostics],
        },
        sections=[
            (
                "What gradlens saw",
                f"{finding.message}\nat {finding.source}\nfix: {finding.fix}",
            ),
            ("The gradients", table),
            (
                "Why",
                "Without zero_grad(), .grad after step t holds the sum of the gradients of steps "
                f"0..t. It grows from {bug[0]:.3f} to {bug[peak]:.3f} by step {peak}; later "
                "steps' gradients point partly the other way and the sum shrinks slowly, but it "
                f"stays {bug[99] / ok[99]:.0f} times the correct gradient at step 99. The bias's "
                f"summed gradient grows at every step: {bias[0]:.3f} at step 0, {bias[99]:.3f} "
                "at step 99. The "
                f"weights follow: ({w_bug[0]:.2f}, {w_bug[1]:.2f}), b = {b_bug:.2f} instead of "
                f"({w_ok[0]:.2f}, {w_ok[1]:.2f}), b = {b_ok:.2f}. With zero_grad() gradlens "
                f"finds {len(correct.diagnostics)} problems.",
            ),
        ],
    )
