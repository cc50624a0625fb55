"""Records as matplotlib figures: a training run's loss, gradient norms and update ratios, and
the seeds' 2-D logistic-regression pictures.

Every function returns a :class:`matplotlib.figure.Figure` built directly (never through
``pyplot``), so nothing opens a window or touches global state; :func:`save_figure` writes one.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.image import NonUniformImage
from matplotlib.layout_engine import PlaceHolderLayoutEngine

from .._errors import GradlensError
from ..records import ParamStats, StepRecord, WatchRecord
from .files import atomic_path

__all__ = [
    "FORMATS",
    "MAX_LINES",
    "UPDATE_RATIO_REFERENCE",
    "BoundarySnapshot",
    "decision_boundary_figure",
    "probability_curve_figure",
    "save_figure",
    "training_figure",
]

#: File suffixes :func:`save_figure` understands, and the matplotlib format each one asks for.
FORMATS: dict[str, str] = {".png": "png", ".svg": "svg", ".pdf": "pdf"}
#: Up to this many parameters the gradient norms are lines with a legend; past it, a heatmap.
MAX_LINES = 12
#: The rule-of-thumb step size: an update about a thousandth of the weight's norm.
UPDATE_RATIO_REFERENCE = 1e-3
_FEW = 30  # up to this many steps, lines get point markers: one step alone is a point
_NONFINITE = "nonfinite"  # gid of the red 'x' markers that stand for nan/inf values


@dataclass(frozen=True)
class BoundarySnapshot:
    """A 2-D logistic regression at one step: weights, bias, accuracy (a fraction) and loss."""

    step: int
    w: tuple[float, float]
    b: float
    accuracy: float
    loss: float


def training_figure(record: WatchRecord) -> Figure:
    """Returns the loss, per-parameter gradient norms and update ratios of ``record`` over steps.

    A parameter missing from a step's ``grads`` is a gap; nan/inf norms are red 'x' markers at
    the top of the panel (red cells past :data:`MAX_LINES` parameters, drawn as a heatmap).
    """
    fig = Figure(figsize=(9, 9), layout="constrained")
    loss_ax, grad_ax, ratio_ax = fig.subplots(3, 1, sharex=True)
    fig.suptitle(_title(record))
    ratio_ax.set_xlabel("step")
    loss_ax.set_title("loss", loc="left", fontsize="medium")
    grad_ax.set_title("gradient norm", loc="left", fontsize="medium")
    ratio_ax.set_title("update ratio |Δw| / |w|", loc="left", fontsize="medium")
    if not record.steps:
        for ax in (loss_ax, grad_ax, ratio_ax):
            _note(ax, "no steps recorded")
        return fig
    steps = record.steps
    _plot_loss(loss_ax, steps)
    names = _param_names(record)
    own = {name: _own_steps(name, steps) for name in names}
    norms = [[s.grads[n].grad_norm if n in s.grads else math.nan for s in own[n]] for n in names]
    if not names:
        _note(grad_ax, "no gradients recorded")
    elif len(names) <= MAX_LINES:
        for i, (name, ys) in enumerate(zip(names, norms, strict=True)):
            xs = [s.step for s in own[name]]
            grad_ax.plot(xs, _finite(ys), label=name, **_style(i, steps))
        bad = [s.step for s in steps if any(_bad(s.grads[n]) for n in s.grads)]
        _mark_nonfinite(grad_ax, bad, "nan/inf grad norm")
        _log_or_note(grad_ax, norms, "every gradient norm is nan or inf")
        grad_ax.legend(fontsize="small", ncols=2 if len(names) > 6 else 1)
    else:
        _heatmap(fig, grad_ax, names, own)
    _plot_ratios(ratio_ax, names, steps)
    return fig


def decision_boundary_figure(
    points: Sequence[tuple[float, float]],
    labels: Sequence[int],
    snapshots: Sequence[BoundarySnapshot],
) -> Figure:
    """Returns one panel per snapshot: the points (class 0 red, 1 blue) and the line w·p + b = 0."""
    if len(points) != len(labels):
        raise GradlensError(
            f"got {len(points)} points but {len(labels)} labels: pass one label per point"
        )
    if not snapshots:
        raise GradlensError("no snapshots to draw: pass at least one BoundarySnapshot")
    if any(label not in (0, 1) for label in labels):
        raise GradlensError("labels must be 0 or 1 (a two-class logistic regression)")
    xs = np.array([p[0] for p in points], dtype=float)
    ys = np.array([p[1] for p in points], dtype=float)
    cls = np.array(labels, dtype=int)
    xlim, ylim = _limits(xs), _limits(ys)
    ncols = min(6, len(snapshots))
    nrows = math.ceil(len(snapshots) / ncols)
    fig = Figure(figsize=(2.8 * ncols, 2.8 * nrows), layout="constrained")
    for i, snap in enumerate(snapshots):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        ax.scatter(xs[cls == 0], ys[cls == 0], s=12, color="red", label="class 0")
        ax.scatter(xs[cls == 1], ys[cls == 1], s=12, color="blue", label="class 1")
        (w0, w1), b = snap.w, snap.b
        if abs(w1) >= abs(w0) and w1 != 0:  # y as a function of x
            ax.plot(xlim, [-(w0 * x + b) / w1 for x in xlim], color="black", label="boundary")
        elif w0 != 0:  # steep or vertical: x as a function of y
            ax.plot([-(w1 * y + b) / w0 for y in ylim], ylim, color="black", label="boundary")
        else:
            _note(ax, "no boundary: w = (0, 0)")
        ax.set_xlim(xlim)
        ax.set_ylim(ylim)
        ax.set_title(f"step {snap.step}: acc {snap.accuracy:.1%} loss {snap.loss:.4f}", fontsize=9)
        ax.tick_params(labelsize=7)
    return fig


def probability_curve_figure(
    xs: Sequence[float],
    probs: Sequence[float],
    points_x: Sequence[float],
    points_y: Sequence[float],
    *,
    xlabel: str = "hours",
    ylabel: str = "probability of pass",
) -> Figure:
    """Returns the fitted sigmoid ``probs`` over ``xs``, the training points and the 0.5 line."""
    if len(xs) != len(probs) or len(points_x) != len(points_y):
        raise GradlensError(
            f"lengths differ: {len(xs)} xs and {len(probs)} probs, {len(points_x)} points_x and "
            f"{len(points_y)} points_y; pass one y value per x value"
        )
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(list(xs), list(probs), color="tab:blue", label="model")
    ax.scatter(list(points_x), list(points_y), color="black", s=16, zorder=3, label="data")
    ax.axhline(0.5, color="red", linestyle="--", label="decision threshold")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(-0.05, 1.05)
    ax.grid(True, alpha=0.4)
    ax.legend()
    return fig


def save_figure(fig: Figure, path: str | os.PathLike[str]) -> Path:
    """Writes ``fig`` to ``path`` (.png .svg .pdf, by suffix) and returns the resolved path.

    SVG and PDF output carry no date, and a figure with a layout engine (as every figure here
    has) is laid out once and then kept so: saving the same figure twice gives the same bytes.
    """
    path = Path(path)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise GradlensError(
            f"cannot tell what to write for {str(path)!r}: the file name must end in one of "
            f"{', '.join(FORMATS)} (got {path.suffix or 'no suffix'!r})"
        )
    if not path.parent.is_dir():
        raise GradlensError(
            f"the folder {str(path.parent)!r} does not exist; create it first "
            f"(for example: mkdir -p {str(path.parent)!r}) or choose another path"
        )
    engine = fig.get_layout_engine()
    if engine is not None and not isinstance(engine, PlaceHolderLayoutEngine):
        # Laying a figure out again moves its axes by float noise, which renames SVG clip paths:
        # lay it out once and keep it so, so that every save gives the same bytes.
        fig.draw_without_rendering()
        fig.set_layout_engine("none")
    metadata = {"svg": {"Date": None}, "pdf": {"CreationDate": None}}.get(fmt)
    with matplotlib.rc_context({"svg.hashsalt": "gradlens"}), atomic_path(path) as temp:
        fig.savefig(temp, format=fmt, bbox_inches="tight", metadata=metadata)
    return path.resolve()


def _title(record: WatchRecord) -> str:
    n = len(record.steps)
    title = f"training: {n} step{'' if n == 1 else 's'} shown"
    if record.stride > 1:
        total = record.total_steps or (record.steps[-1].step + 1 if record.steps else 0)
        title += f" (every {_ordinal(record.stride)} step kept of {total})"
    return title


def _limits(values: np.ndarray) -> tuple[float, float]:
    """Returns axis limits covering ``values`` with a 10% margin (-1, 1 when there are none)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return (-1.0, 1.0)
    low, high = float(finite.min()), float(finite.max())
    margin = 0.1 * (high - low) or 1.0
    return (low - margin, high + margin)


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _param_names(record: WatchRecord) -> list[str]:
    """Returns the parameters that got a gradient in some step: declared order, then the rest."""
    seen = dict.fromkeys(name for s in record.steps for name in s.grads)
    names = [p.name for p in record.params if p.name in seen]
    return names + [name for name in seen if name not in names]


