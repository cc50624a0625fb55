"""Four backward passes without zeroing: w.grad 5, 10, 15, 20; with w.grad.zero_(): 5 each."""

from __future__ import annotations

import torch
from rich.table import Table

import gradlens

from ._result import ExampleResult

TITLE = "Gradients accumulate: 5, 10, 15, 20 without zeroing; 5, 5, 5, 5 with w.grad.zero_()"


def _steps(zero: bool) -> tuple[gradlens.Trace, list[float]]:
    w = torch.tensor([1.0], requires_grad=True)
    x = torch.tensor([2.0], requires_grad=True)
    with gradlens.trace(w=w, x=x) as t:
        for _ in range(4):
            a = torch.add(w, x)
            b = torch.add(w, 1)
            y = torch.mul(a, b)
            y.backward()
            if zero:
                w.grad.zero_()  # forget this line and the gradients add up
    # Read .grad after each pass from the recorded events, not from the live tensor:
    after = [
        e.accumulated.values[0]
        for e in t.events
        if e.kind == "grad" and e.leaf == "w" and e.accumulated is not None
    ]
    return t, after


def run() -> ExampleResult:
    t_plain, plain = _steps(zero=False)
    _, zeroed = _steps(zero=True)
    table = Table(title="w.grad after each backward()")
    table.add_column("step", justify="right")
    table.add_column("without zeroing", justify="right")
    table.add_column("with w.grad.zero_()", justify="right")
    for i, (p, z) in enumerate(zip(plain, zeroed, strict=True), start=1):
        table.add_row(str(i), f"{p:g}", f"{z:g}")
    return ExampleResult(
        name="accumulation",
        title=TITLE,
        trace=t_plain,
        values={"without zeroing": plain, "with zero_": zeroed},
        sections=[
            ("Steps", table),
            (
                "Why",
                "backward() adds into .grad; it never overwrites it. In a training loop call "
                "optimizer.zero_grad() (or w.grad.zero_()) once per step, before backward().",
            ),
        ],
    )
