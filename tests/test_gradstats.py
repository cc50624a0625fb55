"""The watcher's on-device gradient statistics (``capture/gradstats.py``) against float64
references computed here: the sum of squares of a large float32 gradient (a chunked BLAS dot on
the CPU), sums, min/max, and the paths for half precision, non-contiguous, empty, complex and
sparse gradients."""

from __future__ import annotations

import pytest
import torch

from gradlens.capture.gradstats import Scratch, detail_stats, light_stats, sum_of_squares


def _reference(t: torch.Tensor) -> list[float]:
    d = t.detach()
    if d.numel() == 0:
        return [0.0, 0.0, 0.0, 0.0]
    if d.is_complex():  # as torch.std treats complex numbers: moduli
        z = d.to(torch.complex128)
        top = z.abs().max().item()
        return [(z.abs() ** 2).sum().item(), z.sum().abs().item(), -top, top]
    d = d.double()
    return [(d * d).sum().item(), d.sum().item(), d.min().item(), d.max().item()]


def test_the_sum_of_squares_of_a_large_gradient_is_exact_to_float32_rounding() -> None:
    g = torch.randn(4096, 4096, generator=torch.Generator().manual_seed(0))
    (got,) = sum_of_squares([g])
    want = (g.double() ** 2).sum().item()
    assert abs(got.item() - want) / want < 2e-6  # one float32 loop over 16 M elements: ~1e-3


@pytest.mark.parametrize(
    "make",
    [
        lambda: torch.randn(300, 700),  # several dot chunks
        lambda: torch.randn(5),
        lambda: torch.randn(64, 48).t(),  # not contiguous: _foreach_norm
        lambda: torch.randn(100, 10).half(),  # half: reduced in float32
        lambda: torch.randn(100, dtype=torch.float64),
        lambda: torch.randn(6, dtype=torch.complex64),
        lambda: torch.zeros(0, 3),
    ],
    ids=["chunks", "small", "transposed", "half", "float64", "complex", "empty"],
)
def test_light_statistics_match_float64(make: object) -> None:
    torch.manual_seed(1)
    grads = [make(), torch.randn(1000) * 3]  # type: ignore[operator]
    got = light_stats(grads)
    assert got.shape == (4, 2) and got.dtype == torch.float32
    for j, g in enumerate(grads):
        want = _reference(g)
        assert got[:, j].tolist() == pytest.approx(
            want, rel=2e-3 if g.dtype == torch.half else 1e-5, abs=1e-4
        )


def test_non_finite_values_are_kept() -> None:
    g = torch.tensor([1.0, float("nan"), 2.0])
    h = torch.tensor([1.0, float("inf"), -3.0])
    got = light_stats([g, h])
    assert torch.isnan(got[0, 0]) and torch.isnan(got[2, 0]) and torch.isnan(got[3, 0])
    assert got[0, 1].item() == float("inf") and got[3, 1].item() == float("inf")
    assert got[2, 1].item() == -3.0


def test_a_sparse_gradient_is_measured_by_its_values() -> None:
    dense = torch.zeros(10, 3)
    dense[2] = torch.tensor([1.0, -2.0, 3.0])
    got = light_stats([dense.to_sparse()])
    assert got[:, 0].tolist() == pytest.approx([14.0, 2.0, -2.0, 3.0])


def _planted(n: int, dtype: torch.dtype) -> torch.Tensor:
    """Returns ``n`` values with zeros (and a -0.0), two nans and two infinities among them."""
    g = torch.randn(n, generator=torch.Generator().manual_seed(1)).to(dtype)
    g[::3] = 0
    g[4] = -0.0
    g[5], g[7], g[8], g[10] = float("nan"), float("inf"), -float("inf"), float("nan")
    return g


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_detail_counts_zeros_non_finite_and_nan_exactly(dtype: torch.dtype) -> None:
    grads = [_planted(1000, dtype), torch.zeros(3, dtype=dtype), torch.randn(4, 5).to(dtype).t()]
    weights = [torch.ones(1000), torch.ones(3), torch.ones(4, 5)]
    got = detail_stats(grads, weights)
    assert got.shape == (4, 3)
    for j, g in enumerate(grads):
        d = g.double()
        want_nonzero = torch.count_nonzero(d).item()
        want_nonfinite = (~torch.isfinite(d)).sum().item()
        want_nan = torch.isnan(d).sum().item()
        assert got[:3, j].tolist() == [want_nonzero, want_nonfinite, want_nan]
    assert got[:3, 0].tolist() == [665.0, 4.0, 2.0]  # 334 zeros planted, and a -0.0
    assert got[3].tolist() == pytest.approx([1000.0, 3.0, 20.0])


