"""The in-place worked examples: PyTorch's own errors and gradients, recomputed here with plain
PyTorch, and gradlens.guard()'s violations at the lines found by reading each example's source.
"""

from __future__ import annotations

import functools
import inspect
import math
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn.functional import binary_cross_entropy_with_logits as bce

from gradlens.cli import main
from gradlens.examples import ExampleResult, load_example, run_example

MODIFIED = "modified by an inplace operation"


@functools.cache
def result(name: str) -> ExampleResult:
    return run_example(name)


def example_lines(name: str, statement: str) -> list[int]:
    """Returns the 1-based numbers of example ``name``'s lines whose code, comment and
    indentation left out, is ``statement`` (so docstrings and strings that quote it don't count).
    """
    path = Path(inspect.getsourcefile(load_example(name)))  # type: ignore[arg-type]
    lines = path.read_text(encoding="utf-8").splitlines()
    return [i for i, line in enumerate(lines, start=1) if line.split("#")[0].strip() == statement]


def source(name: str, line: int) -> str:
    """Returns how gradlens writes a line of example ``name``: "gradlens/examples/f.py:LINE"."""
    module = load_example(name).__name__.rpartition(".")[2]
    return f"gradlens/examples/{module}.py:{line}"


def section(r: ExampleResult, heading: str) -> object:
    """Returns the body of the section of ``r`` titled ``heading`` (or starting with it)."""
    bodies = [b for h, b in r.sections if h == heading]
    (body,) = bodies or [b for h, b in r.sections if h.startswith(heading)]
    return body


# ---- inplace-saved -----------------------------------------------------------------------------


def sigmoid_mul_error() -> str:
    x = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = torch.sigmoid(x)
    y.mul_(2)
    with pytest.raises(RuntimeError, match=MODIFIED) as error:
        y.sum().backward()
    return str(error.value)


def test_inplace_saved_shows_pytorchs_error_unchanged() -> None:
    v = result("inplace-saved").values
    expected = sigmoid_mul_error()
    assert "output 0 of Sigmoid, is at version 1; expected version 0" in expected
    assert v["pytorch_error"] == expected
    assert v["guarded_error"] == expected  # mode="warn" leaves PyTorch's error as it is
    assert section(result("inplace-saved"), "PyTorch says") == expected


def test_inplace_saved_violation_names_the_write_and_sigmoids_line() -> None:
    (write,) = example_lines("inplace-saved", "y.mul_(2)")
    sigmoid = example_lines("inplace-saved", "y = torch.sigmoid(x)")[0]  # in buggy(), first
    assert sigmoid == write - 1
    v = result("inplace-saved").values
    assert (v["kind"], v["tensor"], v["write_op"]) == ("inplace-saved", "y", "mul_")
    assert v["write_source"] == source("inplace-saved", write)
    assert v["write_source"] == f"gradlens/examples/inplace_saved.py:{write}"
    assert (v["saved_by"], v["saved_op"], v["saved_as"]) == (
        "SigmoidBackward0",
        "sigmoid",
        "result",
    )
    assert v["saved_source"] == source("inplace-saved", sigmoid)
    assert (v["saved_version"], v["version"]) == (0, 1)
    explained = section(result("inplace-saved"), "Explained")
    assert isinstance(explained, str)
    assert explained.startswith(f"y was overwritten by mul_ at {v['write_source']}, but sigmoid")
    assert f"sigmoid at {v['saved_source']} saved it" in explained
    assert "Fix: " in explained and "y = y * 2" in explained


def test_inplace_saved_trace_agrees_with_the_guard() -> None:
    r = result("inplace-saved")
    assert r.trace is not None and r.diagram is not None
    write = r.values["write_source"]
    assert ("inplace-saved", write) in {(d.kind, d.source) for d in r.trace.diagnostics}


