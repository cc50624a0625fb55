"""``a = a + 1`` makes a new tensor; ``a += 1`` changes the same one and bumps its version."""

from __future__ import annotations

import torch
from rich.table import Table

import gradlens

from ._result import ExampleResult

TITLE = "a = a + 1 (a new tensor) vs a += 1 (the same tensor, _version + 1)"


def run() -> ExampleResult:
    with gradlens.trace() as t:
        a = torch.ones((1,))
        id0, version0 = id(a), a._version
        a = a + torch.ones((1,))  # out of place: a now names a new tensor
        id1, version1 = id(a), a._version
        a += torch.ones((1,))  # in place: same tensor, new contents, version bumped
        id2, version2 = id(a), a._version
    table = Table(title="id and _version of a")
    for col in ("line", "id(a)", "a", "a._version", "same tensor as before?"):
        table.add_column(col)
    table.add_row("a = torch.ones((1,))", str(id0), "[1.]", str(version0), "")
    table.add_row("a = a + torch.ones((1,))", str(id1), "[2.]", str(version1), str(id1 == id0))
    table.add_row("a += torch.ones((1,))", str(id2), "[3.]", str(version2), str(id2 == id1))
    ops = [e for e in t.events if e.kind == "op" and e.op in ("add", "add_")]
    return ExampleResult(
        name="inplace-vs-outplace",
        title=TITLE,
        trace=t,
        values={
            "a": a.tolist(),
            "a + 1 is a new tensor": id1 != id0,
            "a += 1 is the same tensor": id2 == id1,
            "versions": [version0, version1, version2],
            "recorded ops": [(e.op, e.inplace) for e in ops],
        },
        sections=[
            ("ids and versions", table),
            (
                "Why it matters",
                "Autograd saves some tensors for backward and checks their _version when it "
                "uses them. An in-place op keeps the tensor but bumps its version, which is how "
                "PyTorch notices that a saved value was overwritten; on a leaf that requires "
                "grad it is refused outright.",
            ),
        ],
    )
