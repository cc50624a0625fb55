"""The TensorBoard sink: scalars, raw histograms and findings as text, in event files."""

from __future__ import annotations

import itertools
import os
from typing import Any

from .._errors import GradlensError, missing_extra
from ..records import Diagnostic, StepRecord, WatchRecord
from ..records.histograms import GradHistogram
from ._base import Sink, finding_line, scalars_of

__all__ = ["FINDINGS_TAG", "TensorBoard", "histogram_fields"]

#: The text tag the findings are written under.
FINDINGS_TAG = "gradlens/findings"


class TensorBoard(Sink):
    """Writes a watched loop to TensorBoard event files in ``log_dir`` (or to a
    ``SummaryWriter`` you pass, which is flushed but left open): per-parameter scalars
    ``grad_norm/PARAM``, ``update_ratio/PARAM``, ... and ``loss``, ``lr`` (``gradlens/loss``,
    ... in a writer you pass, beside your own tags); gradient histograms
    ``grad/PARAM`` (``add_histogram_raw``, from on-device counts); findings as text under
    ``gradlens/findings``. The x-axis is the optimizer's step."""

    def __init__(
        self,
        log_dir: str | os.PathLike[str] | Any,
        *,
        histograms: bool = True,
        bins: int = 64,
        hist_range: float | None = None,
        hist_every: int = 100,
    ) -> None:
        super().__init__(
            histograms=histograms, bins=bins, hist_range=hist_range, hist_every=hist_every
        )
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:
            raise missing_extra(
                "gradlens.sinks.TensorBoard", "tensorboard", "tensorboard", e
            ) from None
        self._writer: Any = None
        if isinstance(log_dir, SummaryWriter):
            self._writer, self._own = log_dir, False
        elif isinstance(log_dir, (str, os.PathLike)):
            self._dir, self._own = os.fspath(log_dir), True
        else:
            raise GradlensError(
                "gradlens.sinks.TensorBoard takes a log directory or a SummaryWriter, got "
                f"{type(log_dir).__name__}"
            )
        self._first = ""
        # A writer of yours holds your own tags: gradlens's step scalars go under gradlens/.
        self._prefix = "" if self._own else "gradlens/"

    @property
    def writer(self) -> Any:
        """Returns the ``SummaryWriter`` (made when the watch starts, for a directory)."""
        return self._writer

    def open(self) -> None:
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(self._dir)

    def write(
        self,
        steps: list[StepRecord],
        histograms: list[GradHistogram],
        findings: list[Diagnostic],
    ) -> None:
        writer = self._writer
        assert writer is not None
        for step in steps:
            self._first = self._first or step.optimizer
            for tag, value in scalars_of(step, self._first, self._prefix).items():
                writer.add_scalar(tag, value, step.step)
        for h in histograms:
            writer.add_histogram_raw(f"grad/{h.param}", global_step=h.step, **histogram_fields(h))
        for d in findings:
            writer.add_text(FINDINGS_TAG, finding_line(d), d.step or 0)

    def close(self, record: WatchRecord) -> None:
        if self._writer is not None:
            self._writer.flush()
            if self._own:
                self._writer.close()


def histogram_fields(h: GradHistogram) -> dict[str, Any]:
    """Returns ``add_histogram_raw``'s arguments for ``h``: bucket limits (right edges) and
    counts, ``num`` the counted elements, ``min``/``max`` the edges of the outermost non-empty
    bins, ``sum``/``sum_squares`` from the bin centres."""
    edges = h.edges
    used = [i for i, c in enumerate(h.counts) if c > 0]
    lo = edges[used[0]] if used else h.lo
    hi = edges[used[-1] + 1] if used else h.hi
    centres = [(a + b) / 2 for a, b in itertools.pairwise(edges)]
    return {
        "min": lo,
        "max": hi,
        "num": sum(h.counts),
        "sum": sum(c * x for c, x in zip(h.counts, centres, strict=True)),
        "sum_squares": sum(c * x * x for c, x in zip(h.counts, centres, strict=True)),
        "bucket_limits": edges[1:],
        "bucket_counts": list(h.counts),
    }