def test_inplace_saved_fix_gives_the_right_gradient() -> None:
    x = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = torch.sigmoid(x)
    y = y * 2
    y.sum().backward()
    v = result("inplace-saved").values
    assert torch.equal(torch.tensor(v["fixed_grad"]), x.grad)
    s = torch.sigmoid(x.detach())
    assert torch.equal(torch.tensor(v["closed_form"]), 2 * s * (1 - s))
    assert v["fixed_grad"] == v["closed_form"]
    exact = [2 * (1 / (1 + math.exp(-t))) * (1 - 1 / (1 + math.exp(-t))) for t in (1, 2, 3)]
    assert v["fixed_grad"] == pytest.approx(exact, rel=1e-6)
    assert v["violations_after_fix"] == 0


def test_gradlens_run_inplace_saved_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", "inplace-saved"])
    out = " ".join(capsys.readouterr().out.split())
    assert code == 0
    assert "in-place violations" in out
    for cell in ("inplace-saved", "mul_", "sigmoid (result)", "0 → 1"):
        assert cell in out, cell
    (write,) = example_lines("inplace-saved", "y.mul_(2)")
    assert f"y was overwritten by mul_ at gradlens/examples/inplace_saved.py:{write}" in out
    assert "output 0 of Sigmoid" in out


# ---- inplace-optimizer -------------------------------------------------------------------------


def gan() -> tuple[nn.Module, nn.Module, torch.optim.Optimizer, torch.optim.Optimizer]:
    torch.manual_seed(0)
    generator = nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 2))
    discriminator = nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 1))
    opt_g = torch.optim.SGD(generator.parameters(), lr=0.1)
    opt_d = torch.optim.SGD(discriminator.parameters(), lr=0.1)
    return generator, discriminator, opt_g, opt_d


def gan_data() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    return torch.randn(8, 2) + 2, torch.randn(8, 2)


def test_inplace_optimizer_shows_pytorchs_error_unchanged() -> None:
    real, z = gan_data()
    generator, discriminator, _, opt_d = gan()
    score = discriminator(generator(z))
    d_loss = bce(score, torch.zeros(8, 1)) + bce(discriminator(real), torch.ones(8, 1))
    g_loss = bce(score, torch.ones(8, 1))
    d_loss.backward(retain_graph=True)
    opt_d.step()
    with pytest.raises(RuntimeError, match=MODIFIED) as error:
        g_loss.backward()
    v = result("inplace-optimizer").values
    assert v["pytorch_error"] == str(error.value)
    assert v["guarded_error"] == str(error.value)
    # PyTorch names discriminator.2.weight only by the shape of its transpose, [4, 1].
    assert "[torch.FloatTensor [4, 1]]" in v["pytorch_error"]


def test_inplace_optimizer_names_each_overwritten_weight_at_the_step_line() -> None:
    step = example_lines("inplace-optimizer", "opt_d.step()")[0]  # in gan_step(), first
    scored = example_lines("inplace-optimizer", "score = discriminator(fake)")
    assert len(scored) == 1
    violations = result("inplace-optimizer").values["violations"]
    assert [v["tensor"] for v in violations] == ["discriminator.2.weight", "discriminator.0.weight"]
    assert result("inplace-optimizer").values["overwritten"] == [
        "discriminator.2.weight",
        "discriminator.0.weight",
    ]
    initial = nn.Linear(2, 4).weight._version  # nn.Linear's init writes the weight once
    for v in violations:
        assert (v["kind"], v["write_op"]) == ("inplace-saved", "add_")
        assert v["write_source"] == f"gradlens/examples/inplace_optimizer.py:{step}"
        assert v["saved_source"] == source("inplace-optimizer", scored[0])
        assert (v["saved_by"], v["saved_op"], v["saved_as"]) == ("AddmmBackward0", "linear", "mat2")
        assert (v["saved_version"], v["version"]) == (initial, initial + 1)
    explained = section(result("inplace-optimizer"), "Explained")
    assert isinstance(explained, str)
    assert explained.startswith(
        f"discriminator.2.weight was overwritten by add_ at gradlens/examples/"
        f"inplace_optimizer.py:{step}"
    )
    assert "recompute the forward after the step" in explained


