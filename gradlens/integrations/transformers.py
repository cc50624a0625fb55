"""``GradlensCallback`` for Hugging Face's ``Trainer``: ``watch()``'s statistics and findings,
measured in ``on_pre_optimizer_step``.

That hook runs once per optimizer step, after the last micro-batch of an accumulation window
(``gradient_accumulation_steps``), after the Trainer unscaled (fp16 AMP) and clipped
(``max_grad_norm``) the gradients, and before ``optimizer.step()``: the statistics are those
of the gradients the step uses. A step the loss scaler skips (non-finite fp16 gradients)
counts as a step with no record, as ``watch()`` never sees it either.
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
    from transformers import TrainerCallback
except ImportError as _missing:
    raise missing_extra("transformers", "transformers", _missing) from None

__all__ = ["GradlensCallback"]


class GradlensCallback(TrainerCallback):
    """Watches a Hugging Face training run: ``Trainer(..., callbacks=[GradlensCallback()])``.

    The options are ``watch()``'s (``every``, ``detail_every``, ``live``, ``history``,
    ``sinks``); ``report`` prints the report when training ends, ``json`` and ``plot`` write
    the record and the training plots there. ``callback.lens`` is the ``Lens``, kept after
    training. The model's parameters and the Trainer's optimizer are watched from
    ``on_train_begin`` to ``on_train_end``. The Trainer has no event for a training run that
    raises: use the callback as a context manager (``with GradlensCallback() as cb:``
    around ``trainer.train()``) so that the hooks are removed then too.
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
        self._optimizer: Any = None

    @property
    def lens(self) -> Lens | None:
        """Returns the ``Lens`` of the last training run (None before one started)."""
        return self._watch.lens

    def __enter__(self) -> GradlensCallback:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self._watch.stop(exc)  # training raised before on_train_end: the hooks go now

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._optimizer = kwargs.get("optimizer")
        self._watch.start(kwargs["model"], [self._optimizer])

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        optimizer = kwargs.get("optimizer", self._optimizer)
        self._watch.before_step(optimizer, getattr(optimizer, "scaler", None))

    def on_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._watch.settle([kwargs.get("optimizer", self._optimizer)])

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._watch.settle([kwargs.get("optimizer", self._optimizer)])
        self._watch.stop()
        self._optimizer = None