def _bad(stats: ParamStats) -> bool:
    return stats.nonfinite or not math.isfinite(stats.grad_norm)


def _finite(values: Sequence[float]) -> list[float]:
    return [v if math.isfinite(v) else math.nan for v in values]


def _marker(steps: Sequence[StepRecord]) -> str | None:
    return "." if len(steps) <= _FEW else None


def _style(i: int, steps: Sequence[StepRecord]) -> dict[str, Any]:
    """Returns parameter ``i``'s line style, the same in every panel (dashed past 10 colours)."""
    return {"color": f"C{i % 10}", "linestyle": "-" if i < 10 else "--", "marker": _marker(steps)}


def _note(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="gray")


def _mark_nonfinite(ax: Axes, xs: Sequence[float], label: str) -> None:
    """Draws red 'x' markers at the top of ``ax`` at ``xs``, so nan/inf are never dropped."""
    if xs:
        ax.plot(xs, [0.96] * len(xs), "x", color="red", label=label, gid=_NONFINITE,
                transform=ax.get_xaxis_transform(), clip_on=False)  # fmt: skip


def _log_or_note(ax: Axes, series: Sequence[Sequence[float]], empty: str) -> None:
    """Sets a log y scale, or notes ``empty`` when nothing is finite and positive to show."""
    if any(math.isfinite(v) and v > 0 for ys in series for v in ys):
        ax.set_yscale("log")
    else:
        _note(ax, empty)


