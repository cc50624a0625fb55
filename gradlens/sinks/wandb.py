"""The Weights & Biases sink: history rows with gradlens's own step axis, ``np_histogram``
histograms, and the findings as a table."""

from __future__ import annotations

from typing import Any

from .._errors import GradlensError, missing_extra
from ..records import Diagnostic, StepRecord, WatchRecord
from ..records.histograms import GradHistogram
from ._base import PARAM_FIELDS, Sink, scalars_of

__all__ = ["FINDINGS_KEY", "STEP_KEY", "Wandb"]

#: The history key of gradlens's step axis (``define_metric``'s step_metric).
STEP_KEY = "gradlens/step"
#: The history key of the findings table.
FINDINGS_KEY = "gradlens/findings"
_COLUMNS = ["step", "severity", "kind", "parameter", "message", "source", "fix"]


class Wandb(Sink):
    """Writes a watched loop to a W&B run (``wandb.init(...)``'s, or the current one): one
    history row per recorded step, holding ``gradlens/step`` (every gradlens key is plotted
    against it, by ``define_metric``, so the run's own ``_step`` and your rows are left
    alone), ``grad_norm/PARAM``, ..., ``gradlens/loss``, ``gradlens/lr`` (never your own
    ``loss``), gradient histograms ``grad/PARAM``
    (``wandb.Histogram(np_histogram=...)``), and a table of the findings. NaN and inf are
    logged as they are. The run is not finished: it is yours."""

    def __init__(
        self,
        run: Any = None,
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
            import numpy as np
            import wandb
        except ImportError as e:
            raise missing_extra("gradlens.sinks.Wandb", "wandb", "wandb", e) from None
        self._wandb: Any = wandb
        self._np: Any = np
        self._run = run
        self._first = ""
        self._defined: set[str] = set()
        self._findings: list[list[Any]] = []

    def open(self) -> None:
        run = self._run if self._run is not None else self._wandb.run
        if run is None:
            raise GradlensError(
                "gradlens.sinks.Wandb() found no W&B run: call wandb.init(...) first, or pass "
                "its run: Wandb(run)"
            )
        self._run = run
        run.define_metric(STEP_KEY)

    def write(
        self,
        steps: list[StepRecord],
        histograms: list[GradHistogram],
        findings: list[Diagnostic],
    ) -> None:
        run = self._run
        by_step: dict[tuple[str, int], list[GradHistogram]] = {}
        for h in histograms:
            by_step.setdefault((h.optimizer, h.step), []).append(h)
        for d in findings:
            self._findings.append(
                [d.step, d.severity.value, d.kind, d.name, d.message, d.source, d.fix]
            )
        for i, step in enumerate(steps):
            self._first = self._first or step.optimizer
            row: dict[str, Any] = dict(scalars_of(step, self._first, "gradlens/"))
            for h in by_step.get((step.optimizer, step.step), []):
                counts, edges = self._np.asarray(h.counts), self._np.asarray(h.edges)
                row[f"grad/{h.param}"] = self._wandb.Histogram(np_histogram=(counts, edges))
            if findings and i == len(steps) - 1:
                row[FINDINGS_KEY] = self._table()
            self._define(row)
            row[STEP_KEY] = step.step
            run.log(row)
        if findings and not steps:
            run.log({FINDINGS_KEY: self._table()})

    def close(self, record: WatchRecord) -> None:
        if self._findings:
            self._run.summary[FINDINGS_KEY + "_count"] = len(self._findings)

    def _table(self) -> Any:
        return self._wandb.Table(columns=_COLUMNS, data=[list(r) for r in self._findings])

    def _define(self, row: dict[str, Any]) -> None:
        """Plots every new key against ``gradlens/step`` (one glob per prefix)."""
        for key in row:
            prefix = key.split("/", 1)[0]
            glob = f"{prefix}/*" if "/" in key and prefix in (*PARAM_FIELDS, "grad") else key
            if glob not in self._defined:
                self._defined.add(glob)
                self._run.define_metric(glob, step_metric=STEP_KEY)
