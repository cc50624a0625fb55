"""The training examples (gradlens.watch) show what plain PyTorch computes, and watching never
changes a number.

Each example runs once (cached); each plain recomputation below repeats its training loop with
the same seeds and order, without gradlens, and its numbers are compared exactly.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import json
import math
import runpy
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from matplotlib.figure import Figure
from torch import nn

import gradlens
from gradlens.examples import EXAMPLES, ExampleResult, load_example, run_example

TRAINING = ["logistic-1d", "logistic-logits", "logistic-2d", "forgot-zero-grad"]
PNG = b"\x89PNG\r\n\x1a\n"
SCRIPTS = Path(__file__).resolve().parent.parent / "examples"


@functools.cache
def result(name: str) -> ExampleResult:
    return run_example(name)


def lens_of(name: str) -> gradlens.Lens:
    lens = result(name).lens
    assert lens is not None
    return lens


def code_lines(path: Path, needle: str) -> list[int]:
    """Returns the 1-based numbers of the lines of ``path`` whose code has ``needle``."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [i for i, line in enumerate(lines, start=1) if needle in line.split("#")[0]]


def example_path(name: str) -> Path:
    return Path(inspect.getsourcefile(load_example(name)))  # type: ignore[arg-type]


# ---- plain PyTorch ---------------------------------------------------------------------------


@dataclass
class Plain:
    w: list[float]
    b: float
    losses: list[float] = field(default_factory=list)
    extra: dict[str, object] = field(default_factory=dict)


@functools.cache
def plain_1d() -> Plain:
    hours = torch.tensor([[1.0], [2.0], [3.0]])
    passed = torch.tensor([[0.0], [0.0], [1.0]])
    torch.manual_seed(0)
    linear = nn.Linear(1, 1)
    criterion = nn.BCELoss(reduction="sum")
    optimizer = torch.optim.SGD(linear.parameters(), lr=0.01)
    losses = []
    for _ in range(1000):
        loss = criterion(torch.sigmoid(linear(hours)), passed)
        losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        p4 = torch.sigmoid(linear(torch.tensor([[4.0]]))).item()
    return Plain([linear.weight.item()], linear.bias.item(), losses, {"p4": p4})


@functools.cache
def plain_logits() -> Plain:
    x = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    y = torch.tensor([[0.0], [0.0], [1.0], [1.0]])
    torch.manual_seed(0)
    linear = nn.Linear(1, 1)
    criterion = nn.BCEWithLogitsLoss()
    optimizer = torch.optim.SGD(linear.parameters(), lr=0.01)
    four = torch.tensor([[4.0]])
    with torch.no_grad():
        before = torch.sigmoid(linear(four)).item()
    losses = []
    for _ in range(40):
        loss = criterion(linear(x), y)
        losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        after = torch.sigmoid(linear(four)).item()
    extra = {"before": before, "after": after}
    return Plain([linear.weight.item()], linear.bias.item(), losses, extra)


def clouds() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, nn.Linear]:
    """Returns seed 004's data split 134 / 66 by a fixed permutation, and a fresh Linear(2, 1)."""
    torch.manual_seed(10)
    ones = torch.ones(100, 2)
    x = torch.cat([torch.normal(1.7 * ones, 1) + 1, torch.normal(-1.7 * ones, 1) + 1])
    y = torch.cat([torch.zeros(100), torch.ones(100)])
    order = torch.randperm(200, generator=torch.Generator().manual_seed(42))
    test, train = order[:66], order[66:]
    return x[train], y[train], x[test], y[test], nn.Linear(2, 1)


def acc(prob: torch.Tensor, y: torch.Tensor) -> float:
    return ((prob >= 0.5).float() == y).float().mean().item()


