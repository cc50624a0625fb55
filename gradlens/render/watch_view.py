"""A watched training run as rich renderables and plain text: pure functions of a WatchRecord.

``live_view`` is the body of a rich ``Live`` display while training runs, ``compact_line`` one
plain line per update for logs and pipes, ``watch_report`` the summary printed afterwards
(``lens.report()``). ``format_*`` return the renderables as plain text, for tests and logs.

Numbers are formatted by one deterministic rule (``_num``: 4 significant digits, scientific
below 1e-3 and from 1e4 up, ``nan``/``inf`` for non-finite values) and rows come in a fixed
order, so the text can be compared with a golden file. User text (parameter names, messages)
is always wrapped in :class:`rich.text.Text`, so a name such as ``"[red]x"`` is printed as it
is, never read as rich markup.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from ..records import ParamInfo, ParamStats, StepRecord, WatchRecord, format_shape
from .terminal import diagnostics_list, to_text

__all__ = [
    "DEFAULT_TOP",
    "LOSS_WINDOW",
    "NOTHING_WATCHED",
    "TREND_WINDOW",
    "compact_line",
    "format_live_view",
    "format_watch_report",
    "live_view",
    "sparkline",
    "watch_report",
]

#: How many parameters with the largest (and with the smallest) gradient norm ``live_view`` lists.
DEFAULT_TOP = 5
#: The live loss change compares the latest loss with the one this many kept steps earlier.
LOSS_WINDOW = 10
#: The live trend sparkline covers this many kept steps.
TREND_WINDOW = 20

WAITING = "waiting for the first optimizer step…"
#: What the report and ``lens.plot`` say when no step was seen at all.
NOTHING_WATCHED = (
    "nothing to watch: no optimizer stepped and no parameter was updated in place "
    "(under torch.no_grad() or through .data) after a backward"
)

_BARS = "▁▂▃▄▅▆▇█"
_FLAT = "▄"  # a series that does not change: a level line in the middle
_NO_GRAD = "·"  # a step in which the parameter received no gradient
_NONFINITE = "!"  # a nan or infinite value

_SEP = "  ·  "


# ---------------------------------------------------------------------------------------------
# numbers


def _num(x: float | None) -> str:
    """Returns ``x`` with 4 significant digits; scientific below 1e-3 and from 1e4 up.

    ``nan``, ``inf`` and ``-inf`` for non-finite values, ``0`` for zero, ``—`` for None.
    """
    if x is None:
        return "—"
    x = float(x)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if x == 0:
        return "0"
    if 1e-3 <= abs(x) < 1e4:
        text = f"{x:.4g}"
        if "e" not in text:  # 9999.7 rounds to 1e+04 under .4g: written as below instead
            return text
    return _sci(x, 4)


def _sci(x: float, digits: int = 2) -> str:
    """Returns ``x`` in scientific notation with ``digits`` significant digits: ``1.2e-01``."""
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    text = f"{x:.{digits - 1}e}"
    if digits > 2:  # the long form drops trailing zeros: 5.000e-04 -> 5e-04
        mantissa, _, exponent = text.partition("e")
        if "." in mantissa:
            mantissa = mantissa.rstrip("0").rstrip(".")
        text = f"{mantissa}e{exponent}"
    return text


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def _bad(stats: ParamStats) -> bool:
    """Whether this gradient holds a nan or infinite element (or its norm overflowed)."""
    return stats.nonfinite or not math.isfinite(stats.grad_norm)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


# ---------------------------------------------------------------------------------------------
# sparkline


def sparkline(values: Sequence[float | None]) -> str:
    """Returns one character per value: ``▁▂▃▄▅▆▇█`` scaled linearly from the smallest finite
    value to the largest, ``·`` for None (no gradient that step), ``!`` for nan or inf.

    A series whose finite values are all equal is a level line of ``▄``.
    """
    finite = [v for v in values if v is not None and math.isfinite(v)]
    lo, hi = (min(finite), max(finite)) if finite else (0.0, 0.0)
    chars = []
    for v in values:
        if v is None:
            chars.append(_NO_GRAD)
        elif not math.isfinite(v):
            chars.append(_NONFINITE)
        elif hi == lo:
            chars.append(_FLAT)
        else:
            level = round((v - lo) / (hi - lo) * (len(_BARS) - 1))
            chars.append(_BARS[min(max(level, 0), len(_BARS) - 1)])
    return "".join(chars)


# ---------------------------------------------------------------------------------------------
# what the renderers share


def _param_names(record: WatchRecord) -> list[str]:
    """Returns ``record.params`` names in order, then any name only the steps know."""
    names = [p.name for p in record.params]
    seen = set(names)
    for step in record.steps:
        for name in (*step.grads, *step.missing):
            if name not in seen:
                seen.add(name)
                names.append(name)
    return names


def _infos(record: WatchRecord) -> dict[str, ParamInfo]:
    return {p.name: p for p in record.params}


def _shape(info: ParamInfo | None) -> Text:
    return Text(format_shape(info.shape) if info is not None else "")


def _last_update_ratio(steps: Sequence[StepRecord], name: str) -> float | None:
    """Returns ``name``'s update ratio from the latest detail step that measured it."""
    for step in reversed(steps):
        stats = step.grads.get(name)
        if step.detail and stats is not None and stats.update_ratio is not None:
            return stats.update_ratio
    return None


