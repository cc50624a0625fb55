"""Worked examples, runnable from an installed package: ``gradlens run NAME``.

Each module defines ``TITLE`` and ``run() -> ExampleResult``; the code inside ``run`` is
written the way a user would write it, against the public API only.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from ._result import ExampleResult

__all__ = ["EXAMPLES", "ExampleResult", "load_example", "run_example"]

#: name -> module, in the order ``gradlens list`` shows them.
EXAMPLES: dict[str, str] = {
    "backward": "backward",
    "grad-tensors": "grad_tensors",
    "higher-order": "higher_order",
    "accumulation": "accumulation",
    "requires-grad": "requires_grad",
    "inplace-leaf": "inplace_leaf",
    "inplace-vs-outplace": "inplace_vs_outplace",
    "logistic-graph": "logistic_graph",
    "logistic-1d": "logistic_1d",
    "logistic-logits": "logistic_logits",
    "logistic-2d": "logistic_2d",
    "forgot-zero-grad": "forgot_zero_grad",
    "inplace-saved": "inplace_saved",
    "inplace-optimizer": "inplace_optimizer",
    "inplace-silent": "inplace_silent",
    "why-no-grad": "why_no_grad",
    "dead-relu": "dead_relu",
    "backward-twice": "backward_twice",
}


def load_example(name: str) -> ModuleType:
    """Returns the module of example ``name`` (KeyError if there is none)."""
    return importlib.import_module(f"{__name__}.{EXAMPLES[name]}")


def run_example(name: str) -> ExampleResult:
    """Runs example ``name`` and returns what it showed."""
    result: ExampleResult = load_example(name).run()
    return result
