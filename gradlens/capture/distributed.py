"""``watch()`` under ``torch.distributed``: ranks, DTensor shards, and one collective per flush.

Each rank measures what it holds (a DTensor gradient through ``to_local()``: its shard, never
the full tensor) exactly as a single process does, per step, with no communication. Every
``FLUSH_EVERY`` recorded steps, and once more when the watch ends or the process group is about
to be destroyed, ``Ranks.exchange`` packs this rank's numbers of those steps into one float64
tensor and runs **one** ``all_gather`` on a gloo group of gradlens's own (CPU, with a timeout:
``GRADLENS_DIST_TIMEOUT`` seconds, 120 by default). Every rank then holds every rank's numbers
and combines them the same way:

* a sharded parameter (a DTensor with a ``Shard`` placement: FSDP2) gets the sums of squares,
  sums and element counts of its shards added, min/max and non-finite counts combined: the
  statistics of the whole gradient;
* a replicated parameter (a plain tensor under DDP, or a replicated DTensor) keeps one rank's
  numbers, and the others are compared with them: replicas whose gradients differ after the
  all-reduce make a ``replica-divergence`` fact;
* the first non-finite gradient is traced to the rank whose own loss or own pre-reduction
  gradient was non-finite (``nonfinite-rank``); a parameter that some ranks' backward reached
  and others' did not makes an ``unused-on-some-ranks`` fact.

A gloo collective whose sizes differ between ranks aborts the process, so sizes are agreed
before they are used: the first round of every flush has the size agreed at the previous flush
(read from every rank's header), and a flush that outgrows it sends the rest in one more round
of an agreed size. When the collective fails (a rank died or hangs: the timeout), or the ranks
disagree on what they watched, gradlens stops combining, says so in a note, and keeps only
the numbers that are true of the whole gradient on one rank (replicated parameters).
"""

from __future__ import annotations

import contextlib
import datetime
import itertools
import math
import os
import sys
import time
import weakref
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, overload

import torch

from ..records import ParamStats, StepRecord, WatchFact
from ..records.histograms import GradHistogram
from .quiet import quiet

__all__ = [
    "ALL_RANKS_ENV",
    "TIMEOUT_ENV",
    "Ranks",
    "active",
    "all_ranks_asked",
    "current_rank",
    "grad_key",
    "is_dtensor",
    "local",
    "rank_path",
]

#: Set to 1 to get every rank's live view, report and files (``out.rank1.json``), not rank 0's only.
ALL_RANKS_ENV = "GRADLENS_ALL_RANKS"
#: Seconds gradlens's own collectives wait for the other ranks before giving up (default 120).
TIMEOUT_ENV = "GRADLENS_DIST_TIMEOUT"
_DEFAULT_TIMEOUT = 120.0

# Kinds of parameter, as seen from one rank.
REPLICATED, SHARD, DUPLICATE, OTHER = 0, 1, 2, 3
# One parameter of one step, as one rank saw it (the packet's rows).
_FIELDS = (
    "present",  # 1: it had a gradient this step on this rank
    "missing",  # 1: it requires grad and had none (the watcher's ``missing``)
    "reached",  # 1/0: this rank's backward reached it; -1: unknown (FSDP2: no hook fires)
    "kind",  # REPLICATED, SHARD, DUPLICATE, OTHER
    "numel",  # elements this rank holds (its shard)
    "bad",  # 1/0: its gradient was non-finite before any reduction; -1: unknown
    "sumsq",
    "sum",
    "gmax",
    "nonfinite",
    "zeros",  # detail steps only (else nan), like the next four
    "nan",
    "inf",
    "wsumsq",
    "updsq",
)
_K = len(_FIELDS)
_F = {name: i for i, name in enumerate(_FIELDS)}
_HEADER = 8  # magic, version, steps, rows, layout checksum, length, rank, spare
_MAGIC = 7_340_033.0
_VERSION = 1.0
_FIRST_CAPACITY = 1 << 15  # doubles in the first round of the first flush (256 KiB)
_TOLERANCE = 1e-5  # relative difference of two replicas' sums that is not rounding
_ROLL_CALL = 10.0  # seconds the first exchange waits for every rank to say it watches too
_WATCHING = "gradlens/watching/{}/{}"  # set in the default store by each watching rank
_watchers = itertools.count()  # watchers made in this process: the n-th is the same on each rank
_last_rank: int | None = None  # the rank last read from torch.distributed


