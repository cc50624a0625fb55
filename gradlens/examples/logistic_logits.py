"""1-D logistic regression on raw scores: Linear(1, 1) + BCEWithLogitsLoss, 40 epochs."""

from __future__ import annotations

import torch
from torch import nn

import gradlens

from ._result import ExampleResult

TRAINING = True  # a watched training run: it draws plots (--plot), not a graph
TITLE = "BCEWithLogitsLoss on x = 1..4: the prediction for x = 4 before and after 40 epochs"


def run() -> ExampleResult:
    x = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    y = torch.tensor([[0.0], [0.0], [1.0], [1.0]])

    torch.manual_seed(0)
    model = nn.Linear(1, 1)  # outputs a logit; the loss applies the sigmoid itself
    criterion = nn.BCEWithLogitsLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)

    four = torch.tensor([[4.0]])
    with torch.no_grad():
        before = torch.sigmoid(model(four)).item()

    with gradlens.watch(model, optimizer, live=False) as lens:
        for _ in range(40):
            logits = model(x)
            loss = criterion(logits, y)
            lens.log(loss=loss)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    with torch.no_grad():
        after = torch.sigmoid(model(four)).item()
        probs = torch.sigmoid(model(x)).view(-1).tolist()
    correct = sum((p > 0.5) == (t == 1.0) for p, t in zip(probs, y.view(-1).tolist(), strict=True))
    first, last = lens.steps[0].loss, lens.steps[-1].loss
    w, b = model.weight.item(), model.bias.item()
    return ExampleResult(
        name="logistic-logits",
        title=TITLE,
        lens=lens,
        values={
            "p(x=4) before": before,
            "p(x=4) after": after,
            "class of x=4 before": int(before > 0.5),
            "class of x=4 after": int(after > 0.5),
            "w": w,
            "b": b,
            "first loss": first,
            "last loss": last,
            "p(x) after, x = 1..4": probs,
            "correct after": correct,
        },
        sections=[
            (
                "Prediction for x = 4",
                f"Before training sigmoid(model(4)) = {before:.4f}; after 40 epochs it is "
                f"{after:.4f}, so x = 4 is class {int(after > 0.5)}.",
            ),
            (
                "What 40 epochs did",
                f"With lr = 0.01 and a mean loss, 40 steps move w to {w:.4f} and b to {b:.4f}; "
                f"the loss goes from {first:.4f} to {last:.4f}. The probabilities for x = 1..4 "
                f"are now {', '.join(f'{p:.3f}' for p in probs)}: {correct} of 4 on the right "
                "side of 0.5"
                + (
                    "."
                    if correct == 4
                    else "; more epochs or a larger learning rate would separate them."
                ),
            ),
        ],
    )
