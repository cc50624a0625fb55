"""Which tensors are leaves, which require grad, and why a non-leaf's .grad is None."""

from __future__ import annotations

import torch

import gradlens

from ._result import ExampleResult

TITLE = "requires_grad and leaves: a, b, y require grad but are not leaves; .grad and retain_grad()"


def run() -> ExampleResult:
    w = torch.tensor([1.0], requires_grad=True)
    x = torch.tensor([2.0], requires_grad=True)
    with gradlens.trace(w=w, x=x) as t:
        a = torch.add(w, x)
        b = torch.add(w, 1)
        y = torch.mul(a, b)
        y.backward()
    plain = t.tensors

    w2 = torch.tensor([1.0], requires_grad=True)
    x2 = torch.tensor([2.0], requires_grad=True)
    with gradlens.trace(w=w2, x=x2) as kept:
        a = torch.add(w2, x2)
        a.retain_grad()  # ask autograd to keep this non-leaf's gradient
        b = torch.add(w2, 1)
        y = torch.mul(a, b)
        y.backward()
    retained = kept.tensors

    values = {
        name: {
            "requires_grad": plain[name].requires_grad,
            "is_leaf": plain[name].is_leaf,
            "grad": None if plain[name].grad is None else plain[name].grad.values,
        }
        for name in ("w", "x", "a", "b", "y")
    }
    values["a with retain_grad"] = {
        "grad": None if retained["a"].grad is None else retained["a"].grad.values,
        "retains_grad": retained["a"].retains_grad,
    }
    why = plain["a"].why_no_grad()
    return ExampleResult(
        name="requires-grad",
        title=TITLE,
        trace=t,
        values=values,
        sections=[
            (
                "Leaves and non-leaves",
                "w and x were created by you: they are leaves, and backward() fills their "
                ".grad. a, b and y were computed from them by ops: they require grad (their "
                "inputs do), have a grad_fn, and are not leaves.",
            ),
            ("Why a.grad is None", f"a.grad is None because {why}."),
            (
                "With a.retain_grad()",
                f"a.grad = {retained['a'].grad.short() if retained['a'].grad else None} "
                "(dy/da = b = 2).",
            ),
        ],
    )
