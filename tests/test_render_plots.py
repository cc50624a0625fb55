"""Tests of gradlens.render.plots: the data in the figures' artists, and writing them to files."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.lines import Line2D

from gradlens._errors import GradlensError
from gradlens.records import ParamInfo, ParamStats, StepRecord, WatchRecord
from gradlens.render.plots import (
    BoundarySnapshot,
    decision_boundary_figure,
    probability_curve_figure,
    save_figure,
    training_figure,
)


def norm_of(p: int, s: int) -> float:
    return (p + 1) * (s + 1) / 8


def make_record(
    n_params: int = 3,
    n_steps: int = 20,
    *,
    norm: Callable[[int, int], float | None] = norm_of,
    detail_every: int = 5,
    stride: int = 1,
    total_steps: int = 0,
    loss: bool = True,
    scalars: bool = False,
) -> WatchRecord:
    """Returns a record whose param p at step s has grad_norm ``norm(p, s)`` (None: no grad).

    Steps that are multiples of ``detail_every`` (0: none) are detail steps with update ratios.
    """
    names = [f"layer{p}.weight" for p in range(n_params)]
    steps = []
    for s in range(n_steps):
        detail = detail_every > 0 and s % detail_every == 0
        grads = {}
        for p, name in enumerate(names):
            value = norm(p, s)
            if value is not None:
                ratio = 1e-3 * (p + 1) if detail else None
                grads[name] = ParamStats(value, 0.0, 0.0, value, not math.isfinite(value),
                                         update_ratio=ratio)  # fmt: skip
        steps.append(StepRecord(
            step=s * stride, grads=grads, detail=detail, loss=1.0 / (s + 1) if loss else None,
            scalars={"acc": s / n_steps, "epoch": 0.0} if scalars else {},
        ))  # fmt: skip
    params = tuple(ParamInfo(name, (4,), 4) for name in names)
    return WatchRecord(params, tuple(steps), stride=stride, total_steps=total_steps)


def panels(fig: Figure) -> list[Axes]:
    return fig.axes[:3]  # loss, gradient norm, update ratio; twins and colorbars come after


def texts(ax: Axes) -> list[str]:
    return [t.get_text() for t in ax.texts]


def red_marks(ax: Axes) -> list[Line2D]:
    return [line for line in ax.get_lines() if line.get_gid() == "nonfinite"]


def test_grad_norm_lines_carry_the_norms() -> None:
    grad_ax = panels(training_figure(make_record()))[1]
    lines = grad_ax.get_lines()
    assert len(lines) == 3
    for p, line in enumerate(lines):
        assert list(line.get_xdata()) == list(range(20))
        assert list(line.get_ydata()) == [norm_of(p, s) for s in range(20)]
    legend = grad_ax.get_legend()
    assert legend is not None
    assert [t.get_text() for t in legend.get_texts()] == [f"layer{p}.weight" for p in range(3)]
    assert grad_ax.get_yscale() == "log"
    assert red_marks(grad_ax) == []


def test_missing_grad_is_a_gap_not_a_nan_mark() -> None:
    record = make_record(norm=lambda p, s: None if (p, s) == (1, 3) else norm_of(p, s))
    grad_ax = panels(training_figure(record))[1]
    ys = np.asarray(grad_ax.get_lines()[1].get_ydata(), dtype=float)
    assert math.isnan(ys[3])
    assert np.delete(ys, 3).tolist() == [norm_of(1, s) for s in range(20) if s != 3]
    assert red_marks(grad_ax) == []


def test_nonfinite_norms_are_marked_at_the_top() -> None:
    bad = {(2, 7): math.nan, (0, 12): math.inf}
    grad_ax = panels(training_figure(make_record(norm=lambda p, s: bad.get((p, s), 1.0))))[1]
    assert math.isnan(grad_ax.get_lines()[2].get_ydata()[7])
    assert math.isnan(grad_ax.get_lines()[0].get_ydata()[12])  # inf would break the log scale
    (marks,) = red_marks(grad_ax)
    assert list(marks.get_xdata()) == [7, 12]
    assert (marks.get_marker(), marks.get_color()) == ("x", "red")
    assert marks.get_transform() is grad_ax.get_xaxis_transform()  # y in axes units: the top
    assert min(marks.get_ydata()) > 0.9


def test_all_nan_series_is_said_and_marked() -> None:
    grad_ax = panels(training_figure(make_record(1, 4, norm=lambda p, s: math.nan)))[1]
    assert "every gradient norm is nan or inf" in texts(grad_ax)
    assert list(red_marks(grad_ax)[0].get_xdata()) == [0, 1, 2, 3]


def test_many_params_become_a_heatmap_of_log10_norms() -> None:
    special = {(2, 7): math.nan, (5, 3): None}
    record = make_record(15, 20, norm=lambda p, s: special.get((p, s), norm_of(p, s)))
    grad_ax = panels(training_figure(record))[1]
    assert grad_ax.get_lines() == []
    image, red = grad_ax.images
    assert isinstance(image, AxesImage)
    values = image.get_array()
    assert values is not None and values.shape == (15, 20)
    expected = np.log10([[norm_of(p, s) for s in range(20)] for p in range(15)])
    mask = np.ma.getmaskarray(values)
    np.testing.assert_allclose(values.data[~mask], expected[~mask], rtol=1e-12)
    assert np.argwhere(mask).tolist() == [[2, 7], [5, 3]]  # nan and no grad: not a colour
    assert red.get_gid() == "nonfinite"
    assert np.argwhere(~np.ma.getmaskarray(red.get_array())).tolist() == [[2, 7]]  # nan: red
    names = [f"layer{p}.weight" for p in range(15)]
    assert [t.get_text() for t in grad_ax.get_yticklabels()] == names
    assert image.colorbar is not None


def test_update_ratio_only_on_detail_steps() -> None:
    ratio_ax = panels(training_figure(make_record()))[2]
    params, (reference,) = ratio_ax.get_lines()[:3], ratio_ax.get_lines()[3:]
    for p, line in enumerate(params):
        assert list(line.get_xdata()) == [0, 5, 10, 15]
        assert list(line.get_ydata()) == [1e-3 * (p + 1)] * 4
    assert list(reference.get_ydata()) == [1e-3, 1e-3]
    assert reference.get_linestyle() == ":" and "1e-3" in reference.get_label()
    assert ratio_ax.get_yscale() == "log"
    none_ax = panels(training_figure(make_record(detail_every=0)))[2]
    assert none_ax.get_lines() == []
    assert any("detail" in t for t in texts(none_ax))


def test_title_counts_steps_and_says_when_thinned() -> None:
    thinned = training_figure(make_record(stride=4, total_steps=12000))
    assert thinned.get_suptitle() == "training: 20 steps shown (every 4th step kept of 12000)"
    assert panels(thinned)[1].get_lines()[0].get_xdata()[-1] == 76
    assert training_figure(make_record()).get_suptitle() == "training: 20 steps shown"
    assert training_figure(make_record(n_steps=1)).get_suptitle() == "training: 1 step shown"


def test_loss_and_scalars() -> None:
    fig = training_figure(make_record(scalars=True))
    (loss,) = panels(fig)[0].get_lines()
    assert list(loss.get_ydata()) == [1.0 / (s + 1) for s in range(20)]
    twin = fig.axes[3]
    assert [line.get_label() for line in twin.get_lines()] == ["acc"]  # never "epoch"
    legend = panels(fig)[0].get_legend()
    assert legend is not None and [t.get_text() for t in legend.get_texts()] == ["loss", "acc"]
    empty = panels(training_figure(make_record(loss=False)))[0]
    assert texts(empty) == ["no loss recorded: pass lens.log(loss=loss)"]


@pytest.mark.parametrize("record", [make_record(n_steps=0), WatchRecord((), ())])
def test_zero_steps_still_builds(record: WatchRecord, tmp_path: Path) -> None:
    fig = training_figure(record)
    assert [texts(ax) for ax in panels(fig)] == [["no steps recorded"]] * 3
    assert save_figure(fig, tmp_path / "empty.svg").stat().st_size > 0


@pytest.mark.parametrize("n_params", [3, 15])
def test_single_step_draws(n_params: int, tmp_path: Path) -> None:
    fig = training_figure(make_record(n_params, 1))
    fig.draw_without_rendering()  # lays it out and draws every artist, without the pixels
    assert panels(fig)[1].get_xlim()[0] < 0 < panels(fig)[1].get_xlim()[1]


def test_save_figure_formats(tmp_path: Path) -> None:
    fig = probability_curve_figure([0.0, 1.0], [0.2, 0.8], [0.0], [0.0])
    png = save_figure(fig, tmp_path / "a.PNG")
    assert png == (tmp_path / "a.PNG").resolve()
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert save_figure(fig, str(tmp_path / "a.pdf")).read_bytes()[:4] == b"%PDF"
    fig = training_figure(make_record(n_steps=5, scalars=True))
    first, second = save_figure(fig, tmp_path / "a.svg"), save_figure(fig, tmp_path / "b.svg")
    root = ET.fromstring(first.read_bytes())
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert len(root.findall(".//{http://www.w3.org/2000/svg}path")) > 10
    assert first.read_bytes() == second.read_bytes()
    same = training_figure(make_record(n_steps=5, scalars=True))  # a new figure, built the same
    third = save_figure(same, tmp_path / "c.svg")
    assert third.read_bytes() == first.read_bytes()


def test_save_figure_rejects_bad_paths(tmp_path: Path) -> None:
    fig = Figure()
    with pytest.raises(GradlensError, match=r"'\.txt'.*") as info:
        save_figure(fig, tmp_path / "plot.txt")
    assert ".png, .svg, .pdf" in str(info.value)
    with pytest.raises(GradlensError, match="does not exist"):
        save_figure(fig, tmp_path / "missing" / "plot.png")
    assert not (tmp_path / "plot.txt").exists()


POINTS = [(0.0, 0.0), (1.0, 2.0), (3.0, 1.0), (4.0, 4.0)]
LABELS = [0, 0, 1, 1]


def test_decision_boundary_panels() -> None:
    snapshots = [
        BoundarySnapshot(0, (1.0, 2.0), -3.0, 0.5, 0.6931),
        BoundarySnapshot(10, (2.0, 0.0), -4.0, 0.97, 0.1234),  # vertical: x = 2
        BoundarySnapshot(20, (5.0, 0.01), -10.0, 1.0, 0.01),  # steep
    ]
    fig = decision_boundary_figure(POINTS, LABELS, snapshots)
    assert len(fig.axes) == 3
    assert [ax.get_title() for ax in fig.axes] == [
        "step 0: acc 50.0% loss 0.6931",
        "step 10: acc 97.0% loss 0.1234",
        "step 20: acc 100.0% loss 0.0100",
    ]
    for ax, snap in zip(fig.axes, snapshots, strict=True):
        (line,) = ax.get_lines()
        for x, y in zip(line.get_xdata(), line.get_ydata(), strict=True):
            assert snap.w[0] * x + snap.w[1] * y + snap.b == pytest.approx(0.0, abs=1e-9)
        red, blue = ax.collections
        assert red.get_offsets().tolist() == [[0.0, 0.0], [1.0, 2.0]]
        assert blue.get_offsets().tolist() == [[3.0, 1.0], [4.0, 4.0]]
        (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
        assert x0 < 0.0 and x1 > 4.0 and y0 < 0.0 and y1 > 4.0
    assert list(fig.axes[1].get_lines()[0].get_xdata()) == [2.0, 2.0]


def test_decision_boundary_grid_and_bad_input() -> None:
    snapshots = [BoundarySnapshot(i, (1.0, 1.0), 0.0, 1.0, 0.0) for i in range(8)]
    fig = decision_boundary_figure(POINTS, LABELS, snapshots)
    assert len(fig.axes) == 8
    assert fig.axes[7].get_subplotspec().get_geometry()[:2] == (2, 6)
    with pytest.raises(GradlensError, match="one label per point"):
        decision_boundary_figure(POINTS, LABELS[:3], [BoundarySnapshot(0, (1, 1), 0, 1, 0)])
    with pytest.raises(GradlensError, match="at least one"):
        decision_boundary_figure(POINTS, LABELS, [])


def test_probability_curve() -> None:
    fig = probability_curve_figure([0.0, 1.0, 2.0], [0.1, 0.5, 0.9], [0.0, 2.0], [0.0, 1.0])
    (ax,) = fig.axes
    curve, threshold = ax.get_lines()
    assert list(curve.get_ydata()) == [0.1, 0.5, 0.9]
    assert list(threshold.get_ydata()) == [0.5, 0.5]
    assert threshold.get_color() == "red" and threshold.get_label() == "decision threshold"
    assert ax.collections[0].get_offsets().tolist() == [[0.0, 0.0], [2.0, 1.0]]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("hours", "probability of pass")
    assert ax.xaxis.get_gridlines()[0].get_visible()


def _gan_record() -> WatchRecord:
    def stats(norm: float) -> ParamStats:
        return ParamStats(norm, 0.0, 0.0, norm, False)

    steps = []
    for i in range(3):
        steps.append(StepRecord(i, {"d": stats(1.0 + i)}, loss=2.0 - i / 2, optimizer="Adam"))
        steps.append(StepRecord(i, {"g": stats(10.0 + i)}, loss=0.5 + i, optimizer="Adam#2"))
    infos = (ParamInfo("d", (2,), 2), ParamInfo("g", (3,), 3))
    return WatchRecord(params=infos, steps=tuple(steps), total_steps=6)


def test_two_optimizers_get_a_loss_line_each_and_their_own_steps() -> None:
    loss_ax, grad_ax, _ = panels(training_figure(_gan_record()))
    lines = {line.get_label(): line for line in loss_ax.get_lines()}
    assert list(lines) == ["loss (Adam)", "loss (Adam#2)"]
    assert list(lines["loss (Adam)"].get_xdata()) == [0, 1, 2]
    assert list(lines["loss (Adam)"].get_ydata()) == [2.0, 1.5, 1.0]
    assert list(lines["loss (Adam#2)"].get_ydata()) == [0.5, 1.5, 2.5]
    norms = {line.get_label(): line for line in grad_ax.get_lines()}
    # Each parameter on its own optimizer's steps: no gap at the other optimizer's steps.
    assert list(norms["d"].get_xdata()) == [0, 1, 2]
    assert list(norms["d"].get_ydata()) == [1.0, 2.0, 3.0]
    assert list(norms["g"].get_ydata()) == [10.0, 11.0, 12.0]
