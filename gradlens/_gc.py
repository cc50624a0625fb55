"""Python's cyclic garbage collector held off while gradlens builds records in bulk.

Building the graph of GPT-2 small makes some 20,000 container objects (drafts, records, index
dicts) that live until the call returns. Each 700 of them start a young-generation collection,
and the survivors soon start a *full* one, which walks every object of the process: with the
model loaded that is ~300,000 objects and ~140 ms, once every ten or so ``graph()`` calls,
about as much as the call itself on average (``benchmarks/compare.py``). gradlens's own
structures are freed by reference counting (they hold no cycles), so nothing is left for the
collector to find. Only gradlens's own work runs inside: never the user's code.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

__all__ = ["gc_paused"]


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Returns a context in which the cyclic collector does not run; it is switched back on at
    the end only if it was on at the start (so a caller's ``gc.disable()`` stands)."""
    was_on = gc.isenabled()
    if was_on:
        gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()
