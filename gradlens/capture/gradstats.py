"""Gradient statistics computed on the tensors' own device, with no host synchronisation.

Every function returns device tensors; nothing here calls ``.item()``, ``float()`` or
``.cpu()``. The watcher stacks the results per step and copies them to the host in batches.

Each statistic is one read of the tensor, chosen for speed on CPU and GPU alike
(benchmarks/watch_overhead.py). On an accelerator the sums of squares of a whole list are one
fused ``_foreach_norm`` launch. On the CPU a contiguous float32/float64 tensor's sum of squares is
a BLAS ``dot`` of itself, in chunks of 2**18 elements (2-4x more accurate than ``_foreach_norm``,
which accumulates a whole tensor in one float32 loop, and faster), and the three reads of one
gradient (sum of squares, sum, ``aminmax``) run back to back so the second and third find it in
the cache. The detail set adds three counts (zeros, non-finite, NaN: comparisons written into a
work buffer the watch keeps, ``Scratch``) and, for the update size, a copy of the weights (kept
between detail steps on the CPU). A complex gradient is measured by its moduli.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = [
    "DETAIL",
    "LIGHT",
    "HistogramSpec",
    "Scratch",
    "clone_weights",
    "detail_stats",
    "histograms",
    "light_stats",
    "sum_of_squares",
    "update_sumsq",
]

#: Rows of ``light_stats``: per gradient.
LIGHT = ("sumsq", "sum", "min", "max")
#: Rows of ``detail_stats``: per gradient (counts as floats) and the weight's sum of squares.
DETAIL = ("nonzero", "nonfinite", "nan", "weight_sumsq")

_HALF = (torch.float16, torch.bfloat16)
_EXACT_FLOAT32_COUNT = 2**24  # counts above this are not exact in float32


def _real(t: torch.Tensor) -> torch.Tensor:
    """Returns ``t`` detached, as a real tensor (complex numbers as pairs of reals).

    A sparse COO gradient (``nn.Embedding(sparse=True)``) becomes its stored values: the sum,
    sum of squares and max |g| are the same, and the mean still divides by the full size.
    """
    t = _values(t)
    return torch.view_as_real(t) if t.is_complex() else t


def _values(t: torch.Tensor) -> torch.Tensor:
    """Returns ``t`` detached; a sparse COO tensor as its stored values."""
    t = t.detach()
    return t.coalesce().values() if t.layout == torch.sparse_coo else t


def _complex_light(g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns a complex gradient's sum, min and max rows, as ``torch.std`` treats complex
    numbers: |sum| (so mean = |E g| and std**2 = E|g|**2 - |E g|**2, never negative), and
    -max|g|, max|g| (so max |g| is the modulus, nan where any part is nan)."""
    top = g.abs().amax().float()  # |inf + nan i| is inf: non-finite either way
    total = g.sum().abs().float()
    return total, -top, top


_CHUNK = 2**18  # elements per dot: float32 rounding stays near one ulp of the sum
_DOT = (torch.float32, torch.float64)


def _by_dot(t: torch.Tensor) -> bool:
    """Returns whether ``t``'s sum of squares is taken by ``_dot_sumsq`` (CPU, contiguous)."""
    return t.device.type == "cpu" and t.dtype in _DOT and t.is_contiguous()


def _dot_sumsq(t: torch.Tensor) -> torch.Tensor:
    """Returns the float32 sum of squares of a contiguous CPU tensor, by chunked ``dot``."""
    flat = t.view(-1)
    if flat.numel() <= _CHUNK:
        out = torch.dot(flat, flat)
    else:
        out = torch.stack([torch.dot(c, c) for c in flat.split(_CHUNK)]).sum()
    return out if out.dtype == torch.float32 else out.float()


