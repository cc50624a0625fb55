"""Real-world programs for the do-no-harm test (``tests/test_real_world.py``)."""

from __future__ import annotations

from . import (
    cases_amp_compile,
    cases_attention,
    cases_autograd,
    cases_checkpoint,
    cases_extra,
    cases_functions,
    cases_hooks,
    cases_modes,
    cases_more,
    cases_nets,
    cases_sched,
    cases_tensors,
    cases_training,
)
from ._harness import Case

CASES: list[Case] = [
    *cases_checkpoint.CASES,
    *cases_hooks.CASES,
    *cases_modes.CASES,
    *cases_tensors.CASES,
    *cases_functions.CASES,
    *cases_autograd.CASES,
    *cases_amp_compile.CASES,
    *cases_training.CASES,
    *cases_more.CASES,
    *cases_nets.CASES,
    *cases_extra.CASES,
    *cases_sched.CASES,
    *cases_attention.CASES,
]
