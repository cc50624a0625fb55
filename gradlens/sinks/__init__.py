"""Sinks: where a watched loop's records go besides the report, after each batched host copy.

``watch(model, opt, sinks=[gradlens.sinks.TensorBoard("runs/x"), gradlens.sinks.Wandb(run)])``
writes per-parameter scalars (the ``ParamStats`` fields), step scalars (loss, learning rate,
``lens.log`` values), gradient histograms counted on the device, and the findings as text.
A sink only ever sees host records: it adds no host copy of its own.
"""

from ._base import Sink, scalars_of
from .tensorboard import TensorBoard
from .wandb import Wandb

__all__ = ["Sink", "TensorBoard", "Wandb", "scalars_of"]
