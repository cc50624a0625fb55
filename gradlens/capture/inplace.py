"""Saved tensors and the writes that break them, seen as they happen.

``SavedTensors`` keeps, for every autograd node created while it watches, the tensors the node
saved for backward: an alias that shares their memory and version counter, the version at save
time, the op and line that saved them. After every op that bumped a tensor's version it looks
for saved tensors in the same memory:

* the saved tensor's version moved: PyTorch's own check will fail at backward, so this write is
  the culprit (``inplace-saved``), reported at the writing line;
* the memory overlaps but the version did not move (the write went through ``.data`` or another
  alias with its own counter): backward will silently use the new values (``silent-write``).

No saved-tensor hooks are installed, so PyTorch's version check stays exactly as it is (an
identity pack/unpack pair would disable it), and saved values are read without unpacking them
(``saved.saved_slots``): no unpack hook runs early, no checkpointed forward re-runs. Values
owned by a saved-tensor hook, and tensors with no plain memory or version counter (nested,
sparse, inference, meta, subclasses), are skipped and counted in ``skipped``. Nodes whose saved
values Python cannot see (``torch._foreach_*``) get "maybe" records of their op's inputs and
outputs: a write to one is reported only if PyTorch's backward then refuses it.

Nodes cannot be weakly referenced, so each one gets a small sentinel in its ``metadata`` dict:
when the node dies, the sentinel drops its records (which hold the saved tensors the node
itself holds, and no reference to the node).
"""

from __future__ import annotations

import hashlib
import re
import weakref
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from types import FrameType
from typing import Any

import torch
from torch.autograd.function import BackwardCFunction

from ..records import InplaceViolation
from .builder import node_name
from .quiet import quiet
from .reach import executed_nodes
from .saved import (
    SKIP_HOOKED,
    has_saved_introspection,
    is_plain,
    raw_saved,
    unsupported,
    unused_by_backward,
)
from .source import frame_locals, user_frame
from .summary import grad_fn_of

__all__ = ["SavedTensors", "remove_marks", "storage_ptr"]

_LEAF_ERROR = "a leaf Variable that requires grad is being used in an in-place operation"
_MODIFIED = re.compile(r"is at version (\d+); expected version (\d+) instead")


@dataclass(slots=True)
class _Saved:
    alias: torch.Tensor  # what the node stored: same memory and version counter
    version: int
    storage: int
    start: int
    end: int
    node: str  # "SigmoidBackward0"
    op: str | None
    slot: str  # "result", "self", ...
    source: str | None
    checksum: str | None = None
    reported: bool = False
    node_id: str | None = None  # the trace graph's id of the saving node
    maybe: bool = False  # an input/output of a node whose saves Python cannot see


@dataclass(frozen=True, slots=True)
class _Write:
    """A write gradlens saw: the memory, the version it moved from and to, the op and line."""

    storage: int
    start: int
    end: int
    before: int | None
    after: int
    op: str
    source: str | None


class _Sentinel:
    """Lives in a node's metadata; when the node is freed, so is this, and its records go.

    ``__del__`` rather than ``weakref.finalize``: one small object per node, which keeps the
    garbage collector's work (and a trace of a long graph) linear.
    """

    __slots__ = ("ids", "owner")

    def __init__(self, owner: SavedTensors, ids: list[int]) -> None:
        self.ids = tuple(ids)
        self.owner = weakref.ref(owner)

    def __del__(self) -> None:
        owner = self.owner()
        if owner is not None and self.ids:
            owner.drop(self.ids)


#: The mark of a node seen that saved nothing gradlens keeps (no records to drop when it dies).
_NOTHING = object()


def _span(t: torch.Tensor) -> tuple[int, int, int] | None:
    """Returns ``(storage pointer, first byte, end byte)`` of the memory ``t`` can touch, or
    None for a tensor with no plain memory (see ``saved.unsupported``)."""
    if unsupported(t) is not None:
        return None
    return _plain_span(t)


def _plain_span(t: torch.Tensor) -> tuple[int, int, int] | None:
    """``_span`` of a tensor known to be a plain strided one."""
    try:
        ptr = t.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError, TypeError):
        return None
    size = t.element_size()
    start = int(t.storage_offset()) * size
    n = t.numel()
    if n == 0:
        return ptr, start, start
    if t.is_contiguous():
        return ptr, start, start + n * size
    extent = 1 + sum((int(n) - 1) * abs(int(s)) for n, s in zip(t.shape, t.stride(), strict=True))
    return ptr, start, start + extent * size


