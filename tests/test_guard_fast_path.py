"""The guard's fast path (``capture/pure.py``): which functions can never write their arguments.

A wrong "cannot write" would lose a finding, so the classification is checked against ATen's
own schemas and against what the ops do to version counters; and the guard still names the
line that saved a tensor when that tensor's node was made on the fast path.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable

import pytest
import torch
from torch.nn import functional as F

import gradlens
from gradlens.capture.pure import ATTRIBUTE, INPLACE, inplace_at, never_writes


@pytest.mark.parametrize(
    ("func", "expected"),
    [
        (torch.Tensor.mul, frozenset({"out"})),
        (torch.mul, frozenset({"out"})),
        (torch.Tensor.__mul__, frozenset({"out"})),
        (torch.Tensor.__getitem__, frozenset()),
        (torch.Tensor.sum, frozenset({"out"})),
        (torch._C._nn.linear, frozenset({"out"})),
        (torch.Tensor.grad.__get__, ATTRIBUTE),
        (torch.Tensor.grad.__set__, ATTRIBUTE),
    ],
)
def test_functions_that_cannot_write_their_arguments(func: object, expected: frozenset) -> None:
    assert never_writes(func) == expected


@pytest.mark.parametrize(
    "func",
    [
        torch.Tensor.mul_,  # in place
        torch.Tensor.add_,
        torch.Tensor.copy_,
        torch._foreach_add_,
        torch.Tensor.__iadd__,
        torch.Tensor.__setitem__,
        torch.Tensor.data.__set__,  # t.data = ...: what saved t reads the new values
        torch.Tensor.real.__set__,  # t.real = ...: copies into t
        torch.batch_norm,  # writes the running statistics; its schema does not say so
        torch.native_batch_norm,
        torch._C._nn.rrelu_with_noise,  # writes its noise argument
        F.embedding,  # max_norm= renormalises the weight in place
        torch.Tensor.backward,
    ],
)
def test_functions_that_may_write_take_the_full_check(func: object) -> None:
    assert never_writes(func) is None


@pytest.mark.parametrize(
    ("func", "position"), [(F.relu, 1), (F.leaky_relu, 2), (F.dropout, 3), (F.hardtanh, 3)]
)
def test_activations_write_only_when_inplace_is_true(func: object, position: int) -> None:
    assert never_writes(func) is INPLACE and inplace_at(func) == position


def test_functional_losses_and_profiler_ops_cannot_write() -> None:
    assert never_writes(F.mse_loss) == frozenset() and never_writes(F.cross_entropy) == frozenset()
    assert never_writes(torch.ops.profiler._record_function_enter_new) == frozenset()
    assert never_writes(torch.ops.profiler._record_function_exit._RecordFunction) == frozenset()
    assert never_writes(torch.ops.aten.add_) is None  # only the profiler's ops, by schema
    assert never_writes(torch.ops.aten.mul.Tensor) is None


def _relu_inplace_positional(x: torch.Tensor) -> None:
    F.relu(x, True)


def _relu_inplace_keyword(x: torch.Tensor) -> None:
    F.relu(x, inplace=True)


def _relu_module_inplace(x: torch.Tensor) -> None:
    torch.nn.ReLU(inplace=True)(x)


def _dropout_inplace(x: torch.Tensor) -> None:
    F.dropout(x, 0.5, True, True)


@pytest.mark.parametrize(
    "write",
    [_relu_inplace_positional, _relu_inplace_keyword, _relu_module_inplace, _dropout_inplace],
)
def test_an_inplace_activation_takes_the_full_check(write: Callable[[torch.Tensor], None]) -> None:
    x = torch.tensor([-1.0, 2.0], requires_grad=True)
    with warnings.catch_warnings(record=True), gradlens.guard() as g:
        y = x.exp()  # ExpBackward0 saves its result, y
        write(y)
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            y.sum().backward()
    (v,) = g.violations
    assert (v.kind, v.saved_by) == ("inplace-saved", "ExpBackward0")
    assert v.write_op == ("dropout" if write is _dropout_inplace else "relu")
    _, start = inspect.getsourcelines(write)
    assert v.write_source == f"tests/test_guard_fast_path.py:{start + 1}"  # the body's one line


def test_an_out_argument_takes_the_full_check() -> None:
    x = torch.ones(3, requires_grad=True)
    with warnings.catch_warnings(record=True), gradlens.guard() as g:
        y = x.exp()  # fast path: ExpBackward0 saved y
        torch.mul(torch.ones(3), 2.0, out=y.detach())  # out= writes y's memory: full check
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            y.sum().backward()
    (v,) = g.violations
    assert (v.kind, v.write_op, v.saved_op, v.saved_by) == (
        "inplace-saved",
        "mul",
        "exp",
        "ExpBackward0",
    )
    assert v.saved_source is not None and v.saved_source.endswith(f":{_line('x.exp()')}")


def _line(text: str) -> int:
    import inspect

    source, start = inspect.getsourcelines(test_an_out_argument_takes_the_full_check)
    return start + next(i for i, s in enumerate(source) if text in s)


def test_a_10000_op_chain_is_checked_and_names_the_saving_line() -> None:
    w = torch.ones(2, requires_grad=True)
    with warnings.catch_warnings(record=True), gradlens.guard() as g:
        x = w
        for _ in range(10_000):
            x = x * 1.0001
        s = x.sigmoid()
        s.mul_(2.0)
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            s.sum().backward()
    (v,) = g.violations
    assert (v.kind, v.write_op, v.saved_op, v.saved_as) == (
        "inplace-saved",
        "mul_",
        "sigmoid",
        "result",
    )
    assert v.saved_source is not None and v.saved_source.startswith("tests/")


def _chain_grad(w: torch.Tensor) -> torch.Tensor:
    x = w
    for _ in range(1000):
        x = x * 1.0001
    x.sum().backward()
    assert w.grad is not None
    return w.grad


def test_no_finding_on_a_correct_chain_same_gradient_nothing_kept_after() -> None:
    plain = _chain_grad(torch.ones(2, requires_grad=True))
    with gradlens.guard() as g:
        guarded = _chain_grad(torch.ones(2, requires_grad=True))
    assert g.violations == []
    assert g._capture.log is not None and g._capture.log.made_log == []  # forgotten at exit
    assert torch.equal(guarded, plain)


def test_an_op_inside_torch_modules_names_the_users_line_that_called_them() -> None:
    net = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Sigmoid())
    x = torch.ones(2, 3)
    with warnings.catch_warnings(record=True), gradlens.guard() as g:
        out = net(x)  # SigmoidBackward0 saves out: made inside torch's own module code
        out.mul_(2.0)
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            out.sum().backward()
    (v,) = g.violations
    source, start = inspect.getsourcelines(
        test_an_op_inside_torch_modules_names_the_users_line_that_called_them
    )
    called = start + next(i for i, s in enumerate(source) if "out = net(x)" in s)
    assert (v.saved_op, v.saved_by) == ("sigmoid", "SigmoidBackward0")
    assert v.saved_source == f"tests/test_guard_fast_path.py:{called}"


def test_line_at_gives_what_f_lineno_gave() -> None:
    import sys

    from gradlens.capture.source import line_at

    frame = sys._getframe()
    seen = 0
    while frame is not None:  # this test's frame, pytest's and pluggy's: many code objects
        assert line_at(frame.f_code, frame.f_lasti) == frame.f_lineno
        seen += 1
        frame = frame.f_back
    assert seen > 5
    code = test_line_at_gives_what_f_lineno_gave.__code__
    assert line_at(code, -1) == code.co_firstlineno  # a frame that has not started


def test_a_failure_on_the_fast_path_stops_every_check_and_changes_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from gradlens.capture import guard as guard_module

    def broken(filename: str) -> bool:
        raise ValueError("planted")

    monkeypatch.setattr(guard_module, "_internal", {})  # every file is looked up again
    monkeypatch.setattr(guard_module, "is_internal", broken)
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    with warnings.catch_warnings(record=True) as caught, gradlens.guard() as g:
        y = x.exp()  # the fast path fails here: gradlens stops checking
        mode = g._capture._mode
        assert mode is not None and mode._made is None  # later ops skip the fast path too
        y.mul_(2.0)  # a real write to a saved tensor: unchecked now, PyTorch's own error stays
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            y.sum().backward()
        z = (x * 3.0).sum()
        z.backward()
    assert g.violations == [] and not [w for w in caught if "inplace" in str(w.message)]
    assert g.notes == [
        "gradlens stopped checking at exp (ValueError: planted); the program ran on unchecked"
    ]
    assert x.grad is not None and torch.equal(x.grad, torch.full((2,), 3.0))
