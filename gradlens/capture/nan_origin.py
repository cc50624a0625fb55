"""``watch(nan_origin=True)``: which module made a step's first non-finite value, with no sync.

Every module of the watched model (every module anywhere, for ``gradlens run``) gets a forward
pre-hook and a forward hook. The pre-hook probes the call's inputs and the module's own
parameters and buffers, the hook probes its outputs: one ``aminmax`` per floating-point tensor
(a single read; nan propagates through it, and a tensor is finite exactly when its min and max
are), kept on the device. A tensor already probed in this step and not written since (the
previous layer's output, a container's input) is not read again. Nothing is copied to the host
here: at the optimizer step the probes are stacked into one tensor per device and travel with
the step's other numbers in the watcher's batched transfer. No module backward hooks are used
(they break in-place ops on module outputs).

Inputs are probed *before* the call, so an in-place module (``ReLU(inplace=True)``) is judged
on what it was given. Calls made with grad mode off (evaluation) or while dynamo traces
(``torch.compile``: its graphs would keep the probes after the hooks are gone) are not probed.
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.hooks import RemovableHandle

from ..records import ModuleCall
from .quiet import quiet
from .source import format_location, frame_locals, is_internal
from .watch_names import user_frames

__all__ = ["MAX_CALLS", "ForwardChecks", "ForwardPending"]

#: Module calls probed per step at most (a loop that runs forward without ever stepping,
#: with grad mode on, stops being probed there; the step says its probes are incomplete).
MAX_CALLS = 8192
_COMPILED = "_orig_mod."
_OptimizedModule = torch._dynamo.eval_frame.OptimizedModule
_Probe = int  # index into ForwardChecks._values (two values: min, max)


@dataclass(eq=False)
class _Call:
    module: int  # index into ForwardChecks._names
    call: int
    source: tuple[str, int] | None
    inputs: tuple[_Probe, ...]
    params: tuple[_Probe, ...]
    outputs: tuple[_Probe, ...] = ()


@dataclass(eq=False)
class ForwardPending:
    """A step's module calls and their probes: ``tensors`` on the device, until the watcher
    puts them in its stash (``Slot``s) and reads them back (lists of floats)."""

    names: list[tuple[str, str]]  # (dotted name, class name) per module index
    calls: list[_Call]
    where: list[tuple[int, int]]  # probe -> (tensor index, position of its min)
    tensors: list[Any] = field(default_factory=list)
    complete: bool = True

    def records(self, values: list[list[float]]) -> tuple[int, bool, tuple[ModuleCall, ...]]:
        """Returns (calls probed, whether all were, the calls that saw a non-finite value)
        from the host copies of ``tensors``."""

        def finite(probes: tuple[_Probe, ...]) -> bool:
            for probe in probes:
                t, at = self.where[probe]
                lo, hi = values[t][at], values[t][at + 1]
                if not (lo - lo == 0.0 and hi - hi == 0.0):  # nan or inf
                    return False
            return True

        bad: list[ModuleCall] = []
        for index, c in enumerate(self.calls):
            inputs, params, output = finite(c.inputs), finite(c.params), finite(c.outputs)
            if inputs and params and output:
                continue
            name, kind = self.names[c.module]
            source = format_location(*c.source) if c.source is not None else None
            bad.append(ModuleCall(name, kind, index, c.call, source, inputs, params, output))
        return len(self.calls), self.complete, tuple(bad)


class ForwardChecks:
    """The forward hooks of ``nan_origin`` (``start``/``stop``); ``take`` ends a step."""

    def __init__(self, model: torch.nn.Module | None, notes: list[str]) -> None:
        self._model = model
        self.handles: list[RemovableHandle] = []
        self._index: dict[int, tuple[weakref.ref[torch.nn.Module], int]] = {}
        self._names: list[tuple[str, str]] = []
        self._roots: set[int] = set()  # global hooks: roots whose modules were named
        self._stack: list[_Call | None] = []
        self._calls: list[_Call] = []
        self._counts: dict[int, int] = {}
        self._values: list[torch.Tensor] = []  # min, max, min, max, ... (0-d)
        self._seen: dict[int, tuple[weakref.ref[torch.Tensor], int, _Probe]] = {}
        self._complete = True
        #: What nan_origin could not do, said once each (the watcher's notes).
        self.notes = notes
        self.broken = False

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Installs the hooks: on every module of the model, or global ones without a model."""
        model = self._model
        if model is None:
            hooks = torch.nn.modules.module
            self.handles.append(hooks.register_module_forward_pre_hook(self._pre))
            self.handles.append(hooks.register_module_forward_hook(self._post, always_call=True))
            return
        if isinstance(model, _OptimizedModule):
            self.notes.append(
                "nan_origin is off: the model is torch.compile'd, and hooks on its modules "
                "would be compiled into its graphs (watch the model before compiling it, or "
                "find the module by running that step uncompiled)"
            )
            return
        for name, module in model.named_modules():
            self._name(module, name)
            self.handles.append(module.register_forward_pre_hook(self._pre, with_kwargs=True))
            self.handles.append(module.register_forward_hook(self._post, always_call=True))

    def stop(self) -> None:
        """Removes every hook and forgets the step in progress."""
        for handle in self.handles:
            handle.remove()
        self.handles.clear()
        self._reset()
        self._index.clear()

    def take(self) -> ForwardPending | None:
        """Returns the module calls probed since the last ``take`` (None if none), on device."""
        calls, values, complete = self._calls, self._values, self._complete
        self._reset()
        if not calls or self.broken:
            return None
        with quiet(), torch.no_grad():
            groups: dict[tuple[torch.device, torch.dtype], list[int]] = {}
            for i, v in enumerate(values[0::2]):
                groups.setdefault((v.device, v.dtype), []).append(i)
            tensors: list[torch.Tensor] = []
            where: list[tuple[int, int]] = [(0, 0)] * (len(values) // 2)
            for members in groups.values():
                parts = [x for i in members for x in (values[2 * i], values[2 * i + 1])]
                for position, i in enumerate(members):
                    where[i] = (len(tensors), 2 * position)
                tensors.append(torch.stack(parts))
        return ForwardPending(list(self._names), calls, where, tensors, complete)

    def _reset(self) -> None:
        self._stack, self._calls, self._values = [], [], []
        self._counts, self._seen = {}, {}
        self._complete = True

    # -- hooks -------------------------------------------------------------------------------
    def _pre(self, module: torch.nn.Module, args: Any, kwargs: Any = None) -> None:
        if self.broken or torch.compiler.is_compiling():
            return
        if type(module) is _OptimizedModule:  # the watcher takes every hook out for its call
            self._note_compiled()
            return
        try:
            if not torch.is_grad_enabled() or len(self._calls) >= MAX_CALLS:
                if len(self._calls) >= MAX_CALLS:
                    self._complete = False
                self._stack.append(None)
                return
            index = self._module_index(module)
            if index is None:
                self._stack.append(None)
                return
            count = self._counts.get(index, 0)
            self._counts[index] = count + 1
            with quiet(), torch.no_grad():
                inputs = self._probe_all(_tensors((args, kwargs)))
                own = [*module._parameters.values(), *module._buffers.values()]
                params = self._probe_all(t for t in own if t is not None)
            self._stack.append(_Call(index, count, _caller(), inputs, params))
        except Exception as e:
            self._broke(e)

    def _post(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        if self.broken or torch.compiler.is_compiling() or not self._stack:
            return
        if type(module) is _OptimizedModule:
            return
        try:
            call = self._stack.pop()
            if call is None:
                return
            with quiet(), torch.no_grad():
                call.outputs = self._probe_all(_tensors(output))
            self._calls.append(call)
        except Exception as e:
            self._broke(e)

    # -- probes ------------------------------------------------------------------------------
    def _probe_all(self, tensors: Iterator[torch.Tensor]) -> tuple[_Probe, ...]:
        out = []
        for t in tensors:
            probe = self._probe(t)
            if probe is not None:
                out.append(probe)
        return tuple(out)

    def _probe(self, t: torch.Tensor) -> _Probe | None:
        """Returns the probe of ``t``'s values now (reusing one taken since its last write)."""
        if not (t.is_floating_point() or t.is_complex()) or type(t) not in _PLAIN:
            return None
        if t.layout != torch.strided or t.is_meta or t.numel() == 0:
            return None
        version = None if t.is_inference() else t._version  # inference tensors have none
        seen = self._seen.get(id(t))
        if seen is not None and version is not None and seen[0]() is t and seen[1] == version:
            return seen[2]
        real = torch.view_as_real(t) if t.is_complex() else t
        lo, hi = torch.aminmax(real.detach())
        probe = len(self._values) // 2
        self._values += (lo, hi)
        if version is not None:
            self._seen[id(t)] = (weakref.ref(t), version, probe)
        return probe

    def _module_index(self, module: torch.nn.Module) -> int | None:
        known = self._index.get(id(module))
        if known is not None and known[0]() is module:
            return known[1]
        if self._model is not None:
            return None  # a module that joined the model later: not hooked by name
        if not self._stack:  # global hooks: a root module, named with its submodules
            root = _variable_holding(module)
            for name, sub in module.named_modules():
                if id(sub) not in self._index:
                    self._name(sub, f"{root}.{name}" if root and name else root or name)
            known = self._index.get(id(module))
            return known[1] if known is not None else None
        return self._name(module, type(module).__name__)

    def _name(self, module: torch.nn.Module, name: str) -> int:
        self._index[id(module)] = (weakref.ref(module), len(self._names))
        self._names.append((name.replace(_COMPILED, ""), type(module).__name__))
        return len(self._names) - 1

    def _note_compiled(self) -> None:
        note = "nan_origin does not see inside torch.compile'd modules (their calls are not probed)"
        if note not in self.notes:
            self.notes.append(note)

    def _broke(self, error: BaseException) -> None:
        self.broken = True
        self._reset()
        reason = (str(error).strip().splitlines() or [""])[0][:160]
        self.notes.append(f"gradlens stopped nan_origin: {type(error).__name__}: {reason}")


_PLAIN = (torch.Tensor, torch.nn.Parameter)


def _tensors(obj: Any, depth: int = 0) -> Iterator[torch.Tensor]:
    """Yields the tensors in ``obj``: a tensor, or tuples, lists and dicts of them (a model
    output such as Hugging Face's ModelOutput is a dict). Other objects are not looked into."""
    if isinstance(obj, torch.Tensor):
        yield obj
    elif depth < 4 and isinstance(obj, (tuple, list)):
        for x in obj:
            yield from _tensors(x, depth + 1)
    elif depth < 4 and isinstance(obj, dict):
        for x in obj.values():
            yield from _tensors(x, depth + 1)


def _variable_holding(module: torch.nn.Module) -> str:
    """Returns the name of the user's variable holding ``module`` ("" if none is found), as
    the watcher names parameters (``model.blocks.0.fc``)."""
    for frame in user_frames(sys._getframe(1)):
        for name, value in frame_locals(frame).items():
            if value is module and not name.startswith("_"):
                return name
        for name, value in list(frame.f_globals.items()):
            if value is module and not name.startswith("_"):
                return name
    return ""


_internal: dict[Any, bool] = {}


def _caller() -> tuple[str, int] | None:
    """Returns the file and line of the user's code that called the module being entered."""
    frame = sys._getframe(2)
    while frame is not None:
        code = frame.f_code
        inside = _internal.get(code)
        if inside is None:
            inside = _internal[code] = is_internal(code.co_filename)
        if not inside:
            return code.co_filename, frame.f_lineno
        frame = frame.f_back  # type: ignore[assignment]
    return None
