"""A corpus of small in-place-write cases, each labelled by what PyTorch itself does.

``CASES`` lists every case (see ``_registry.Case``), in file order: ops, views, modules, misc,
then the scenarios re-written from PyTorch's own autograd tests (``cases_pytorch_*``: version
counter, views, custom Functions, saved-tensor hooks and checkpointing, foreach/nested/complex/
inference). ``FAMILIES`` lists the families (module names without ``cases_``) in that order.
Each case's function runs the forward pass, one in-place write (its ``# WRITE`` line) and
backward, and returns ``{name: gradient}``.
"""

from __future__ import annotations

from types import ModuleType

from . import (
    cases_misc,
    cases_modules,
    cases_ops,
    cases_pytorch_functions,
    cases_pytorch_hooks,
    cases_pytorch_misc,
    cases_pytorch_version,
    cases_pytorch_views,
    cases_views,
)
from ._registry import EXPECTS, FAILURES, REPO_ROOT, Case, Failure, case

__all__ = [
    "CASES",
    "CASES_BY_NAME",
    "EXPECTS",
    "FAILURES",
    "FAMILIES",
    "REPO_ROOT",
    "Case",
    "Failure",
    "case",
]

_MODULES = (
    cases_ops,
    cases_views,
    cases_modules,
    cases_misc,
    cases_pytorch_version,
    cases_pytorch_views,
    cases_pytorch_functions,
    cases_pytorch_hooks,
    cases_pytorch_misc,
)


def _collect(*modules: ModuleType) -> list[Case]:
    found: list[Case] = []
    for module in modules:
        for obj in vars(module).values():
            c = getattr(obj, "__inplace_case__", None)
            if isinstance(c, Case) and obj.__module__ == module.__name__:
                found.append(c)
    return found


CASES: list[Case] = _collect(*_MODULES)
CASES_BY_NAME: dict[str, Case] = {c.name: c for c in CASES}
FAMILIES: tuple[str, ...] = tuple(
    m.__name__.rpartition(".")[2].removeprefix("cases_") for m in _MODULES
)
