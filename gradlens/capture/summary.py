"""Turn tensors into records: value summaries, status and per-op references."""

from __future__ import annotations

import math
import weakref
from typing import Any

import torch

from ..records import SMALL_NUMEL, TensorRef, TensorStatus, ValueSummary
from .fast import make_record, replaced
from .quiet import quiet

__all__ = [
    "Pending",
    "Summaries",
    "dtype_name",
    "grad_fn_name",
    "grad_fn_of",
    "shape_of",
    "summarize",
    "tensor_ref",
    "tensor_status",
    "version_of",
]


def version_of(t: torch.Tensor) -> int:
    """Returns ``t._version``; 0 for an inference tensor, which has no version counter."""
    return 0 if t.is_inference() else t._version


def shape_of(t: torch.Tensor) -> tuple[int, ...]:
    """Returns ``t``'s shape; () for a tensor with no single shape (a nested tensor)."""
    if t.is_nested:
        return ()
    try:
        return tuple(map(int, t.shape))
    except (RuntimeError, TypeError):  # symbolic or otherwise unreadable sizes
        return ()


def summarize(t: torch.Tensor | None) -> ValueSummary | None:
    """Returns the value of ``t`` as numbers (exact when small), or None for None.

    The statistics are computed on ``t``'s device without a float64 copy of it; the few numbers
    are then read on the host. ``Summaries`` batches that read for many tensors.
    """
    if t is None:
        return None
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"expected a tensor, got {type(t).__name__}")
    summaries = Summaries()
    return summaries.get(summaries.add(t))


# Norms of tensors above this size are summed from float32 norms of rows this long, in float64:
# as exact as a float64 norm to ~1e-7, with no float64 copy (a float32 norm of 38 M numbers is
# off by ~0.3%).
_ROW = 4096
# Stats rows: norm, min, max, NaN count, infinity count, element count.
_STATS = 6


class _Later:
    """A summary whose numbers are still on the tensor's device (``Summaries.resolve``)."""

    __slots__ = ("dtype", "flag", "shape", "stats", "value", "values")

    def __init__(self, shape: tuple[int, ...], dtype: str) -> None:
        self.shape = shape
        self.dtype = dtype
        self.values: torch.Tensor | None = None  # a copy of a small tensor
        self.stats: torch.Tensor | None = None  # _STATS float64 numbers
        self.flag: torch.Tensor | None = None  # one bool: whether any element is NaN or Inf
        self.value: Any = None


#: What ``Summaries.add`` returns: a summary, one still on the device, or None for None.
Pending = ValueSummary | _Later | None