def test_detail_counts_stay_exact_past_float32s_integer_range() -> None:
    n = 2**24 + 7  # a float32 sum of ones is exact only up to 2**24
    g = torch.full((n,), float("nan"), dtype=torch.float16)
    g[:5] = 1.0
    got = detail_stats([g], [torch.zeros(1)])
    assert got[:3, 0].tolist() == [float(n), float(n - 5), float(n - 5)]


def test_detail_counts_in_chunks_across_the_work_buffer_and_reuse_it() -> None:
    # Larger than one work buffer (2**20 elements): counted chunk by chunk, values planted on
    # both sides of each chunk boundary, in a non-contiguous view and in a complex gradient.
    n = 3 * 2**20 + 5
    g = _planted(n, torch.float32)
    for at in (2**20 - 1, 2**20, 2 * 2**20, n - 1):
        g[at] = float("nan") if at % 2 else float("inf")
    big = torch.zeros(2, n)
    big[0] = g
    grads = [big[0], big.t()[:, 0], torch.complex(g[:1000], g[1000:2000])]
    weights = [torch.ones(n), torch.ones(n), torch.ones(1000)]
    scratch = Scratch()
    got = detail_stats(grads, weights, scratch)
    for j, x in enumerate(grads):
        d = x if x.is_complex() else x.double()  # complex: per number, either part
        want = [torch.count_nonzero(d), (~torch.isfinite(d)).sum(), torch.isnan(d).sum()]
        assert got[:3, j].tolist() == [float(w) for w in want]
    buffer = scratch.buffer(g[:10])
    again = detail_stats(grads, weights, scratch)
    assert torch.equal(again, got)
    assert scratch.buffer(g[:10]).data_ptr() == buffer.data_ptr()  # kept, not made again
    # One chunk's worth is kept (4 MiB), not a buffer as large as the largest gradient.
    assert scratch.buffer(torch.empty(2**20)).data_ptr() == buffer.data_ptr()
    assert scratch.buffer(torch.empty(2**20 + 1)).data_ptr() != buffer.data_ptr()


def test_weight_copies_are_kept_for_the_next_detail_step_and_never_shared() -> None:
    scratch = Scratch()
    a = [torch.randn(3, 4), torch.randn(4)]
    b = [torch.randn(3, 4), torch.randn(4)]  # same shapes: in flight together, two copies
    ca, cb = scratch.copies(a), scratch.copies(b)
    assert all(torch.equal(x, y) for x, y in zip(ca, a, strict=True))
    assert all(torch.equal(x, y) for x, y in zip(cb, b, strict=True))
    assert {t.data_ptr() for t in ca}.isdisjoint(t.data_ptr() for t in cb)
    scratch.release(ca)
    scratch.release(cb)  # one set of this shape is kept; the other let go
    again = scratch.copies(b)
    assert [t.data_ptr() for t in again] == [t.data_ptr() for t in ca]  # memory reused
    assert all(torch.equal(x, y) for x, y in zip(again, b, strict=True))  # values fresh
    other = scratch.copies(a)  # none kept now: a new copy
    assert {t.data_ptr() for t in other}.isdisjoint(t.data_ptr() for t in again)
    big = [torch.zeros(2**24 + 1)]  # 64 MiB + 4 bytes: over the limit, never kept
    first = scratch.copies(big)
    scratch.release(first)
    assert scratch.copies(big)[0].data_ptr() != first[0].data_ptr()  # (first still alive)


def test_a_complex_gradients_record_is_that_of_its_moduli() -> None:
    # mean |E g|, std as torch.std (sqrt(E|g - E g|**2)), max |g| the largest modulus, and
    # the counts per complex number: a statistic of the real and imaginary parts as separate
    # numbers gave a zero fraction of -1.0 and a max below the largest modulus.
    from gradlens.capture.pending import _light

    g = torch.complex(torch.randn(40), torch.randn(40))
    g[3] = 0
    g[7] = complex(0.0, 2.5)  # a zero real part: the number is not zero
    light = light_stats([g])[:, 0].tolist()
    norm, mean, std, gmax, nonfinite = _light(*light, g.numel())
    z = g.to(torch.complex128)
    assert norm == pytest.approx(torch.linalg.vector_norm(z).item(), rel=1e-6)
    assert mean == pytest.approx(z.mean().abs().item(), rel=1e-5)
    assert std == pytest.approx(z.std(unbiased=False).item(), rel=1e-5)
    assert gmax == pytest.approx(z.abs().max().item(), rel=1e-6) and not nonfinite
    counts = detail_stats([g], [torch.ones(1)])[:3, 0].tolist()
    assert counts == [39.0, 0.0, 0.0]
    g[5] = complex(float("inf"), float("nan"))
    g[9] = complex(float("inf"), 0.0)
    assert detail_stats([g], [torch.ones(1)])[:3, 0].tolist() == [39.0, 2.0, 1.0]
    assert light_stats([g])[3, 0].item() == float("inf")
