"""An in-place op overwrites a tensor autograd saved: PyTorch fails at backward, naming no line;
gradlens.guard() names the write and the op that saved it. Then the out-of-place fix."""

from __future__ import annotations

from dataclasses import asdict

import torch

import gradlens

from ._result import ExampleResult

TITLE = "In-place write to a saved tensor: PyTorch's error, the guilty line, and the fix"


def buggy(x: torch.Tensor) -> None:
    y = torch.sigmoid(x)  # sigmoid saves its output y: its gradient is y · (1 - y)
    y.mul_(2)  # the bug: doubles y in place, so the saved y is gone
    y.sum().backward()


def fixed(x: torch.Tensor) -> None:
    y = torch.sigmoid(x)
    y = y * 2  # a new tensor: the y that sigmoid saved is untouched
    y.sum().backward()


def run() -> ExampleResult:
    # Plain PyTorch: the error comes at backward(), and names an op, not a line.
    x = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    pytorch_error = "no error"
    try:
        buggy(x)
    except RuntimeError as e:
        pytorch_error = str(e)

    # The same code under gradlens.guard(): the write is flagged where it happens. In the
    # default mode="warn" PyTorch's own error is still raised, unchanged.
    x = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    guarded_error = None
    try:
        with gradlens.guard() as g, gradlens.trace(x=x) as t:
            buggy(x)
    except RuntimeError as e:
        guarded_error = str(e)
    (v,) = g.violations
    (d,) = g.diagnostics

    # The fix, and the gradient it gives: d/dx sum(2 · sigmoid(x)) = 2 · s · (1 - s).
    x = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    with gradlens.guard() as fixed_guard:
        fixed(x)
    s = torch.sigmoid(x.detach())
    closed_form = 2 * s * (1 - s)

    return ExampleResult(
        name="inplace-saved",
        title=TITLE,
        trace=t,
        values={
            "pytorch_error": pytorch_error,
            "guarded_error": guarded_error,
            **asdict(v),  # the violation's fields: kind, tensor, write_source, ...
            "fixed_grad": x.grad.tolist(),
            "closed_form": closed_form.tolist(),
            "violations_after_fix": len(fixed_guard.violations),
        },
        sections=[
            ("PyTorch says (at backward, no line)", pytorch_error),
            ("gradlens.guard() says (at the write)", g.__rich__()),
            ("Explained", f"{d.message}\n\nFix: {d.fix}"),
            (
                "The fix: y = y * 2",
                f"x.grad = {x.grad.tolist()}\n2 · s · (1 - s) = {closed_form.tolist()} "
                f"(s = sigmoid(x)); the guard finds {len(fixed_guard.violations)} violations",
            ),
        ],
    )
