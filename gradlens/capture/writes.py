"""The guard's fast path: log the writes, judge them only when a backward is about to run.

``SavedTensors`` (``inplace.py``) reads what every new node saved, right after each op: needed
for ``verify=True`` (a checksum must be taken at save time) and by a trace (which draws saved
tensors), but it costs a walk over every new node, several per op for composite ops such as
``lstm_cell``. ``WriteLog`` does the same job with work only where a write happened:

* after each op that made autograd nodes, the range of sequence numbers they got is kept with
  the op and line (no node is touched: a node's ``_sequence_nr()`` finds its op when needed);
* each write (a bumped version, a ``.data`` assignment) is logged: memory, versions, op, line,
  and that sequence number, which tells which nodes existed before the write;
* before each backward, the nodes it will reach that are older than some write are read
  (``_raw_saved_*``, without unpacking), and only a saved tensor in written memory is judged:
  PyTorch's own version check (an unpack with no hook attached, which runs nothing else) says
  whether it is stale (``inplace-saved``, the logged write whose version it expected names the
  line); a logged write after the save that left the version alone is a ``silent-write``.

Nothing is read at op time, and a loop whose writes all come before its forward (an optimizer
step) costs one walk per backward with a comparison per node. An optimizer step's writes
(``log_step``: the guard sees a step's writes by version counters, ``step_window.py``) are kept
raw (a weak reference and two versions per tensor) and logged in full only when something
needs them: a backward reaching a node older than them, PyTorch's error, or any other write or
``.data`` assignment (``flush``, called before that op runs, so each write is logged with the
memory it hit). A loop that never looks at them pays a weak reference per parameter per step.
"""

from __future__ import annotations

import re
import weakref
from bisect import bisect_right
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass
from operator import itemgetter
from types import CodeType, FrameType
from typing import Any

import torch
from torch.autograd.function import BackwardCFunction

from ..records import InplaceViolation
from .builder import node_name
from .inplace import _name_in, _plain_span, _span, remove_marks, storage_ptr
from .reach import executed_nodes
from .saved import SKIP_HOOKED, is_plain, raw_saved, unsupported, unused_by_backward
from .source import format_location, line_at, user_frame
from .summary import grad_fn_of, shape_of

__all__ = ["WriteLog"]

_MODIFIED = re.compile(r"is at version (\d+); expected version (\d+) instead")
_SHAPE = re.compile(r"\[torch\.[\w.]+ \[([\d, ]*)\]\]")
_PER_STORAGE = 64  # writes kept per memory block (the newest)
_KEPT = 65536  # writes kept in all: older ones are forgotten (a finding lost, never a false one)
_OPS_KEPT = 1 << 18  # op ranges kept: an older node's finding names no saving line
_START = itemgetter(0)
_ACCUMULATE = torch._C._functions.AccumulateGrad  # type: ignore[attr-defined]


@dataclass(slots=True)  # not frozen: a frozen __init__ costs several times more, per write
class _Write:
    n: int  # position in the log
    seq: int  # the autograd sequence number the writing op started at: older nodes have less
    storage: int
    start: int
    end: int
    before: int | None  # the version it moved from (None: a .data assignment)
    after: int | None
    op: str
    site: tuple[str, int] | None  # file and line, formatted only if a finding needs them
    written: weakref.ref[torch.Tensor] | None
    shape: tuple[int, ...] = ()

    @property
    def source(self) -> str | None:
        return None if self.site is None else format_location(*self.site)


@dataclass(slots=True)
class _StepWrites:
    """An optimizer step's writes, not logged yet: (tensor, version before, after) each."""

    seq: int
    op: str
    site: tuple[str, int] | None
    written: list[tuple[weakref.ref[torch.Tensor], int, int]]


@dataclass(slots=True)
class _Mark:
    """Lives in the ``metadata`` of a node judged at a backward: how far into the log it has
    been judged (so a retained graph is not judged twice for one write)."""

    checked: int = -1


