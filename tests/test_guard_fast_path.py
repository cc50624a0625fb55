"""The guard's fast path (``capture/pure.py``): which functions can never write their arguments.

A wrong "cannot write" would lose a finding, so the classification is checked against ATen's
own schemas and against what the ops do to version counters; and the guard still names the
line that saved a tensor when that tensor's node was made on the fast path.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch.nn import functional as F

import gradlens
from gradlens.capture.pure import never_writes


@pytest.mark.parametrize(
    ("func", "expected"),
    [
        (torch.Tensor.mul, frozenset({"out"})),
        (torch.mul, frozenset({"out"})),
        (torch.Tensor.__mul__, frozenset({"out"})),
        (torch.Tensor.__getitem__, frozenset()),
        (torch.Tensor.sum, frozenset({"out"})),
        (torch._C._nn.linear, frozenset({"out"})),
        (torch.Tensor.grad.__get__, frozenset()),
        (torch.Tensor.grad.__set__, frozenset()),
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
        F.relu,  # a Python function: relu(x, True) writes x
        F.embedding,  # max_norm= renormalises the weight in place
        torch.Tensor.backward,
    ],
)
def test_functions_that_may_write_take_the_full_check(func: object) -> None:
    assert never_writes(func) is None


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