class Summaries:
    """Value summaries of many tensors, computed on their devices as they are added.

    ``add`` returns at once; a CPU tensor's summary is complete, an accelerator's stays on the
    device (no synchronisation per tensor) until ``resolve`` copies all of them to the host,
    one transfer per device. A tensor added twice at the same version between two ``fresh()``
    calls is read once.
    """

    def __init__(self) -> None:
        self._later: list[_Later] = []
        self._seen: dict[int, tuple[weakref.ref[torch.Tensor], int, Pending]] = {}
        # id of a block of memory's tensor (``_whole_block``) -> a summary of all its elements
        self._blocks: dict[int, tuple[weakref.ref[torch.Tensor], int, ValueSummary]] = {}

    def fresh(self) -> None:
        """Forgets which tensors were read (call when user code may have changed values)."""
        if self._seen:
            self._seen.clear()
            self._blocks.clear()

    def add(self, t: torch.Tensor | None) -> Pending:
        """Returns the summary of ``t`` now, or one ``get``/``resolve`` will complete."""
        if t is None:
            return None
        hit = self._seen.get(id(t))
        version = version_of(t)
        if hit is not None and hit[0]() is t and hit[1] == version:
            return hit[2]
        block = _whole_block(t) if t.dtype in _ROW_DTYPES and t.numel() > _ROW else None
        read = None if block is None else self._blocks.get(id(block))
        out: Pending
        if read is not None and read[0]() is block and read[1] == version:
            out = replaced(read[2], shape=shape_of(t))  # a transpose of a block read already
        else:
            out = self._summarize(t)
            if block is not None and type(out) is ValueSummary and _finite_stats(out):
                self._blocks[id(block)] = (weakref.ref(block), version, out)
        self._seen[id(t)] = (weakref.ref(t), version, out)
        return out

    def alias(self, t: torch.Tensor, s: Pending) -> None:
        """Makes ``add(t)`` return ``s`` (the summary of a tensor with ``t``'s values, such as
        the gradient that became ``t``) until the next ``fresh()``."""
        self._seen[id(t)] = (weakref.ref(t), version_of(t), s)

    def get(self, s: Pending) -> ValueSummary | None:
        """Returns the finished summary of what ``add`` returned."""
        if isinstance(s, _Later):
            if s.value is None:
                self.resolve()
            return s.value
        return s

    def nonfinite(self, t: torch.Tensor) -> bool | _Later:
        """Returns whether ``t`` holds a NaN or an infinity: at once for a CPU tensor, else a
        pending answer that ``flag`` gives after the batched copy (no wait per op)."""
        if _on_host(t) or not _checkable(t):
            return _has_nonfinite(t)
        later = _Later((), "bool")
        with _quiet():
            later.flag = ~torch.isfinite(t.detach()).all()
        self._later.append(later)
        return later

    def flag(self, f: bool | _Later) -> bool:
        """Returns the answer of ``nonfinite``."""
        if isinstance(f, _Later):
            if f.value is None:
                self.resolve()
            return bool(f.value)
        return f

    def resolve(self) -> None:
        """Finishes every pending summary: one host copy per device (and dtype of small ones)."""
        later, self._later = self._later, []
        if not later:
            return
        with torch.no_grad(), quiet():
            groups: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = {}
            for s in later:
                for part in (s.values, s.stats, s.flag):
                    if part is not None:
                        groups.setdefault((part.device, part.dtype), []).append(part)
            host: dict[int, list[Any]] = {}
            for parts in groups.values():
                flat = torch.cat([p.reshape(-1) for p in parts]).cpu().tolist()
                at = 0
                for p in parts:
                    n = p.numel()
                    host[id(p)] = flat[at : at + n]
                    at += n
        for s in later:
            if s.values is not None:
                s.value = ValueSummary(
                    shape=s.shape, dtype=s.dtype, values=_nest(host[id(s.values)], s.shape)
                )
            elif s.stats is not None:
                s.value = _from_stats(s.shape, s.dtype, host[id(s.stats)])
            elif s.flag is not None:
                s.value = bool(host[id(s.flag)][0])
            s.values = s.stats = s.flag = None  # the device copies are no longer needed

    def _summarize(self, t: torch.Tensor) -> Pending:
        if (
            type(t) in _PLAIN_TYPES
            and t.dtype in _FAST_DTYPES
            and t.layout == torch.strided
            and not t.is_nested
            and _on_host(t)
            and not t.is_neg()
            and not _wrapped(t)
        ):
            return _summarize_host(t)
        shape = shape_of(t)
        dtype = str(t.dtype).removeprefix("torch.")
        if t.layout != torch.strided or t.is_meta or t.is_nested or not _is_plain(t):
            return ValueSummary(shape=shape, dtype=dtype)
        on_host = _on_host(t)
        with torch.no_grad(), quiet():
            d = t.detach()
            if d.numel() <= SMALL_NUMEL and not d.is_complex():
                if on_host:
                    return ValueSummary(shape=shape, dtype=dtype, values=d.resolve_neg().tolist())
                later = _Later(shape, dtype)
                later.values = d.resolve_neg().clone()  # a write after this must not show
                self._later.append(later)
                return later
            if d.is_complex():
                d = d.abs()
            elif not d.is_floating_point():
                d = d.to(torch.float64)  # integers and booleans: exact in float64
            if on_host:
                fast = _fast_stats(d).tolist()
                if all(math.isfinite(v) for v in fast):  # no NaN or infinity anywhere
                    return _from_stats(shape, dtype, [*fast, 0.0, 0.0, float(d.numel())])
                exact = _exact_stats(d).tolist()
                if math.isinf(exact[0]):  # finite numbers whose float32 rows overflowed
                    exact = _exact_stats(d, wide=True).tolist()
                return _from_stats(shape, dtype, exact)
            later = _Later(shape, dtype)
            # No branch on the values, so nothing waits for the device.
            later.stats = _exact_stats(d, wide=True)
            self._later.append(later)
            return later