def _losses(steps: Sequence[StepRecord], optimizer: str | None = None) -> list[float]:
    return [
        s.loss
        for s in steps
        if s.loss is not None and (optimizer is None or s.optimizer == optimizer)
    ]


def _optimizers(record: WatchRecord) -> list[str]:
    """Returns the optimizers that stepped, in the order of their first kept step."""
    return list(dict.fromkeys(s.optimizer for s in record.steps))


def _epoch(step: StepRecord) -> str | None:
    epoch = step.scalars.get("epoch")
    if epoch is None:
        return None
    epoch = float(epoch)
    return str(int(epoch)) if math.isfinite(epoch) and epoch.is_integer() else _num(epoch)


# ---------------------------------------------------------------------------------------------
# live view


def live_view(record: WatchRecord, *, top: int = DEFAULT_TOP) -> RenderableType:
    """Returns the body of a rich ``Live`` display of a run in progress.

    A header (steps seen, epoch if logged, latest loss and its change over the last
    ``LOSS_WINDOW`` kept steps, learning rate); a table of the ``top`` parameters with the largest
    and the ``top`` with the smallest gradient norm at the latest step (all of them, by norm,
    when there are at most ``2 * top``), non-finite ones first; the parameters that got no
    gradient; then the findings so far. Before the first step: one "waiting" line.
    """
    if top < 1:
        raise ValueError(f"top must be at least 1, got {top}")
    parts: list[RenderableType] = []
    if not record.steps:
        parts.append(Text(WAITING, style="dim"))
    else:
        parts.append(_live_header(record))
        latest = record.steps[-1]
        if latest.grads:
            parts.append(_live_table(record, top))
        else:
            parts.append(Text("no parameter received a gradient at the latest step", "yellow"))
        if latest.missing:
            parts.append(_missing_line(latest.missing))
    if record.diagnostics:
        parts += [Text("findings", style="bold"), diagnostics_list(record.diagnostics)]
    return Group(*parts)


def format_live_view(record: WatchRecord, width: int = 100, *, top: int = DEFAULT_TOP) -> str:
    """Returns :func:`live_view` as plain text."""
    return to_text(live_view(record, top=top), width)


def _live_header(record: WatchRecord) -> Text:
    latest = record.steps[-1]
    text = Text(f"step {record.total_steps}", style="bold")
    epoch = _epoch(latest)
    if epoch is not None:
        text.append(f"{_SEP}epoch {epoch}")
    if latest.loss is not None:
        text.append(_SEP)
        text.append(f"loss {_num(latest.loss)}", style="bold")
        if len(_optimizers(record)) > 1:
            text.append(f" ({latest.optimizer})")
        earlier = _losses(record.steps[-LOSS_WINDOW:-1], latest.optimizer)
        if earlier:
            text.append_text(_loss_change(earlier[0], latest.loss))
    if latest.lr is not None:
        text.append(f"{_SEP}lr {_num(latest.lr)}")
    return text