class WriteLog:
    """Logs writes and judges them at backward (see the module doc); same outputs as
    ``SavedTensors``: ``violations``, ``skipped``."""

    def __init__(self) -> None:
        self.violations: list[InplaceViolation] = []
        self.skipped: Counter[str] = Counter()
        self._key = f"gradlens.writes.{id(self)}"
        self._max_write_seq = -1
        self._count = 0
        self._by_storage: dict[int, deque[_Write]] = {}
        self._order: deque[tuple[int, int]] = deque()  # (storage, n) of each write, oldest first
        self._outputs: list[weakref.ref[torch.Tensor]] = []  # to find our marks again
        #: The ops that made nodes, in order: (first sequence number, end, op, and the code
        #: object and ``f_lasti`` of the user's frame that called it: ``line_at`` gives the
        #: line; or None and 0). The guard's mode appends to it directly (the hot path);
        #: ``made`` is the same, slower.
        self.made_log: list[tuple[int, int, str, CodeType | None, int]] = []
        #: Optimizer steps' writes not logged yet, newest last (as many steps as a memory
        #: block keeps writes: an older step's writes would be forgotten anyway).
        self._steps: deque[_StepWrites] = deque(maxlen=_PER_STORAGE)

    # -- op time ---------------------------------------------------------------------------
    def made(self, start: int, end: int, op: str, frame: FrameType | None) -> None:
        """Notes that ``op``, called from the user's ``frame``, made the nodes numbered
        ``start`` to ``end - 1`` (``torch._C._autograd._get_sequence_nr()`` before and after)."""
        if torch._C._autograd._top_saved_tensors_default_hooks(False) is not None:
            self.skipped[SKIP_HOOKED] += 1  # what these nodes saved belongs to the hooks
        if frame is None:
            self.made_log.append((start, end, op, None, 0))
        else:
            self.made_log.append((start, end, op, frame.f_code, frame.f_lasti))
        if len(self.made_log) > _OPS_KEPT:
            self.trim()

    def trim(self) -> None:
        """Forgets the older half of the ops when there are too many (their nodes' findings
        will not name the line that saved)."""
        if len(self.made_log) > _OPS_KEPT:
            del self.made_log[: _OPS_KEPT // 2]

    def _made_by(self, seq: int) -> tuple[str | None, str | None]:
        """Returns the op and ``"file.py:line"`` that made the node numbered ``seq``, or
        ``(None, None)`` for a node no op made (inside a backward, a custom Function's)."""
        log = self.made_log
        i = bisect_right(log, seq, key=_START) - 1
        if i < 0 or seq >= log[i][1]:
            return None, None
        _, _, op, code, lasti = log[i]
        return op, None if code is None else format_location(code.co_filename, line_at(code, lasti))

    def log_write(
        self,
        written: torch.Tensor,
        op: str,
        site: tuple[str, int] | None,
        before: int | None,
        seq: int,
        after: int | None = None,
    ) -> None:
        """Logs a write that moved ``written``'s version from ``before`` (to ``after``, by
        default its version now), by an op that started at autograd sequence number ``seq``
        (``torch._C._autograd._get_sequence_nr()``)."""
        span = _span(written)
        if span is None:
            self.skipped[
                f"writes to a {unsupported(written) or 'tensor with no plain memory'}"
            ] += 1
        else:
            version = written._version if after is None else after
            self._log(span, before, version, op, site, written, seq)

    def log_step(
        self,
        written: list[tuple[torch.Tensor, int, int]],
        op: str,
        site: tuple[str, int] | None,
        seq: int,
    ) -> None:
        """Keeps an optimizer step's writes (``(tensor, version before, version after)``, by
        ``op`` at ``site``, starting at sequence number ``seq``) to be logged when needed
        (``flush``)."""
        ref = weakref.ref
        self._steps.append(_StepWrites(seq, op, site, [(ref(t), b, a) for t, b, a in written]))
        if seq > self._max_write_seq:
            self._max_write_seq = seq

    def flush(self) -> None:
        """Logs the kept optimizer steps' writes (call before any op that could move a written
        tensor to other memory, and before judging)."""
        steps, self._steps = self._steps, deque(maxlen=_PER_STORAGE)  # _log sees none left
        for step in steps:  # oldest first
            for ref, before, after in step.written:
                t = ref()
                if t is not None:  # else nothing can have saved it by its own memory
                    self.log_write(t, step.op, step.site, before, step.seq, after)

    def log_data_set(self, t: torch.Tensor, site: tuple[str, int] | None, seq: int) -> None:
        """Logs ``t.data = new`` (call after it, with ``t``'s new memory): a node that saved
        ``t`` itself now reads the new values; one that saved a view of the old memory does not."""
        span = _span(t)
        if span is not None:
            self._log(span, None, None, ".data =", site, t, seq)

    def _log(
        self,
        span: tuple[int, int, int],
        before: int | None,
        after: int | None,
        op: str,
        site: tuple[str, int] | None,
        written: torch.Tensor,
        seq: int,
    ) -> None:
        if self._steps:
            self.flush()  # the steps' writes came first
        write = _Write(
            self._count, seq, *span, before, after, op, site, weakref.ref(written),
            shape_of(written),
        )  # fmt: skip
        self._count += 1
        self._max_write_seq = max(self._max_write_seq, seq)
        kept = self._by_storage.get(span[0])
        if kept is None:
            kept = self._by_storage[span[0]] = deque()
        elif len(kept) == _PER_STORAGE:
            kept.popleft()  # its entry in _order goes stale, and is skipped when it comes up
        kept.append(write)
        self._order.append((span[0], write.n))
        if len(self._order) > _KEPT:
            storage, n = self._order.popleft()
            writes = self._by_storage.get(storage)
            if writes and writes[0].n == n:
                writes.popleft()
                if not writes:
                    del self._by_storage[storage]

    # -- backward --------------------------------------------------------------------------
    def check_backward(
        self,
        roots: list[torch.Tensor],
        frame: FrameType | None,
        inputs: Sequence[Any] = (),
    ) -> list[InplaceViolation]:
        """Returns (and keeps) the violations a backward from ``roots`` (towards ``inputs``,
        for ``autograd.grad`` and ``backward(inputs=...)``) is about to meet."""
        if not self._by_storage and not self._steps:
            return []
        runs = executed_nodes(roots, inputs) if inputs else None
        found: list[InplaceViolation] = []
        queue: deque[Any] = deque()
        seen: set[int] = set()
        for t in roots:
            fn = grad_fn_of(t)
            if fn is not None and id(fn) not in seen:
                seen.add(id(fn))
                queue.append(fn)
        judged = False
        newest = self._max_write_seq
        pop, push, see = queue.popleft, queue.append, seen.add
        while queue:  # breadth first: findings come out in the order backward meets them
            fn = pop()
            seq = fn._sequence_nr()
            if seq < newest and (runs is None or id(fn) in runs):
                if self._steps:
                    self.flush()
                found.extend(self._judge(fn, seq, frame))
                judged = True
            for child, _ in fn.next_functions:
                # A leaf's AccumulateGrad saves nothing, has no inputs and the largest number.
                if child is not None and type(child) is not _ACCUMULATE and id(child) not in seen:
                    see(id(child))
                    push(child)
        if judged:  # so that close() finds the marks again
            self._outputs.extend(weakref.ref(t) for t in roots)
        self.violations.extend(found)
        return found

    def _judge(self, fn: Any, seq: int, frame: FrameType | None) -> list[InplaceViolation]:
        mark = fn.metadata.get(self._key)
        if mark is None:
            mark = fn.metadata[self._key] = _Mark()
        if mark.checked >= self._count - 1:
            return []
        checked, mark.checked = mark.checked, self._count - 1
        out = []
        for role, item in raw_saved(fn):
            if item.unpack_hook is not None:
                continue  # counted when the op ran
            if unused_by_backward(fn, role):
                continue
            t = item.data
            if not isinstance(t, torch.Tensor) or not is_plain(t):
                continue
            ptr = storage_ptr(t)
            writes = self._by_storage.get(ptr) if ptr is not None else None
            if not writes:
                continue
            why = unsupported(t)
            if why is not None:
                self.skipped[why] += 1
                continue
            span = _plain_span(t)
            if span is None:
                continue
            # Views of one tensor share its version counter: a write anywhere in this memory
            # can make PyTorch refuse the saved value; only an overlapping one changes it.
            after_save = [w for w in writes if w.n > checked and w.seq > seq]
            if after_save:
                out.append(self._verdict(fn, role, t, span, seq, after_save, frame))
        return [v for v in out if v is not None]

    def _verdict(
        self,
        fn: Any,
        role: str,
        t: torch.Tensor,
        span: tuple[int, int, int],
        seq: int,
        writes: list[_Write],
        frame: FrameType | None,
    ) -> InplaceViolation | None:
        """Returns what the logged ``writes`` (to ``t``'s memory, after the save) did to the
        saved ``t``, whose memory is ``span``."""
        stale = _stale_versions(fn, role)
        if stale is not None:  # PyTorch will refuse: the write that left the saved version
            now, then = stale
            culprit = next((w for w in writes if w.before == then), None)
            if culprit is None:
                return None  # moved by a write gradlens did not see: PyTorch will say so
            kind, saved_version, version = "inplace-saved", then, now
        else:  # PyTorch will not notice: a write through another version counter
            changed = [w for w in writes if w.start < span[2] and span[1] < w.end]
            if not changed:
                return None  # elsewhere in the same memory: the saved values are intact
            culprit = changed[-1]
            kind, saved_version, version = "silent-write", t._version, t._version
        written = culprit.written() if culprit.written is not None else None
        saved_op, saved_source = self._made_by(seq)
        return InplaceViolation(
            kind=kind,  # type: ignore[arg-type]
            tensor=_name_in(frame, written if written is not None else t, culprit.shape),
            write_op=culprit.op,
            write_source=culprit.source,
            saved_by=node_name(fn),
            saved_op=saved_op,
            saved_as=role,
            saved_source=saved_source,
            saved_version=saved_version,
            version=version,
            shape=tuple(t.shape),
        )

    def confirm_from_error(self, error: BaseException) -> list[InplaceViolation]:
        """Returns (and keeps) the write PyTorch's own "modified by an inplace operation"
        ``error`` is about, when nothing was reported before it (a node whose saves Python
        cannot see, such as ``torch._foreach_*``'s): the logged write from its expected version
        to one that is the tensor's version now."""
        match = _MODIFIED.search(str(error)) if isinstance(error, RuntimeError) else None
        if match is None:
            return []
        self.flush()
        now, then = int(match.group(1)), int(match.group(2))
        shape = _SHAPE.search(str(error))  # "[torch.FloatTensor [3, 1]]"
        dims = tuple(int(d) for d in shape.group(1).split(",") if d.strip()) if shape else None
        hits = [
            w
            for writes in self._by_storage.values()
            for w in writes
            if w.before == then and writes[-1].after == now and dims in (None, w.shape)
        ]
        # One write (or one call writing several tensors, as _foreach_add_ does) is the
        # culprit; writes from several lines could not be told apart: say nothing untrue.
        if not hits or len({(w.op, w.site) for w in hits}) != 1:
            return []
        frame, _ = user_frame()
        found = []
        for w in hits:
            written = w.written() if w.written is not None else None
            found.append(
                InplaceViolation(
                    kind="inplace-saved",
                    tensor=_name_in(frame, written, w.shape),
                    write_op=w.op,
                    write_source=w.source,
                    saved_version=then,
                    version=now,
                    shape=w.shape,
                )
            )
        self.violations.extend(found)
        return found

    def close(self) -> None:
        """Takes the marks off the nodes still alive and forgets the log."""
        remove_marks(self._outputs, self._key)
        self._outputs.clear()
        self._by_storage.clear()
        self._order.clear()
        self._steps.clear()
        self.made_log.clear()


def _stale_versions(fn: Any, role: str) -> tuple[int, int] | None:
    """Returns ``(version now, version saved)`` when PyTorch's own check refuses the saved
    value ``role`` of ``fn`` (an unpack with no hook attached: it runs nothing else)."""
    try:
        if isinstance(fn, BackwardCFunction):
            fn.saved_tensors  # noqa: B018 - the read is the check
        else:
            getattr(fn, "_saved_" + role)
    except RuntimeError as e:
        match = _MODIFIED.search(str(e))
        if match is not None:
            return int(match.group(1)), int(match.group(2))
    return None