@functools.cache
def plain_2d() -> Plain:
    x_train, y_train, x_test, y_test, linear = clouds()
    optimizer = torch.optim.SGD(linear.parameters(), lr=0.01, momentum=0.9)
    criterion = nn.BCELoss()
    snapshots = []
    for iteration in range(1000):
        prob = torch.sigmoid(linear(x_train)).squeeze(1)
        loss = criterion(prob, y_train)
        if iteration % 20 == 0:
            a = acc(prob, y_train)
            snapshots.append(
                (iteration, linear.weight[0].tolist(), linear.bias.item(), a, loss.item())
            )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if iteration % 20 == 0 and a > 0.99:
            break
    with torch.no_grad():
        extra = {
            "iterations": iteration + 1,
            "snapshots": snapshots,
            "train accuracy": acc(torch.sigmoid(linear(x_train)).squeeze(1), y_train),
            "test accuracy": acc(torch.sigmoid(linear(x_test)).squeeze(1), y_test),
            "p_new": torch.sigmoid(linear(torch.tensor([[1.0, 1.0]]))).item(),
        }
    return Plain(linear.weight[0].tolist(), linear.bias.item(), extra=extra)


@functools.cache
def plain_2d_norms(zero_grad: bool) -> tuple[float, ...]:
    """Returns linear.weight's gradient norm at each of 100 steps, with or without zero_grad."""
    x_train, y_train, _, _, linear = clouds()
    optimizer = torch.optim.SGD(linear.parameters(), lr=0.01, momentum=0.9)
    criterion = nn.BCELoss()
    norms = []
    for _ in range(100):
        loss = criterion(torch.sigmoid(linear(x_train)).squeeze(1), y_train)
        if zero_grad:
            optimizer.zero_grad()
        loss.backward()
        norms.append(linear.weight.grad.norm().item())  # type: ignore[union-attr]
        optimizer.step()
    return tuple(norms)


# ---- all four ----------------------------------------------------------------------------------


def test_registered_after_logistic_graph() -> None:
    names = list(EXAMPLES)
    at = names.index("logistic-graph")
    assert names[at + 1 : at + 5] == TRAINING
    for name in TRAINING:
        r = result(name)
        assert r.name == name and r.title == load_example(name).TITLE
        assert r.lens is not None and r.trace is None


@pytest.mark.parametrize("name", TRAINING)
def test_values_are_strict_json(name: str) -> None:
    json.dumps(result(name).values, allow_nan=False)


@pytest.mark.parametrize("name", TRAINING)
def test_figures_and_training_plot_write_pngs(name: str, tmp_path: Path) -> None:
    from gradlens.render.plots import save_figure

    r = result(name)
    expected = {"logistic-1d": {"curve"}, "logistic-2d": {"boundary"}}.get(name, set())
    assert set(r.figures) == expected
    for fig_name, figure in r.figures.items():
        assert isinstance(figure, Figure)
        written = save_figure(figure, tmp_path / f"{fig_name}.png")
        assert written.read_bytes().startswith(PNG)
    written = lens_of(name).plot(tmp_path / "x.png")
    assert written.read_bytes().startswith(PNG)


@pytest.mark.parametrize("name", TRAINING)
def test_save_and_load_keep_steps_and_diagnostics(name: str, tmp_path: Path) -> None:
    lens = lens_of(name)
    path = tmp_path / "run.json"
    gradlens.save(lens, path)
    loaded = gradlens.load(path)
    assert isinstance(loaded, gradlens.Lens)
    assert len(loaded.steps) == len(lens.steps)
    assert [d.kind for d in loaded.diagnostics] == [d.kind for d in lens.diagnostics]


# ---- logistic-1d -------------------------------------------------------------------------------


def test_logistic_1d_equals_plain_pytorch() -> None:
    v, plain = result("logistic-1d").values, plain_1d()
    assert v["w"] == plain.w[0]
    assert v["b"] == plain.b
    assert v["loss"] == plain.losses[-1]
    assert v["p(pass | 4 hours)"] == plain.extra["p4"]
    assert v["4 hours passes"] == (plain.extra["p4"] > 0.5)  # type: ignore[operator]


def test_logistic_1d_result() -> None:
    v = result("logistic-1d").values
    assert v["4 hours passes"] is True  # p = 0.852
    assert 2.0 < v["0.5 crossing (hours)"] < 3.0  # between the failing and the passing student
    assert math.isclose(v["0.5 crossing (hours)"], -v["b"] / v["w"])
    curve = v["curve"]
    assert len(curve["hours"]) == len(curve["probability"]) == 200
    assert curve["hours"][0] == 0.0 and curve["hours"][-1] == 10.0
    probs = curve["probability"]
    assert all(a < b for a, b in itertools.pairwise(probs)), "w > 0: the curve rises"
    assert probs[0] < 0.5 < probs[-1]