def test_inplace_optimizer_fix_matches_plain_pytorch() -> None:
    real, z = gan_data()
    generator, discriminator, opt_g, opt_d = gan()
    d_losses, g_losses = [], []
    for _ in range(3):
        fake = generator(z)
        d_loss = bce(discriminator(fake.detach()), torch.zeros(8, 1))
        d_loss = d_loss + bce(discriminator(real), torch.ones(8, 1))
        opt_d.zero_grad()
        d_loss.backward()
        opt_d.step()
        g_loss = bce(discriminator(fake), torch.ones(8, 1))
        opt_g.zero_grad()
        g_loss.backward()
        opt_g.step()
        d_losses.append(d_loss.item())
        g_losses.append(g_loss.item())
    v = result("inplace-optimizer").values
    assert v["d_loss, fixed"] == d_losses
    assert v["g_loss, fixed"] == g_losses
    assert v["violations after fix"] == 0


# ---- inplace-silent ----------------------------------------------------------------------------


def test_inplace_silent_gradient_is_twice_the_right_one() -> None:
    x = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = torch.exp(x)
    y.data.mul_(2)
    y.sum().backward()  # no error
    v = result("inplace-silent").values
    expected = torch.exp(torch.tensor([1.0, 2.0, 3.0]))
    assert torch.equal(torch.tensor(v["wrong_grad"]), x.grad)
    assert torch.equal(torch.tensor(v["wrong_grad"]), 2 * expected)
    assert torch.equal(torch.tensor(v["right_grad"]), expected)
    assert v["guarded_grad"] == v["wrong_grad"]  # the guard changes no number
    assert v["right_grad"] == pytest.approx([math.exp(1), math.exp(2), math.exp(3)], rel=1e-6)


def test_inplace_silent_flags_the_data_write() -> None:
    (write,) = example_lines("inplace-silent", "y.data.mul_(2)")
    exp_line = example_lines("inplace-silent", "y = torch.exp(x)")[0]  # in data_write(), first
    (v,) = result("inplace-silent").values["violations"]
    assert (v["kind"], v["tensor"], v["write_op"]) == ("silent-write", "y", "mul_")
    assert v["write_source"] == f"gradlens/examples/inplace_silent.py:{write}"
    assert (v["saved_op"], v["saved_as"]) == ("exp", "result")
    assert v["saved_source"] == source("inplace-silent", exp_line)
    assert (v["saved_version"], v["version"]) == (0, 0)  # .data has its own version counter
    explained = section(result("inplace-silent"), "Explained")
    assert isinstance(explained, str) and "wrong gradients" in explained


def test_inplace_silent_verify_catches_the_numpy_write_before_backward() -> None:
    x = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = torch.exp(x)
    y.detach().numpy()[0] = 5.0
    y.sum().backward()
    v = result("inplace-silent").values
    assert torch.equal(torch.tensor(v["numpy_grad"]), x.grad)
    assert v["numpy_grad"][0] == 5.0
    assert v["numpy violations, verify=False"] == []
    (found,) = v["numpy violations, verify=True"]
    backward = example_lines("inplace-silent", "y.sum().backward()")[1]  # in numpy_write()
    exp_line = example_lines("inplace-silent", "y = torch.exp(x)")[1]
    assert (found["kind"], found["write_op"]) == ("silent-write", "(unseen write)")
    assert found["write_source"] == source("inplace-silent", backward)
    assert found["saved_source"] == source("inplace-silent", exp_line)
    assert found["saved_op"] == "exp"


# ---- all three through the CLI -----------------------------------------------------------------


@pytest.mark.parametrize("name", ["inplace-saved", "inplace-optimizer", "inplace-silent"])
def test_gradlens_run_prints_sections_and_violations(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["run", name])
    out = " ".join(capsys.readouterr().out.split())
    assert code == 0
    assert "in-place violations" in out
    kinds = {v["kind"] for v in result(name).values.get("violations", [result(name).values])}
    for kind in kinds:
        assert kind in out
    for heading, _ in result(name).sections:
        assert " ".join(heading.split()) in out
