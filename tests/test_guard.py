"""gradlens.guard: writes to saved tensors caught at the writing line, PyTorch's errors kept."""

from __future__ import annotations

import gc
import inspect
import weakref
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import gradlens
from gradlens import GradlensError, InplaceError
from gradlens.render.inplace_view import format_violations

HERE = "tests/test_guard.py"
MODIFIED = "modified by an inplace operation"


def line(fn: Callable[..., object], needle: str) -> str:
    lines, start = inspect.getsourcelines(fn)
    (hit,) = [start + i for i, t in enumerate(lines) if needle in t and "line(" not in t]
    return f"{HERE}:{hit}"


def sigmoid_then_mul() -> torch.Tensor:
    x = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = torch.sigmoid(x)
    y.mul_(2)
    y.sum().backward()
    return x


def test_the_classic_is_reported_at_the_write_and_pytorch_still_raises() -> None:
    with pytest.raises(RuntimeError, match=MODIFIED), gradlens.guard() as g:
        sigmoid_then_mul()
    (v,) = g.violations
    assert (v.kind, v.tensor, v.write_op, v.saved_op, v.saved_as) == (
        "inplace-saved",
        "y",
        "mul_",
        "sigmoid",
        "result",
    )
    assert v.write_source == line(sigmoid_then_mul, "y.mul_(2)")
    assert v.saved_source == line(sigmoid_then_mul, "torch.sigmoid(x)")
    assert (v.saved_version, v.version, v.saved_by) == (0, 1, "SigmoidBackward0")
    (d,) = g.diagnostics
    assert d.message == (
        f"y was overwritten by mul_ at {v.write_source}, but sigmoid at {v.saved_source} saved "
        "it for backward (as result, at version 0; now 1): backward through SigmoidBackward0 "
        'will fail with PyTorch\'s "modified by an inplace operation" error'
    )
    assert "clone" in (d.fix or "")


def test_strict_mode_raises_before_the_backward_that_would_fail() -> None:
    with pytest.raises(InplaceError) as info, gradlens.guard(mode="strict"):
        sigmoid_then_mul()
    assert isinstance(info.value, RuntimeError) and isinstance(info.value, GradlensError)
    assert info.value.violation.write_source == line(sigmoid_then_mul, "y.mul_(2)")
    frames = [f for f in inspect.getinnerframes(info.tb) if f.filename.endswith(HERE)]
    assert f"{HERE}:{frames[-1].lineno}" == line(sigmoid_then_mul, "y.sum().backward()")
    text = str(info.value)
    assert text.startswith(f"y was overwritten by mul_ at {line(sigmoid_then_mul, 'y.mul_(2)')}")
    assert "\nfix: write to a copy instead (y = y.clone()" in text


def test_strict_mode_never_raises_at_a_write_no_backward_reaches() -> None:
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    with gradlens.guard(mode="strict") as g:
        out = torch.sigmoid(w * 3)  # saves w (mul) and its output (sigmoid)
        with torch.no_grad():
            w.mul_(0.9)  # the graph above is dropped below, never backpropagated
        del out
        loss = (w * 2).sum()
        loss.backward()
    assert g.violations == []
    assert torch.equal(w.grad, torch.tensor([2.0, 2.0]))


def test_warn_mode_warns_when_the_violation_is_confirmed_before_pytorchs_error() -> None:
    events: list[str] = []
    with pytest.warns(gradlens.InplaceWarning) as caught:
        try:
            with gradlens.guard():
                x = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
                y = torch.sigmoid(x)
                y.mul_(2)
                events.append(f"warnings before backward: {len(caught)}")
                y.sum().backward()
        except RuntimeError as e:
            events.append(f"warnings when PyTorch raised: {len(caught)}: {MODIFIED in str(e)}")
    assert events == ["warnings before backward: 0", "warnings when PyTorch raised: 1: True"]
    (w,) = caught
    assert w.filename.endswith(HERE) and isinstance(w.message, gradlens.InplaceWarning)
    assert w.message.violation.write_op == "mul_"
    assert "fix: " in str(w.message)


def data_write() -> torch.Tensor:
    x = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = torch.exp(x)
    y.data.mul_(2)  # exp's backward uses y: the gradient doubles, silently
    y.sum().backward()
    return x