def test_logistic_1d_lens_logs_every_epochs_loss() -> None:
    lens, plain = lens_of("logistic-1d"), plain_1d()
    steps = lens.steps
    assert len(steps) == 1000
    assert [s.step for s in steps] == list(range(1000))
    for epoch in (0, 1, 2, 100, 500, 998, 999):
        assert steps[epoch].loss == plain.losses[epoch], epoch  # from lens.log(loss=loss)
        assert "loss" not in steps[epoch].scalars
    assert {s.lr for s in steps} == {0.01}
    assert set(steps[0].grads) == {"linear.weight", "linear.bias"}
    assert lens.diagnostics == []


# ---- logistic-logits ---------------------------------------------------------------------------


def test_logistic_logits_equals_plain_pytorch() -> None:
    v, plain = result("logistic-logits").values, plain_logits()
    assert v["p(x=4) before"] == plain.extra["before"]
    assert v["p(x=4) after"] == plain.extra["after"]
    assert v["w"] == plain.w[0] and v["b"] == plain.b
    assert v["first loss"] == plain.losses[0] and v["last loss"] == plain.losses[-1]
    # What this seed shows: x = 4 is class 1 already before training, and 40 small steps
    # leave every x on the class-1 side (2 of 4 right).
    assert v["class of x=4 before"] == v["class of x=4 after"] == 1
    assert v["correct after"] == 2
    assert v["p(x=4) after"] > v["p(x=4) before"]


def test_logistic_logits_lens() -> None:
    lens, plain = lens_of("logistic-logits"), plain_logits()
    steps = lens.steps
    assert len(steps) == 40
    assert [s.loss for s in steps] == plain.losses
    assert lens.diagnostics == []  # raw scores into BCEWithLogitsLoss: no loss-input finding
    assert set(steps[0].grads) == {"weight", "bias"}


# ---- logistic-2d -------------------------------------------------------------------------------


def test_logistic_2d_accuracies() -> None:
    v, plain = result("logistic-2d").values, plain_2d()
    assert v["train size"] == 134 and v["test size"] == 66  # test_size = 0.33 of 200
    assert v["iterations"] == plain.extra["iterations"] == 261
    assert v["train accuracy"] == plain.extra["train accuracy"]
    assert v["train accuracy"] > 0.99
    assert v["test accuracy"] == plain.extra["test accuracy"]
    assert v["test accuracy"] >= 0.95  # 65 of 66
    assert v["w"] == plain.w and v["b"] == plain.b


def test_logistic_2d_new_point() -> None:
    v, plain = result("logistic-2d").values, plain_2d()
    assert v["p(class 1 | new point)"] == plain.extra["p_new"]
    assert v["class of new point"] == int(plain.extra["p_new"] >= 0.5)  # type: ignore[operator]
    assert v["class of new point"] == 0  # p = 0.263: the red class, as seed 002 says


def test_logistic_2d_snapshots_are_the_parameters_at_those_iterations() -> None:
    v, plain = result("logistic-2d").values, plain_2d()
    expected = plain.extra["snapshots"]
    assert [s["step"] for s in v["snapshots"]] == list(range(0, 261, 20))
    assert len(v["snapshots"]) == len(expected)  # type: ignore[arg-type]
    for got, (step, w, b, accuracy, loss) in zip(v["snapshots"], expected, strict=True):  # type: ignore[call-overload]
        assert (got["step"], got["w"], got["b"]) == (step, w, b)
        assert (got["accuracy"], got["loss"]) == (accuracy, loss)
    assert v["snapshots"][-1]["accuracy"] > 0.99
    assert all(s["accuracy"] <= 0.99 for s in v["snapshots"][:-1])


def test_logistic_2d_has_no_diagnostics() -> None:
    lens = lens_of("logistic-2d")
    assert lens.diagnostics == []
    assert result("logistic-2d").values["diagnostics"] == 0
    assert len(lens.steps) == 261


# ---- forgot-zero-grad --------------------------------------------------------------------------


