"""What both callbacks share: a ``Lens`` whose steps the framework announces, the files and
the report at the end, and the optimizers behind a framework's wrappers."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch.optim import Optimizer

from .._errors import GradlensError
from .._errors import missing_extra as _missing_extra
from .._lens import Lens
from ..capture.watch import Watcher
from ..sinks import Sink

__all__ = ["FrameworkLens", "innermost", "missing_extra", "scale_of"]


def missing_extra(package: str, extra: str, error: ImportError) -> GradlensError:
    """Returns the error for a framework that is not installed, naming the extra to install."""
    return _missing_extra(f"gradlens.integrations.{extra}", package, extra, error)


def innermost(optimizer: Any) -> Optimizer | None:
    """Returns the torch optimizer behind a framework's wrapper (Lightning's
    ``LightningOptimizer._optimizer``, Accelerate's ``AcceleratedOptimizer.optimizer``)."""
    for _ in range(8):
        inner = getattr(optimizer, "_optimizer", None) or getattr(optimizer, "optimizer", None)
        if isinstance(inner, Optimizer):
            optimizer = inner
        else:
            break
    return optimizer if isinstance(optimizer, Optimizer) else None


def scale_of(scaler: Any) -> torch.Tensor | None:
    """Returns an AMP ``GradScaler``'s current scale as the device tensor it keeps (no sync),
    or None when there is no enabled scaler."""
    if scaler is None or not getattr(scaler, "is_enabled", lambda: False)():
        return None
    scale = getattr(scaler, "_scale", None)
    return scale if isinstance(scale, torch.Tensor) else None


class FrameworkLens:
    """The options and the ``Lens`` of one callback: ``start`` when training starts, ``stop``
    when it ends (also when it raises); files and the report are written at ``stop``."""

    def __init__(
        self,
        *,
        every: int,
        detail_every: int,
        live: bool | None,
        history: int,
        sinks: Sequence[Sink],
        report: bool,
        json: str | os.PathLike[str] | None,
        plot: str | os.PathLike[str] | None,
        console: Console | None,
    ) -> None:
        from .._lens import check_sinks, watch

        watch(every=every, detail_every=detail_every, live=live, history=history)  # checks
        check_sinks(sinks)
        for path in (json, plot):
            if path is not None and not isinstance(path, (str, os.PathLike)):
                raise GradlensError(f"a file path is a str or Path, got {type(path).__name__}")
        self.every, self.detail_every, self.live, self.history = every, detail_every, live, history
        self.sinks = list(sinks)
        self.report, self.console = report, console
        self.json = None if json is None else Path(json)
        self.plot = None if plot is None else Path(plot)
        self.lens: Lens | None = None
        self._active = False

    def start(self, model: torch.nn.Module, optimizers: Iterable[Any]) -> Lens:
        """Starts watching ``model``'s parameters and the optimizers' announced steps."""
        self.stop()  # a previous run that never reached its end
        opts = [o for o in (innermost(x) for x in optimizers) if o is not None]
        if self.json is not None or self.plot is not None:
            from ..render.files import check_writable

            for path in (self.json, self.plot):
                if path is not None:
                    check_writable(path)  # before training: a bad path costs no run
        watcher = Watcher(
            dict(model.named_parameters()),
            opts,
            every=self.every,
            detail_every=self.detail_every,
            external=True,
        )
        self.lens = Lens(
            watcher,
            live=self.live,
            history=self.history,
            every=self.every,
            console=self.console,
            sinks=self.sinks,
        )
        self.lens.__enter__()
        self._active = True
        return self.lens

    def before_step(self, optimizer: Any, scaler: Any = None) -> None:
        """The framework has ``optimizer``'s final gradients for its next step."""
        opt = innermost(optimizer)
        if self._active and self.lens is not None and opt is not None:
            watcher = self.lens._watcher
            if watcher is not None:
                watcher.before_step(opt, scale_of(scaler))

    def settle(self, optimizers: Iterable[Any]) -> None:
        """After the framework's step: an announced step whose ``step()`` never ran was
        skipped (the AMP loss scaler found non-finite gradients)."""
        if not self._active or self.lens is None or self.lens._watcher is None:
            return
        for optimizer in optimizers:
            opt = innermost(optimizer)
            if opt is not None:
                self.lens._watcher.step_skipped(opt)

    def stop(self, exc: BaseException | None = None) -> None:
        """Stops watching (hooks removed), then prints the report and writes the files."""
        if not self._active or self.lens is None:
            return
        self._active = False
        lens = self.lens
        try:
            lens.__exit__(type(exc) if exc is not None else None, exc, None)
        finally:
            if self.report:
                lens.report(self.console)
            if self.json is not None:
                from .._io import save

                save(lens, self.json)
            if self.plot is not None and lens.record.steps:
                lens.plot(self.plot)
