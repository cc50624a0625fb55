"""The guard's optimizer steps (``capture/step_window.py``): its mode is off the stack during a
plain ``opt.step()`` and the step's writes are judged by version counters; a step with a
closure, a step that raises, another mode above gradlens's and a step inside another step all
leave the guard checking what it checked before."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch
from torch.overrides import TorchFunctionMode

import gradlens
from gradlens.capture.guard import STEP_RAISED_NOTE
from gradlens.capture.writes import WriteLog

MODIFIED = "modified by an inplace operation"


def _stack() -> int:
    return torch._C._len_torch_function_stack()


class _Spy(TorchFunctionMode):
    """Counts the calls that reach it."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        self.calls.append(getattr(func, "__name__", str(func)))
        return func(*args, **(kwargs or {}))


def _net() -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Tanh(), torch.nn.Linear(3, 1)), (
        torch.ones(4, 2)
    )


def test_the_mode_is_off_during_a_plain_step_and_back_after_it() -> None:
    net, x = _net()
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    seen: list[int] = []
    opt.register_step_pre_hook(lambda *_: seen.append(_stack()))
    with gradlens.guard():
        depth = _stack()
        net(x).sum().backward()
        opt.step()
        assert _stack() == depth == 1
    assert seen == [0] and _stack() == 0  # gradlens's hook ran first: the step ran without it


def test_a_step_with_a_closure_keeps_checking_inside_it() -> None:
    net, x = _net()
    opt = torch.optim.LBFGS(net.parameters(), max_iter=1)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        h = torch.sigmoid(net(x))
        h.mul_(2)  # sigmoid saved h: the closure's own backward fails
        loss = h.sum()
        loss.backward()
        return loss

    with pytest.raises(RuntimeError, match=MODIFIED), gradlens.guard() as g:
        opt.step(closure)
    assert [(v.kind, v.tensor, v.write_op) for v in g.violations] == [
        ("inplace-saved", "h", "mul_")
    ]
    assert _stack() == 0


class _Failing(torch.optim.SGD):
    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        super().step(closure)
        raise RuntimeError("the step failed")


def test_a_step_that_raises_and_is_caught_is_said_and_checking_resumes_at_the_next_step() -> None:
    net, x = _net()
    bad = _Failing(net.parameters(), lr=0.1)
    good = torch.optim.SGD(net.parameters(), lr=0.1)
    with warnings.catch_warnings(record=True), gradlens.guard() as g:
        net(x).sum().backward()
        with pytest.raises(RuntimeError, match="the step failed"):
            bad.step()
        assert _stack() == 0  # off, since the step never reached its post-hook
        good.step()  # this step's end puts the mode back
        assert _stack() == 1
        y = torch.sigmoid(torch.ones(2, requires_grad=True))
        y.mul_(2)
        with pytest.raises(RuntimeError, match=MODIFIED):
            y.sum().backward()
    assert [(v.kind, v.write_op) for v in g.violations] == [("inplace-saved", "mul_")]
    assert STEP_RAISED_NOTE in g.notes
    assert _stack() == 0


def test_a_step_that_raises_out_of_the_block_leaves_a_clean_stack() -> None:
    net, x = _net()
    bad = _Failing(net.parameters(), lr=0.1)
    with pytest.raises(RuntimeError, match="the step failed"), gradlens.guard() as g:
        net(x).sum().backward()
        bad.step()
    assert _stack() == 0 and g.notes == []


def test_another_mode_above_gradlens_is_left_alone_and_sees_the_whole_step() -> None:
    net, x = _net()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with pytest.raises(RuntimeError, match=MODIFIED), gradlens.guard() as g:
        first, second = net(x).sum(), net(x).pow(2).sum()
        first.backward(retain_graph=True)
        with _Spy() as spy:
            opt.step()  # gradlens's mode is not on top: the step goes op by op
        assert "add_" in spy.calls and _stack() == 1
        second.backward()
    assert {(v.tensor, v.write_op) for v in g.violations} >= {("net.2.weight", "add_")}


class _Wrapper(torch.optim.Optimizer):
    """A step that runs another optimizer's step inside it (as Lookahead does)."""

    def __init__(self, inner: torch.optim.Optimizer) -> None:
        self.inner = inner
        super().__init__(inner.param_groups[0]["params"], {})

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        self.inner.step()
        for p in self.param_groups[0]["params"]:
            p.mul_(1.0)  # its own write, after the inner step


def test_a_step_inside_another_step_is_judged_once_by_the_outer_one() -> None:
    net, x = _net()
    opt = _Wrapper(torch.optim.SGD(net.parameters(), lr=0.1))
    with pytest.raises(RuntimeError, match=MODIFIED), gradlens.guard() as g:
        first, second = net(x).sum(), net(x).pow(2).sum()
        first.backward(retain_graph=True)
        opt.step()
        assert _stack() == 1
        second.backward()
    found = {(v.tensor, v.write_op) for v in g.violations}
    assert ("net.2.weight", "_Wrapper.step") in found
    assert _stack() == 0


def test_a_steps_writes_are_logged_with_the_memory_they_hit() -> None:
    """The step's writes wait unlogged; a `.data =` flushes them before it moves the tensor."""
    log = WriteLog()
    p = torch.nn.Parameter(torch.ones(3))
    old = p.untyped_storage().data_ptr()
    with torch.no_grad():
        before = p._version
        p.add_(1)
    log.log_step([(p, before, p._version)], "SGD.step", ("train.py", 9), seq=5)
    assert log._by_storage == {}  # nothing logged yet
    log.flush()  # as the guard does before `p.data = new`
    p.data = torch.zeros(3)
    assert list(log._by_storage) == [old] and log._by_storage[old][0].op == "SGD.step"
    log.close()


def test_watch_leaves_its_mode_out_of_a_plain_step_and_cleans_up_after_a_raising_one() -> None:
    net, x = _net()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    seen: list[int] = []
    opt.register_step_pre_hook(lambda *_: seen.append(_stack()))
    with gradlens.watch(net, opt, live=False) as lens:
        for _ in range(3):
            opt.zero_grad()
            net(x).sum().backward()
            opt.step()
        assert _stack() == 1
    assert seen == [0, 0, 0] and _stack() == 0
    assert [s.step for s in lens.steps] == [0, 1, 2]
    bad = _Failing(net.parameters(), lr=0.1)
    with pytest.raises(RuntimeError, match="the step failed"), gradlens.watch(net, bad, live=False):
        net(x).sum().backward()
        bad.step()
    assert _stack() == 0


def test_several_steps_writes_are_logged_in_the_order_they_were_made() -> None:
    log = WriteLog()
    a, b = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2))
    log.log_step([(a, 0, 1), (b, 0, 1)], "SGD.step", None, seq=5)
    log.log_step([(a, 1, 2), (b, 1, 2)], "SGD.step", None, seq=9)
    log.flush()
    writes = sorted((w for ws in log._by_storage.values() for w in ws), key=lambda w: w.n)
    assert [(w.n, w.seq) for w in writes] == [(0, 5), (1, 5), (2, 9), (3, 9)]
    log.close()
