"""Record what happens while user code runs: forward ops, backward calls, gradients.

A ``TorchFunctionMode`` sees every tensor op the user's code calls (not the ops autograd runs
inside ``backward()``), including ``Tensor.backward``, ``torch.autograd.backward`` and
``torch.autograd.grad``. Before each of those, the graph is walked and a pre-hook is put on
every autograd Node it reaches, so the gradient arriving at each node is recorded in the order
the engine runs them; the hooks are removed as soon as the call returns or raises.

Tensors are held by weak reference only; nothing here keeps a tensor alive.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable
from dataclasses import replace
from types import FrameType
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils.hooks import RemovableHandle

from .._errors import GradlensError
from ..records import (
    BackwardEvent,
    EdgeKind,
    ErrorEvent,
    Event,
    GradEvent,
    Graph,
    NodeKind,
    OpEvent,
    TensorRef,
    TraceRecord,
    format_shape,
)
from .amp import scaled_by_grad_scaler
from .builder import GraphBuilder, node_name
from .calls import BACKWARD_CALLS, parse_backward, tensors_in
from .fast import make_record, renamed, replaced
from .guard import COMPILED_NOTE, JIT_NOTE, compiled_graphs
from .inplace import SavedTensors
from .module_paths import CallModules
from .modules import ModuleStack
from .names import TensorNames, named_params
from .source import user_frame
from .summary import Summaries, grad_fn_of, tensor_ref, tensor_status, version_of

__all__ = ["Recorder"]

# A tensor subclass would see every method gradlens calls on it: such tensors are left alone.
_PLAIN = (torch.Tensor, torch.nn.Parameter)
SUBCLASS_NOTE = "a backward of a tensor subclass ran inside the block: it is not recorded"
# Ops whose output is uninitialized memory: NaN/Inf in it is not a computation gone wrong.
_UNINITIALIZED = frozenset(
    {"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided"}
)
# Calls that read or describe a tensor without computing one: not worth an event.
_SKIP = {"__get__", "__set__", "__repr__", "__format__", "__str__", "dim", "size", "numel"}
_INPLACE_DUNDERS = {"__setitem__", "__iadd__", "__isub__", "__imul__", "__itruediv__"}
# Reads that take a tensor's value to the host: recorded although they return no tensor.
HOST_READS = frozenset(
    {"item", "tolist", "numpy", "__float__", "__int__", "__bool__", "__index__", "__complex__"}
)
# Attribute reads (``__get__``) recorded as ops named after the attribute.
_RECORDED_ATTRS = frozenset({"data", "T", "mT", "H", "mH", "real", "imag"})
# Ops whose outputs hold no NaN or infinity when their inputs hold none: a part of the input
# in another shape (no ``as_strided``: it can reach memory outside the input), or a function
# bounded by its input or by 1. Their outputs are not read again for the check, as long as
# each has the first input's dtype (``view(dtype)`` reinterprets bits).
_KEEPS_FINITE = frozenset(
    {
        "relu", "relu_", "sigmoid", "tanh",
        "t", "transpose", "permute", "movedim", "swapaxes", "view", "view_as", "reshape",
        "reshape_as", "flatten", "unflatten", "squeeze", "unsqueeze", "expand", "expand_as",
        "contiguous", "clone", "detach", "__getitem__", "narrow", "select", "split", "chunk",
        "unbind",
    }
)  # fmt: skip
# Reads whose result should not make its input look consumed (a sink stays a graph output).
_PASSIVE = HOST_READS | {"data"}


def _readable(t: torch.Tensor) -> bool:
    try:
        t.grad_fn  # noqa: B018 - the read is the test
    except RuntimeError:
        return False
    return True


def _op_name(func: Any) -> str:
    name = getattr(func, "__name__", None) or repr(func)
    return str(name)


class _Mode(TorchFunctionMode):
    def __init__(self, recorder: Recorder) -> None:
        super().__init__()
        self.recorder: Recorder | None = recorder  # let go when the trace ends (no cycle)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        __tracebackhide__ = True
        recorder = self.recorder
        if recorder is None:  # (only if a finished trace's mode were entered again)
            return func(*args, **(kwargs or {}))
        return recorder._on_call(func, args, kwargs or {})


class Recorder:
    """Records ops, backward passes and gradients while active (a context manager).

    ``modules`` may be ``nn.Module``s (their parameters are named, their forward calls become
    clusters) or dicts of name -> tensor; ``named_tensors`` names tensors by keyword.
    """

    def __init__(self, *modules: Any, **named_tensors: torch.Tensor) -> None:
        named: dict[str, torch.Tensor] = {}
        mods: list[torch.nn.Module] = []
        for i, m in enumerate(modules):
            if isinstance(m, torch.nn.Module):
                mods.append(m)
            else:
                named.update(named_params(m, where=f"argument {i}"))
        for name, t in named_tensors.items():
            if not isinstance(t, torch.Tensor):
                raise GradlensError(
                    f"{name}= is a {type(t).__name__}, not a tensor: keyword arguments "
                    "name tensors, e.g. trace(model, x=inputs)"
                )
            named[name] = t
        self._modules = ModuleStack(mods)
        self._module_infos = self._modules.infos()  # views: the modules as records (ModuleInfo)
        self._call_modules = CallModules()  # views: an op's interior nodes get its module
        self._param_owner: dict[int, str] = {}
        params = self._modules.param_modules()
        for pname, (p, _path) in params.items():
            named.setdefault(pname, p)
        self._names = TensorNames(named)
        for _pname, (p, path) in params.items():
            self._param_owner.setdefault(self._names.key(p), path)  # tied: the first name's
        self._builder = GraphBuilder(self._names)
        self._events: list[tuple[Event, dict[str, Any]]] = []
        self._mode = _Mode(self)
        self._state = "new"
        self._passes = 0
        self._outputs: dict[int, weakref.ref[torch.Tensor]] = {}
        self._consumed: set[int] = set()
        self._roots: dict[int, weakref.ref[torch.Tensor]] = {}
        self._hooks: list[RemovableHandle] = []
        self._pending_leaf: dict[int, int] = {}
        # (tensor key, version) -> has NaN/Inf (an answer still on the device: a Pending)
        self._finite: dict[tuple[int, int], Any] = {}
        self._flags: dict[int, Any] = {}  # id of a TensorRef -> its pending nonfinite answer
        # Values read on the device as they pass, copied to the host once, at the end.
        self._values = Summaries()
        self._saved = SavedTensors()  # in-place writes to saved tensors, seen as they happen
        self._builder.saved_shape = self._saved.saved_shape
        self._saved.node_id = self._builder.known_id
        self._record: TraceRecord | None = None
        #: Called with each in-place violation as it is confirmed (api: an InplaceWarning).
        self.on_confirm: Callable[[Any, FrameType | None], None] | None = None
        self._notes: list[str] = []
        self._off = False  # gradlens's own bookkeeping failed: stop recording, run on
        self._graphs = 0

    # -- context manager -------------------------------------------------------------------
    def __enter__(self) -> Recorder:
        if self._state != "new":
            raise GradlensError("a trace can be entered only once; create a new trace()")
        self._state = "recording"
        self._graphs = compiled_graphs()
        self._modules.install()
        try:
            self._mode.__enter__()
        except BaseException:
            self._modules.remove()
            raise
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            self._mode.__exit__(exc_type, exc, tb)
        finally:
            # The mode and the recorder held each other: a finished trace (its builder, events
            # and names) waited for a full collection to be freed. Now reference counting does.
            self._mode.recorder = None
            self._modules.remove()
            self._modules = ModuleStack([])  # a finished trace must not keep the model alive
            self._remove_hooks()
            self._state = "done"
            if compiled_graphs() > self._graphs:
                self._note(COMPILED_NOTE)
            try:
                self._names.names_from_frame(user_frame()[0])
                self._record = self._build(final=True)
            except Exception as e:  # the user's own exception, if any, must go up unchanged
                self._fail("the end of the trace", e)
                self._record = TraceRecord(graph=Graph(nodes=(), edges=()), notes=(*self._notes,))
            finally:
                self._saved.close()

    @property
    def recording(self) -> bool:
        """Returns True while the trace is recording."""
        return self._state == "recording"

    @property
    def record(self) -> TraceRecord:
        """Returns everything recorded (a snapshot while still recording)."""
        if self._record is not None:
            return self._record
        return self._build(final=False)

    # -- forward ops -------------------------------------------------------------------------
    def _note(self, text: str) -> None:
        if text not in self._notes:
            self._notes.append(text)

    def _fail(self, what: str, error: Exception) -> None:
        self._off = True
        self._note(
            f"gradlens stopped recording at {what} ({type(error).__name__}: {error}); "
            "the program ran on unrecorded"
        )

    def _on_call(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        __tracebackhide__ = True
        if self._off:
            return func(*args, **kwargs)
        if torch.compiler.is_compiling():  # dynamo is tracing this handler: change nothing
            return func(*args, **kwargs)
        if torch._C._get_tracing_state() is not None:  # ours would land in the jit graph
            self._note(JIT_NOTE)
            return func(*args, **kwargs)
        self._values.fresh()  # the user's code ran: a value read before may have changed
        call = BACKWARD_CALLS.get(func)
        if call is not None:
            return self._on_backward(call, func, args, kwargs)
        try:
            before_call = self._before_call(func, args, kwargs)
        except Exception as e:  # gradlens's own failure must never break the user's op
            self._fail(_op_name(func), e)
            return func(*args, **kwargs)
        if before_call is None:
            return func(*args, **kwargs)
        name, frame, source, inputs, refs, module, modes = before_call
        try:
            out = func(*args, **kwargs)
        except Exception as e:
            try:
                self._on_error(e, name, frame, source, inputs, refs, module)
            except Exception as own:
                self._fail(name, own)
            raise
        try:
            self._after_call(out, name, frame, source, inputs, refs, module, modes)
        except Exception as e:
            self._fail(name, e)
        return out

    def _before_call(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Returns what ``_after_call`` needs, or None for a call not worth recording."""
        name = _op_name(func)
        if name == "__get__":
            attr = getattr(getattr(func, "__self__", None), "__name__", None)
            if attr not in _RECORDED_ATTRS:
                return None
            name = str(attr)
        elif name in _SKIP:
            return None
        constant = name in _UNINITIALIZED or any(
            isinstance(a, float) and not math.isfinite(a) for a in (*args, *kwargs.values())
        )
        frame, source = user_frame()
        self._names.names_from_frame(frame)
        found = tensors_in(args, kwargs)
        inputs = [t for t in found if type(t) in _PLAIN]
        modes = (
            torch.is_grad_enabled(),
            torch.is_inference_mode_enabled(),
            "out" in kwargs,
            constant,
            name in _KEEPS_FINITE and len(inputs) == len(found) and "out" not in kwargs,
        )
        refs = [(t, self._ref(t)) for t in inputs]
        return name, frame, source, inputs, refs, self._modules.current, modes

    def _on_error(
        self,
        e: Exception,
        name: str,
        frame: FrameType | None,
        source: str | None,
        inputs: list[torch.Tensor],
        refs: list[tuple[torch.Tensor, TensorRef]],
        module: str | None,
    ) -> None:
        if SavedTensors.is_leaf_error(e):
            leaf = next((t for t in inputs if t.is_leaf and t.requires_grad), None)
            if leaf is not None:
                self._saved.leaf_write(leaf, name, source, frame)
        event = ErrorEvent(
            index=len(self._events),
            op=name,
            error=str(e).strip(),
            inputs=tuple(r for _, r in refs),
            source=source,
            module=module,
        )
        self._events.append((event, {"inputs": [self._names.key(t) for t in inputs]}))

    def _after_call(
        self,
        out: Any,
        name: str,
        frame: FrameType | None,
        source: str | None,
        inputs: list[torch.Tensor],
        refs: list[tuple[torch.Tensor, TensorRef]],
        module: str | None,
        modes: tuple[bool, ...],
    ) -> None:
        grad_enabled, inference, has_out, constant, keeps_finite = modes
        outputs = [t for t in tensors_in((out,), {}) if type(t) in _PLAIN]
        bumped = [t for t, r in refs if version_of(t) != r.version]
        for t, r in refs:
            if version_of(t) != r.version:
                self._saved.check_write(t, name, source, frame, r.version)
        if not outputs:
            if not bumped and (name not in HOST_READS or not inputs):
                return  # a read such as .dim() or .is_contiguous(): nothing to record
            outputs = bumped  # __setitem__ and friends return None; the target changed
        before = [(t, self._names.key(t), r) for t, r in refs]
        inplace = bool(bumped) or name in _INPLACE_DUNDERS or has_out
        # Known finite: every input checked on the host (not pending on a device) and clean.
        finite = keeps_finite and all(
            r.nonfinite is False and id(r) not in self._flags for _, r in refs
        )
        dtype = inputs[0].dtype if finite else None
        after = [
            (t, self._names.key(t), self._ref(t, fresh=True, finite=t.dtype == dtype))
            for t in outputs
        ]
        node = None
        for t, k, _ in after:
            fn = grad_fn_of(t)
            if fn is None:
                continue
            nid = self._builder.node_for(fn)
            self._builder.link_new(fn)
            self._call_modules.claim(self._builder, fn, module, len(self._events))  # views
            draft = self._builder.draft(nid)
            if draft.kind is NodeKind.OP and draft.op is None:
                draft.op, draft.module, draft.source = name, module, source
                for src, _, ref in before:
                    if not src.requires_grad:
                        iid = self._builder.tensor_node(src, NodeKind.INPUT)
                        self._builder.edge(iid, nid, label=format_shape(ref.shape))
            node = node or nid
            self._outputs[k] = weakref.ref(t)
        self._saved.record_saves(outputs, name, source, inputs)  # after the nodes got ids
        if name not in _PASSIVE:
            self._consumed.update(k for _, k, _ in before)
        op_event = make_record(
            OpEvent,
            index=len(self._events),
            op=name,
            inputs=tuple(r for _, _, r in before),
            outputs=tuple(r for _, _, r in after),
            inplace=inplace,
            source=source,
            module=module,
            node=node,
            grad_enabled=grad_enabled,
            inference_mode=inference,
            nonfinite_constant=constant,
        )
        self._events.append(
            (op_event, {"inputs": [k for _, k, _ in before], "outputs": [k for _, k, _ in after]})
        )

    # -- for explain -----------------------------------------------------------------------
    def name_of(self, t: torch.Tensor) -> str | None:
        """Returns the name this trace gives ``t``, or None if it never saw it."""
        k = self._names.known(t)
        return None if k is None else self._names.name(k)

    def name_now(self) -> None:
        """Names the tensors seen so far after the user's variables (while recording)."""
        if self._state == "recording":
            self._names.names_from_frame(user_frame()[0])

    def grad_leaves(self) -> dict[str, torch.Tensor]:
        """Returns every alive leaf tensor seen that requires grad, by name, in first-seen order."""
        return {
            self._names.name(k): t for k, t in self._names.alive() if t.is_leaf and t.requires_grad
        }

    def default_loss(self) -> torch.Tensor | None:
        """Returns the root of the last backward call, else the last graph output, if alive."""
        for ref in reversed(list(self._roots.values())):
            t = ref()
            if t is not None:
                return t
        for k, ref in reversed(list(self._outputs.items())):
            t = ref()
            if k not in self._consumed and t is not None and grad_fn_of(t) is not None:
                return t
        return None

    def _ref(self, t: torch.Tensor, *, fresh: bool = False, finite: bool = False) -> TensorRef:
        """Returns ``tensor_ref(t)`` with ``nonfinite`` checked once per tensor and version:
        an op's input is usually an earlier op's output, already checked. ``finite``: ``t`` is
        known to hold no NaN or infinity (``_KEEPS_FINITE``), so it is not read."""
        key = (self._names.key(t), version_of(t))
        known = None if fresh else self._finite.get(key)
        if known is None:
            known = self._finite[key] = False if finite else self._values.nonfinite(t)
        if isinstance(known, bool):
            return tensor_ref(t, "", nonfinite=known)
        ref = tensor_ref(t, "", nonfinite=False)  # the answer comes with the batched copy
        self._flags[id(ref)] = known
        return ref

    # -- backward --------------------------------------------------------------------------
    def _on_backward(self, call: str, func: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> Any:
        __tracebackhide__ = True
        frame, source = user_frame()
        self._names.names_from_frame(frame)
        parsed = parse_backward(func, args, kw)
        if any(type(t) not in _PLAIN for t in parsed.roots):
            self._note(SUBCLASS_NOTE)  # its own __torch_function__ would see every read
            return func(*args, **kw)
        roots_l, weights_l, wrt = parsed.roots, parsed.weights, parsed.inputs
        create_graph, retain_graph = parsed.create_graph, parsed.retain_graph
        pass_index = self._passes
        self._passes += 1

        root_nodes: dict[int, str] = {}
        fns = [t.grad_fn for t in roots_l if t.grad_fn is not None]
        # One root (the usual loss.backward()): the walk that adds it reaches what backward will.
        found: list[tuple[Any, str]] | None = [] if len(fns) == 1 else None
        for t in roots_l:
            k = self._names.key(t)
            self._roots[k] = weakref.ref(t)
            if t.grad_fn is not None:
                root_nodes[k] = self._builder.add_output(t, found)
        reached = found if found is not None else self._builder.walk(fns)
        slot = len(self._events)
        keys: dict[str, Any] = {"roots": [self._names.key(t) for t in roots_l]}
        keys["wrt"] = [self._names.key(t) for t in wrt if isinstance(t, torch.Tensor)]
        keys["gradient"] = [
            self._values.add(w) if isinstance(w, torch.Tensor) else None for w in weights_l
        ]
        base = BackwardEvent(
            index=slot,
            call=call,
            pass_index=pass_index,
            roots=(),
            retain_graph=retain_graph,
            create_graph=create_graph,
            source=source,
            grad_scaler=len(roots_l) == 1 and scaled_by_grad_scaler(roots_l[0], frame),
        )
        self._events.append((base, keys))
        saved_ids = self._saved.reachable(roots_l, wrt, [fn for fn, _ in reached])
        # This backward will meet the overwritten tensors: say so before PyTorch raises.
        self._confirmed(self._saved.confirm(saved_ids), frame)
        try:
            for fn, nid in reached:
                leaf = getattr(fn, "variable", None)
                if not isinstance(leaf, torch.Tensor):
                    leaf = None
                self._hooks.append(
                    fn.register_prehook(self._grad_hook(nid, node_name(fn), pass_index, leaf))
                )
                if leaf is not None:
                    self._hooks.append(
                        leaf.register_post_accumulate_grad_hook(self._accumulated_hook())
                    )
            try:
                result = func(*args, **kw)
            except Exception as e:
                self._events[slot] = (replace(base, error=str(e).strip()), keys)
                self._confirmed(self._saved.confirm_from_error(saved_ids, e), frame)
                raise
            finally:
                self._remove_hooks()
                # No fresh() here: the gradients read in the hooks are still what they were
                # unless the user's code changes them, and every op it runs calls fresh().
                self._builder.refresh_saved(reached)
            if not retain_graph:
                self._saved.drop(saved_ids)  # freed by this backward: later writes are harmless
            if call == "grad":
                results = [r if isinstance(r, torch.Tensor) else None for r in result]
                keys["results"] = [self._values.add(r) for r in results]
                for r in results:
                    if r is None or r.grad_fn is None:
                        continue
                    rk = self._names.key(r)
                    self._roots[rk] = weakref.ref(r)
                    out = self._builder.add_output(r)
                    for root_out in root_nodes.values():
                        self._builder.edge(out, root_out, EdgeKind.DERIVATIVE)
            return result
        finally:
            self._remove_hooks()

    def _confirmed(self, found: list[Any], frame: FrameType | None) -> None:
        if self.on_confirm is not None:
            for v in found:
                self.on_confirm(v, frame)

    def _grad_hook(
        self, nid: str, node_name: str, pass_index: int, leaf: torch.Tensor | None
    ) -> Any:
        def hook(grad_outputs: tuple[torch.Tensor | None, ...]) -> None:
            if self._off:
                return
            try:
                self._on_grad(nid, node_name, pass_index, grad_outputs, leaf)
            except Exception as e:  # gradlens's own failure must never break the backward
                self._fail(f"the gradient of {node_name}", e)

        return hook

    def _on_grad(
        self,
        nid: str,
        node_name: str,
        pass_index: int,
        grad_outputs: tuple[Any, ...],
        leaf: torch.Tensor | None,
    ) -> None:
        add = self._values.add
        grads = [add(g) if isinstance(g, torch.Tensor) else None for g in grad_outputs]
        draft = self._builder.draft(nid)
        draft.grads.append(next((g for g in grads if g is not None), None))
        event = make_record(
            GradEvent,
            index=len(self._events),
            pass_index=pass_index,
            node=nid,
            node_name=node_name,
            grads=(),
        )
        keys: dict[str, Any] = {"grads": grads}
        if draft.kind is NodeKind.LEAF and draft.tensor_key is not None:
            keys["leaf"] = draft.tensor_key
            self._pending_leaf[draft.tensor_key] = len(self._events)
            if leaf is not None and leaf.grad is None and len(grads) == 1:
                keys["incoming"] = grads[0]  # .grad will be this gradient (or a copy of it)
        self._events.append((event, keys))

    def _accumulated_hook(self) -> Any:
        def hook(leaf: torch.Tensor) -> None:
            if self._off:
                return
            try:
                k = self._names.key(leaf)
                slot = self._pending_leaf.pop(k, None)
                if slot is None:
                    return
                keys = self._events[slot][1]
                others = leaf._post_accumulate_grad_hooks
                if "incoming" in keys and leaf.grad is not None and len(others or ()) == 1:
                    # .grad was None, so AccumulateGrad made it the gradient that arrived, and
                    # no hook but this one ran since: the same numbers, not read twice.
                    keys["accumulated"] = keys["incoming"]
                    self._values.alias(leaf.grad, keys["incoming"])  # read at the end again
                else:
                    keys["accumulated"] = self._values.add(leaf.grad)
            except Exception as e:  # gradlens's own failure must never break the backward
                self._fail("a leaf's accumulated gradient", e)

        return hook

    def _remove_hooks(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks.clear()

    # -- the record ------------------------------------------------------------------------
    def _build(self, *, final: bool) -> TraceRecord:
        sinks = [
            t
            for k, ref in list(self._outputs.items())
            if k not in self._consumed and (t := ref()) is not None and grad_fn_of(t) is not None
        ]
        for t in sinks:
            self._builder.add_output(t)
        # A view of a multi-output op whose base was written refuses to be read: leave it out.
        alive = [(k, t) for k, t in self._names.alive() if type(t) in _PLAIN and _readable(t)]
        self._name_grads(alive)
        for k, t in alive:
            if k in self._param_owner:
                nid = self._builder.tensor_node(t, NodeKind.LEAF)
                self._builder.draft(nid).module = self._param_owner[k]
        values = self._values  # fresh() ran at the user's last op: what it read still holds
        leaf_grads = {k: values.add(t.grad) for k, t in alive if t.is_leaf and t.grad is not None}
        for _, t in alive:  # read now, so that one copy to the host brings everything
            values.add(t.grad if (t.is_leaf or t.retains_grad) else None)
            values.add(t)
        values.resolve()
        graph = self._builder.build(leaf_grads, values.get)
        graph = replace(graph, modules=self._module_infos)  # views: the modules the hooks saw
        if final:
            fns = [grad_fn_of(t) for _, t in alive]
            self._builder.forget_marks([fn for fn in fns if fn is not None])
        tensors = {}
        for k, t in alive:
            name = self._names.name(k)
            tensors[name] = tensor_status(t, name, summaries=values)
        events = tuple(self._finish_event(e, keys) for e, keys in self._events)
        violations = tuple(self._saved.violations)
        notes = [f"not checked for in-place writes: {n} saved value{'s' if n != 1 else ''}: {why}"
                 for why, n in sorted(self._saved.skipped.items())]  # fmt: skip
        return TraceRecord(
            graph=graph,
            tensors=tensors,
            events=events,
            violations=violations,
            notes=(*self._notes, *notes),
        )

    def _name_grads(self, alive: list[tuple[int, torch.Tensor]]) -> None:
        """Names an unnamed tensor that is a leaf's ``.grad`` after the leaf (``w.grad``)."""
        for k, t in alive:
            if not t.is_leaf or t.grad is None or not self._names.has_name(k):
                continue
            gk = self._names.known(t.grad)
            if gk is not None and not self._names.has_name(gk):
                self._names.set_name(gk, f"{self._names.name(k)}.grad")

    def _finish_event(self, event: Event, keys: dict[str, Any]) -> Event:
        name_of, flags = self._names.name, self._flags

        def named(refs: tuple[TensorRef, ...], ks: list[int]) -> tuple[TensorRef, ...]:
            if not flags:  # no answer pending on a device (a CPU trace)
                return tuple([renamed(r, name_of(k)) for r, k in zip(refs, ks, strict=True)])
            return tuple(
                [
                    renamed(r, name_of(k))
                    if id(r) not in flags
                    else replaced(r, name=name_of(k), nonfinite=self._values.flag(flags[id(r)]))
                    for r, k in zip(refs, ks, strict=True)
                ]
            )

        if isinstance(event, OpEvent):
            return replaced(
                event,
                inputs=named(event.inputs, keys["inputs"]),
                outputs=named(event.outputs, keys["outputs"]),
            )
        if isinstance(event, ErrorEvent):
            return replaced(event, inputs=named(event.inputs, keys["inputs"]))
        get = self._values.get
        if isinstance(event, BackwardEvent):
            return replaced(
                event,
                roots=tuple(self._names.name(k) for k in keys["roots"]),
                inputs=tuple(self._names.name(k) for k in keys["wrt"]),
                gradient=tuple(get(g) for g in keys["gradient"]),
                results=tuple(get(r) for r in keys.get("results", ())),
            )
        if isinstance(event, GradEvent):
            return replaced(
                event,
                grads=tuple(get(g) for g in keys["grads"]),
                accumulated=get(keys.get("accumulated")),
                leaf=self._names.name(keys["leaf"]) if "leaf" in keys else event.leaf,
            )
        return event