def test_forgot_zero_grad_points_at_the_backward_line_at_step_1() -> None:
    path = example_path("forgot-zero-grad")
    lines = path.read_text(encoding="utf-8").splitlines()
    backward = code_lines(path, "loss.backward()")
    assert len(backward) == 2, backward  # the loop without zero_grad, then the right one
    forgot, right = backward
    assert "zero_grad" not in lines[forgot - 2] and "zero_grad()" in lines[right - 2]

    diagnostics = lens_of("forgot-zero-grad").diagnostics
    assert [d.kind for d in diagnostics] == ["grad-accumulation"]
    (d,) = diagnostics
    assert d.step == 1
    assert d.name == "linear.weight"
    assert d.source == f"gradlens/examples/forgot_zero_grad.py:{forgot}"
    v = result("forgot-zero-grad").values
    assert (v["diagnostic step"], v["diagnostic source"]) == (1, d.source)


def test_forgot_zero_grad_the_right_loop_has_no_diagnostics() -> None:
    assert result("forgot-zero-grad").values["diagnostics, with zero_grad"] == []


def test_forgot_zero_grad_norms() -> None:
    v = result("forgot-zero-grad").values
    assert v["steps"] == [0, 10, 50, 99]
    bug, ok = v["weight grad norm"], v["weight grad norm, with zero_grad"]
    plain_bug, plain_ok = plain_2d_norms(zero_grad=False), plain_2d_norms(zero_grad=True)
    for got, plain in ((bug, plain_bug), (ok, plain_ok)):
        for norm, step in zip(got, v["steps"], strict=True):
            assert math.isclose(norm, plain[step], rel_tol=1e-6), step
    # The same first gradient; then .grad holds the running sum: it grows 6x within 10 steps
    # (peaking near step 13), and though the sum shrinks later it stays far above the
    # correct gradient, which only falls.
    assert bug[0] == ok[0]
    assert bug[1] > 6 * bug[0]  # step 10 against step 0
    assert all(b > 10 * o for b, o in zip(bug[1:], ok[1:], strict=True))
    assert all(a > b for a, b in itertools.pairwise(ok)), "with zero_grad the norm only falls"
    assert 5 <= v["peak step"] <= 20
    assert v["peak weight grad norm"] >= max(bug)
    too_big, right = v["final w"], v["final w, with zero_grad"]
    assert max(map(abs, too_big)) > 10 * max(map(abs, right))  # about 20x


def test_forgot_zero_grad_lens_norms_grow_step_by_step_at_first() -> None:
    steps = lens_of("forgot-zero-grad").steps
    assert len(steps) == 100
    norms = [s.grads["linear.weight"].grad_norm for s in steps]
    assert all(a < b for a, b in itertools.pairwise(norms[:11])), "each step adds to .grad"
    plain = plain_2d_norms(zero_grad=False)
    assert all(math.isclose(n, p, rel_tol=1e-6) for n, p in zip(norms, plain, strict=True))
    bias = [s.grads["linear.bias"].grad_norm for s in steps]
    assert all(a < b for a, b in itertools.pairwise(bias)), "the bias's sum grows throughout"
    v = result("forgot-zero-grad").values
    assert v["bias grad norm"] == [bias[s] for s in v["steps"]]


# ---- the copyable scripts ----------------------------------------------------------------------


def test_script_logistic_2d(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace = runpy.run_path(str(SCRIPTS / "logistic_2d.py"), run_name="__main__")
    assert (tmp_path / "logistic_2d.png").read_bytes().startswith(PNG)
    lens = namespace["lens"]
    assert lens.diagnostics == []
    assert namespace["accuracy"] > 0.99


def test_script_forgot_zero_grad(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = SCRIPTS / "forgot_zero_grad.py"
    monkeypatch.chdir(tmp_path)
    namespace = runpy.run_path(str(script), run_name="__main__")
    assert (tmp_path / "forgot_zero_grad.png").read_bytes().startswith(PNG)
    (line,) = code_lines(script, "loss.backward()")
    (d,) = namespace["lens"].diagnostics
    assert (d.kind, d.step) == ("grad-accumulation", 1)
    assert d.source is not None and d.source.endswith(f"forgot_zero_grad.py:{line}")