def _loss_change(before: float, now: float) -> Text:
    if not (math.isfinite(before) and math.isfinite(now)):
        return Text(f" (from {_num(before)})", style="red" if math.isfinite(before) else "")
    if now < before:
        return Text(f" ↓ from {_num(before)}", style="green")
    if now > before:
        return Text(f" ↑ from {_num(before)}", style="yellow")
    return Text(f" = from {_num(before)}", style="dim")


def _live_table(record: WatchRecord, top: int) -> Table:
    latest = record.steps[-1]
    order = {name: i for i, name in enumerate(_param_names(record))}

    def key(name: str) -> tuple[int, float, int, str]:
        stats = latest.grads[name]
        norm = stats.grad_norm
        return (0 if _bad(stats) else 1, -norm if _finite(norm) else 0.0, order[name], name)

    ranked = sorted(latest.grads, key=key)
    hidden = 0
    if len(ranked) > 2 * top:
        hidden = len(ranked) - 2 * top
        shown: list[str | None] = [*ranked[:top], None, *ranked[-top:]]
    else:
        shown = list(ranked)

    table = Table(
        title="gradients at the latest step"
        + (f" (largest and smallest {top} of {len(ranked)})" if hidden else ""),
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    table.add_column("param", style="bold", overflow="fold")
    table.add_column("shape", overflow="fold")
    table.add_column("grad norm", justify="right", overflow="fold")
    table.add_column("max |g|", justify="right", overflow="fold")
    table.add_column("mean", justify="right", overflow="fold")
    table.add_column("upd ratio", justify="right", overflow="fold")
    table.add_column(f"trend ({TREND_WINDOW})", overflow="fold")
    table.add_column("", no_wrap=True)
    infos = _infos(record)
    window = record.steps[-TREND_WINDOW:]
    for name in shown:
        if name is None:
            table.add_row(Text(f"… {hidden} more", style="dim"))
            continue
        stats = latest.grads[name]
        bad = _bad(stats)
        trend = sparkline([s.grads[name].grad_norm if name in s.grads else None for s in window])
        table.add_row(
            Text(name),
            _shape(infos.get(name)),
            Text(_num(stats.grad_norm)),
            Text(_num(stats.grad_max)),
            Text(_num(stats.grad_mean)),
            Text(_num(_last_update_ratio(record.steps, name))),
            Text(trend, style="cyan"),
            Text("NaN/Inf", style="bold red") if bad else Text(""),
            style="red" if bad else None,
        )
    return table


def _missing_line(missing: Sequence[str], limit: int = 5) -> Text:
    text = Text("no gradient at the latest step: ", style="yellow")
    text.append(", ".join(missing[:limit]))
    if len(missing) > limit:
        text.append(f" … {len(missing) - limit} more", style="dim")
    return text


# ---------------------------------------------------------------------------------------------
# compact line


def compact_line(record: WatchRecord) -> str:
    """Returns one plain-text line on the run so far, for logs and pipes, e.g.

    ``step 120 | loss 0.4123 | lr 0.01 | grad norm 1.2e-01 .. 3.4e+00 (fc2.weight .. fc1.bias)
    | NaN/Inf in 1 param | 2 findings``: steps seen, the latest loss and learning rate if
    known, the smallest and largest finite gradient norm at the latest step with their
    parameters, how many parameters had a nan or infinite gradient, and the number of findings.
    """
    parts = [f"step {record.total_steps}"]
    if not record.steps:
        parts.append("no optimizer step yet")
    else:
        latest = record.steps[-1]
        if latest.loss is not None:
            parts.append(f"loss {_num(latest.loss)}")
        if latest.lr is not None:
            parts.append(f"lr {_num(latest.lr)}")
        names = [n for n in _param_names(record) if n in latest.grads]
        finite = [n for n in names if not _bad(latest.grads[n])]
        if finite:
            low = min(finite, key=lambda n: latest.grads[n].grad_norm)
            high = max(finite, key=lambda n: latest.grads[n].grad_norm)
            lo, hi = latest.grads[low].grad_norm, latest.grads[high].grad_norm
            if low == high:
                parts.append(f"grad norm {_sci(lo)} ({low})")
            else:
                parts.append(f"grad norm {_sci(lo)} .. {_sci(hi)} ({low} .. {high})")
        elif not names:
            parts.append("no gradients")
        bad = len(names) - len(finite)
        if bad:
            parts.append(f"NaN/Inf in {_plural(bad, 'param')}")
    parts.append(_plural(len(record.diagnostics), "finding"))
    return " | ".join(parts)


# ---------------------------------------------------------------------------------------------
# report


def watch_report(record: WatchRecord) -> RenderableType:
    """Returns the summary of a watched run: a title line (steps kept of those seen, how they
    were thinned, first and last loss), one row per parameter in ``record.params`` order, then
    the findings, or "no problems found".
    """
    parts: list[RenderableType] = [_report_title(record)]
    nothing = record.total_steps == 0 and not record.steps
    if nothing:
        parts.append(Text(NOTHING_WATCHED, style="yellow"))
    else:
        parts.append(_param_table(record))
    for note in record.notes:
        parts.append(Text(note, style="yellow"))
    if record.diagnostics:
        parts += [Text("findings", style="bold"), diagnostics_list(record.diagnostics)]
    elif not nothing:
        parts.append(Text("no problems found", style="green"))
    return Group(*parts)


def format_watch_report(record: WatchRecord, width: int = 100) -> str:
    """Returns :func:`watch_report` as plain text."""
    return to_text(watch_report(record), width)


def _report_title(record: WatchRecord) -> Text:
    text = Text("watch report", style="bold")
    kept = len(record.steps)
    text.append(f": {kept} of {_plural(record.total_steps, 'step')} kept")
    interval = max(record.every, 1) * max(record.stride, 1)
    if interval > 1:
        text.append(f" (one in {interval}", style="dim")
        if record.stride > 1:
            text.append(f", thinned ×{record.stride} to fit the history", style="dim")
        text.append(")", style="dim")
    if record.world_size > 1:  # torch.distributed: the whole gradient, all ranks combined
        text.append(f"{_SEP}{record.world_size} ranks combined (loss: their mean)")
    optimizers = _optimizers(record)
    for optimizer in optimizers:
        losses = _losses(record.steps, optimizer)
        if len(optimizers) > 1:
            steps = sum(1 for s in record.steps if s.optimizer == optimizer)
            text.append(f"{_SEP}{optimizer or 'steps'}: {_plural(steps, 'step')} kept")
        if losses:
            text.append(_SEP if len(optimizers) == 1 else ", ")
            if len(losses) == 1:
                text.append(f"loss {_num(losses[0])}")
            else:
                text.append(f"loss {_num(losses[0])} → {_num(losses[-1])}")
    return text


def _param_table(record: WatchRecord) -> Table:
    table = Table(
        title="parameters",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    table.add_column("param", style="bold", overflow="fold")
    table.add_column("shape", overflow="fold")
    table.add_column("with grad", justify="right", overflow="fold")
    table.add_column("grad norm first → last", overflow="fold")
    table.add_column("min norm", justify="right", overflow="fold")
    table.add_column("max norm", justify="right", overflow="fold")
    table.add_column("upd ratio", justify="right", overflow="fold")
    table.add_column("NaN/Inf", justify="right", overflow="fold")
    infos = _infos(record)
    for name in _param_names(record):
        info = infos.get(name)
        seen = [s.grads[name] for s in record.steps if name in s.grads]
        # The steps of the optimizers that hold it: those that list it, with or without a grad.
        kept = sum(1 for s in record.steps if name in s.grads or name in s.missing)
        norms = [g.grad_norm for g in seen if math.isfinite(g.grad_norm)]
        bad = sum(_bad(g) for g in seen)
        if info is not None and not info.requires_grad:
            with_grad = Text("frozen", style="dim")
        else:
            with_grad = Text(f"{len(seen)}/{kept}", style="yellow" if not seen and kept else "")
        first_last = f"{_num(seen[0].grad_norm)} → {_num(seen[-1].grad_norm)}" if seen else "—"
        table.add_row(
            Text(name),
            _shape(info),
            with_grad,
            Text(first_last),
            Text(_num(min(norms)) if norms else "—"),
            Text(_num(max(norms)) if norms else "—"),
            Text(_num(_last_update_ratio(record.steps, name))),
            Text(str(bad), style="bold red" if bad else ""),
        )
    return table
