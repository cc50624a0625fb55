"""``GradlensCallback`` for Lightning's ``Trainer``: ``watch()``'s statistics and findings, measured
in ``on_before_optimizer_step``.

That hook runs once per optimizer step, after the last micro-batch of an accumulation window
(``accumulate_grad_batches``) and after AMP's loss scaler unscaled the gradients, and before
Lightning clips them (``gradient_clip_val``): the statistics are those of the accumulated,
unscaled, unclipped gradients. A step the loss scaler skips (non-finite gradients while it
finds its scale) counts as a step with no record, as ``watch()`` never sees it either.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from rich.console import Console

from .._lens import DEFAULT_HISTORY, Lens
from ..capture.watch import DETAIL_EVERY
from ..sinks import Sink
from ._common import FrameworkLens, missing_extra

try:
    from lightning.pytorch.callbacks import Callback
except ImportError as _missing:
    raise missing_extra("lightning", "lightning", _missing) from None

__all__ = ["GradlensCallback"]


class GradlensCallback(Callback):
    """Watches a Lightning training run: ``Trainer(callbacks=[GradlensCallback()])``.

    The options are ``watch()``'s (``every``, ``detail_every``, ``live``, ``history``,
    ``sinks``); ``report`` prints the report when training ends, ``json`` and ``plot`` write
    the record and the training plots there. ``callback.lens`` is the ``Lens`` (its
    ``steps``, ``diagnostics``, ``record``), kept after training. The model's parameters
    and ``trainer.optimizers`` are watched from ``on_train_start`` to ``on_train_end`` (or
    the exception that ends training).
    """

    def __init__(
        self,
        *,
        every: int = 1,
        detail_every: int = DETAIL_EVERY,
        live: bool | None = False,
        history: int = DEFAULT_HISTORY,
        sinks: Sequence[Sink] = (),
        report: bool = True,
        json: str | os.PathLike[str] | None = None,
        plot: str | os.PathLike[str] | None = None,
        console: Console | None = None,
    ) -> None:
        super().__init__()
        self._watch = FrameworkLens(
            every=every,
            detail_every=detail_every,
            live=live,
            history=history,
            sinks=sinks,
            report=report,
            json=json,
            plot=plot,
            console=console,
        )

    @property
    def lens(self) -> Lens | None:
        """Returns the ``Lens`` of the last training run (None before one started)."""
        return self._watch.lens

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self._watch.start(pl_module, trainer.optimizers)

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        self._watch.before_step(optimizer, scaler)

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._watch.settle(trainer.optimizers)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self._watch.settle(trainer.optimizers)
        self._watch.stop()

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self._watch.stop(exception)
