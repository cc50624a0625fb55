"""``gradlens.watch``: a training loop's gradients per parameter and step, and its mistakes.

A ``Lens`` composes the layers: capture's ``Watcher`` (hooks, on-device statistics), the
analysis ``TrainingChecks`` (findings as steps reach the host), the render layer's live view,
report and plots. Statistics reach the host in batches: every ``FLUSH_EVERY`` recorded steps,
when the live view refreshes, and when ``steps``/``diagnostics``/``report``/``plot`` are read.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from rich.console import Console, RenderableType

from ._errors import GradlensError
from ._live import LiveOutput
from .analysis.training import TrainingChecks
from .capture.distributed import all_ranks_asked, current_rank
from .capture.gradstats import HistogramSpec
from .capture.watch import DETAIL_EVERY, Watcher
from .records import Diagnostic, StepRecord, WatchRecord
from .records.histograms import GradHistogram

if TYPE_CHECKING:
    from .sinks import Sink

__all__ = ["DEFAULT_HISTORY", "FLUSH_EVERY", "Lens", "watch", "watch_everything"]

#: Recorded steps kept in memory before the history is thinned to every other step.
DEFAULT_HISTORY = 2000
#: Recorded steps left on the device before they are copied to the host in one transfer.
FLUSH_EVERY = 64
_COMPILED = re.compile(r"(?:^|(?<=\.))_orig_mod\.")  # torch.compile's wrapper in a name


def watch(
    model: torch.nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    every: int = 1,
    live: bool | None = None,
    detail_every: int = DETAIL_EVERY,
    history: int = DEFAULT_HISTORY,
    sinks: Sequence[Sink] = (),
    all_ranks: bool | None = None,
    nan_origin: bool = False,
) -> Lens:
    """Returns a ``Lens``: use it as ``with gradlens.watch(model, optimizer) as lens:``.

    Steps are each optimizer's ``step()`` calls, counted per optimizer: ``optimizer``'s; with
    only a model, those of any optimizer that steps its parameters; with neither, every
    optimizer that steps. Without any optimizer, each hand-written update of the parameters (a
    write under ``no_grad`` or through ``.data`` after a backward) is a step. ``every=k``
    records every k-th step; zero_grad and no-gradient checks still run on every step.
    ``detail_every=d`` measures zeros, NaN/Inf counts, weight norms and update ratios on every
    d-th recorded step (default 25; 0: never); norm, mean, std and max |g| are measured on every
    recorded step.
    ``live``: a live terminal view (True), nothing (False), or, by default, the live view on a
    terminal and a compact line every 100 steps elsewhere. ``history``: recorded steps kept in
    memory; past it, every other kept step is dropped (the stride doubles).
    ``sinks``: where the records also go after each host copy (``gradlens.sinks.TensorBoard``,
    ``gradlens.sinks.Wandb``), with gradient histograms counted on the device.
    Under torch.distributed (DDP, FSDP2), the statistics are the whole gradient's, combined
    across ranks every ``FLUSH_EVERY`` steps; only rank 0 shows the live view, prints
    ``report()`` and writes ``plot()``, unless ``all_ranks=True`` (or ``GRADLENS_ALL_RANKS=1``).
    ``nan_origin=True``: probe every module's inputs and output in the forward (on the device,
    no sync) so that the first step with a nan or inf names the module that made it (costs one
    read of each activation and weight per step; see the README).
    A ``torch.compile``'d model is watched without graph breaks or recompiles.
    """
    if model is not None and not isinstance(model, torch.nn.Module):
        raise GradlensError(
            f"watch() takes an nn.Module as its model, got {type(model).__name__}; "
            "pass the model whose parameters you train (or nothing, to watch every optimizer)"
        )
    if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
        raise GradlensError(
            f"watch() takes a torch.optim.Optimizer as optimizer, got {type(optimizer).__name__}"
        )
    for name, value, low in (("every", every, 1), ("detail_every", detail_every, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise GradlensError(f"watch({name}=...) takes an integer >= {low}, got {value!r}")
    if isinstance(history, bool) or not isinstance(history, int) or history < 16:
        raise GradlensError(f"watch(history=...) takes an integer >= 16, got {history!r}")
    if not isinstance(nan_origin, bool):
        raise GradlensError(f"watch(nan_origin=...) takes True or False, got {nan_origin!r}")
    if live not in (None, True, False):
        raise GradlensError(f"watch(live=...) takes True, False or None, got {live!r}")
    if all_ranks not in (None, True, False):
        raise GradlensError(f"watch(all_ranks=...) takes True, False or None, got {all_ranks!r}")
    params = model.named_parameters() if model is not None else ()
    named = {_COMPILED.sub("", n): p for n, p in params}
    watcher = Watcher(
        named,
        [optimizer] if optimizer is not None else [],
        global_hooks=model is None and optimizer is None,
        every=every,
        detail_every=detail_every,
        model=model,
        nan_origin=nan_origin,
    )
    return Lens(watcher, live=live, history=history, every=every, sinks=sinks, all_ranks=all_ranks)


def watch_everything(console: Console | None = None, sinks: Sequence[Sink] = ()) -> Lens:
    """Returns a Lens on every optimizer that steps (``gradlens run script.py``), shown on
    ``console``: the live view on a terminal, compact lines elsewhere (under torchrun: on
    rank 0 only, unless ``GRADLENS_ALL_RANKS=1``); with ``nan_origin``."""
    watcher = Watcher({}, [], global_hooks=True, nan_origin=True)
    return Lens(watcher, live=None, console=console, sinks=sinks)


class Lens:
    """A watched training loop: ``steps``, ``diagnostics``, ``log()``, ``report()``, ``plot()``.

    Hooks live only inside the ``with`` block and are removed when it ends, also when it
    raises. Afterwards the Lens holds plain records only, never the model's tensors.
    """

    def __init__(
        self,
        watcher: Watcher | None,
        *,
        live: bool | None = None,
        history: int = DEFAULT_HISTORY,
        every: int = 1,
        console: Console | None = None,
        sinks: Sequence[Sink] = (),
        all_ranks: bool | None = None,
    ) -> None:
        self._all_ranks = all_ranks_asked() if all_ranks is None else all_ranks
        if self.silent:  # torch.distributed: one live view, on rank 0
            live = False
        self._sinks, self._spec = check_sinks(sinks)
        if self.silent:  # torch.distributed: rank 0's sinks only (never opened here)
            self._sinks, self._spec = [], None
        self._sink_notes: list[str] = []
        self._ranged = 0  # parameters watched when the histogram ranges were last looked at
        if watcher is not None:
            watcher.histograms = self._spec
        self._watcher = watcher
        self._history = history
        self._every = every
        self._steps: list[StepRecord] = []
        self._stride = 1
        self._arrived = 0  # recorded steps that reached the host
        self._checks = TrainingChecks()
        self._diagnostics: list[Diagnostic] = []
        self._facts_seen = 0
        self._output = LiveOutput(live, console)
        self._entered = False
        self._finished: WatchRecord | None = None

    @classmethod
    def from_record(cls, record: WatchRecord) -> Lens:
        """Returns a finished Lens holding ``record`` (for example one loaded from JSON)."""
        lens = cls(None, live=False, every=record.every)
        lens._finished = record
        return lens

    # -- the with block ----------------------------------------------------------------------
    def __enter__(self) -> Lens:
        if self._watcher is None or self._entered:
            raise GradlensError(
                "this Lens has already watched a loop; start a new one with gradlens.watch()"
            )
        self._entered = True
        self._watcher.on_step = self._on_step
        for sink in self._sinks:  # a sink that cannot start raises here, before any hook
            try:
                sink.open()
            except GradlensError:
                raise
            except Exception as e:
                name = type(sink).__name__
                raise GradlensError(f"the {name} sink could not start: {e}") from e
        self._watcher.start()
        try:
            self._output.start(self._snapshot())
        except BaseException:
            self._watcher.stop()
            raise
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        assert self._watcher is not None
        try:
            self._watcher.stop()
        finally:
            try:
                self._watcher.sync_ranks()  # torch.distributed: every rank leaves the block
                self._pull()
                last = self._checks.finish()  # what only the end can tell
                self._diagnostics += last
                if self._sinks and last:
                    self._to_sinks([], [], last)
            finally:  # even a failed copy leaves a readable record of what reached the host
                try:
                    self._close_sinks()
                finally:
                    self._finished = self._snapshot()
                    self._watcher = None
                    self._output.stop(self._finished)

    def log(self, **scalars: Any) -> None:
        """Records scalars for the current step: ``lens.log(loss=loss, acc=acc)``.

        Values may be numbers or one-element tensors; tensors stay on their device until the
        next batch transfer (no sync here). ``loss`` replaces the backward root as the loss.
        """
        if self._watcher is None or not self._entered:
            raise GradlensError("lens.log() works inside the `with gradlens.watch(...)` block")
        try:
            self._watcher.log(**scalars)
        except ValueError as e:
            raise GradlensError(str(e)) from None

    # -- results -----------------------------------------------------------------------------
    @property
    def steps(self) -> list[StepRecord]:
        """Returns the kept step records (copies pending statistics to the host first)."""
        return list(self.record.steps)

    @property
    def diagnostics(self) -> list[Diagnostic]:
        """Returns the findings so far: missed zero_grad, no gradient, NaN, vanishing, ..."""
        return list(self.record.diagnostics)

    @property
    def record(self) -> WatchRecord:
        """Returns everything recorded as a plain ``WatchRecord`` (a snapshot while watching)."""
        if self._finished is not None:
            return self._finished
        self._pull()
        return self._snapshot()

    @property
    def silent(self) -> bool:
        """Returns whether this Lens keeps quiet: a rank other than 0 under torch.distributed
        (torchrun), unless every rank's output was asked for."""
        return not self._all_ranks and current_rank() != 0

    def report(self, console: Console | None = None) -> None:
        """Prints the summary: per-parameter gradient norms, update ratios, and the findings
        (under torch.distributed: on rank 0 only, unless ``all_ranks``)."""
        if self.silent:
            return
        (console or Console()).print(self.__rich__())

    def __rich__(self) -> RenderableType:
        from .render.watch_view import watch_report

        return watch_report(self.record)

    def plot(self, path: str | os.PathLike[str]) -> Path:
        """Writes loss, gradient norms and update ratios to ``path`` (.png, .svg or .pdf).

        Raises GradlensError, writing nothing, when no step was recorded (an empty plot would
        say nothing) or when ``path`` cannot be written. Under torch.distributed only rank 0
        writes it (unless ``all_ranks``); the other ranks return ``path`` and write nothing.
        """
        if self.silent:
            return Path(path)
        from .render.files import check_writable
        from .render.plots import save_figure, training_figure
        from .render.watch_view import NOTHING_WATCHED

        record = self.record
        if not record.steps:
            raise GradlensError(f"no plot written to {str(path)!r}: {NOTHING_WATCHED}")
        check_writable(path)
        return save_figure(training_figure(record), path)

    def __repr__(self) -> str:
        state = "watching" if self._watcher is not None and self._entered else "finished"
        record = self._finished
        steps = record.total_steps if record is not None else self._arrived
        return f"<gradlens Lens {state}: {steps} steps>"

    # -- plumbing ----------------------------------------------------------------------------
    def _on_step(self, pending: int) -> None:
        """Called after every optimizer step with the number of steps left on the device."""
        assert self._watcher is not None
        synced = self._watcher.ranks_due(FLUSH_EVERY)
        if synced:  # torch.distributed: on every rank at once
            self._watcher.sync_ranks()
            self._pull()
        new_facts = len(self._watcher.facts) > self._facts_seen
        due = self._output.due(self._watcher.steps_seen)
        if due and not synced and self._watcher.ranks.holding():
            due = False  # a view is shown when new combined steps arrive, not before
        # A parameter with no histogram range yet: one copy now fixes it (once per parameter).
        spec = self._spec
        ranges = spec is not None and spec.default is None
        ranges = ranges and self._watcher.watched_count > self._ranged
        if due or new_facts or ranges or pending >= FLUSH_EVERY:
            self._pull()
            if due or new_facts:
                self._output.update(self._snapshot())

    def _pull(self) -> None:
        """Copies pending statistics to the host and runs the checks on what arrived."""
        watcher = self._watcher
        if watcher is None:
            return
        facts = watcher.facts[self._facts_seen :]
        self._facts_seen = len(watcher.facts)
        new = self._checks.feed_facts(facts)
        histograms: list[GradHistogram] | None = [] if self._spec is not None else None
        arrived = watcher.flush(histograms)
        new += self._checks.feed_steps(arrived)
        self._diagnostics += new
        if self._sinks:
            self._to_sinks(arrived, histograms or [], new)
        for step in arrived:
            if step.grads or step.loss is not None or step.scalars:
                if self._arrived % self._stride == 0:
                    self._steps.append(step)
                self._arrived += 1
            if len(self._steps) > self._history:
                self._steps = self._steps[::2]
                self._stride *= 2

    def _snapshot(self) -> WatchRecord:
        watcher = self._watcher
        total = watcher.steps_seen if watcher is not None else 0
        return WatchRecord(
            params=tuple(watcher.params) if watcher is not None else (),
            steps=tuple(self._steps),
            facts=tuple(watcher.facts) if watcher is not None else (),
            diagnostics=tuple(self._diagnostics),
            every=self._every,
            stride=self._stride,
            total_steps=total,
            notes=(tuple(watcher.notes) if watcher is not None else ()) + tuple(self._sink_notes),
            world_size=watcher.ranks.world if watcher is not None and watcher.ranks.combined else 1,
            rank=current_rank(),
        )

    # -- sinks -------------------------------------------------------------------------------
    def _to_sinks(
        self, steps: list[StepRecord], histograms: list[GradHistogram], new: list[Diagnostic]
    ) -> None:
        """Fixes the histogram range of parameters seen for the first time, then hands the
        sinks what arrived. A sink that fails is dropped with a note; training goes on."""
        spec, watcher = self._spec, self._watcher
        if spec is not None and watcher is not None:
            self._ranged = watcher.watched_count
            for step in steps:
                for name, stats in step.grads.items():
                    if name not in spec.ranges:
                        top = stats.grad_max
                        if math.isfinite(top) and top > 0:
                            r = 2.0 ** (math.floor(math.log2(top)) + 1)  # > top: [-r, r) holds it
                            spec.ranges[name] = (-r, r)
        if not (steps or histograms or new):
            return
        for sink in list(self._sinks):
            try:
                sink.write(steps, histograms, new)
            except Exception as e:
                self._drop_sink(sink, e)

    def _close_sinks(self) -> None:
        record = self._snapshot() if self._sinks else None
        for sink in list(self._sinks):
            try:
                sink.close(record)  # type: ignore[arg-type]
            except Exception as e:
                self._drop_sink(sink, e)

    def _drop_sink(self, sink: Sink, error: BaseException) -> None:
        self._sinks.remove(sink)
        if not any(s.histograms for s in self._sinks) and self._watcher is not None:
            self._watcher.histograms = self._spec = None  # no one left to count them for
        reason = (str(error).strip().splitlines() or [""])[0][:160]
        self._sink_notes.append(
            f"gradlens stopped writing to {type(sink).__name__}: {type(error).__name__}: {reason}"
        )


def check_sinks(sinks: Sequence[Sink]) -> tuple[list[Sink], HistogramSpec | None]:
    """Returns the sinks and the histogram spec they share (None: no sink wants histograms)."""
    from .sinks import Sink

    out = list(sinks)
    for sink in out:
        if not isinstance(sink, Sink):
            raise GradlensError(
                f"watch(sinks=[...]) takes gradlens.sinks objects (TensorBoard, Wandb), got "
                f"{type(sink).__name__}"
            )
    wanted = {(s.bins, s.hist_range, s.hist_every) for s in out if s.histograms}
    if len(wanted) > 1:
        raise GradlensError(
            "the sinks ask for different histograms (bins, hist_range, hist_every: "
            f"{sorted(wanted, key=str)}); give them the same bins=, hist_range= and hist_every="
        )
    if not wanted:
        return out, None
    bins, r, every = next(iter(wanted))
    return out, HistogramSpec(bins, every, default=None if r is None else (-r, r))