def storage_ptr(t: torch.Tensor) -> int | None:
    """Returns the address of ``t``'s storage, or None where it has none to give."""
    try:
        return int(t.untyped_storage().data_ptr())
    except (RuntimeError, NotImplementedError, TypeError, AttributeError):
        return None


def _storage(t: torch.Tensor) -> int | None:
    """Returns the address of ``t``'s storage (None if it has no plain one)."""
    return None if unsupported(t) is not None else storage_ptr(t)


def _alias(t: torch.Tensor) -> torch.Tensor:
    """Returns ``t`` detached (same memory and version counter, no grad_fn), made without any
    user torch-function or dispatch mode seeing the ``detach``."""
    with quiet():
        return t.detach()


def _checksum(t: torch.Tensor) -> str:
    """Returns a digest of ``t``'s values (conjugate and negative views resolved first; any
    strides, broadcast ones included)."""
    with quiet():
        data = t.detach().resolve_conj().resolve_neg()
        if data.is_complex():
            data = torch.view_as_real(data)
        flat = torch.empty(data.numel(), dtype=data.dtype)
        flat.copy_(data.reshape(-1))
        raw = flat.view(torch.uint8)
        return hashlib.blake2b(raw.numpy().tobytes(), digest_size=16).hexdigest()


class SavedTensors:
    """Records what new autograd nodes saved, and checks every write against the records."""

    def __init__(self, *, verify: bool = False) -> None:
        self.verify = verify
        #: Violations confirmed: a backward reached the node whose saved tensor was written.
        self.violations: list[InplaceViolation] = []
        #: Writes to saved tensors no backward has reached yet (record id -> violation).
        self.pending: dict[int, InplaceViolation] = {}
        self._outputs: list[weakref.ref[torch.Tensor]] = []  # to find our marks again
        #: Optional ``node -> graph node id`` (a trace's builder), stamped on each record.
        self.node_id: Callable[[Any], str | None] | None = None
        self._key = f"gradlens.saved.{id(self)}"
        self._records: dict[int, _Saved] = {}
        self._by_storage: dict[int, set[int]] = {}
        self._next = 0
        #: Saved values gradlens could not check, by reason ("nested tensor": 3).
        self.skipped: Counter[str] = Counter()
        # The last writes seen, to name the culprit when a node found late (a custom Function's,
        # whose apply() no torch-function mode sees) already holds an overwritten tensor.
        self._writes: deque[_Write] = deque(maxlen=4096)

    # -- saves -----------------------------------------------------------------------------
    def record_saves(
        self,
        outputs: Iterable[torch.Tensor],
        op: str,
        source: str | None,
        inputs: Iterable[torch.Tensor] = (),
    ) -> None:
        """Records the saved tensors of every node new since the last call, from ``outputs``'
        grad_fns back to nodes already seen (so ops made of several nodes are covered).
        ``inputs`` are the op's input tensors, kept as "maybe saved" for a node whose saves
        Python cannot see."""
        fns = [(t, fn) for t in outputs if (fn := grad_fn_of(t)) is not None]
        outputs = [t for t, _ in fns]
        queue: deque[Any] = deque(fn for _, fn in fns)
        if not queue or self._key in queue[0].metadata:
            return
        self._outputs.extend(weakref.ref(t) for t in outputs)
        # Only memory that Python code can reach (the op's inputs and outputs, and their views)
        # can be written by the user: what a composite op saved of its own intermediates cannot.
        visible = {_storage(t) for t in (*inputs, *outputs)}
        first = True
        while queue:
            fn = queue.popleft()
            if fn is None or self._key in fn.metadata:
                continue
            if has_saved_introspection(fn):
                ids = self._read(fn, op if first else None, source, visible)
            else:
                ids = self._maybe(fn, [*inputs, *outputs], op, source)
            fn.metadata[self._key] = _Sentinel(self, ids) if ids else _NOTHING
            first = False
            queue.extend(child for child, _ in fn.next_functions if child is not None)

    def _read(self, fn: Any, op: str | None, source: str | None, visible: set[Any]) -> list[int]:
        ids: list[int] = []
        name = None
        # A custom autograd.Function saves what its Python code chose (inputs, outputs, or
        # tensors it made and returned): all of it may be in the user's hands.
        custom = isinstance(fn, BackwardCFunction)
        if custom and op is None:
            source = None  # found behind a later op: its own line is not known
        hooked = False
        for role, item in raw_saved(fn):
            if item.unpack_hook is not None:
                self.skipped[SKIP_HOOKED] += 1
                hooked = True
                continue
            if unused_by_backward(fn, role):
                continue
            t = item.data
            if not isinstance(t, torch.Tensor):
                continue  # an optional input that was None, or freed
            if not is_plain(t):
                self.skipped[f"tensor subclass {type(t).__name__}"] += 1
                continue
            # Cheapest test first: most saved values of a composite op are its own
            # intermediates, in memory no Python code holds.
            ptr = storage_ptr(t)
            if ptr is not None and ptr not in visible and not custom:
                continue
            why = unsupported(t)
            if why is not None:
                self.skipped[why] += 1
                continue
            span = _plain_span(t)
            if span is None:
                continue
            name = name or node_name(fn)
            record = _Saved(
                t, t._version, *span, name, op, role, source,
                _checksum(t) if self.verify else None,
            )  # fmt: skip
            record.node_id = self.node_id(fn) if self.node_id is not None else None
            ids.append(self._add(record))
        if custom and ids and not hooked:
            self._stale_on_arrival(fn, ids)
        return ids

    def _stale_on_arrival(self, fn: Any, ids: list[int]) -> None:
        """A custom Function's node is first seen after its ``apply`` (no mode sees that call):
        if PyTorch's own check says a saved tensor was overwritten since, find the write."""
        try:
            fn.saved_tensors  # noqa: B018 - unpacking runs PyTorch's version check (no hooks)
        except RuntimeError as e:
            match = _MODIFIED.search(str(e))
            if match is None:
                return
            now, then = int(match.group(1)), int(match.group(2))
            for rid in ids:
                record = self._records[rid]
                if record.version == now:
                    record.version = then
                    self._late_violation(rid, record)

    def _late_violation(self, rid: int, record: _Saved) -> None:
        """Keeps as pending the violation of a record found stale, naming the logged write."""
        write = next(
            (
                w
                for w in reversed(self._writes)
                if w.storage == record.storage
                and w.before == record.version
                and w.start < record.end
                and record.start < w.end
            ),
            None,
        )
        frame, _ = user_frame()
        op, source = (write.op, write.source) if write else ("(a write gradlens did not see)", None)
        record.reported = True
        self.pending[rid] = self._violation(
            "inplace-saved", record, record.alias, op, source, frame
        )

    def _maybe(
        self, fn: Any, tensors: list[torch.Tensor], op: str, source: str | None
    ) -> list[int]:
        """Records ``tensors`` as what ``fn`` may have saved (PyTorch decides at backward)."""
        ids: list[int] = []
        seen: set[int] = set()
        for t in tensors:
            span = _span(t)
            if span is None or id(t) in seen:
                continue
            seen.add(id(t))
            record = _Saved(_alias(t), t._version, *span,
                            node_name(fn), op, "input or output", source, maybe=True)  # fmt: skip
            record.node_id = self.node_id(fn) if self.node_id is not None else None
            ids.append(self._add(record))
        return ids

    def saved_shape(self, fn: Any, slot: str) -> tuple[int, ...] | None:
        """Returns the shape of what ``fn`` saved as ``slot``, from the record made at save time."""
        sentinel = fn.metadata.get(self._key)
        for rid in sentinel.ids if isinstance(sentinel, _Sentinel) else ():
            record = self._records.get(rid)
            if record is not None and record.slot == slot:
                return tuple(record.alias.shape)
        return None

    def _add(self, record: _Saved) -> int:
        rid = self._next
        self._next += 1
        self._records[rid] = record
        self._by_storage.setdefault(record.storage, set()).add(rid)
        return rid

    def drop(self, ids: Iterable[int]) -> None:
        """Forgets records (their node was freed, or backward released what it saved)."""
        for rid in ids:
            self.pending.pop(rid, None)
            record = self._records.pop(rid, None)
            if record is not None:
                same = self._by_storage.get(record.storage)
                if same is not None:
                    same.discard(rid)
                    if not same:
                        del self._by_storage[record.storage]

    def close(self) -> None:
        """Lets go of every alias and takes the sentinels off the nodes still alive."""
        remove_marks(self._outputs, self._key)
        self._outputs.clear()
        self.pending.clear()
        self._records.clear()
        self._by_storage.clear()

    # -- .data = ... -----------------------------------------------------------------------
    def same_tensor(self, t: torch.Tensor) -> list[int]:
        """Returns the records that alias ``t`` itself (same memory, shape and strides), not
        a view of it: a ``t.data = new`` assignment changes what those records will read."""
        span = _span(t)
        if span is None:
            return []
        out = []
        for rid in sorted(self._by_storage.get(span[0], ())):
            r = self._records[rid]
            same = (r.start, r.end) == span[1:] and r.alias.shape == t.shape
            if same and r.alias.stride() == t.stride() and not r.reported:
                out.append(rid)
        return out

    def data_replaced(
        self, ids: list[int], t: torch.Tensor, source: str | None, frame: FrameType | None
    ) -> list[InplaceViolation]:
        """Returns (as pending) the silent writes a ``t.data = ...`` made to records ``ids``."""
        found = []
        for rid in ids:
            record = self._records.get(rid)
            if record is None:
                continue
            record.reported = True
            violation = self._violation("silent-write", record, t, ".data =", source, frame)
            self.pending[rid] = violation
            found.append(violation)
        return found

    # -- writes ----------------------------------------------------------------------------
    def check_write(
        self,
        written: torch.Tensor,
        op: str,
        source: str | None,
        frame: FrameType | None,
        before: int | None = None,
    ) -> list[InplaceViolation]:
        """Returns the violations a write to ``written`` (at version ``before`` until now) just
        made, kept as pending until a backward reaches the node that saved the tensor (a node no
        backward reaches never fails, so flagging it then would be a false alarm)."""
        span = _span(written)
        if span is None:
            return []
        self._writes.append(_Write(*span, before, written._version, op, source))
        found = []
        for rid in sorted(self._by_storage.get(span[0], ())):
            record = self._records[rid]
            if record.reported:
                continue
            if record.alias._version != record.version:
                kind = "inplace-saved"
            elif record.maybe:
                continue  # a silent write needs to know the node really saved it
            elif record.start < span[2] and span[1] < record.end:
                kind = "silent-write"
            else:
                continue
            record.reported = True
            violation = self._violation(kind, record, written, op, source, frame)
            self.pending[rid] = violation
            found.append(violation)
        return found

    def confirm(self, ids: Iterable[int]) -> list[InplaceViolation]:
        """Returns (and keeps) the pending violations of records a backward is about to use
        (not the "maybe" ones: only PyTorch's own error can confirm those)."""
        found = []
        for rid in ids:
            if rid not in self.pending or self._records[rid].maybe:
                continue
            violation = self.pending.pop(rid)
            record = self._records[rid]
            if violation.kind == "inplace-saved" and record.alias._version == record.version:
                # The version was put back (torch.autograd._unsafe_preserve_version_counter):
                # PyTorch will not notice, and backward will read the new values.
                violation = replace(violation, kind="silent-write", version=record.version)
            found.append(violation)
        self.violations.extend(found)
        return found

    def confirm_from_error(
        self, ids: Iterable[int], error: BaseException
    ) -> list[InplaceViolation]:
        """Returns (and keeps) the "maybe" violations among ``ids`` that PyTorch's own
        "modified by an inplace operation" ``error`` is about: same versions (now, at save)."""
        match = _MODIFIED.search(str(error)) if isinstance(error, RuntimeError) else None
        if match is None:
            return []
        now, then = int(match.group(1)), int(match.group(2))
        found = []
        for rid in ids:
            record = self._records.get(rid)
            if rid not in self.pending or record is None or not record.maybe:
                continue
            if (record.alias._version, record.version) == (now, then):
                found.append(self.pending.pop(rid))
        self.violations.extend(found)
        return found

    def leaf_write(
        self, leaf: torch.Tensor, op: str, source: str | None, frame: FrameType | None
    ) -> InplaceViolation:
        """Returns (and keeps) the violation of an in-place op PyTorch refused on a leaf."""
        found = InplaceViolation(
            kind="inplace-leaf",
            tensor=_name_in(frame, leaf),
            write_op=op,
            write_source=source,
            version=leaf._version,
            shape=tuple(leaf.shape),
        )
        self.violations.append(found)
        return found

    @staticmethod
    def is_leaf_error(error: BaseException) -> bool:
        """Returns whether ``error`` is PyTorch refusing an in-place op on a leaf."""
        return isinstance(error, RuntimeError) and _LEAF_ERROR in str(error)

    # -- backward --------------------------------------------------------------------------
    def reachable(
        self,
        roots: Iterable[torch.Tensor],
        inputs: Iterable[Any] = (),
        nodes: Iterable[Any] | None = None,
    ) -> list[int]:
        """Returns the ids of the records of the nodes a backward from ``roots`` (towards
        ``inputs``, for ``autograd.grad`` and ``backward(inputs=...)``) will run. ``nodes``:
        every node reachable from the roots' ``grad_fn``s, each once, in breadth-first order,
        when the caller has walked them already (a trace, to add them to its graph)."""
        roots = list(roots)
        runs = executed_nodes(roots, list(inputs))
        ids: list[int] = []
        marked = False
        key = self._key
        for fn in self._walk(roots) if nodes is None else nodes:
            sentinel = fn.metadata.get(key)
            if sentinel is None and isinstance(fn, BackwardCFunction):
                # A custom Function whose output went straight to backward: read it now.
                found = self._read(fn, None, None, set())
                sentinel = fn.metadata[key] = _Sentinel(self, found) if found else _NOTHING
                marked = True
            if isinstance(sentinel, _Sentinel) and (runs is None or id(fn) in runs):
                ids.extend(sentinel.ids)
        if marked:  # so that close() finds the marks again
            self._outputs.extend(weakref.ref(t) for t in roots)
        return [i for i in ids if i in self._records]

    @staticmethod
    def _walk(roots: list[torch.Tensor]) -> Iterator[Any]:
        """Yields every node reachable from the ``grad_fn``s of ``roots``, each once,
        breadth-first."""
        queue: deque[Any] = deque(fn for t in roots if (fn := grad_fn_of(t)) is not None)
        seen: set[int] = set()
        while queue:
            fn = queue.popleft()
            if fn is None or id(fn) in seen:
                continue
            seen.add(id(fn))
            yield fn
            queue.extend(child for child, _ in fn.next_functions if child is not None)

    def verify_before_backward(
        self, ids: Iterable[int], source: str | None, frame: FrameType | None = None
    ) -> list[InplaceViolation]:
        """Returns (and keeps) ``silent-write``s found by checksum: saved values that changed
        with no version bump and no write gradlens saw (NumPy, another process, ...)."""
        found = []
        for rid in ids:
            record = self._records.get(rid)
            if record is None or record.reported or record.checksum is None:
                continue
            if record.alias._version == record.version and _checksum(record.alias) != (
                record.checksum
            ):
                record.reported = True
                found.append(
                    self._violation(
                        "silent-write", record, record.alias, "(unseen write)", source, frame
                    )
                )
        self.violations.extend(found)
        return found

    def _violation(
        self,
        kind: Any,
        record: _Saved,
        written: torch.Tensor,
        op: str,
        source: str | None,
        frame: FrameType | None,
    ) -> InplaceViolation:
        return InplaceViolation(
            kind=kind,
            tensor=_name_in(frame, written),
            write_op=op,
            write_source=source,
            saved_by=record.node,
            saved_op=record.op,
            saved_as=record.slot,
            saved_source=record.source,
            saved_version=record.version,
            version=record.alias._version,
            shape=tuple(record.alias.shape),
            saved_node=record.node_id,
        )


