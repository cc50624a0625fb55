"""A corpus of small in-place-write cases, each labelled by what PyTorch itself does.

``CASES`` lists every case (see ``_registry.Case``), in file order: ops, views, modules, misc.
Each case's function runs the forward pass, one in-place write (its ``# WRITE`` line) and
backward, and returns ``{name: gradient}``.
"""

from __future__ import annotations

from types import ModuleType

from . import cases_misc, cases_modules, cases_ops, cases_views
from ._registry import EXPECTS, FAILURES, REPO_ROOT, Case, case

__all__ = ["CASES", "CASES_BY_NAME", "EXPECTS", "FAILURES", "REPO_ROOT", "Case", "case"]


def _collect(*modules: ModuleType) -> list[Case]:
    found: list[Case] = []
    for module in modules:
        for obj in vars(module).values():
            c = getattr(obj, "__inplace_case__", None)
            if isinstance(c, Case) and obj.__module__ == module.__name__:
                found.append(c)
    return found


CASES: list[Case] = _collect(cases_ops, cases_views, cases_modules, cases_misc)
CASES_BY_NAME: dict[str, Case] = {c.name: c for c in CASES}
