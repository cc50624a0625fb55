"""Gradient histograms for the sinks (``gradlens.sinks``): one parameter's gradient in one
recorded step, counted on its device into fixed bins and copied with the step's statistics."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["GradHistogram"]


@dataclass(frozen=True)
class GradHistogram:
    """Counts of one gradient's elements: ``len(counts) - 2`` equal bins over ``[lo, hi)``,
    after a first bin for everything below ``lo`` and before a last one for everything at or
    above ``hi`` (infinities included). NaN elements are in no bin (``ParamStats.nan``)."""

    step: int
    optimizer: str
    param: str
    lo: float
    hi: float
    counts: tuple[float, ...]

    @property
    def edges(self) -> list[float]:
        """Returns the ``len(counts) + 1`` bin edges, the outer bins one bin wide."""
        bins = len(self.counts) - 2
        width = (self.hi - self.lo) / bins
        return [self.lo + (i - 1) * width for i in range(bins + 3)]