_PLAIN_TYPES = (torch.Tensor, torch.nn.Parameter)
_STRIDED = torch.strided
_FAST_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
# Dtypes whose norm past _ROW elements is summed in float32 rows in memory order (``_norm64``).
_ROW_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _summarize_host(t: torch.Tensor) -> ValueSummary:
    """Returns the summary of a plain floating CPU tensor: the common case, kept short (a few
    reads, no copy, no mask) because a trace makes one per gradient."""
    shape = tuple(t.shape)
    dtype = dtype_name(t.dtype)
    with _quiet():
        d = t.detach()
        if d.numel() <= SMALL_NUMEL:
            return make_record(ValueSummary, shape=shape, dtype=dtype, values=d.tolist())
        # A transposed gradient: min and max read in memory order (the same numbers, faster).
        lo, hi = torch.aminmax(d if d.is_contiguous() else _dense(d))
        norm, low, high = _norm64(d).item(), lo.item(), hi.item()
        if _isfinite(norm) and _isfinite(low) and _isfinite(high):
            return make_record(ValueSummary, shape=shape, dtype=dtype, norm=norm, min=low, max=high)
        exact = _exact_stats(d).tolist()
        if math.isinf(exact[0]):  # finite numbers whose float32 rows overflowed
            exact = _exact_stats(d, wide=True).tolist()
        return _from_stats(shape, dtype, exact)


_DTYPE_NAMES: dict[torch.dtype, str] = {}
_isfinite = math.isfinite


def _quiet() -> Any:
    """Returns ``quiet()``, or its cheaper half when no dispatch mode is active."""
    if torch._C._len_torch_dispatch_stack():
        return quiet()
    return torch._C.DisableTorchFunction()


def _wrapped(t: torch.Tensor) -> bool:
    return bool(
        torch._C._functorch.is_functorch_wrapped_tensor(t)
        or torch._C._functorch.is_legacy_batchedtensor(t)
    )


def _on_host(t: torch.Tensor) -> bool:
    """Returns whether ``t``'s values are in host memory (reading them waits for nothing)."""
    return bool(t.is_cpu)


def _norm64(d: torch.Tensor, wide: bool = False) -> torch.Tensor:
    """Returns the L2 norm of floating tensor ``d`` as a float64 0-d tensor on its device.

    Rows are summed in float32 unless ``wide``: that overflows only past ~1e17 per element,
    which the caller sees (an infinite norm of finite numbers) and redoes ``wide``.
    """
    n = d.numel()
    f64 = torch.float64
    if d.dtype == f64 or n <= _ROW:
        return torch.linalg.vector_norm(d, dtype=f64)
    row_dtype = f64 if wide else torch.float32
    if not d.is_contiguous():
        d = _dense(d)
    if n % _ROW == 0 and d.is_contiguous():
        rows = torch.linalg.vector_norm(d.view(-1, _ROW), dim=1, dtype=row_dtype)
        return torch.linalg.vector_norm(rows, dtype=f64)
    flat = d.reshape(-1)  # a copy only if d is not contiguous
    head = n - n % _ROW
    rows = torch.linalg.vector_norm(flat[:head].view(-1, _ROW), dim=1, dtype=row_dtype)
    tail = torch.linalg.vector_norm(flat[head:], dtype=f64)
    return torch.hypot(torch.linalg.vector_norm(rows, dtype=f64), tail)


def _finite_stats(s: ValueSummary) -> bool:
    """Returns whether ``s`` holds statistics (not values) of numbers all finite."""
    return s.norm is not None and not (s.nan or s.inf)


