"""A watched step's numbers while they wait on the device, and their trip to the host.

``Pending`` holds one recorded step's statistics as ``Slot``s of the watch's ``Stash`` (one
``Group`` per device); ``to_records`` turns a batch of them, with the ``Taken`` host copies of
the stash, into ``StepRecord``s. ``resolve`` reads a step's slots early (a step still open when
the stash is emptied).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..records import ParamStats, StepRecord
from ..records.histograms import GradHistogram
from .nan_origin import ForwardPending
from .stash import Slot, Stash, Taken

__all__ = ["Group", "Part", "Pending", "resolve", "stash_part", "to_records"]

#: A number or numbers waiting in the stash, or read already (or never on a device).
Part = Slot | float | list[float] | None


@dataclass
class Group:
    """The parameters of one step that share a device, and their statistics on it."""

    names: list[str]
    numels: list[int]
    light: Part
    detail: Part = None
    update: Part = None
    snapshot: list[torch.Tensor] | None = None  # weights before the step, detail steps only


@dataclass
class Pending:
    """A recorded step whose numbers are still on the device."""

    step: int
    missing: tuple[str, ...]
    groups: list[Group] = field(default_factory=list)
    detail: bool = False
    #: The step's loss: lens.log's, or the backward calls' losses (summed on the host),
    #: divided by ``loss_scale`` (an AMP scale a framework announced) if there is one.
    loss: Part | tuple[Part, ...] = None
    loss_scale: Part = None
    lr: Part = None
    scalars: dict[str, Part] = field(default_factory=dict)
    backward_calls: int = 1
    optimizer: str = ""
    #: Gradient histograms a sink asked for: (name, lo, hi, counts).
    hists: list[tuple[str, float, float, Part]] = field(default_factory=list)
    forward: ForwardPending | None = None  # nan_origin's probes of the step's module calls


def stash_part(stash: Stash, value: torch.Tensor | float | None) -> Part:
    """Returns ``value`` as a part: a tensor is put in ``stash``, a number kept as is."""
    return stash.put(value) if isinstance(value, torch.Tensor) else value


def resolve(p: Pending, taken: Taken) -> None:
    """Replaces the slots of ``p`` (all of ``taken``'s generation) by their host values."""
    read = taken.value
    p.loss = tuple(read(x) for x in p.loss) if isinstance(p.loss, tuple) else read(p.loss)
    p.lr, p.loss_scale = read(p.lr), read(p.loss_scale)
    p.scalars = {name: read(v) for name, v in p.scalars.items()}
    for g in p.groups:
        g.light, g.detail, g.update = read(g.light), read(g.detail), read(g.update)
    if p.forward is not None:
        p.forward.tensors = [read(t) for t in p.forward.tensors]
    p.hists = [(name, lo, hi, read(c)) for name, lo, hi, c in p.hists]


def to_records(
    pending: list[Pending], taken: Taken, histograms: list[GradHistogram] | None = None
) -> list[StepRecord]:
    """Returns ``pending`` as StepRecords, reading their slots from ``taken`` (the stash's
    host copies); their gradient histograms are appended to ``histograms`` if given."""
    for p in pending:
        resolve(p, taken)
    host = [_parts(p) for p in pending]
    if histograms is not None:
        for p, values in zip(pending, host, strict=True):
            counts = values[len(values) - len(p.hists) :] if p.hists else []
            for (name, lo, hi, _), c in zip(p.hists, counts, strict=True):
                assert isinstance(c, list)
                histograms.append(GradHistogram(p.step, p.optimizer, name, lo, hi, tuple(c)))
    return [_step_record(p, values) for p, values in zip(pending, host, strict=True)]


def _loss(p: Pending) -> Part:
    """Returns the step's loss as one number (``p`` resolved), or None."""
    loss = p.loss
    if isinstance(loss, tuple):
        values = [x for x in loss if isinstance(x, float)]
        loss = None if not values else values[0] if len(values) == 1 else math.fsum(values)
    scale = p.loss_scale
    if isinstance(loss, float) and isinstance(scale, float):
        return loss / scale
    return loss


def _parts(p: Pending) -> list[Part]:
    parts: list[Part] = [_loss(p), p.lr, *p.scalars.values()]
    for g in p.groups:
        parts += [g.light, g.detail, g.update]
    if p.forward is not None:  # nan_origin: after the groups
        parts += p.forward.tensors
    return parts + [h[3] for h in p.hists]  # histograms last: _step_record leaves them


def _step_record(p: Pending, values: list[Part]) -> StepRecord:
    loss, lr = values[0], values[1]
    n_scalars = len(p.scalars)
    scalars = values[2 : 2 + n_scalars]
    rest = values[2 + n_scalars : 2 + n_scalars + 3 * len(p.groups)]
    forward = (
        (0, True, ())
        if p.forward is None
        else p.forward.records(
            values[2 + n_scalars + 3 * len(p.groups) : len(values) - len(p.hists)]  # type: ignore[arg-type]
        )
    )
    grads: dict[str, ParamStats] = {}
    for g, (light, detail, update) in zip(
        p.groups, zip(rest[0::3], rest[1::3], rest[2::3], strict=True), strict=True
    ):
        k = len(g.names)
        for j, (name, n) in enumerate(zip(g.names, g.numels, strict=True)):
            assert isinstance(light, list)
            fields = _light(light[j], light[k + j], light[2 * k + j], light[3 * k + j], n)
            if isinstance(detail, list):
                nonzero, nonfinite, nans, wsq = (detail[r * k + j] for r in range(4))
                wnorm = math.sqrt(wsq)
                upd = math.sqrt(update[j]) if isinstance(update, list) else None
                grads[name] = ParamStats(
                    *fields,
                    zero_frac=1.0 - nonzero / n if n else 0.0,
                    nan=int(nans),
                    inf=int(nonfinite - nans),
                    weight_norm=wnorm,
                    update_ratio=None if upd is None else _ratio(upd, wnorm),
                )
            else:
                grads[name] = ParamStats(*fields)
    return StepRecord(
        step=p.step,
        grads=grads,
        missing=p.missing,
        loss=loss if isinstance(loss, float) else None,
        lr=lr if isinstance(lr, float) else None,
        backward_calls=p.backward_calls,
        detail=p.detail,
        optimizer=p.optimizer,
        forward_calls=forward[0],
        forward_complete=forward[1],
        forward_nonfinite=forward[2],
        scalars={
            name: v for name, v in zip(p.scalars, scalars, strict=True) if isinstance(v, float)
        },
    )


_CANCELLATION = 1e-6


def _light(
    sumsq: float, total: float, lo: float, hi: float, n: int
) -> tuple[float, float, float, float, bool]:
    """Returns the light ParamStats fields from a gradient's sum of squares, sum, min, max."""
    if n == 0:
        return (0.0, 0.0, 0.0, 0.0, False)
    norm = math.sqrt(sumsq) if sumsq >= 0 or math.isnan(sumsq) else math.nan
    finite = math.isfinite(lo) and math.isfinite(hi)
    mean = total / n
    var = sumsq / n - mean * mean if finite else math.nan
    # Both terms are float32 sums: a difference below ~1e-6 of them is rounding, not spread.
    if var < _CANCELLATION * sumsq / n:
        var = 0.0
    gmax = math.nan if math.isnan(lo) or math.isnan(hi) else max(abs(lo), abs(hi))
    return (norm, mean, math.sqrt(var), gmax, not finite)


def _ratio(update: float, weight: float) -> float | None:
    if weight == 0.0:
        return None if update == 0.0 else math.inf
    return update / weight
