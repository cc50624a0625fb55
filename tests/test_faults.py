"""Leaving a recorder in every way a program can: 1000 cycles of each context manager, each
cycle ending normally, with an exception, or with KeyboardInterrupt (some in the middle of a
backward or a write gradlens itself refuses), then: not one hook, mode or node mark left, and no
tensor kept alive by a recorder once its block has ended."""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import pytest
import torch
from torch import nn
from torch.nn.modules import module as torch_module
from torch.optim import optimizer as torch_optimizer

import gradlens

CYCLES = 1000


class Planted(Exception):
    """The user's own error, raised inside the block."""


def global_hooks() -> dict[str, int]:
    """Returns how many global module and optimizer hooks torch holds, by kind."""
    return {
        "forward_pre": len(torch_module._global_forward_pre_hooks),
        "forward": len(torch_module._global_forward_hooks),
        "backward_pre": len(torch_module._global_backward_pre_hooks),
        "backward": len(torch_module._global_backward_hooks),
        "optimizer_pre": len(torch_optimizer._global_optimizer_pre_hooks),
        "optimizer_post": len(torch_optimizer._global_optimizer_post_hooks),
    }


def local_hooks(model: nn.Module, opt: torch.optim.Optimizer) -> list[str]:
    """Returns a description of every hook left on the model, its parameters and optimizer."""
    left = []
    for name, m in model.named_modules():
        for kind in (
            "_forward_hooks",
            "_forward_pre_hooks",
            "_backward_hooks",
            "_backward_pre_hooks",
        ):
            if getattr(m, kind):
                left.append(f"module {name or 'root'} {kind}")
    for name, p in model.named_parameters():
        if p._backward_hooks:
            left.append(f"tensor hook on {name}")
        if getattr(p, "_post_accumulate_grad_hooks", None):
            left.append(f"post-accumulate hook on {name}")
    if opt._optimizer_step_pre_hooks or opt._optimizer_step_post_hooks:
        left.append("optimizer step hooks")
    return left


def node_marks(*outputs: torch.Tensor) -> list[str]:
    """Returns the metadata keys left on any autograd node reachable from ``outputs``."""
    marks, seen = [], set()
    stack = [t.grad_fn for t in outputs if t.grad_fn is not None]
    while stack:
        fn = stack.pop()
        if fn is None or id(fn) in seen:
            continue
        seen.add(id(fn))
        marks += [f"{fn.name()}: {key!r}" for key in fn.metadata]
        stack += [next_fn for next_fn, _ in fn.next_functions]
    return marks


Factory = Callable[[nn.Module, torch.optim.Optimizer], AbstractContextManager[Any]]

RECORDERS: dict[str, Factory] = {
    "watch(model, opt)": lambda m, o: gradlens.watch(m, o, live=False),
    "watch()": lambda m, o: gradlens.watch(live=False),
    "guard(warn)": lambda m, o: gradlens.guard(),
    "guard(strict)": lambda m, o: gradlens.guard(mode="strict"),
    "guard(verify)": lambda m, o: gradlens.guard(verify=True),
    "trace(model)": lambda m, o: gradlens.trace(m),
}


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny ops on one thread: on a busy 2-core machine, a tiny backward handed to a second
    thread waits for it ~10 ms; the cycles are about leaving, not about speed."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("name", list(RECORDERS))
def test_a_thousand_ways_out_leave_nothing_behind(name: str, one_thread: None) -> None:
    factory = RECORDERS[name]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    before = global_hooks()
    assert torch._C._len_torch_function_stack() == 0
    endings = {"normal": 0, "Planted": 0, "KeyboardInterrupt": 0, "torch error": 0}
    marks: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gradlens.InplaceWarning)
        for i in range(CYCLES):
            big = torch.randn(64, 4)  # an input the recorder sees in every op
            alive = weakref.ref(big)
            ending = ("normal", "Planted", "KeyboardInterrupt", "write")[i % 4]
            backward = i % 3 != 0
            recorder = factory(model, opt)
            try:
                with recorder:
                    opt.zero_grad()
                    hidden = torch.sigmoid(model(big))  # sigmoid saves its output
                    out = hidden.pow(2).mean()
                    if ending == "write":
                        hidden.mul_(2)  # breaks the saved output: backward must fail
                    if ending == "Planted" and not backward:
                        raise Planted(i)
                    if ending == "KeyboardInterrupt" and not backward:
                        raise KeyboardInterrupt
                    if backward or ending == "write":
                        out.backward()
                        opt.step()
                    if ending == "Planted":
                        raise Planted(i)
                    if ending == "KeyboardInterrupt":
                        raise KeyboardInterrupt
                endings["normal"] += 1
            except Planted:
                endings["Planted"] += 1
            except KeyboardInterrupt:
                endings["KeyboardInterrupt"] += 1
            except RuntimeError as e:  # PyTorch's own error, or strict's InplaceError
                assert ending == "write", e
                assert "inplace" in str(e).lower() or "in-place" in str(e).lower(), e
                endings["torch error"] += 1
            assert torch._C._len_torch_function_stack() == 0, (name, i, ending)
            marks += node_marks(out, hidden)  # the graphs outlive the block: are they clean?
            del big, hidden, out
            assert alive() is None, f"{name}: cycle {i} ({ending}) kept its input alive"
            del recorder
    assert endings["normal"] > 0 and endings["Planted"] > 0 and endings["KeyboardInterrupt"] > 0
    assert endings["torch error"] + endings["normal"] > 0
    assert global_hooks() == before
    assert local_hooks(model, opt) == []
    assert marks == []
    assert torch.overrides._get_current_function_mode_stack() == []