def remove_marks(outputs: Iterable[weakref.ref[torch.Tensor]], key: str) -> None:
    """Deletes ``key`` from the ``metadata`` of every node behind the tensors still alive among
    ``outputs`` (walking down until a node without the mark)."""
    queue: deque[Any] = deque(
        fn for ref in outputs if (t := ref()) is not None and (fn := grad_fn_of(t))
    )
    while queue:
        fn = queue.popleft()
        if fn is None or key not in fn.metadata:
            continue
        del fn.metadata[key]
        queue.extend(child for child, _ in fn.next_functions if child is not None)


def _name_in(
    frame: FrameType | None, t: torch.Tensor | None, shape: tuple[int, ...] | None = None
) -> str:
    """Returns the name of ``t`` (or of a tensor sharing its memory) in the user's frame; for a
    tensor no longer alive, "a tensor of shape [...]" with the ``shape`` it had."""
    dims = shape if t is None or shape is not None else tuple(t.shape)
    fallback = "a tensor of shape [" + ", ".join(str(d) for d in dims or ()) + "]"
    if frame is None or t is None:
        return fallback
    span = _span(t)
    alias_name = None
    found = frame_locals(frame)
    for name, value in found.items():
        if not isinstance(value, torch.Tensor) or name.startswith("_"):
            continue
        if value is t:
            return name
        other = _span(value)
        if alias_name is None and span is not None and other is not None and other == span:
            alias_name = name
    return alias_name or _param_name(found, t) or fallback


def _param_name(found: dict[str, Any], t: torch.Tensor) -> str | None:
    """Returns "model.fc.weight" when ``t`` shares memory with a parameter of a module that is a
    local of the user's frame (an optimizer step writes parameters no local names)."""
    span = _span(t)
    for local, value in found.items():
        if isinstance(value, torch.nn.Module):
            for pname, p in value.named_parameters():
                if p is t or (span is not None and _span(p) == span):
                    return f"{local}.{pname}"
    return None
