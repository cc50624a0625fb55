"""backward() twice over one graph without retain_graph: PyTorch refuses the second pass;
gradlens names the node whose saved tensors are gone and the backward() that freed them.
Then the fix, retain_graph=True on the first pass."""

from __future__ import annotations

import torch

import gradlens

from ._result import ExampleResult

TITLE = "backward() twice: the freed graph, the backward() that freed it, and retain_graph=True"


def run() -> ExampleResult:
    x = torch.tensor([3.0, 4.0])

    # Plain PyTorch: the second backward() fails, naming neither a line nor a node.
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    y = (torch.exp(w) * x).sum()
    y.backward()
    pytorch_error = "no error"
    try:
        y.backward()
    except RuntimeError as e:
        pytorch_error = str(e)

    # The same code under gradlens.trace(): the error is explained.
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    traced_error = None
    with gradlens.trace(w=w, x=x) as t:
        y = (torch.exp(w) * x).sum()  # exp saves its output, mul saves exp(w) and x
        y.backward()  # the first pass frees every saved tensor: no retain_graph
        first_grad = w.grad.tolist()
        try:
            y.backward()  # the bug: a second pass over the freed graph
        except RuntimeError as e:
            traced_error = str(e)
    (d,) = [d for d in t.diagnostics if d.kind == "backward-twice"]

    # The fix: keep the saved tensors through the first pass; gradients add up in .grad.
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    with gradlens.trace(w=w, x=x) as fixed:
        y = (torch.exp(w) * x).sum()
        y.backward(retain_graph=True)  # keep the saved tensors for one more pass
        y.backward()
    closed_form = 2 * torch.exp(w.detach()) * x  # two passes of d/dw sum(exp(w) · x)

    return ExampleResult(
        name="backward-twice",
        title=TITLE,
        trace=t,
        values={
            "pytorch_error": pytorch_error,
            "traced_error": traced_error,
            "w.grad after 1st backward": first_grad,
            "kind": d.kind,
            "name": d.name,
            "message": d.message,
            "source": d.source,
            "fix": d.fix,
            "fixed w.grad": w.grad.tolist(),
            "closed form": closed_form.tolist(),
            "fixed diagnostics": [f.kind for f in fixed.diagnostics],
        },
        sections=[
            ("PyTorch says (no line, no node)", pytorch_error),
            ("gradlens explains", f"{d.message}\nat {d.source}\n\nFix: {d.fix}"),
            (
                "The fix: y.backward(retain_graph=True), then y.backward()",
                f"w.grad = {[round(v, 4) for v in w.grad.tolist()]} = 2 · exp(w) · x "
                f"= {[round(v, 4) for v in closed_form.tolist()]}: the two passes add up; "
                f"gradlens finds {len(fixed.diagnostics)} problems.",
            ),
        ],
    )