def test_a_data_write_is_silent_for_pytorch_but_not_for_gradlens() -> None:
    plain = data_write()
    with gradlens.guard() as g:
        guarded = data_write()
    assert torch.equal(plain.grad, guarded.grad)  # same (wrong) numbers: nothing changed
    assert torch.equal(plain.grad, 2 * torch.exp(torch.tensor([1.0, 2.0, 3.0])))
    (v,) = g.violations
    assert (v.kind, v.tensor, v.write_op) == ("silent-write", "y", "mul_")
    assert v.write_source == line(data_write, "y.data.mul_(2)")
    assert "wrong gradients" in g.diagnostics[0].message


def numpy_write() -> None:
    x = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = torch.exp(x)
    y.detach().numpy()[0] = 5.0  # no torch op sees this
    y.sum().backward()


def test_verify_catches_a_numpy_write_before_backward() -> None:
    with gradlens.guard() as g:
        numpy_write()
    assert g.violations == []  # without checksums nothing can see it
    with gradlens.guard(verify=True) as g:
        numpy_write()
    (v,) = g.violations
    assert (v.kind, v.write_op, v.saved_op) == ("silent-write", "(unseen write)", "exp")
    assert v.write_source == line(numpy_write, "y.sum().backward()")
    assert v.saved_source == line(numpy_write, "torch.exp(x)")


def test_writes_that_no_backward_needs_are_not_flagged() -> None:
    with gradlens.guard() as g:
        x = torch.tensor([1.0, 2.0], requires_grad=True)
        y = x.exp()
        z = x * 3
        y.add_(1)  # y's node is not on z's path: PyTorch is fine with this
        z.sum().backward()
        h = x + 1
        h.mul_(2)  # add saves nothing
        h.sum().backward()
    assert g.violations == []


def test_a_write_after_a_backward_without_retain_graph_is_harmless() -> None:
    with gradlens.guard() as g:
        x = torch.tensor([1.0, 2.0], requires_grad=True)
        y = torch.sigmoid(x)
        y.sum().backward()
        y.mul_(2)
    assert g.violations == []


def test_retain_graph_then_a_write_then_a_second_pass() -> None:
    with pytest.raises(RuntimeError, match=MODIFIED), gradlens.guard() as g:
        x = torch.tensor([1.0, 2.0], requires_grad=True)
        y = torch.tanh(x)
        y.sum().backward(retain_graph=True)
        y.add_(1)
        y.sum().backward()
    assert [v.kind for v in g.violations] == ["inplace-saved"]


def test_an_optimizer_step_between_forward_and_backward_names_the_parameter() -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Tanh(), torch.nn.Linear(3, 1))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    x = torch.ones(4, 2)
    with pytest.raises(RuntimeError, match=MODIFIED), gradlens.guard() as g:
        first, second = net(x).sum(), net(x).pow(2).sum()
        first.backward(retain_graph=True)
        opt.step()
        second.backward()
    kinds = {(v.kind, v.tensor, v.write_op) for v in g.violations}
    assert ("inplace-saved", "net.2.weight", "SGD.step") in kinds


