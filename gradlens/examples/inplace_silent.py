"""A write through .data changes a tensor autograd saved, and PyTorch cannot see it: backward runs
and the gradient is silently wrong. gradlens.guard() flags the line; verify=True also catches
writes no op sees (a NumPy view), by checksum, before backward."""

from __future__ import annotations

from dataclasses import asdict

import torch
from rich.table import Table

import gradlens

from ._result import ExampleResult

TITLE = "A .data write: no error, wrong gradients; gradlens flags the silent write"


def data_write(x: torch.Tensor) -> None:
    y = torch.exp(x)  # exp saves its output y: its gradient is y itself
    y.data.mul_(2)  # the bug: .data has its own version counter, so PyTorch never notices
    y.sum().backward()


def numpy_write(x: torch.Tensor) -> None:
    y = torch.exp(x)
    y.detach().numpy()[0] = 5.0  # NumPy writes the memory directly: no torch op runs at all
    y.sum().backward()


def run() -> ExampleResult:
    # Plain PyTorch: no error, and x.grad is 2 · exp(x), not exp(x).
    x = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    data_write(x)
    inputs, wrong = x.tolist(), x.grad
    right = torch.exp(x.detach())  # d/dx sum(exp(x)) = exp(x)

    # The same code under gradlens.guard(): the .data write is flagged where it happens.
    x = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    with gradlens.guard() as g, gradlens.trace(x=x) as t:
        data_write(x)
    guarded_grad = x.grad

    # A NumPy write runs no torch op, so no hook sees it; verify=True checksums every saved
    # tensor and compares them before each backward.
    x = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    with gradlens.guard() as unverified:
        numpy_write(x)
    numpy_grad = x.grad
    x = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    with gradlens.guard(verify=True) as verified:
        numpy_write(x)

    table = Table(title="x.grad for sum(exp(x))")
    table.add_column("x", justify="right")
    table.add_column("with y.data.mul_(2)", justify="right")
    table.add_column("right: exp(x)", justify="right")
    table.add_column("ratio", justify="right")
    for xi, w, r in zip(inputs, wrong.tolist(), right.tolist(), strict=True):
        table.add_row(f"{xi:g}", f"{w:.4f}", f"{r:.4f}", f"{w / r:g}×")

    def fields(violations: list[gradlens.InplaceViolation]) -> list[dict[str, object]]:
        return [asdict(v) for v in violations]

    (d,) = g.diagnostics
    (n,) = verified.diagnostics
    return ExampleResult(
        name="inplace-silent",
        title=TITLE,
        trace=t,
        values={
            "wrong_grad": wrong.tolist(),
            "right_grad": right.tolist(),
            "guarded_grad": guarded_grad.tolist(),
            "violations": fields(g.violations),
            "numpy_grad": numpy_grad.tolist(),
            "numpy violations, verify=False": fields(unverified.violations),
            "numpy violations, verify=True": fields(verified.violations),
        },
        sections=[
            ("PyTorch says nothing; the gradient is wrong", table),
            ("gradlens.guard() says (at the .data write)", g.__rich__()),
            ("Explained", f"{d.message}\n\nFix: {d.fix}"),
            (
                "A NumPy write: gradlens.guard(verify=True)",
                verified.__rich__(),
            ),
            (
                "Explained, the NumPy write",
                f"{n.message}\n\nWithout verify=True the guard finds "
                f"{len(unverified.violations)} violations: no torch op ran, so there was "
                f"nothing to check (x.grad = {[round(v, 4) for v in numpy_grad.tolist()]}, "
                f"exp(x) = {[round(v, 4) for v in right.tolist()]}).",
            ),
        ],
    )
