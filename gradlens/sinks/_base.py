"""What every sink shares: the ``Sink`` base class and the scalars of a step record."""

from __future__ import annotations

import math

from .._errors import GradlensError
from ..records import Diagnostic, StepRecord, WatchRecord
from ..records.histograms import GradHistogram

__all__ = ["PARAM_FIELDS", "Sink", "finding_line", "scalars_of"]

#: The per-parameter fields written as scalars, tagged ``FIELD/PARAM``.
PARAM_FIELDS = (
    "grad_norm",
    "grad_mean",
    "grad_std",
    "grad_max",
    "nonfinite",
    "zero_frac",
    "nan",
    "inf",
    "weight_norm",
    "update_ratio",
)


class Sink:
    """A destination for a watched loop's records: ``open``, ``write`` after each batched host
    copy, ``close`` at the end of the watch. ``histograms``: whether to count gradient
    histograms on the device, on recorded steps 1, 1 + ``hist_every``, ... (step 0 fixes the
    ranges): ``bins`` bins over a range fixed per parameter: ``hist_range=r`` gives ``[-r, r)``
    to every parameter; by default each parameter's range is ``[-r, r)`` with ``r`` the power
    of two just above the largest |g| of its first recorded gradient."""

    histograms: bool = True

    def __init__(
        self,
        *,
        histograms: bool = True,
        bins: int = 64,
        hist_range: float | None = None,
        hist_every: int = 100,
    ) -> None:
        if isinstance(bins, bool) or not isinstance(bins, int) or not 1 <= bins <= 510:
            raise GradlensError(f"a sink's bins=... takes an integer from 1 to 510, got {bins!r}")
        if isinstance(hist_every, bool) or not isinstance(hist_every, int) or hist_every < 1:
            raise GradlensError(f"a sink's hist_every=... takes an integer >= 1: {hist_every!r}")
        if hist_range is not None and not (
            isinstance(hist_range, (int, float)) and math.isfinite(hist_range) and hist_range > 0
        ):
            raise GradlensError(
                f"a sink's hist_range=... takes a positive finite number r (the bins cover "
                f"[-r, r)), got {hist_range!r}"
            )
        self.histograms = bool(histograms)
        self.bins = bins
        self.hist_range = None if hist_range is None else float(hist_range)
        self.hist_every = hist_every

    def open(self) -> None:
        """Called when the watch starts."""

    def write(
        self,
        steps: list[StepRecord],
        histograms: list[GradHistogram],
        findings: list[Diagnostic],
    ) -> None:
        """Called after each host copy with the steps, histograms and findings it brought."""
        raise NotImplementedError

    def close(self, record: WatchRecord) -> None:
        """Called once when the watch ends, with the finished record."""


def scalars_of(step: StepRecord, first_optimizer: str, prefix: str = "") -> dict[str, float]:
    """Returns the step's scalars by tag: ``loss``, ``lr``, ``backward_calls``, the logged
    scalars by name (each after ``prefix``, with ``/OPTIMIZER`` appended for a second
    optimizer's steps), and ``FIELD/PARAM`` for every measured ``ParamStats`` field
    (``nonfinite`` as 0 or 1). Non-finite values are kept as they are."""
    suffix = "" if step.optimizer in ("", first_optimizer) else f"/{step.optimizer}"
    out: dict[str, float] = {}
    if step.loss is not None:
        out[prefix + "loss" + suffix] = step.loss
    if step.lr is not None:
        out[prefix + "lr" + suffix] = step.lr
    out[prefix + "backward_calls" + suffix] = float(step.backward_calls)
    for name, value in step.scalars.items():
        out[prefix + name + suffix] = value
    for param, stats in step.grads.items():
        for field in PARAM_FIELDS:
            value = getattr(stats, field)
            if value is not None:
                out[f"{field}/{param}"] = float(value)
    return out


def finding_line(d: Diagnostic) -> str:
    """Returns a finding as one Markdown line: severity, kind, message, source and fix."""
    where = f" ({d.source})" if d.source else ""
    fix = f" Fix: {d.fix}" if d.fix else ""
    return f"**{d.severity.value}** [{d.kind}] {d.message}{where}.{fix}"
