"""The in-place guard: a torch-function mode that checks every write against the tensors that
autograd nodes saved for backward (``SavedTensors``), and every backward against the writes.

A violation is *confirmed* when a backward is about to reach the node whose saved tensor was
written (a node no backward reaches never fails, so it is never reported). Then ``on_confirm``
is called (the api layer issues an ``InplaceWarning``), and in ``strict`` mode ``InplaceError``
is raised instead of running that backward. In ``warn`` mode PyTorch runs and raises its own
error, unchanged.

The mode never raises anything of its own from the user's ops: if gradlens's bookkeeping fails
on something it does not understand, it stops checking, keeps a note, and lets the program run.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable
from types import FrameType
from typing import Any, Literal

import torch
from torch.overrides import TorchFunctionMode

from .._errors import GradlensError
from ..records import InplaceViolation
from .calls import BACKWARD_CALLS, BackwardCall, parse_backward, tensors_in
from .inplace import SavedTensors
from .pure import _F_INPLACE as _inplace_at
from .pure import ATTRIBUTE, INPLACE, never_writes, unwritten
from .pure import _cache as _never_writes
from .saved import SKIP_HOOKED
from .source import _cache as _internal
from .source import is_internal, user_frame
from .step_window import StepWindow, Written, versions_of
from .summary import grad_fn_of
from .writes import _OPS_KEPT, WriteLog

__all__ = [
    "COMPILED_NOTE",
    "JIT_NOTE",
    "STEP_RAISED_NOTE",
    "Guard",
    "InplaceError",
    "InplaceWarning",
    "compiled_graphs",
    "versions_of",
]

GuardMode = Literal["warn", "strict"]
_DATA_SETTER = torch._C.TensorBase.data.__set__  # type: ignore[attr-defined]
_READS = {"__get__", "__repr__", "__format__", "__str__", "dim", "size", "numel", "stride"}

#: Said once when user code runs ``torch.compile``d regions under a guard or trace.
COMPILED_NOTE = (
    "torch.compile'd code ran inside the block: its ops are not recorded or checked "
    "(gradlens sees eager ops only)"
)


class InplaceError(GradlensError, RuntimeError):
    """An in-place write to a tensor saved for backward (raised by ``guard(mode="strict")``
    before the backward that would use the overwritten value)."""

    def __init__(self, message: str, violation: InplaceViolation) -> None:
        super().__init__(message)
        self.violation = violation


class InplaceWarning(UserWarning):
    """A write to a tensor saved for backward, confirmed as a backward is about to use it
    (issued by ``guard()`` and ``trace()``; ``.violation`` holds the record)."""

    def __init__(self, message: str, violation: InplaceViolation) -> None:
        super().__init__(message)
        self.violation = violation


def compiled_graphs() -> int:
    """Returns how many graphs ``torch.compile`` has made in this process so far (0 if it was
    never used): compiled code runs without the torch-function mode seeing its ops."""
    utils = sys.modules.get("torch._dynamo.utils")
    return 0 if utils is None else int(utils.counters["stats"]["unique_graphs"])


_next_seq = torch._C._autograd._get_sequence_nr
_PLAIN = (torch.Tensor, torch.nn.Parameter, torch.nn.Buffer)
#: ``torch.jit.is_tracing()`` without its Python frame (``_get_tracing_state`` costs more: it
#: converts the state it returns).
_jit_tracing = torch._C._is_tracing
_is_compiling = torch.compiler.is_compiling
_saved_hooks = torch._C._autograd._top_saved_tensors_default_hooks
_TENSOR_BACKWARD = torch.Tensor.backward
_getframe = sys._getframe

#: Said when an optimizer step raised inside the block and the program went on.
STEP_RAISED_NOTE = (
    "an optimizer step raised inside the block and the program went on: the ops from it to "
    "the next step's end were not checked"
)

#: Said once when ``torch.jit.trace`` runs inside a guard or trace.
JIT_NOTE = "torch.jit.trace ran inside the block: the ops it traced are not recorded or checked"


def _user_frame(frame: FrameType | None) -> FrameType | None:
    """Returns the innermost user frame from ``frame`` outwards (as ``source.user_site``; the
    verdict is kept per file name, whose hash a str caches: this runs for every op)."""
    while frame is not None:
        filename = frame.f_code.co_filename
        internal = _internal.get(filename)
        if internal is None:
            internal = is_internal(filename)
        if not internal:
            return frame
        frame = frame.f_back
    return None


def _user(frame: FrameType | None) -> tuple[str | None, int]:
    """Returns ``(file, line)`` of the innermost user frame from ``frame`` outwards."""
    frame = _user_frame(frame)
    return (None, 0) if frame is None else (frame.f_code.co_filename, frame.f_lineno)


#: What ``parse_backward`` gives for ``loss.backward()`` with every keyword at its default,
#: less the roots.
_PLAIN_BACKWARD = BackwardCall("backward", [], [], [], False, False)


def _defaults(kwargs: dict[str, Any]) -> bool:
    """Returns whether every keyword of a ``Tensor.backward`` call is None or False."""
    for value in kwargs.values():  # noqa: SIM110 - a loop: no generator per backward
        if value is not None and value is not False:
            return False
    return True


def _inplace_off(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any] | None) -> bool:
    """Returns whether a call of a ``torch.nn.functional`` activation or dropout passes no
    true ``inplace`` (``pure.inplace_at`` gives its position): absent, None or False."""
    at = _inplace_at.get(func)
    if at is not None and len(args) > at and args[at] is not False:
        return False
    if kwargs:
        value = kwargs.get("inplace")
        return value is None or value is False
    return True


class _Mode(TorchFunctionMode):
    def __init__(self, guard: Guard) -> None:
        super().__init__()
        self._guard = guard
        #: The log's ``made_log`` while the fast path is on; None without a log (``verify``)
        #: and once gradlens's own bookkeeping failed (``Guard._fail``: every op then takes
        #: ``_on_call``, which checks nothing).
        self._made = None if guard.log is None else guard.log.made_log

    def __torch_function__(self, func, types, args=(), kwargs=None):
        __tracebackhide__ = True
        if _is_compiling():  # dynamo is tracing this handler: change nothing, look nothing up
            return func(*args, **(kwargs or {}))
        made = self._made
        if made is not None:
            # The fast path: an op that cannot write its arguments (``pure.never_writes``) only
            # has the nodes it made noted, by sequence number, with the code object and the
            # instruction of the user's frame that called it (``f_lineno`` would decode the
            # code's line table on every op: ``source.line_at`` gives the line when needed).
            # Every name here is a local or a global: this runs for every op.
            try:
                writes = _never_writes[func]
            except (KeyError, TypeError):
                writes = never_writes(func)
            if writes is None:
                return self._guard._on_call(func, args, kwargs or {})
            if writes is ATTRIBUTE:  # t.grad, t.grad = None: nothing to note
                return func(*args, **kwargs) if kwargs else func(*args)
            if writes is INPLACE:
                if not _inplace_off(func, args, kwargs):
                    return self._guard._on_call(func, args, kwargs or {})
            elif kwargs and not (writes.isdisjoint(kwargs) or unwritten(writes, kwargs)):
                return self._guard._on_call(func, args, kwargs)  # out= given
            if _jit_tracing():
                return self._guard._on_call(func, args, kwargs or {})
            start = _next_seq()
            out = func(*args, **kwargs) if kwargs else func(*args)
            end = _next_seq()
            if end != start:
                try:
                    if _saved_hooks(False) is not None:
                        self._guard.log.skipped[SKIP_HOOKED] += 1  # type: ignore[union-attr]
                    frame: FrameType | None = _getframe(1)
                    while frame is not None:  # _user_frame, inlined
                        code = frame.f_code
                        internal = _internal.get(code.co_filename)
                        if internal is None:
                            internal = is_internal(code.co_filename)
                        if not internal:
                            made.append((start, end, func.__name__, code, frame.f_lasti))
                            break
                        frame = frame.f_back
                    else:
                        made.append((start, end, func.__name__, None, 0))
                    if len(made) > _OPS_KEPT:
                        self._guard.log.trim()  # type: ignore[union-attr]
                except Exception as e:
                    self._guard._fail(func.__name__, e)
            return out
        return self._guard._on_call(func, args, kwargs or {})


class Guard:
    """Watches writes to saved tensors while active (a context manager); see the module doc."""

    def __init__(self, *, mode: GuardMode = "warn", verify: bool = False) -> None:
        self.mode = mode
        #: verify=True needs each saved value at save time (a checksum): read every new node
        #: as it is made. Otherwise only writes are logged, and judged at backward.
        self.saved = SavedTensors(verify=verify)
        self.log: WriteLog | None = None if verify else WriteLog()
        self._mode: _Mode | None = None
        self._window: StepWindow | None = None
        self.explain: Any = None  # violation -> message, set by the api layer
        #: Called with each violation as it is confirmed, and the user's frame (api: a warning).
        self.on_confirm: Callable[[InplaceViolation, FrameType | None], None] | None = None
        #: What gradlens could not do (compiled regions, its own failures), said once each.
        self.notes: list[str] = []
        self._off = False  # set when gradlens's own bookkeeping failed: stop checking
        self._graphs = 0
        self._found: list[InplaceViolation] = []

    def __enter__(self) -> Guard:
        self._graphs = compiled_graphs()
        self._mode = _Mode(self)
        self._mode.__enter__()
        if self.log is not None:  # optimizer steps: judged by version counters, mode off
            self._window = StepWindow(self._mode, self._stepped)
            self._window.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        mode, self._mode = self._mode, None
        window, self._window = self._window, None
        try:
            off = window.stop() if window is not None else False
            if mode is not None and not off:
                mode.__exit__(*exc)
            if window is not None and (window.raised or (off and exc[0] is None)):
                self.note(STEP_RAISED_NOTE)
        finally:
            self.saved.close()
            if self.log is not None:
                self.log.close()
            if compiled_graphs() > self._graphs:
                self.note(COMPILED_NOTE)

    @property
    def violations(self) -> list[InplaceViolation]:
        """Returns the confirmed violations, in the order they were confirmed."""
        return list(self._found)

    @property
    def skipped(self) -> dict[str, int]:
        """Returns the saved values that could not be checked, counted by reason."""
        counts = self.saved.skipped + (self.log.skipped if self.log is not None else Counter())
        return dict(counts)

    def note(self, text: str) -> None:
        """Keeps ``text`` (once) among the notes."""
        if text not in self.notes:
            self.notes.append(text)

    def _on_call(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        __tracebackhide__ = True
        if self._off:
            return func(*args, **kwargs)
        if _is_compiling():  # dynamo is tracing this handler: change nothing
            return func(*args, **kwargs)
        if _jit_tracing():  # our own ops would land in the TorchScript graph
            self.note(JIT_NOTE)
            return func(*args, **kwargs)
        if func in BACKWARD_CALLS:
            return self._on_backward(func, args, kwargs)
        if func == _DATA_SETTER:  # `t.data = new` (not `t.grad = None`, also a __set__)
            return self._on_set(func, args, kwargs)
        name = getattr(func, "__name__", None) or repr(func)
        if name in _READS:
            return func(*args, **kwargs)
        try:
            if self.log is not None and self.log._steps:
                self.log.flush()  # before this op can move a written tensor to other memory
            # A tensor subclass would see every method gradlens calls on it: leave it alone.
            tensors = [t for t in tensors_in(args, kwargs) if type(t) in _PLAIN]
            versions = versions_of(tensors)
            seq = _next_seq()  # nodes made before this op have smaller numbers
        except Exception as e:
            self._fail(name, e)
            return func(*args, **kwargs)
        try:
            out = func(*args, **kwargs)
        except RuntimeError as e:
            if SavedTensors.is_leaf_error(e):
                self._safely(name, self._leaf_write, tensors, name)
            raise
        fused = None
        if name.startswith("_fused_") and args and isinstance(args[0], (list, tuple)):
            fused = args[0]
        try:
            self._after(name, out, tensors, versions, seq, fused)
        except Exception as e:
            self._fail(name, e)
        return out

    def _after(
        self,
        name: str,
        out: Any,
        tensors: list[torch.Tensor],
        versions: list[int | None],
        seq: int,
        fused: Any = None,
    ) -> None:
        bumped = [
            (t, v)
            for t, v in zip(tensors, versions, strict=True)
            if v is not None and t._version != v
        ]
        if not bumped and fused:
            # A fused optimizer kernel (SGD/Adam(W)/Adagrad fused=True) writes its parameters
            # without moving their version on CPU: each tensor of its first argument is written.
            bumped = [(t, t._version) for t in fused if isinstance(t, torch.Tensor)]
        log = self.log
        if log is not None:
            end = _next_seq()
            if bumped or end != seq:
                frame = _user_frame(sys._getframe(1))
                if bumped:
                    site = None if frame is None else (frame.f_code.co_filename, frame.f_lineno)
                    for t, v in bumped:
                        log.log_write(t, name, site, v, seq)
                if end != seq:
                    log.made(seq, end, name, frame)
            return
        frame, source = user_frame() if bumped else (None, None)
        for t, v in bumped:
            self.saved.check_write(t, name, source, frame, v)
        if type(out) in _PLAIN:
            outputs = [out] if grad_fn_of(out) is not None else []
        elif isinstance(out, (list, tuple)):
            outputs = [t for t in out if type(t) in _PLAIN and grad_fn_of(t) is not None]
        else:
            return
        if outputs:
            if not bumped:
                _, source = user_frame()
            self.saved.record_saves(outputs, name, source, tensors)

    def _stepped(self, step: Written) -> None:
        """Logs what an optimizer step wrote (``StepWindow``: the mode was off during it)."""
        if self._off or self.log is None:
            return
        try:
            file, line = _user(step.frame)
            site = None if file is None else (file, line)
            self.log.log_step(step.tensors, step.op, site, step.seq)
        except Exception as e:
            self._fail(step.op, e)

    def _leaf_write(self, tensors: list[torch.Tensor], name: str) -> None:
        frame, source = user_frame()
        leaf = next((t for t in tensors if t.is_leaf and t.requires_grad), tensors[0])
        self._found.append(self.saved.leaf_write(leaf, name, source, frame))

    def _on_set(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """``t.data = new``: what saved ``t`` itself will read the new values."""
        __tracebackhide__ = True
        if self.log is not None:
            self._safely("data =", self.log.flush)
            seq = _next_seq()
            out = func(*args, **kwargs)
            file, line = _user(sys._getframe(1))
            site = None if file is None else (file, line)
            self._safely("data =", self.log.log_data_set, args[0], site, seq)
            return out
        ids = self._safely("data =", self.saved.same_tensor, args[0]) or []
        out = func(*args, **kwargs)
        if ids:
            frame, source = user_frame()
            self._safely("data =", self.saved.data_replaced, ids, args[0], source, frame)
        return out

    def _on_backward(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        __tracebackhide__ = True
        log = self.log
        if log is not None:  # the log names lines from the frame alone: no text made here
            frame, source = _user_frame(_getframe(1)), None
        else:
            frame, source = user_frame()
        found: list[InplaceViolation] = []
        ids: list[int] = []
        retain = True
        try:
            if func is _TENSOR_BACKWARD and len(args) == 1 and _defaults(kwargs):
                parsed = _PLAIN_BACKWARD  # loss.backward(): every keyword at its default
                roots: list[torch.Tensor] = [args[0]]
            else:
                parsed = parse_backward(func, args, kwargs)
                roots = parsed.roots
            retain = parsed.retain_graph
            if log is not None:
                found = log.check_backward(roots, frame, parsed.inputs)
            else:
                ids = self.saved.reachable(roots, parsed.inputs)
                found = self.saved.verify_before_backward(ids, source, frame)
                found += self.saved.confirm(ids)
        except Exception as e:
            self._fail("backward", e)
        self._confirmed(found, frame)
        if found and self.mode == "strict":
            raise InplaceError(self._message(found[0]), found[0])
        try:
            out = func(*args, **kwargs)
        except RuntimeError as e:
            if self.log is not None:
                late = [] if found else self._safely("backward", self.log.confirm_from_error, e)
            else:
                late = self._safely("backward", self.saved.confirm_from_error, ids, e)
            late = late or []
            self._confirmed(late, frame)
            if late and self.mode == "strict":
                raise InplaceError(self._message(late[0]), late[0]) from e
            raise  # PyTorch's own error, unchanged
        if not retain:
            self.saved.drop(ids)
        return out

    def _confirmed(self, found: list[InplaceViolation], frame: FrameType | None) -> None:
        self._found.extend(found)
        if self.on_confirm is not None:
            for v in found:
                self.on_confirm(v, frame)

    def _safely(self, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        """Runs gradlens's own ``fn``; on failure stops checking, keeps a note, returns None."""
        try:
            return fn(*args)
        except Exception as e:
            self._fail(what, e)
            return None

    def _fail(self, what: str, error: Exception) -> None:
        self._off = True
        if self._mode is not None:
            self._mode._made = None  # the fast path too: every op takes _on_call, unchecked
        self.note(
            f"gradlens stopped checking at {what} ({type(error).__name__}: {error}); "
            "the program ran on unchecked"
        )

    def _message(self, v: InplaceViolation) -> str:
        return self.explain(v) if self.explain is not None else f"{v.kind}: {v.tensor}"
