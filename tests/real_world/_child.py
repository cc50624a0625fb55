"""Runs one case under one recorder in a fresh process (for cases that can crash it):
``python -m real_world._child CASE KIND OUT`` writes what the run produced to OUT."""

from __future__ import annotations

import sys
import warnings

import torch

from . import CASES
from ._harness import Rec, global_state


def main(name: str, kind: str, path: str) -> None:
    case = next(c for c in CASES if c.name == name)
    before = global_state()
    rec = Rec(kind)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = case.run(rec)
    after = global_state()
    torch.save(
        {
            "tensors": out.tensors,
            "error": out.error,
            "error_frames": out.error_frames,
            "counters": out.counters,
            "findings": rec.findings,
            "notes": rec.notes,
            "opened": rec.opened,
            "warnings": [(w.category.__name__, str(w.message)) for w in caught],
            "state": (before == after, str(before), str(after)),
        },
        path,
    )


if __name__ == "__main__":
    main(*sys.argv[1:4])
