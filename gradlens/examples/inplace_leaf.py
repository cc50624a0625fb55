"""An in-place op on a leaf that requires grad: PyTorch's error, and the two fixes."""

from __future__ import annotations

import torch

import gradlens

from ._result import ExampleResult

TITLE = "In-place on a leaf that requires grad: the error, which tensor and line, and the fix"


def run() -> ExampleResult:
    w = torch.tensor([1.0], requires_grad=True)
    values: dict[str, object] = {}
    with gradlens.trace(w=w) as t:
        try:
            w.add_(1)  # not allowed: w is a leaf that requires grad
        except RuntimeError as e:
            values["error"] = str(e)
        with torch.no_grad():
            w.add_(1)  # fine: an update autograd does not track, as optimizers do
        w_next = w + 1  # also fine: a new tensor, w is untouched
    values["w after no_grad add_"] = w.tolist()
    values["w_next"] = w_next.tolist()
    values["w._version"] = w._version
    diagnostics = [d for d in t.diagnostics if d.kind == "inplace-leaf"]
    text = "\n\n".join(f"{d.message}\nat {d.source}\nFix: {d.fix}" for d in diagnostics)
    return ExampleResult(
        name="inplace-leaf",
        title=TITLE,
        trace=t,
        values=values,
        sections=[
            ("PyTorch says", values.get("error", "no error")),
            ("gradlens explains", text or "nothing to explain"),
        ],
    )