def sum_of_squares(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Returns each tensor's sum of squares as a float32 0-d tensor on its device.

    A contiguous float CPU tensor: chunked BLAS ``dot``. Any other: one ``_foreach_norm`` per
    dtype family for the whole list (a single fused kernel on CUDA). Half-precision tensors are
    reduced in float32, so their norms cannot overflow.
    """
    real = [_real(t) for t in tensors]
    out: list[torch.Tensor | None] = [None] * len(real)
    families: dict[bool, list[int]] = {}
    for i, t in enumerate(real):
        if _by_dot(t):
            out[i] = _dot_sumsq(t) if t.numel() else t.new_zeros((), dtype=torch.float32)
        elif t.is_floating_point():
            families.setdefault(t.dtype in _HALF, []).append(i)
        else:  # an integer tensor (a weight, never a gradient)
            out[i] = t.float().square().sum()
    for half, members in families.items():
        group = [real[i] for i in members]
        norms = torch._foreach_norm(group, 2, dtype=torch.float32 if half else None)
        for i, square in zip(members, torch._foreach_mul(norms, norms), strict=True):
            out[i] = square if square.dtype == torch.float32 else square.float()
    return out  # type: ignore[return-value]


def light_stats(grads: Sequence[torch.Tensor]) -> torch.Tensor:
    """Returns a float32 ``(4, len(grads))`` tensor: sum of squares, sum, min and max of each.

    All on the gradients' device (they must share one). Empty gradients give zeros. ``min``
    and ``max`` are nan when an element is nan, so non-finite values are never lost.
    """
    if not grads:
        return torch.zeros(len(LIGHT), 0)
    values = [_values(g) for g in grads]
    real = [torch.view_as_real(v) if v.is_complex() else v for v in values]
    squares: list[torch.Tensor | None] = [None] * len(real)
    sums, lows, highs = [], [], []
    for i, g in enumerate(real):
        if g.numel() and values[i].is_complex():  # rare: a modulus per element, allocated
            total, lo, hi = _complex_light(values[i])
            sums.append(total)
            lows.append(lo)
            highs.append(hi)
            continue
        if g.numel() == 0:
            zero = g.new_zeros((), dtype=torch.float32)
            squares[i] = zero
            sums.append(zero)
            lows.append(zero)
            highs.append(zero)
            continue
        if _by_dot(g):  # the three reads back to back: the 2nd and 3rd hit the cache
            squares[i] = _dot_sumsq(g)
        sums.append(g.sum(dtype=torch.float32))
        lo, hi = torch.aminmax(g)
        lows.append(lo if lo.dtype == torch.float32 else lo.float())
        highs.append(hi if hi.dtype == torch.float32 else hi.float())
    rest = [i for i, s in enumerate(squares) if s is None]
    for i, s in zip(rest, sum_of_squares([real[i] for i in rest]), strict=True):
        squares[i] = s
    done = [s for s in squares if s is not None]
    return torch.stack([*done, *sums, *lows, *highs]).view(len(LIGHT), len(real))


def detail_stats(
    grads: Sequence[torch.Tensor],
    weights: Sequence[torch.Tensor],
    scratch: Scratch | None = None,
) -> torch.Tensor:
    """Returns a float64 ``(4, len(grads))`` tensor: nonzero, non-finite and NaN counts of each
    gradient, and its weight's sum of squares.

    Each count is a comparison written into a float32 work buffer and summed (0/1 values:
    exact in float32 up to 2**24, and the buffer holds at most ``_SCRATCH`` elements, so larger
    gradients are counted in chunks summed in float64). ``scratch`` keeps the CPU buffer from
    one call to the next: a fresh full-size temporary per count costs the CPU more in fresh
    pages than the count itself (20 ms -> 5 ms on the MLP 4x1024's gradients).
    """
    if not grads:
        return torch.zeros(len(DETAIL), 0)
    work = scratch if scratch is not None else Scratch()
    real = [_values(g) for g in grads]
    rows: tuple[list[torch.Tensor], ...] = ([], [], [])
    for g in real:
        if g.is_complex():  # rare: counted per complex number (either part zero, inf, nan)
            per = (torch.count_nonzero(g), (~torch.isfinite(g)).sum(), torch.isnan(g).sum())
            for row, count in zip(rows, per, strict=True):
                row.append(count.double())
            continue
        chunks = (g,) if g.numel() <= _SCRATCH else g.reshape(-1).split(_SCRATCH)
        parts: tuple[list[torch.Tensor], ...] = ([], [], [])
        for c in chunks:
            buf = work.buffer(c)
            torch.ne(c, 0, out=buf)  # nonzero (nan != 0 too)
            parts[0].append(buf.sum(dtype=torch.float32))
            torch.sub(c, c, out=buf)  # 0, or nan where c is inf or nan
            torch.ne(buf, buf, out=buf)
            parts[1].append(buf.sum(dtype=torch.float32))
            torch.ne(c, c, out=buf)  # nan only: inf == inf
            parts[2].append(buf.sum(dtype=torch.float32))
        for row, sums in zip(rows, parts, strict=True):
            row.append(sums[0].double() if len(sums) == 1 else torch.stack(sums).double().sum())
    counts = torch.stack([*rows[0], *rows[1], *rows[2]]).view(3, len(real))
    squares = torch.stack(sum_of_squares(weights)).view(1, -1)
    return torch.cat([counts, squares.double()])


_SCRATCH = 2**20  # elements of a work buffer (4 MiB of float32)


class Scratch:
    """Work memory a watch keeps from one detail step to the next (and drops when it ends).

    - ``buffer``: for ``detail_stats``, one float32 buffer of up to ``_SCRATCH`` elements per
      CPU device. On other devices each call gets a fresh one: their caching allocators reuse
      memory already.
    - ``copies`` / ``release``: the weight copies taken before a detail step's optimizer step
      (for the update size). On the CPU, copies of up to ``_KEEP_COPIES`` bytes in all are
      kept for the next detail step: a fresh 16 MiB copy costs the MLP 4x1024 ~4,000 new pages,
      14 ms, against 4 ms for the copy and the update into kept memory. Larger models pay
      the fresh pages (a small part of their step) rather than hold a second copy of weights.
    """

    def __init__(self) -> None:
        self._buffers: dict[torch.device, torch.Tensor] = {}
        self._kept: dict[tuple[Any, ...], list[torch.Tensor]] = {}
        self._kept_bytes = 0

    def buffer(self, like: torch.Tensor) -> torch.Tensor:
        """Returns a float32 tensor shaped as ``like`` (at most ``_SCRATCH`` elements), on its
        device, whose contents are to be overwritten."""
        if like.device.type != "cpu":
            return torch.empty(like.shape, dtype=torch.float32, device=like.device)
        kept = self._buffers.get(like.device)
        n = like.numel()
        if kept is None or kept.numel() < n:
            with torch.inference_mode(False):  # kept: written in and out of that mode alike
                kept = torch.empty(max(n, 1), dtype=torch.float32)
            self._buffers[like.device] = kept
        return kept[:n].view(like.shape)

    def copies(self, weights: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Returns detached copies of ``weights``, in memory kept from an earlier ``release``
        of copies of the same shapes when there is one (then no longer kept: in use)."""
        key = _signature(weights)
        kept = self._kept.pop(key, None)
        if kept is None:
            with torch.inference_mode(False):  # a step under inference mode: normal tensors
                return clone_weights(weights)
        self._kept_bytes -= _nbytes(kept)
        with torch.no_grad():
            torch._foreach_copy_(kept, [w.detach() for w in weights])
        return kept

    def release(self, copies: list[torch.Tensor]) -> None:
        """Keeps ``copies`` (their values are no longer needed) for the next ``copies`` of the
        same shapes, if they are on the CPU and within ``_KEEP_COPIES`` bytes in all."""
        if not copies or any(c.device.type != "cpu" or c.is_inference() for c in copies):
            return
        key, size = _signature(copies), _nbytes(copies)
        if key in self._kept or self._kept_bytes + size > _KEEP_COPIES:
            return
        self._kept[key] = copies
        self._kept_bytes += size


_KEEP_COPIES = 64 * 2**20  # bytes of weight copies a watch keeps between detail steps


def _signature(ts: Sequence[torch.Tensor]) -> tuple[Any, ...]:
    return tuple((t.shape, t.dtype, t.device, t.stride()) for t in ts)


def _nbytes(ts: Sequence[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in ts)


def clone_weights(weights: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Returns detached copies of ``weights`` (the state before an optimizer step)."""
    return [w.detach().clone() for w in weights]


def update_sumsq(before: list[torch.Tensor], after: Sequence[torch.Tensor]) -> torch.Tensor:
    """Returns a float32 ``(len(before),)`` tensor of ``sum((after - before)**2)``.

    Overwrites ``before`` (the copy is not needed afterwards).
    """
    if not before:
        return torch.zeros(0)
    torch._foreach_sub_(before, [w.detach() for w in after])
    return torch.stack(sum_of_squares(before))


# -- gradient histograms, for the sinks (gradlens.sinks) ----------------------------------------
@dataclass
class HistogramSpec:
    """What the sinks asked for: ``bins`` equal bins over each parameter's fixed range
    ``[lo, hi)`` (``ranges``, by name; ``default`` for a name not there, or None: no histogram
    until its range is known), on recorded steps 1, 1 + ``every``, 1 + 2 ``every``, ..."""

    bins: int
    every: int = 100
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    default: tuple[float, float] | None = None


def histograms(
    named: Sequence[tuple[str, torch.Tensor | None]], spec: HistogramSpec
) -> list[tuple[str, float, float, torch.Tensor]]:
    """Returns ``(name, lo, hi, counts)`` per gradient with a known range: ``counts`` is a
    ``(bins + 2,)`` device tensor from one ``torch.histc`` over the gradient clamped into
    ``[lo - w, hi + w]`` (``w`` the bin width): the first and last bins count what lies below
    ``lo`` and at or above ``hi``, infinities included; NaN is in no bin (counted elsewhere)."""
    out: list[tuple[str, float, float, torch.Tensor]] = []
    for name, g in named:
        bounds = spec.ranges.get(name, spec.default)
        if g is None or bounds is None or g.layout != torch.strided:
            continue
        lo, hi = bounds
        width = (hi - lo) / spec.bins
        real = _real(g)
        if real.dtype != torch.float64:
            big = real.numel() > _EXACT_FLOAT32_COUNT
            real = real.to(torch.float64 if big else torch.float32)
        clamped = real.clamp(lo - width / 2, hi + width / 2)  # nan stays nan: histc skips it
        out.append((name, lo, hi, torch.histc(clamped, spec.bins + 2, lo - width, hi + width)))
    return out