def _whole_block(t: torch.Tensor) -> torch.Tensor | None:
    """Returns the tensor whose elements ``t`` holds all of, each once, in some order: ``t``
    itself when it is contiguous and not a view, its base when ``t`` is a permuted view of all
    of it (a transpose), else None. Two tensors of one block and one version have the same
    norm, min and max: min and max do not depend on the order, and a norm past ``_ROW``
    elements is summed in memory order (``_dense``)."""
    if type(t) not in _PLAIN_TYPES or t.is_neg():
        return None
    if not t._is_view():
        return t if t.is_contiguous() else None
    base = t._base
    if (
        base is None
        or type(base) not in _PLAIN_TYPES
        or base.dtype != t.dtype
        or base.is_neg()
        or base.numel() != t.numel()
        or base.storage_offset() != t.storage_offset()
        or not base.is_contiguous()
        or not _dense(t).is_contiguous()
    ):
        return None
    return base


def _dense(d: torch.Tensor) -> torch.Tensor:
    """Returns ``d`` with its dimensions reordered so that it is contiguous when its memory is
    one dense block (a transposed gradient): a norm does not depend on the order, and a
    contiguous view needs no copy."""
    strides = d.stride()
    if len(strides) == 2:  # the common case (a transposed weight's gradient), without a sort
        if strides[0] >= strides[1]:
            return d  # already in that order: the permutation would be the identity
        p = d.t()
    else:
        order = sorted(range(d.dim()), key=lambda i: -strides[i])
        p = d.permute(order)
    return p if p.is_contiguous() else d


def _fast_stats(d: torch.Tensor) -> torch.Tensor:
    """Returns norm, min, max of ``d`` (float64, on its device): all finite exactly when no
    element is NaN or infinite (or, rarely, when the norm overflows)."""
    lo, hi = torch.aminmax(d)
    return torch.stack([_norm64(d), lo.double(), hi.double()])


def _exact_stats(d: torch.Tensor, wide: bool = False) -> torch.Tensor:
    """Returns norm, min, max over the finite elements, the NaN and infinity counts and the
    element count, as float64 on ``d``'s device (no host read)."""
    finite = torch.isfinite(d)
    nan = torch.isnan(d).sum()
    good = finite.sum()
    zero = torch.zeros((), dtype=d.dtype, device=d.device)
    inf = torch.full((), math.inf, dtype=d.dtype, device=d.device)
    norm = _norm64(torch.where(finite, d, zero), wide)
    lo = torch.where(finite, d, inf).amin()
    hi = torch.where(finite, d, -inf).amax()
    n = d.numel()
    return torch.stack(
        [norm, lo.double(), hi.double(), nan.double(), (n - good - nan).double(), good.double()]
    )


def _from_stats(shape: tuple[int, ...], dtype: str, v: list[float]) -> ValueSummary:
    norm, lo, hi, nan, inf, good = v
    if good == 0:
        return ValueSummary(shape=shape, dtype=dtype, nan=int(nan), inf=int(inf))
    return ValueSummary(
        shape=shape, dtype=dtype, norm=norm, min=lo, max=hi, nan=int(nan), inf=int(inf)
    )


def _nest(flat: list[Any], shape: tuple[int, ...]) -> Any:
    """Returns the flat list ``flat`` nested as ``tolist()`` gives a tensor of ``shape``."""
    if not shape:
        return flat[0]
    if len(shape) == 1:
        return list(flat)
    step = math.prod(shape[1:])
    return [_nest(flat[i * step : (i + 1) * step], shape[1:]) for i in range(shape[0])]


def _is_plain(t: torch.Tensor) -> bool:
    """Returns whether ``t``'s values can be read: not a subclass, and not a tensor wrapped by a
    ``torch.func`` transform (``vmap``, ``grad``), whose values exist only per sample."""
    plain = type(t) in (torch.Tensor, torch.nn.Parameter) or isinstance(t, torch.nn.Parameter)
    return plain and not (
        torch._C._functorch.is_functorch_wrapped_tensor(t)
        or torch._C._functorch.is_legacy_batchedtensor(t)
    )


def grad_fn_of(t: torch.Tensor) -> Any:
    """Returns ``t.grad_fn``, or None where reading it raises: a view of a multi-output op
    whose base was later written in place refuses to give one (PyTorch's own error comes when
    the user's code reads it, not when gradlens does)."""
    try:
        if type(t) is torch.Tensor or isinstance(t, torch.nn.Parameter):
            return t.grad_fn
        with torch._C.DisableTorchFunctionSubclass():  # a subclass must not see the read
            return t.grad_fn
    except RuntimeError:
        return None