def _own_steps(name: str, steps: Sequence[StepRecord]) -> list[StepRecord]:
    """Returns the steps of the optimizer that holds ``name`` (the first to list it, with or
    without a gradient): its own step numbers, never another optimizer's."""
    first = next((s for s in steps if name in s.grads or name in s.missing), None)
    if first is None:
        return []
    return [s for s in steps if s.optimizer == first.optimizer]


def _plot_loss(ax: Axes, steps: Sequence[StepRecord]) -> None:
    optimizers = list(dict.fromkeys(s.optimizer for s in steps))
    loss = [(s.step, s.loss) for s in steps if s.loss is not None]
    names = dict.fromkeys(k for s in steps for k in s.scalars if k != "epoch")
    if not loss and not names:
        _note(ax, "no loss recorded: pass lens.log(loss=loss)")
        return
    for j, optimizer in enumerate(optimizers):  # one line per optimizer: each has its own loss
        xy = [(s.step, s.loss) for s in steps if s.loss is not None and s.optimizer == optimizer]
        if not xy:
            continue
        label = "loss" if len(optimizers) == 1 else f"loss ({optimizer or 'steps'})"
        ax.plot([x for x, _ in xy], _finite([y for _, y in xy]), label=label,
                color="black" if j == 0 else "dimgray", linestyle=("-", "--", ":", "-.")[j % 4],
                marker=_marker(steps))  # fmt: skip
        _mark_nonfinite(ax, [x for x, y in xy if not math.isfinite(y)], "nan/inf loss")
    if loss:
        ax.set_ylabel("loss")
    other = ax.twinx() if loss and names else ax
    for i, name in enumerate(names):
        xy = [(s.step, s.scalars[name]) for s in steps if name in s.scalars]
        other.plot([x for x, _ in xy], _finite([y for _, y in xy]), linestyle="--",
                   color=f"C{i}", label=name, marker=_marker(steps))  # fmt: skip
    handles = ax.get_legend_handles_labels()
    if other is not ax:
        extra = other.get_legend_handles_labels()
        handles = (handles[0] + extra[0], handles[1] + extra[1])
    ax.legend(*handles, fontsize="small")


