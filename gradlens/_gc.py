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

__all__ = ["OldObjectsSet", "gc_paused"]


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


class OldObjectsSet:
    """Sets the process's objects aside from the collector (``gc.freeze``) while a trace runs.

    A trace makes thousands of records during the user's forward and backward; in a process
    holding a model, the full collections they set off walk every object alive (GPT-2 small:
    0.2-0.45 s, about every third traced step). Frozen, the objects that existed before the
    trace are not walked; the collector still runs as usual on everything made during it,
    so no garbage made by the user's code waits. ``stop`` puts them back. Nothing is done if
    the collector is off or the program froze objects itself. (``gc.get_freeze_count()``
    counts the frozen objects one by one, so it is asked only while there are none.)
    """

    def __init__(self) -> None:
        self._frozen = False

    def start(self) -> None:
        """Freezes the objects alive now, unless the collector is off or already froze some."""
        if not self._frozen and gc.isenabled() and gc.get_freeze_count() == 0:
            gc.freeze()
            self._frozen = True

    def stop(self) -> None:
        """Unfreezes what ``start`` froze (a freeze the program made meanwhile with it)."""
        if self._frozen:
            self._frozen = False
            gc.unfreeze()
