"""Tests of gradlens.render.watch_view: golden files, exact compact lines, and edge cases."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import pytest

from gradlens.records import (
    Diagnostic,
    ParamInfo,
    ParamStats,
    Severity,
    StepRecord,
    WatchRecord,
)
from gradlens.render.watch_view import (
    WAITING,
    _num,
    compact_line,
    format_live_view,
    format_watch_report,
    live_view,
    sparkline,
    watch_report,
)

NAN = float("nan")
INF = float("inf")


# ---------------------------------------------------------------------------------------------
# hand-built records


def stats(norm: float, *, ratio: float | None = None, detail: bool = False) -> ParamStats:
    """Returns a gradient whose norm is ``norm``; nan/inf norms make it non-finite."""
    bad = not math.isfinite(norm)
    return ParamStats(
        grad_norm=norm,
        grad_mean=norm / 10 if not bad else NAN,
        grad_std=norm / 5 if not bad else NAN,
        grad_max=norm / 2 if not bad else norm,
        nonfinite=bad,
        zero_frac=0.0 if detail else None,
        nan=(1 if math.isnan(norm) else 0) if detail else None,
        inf=(1 if math.isinf(norm) else 0) if detail else None,
        weight_norm=1.0 if detail else None,
        update_ratio=ratio,
    )


def step(
    i: int,
    norms: Mapping[str, float],
    *,
    loss: float | None = None,
    lr: float | None = None,
    ratios: Mapping[str, float] | None = None,
    missing: tuple[str, ...] = (),
    scalars: dict[str, float] | None = None,
) -> StepRecord:
    detail = ratios is not None
    grads = {
        name: stats(norm, ratio=(ratios or {}).get(name), detail=detail)
        for name, norm in norms.items()
    }
    return StepRecord(
        step=i,
        grads=grads,
        missing=missing,
        loss=loss,
        lr=lr,
        detail=detail,
        scalars=scalars or {},
    )


def params(*specs: tuple[str, tuple[int, ...]]) -> tuple[ParamInfo, ...]:
    return tuple(ParamInfo(name, shape, math.prod(shape)) for name, shape in specs)


def record(
    infos: tuple[ParamInfo, ...],
    steps: list[StepRecord],
    *,
    diagnostics: tuple[Diagnostic, ...] = (),
    total: int | None = None,
    stride: int = 1,
) -> WatchRecord:
    return WatchRecord(
        params=infos,
        steps=tuple(steps),
        diagnostics=diagnostics,
        stride=stride,
        total_steps=len(steps) if total is None else total,
    )


NAN_FINDING = Diagnostic(
    kind="nonfinite-grad",
    message="fc1.bias got a NaN gradient at step 6",
    severity=Severity.ERROR,
    name="fc1.bias",
    step=6,
    source="train.py:42",
    fix="lower the learning rate or clip the gradients",
)


def run3() -> WatchRecord:
    """A 3-parameter run of 12 steps, every other one kept; fc1.bias is NaN at step 6."""
    infos = params(("fc1.weight", (4, 3)), ("fc1.bias", (4,)), ("fc2.weight", (1, 4)))
    ratios = {"fc1.weight": 1e-3, "fc1.bias": 2.5e-3, "fc2.weight": 4e-4}
    steps = [
        step(0, {"fc1.weight": 0.8, "fc1.bias": 0.2, "fc2.weight": 1.5}, loss=0.912, lr=0.01,
             ratios=ratios, scalars={"epoch": 0}),
        step(2, {"fc1.weight": 0.7, "fc1.bias": 0.18}, loss=0.85, lr=0.01,
             missing=("fc2.weight",), scalars={"epoch": 0}),
        step(4, {"fc1.weight": 0.6, "fc1.bias": 0.15, "fc2.weight": 1.2}, loss=0.8, lr=0.01,
             scalars={"epoch": 1}),
        step(6, {"fc1.weight": 0.9, "fc1.bias": NAN, "fc2.weight": 1.1}, loss=0.79, lr=0.01,
             scalars={"epoch": 1}),
        step(8, {"fc1.weight": 0.5, "fc1.bias": 0.12, "fc2.weight": 0.95}, loss=0.72, lr=0.005,
             ratios={"fc1.weight": 8e-4, "fc2.weight": 3e-4}, scalars={"epoch": 2}),
        step(10, {"fc1.weight": 0.45, "fc1.bias": 0.1, "fc2.weight": 0.9}, loss=0.6931,
             lr=0.005, scalars={"epoch": 2}),
    ]  # fmt: skip
    return record(infos, steps, diagnostics=(NAN_FINDING,), total=12, stride=2)


def row(text: str, name: str) -> list[str]:
    """Returns the cells (split on blanks) of the table row that starts with ``name``."""
    return next(line.split() for line in text.splitlines() if line.split()[:1] == [name])


def many(n: int = 12) -> WatchRecord:
    """``n`` parameters p00 .. p{n-1}, p_k with gradient norm k + 1 at the only step."""
    infos = params(*((f"p{k:02d}", (k + 1,)) for k in range(n)))
    return record(infos, [step(0, {f"p{k:02d}": float(k + 1) for k in range(n)}, loss=1.0)])


# ---------------------------------------------------------------------------------------------
# golden files


def test_watch_report_matches_golden(golden) -> None:
    golden("watch_report.txt", format_watch_report(run3(), width=100))


def test_live_view_matches_golden(golden) -> None:
    golden("watch_live.txt", format_live_view(run3(), width=100))


# ---------------------------------------------------------------------------------------------
# compact line


def test_compact_line_full() -> None:
    assert compact_line(run3()) == (
        "step 12 | loss 0.6931 | lr 0.005 | grad norm 1.0e-01 .. 9.0e-01 "
        "(fc1.bias .. fc2.weight) | 1 finding"
    )


def test_compact_line_without_loss_or_lr() -> None:
    infos = params(("a", (2,)), ("b", (3,)))
    rec = record(infos, [step(0, {"a": 3.4, "b": 0.12})], total=120)
    assert compact_line(rec) == "step 120 | grad norm 1.2e-01 .. 3.4e+00 (b .. a) | 0 findings"


def test_compact_line_with_nan() -> None:
    infos = params(("a", (2,)), ("b", (3,)), ("c", (1,)))
    rec = record(
        infos,
        [step(0, {"a": 2.0, "b": NAN, "c": 0.5}, loss=NAN, lr=1e-4)],
        diagnostics=(NAN_FINDING, NAN_FINDING),
    )
    assert compact_line(rec) == (
        "step 1 | loss nan | lr 1e-04 | grad norm 5.0e-01 .. 2.0e+00 (c .. a) "
        "| NaN/Inf in 1 param | 2 findings"
    )


def test_compact_line_all_nonfinite_and_single_param() -> None:
    infos = params(("a", (2,)), ("b", (3,)))
    rec = record(infos, [step(0, {"a": NAN, "b": INF}, loss=0.5)])
    assert compact_line(rec) == "step 1 | loss 0.5 | NaN/Inf in 2 params | 0 findings"
    one = record(infos, [step(0, {"a": 0.25}, missing=("b",))])
    assert compact_line(one) == "step 1 | grad norm 2.5e-01 (a) | 0 findings"


def test_compact_line_zero_steps() -> None:
    rec = record(params(("a", (2,))), [])
    assert compact_line(rec) == "step 0 | no optimizer step yet | 0 findings"
    rec = record(params(("a", (2,))), [], diagnostics=(NAN_FINDING,))
    assert compact_line(rec) == "step 0 | no optimizer step yet | 1 finding"


def test_compact_line_no_gradients_at_latest_step() -> None:
    rec = record(params(("a", (2,))), [step(0, {}, loss=1.0, missing=("a",))])
    assert compact_line(rec) == "step 1 | loss 1 | no gradients | 0 findings"


# ---------------------------------------------------------------------------------------------
# live view


def test_live_view_top_and_bottom_selection() -> None:
    text = format_live_view(many(12), top=3)
    for name in ("p11", "p10", "p09", "p02", "p01", "p00"):  # largest 3, smallest 3
        assert name in text
    for name in ("p03", "p04", "p05", "p06", "p07", "p08"):
        assert name not in text
    assert "… 6 more" in text
    assert "largest and smallest 3 of 12" in text
    # largest first, smallest last
    order = [text.index(n) for n in ("p11", "p10", "p09", "p02", "p01", "p00")]
    assert order == sorted(order)


def test_live_view_shows_all_params_once_when_few() -> None:
    text = format_live_view(many(6), top=3)
    lines = text.splitlines()
    for k in range(6):
        assert sum(f"p{k:02d}" in line for line in lines) == 1
    assert "more" not in text
    order = [text.index(f"p{k:02d}") for k in reversed(range(6))]
    assert order == sorted(order)


def test_live_view_puts_nonfinite_first_and_marks_it() -> None:
    # fc1.bias was NaN at step 6 but is finite again at the latest step: no marker.
    assert "NaN/Inf" not in format_live_view(run3())
    rec = record(
        params(("a", (1,)), ("b", (1,)), ("c", (1,)), ("d", (1,))),
        [step(0, {"a": 1.0, "b": NAN, "c": 2.0, "d": 3.0})],
    )
    text = format_live_view(rec, top=1)
    rows = [line.split() for line in text.splitlines() if line.split()[:1] in (["a"], ["b"])]
    assert [r[0] for r in rows] == ["b", "a"]  # b non-finite first, a smallest last
    assert "c" not in text.split() and "d" not in text.split()
    assert rows[0][2] == "nan" and rows[0][-1] == "NaN/Inf"
    assert rows[1][-1] != "NaN/Inf"


def test_live_view_header() -> None:
    first = format_live_view(run3()).splitlines()[0]
    assert first == "step 12  ·  epoch 2  ·  loss 0.6931 ↓ from 0.912  ·  lr 0.005"
    rising = record(
        params(("a", (1,))), [step(0, {"a": 1.0}, loss=0.5), step(1, {"a": 1.0}, loss=0.75)]
    )
    assert format_live_view(rising).splitlines()[0] == "step 2  ·  loss 0.75 ↑ from 0.5"
    no_loss = record(params(("a", (1,))), [step(0, {"a": 1.0})])
    assert format_live_view(no_loss).splitlines()[0] == "step 1"
    nan_loss = record(
        params(("a", (1,))), [step(0, {"a": 1.0}, loss=0.5), step(1, {"a": 1.0}, loss=NAN)]
    )
    assert format_live_view(nan_loss).splitlines()[0] == "step 2  ·  loss nan (from 0.5)"


def test_live_view_loss_change_uses_recent_window() -> None:
    steps = [step(i, {"a": 1.0}, loss=float(100 - i)) for i in range(30)]
    text = format_live_view(record(params(("a", (1,))), steps))
    # the latest loss (71) against the first of the last 10 kept steps (80), not the first (100)
    assert text.splitlines()[0] == "step 30  ·  loss 71 ↓ from 80"


def test_live_view_waiting() -> None:
    rec = record(params(("a", (2,))), [])
    assert format_live_view(rec) == WAITING + "\n"
    with_finding = format_live_view(record(params(("a", (2,))), [], diagnostics=(NAN_FINDING,)))
    assert with_finding.startswith(WAITING + "\n")
    assert "nonfinite-grad" in with_finding


def test_live_view_without_findings_has_no_findings_section() -> None:
    assert "findings" not in format_live_view(many(3))
    assert "findings" in format_live_view(run3())


def test_live_view_missing_params_line() -> None:
    rec = record(params(("a", (1,)), ("b", (1,))), [step(0, {"a": 1.0}, missing=("b",))])
    assert "no gradient at the latest step: b" in format_live_view(rec)


def test_live_view_rejects_top_below_one() -> None:
    with pytest.raises(ValueError, match="top"):
        live_view(many(3), top=0)


def test_live_view_update_ratio_from_latest_detail_step() -> None:
    text = format_live_view(run3())
    # cells: name, shape, norm, max, mean, update ratio, trend
    assert row(text, "fc1.weight")[-2] == "8e-04"  # from step 8, the latest detail step
    assert row(text, "fc1.bias")[-2] == "0.0025"  # step 8 did not measure it: step 0's


# ---------------------------------------------------------------------------------------------
# sparkline


def test_sparkline_characters() -> None:
    assert sparkline([0, 1, 2, 3, 4, 5, 6, 7]) == "▁▂▃▄▅▆▇█"
    assert sparkline([7, 0, 3.5]) == "█▁▅"
    assert sparkline([1.0, 1.0, 1.0]) == "▄▄▄"
    assert sparkline([1.0, None, NAN, INF, 2.0]) == "▁·!!█"
    assert sparkline([]) == ""


def test_live_view_trend_column() -> None:
    steps = [step(i, {"a": float(i)}) for i in range(8)]
    text = format_live_view(record(params(("a", (1,))), steps))
    assert "▁▂▃▄▅▆▇█" in text


def test_trend_covers_the_last_20_kept_steps() -> None:
    steps = [step(i, {"a": float(i % 2)}) for i in range(30)]
    text = format_live_view(record(params(("a", (1,))), steps))
    assert row(text, "a")[-1] == "▁█" * 10


# ---------------------------------------------------------------------------------------------
# report


def test_report_params_in_record_order_with_counts() -> None:
    text = format_watch_report(run3())
    lines = text.splitlines()
    assert lines[0] == (
        "watch report: 6 of 12 steps kept (one in 2, thinned ×2 to fit the history)  ·  "
        "loss 0.912 → 0.6931"
    )
    names = [cells[0] for cells in map(str.split, lines) if cells and cells[0].startswith("fc")]
    assert names[:3] == ["fc1.weight", "fc1.bias", "fc2.weight"]
    # fc1.bias: a gradient at every kept step, NaN in one, min/max over the finite ones
    bias = ["fc1.bias", "[4]", "6/6", "0.2", "→", "0.1", "0.1", "0.2", "0.0025", "1"]
    assert row(text, "fc1.bias") == bias
    assert row(text, "fc2.weight")[3] == "5/6"  # none at step 2 (the shape is 2 cells)


def test_report_without_findings_says_so() -> None:
    text = format_watch_report(many(3))
    assert text.rstrip().endswith("no problems found")
    assert "diagnostics" not in text


def test_report_zero_steps_says_nothing_was_watched_not_no_problems() -> None:
    text = format_watch_report(record(params(("a", (2,)), ("b", (3,))), []), width=200)
    assert text.splitlines() == [
        "watch report: 0 of 0 steps kept",
        "nothing to watch: no optimizer stepped and no parameter was updated in place "
        "(under torch.no_grad() or through .data) after a backward",
    ]


def test_report_shows_the_watchers_own_notes() -> None:
    rec = dataclasses.replace(
        record(params(("a", (2,))), [step(0, {"a": 1.0})]),
        notes=("gradlens stopped watching optimizer SGD: RuntimeError: boom",),
    )
    lines = format_watch_report(rec, width=200).splitlines()
    assert "gradlens stopped watching optimizer SGD: RuntimeError: boom" in lines


def test_report_with_two_optimizers_counts_each_ones_steps() -> None:
    infos = params(("d", (2,)), ("g", (3,)))
    steps = [
        dataclasses.replace(step(0, {"d": 1.0}, loss=1.5), optimizer="Adam"),
        dataclasses.replace(step(0, {"g": 2.0}, loss=0.5), optimizer="Adam#2"),
        dataclasses.replace(step(1, {"d": 1.0}, loss=1.25), optimizer="Adam"),
        dataclasses.replace(step(1, {"g": 2.0}, loss=0.75), optimizer="Adam#2"),
    ]
    rec = dataclasses.replace(record(infos, steps), total_steps=4)
    text = format_watch_report(rec, width=200)
    assert text.splitlines()[0] == (
        "watch report: 4 of 4 steps kept  ·  Adam: 2 steps kept, loss 1.5 → 1.25"
        "  ·  Adam#2: 2 steps kept, loss 0.5 → 0.75"
    )
    assert row(text, "d")[2] == "2/2" and row(text, "g")[2] == "2/2"


def test_report_param_without_gradient_and_frozen_param() -> None:
    infos = (
        ParamInfo("a", (2,), 2),
        ParamInfo("never", (3,), 3),
        ParamInfo("frozen", (4,), 4, requires_grad=False),
    )
    rec = record(infos, [step(0, {"a": 1.0}, missing=("never",), loss=2.0)])
    text = format_watch_report(rec)
    assert text.splitlines()[0] == "watch report: 1 of 1 step kept  ·  loss 2"
    assert row(text, "never")[2:] == ["0/1", "—", "—", "—", "—", "0"]
    assert row(text, "frozen")[2] == "frozen"


def test_report_all_nonfinite_norms() -> None:
    rec = record(params(("a", (1,))), [step(0, {"a": NAN}), step(1, {"a": INF})])
    cells = row(format_watch_report(rec), "a")
    assert cells == ["a", "[1]", "2/2", "nan", "→", "inf", "—", "—", "—", "2"]


# ---------------------------------------------------------------------------------------------
# user text and odd input


def test_markup_in_names_is_printed_literally() -> None:
    rec = record(params(("[red]x", (2,)), ("y", (1,))), [step(0, {"[red]x": 1.0, "y": 2.0})])
    assert "[red]x" in format_live_view(rec)
    assert "[red]x" in format_watch_report(rec)
    assert "([red]x .. y)" in compact_line(rec)


def test_very_long_names_do_not_crash() -> None:
    long = "encoder." + ".".join(f"layer{k}" for k in range(60)) + ".weight"
    rec = record(params((long, (3, 3)), ("b", (1,))), [step(0, {long: 1.0, "b": NAN})])
    for width in (40, 60, 100):
        live = format_live_view(rec, width=width)
        report = format_watch_report(rec, width=width)
        assert all(len(line) <= width for line in (live + report).splitlines())
        if width >= 60:  # folded over several lines, never dropped
            assert "encod" in live and "encod" in report
        assert row(live, "b")[-1] == "NaN/Inf"
    assert long in compact_line(rec)


def test_renderables_are_returned() -> None:
    # The renderables themselves (for Live and console.print) build without a console.
    assert live_view(run3()) is not None
    assert watch_report(run3()) is not None


@pytest.mark.parametrize(
    ("x", "text"),
    [
        (0.0, "0"),
        (0.6931472, "0.6931"),
        (0.01, "0.01"),
        (0.001, "0.001"),
        (0.00099, "9.9e-04"),
        (1e-4, "1e-04"),
        (1234.5678, "1235"),
        (9999.7, "1e+04"),
        (12346.0, "1.235e+04"),
        (-2.5, "-2.5"),
        (NAN, "nan"),
        (INF, "inf"),
        (-INF, "-inf"),
        (None, "—"),
    ],
)
def test_number_format(x: float | None, text: str) -> None:
    assert _num(x) == text