def _heatmap(fig: Figure, ax: Axes, names: list[str], own: dict[str, list[StepRecord]]) -> None:
    """Draws log10 of the norms as a parameters × steps image; nan/inf cells are red, and cells
    without a gradient (or with a zero norm) are left blank. Each row reads its own
    optimizer's steps (a GAN's two optimizers both have a step 0)."""
    numbers = sorted({s.step for steps in own.values() for s in steps})
    xs = [float(x) for x in numbers]
    at = [{s.step: s for s in own[n]} for n in names]
    cells = [[row.get(x) for x in numbers] for row in at]
    data = np.array(
        [[c.grads[n].grad_norm if c and n in c.grads else math.nan for c in row]
         for n, row in zip(names, cells, strict=True)],
        dtype=float,
    )  # fmt: skip
    missing = np.array(
        [[c is None or n not in c.grads for c in row] for n, row in zip(names, cells, strict=True)]
    )
    bad = np.array(
        [[c is not None and n in c.grads and _bad(c.grads[n]) for c in row]
         for n, row in zip(names, cells, strict=True)]
    )  # fmt: skip
    with np.errstate(divide="ignore"):
        logs = np.ma.masked_invalid(np.log10(np.where(bad | missing, np.nan, data)))
    ys = [float(i) for i in range(len(names))]
    half = (xs[-1] - xs[0]) / (2 * (len(xs) - 1)) if len(xs) > 1 else 0.5  # half a column
    extent = (xs[0] - half, xs[-1] + half, len(names) - 0.5, -0.5)
    red = np.ma.masked_array(np.zeros(bad.shape), mask=~bad)
    images = []
    for values, cmap in ((logs, "viridis"), (red, ListedColormap(["red"]))):
        image = NonUniformImage(ax, interpolation="nearest", cmap=cmap)
        image.set_data(xs, ys, values)
        image.set_extent(extent)  # drawing uses xs and ys; layout needs an extent too
        images.append(ax.add_image(image))
    images[1].set_gid(_NONFINITE)
    ax.set_xlim(extent[:2])
    ax.set_ylim(extent[2:])
    ax.set_yticks(ys, names, fontsize=max(4, 9 - len(names) // 12))
    fig.colorbar(images[0], ax=ax, label="log10 norm (red: nan/inf, blank: no grad)")


def _plot_ratios(ax: Axes, names: list[str], steps: Sequence[StepRecord]) -> None:
    """Draws each parameter's update ratio on the (detail) steps where it was measured."""
    series: list[list[float]] = []
    bad: set[int] = set()
    for i, name in enumerate(names):
        mine = _own_steps(name, steps)
        xy = [(s.step, s.grads[name].update_ratio) for s in mine if name in s.grads]
        known = [(x, y) for x, y in xy if y is not None]
        if known:
            series.append([y for _, y in known])
            bad.update(x for x, y in known if not math.isfinite(y))
            label = name if len(names) <= MAX_LINES else None
            style = {**_style(i, steps), "marker": "."}
            ax.plot([x for x, _ in known], _finite(series[-1]), label=label, **style)
    _mark_nonfinite(ax, sorted(bad), "nan/inf update ratio")
    if not series:
        _note(ax, "no update ratios: they are measured on detail steps (watch(detail_every=...))")
        return
    ax.axhline(UPDATE_RATIO_REFERENCE, color="gray", linestyle=":", label="1e-3 rule of thumb")
    _log_or_note(ax, series, "every update ratio is nan, inf or 0")
    ax.legend(fontsize="small", ncols=2 if len(series) > 6 else 1)
