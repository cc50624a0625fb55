"""A watched step's numbers while they wait on the device, and their trip to the host.

``Pending`` holds one recorded step's statistics as small device tensors (one ``Group`` per
device); ``to_records`` copies a batch of them to the host, one transfer per device, and turns
them into ``StepRecord``s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..records import ParamStats, StepRecord
from ..records.histograms import GradHistogram
from .nan_origin import ForwardPending

__all__ = ["Group", "Pending", "to_records"]


@dataclass
class Group:
    """The parameters of one step that share a device, and their statistics on it."""

    names: list[str]
    numels: list[int]
    light: torch.Tensor
    detail: torch.Tensor | None = None
    update: torch.Tensor | None = None
    snapshot: list[torch.Tensor] | None = None  # weights before the step, detail steps only


@dataclass
class Pending:
    """A recorded step whose numbers are still on the device."""

    step: int
    missing: tuple[str, ...]
    groups: list[Group] = field(default_factory=list)
    detail: bool = False
    loss: torch.Tensor | float | None = None
    lr: torch.Tensor | float | None = None
    scalars: dict[str, torch.Tensor | float] = field(default_factory=dict)
    backward_calls: int = 1
    optimizer: str = ""
    #: Gradient histograms a sink asked for: (name, lo, hi, counts on the device).
    hists: list[tuple[str, float, float, torch.Tensor]] = field(default_factory=list)
    forward: ForwardPending | None = None  # nan_origin's probes of the step's module calls


def to_records(
    pending: list[Pending], histograms: list[GradHistogram] | None = None
) -> list[StepRecord]:
    """Returns ``pending`` as StepRecords, after one host copy per device; their gradient
    histograms, copied in the same transfer, are appended to ``histograms`` if given."""
    host = _to_host([_device_parts(p) for p in pending])
    if histograms is not None:
        for p, values in zip(pending, host, strict=True):
            counts = values[len(values) - len(p.hists) :] if p.hists else []
            for (name, lo, hi, _), c in zip(p.hists, counts, strict=True):
                assert isinstance(c, list)
                histograms.append(GradHistogram(p.step, p.optimizer, name, lo, hi, tuple(c)))
    return [_step_record(p, values) for p, values in zip(pending, host, strict=True)]


_Part = torch.Tensor | float | None


def _device_parts(p: Pending) -> list[_Part]:
    parts: list[_Part] = [p.loss, p.lr, *p.scalars.values()]
    for g in p.groups:
        parts += [g.light, g.detail, g.update]
    if p.forward is not None:  # nan_origin: after the groups
        parts += p.forward.tensors
    return parts + [h[3] for h in p.hists]  # histograms last: _step_record leaves them


def _to_host(steps: list[list[_Part]]) -> list[list[list[float] | float | None]]:
    """Returns the parts with every tensor as Python floats: one copy per device, in order."""
    by_device: dict[torch.device, list[torch.Tensor]] = {}
    for parts in steps:
        for part in parts:
            if isinstance(part, torch.Tensor):
                by_device.setdefault(part.device, []).append(part)
    flat: dict[torch.device, list[float]] = {}
    for device, tensors in by_device.items():
        joined = torch.cat([t.detach().reshape(-1).double() for t in tensors])
        flat[device] = joined.cpu().tolist()
    offsets = dict.fromkeys(flat, 0)
    out: list[list[list[float] | float | None]] = []
    for parts in steps:
        row: list[list[float] | float | None] = []
        for part in parts:
            if isinstance(part, torch.Tensor):
                n, at = part.numel(), offsets[part.device]
                values = flat[part.device][at : at + n]
                offsets[part.device] = at + n
                row.append(values if part.dim() > 0 else values[0])
            else:
                row.append(part)
        out.append(row)
    return out


def _step_record(p: Pending, values: list[list[float] | float | None]) -> StepRecord:
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