def test_an_inplace_op_on_a_leaf_is_explained() -> None:
    w = torch.tensor([1.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf Variable"), gradlens.guard() as g:
        w.add_(1)
    (v,) = g.violations
    assert (v.kind, v.tensor, v.write_op) == ("inplace-leaf", "w", "add_")
    assert "torch.no_grad()" in (g.diagnostics[0].fix or "")


def test_the_guard_keeps_no_tensor_alive_and_removes_its_mode() -> None:
    with gradlens.guard(verify=True) as g:
        x = torch.tensor([1.0, 2.0], requires_grad=True)
        y = torch.sigmoid(x)
        ref = weakref.ref(y)
    assert torch._C._len_torch_function_stack() == 0
    del x, y
    gc.collect()
    assert ref() is None
    assert g.violations == []


def test_the_table_and_bad_arguments() -> None:
    with pytest.raises(RuntimeError), gradlens.guard() as g:
        sigmoid_then_mul()
    text = format_violations(g.violations, width=140)
    assert "inplace-saved" in text and "sigmoid (result)" in text and "0 → 1" in text
    assert "no in-place write" in format_violations([])
    with pytest.raises(GradlensError, match="takes 'warn' or 'strict', got 'loud'"):
        gradlens.guard(mode="loud")
    with pytest.raises(GradlensError, match="can be used once"):
        g.__enter__()


def test_a_trace_records_the_violation_and_draws_it_in_red(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=MODIFIED), gradlens.trace() as t:
        sigmoid_then_mul()
    (v,) = t.record.violations
    assert (v.kind, v.tensor, v.write_source) == (
        "inplace-saved",
        "y",
        line(sigmoid_then_mul, "y.mul_(2)"),
    )
    assert "inplace-saved" in [d.kind for d in t.diagnostics]
    marked = [(n.kind.value, n.name) for n in t.graph.nodes if n.problem]
    assert marked == [("op", "SigmoidBackward0"), ("saved", "result")]
    saved = next(n for n in t.graph.nodes if n.problem and n.kind.value == "saved")
    assert not saved.freed  # overwritten, not freed
    dot = t.graph.to_dot()
    assert dot.count("penwidth=2.5") == 2 and "overwritten by mul_" in dot
    loaded = gradlens.load(gradlens.save(t, tmp_path / "t.json"))
    assert isinstance(loaded, gradlens.Trace) and loaded.record.violations == (v,)


def test_a_trace_of_correct_code_has_no_violations_and_same_gradients() -> None:
    def correct() -> torch.Tensor:
        x = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
        y = torch.sigmoid(x)
        y = y * 2
        y.sum().backward()
        return x

    plain = correct()
    with gradlens.trace() as t:
        traced = correct()
    assert t.record.violations == () and torch.equal(plain.grad, traced.grad)


GAN = """\
import torch
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Tanh(), torch.nn.Linear(3, 1))
opt = torch.optim.SGD(net.parameters(), lr=0.1)
x = torch.ones(4, 2)
d_loss, g_loss = net(x).sum(), net(x).pow(2).sum()
d_loss.backward(retain_graph=True)
opt.step()
g_loss.backward()
print("finished")
"""


@pytest.mark.parametrize("flag", ["--guard", "--strict"])
def test_gradlens_run_guards_a_whole_script(
    flag: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from gradlens.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "gan.py").write_text(GAN, encoding="utf-8")
    code = main(["run", "gan.py", flag])
    raw = capsys.readouterr().out
    out = " ".join(raw.split())
    assert code == 1 and "finished" not in [line.strip() for line in raw.splitlines()]
    assert "inplace-saved net.2.weight SGD.step gan.py:8 linear (mat2) gan.py:6 1 → 2" in out
    if flag == "--strict":
        assert "InplaceError: net.2.weight was overwritten by SGD.step at gan.py:8" in out
    else:  # warn: PyTorch's own error still stops the script, at backward
        assert "modified by an inplace operation" in out


def test_setting_grad_to_none_is_not_a_data_write() -> None:
    w = torch.ones(3, requires_grad=True)
    with gradlens.guard() as g:
        loss = (w * w).sum()
        w.grad = None  # what optimizer.zero_grad() does
        loss.backward()
    assert g.violations == []


def test_two_layers_on_one_line_are_told_apart_in_the_diagram() -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    x = torch.ones(3, 2, requires_grad=True)  # so the first layer saves its weight too
    with pytest.raises(RuntimeError, match=MODIFIED), gradlens.trace(net) as t:
        first, second = net(x).sum(), net(x).pow(2).sum()
        first.backward(retain_graph=True)
        opt.step()
        second.backward()
    tensors = sorted(v.tensor for v in t.record.violations)
    assert tensors == ["net.0.weight", "net.2.weight"]
    marked = sorted((n.name, n.shape) for n in t.graph.nodes if n.problem and n.name == "mat2")
    assert marked == [("mat2", (2, 4)), ("mat2", (4, 1))]
    assert all(
        ("net.0.weight" in n.problem) == (n.shape == (2, 4))
        for n in t.graph.nodes
        if n.problem and n.name == "mat2"
    )


def test_two_modules_in_a_trace_keep_their_parameter_names() -> None:
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 1)
    with gradlens.trace(a, b) as t:
        b(a(torch.ones(1, 2))).sum().backward()
    assert {"Linear0.weight", "Linear0.bias", "Linear1.weight", "Linear1.bias"} <= set(t.tensors)


class _Cube(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):  # type: ignore[no-untyped-def, override]
        ctx.save_for_backward(x)
        return x**3

    @staticmethod
    def backward(ctx, g):  # type: ignore[no-untyped-def, override]
        (x,) = ctx.saved_tensors
        return g * 3 * x**2


def _cube_then_an_op() -> None:
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    h = w * 1
    y = _Cube.apply(h)
    h.add_(1)  # the custom write
    y.sum().backward()


def _cube_then_backward() -> None:
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    h = w * 1
    y = _Cube.apply(h)
    h.add_(1)  # the custom write
    y.backward(torch.ones(2))  # no op between apply() and backward


@pytest.mark.parametrize("program", [_cube_then_an_op, _cube_then_backward])
def test_a_custom_functions_saved_input_written_after_apply(program: Callable[[], None]) -> None:
    with pytest.raises(RuntimeError, match=MODIFIED) as plain:
        program()
    with pytest.raises(RuntimeError) as warned, gradlens.guard() as g:
        program()
    assert str(warned.value) == str(plain.value)
    (v,) = g.violations
    assert (v.kind, v.tensor, v.write_op, v.saved_by) == (
        "inplace-saved",
        "h",
        "add_",
        "_CubeBackward",
    )
    assert v.write_source == line(program, "h.add_(1)")
    with pytest.raises(InplaceError), gradlens.guard(mode="strict"):
        program()


def test_warnings_as_errors_never_stop_a_program_that_runs_without_gradlens(
    recwarn: pytest.WarningsRecorder,
) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # as under python -W error
        plain = data_write()
        with gradlens.guard() as g:
            guarded = data_write()
        with pytest.raises(RuntimeError, match=MODIFIED), gradlens.trace():
            sigmoid_then_mul()  # PyTorch's own error, not gradlens's warning
    assert torch.equal(plain.grad, guarded.grad)
    assert [v.kind for v in g.violations] == ["silent-write"]


@pytest.mark.parametrize("verify", [False, True])
def test_batch_norm_run_twice_before_backward_is_not_a_silent_write(verify: bool) -> None:
    """Training-mode batch norm updates its running statistics in place on every call, and its
    backward never reads them: no finding, and the gradients are PyTorch's."""

    def run() -> torch.Tensor:
        torch.manual_seed(0)
        bn = torch.nn.BatchNorm1d(3)
        x = torch.randn(4, 3, requires_grad=True)
        a, b = bn(x), bn(x * 2)
        (a.sum() + b.pow(2).sum()).backward()
        assert x.grad is not None
        return x.grad

    plain = run()
    with gradlens.guard(verify=verify) as g:
        guarded = run()
    assert g.violations == [] and torch.equal(plain, guarded)


@pytest.mark.parametrize("verify", [False, True])
def test_a_fused_optimizer_step_between_forward_and_backward_is_a_silent_write(
    verify: bool,
) -> None:
    """SGD(fused=True) on CPU updates the weights without moving their version: PyTorch runs
    the second backward with the new weights (a wrong gradient), gradlens names the step."""

    def run() -> torch.Tensor:
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Tanh(), torch.nn.Linear(3, 1))
        opt = torch.optim.SGD(net.parameters(), lr=0.1, fused=True)
        x = torch.ones(4, 2, requires_grad=True)
        first, second = net(x).sum(), net(x).pow(2).sum()
        first.backward(retain_graph=True)
        opt.step()  # the fused step
        second.backward()
        assert x.grad is not None
        return x.grad

    plain = run()
    with gradlens.guard(verify=verify) as g:
        guarded = run()
    assert torch.equal(plain, guarded)
    found = {(v.kind, v.tensor, v.write_op, v.write_source) for v in g.violations}
    where = line(run, "opt.step()  # the fused step")
    assert found == {
        ("silent-write", "net.0.weight", "_fused_sgd_", where),
        ("silent-write", "net.2.weight", "_fused_sgd_", where),
    }
    assert "a fused optimizer step" in g.diagnostics[0].message