def grad_fn_name(t: torch.Tensor) -> str | None:
    """Returns the name of ``t.grad_fn`` ("MulBackward0"), or None for a leaf."""
    fn = grad_fn_of(t)
    return None if fn is None else fn.name()


def tensor_status(
    t: torch.Tensor, name: str, *, with_value: bool = True, summaries: Summaries | None = None
) -> TensorStatus:
    """Returns the autograd status of ``t`` under ``name`` (values read through ``summaries``
    when given, so a tensor it already read is not read again)."""
    values = summaries or Summaries()
    fn = grad_fn_of(t)
    leaf = fn is None  # what t.is_leaf reads (it raises where reading grad_fn does)
    # Reading .grad of a non-leaf warns in PyTorch; it is always None unless retain_grad().
    grad = t.grad if (leaf or t.retains_grad) else None
    return make_record(
        TensorStatus,
        name=name,
        is_leaf=leaf,
        requires_grad=t.requires_grad,
        grad_fn=None if fn is None else fn.name(),
        retains_grad=bool(t.retains_grad) if not leaf else False,
        grad=values.get(values.add(grad)),
        version=version_of(t),
        shape=shape_of(t),
        dtype=dtype_name(t.dtype),
        device=str(t.device),
        value=values.get(values.add(t)) if with_value else None,
    )


def tensor_ref(
    t: torch.Tensor, name: str, *, check_finite: bool = False, nonfinite: bool | None = None
) -> TensorRef:
    """Returns ``t`` as an op saw it; with ``check_finite``, also whether it holds a NaN or an
    infinity (one read of its values on the host: a trace's cost, never a watch's), unless
    ``nonfinite`` says it already."""
    if nonfinite is None:
        nonfinite = check_finite and _has_nonfinite(t)
    fn = grad_fn_of(t)
    return make_record(
        TensorRef,
        name=name,
        shape=shape_of(t),
        dtype=dtype_name(t.dtype),
        requires_grad=t.requires_grad,
        is_leaf=fn is None,  # what t.is_leaf reads (it raises where reading grad_fn does)
        version=version_of(t),
        grad_fn=None if fn is None else fn.name(),
        nonfinite=nonfinite,
    )


def dtype_name(dtype: torch.dtype) -> str:
    """Returns ``"float32"`` for ``torch.float32``."""
    name = _DTYPE_NAMES.get(dtype)
    if name is None:
        name = _DTYPE_NAMES[dtype] = str(dtype).removeprefix("torch.")
    return name


def _checkable(t: torch.Tensor) -> bool:
    """Returns whether ``t`` can hold a NaN or an infinity whose check reads plain memory."""
    if not (t.is_floating_point() or t.is_complex()) or t.layout != torch.strided:
        return False
    return not (t.device.type == "meta" or t.is_nested or not _is_plain(t) or t.numel() == 0)


def _has_nonfinite(t: torch.Tensor) -> bool:
    if (
        type(t) in _PLAIN_TYPES
        and t.dtype in _FAST_DTYPES
        and t.layout == _STRIDED
        and t.is_cpu
        and not t.is_nested
        and not _wrapped(t)
    ):  # the common case, _checkable's answer in fewer reads
        if not t.numel():
            return False
        with _quiet():
            d = t.detach()
            # A NaN or an infinity always makes the sum non-finite: a finite sum proves there
            # is none in one pass with no mask allocated; only a non-finite sum needs the test.
            if _isfinite(d.sum().item()):
                return False
            return not bool(torch.isfinite(d).all())
    if not _checkable(t):
        return False
    with _quiet():
        d = t.detach()
        # A NaN or an infinity always makes the sum non-finite: a finite sum proves there is
        # none in one pass with no mask allocated; only a non-finite sum needs the exact test.
        if d.device.type == "cpu" and not d.is_complex() and math.isfinite(d.sum().item()):
            return False
        return not bool(torch.isfinite(d).all())