def active() -> bool:
    """Returns whether this process is one rank of an initialized group of more than one."""
    if "torch.distributed" not in sys.modules:
        return False
    import torch.distributed as dist

    try:
        if not (dist.is_available() and dist.is_initialized()):
            return False
        return dist.get_world_size() > 1
    except (RuntimeError, ValueError):
        return False


def current_rank() -> int:
    """Returns this process's rank: torch.distributed's, else the last one it gave, else the
    ``RANK`` variable torchrun sets, else 0."""
    global _last_rank
    if "torch.distributed" in sys.modules:
        import torch.distributed as dist

        try:
            if dist.is_available() and dist.is_initialized():
                _last_rank = dist.get_rank()
        except (RuntimeError, ValueError):
            pass
    if _last_rank is not None:
        return _last_rank
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def all_ranks_asked() -> bool:
    """Returns whether ``GRADLENS_ALL_RANKS`` asks for every rank's output."""
    return os.environ.get(ALL_RANKS_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def rank_path(path: os.PathLike[str] | str, rank: int) -> str:
    """Returns ``path`` for ``rank``: unchanged on rank 0, ``out.rank1.json`` on rank 1."""
    text = os.fspath(path)
    if rank == 0:
        return text
    root, ext = os.path.splitext(text)
    return f"{root}.rank{rank}{ext}"


def _timeout() -> float:
    try:
        value = float(os.environ.get(TIMEOUT_ENV, _DEFAULT_TIMEOUT))
    except ValueError:
        return _DEFAULT_TIMEOUT
    return value if value > 0 else _DEFAULT_TIMEOUT


_dtensor: type | None = None  # torch.distributed.tensor.DTensor, once something imported it


def is_dtensor(t: object) -> bool:
    """Returns whether ``t`` is a DTensor (without importing DTensor when nothing made one)."""
    global _dtensor
    cls = _dtensor
    if cls is None:
        module = sys.modules.get("torch.distributed.tensor")
        cls = getattr(module, "DTensor", None) if module is not None else None
        if cls is None:
            return False
        _dtensor = cls
    return isinstance(t, cls)


@overload
def local(t: torch.Tensor) -> torch.Tensor: ...
@overload
def local(t: torch.Tensor | None) -> torch.Tensor | None: ...
def local(t: torch.Tensor | None) -> torch.Tensor | None:
    """Returns what this rank holds of ``t``: a DTensor's local shard, else ``t`` itself."""
    return t.to_local() if is_dtensor(t) else t  # type: ignore[union-attr]


def grad_key(g: torch.Tensor) -> int:
    """Returns the key the watcher finds a ``.grad`` by: its memory address, or its id for a
    tensor with no plain memory of its own (sparse, a DTensor)."""
    if g.layout == torch.strided and not is_dtensor(g):
        return int(g.data_ptr())
    return id(g)


def _kind(t: torch.Tensor) -> int:
    """Returns how ``t`` (a gradient or a parameter) is laid out across the ranks."""
    if not is_dtensor(t):
        return REPLICATED
    import torch.distributed as dist

    mesh, placements = t.device_mesh, t.placements  # type: ignore[attr-defined]
    if mesh.size() != dist.get_world_size() or any(p.is_partial() for p in placements):
        return OTHER  # a pending reduction, or a mesh that is not every rank: not combined
    if all(p.is_replicate() for p in placements):
        return REPLICATED
    coordinate = mesh.get_coordinate()
    if coordinate is None:
        return OTHER
    copy = any(p.is_replicate() and c != 0 for p, c in zip(placements, coordinate, strict=True))
    return DUPLICATE if copy else SHARD  # a copy of a shard another rank already counts


@dataclass
class _Meta:
    """One recorded step of one optimizer, as this rank saw it: what the packet's rows hold
    besides the numbers of the step's record."""

    optimizer: str
    step: int
    names: list[str]
    kinds: list[int]
    numels: list[int]
    reached: list[int]
    sums: list[torch.Tensor | None]  # pre-reduction sums of this rank's own gradients


@dataclass
class _Row:
    values: list[float]

    def __getitem__(self, name: str) -> float:
        return self.values[_F[name]]


@dataclass
class _Window:
    """One flush: the steps, and for each step each rank's loss and rows."""

    losses: list[list[float | None]] = field(default_factory=list)  # [step][rank]
    rows: list[list[list[_Row]]] = field(default_factory=list)  # [step][rank][param]


class Ranks:
    """The distributed side of one watcher: what each recorded step needs besides its record
    (``note``), the exchange that combines the ranks (``exchange``), and the records to keep
    when they cannot be combined (``local_only``).

    ``facts`` and ``notes`` are the watcher's own lists; facts and notes are appended to them.
    """

    def __init__(self, facts: list[WatchFact], notes: list[str]) -> None:
        self._facts = facts
        self._notes = notes
        self._number = next(_watchers)
        self.metas: list[_Meta] = []
        self.seen = False  # some step was taken with more than one rank
        self.world = 1
        self.rank = 0
        self.combined = 0  # flushes combined across ranks
        self.collectives = 0  # all_gather calls made (tests count them too)
        self.off: str | None = None  # why combining stopped
        self._group: Any = None
        self._capacity = _FIRST_CAPACITY
        self._kinds: dict[str, int] = {}  # parameter name -> kind, as last seen
        self._layout: dict[int, tuple[int, int]] = {}  # slot -> (kind, local numel) of its grad
        self._hooks: dict[int, Any] = {}  # slot -> handle of the pre-reduction check
        self._sums: dict[int, torch.Tensor] = {}  # slot -> sum of its gradients this step
        self._hook_failed = False
        self._versions: dict[tuple[str, int], tuple[weakref.ref[torch.Tensor], int]] = {}
        self._told: set[str] = set()  # notes given
        self._once: set[str] = set()  # facts given (each once)
        self._destroy: dict[Any, Callable[..., Any]] = {}
        self._before_destroy: Callable[[], None] | None = None

    # -- while training ----------------------------------------------------------------------
    def holding(self) -> bool:
        """Returns whether steps wait for the next exchange (more than one rank, combining on)."""
        return self.off is None and active()

    def due(self, every: int) -> bool:
        """Returns whether ``every`` recorded steps wait for the exchange (the same on every
        rank: they all count the same steps)."""
        return len(self.metas) >= every and self.holding()

    def grad_moved(self, optimizer: str, slot: int, g: torch.Tensor | None) -> bool:
        """For a DTensor parameter, whose ``.grad`` FSDP2 writes itself (no gradient hook fires
        on a sharded parameter): returns whether ``g`` is another tensor, or was written to,
        since ``optimizer``'s previous step with it."""
        key = (optimizer, slot)
        if g is None:
            self._versions.pop(key, None)
            return False
        version = local(g)._version
        before = self._versions.get(key)
        self._versions[key] = (weakref.ref(g), version)
        return before is None or before[0]() is not g or before[1] != version

    def note(
        self,
        optimizer: str,
        step: int,
        members: Iterable[tuple[int, str, torch.Tensor]],
        touched: set[int],
    ) -> None:
        """Keeps what a recorded step needs besides its record: each member's kind, local size,
        whether this rank's backward reached it (``touched``: slots), and the sum of the
        gradients its own backward made before any reduction. ``members``: (slot, name,
        parameter)."""
        if not active():
            return
        import torch.distributed as dist

        if not self.seen:
            self.world, self.rank = dist.get_world_size(), dist.get_rank()
            _say_watching(self._number, self.rank)
        self.seen = True
        names, kinds, numels, reached, sums = [], [], [], [], []
        for slot, name, param in members:
            dtensor = is_dtensor(param)
            layout = self._layout.get(slot)
            if layout is None:  # a gradient's layout does not change: read it once
                g = param.grad
                t = g if g is not None else param
                # FSDP1's flat parameters are plain tensors, a different shard on each rank
                flat = getattr(param, "_is_flat_param", False)
                layout = (OTHER if flat else _kind(t), local(t).numel())
                if g is not None:
                    self._layout[slot] = layout
            kind, numel = layout
            self._kinds[name] = kind
            names.append(name)
            kinds.append(kind)
            numels.append(numel)
            reached.append(-1 if dtensor or slot not in self._hooks else int(slot in touched))
            sums.append(self._sums.pop(slot, None))
            if not dtensor and slot not in self._hooks and param.requires_grad:
                self._hooks[slot] = param.register_hook(self._pre_reduction(slot))
        self.metas.append(_Meta(optimizer, step, names, kinds, numels, reached, sums))

    def skip(self) -> None:
        """A step that is not recorded: forgets the pre-reduction sums its backward made."""
        self._sums.clear()

    def _pre_reduction(self, slot: int) -> Callable[[torch.Tensor], None]:
        """A gradient hook: adds up the float64 sum of this rank's own gradient (before DDP's
        all-reduce spreads a NaN to every rank). One reduction per gradient, no sync."""
        sums = self._sums

        def hook(grad: torch.Tensor) -> None:
            if self._hook_failed:
                return
            try:
                with quiet(), torch.no_grad():
                    g = grad.detach()
                    if g.layout != torch.strided:
                        g = g.coalesce().values()
                    if g.is_complex():
                        g = torch.view_as_real(g)
                    if not g.is_floating_point():
                        return
                    total = g.sum(dtype=torch.float64)
                    before = sums.get(slot)
                    sums[slot] = total if before is None else before + total
            except Exception as e:
                self._hook_failed = True
                self._note(f"gradlens stopped checking each rank's own gradients: {e!r:.160}")

        return hook

    def watch_destroy(self, before: Callable[[], None]) -> None:
        """Runs ``before`` (the last exchange) when the program destroys the default process
        group, while the group still works: ``dist.destroy_process_group()`` is wrapped until
        ``stop``. The only torch function gradlens wraps; the wrapper calls the original."""
        import torch.distributed as dist
        import torch.distributed.distributed_c10d as c10d

        self._before_destroy = before
        original = c10d.destroy_process_group

        def destroy_process_group(group: Any = None) -> None:
            before_destroy = self._before_destroy
            if before_destroy is not None and (group is None or group is c10d.GroupMember.WORLD):
                self._before_destroy = None
                try:
                    before_destroy()
                except Exception as e:  # never stand in the way of the program's own call
                    self._note(f"gradlens could not combine its last steps across ranks: {e!r}")
            original(group)

        destroy_process_group.__doc__ = original.__doc__
        destroy_process_group.__wrapped__ = original  # type: ignore[attr-defined]
        for module in (dist, c10d):
            if getattr(module, "destroy_process_group", None) is original:
                self._destroy[module] = original
                module.destroy_process_group = destroy_process_group  # type: ignore[attr-defined]

    def stop(self) -> None:
        """Removes the pre-reduction hooks and puts ``destroy_process_group`` back."""
        self._before_destroy = None
        for module, original in self._destroy.items():
            current = getattr(module, "destroy_process_group", None)
            if getattr(current, "__wrapped__", None) is original:
                module.destroy_process_group = original
        self._destroy.clear()
        for handle in self._hooks.values():
            handle.remove()
        self._hooks.clear()
        self._sums.clear()
        self._versions.clear()
        self._layout.clear()

    # -- the exchange ------------------------------------------------------------------------
    def exchange(self, records: list[StepRecord]) -> list[StepRecord]:
        """Returns ``records`` (this rank's, in order) combined with every other rank's, after
        one all_gather (two when the numbers outgrew the size agreed at the previous flush).
        Steps taken before the group existed are returned as they are. Appends facts."""
        metas, self.metas = self.metas, []
        keyed = {(m.optimizer, m.step): m for m in metas}
        rest = [r for r in records if (r.optimizer, r.step) not in keyed]
        by_key = {(r.optimizer, r.step): r for r in records}
        if not metas:
            return records
        try:
            packet = self._pack(metas, by_key)
            gathered = self._gather(packet)
        except _NotWatched as e:
            ranks = ", ".join(str(r) for r in e.ranks)
            self._stop_combining(
                f"gradlens does not watch rank(s) {ranks} (watch() on some ranks only?), so it "
                "cannot combine their gradients; put watch() on every rank to see the whole "
                "gradient"
            )
            return rest + self.local_only([by_key[k] for k in keyed if k in by_key])
        except Exception as e:
            self._stop_combining(f"the exchange failed: {type(e).__name__}: {e}")
            return rest + self.local_only([by_key[k] for k in keyed if k in by_key])
        window = self._unpack(gathered, metas)
        if window is None:
            return rest + self.local_only([by_key[k] for k in keyed if k in by_key])
        self.combined += 1
        out = list(rest)
        for i, meta in enumerate(metas):
            record = by_key.get((meta.optimizer, meta.step)) or StepRecord(
                meta.step, {}, optimizer=meta.optimizer
            )
            out.append(self._combine(meta, record, window.losses[i], window.rows[i]))
        self._find(metas, window)
        return out

    def local_only(self, records: list[StepRecord]) -> list[StepRecord]:
        """Returns ``records`` of steps that could not be combined across ranks, keeping only
        what is true of the whole gradient on this rank: replicated parameters (a shard's
        numbers would pass for the whole gradient's)."""
        if not self.seen:
            return records
        out = []
        for r in records:
            left = [n for n in r.grads if self._kinds.get(n, REPLICATED) != REPLICATED]
            if left:
                self._note(
                    f"gradlens left the sharded parameters ({_names(left)}) out of steps it "
                    f"could not combine across ranks: one rank's shard is not the gradient"
                )
                grads = {n: s for n, s in r.grads.items() if n not in left}
                r = replace(r, grads=grads)
            out.append(r)
        return out

    def whole_histograms(self, histograms: list[GradHistogram]) -> list[GradHistogram]:
        """Returns the histograms that are of a whole gradient: under torch.distributed, those
        of replicated parameters (a shard's histogram is not the gradient's: left out)."""
        if not self.seen:
            return histograms
        kept = [h for h in histograms if self._kinds.get(h.param, REPLICATED) == REPLICATED]
        if len(kept) < len(histograms):
            self._note(
                "gradlens sent the sinks no gradient histograms of sharded parameters: each "
                "rank counts its own shard only"
            )
        return kept

    def _stop_combining(self, why: str) -> None:
        if self.off is None:
            self.off = why
            self._note(
                f"gradlens stopped combining statistics across ranks: {why[:300]}; "
                "from there on each rank reports its own"
            )

    def _note(self, text: str) -> None:
        if text not in self._told:
            self._told.add(text)
            self._notes.append(text)

    def _group_now(self) -> Any:
        """Returns gradlens's own gloo group (made at the first exchange, on every rank)."""
        import torch.distributed as dist
        import torch.distributed.distributed_c10d as c10d

        if self._group is not None and self._group not in c10d._world.pg_map:
            self._group = None  # destroyed with the default group; a new one was made since
        if self._group is None:
            # No collective with ranks that would never join it (watch() on rank 0 only).
            absent = _not_watching(self._number, self.world)
            if absent:
                raise _NotWatched(absent)
            timeout = datetime.timedelta(seconds=_timeout())
            self._group = dist.new_group(backend="gloo", timeout=timeout)
        return self._group

    def _pack(self, metas: list[_Meta], by_key: dict[tuple[str, int], StepRecord]) -> list[float]:
        values: list[float] = [_MAGIC, _VERSION, len(metas), 0.0, 0.0, 0.0, self.rank, 0.0]
        layout = zlib.crc32(
            "\n".join(f"{m.optimizer}|{m.step}|{','.join(m.names)}" for m in metas).encode()
        )
        values[3] = float(sum(len(m.names) for m in metas))
        values[4] = float(layout)
        bad = _host_flags([s for m in metas for s in m.sums])
        at = 0
        for m in metas:
            record = by_key.get((m.optimizer, m.step))
            loss = record.loss if record is not None else None
            values += [math.nan if loss is None else loss, 0.0 if loss is None else 1.0]
            missing = set(record.missing) if record is not None else set()
            grads = record.grads if record is not None else {}
            for j, name in enumerate(m.names):
                s = grads.get(name)
                row = [math.nan] * _K
                row[_F["present"]] = 1.0 if s is not None else 0.0
                row[_F["missing"]] = 1.0 if name in missing else 0.0
                row[_F["reached"]] = float(m.reached[j])
                row[_F["kind"]] = float(m.kinds[j])
                row[_F["numel"]] = float(m.numels[j])
                row[_F["bad"]] = bad[at + j]
                if s is not None:
                    _put_stats(row, s, m.numels[j])
                values += row
            at += len(m.names)
        values[5] = float(len(values))
        return values

    def _gather(self, packet: list[float]) -> list[list[float]]:
        """Returns every rank's packet: one all_gather of the agreed size, and one more of an
        agreed size when some rank's packet is longer."""
        import torch.distributed as dist

        group = self._group_now()
        world = dist.get_world_size(group)
        capacity = self._capacity
        data = torch.tensor(packet, dtype=torch.float64)
        first = torch.zeros(capacity, dtype=torch.float64)
        first[: min(len(packet), capacity)] = data[:capacity]
        outs = [torch.empty(capacity, dtype=torch.float64) for _ in range(world)]
        with quiet():
            dist.all_gather(outs, first, group=group)
        self.collectives += 1
        for o in outs:
            if o[0].item() != _MAGIC or o[1].item() != _VERSION:
                raise RuntimeError("a rank sent something else than gradlens's statistics")
        lengths = [int(o[5].item()) for o in outs]
        need = max(lengths)
        if need > capacity:  # every rank read the same headers: they agree on this size
            second = torch.zeros(need - capacity, dtype=torch.float64)
            tail = data[capacity:]
            second[: tail.numel()] = tail
            more = [torch.empty(need - capacity, dtype=torch.float64) for _ in range(world)]
            with quiet():
                dist.all_gather(more, second, group=group)
            self.collectives += 1
            outs = [torch.cat([a, b]) for a, b in zip(outs, more, strict=True)]
        self._capacity = max(need, _HEADER)
        return [o[:n].tolist() for o, n in zip(outs, lengths, strict=True)]

    def _unpack(self, gathered: list[list[float]], metas: list[_Meta]) -> _Window | None:
        """Returns the window's numbers by step and rank, or None (and stops combining) when the
        ranks did not watch the same steps and parameters."""
        heads = {(p[2], p[3], p[4]) for p in gathered}
        if len(heads) != 1:
            self._stop_combining(
                "the ranks watched different steps or parameters (a pipeline stage per rank, "
                "or ranks that left the training loop at different steps)"
            )
            return None
        window = _Window()
        at = [_HEADER] * len(gathered)
        for m in metas:
            losses: list[float | None] = []
            rows: list[list[_Row]] = []
            for r, packet in enumerate(gathered):
                i = at[r]
                losses.append(packet[i] if packet[i + 1] == 1.0 else None)
                i += 2
                rows.append(
                    [_Row(packet[i + j * _K : i + (j + 1) * _K]) for j in range(len(m.names))]
                )
                at[r] = i + len(m.names) * _K
            window.losses.append(losses)
            window.rows.append(rows)
        return window

    # -- combining ---------------------------------------------------------------------------
    def _combine(
        self,
        meta: _Meta,
        record: StepRecord,
        losses: list[float | None],
        rows: list[list[_Row]],
    ) -> StepRecord:
        grads: dict[str, ParamStats] = {}
        missing: list[str] = []
        for j, name in enumerate(meta.names):
            mine = [rank_rows[j] for rank_rows in rows]
            kind = int(mine[self.rank]["kind"])
            if kind == REPLICATED and len({row["numel"] for row in mine}) > 1:
                kind = self._kinds[name] = OTHER  # a shard per rank (FSDP1, use_orig_params)
            if kind == REPLICATED:
                have = [row for row in mine if row["present"] == 1.0]
                if have:
                    own = record.grads.get(name)
                    grads[name] = own if own is not None else _stats([have[0]], record.detail)
                elif all(row["missing"] == 1.0 for row in mine):
                    missing.append(name)
            elif kind in (SHARD, DUPLICATE):
                counted = [row for row in mine if int(row["kind"]) == SHARD]
                if any(row["present"] == 1.0 for row in counted):
                    grads[name] = _stats(counted, record.detail)
                elif all(row["missing"] == 1.0 for row in mine):
                    missing.append(name)
            elif name in record.grads:
                self._note(
                    f"{name}: its gradient is split across the ranks in a way gradlens cannot "
                    "combine (FSDP1's parameters: use FSDP2's fully_shard; a Partial DTensor; "
                    "a mesh that is not every rank): left out of the steps"
                )
        known = [x for x in losses if x is not None]
        loss = sum(known) / len(known) if known else None
        return replace(record, grads=grads, missing=tuple(missing), loss=loss)

    def _find(self, metas: list[_Meta], window: _Window) -> None:
        """Appends the rank-aware facts this window shows (each kind once per parameter; the
        first non-finite gradient once)."""
        for m, losses, rows in zip(metas, window.losses, window.rows, strict=True):
            self._nonfinite(m, losses, rows)
            self._divergence(m, rows)
            self._unused(m, rows)

    def _fact(self, kind: Any, m: _Meta, param: str | None, ranks: list[int], detail: str) -> None:
        self._facts.append(
            WatchFact(kind, m.step, param, None, detail, m.optimizer, ranks=tuple(ranks))
        )

    def _nonfinite(self, m: _Meta, losses: list[float | None], rows: list[list[_Row]]) -> None:
        if "nonfinite-rank" in self._once:
            return
        world = range(len(rows))
        bad_loss = [r for r in world if not math.isfinite(_or_zero(losses[r]))]
        own = [r for r in world if any(row["bad"] == 1.0 for row in rows[r])]
        held = [
            r
            for r in world
            if any(row["present"] == 1.0 and row["nonfinite"] == 1.0 for row in rows[r])
        ]
        if not (bad_loss or own or held):
            return
        self._once.add("nonfinite-rank")
        if own:
            ranks, how = own, "own-gradient"
        elif bad_loss:
            ranks, how = bad_loss, "loss"
        else:
            ranks, how = held, "shard" if any(k != REPLICATED for k in m.kinds) else "after-reduce"
        param = None
        for r in ranks:
            for j, row in enumerate(rows[r]):
                if row["bad"] == 1.0 or (row["present"] == 1.0 and row["nonfinite"] == 1.0):
                    param = m.names[j]
                    break
            if param is not None:
                break
        loss_text = ", ".join(
            f"rank {r}: {_num(losses[r])}" for r in world if losses[r] is not None
        )
        self._fact("nonfinite-rank", m, param, ranks, f"{how}|{loss_text}")

    def _divergence(self, m: _Meta, rows: list[list[_Row]]) -> None:
        differ: list[tuple[str, list[int], str]] = []
        for j, name in enumerate(m.names):
            if m.kinds[j] != REPLICATED or f"divergence {name}" in self._once:
                continue
            have = [(r, rank_rows[j]) for r, rank_rows in enumerate(rows)]
            if len({row["numel"] for _, row in have}) > 1:
                continue  # not replicas (each rank its own shard): _combine left it out
            have = [(r, row) for r, row in have if row["present"] == 1.0]
            if len(have) < 2:
                continue
            first_rank, first = have[0]
            odd = [r for r, row in have[1:] if not _same(first, row)]
            if odd:
                self._once.add(f"divergence {name}")
                norms = ", ".join(f"rank {r}: {_num(math.sqrt(row['sumsq']))}" for r, row in have)
                differ.append((name, [first_rank, *odd], norms))
        if differ:
            names = [d[0] for d in differ]
            ranks = sorted({r for d in differ for r in d[1]})
            self._fact("replica-divergence", m, names[0], ranks, f"{_names(names)}|{differ[0][2]}")

    def _unused(self, m: _Meta, rows: list[list[_Row]]) -> None:
        for j, name in enumerate(m.names):
            if f"unused {name}" in self._once:
                continue
            col = [rank_rows[j] for rank_rows in rows]
            if all(row["reached"] >= 0 for row in col):
                used = [r for r, row in enumerate(col) if row["reached"] == 1.0]
            else:  # no hook on some rank (FSDP2): whether a gradient arrived at all
                used = [r for r, row in enumerate(col) if row["present"] == 1.0]
            unused = [r for r in range(len(col)) if r not in used]
            if used and unused:
                self._once.add(f"unused {name}")
                filled = all(col[r]["present"] == 1.0 for r in unused)
                how = "filled" if filled else "none"
                self._fact("unused-on-some-ranks", m, name, unused, f"{how}|{len(used)}")


class _NotWatched(Exception):
    def __init__(self, ranks: list[int]) -> None:
        super().__init__(ranks)
        self.ranks = ranks


def _store() -> Any:
    import torch.distributed.distributed_c10d as c10d

    return c10d._get_default_store()


def _say_watching(watch: int, rank: int) -> None:
    """Sets this rank's key for its ``watch``-th watcher in the default store (no collective,
    no wait). Without a store the exchange finds out the slow way (its timeout)."""
    with contextlib.suppress(Exception):
        _store().set(_WATCHING.format(watch, rank), "1")


def _not_watching(watch: int, world: int) -> list[int]:
    """Returns the ranks that have not said they watch (their ``watch``-th watcher), after
    waiting a little for them: every rank that watches says so at its first step."""
    try:
        store = _store()
        keys = [_WATCHING.format(watch, r) for r in range(world)]
        deadline = time.monotonic() + min(_ROLL_CALL, _timeout())
        while not store.check(keys):  # polled: store.wait logs a warning when it times out
            if time.monotonic() > deadline:
                return [r for r, key in enumerate(keys) if not store.check([key])]
            time.sleep(0.05)
        return []
    except Exception:
        return []


def _put_stats(row: list[float], s: ParamStats, n: int) -> None:
    """Writes a parameter's statistics into its packet row as sums that add up across shards."""
    row[_F["sumsq"]] = s.grad_norm * s.grad_norm
    row[_F["sum"]] = s.grad_mean * n
    row[_F["gmax"]] = s.grad_max
    row[_F["nonfinite"]] = 1.0 if s.nonfinite else 0.0
    if s.zero_frac is not None:
        row[_F["zeros"]] = round(s.zero_frac * n)
        row[_F["nan"]] = float(s.nan or 0)
        row[_F["inf"]] = float(s.inf or 0)
    if s.weight_norm is not None:
        row[_F["wsumsq"]] = s.weight_norm * s.weight_norm
        if s.update_ratio is not None:
            update = s.update_ratio * s.weight_norm if s.weight_norm else s.update_ratio
            row[_F["updsq"]] = update * update
        elif s.weight_norm == 0.0:
            row[_F["updsq"]] = 0.0


_CANCELLATION = 1e-6  # as pending._light: a variance below this share of the mean square is 0


def _stats(rows: list[_Row], detail: bool) -> ParamStats:
    """Returns the statistics of a gradient whose parts (shards, or one replica) are ``rows``."""
    parts = [row for row in rows if row["present"] == 1.0 and row["numel"] > 0]
    n = sum(row["numel"] for row in parts)
    if n == 0:
        return ParamStats(0.0, 0.0, 0.0, 0.0, False)
    sumsq = sum(row["sumsq"] for row in parts)
    total = sum(row["sum"] for row in parts)
    nonfinite = any(row["nonfinite"] == 1.0 for row in parts)
    maxes = [row["gmax"] for row in parts]
    gmax = math.nan if any(math.isnan(x) for x in maxes) else max(maxes)
    norm = math.sqrt(sumsq) if sumsq >= 0 or math.isnan(sumsq) else math.nan
    mean = total / n
    var = sumsq / n - mean * mean if not nonfinite else math.nan
    if var < _CANCELLATION * sumsq / n:
        var = 0.0
    light = (norm, mean, math.sqrt(var) if var == var else math.nan, gmax, nonfinite)
    if not detail or any(math.isnan(row["zeros"]) for row in parts):
        return ParamStats(*light)
    weight = math.sqrt(sum(row["wsumsq"] for row in parts))
    updates = [row["updsq"] for row in parts]
    ratio: float | None = None
    if not any(math.isnan(u) for u in updates):
        update = math.sqrt(sum(updates))
        ratio = (None if update == 0.0 else math.inf) if weight == 0.0 else update / weight
    return ParamStats(
        *light,
        zero_frac=sum(row["zeros"] for row in parts) / n,
        nan=int(sum(row["nan"] for row in parts)),
        inf=int(sum(row["inf"] for row in parts)),
        weight_norm=weight,
        update_ratio=ratio,
    )


def _same(a: _Row, b: _Row) -> bool:
    """Returns whether two replicas' gradients look the same: equal element counts, largest
    |g|, non-finite flags, and sums and sums of squares equal to rounding."""
    if a["numel"] != b["numel"] or a["nonfinite"] != b["nonfinite"]:
        return False
    if a["nonfinite"] == 1.0:
        return True  # both non-finite: told by the non-finite finding, not compared here
    if a["gmax"] != b["gmax"]:
        return False
    scale = max(abs(a["sumsq"]), abs(b["sumsq"]))
    if abs(a["sumsq"] - b["sumsq"]) > _TOLERANCE * scale:
        return False
    bound = math.sqrt(max(a["numel"], 1.0) * scale)  # |sum| <= sqrt(n * sumsq)
    return abs(a["sum"] - b["sum"]) <= _TOLERANCE * bound


def _host_flags(sums: list[torch.Tensor | None]) -> list[float]:
    """Returns 1.0/0.0 for each sum that is non-finite/finite, -1.0 for None: one host copy per
    device for all of them."""
    out = [-1.0] * len(sums)
    by_device: dict[torch.device, list[int]] = {}
    for i, s in enumerate(sums):
        if s is not None:
            by_device.setdefault(s.device, []).append(i)
    with quiet():
        for indices in by_device.values():
            joined = torch.stack([sums[i].reshape(()) for i in indices])  # type: ignore[union-attr]
            flags = (~torch.isfinite(joined)).tolist()
            for i, flag in zip(indices, flags, strict=True):
                out[i] = 1.0 if flag else 0.0
    return out


def _or_zero(x: float | None) -> float:
    return 0.0 if x is None else x


def _num(x: float | None) -> str:
    return "none" if x is None else f"{x:.4g}"


def _names(names: list[str], most: int = 4) -> str:
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")
