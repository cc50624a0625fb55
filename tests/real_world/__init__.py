"""Real-world programs for the do-no-harm test (``tests/test_real_world.py``)."""

from __future__ import annotations

from . import cases_checkpoint, cases_hooks, cases_modes
from ._harness import Case

CASES: list[Case] = [
    *cases_checkpoint.CASES,
    *cases_hooks.CASES,
    *cases_modes.CASES,
]
