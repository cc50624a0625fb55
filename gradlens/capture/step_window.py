"""An optimizer step run with gradlens's torch-function mode off the stack, and what it wrote.

A torch-function mode costs a trip into Python for every torch call, attribute reads
included: an SGD step over 10 parameters makes about 55 of them, Adam over GPT-2's 148 about
1,500. None of them matters to a watcher, and to the guard only the writes do, which the
version counters of the parameters and their gradients tell after the step. So, for a
``torch.optim`` step called without a closure (a closure runs forward and backward inside
the step: those must be seen), a global step pre-hook takes the mode off the stack when it is
on top, and the post-hook puts it back and reports the tensors whose version moved.

A step that raises never reaches its post-hook: the mode stays off until the next step's
post-hook, or the end of the block (``StepWindow.stop`` says the mode is off, so the caller
must not pop it).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any

import torch
from torch.optim.optimizer import (
    register_optimizer_step_post_hook,
    register_optimizer_step_pre_hook,
)
from torch.overrides import TorchFunctionMode

__all__ = ["StepWindow", "Written", "mode_on_top", "versions_of"]

_PLAIN = (torch.Tensor, torch.nn.Parameter, torch.nn.Buffer)
_next_seq = torch._C._autograd._get_sequence_nr
_is_compiling = torch.compiler.is_compiling
#: ATen's fused kernels by optimizer class: they write the parameters without moving their
#: version counter on the CPU.
_FUSED = {
    "SGD": "_fused_sgd_",
    "Adam": "_fused_adam_",
    "AdamW": "_fused_adamw_",
    "Adagrad": "_fused_adagrad_",
}


@dataclass(slots=True)
class Written:
    """What one optimizer step wrote: ``(tensor, version before, version after)`` triples, the
    op name to report (``"SGD.step"``, or the fused kernel's name), the user's frame that
    called the step, and the autograd sequence number before it."""

    tensors: list[tuple[torch.Tensor, int, int]]
    op: str
    frame: FrameType | None
    seq: int


@dataclass(slots=True)
class _Open:
    optimizer: Any
    frame: FrameType  # the step wrapper's frame: running while the step runs
    tensors: list[torch.Tensor]
    versions: list[int | None]
    seq: int


class StepWindow:
    """Keeps ``mode`` off the stack during plain optimizer steps (see the module doc); calls
    ``on_written`` after each with what it wrote, if given."""

    def __init__(
        self, mode: TorchFunctionMode, on_written: Callable[[Written], None] | None = None
    ) -> None:
        self._mode = mode
        self._on_written = on_written
        self._open: list[_Open] = []
        self._off = False  # the mode is off the stack (a step is running, or one raised)
        self.raised = 0  # steps that raised (the mode stayed off until the next step ended)
        self._handles: list[Any] = []

    def start(self) -> None:
        """Registers the global step hooks (call after the mode is on the stack)."""
        self._handles = [
            register_optimizer_step_pre_hook(self._pre),
            register_optimizer_step_post_hook(self._post),
        ]

    def stop(self) -> bool:
        """Removes the hooks and forgets the open steps; returns whether the mode is off the
        stack (a step raised and nothing put it back): then the caller must not pop it."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._open.clear()
        off, self._off = self._off, False
        return off

    def _pre(self, opt: Any, args: Any, kwargs: Any) -> None:
        if args[1:] or kwargs or _is_compiling():  # a closure, or dynamo tracing the step
            return
        frame = sys._getframe(1)
        if self._off:
            if self._open and _running(self._open[-1].frame):
                return  # a step inside another's step (a wrapper optimizer): the outer one judges
            self.raised += 1  # the last step raised, and the mode is still off: take over
            self._open.clear()
        elif not mode_on_top(self._mode):
            return  # another mode above gradlens's: leave the stack alone
        else:
            torch._C._pop_torch_function_stack()
            self._off = True
        tensors: list[torch.Tensor] = []
        if self._on_written is not None:
            append = tensors.append
            for group in opt.param_groups:
                for p in group["params"]:
                    if type(p) in _PLAIN:
                        append(p)
                        g = p.grad
                        if g is not None and type(g) in _PLAIN:
                            append(g)
        self._open.append(_Open(opt, frame, tensors, versions_of(tensors), _next_seq()))

    def _post(self, opt: Any, args: Any, kwargs: Any) -> None:
        if not self._open or self._open[-1].optimizer is not opt:
            return
        if self._open[-1].frame is not sys._getframe(1):
            return
        step = self._open.pop()
        try:
            if self._on_written is not None:  # with the mode still off: its reads are its own
                self._report(opt, step)
        finally:
            if self._off and not self._open:
                torch._C._push_on_torch_function_stack(self._mode)
                self._off = False

    def _report(self, opt: Any, step: _Open) -> None:
        assert self._on_written is not None
        written = [
            (t, v, after)
            for t, v in zip(step.tensors, step.versions, strict=True)
            if v is not None and (after := t._version) != v
        ]
        name = type(opt).__name__
        if _fused(opt):
            op = _FUSED.get(name, f"{name}.step (fused)")
            if not written:  # the fused kernel wrote the parameters with a gradient
                written = [
                    (p, p._version, p._version)
                    for group in opt.param_groups
                    for p in group["params"]
                    if type(p) in _PLAIN and p.grad is not None
                ]
        else:
            op = f"{name}.step"
        if written:
            self._on_written(Written(written, op, step.frame.f_back, step.seq))


def mode_on_top(mode: TorchFunctionMode | None) -> bool:
    """Returns whether ``mode`` is the innermost torch-function mode on this thread's stack."""
    depth = torch._C._len_torch_function_stack()
    return depth > 0 and torch._C._get_function_stack_at(depth - 1) is mode


def _running(frame: FrameType) -> bool:
    """Returns whether ``frame`` is on the current call stack."""
    f: FrameType | None = sys._getframe(2)
    while f is not None:
        if f is frame:
            return True
        f = f.f_back
    return False


def versions_of(tensors: list[torch.Tensor]) -> list[int | None]:
    """Returns each tensor's version (None for inference tensors, which have no counter)."""
    try:
        return [t._version for t in tensors]
    except RuntimeError:
        return [None if t.is_inference() else t._version for t in tensors]


def _fused(opt: Any) -> bool:
    for group in opt.param_groups:  # noqa: SIM110 - a loop: no generator per step
        if group.get("fused"):
            return True
    return False
