"""Value summaries: the same numbers as a float64 reading of the whole tensor, read on the
device with no float64 copy, batched to the host, and never stale."""

from __future__ import annotations

import math
import os
from typing import Any

import pytest
import torch

import gradlens
import gradlens.capture.summary as summary
from gradlens.capture.source import _short_from
from gradlens.capture.summary import Summaries, summarize
from gradlens.records import GradEvent, ValueSummary

NAN, INF = math.nan, math.inf


def reference(t: torch.Tensor) -> ValueSummary:
    """The summary as a float64 copy of every element gives it (what gradlens did before)."""
    shape, dtype = tuple(t.shape), str(t.dtype).removeprefix("torch.")
    d = t.detach()
    if d.numel() <= 16 and not d.is_complex():
        return ValueSummary(shape, dtype, values=d.tolist())
    f = (d.abs() if d.is_complex() else d).double()
    finite = torch.isfinite(f)
    good = f[finite]
    nan, inf = int(torch.isnan(f).sum()), int(torch.isinf(f).sum())
    if good.numel() == 0:
        return ValueSummary(shape, dtype, nan=nan, inf=inf)
    return ValueSummary(
        shape,
        dtype,
        norm=good.norm().item(),
        min=good.min().item(),
        max=good.max().item(),
        nan=nan,
        inf=inf,
    )


def same(a: ValueSummary | None, b: ValueSummary | None) -> bool:
    assert a is not None and b is not None
    if a.norm is None or b.norm is None:
        norm_ok = a.norm is b.norm
    else:
        norm_ok = math.isclose(a.norm, b.norm, rel_tol=1e-6)
    return (
        a.shape == b.shape
        and a.dtype == b.dtype
        and norm_ok
        and (a.min, a.max, a.nan, a.inf) == (b.min, b.max, b.nan, b.inf)
        and repr(a.values) == repr(b.values)
    )


def cases() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    big = torch.randn(3_000_000, generator=g)  # a float32 norm of this is off by ~1e-4
    holes = torch.randn(10_000, generator=g)
    holes[[3, 77, 9_000]] = torch.tensor([NAN, INF, -INF])
    return [
        torch.randn(5, generator=g),
        torch.randn(300, 300, generator=g),  # rows of 4096, a remainder
        torch.randn(64, 256, generator=g),  # whole rows
        torch.randn(5000, 7, generator=g).t(),  # not contiguous
        big,
        big.half(),
        big[:9000].bfloat16(),
        torch.randn(20_000, dtype=torch.float64, generator=g),
        torch.arange(100),
        torch.ones(50, dtype=torch.bool),
        torch.randn(20, dtype=torch.complex64, generator=g),
        holes,
        torch.tensor([NAN] * 30),
        torch.full((10_000,), 3e37),  # finite numbers whose float32 sum of squares overflows
        torch.full((10,), 3e37),
        torch.zeros(2, 0),
        torch.tensor(3.0),
        torch.randn(3, 4, generator=g)[:, 1],
    ]


@pytest.mark.parametrize("index", range(len(cases())))
def test_summary_matches_a_float64_reading(index: int) -> None:
    t = cases()[index]
    assert same(summarize(t), reference(t))


@pytest.mark.parametrize("index", range(len(cases())))
def test_summaries_left_on_the_device_match_once_resolved(
    index: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What an accelerator gets: nothing read per tensor, every number in one copy at the end.
    monkeypatch.setattr(summary, "_on_host", lambda t: False)
    t = cases()[index].clone()
    summaries = Summaries()
    pending = summaries.add(t)
    expected = reference(t)
    t.zero_()  # written after it was added: the summary keeps the value it had then
    summaries.resolve()
    assert same(summaries.get(pending), expected)


def test_resolve_makes_one_host_copy_per_device_and_dtype(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(summary, "_on_host", lambda t: False)
    copies = []
    real = torch.Tensor.cpu

    def counting(self: torch.Tensor, *a: Any, **k: Any) -> torch.Tensor:
        copies.append(self.dtype)
        return real(self, *a, **k)

    summaries = Summaries()
    tensors = [torch.randn(100), torch.randn(3), torch.arange(4), torch.randn(50, 50)]
    pending = [summaries.add(t) for t in tensors]
    monkeypatch.setattr(torch.Tensor, "cpu", counting)
    summaries.resolve()
    assert sorted(map(str, copies)) == ["torch.float32", "torch.float64", "torch.int64"]
    assert [summaries.get(p) for p in pending][2] == ValueSummary((4,), "int64", [0, 1, 2, 3])


def test_a_tensor_read_twice_is_read_once_until_it_changes() -> None:
    summaries = Summaries()
    t = torch.randn(100)
    first = summaries.add(t)
    assert summaries.add(t) is first
    t.add_(1)  # a new version: read again
    second = summaries.add(t)
    assert second is not first and same(second, reference(t))
    t.data.add_(1)  # a write PyTorch's version counter cannot see: fresh() is the guard
    summaries.fresh()
    assert same(summaries.add(t), reference(t))


def test_trace_gradients_are_the_values_at_the_time() -> None:
    # The gradient arriving at w, its .grad after accumulation, then .grad rescaled in place by
    # the user's code and again through .data, which no version counter sees.
    w = torch.randn(100, requires_grad=True)
    with gradlens.trace(w=w) as t:
        (w * 3).sum().backward()
        first = w.grad.clone()
        w.grad.mul_(2)
        w.grad.data.mul_(5)
    grad_events = [e for e in t.events if isinstance(e, GradEvent) and e.leaf == "w"]
    assert same(grad_events[0].grads[0], reference(first))
    assert same(grad_events[0].accumulated, reference(first))
    assert same(t.tensors["w"].grad, reference(first * 10))


def test_installed_code_is_shown_from_its_package_down() -> None:
    cwd = os.getcwd()
    site = os.sep + os.path.join("opt", "venv", "lib", "python3.11", "site-packages")
    gpt2 = os.path.join(site, "transformers", "models", "gpt2", "modeling_gpt2.py")
    assert _short_from(gpt2, cwd) == "transformers/.../modeling_gpt2.py"
    assert _short_from(os.path.join(site, "six.py"), cwd) == "six.py"
    assert _short_from(os.path.join(site, "pkg", "mod.py"), cwd) == "pkg/mod.py"
    assert _short_from(torch.nn.modules.module.__file__, cwd) == "torch/.../module.py"
    assert _short_from(os.__file__, cwd) == "os.py"
    # The user's own files: relative to the working directory inside it, else in full.
    assert _short_from(os.path.join(cwd, "train.py"), cwd) == "train.py"
    mine = os.sep + os.path.join("home", "me", "proj", "train.py")
    assert _short_from(mine, cwd) == mine
    assert _short_from("<stdin>", cwd) == "<stdin>"


def traced_run() -> gradlens.Trace:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 30), torch.nn.ReLU(), torch.nn.Linear(30, 20))
    x = torch.randn(8, 4)
    with gradlens.trace(model) as t:
        h = model(x)
        bad = torch.log(h - 0.5)  # NaN where h < 0.5
        loss = torch.nan_to_num(bad).sum() + h.pow(2).mean()
        loss.backward()
    return t


def test_a_trace_on_an_accelerator_reads_nothing_until_the_end_and_records_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    on_host = traced_run()
    monkeypatch.setattr(summary, "_on_host", lambda t: False)
    reads: list[str] = []
    for method in ("item", "tolist", "cpu", "__bool__", "__float__"):
        real = getattr(torch.Tensor, method)

        def counting(self: torch.Tensor, *a: Any, _real: Any = real, _m: str = method) -> Any:
            reads.append(_m)
            return _real(self, *a)

        monkeypatch.setattr(torch.Tensor, method, counting)
    monkeypatch.setattr(summary.Summaries, "resolve", counting_resolve(reads))
    on_device = traced_run()
    # Every host read waited for the end of the trace, and came in one batch.
    assert reads[: reads.index("resolve")] == []
    assert repr(on_device.events) == repr(on_host.events)
    assert repr(on_device.graph) == repr(on_host.graph)
    assert any(r.nonfinite for e in on_host.events for r in getattr(e, "outputs", ()))


def counting_resolve(reads: list[str]) -> Any:
    real = summary.Summaries.resolve

    def resolve(self: Summaries) -> None:
        reads.append("resolve")
        real(self)

    return resolve


def test_accumulated_gradient_is_read_again_unless_it_must_equal_the_incoming_one() -> None:
    def same_as(s: ValueSummary | None, value: float) -> bool:
        return same(s, reference(torch.full((100,), float(value))))

    w = torch.ones(100, requires_grad=True)  # .grad None: .grad becomes the incoming gradient
    v = torch.ones(100, requires_grad=True)  # a hook of the user's changes .grad unseen

    def triple(p: torch.Tensor) -> None:
        assert p.grad is not None
        p.grad.data.mul_(3)

    v.register_post_accumulate_grad_hook(triple)
    with gradlens.trace(w=w, v=v) as t:
        (w * 2 + v * 2).sum().backward()
        (w * 2 + v * 2).sum().backward()  # .grad exists: accumulated = old + new
    events = {
        (e.leaf, e.pass_index): e
        for e in t.events
        if isinstance(e, GradEvent) and e.leaf in ("w", "v")
    }
    assert same_as(events["w", 0].grads[0], 2) and same_as(events["w", 0].accumulated, 2)
    assert same_as(events["w", 1].grads[0], 2) and same_as(events["w", 1].accumulated, 4)
    assert same_as(events["v", 0].grads[0], 2) and same_as(events["v", 0].accumulated, 6)
    assert same_as(events["v", 1].accumulated, 24)


def test_a_transposed_view_is_read_once_with_its_block_and_gives_the_same_numbers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A Linear's weight gradient arrives at TBackward0 and, transposed, at AccumulateGrad: the
    # same elements, so the second summary is the first's numbers, exactly what a read gives.
    g = torch.Generator().manual_seed(3)
    base = torch.randn(300, 70, generator=g)  # past one row of 4096: summed in memory order
    reads: list[tuple[int, ...]] = []
    real = summary._summarize_host

    def counting(t: torch.Tensor) -> ValueSummary:
        reads.append(tuple(t.shape))
        return real(t)

    monkeypatch.setattr(summary, "_summarize_host", counting)
    summaries = Summaries()
    views = [base.t(), base.t().t(), base.view(70, 300), base.t()[:, :100], base.view(-1)[1:]]
    got = [summaries.get(summaries.add(v)) for v in views]
    direct = [Summaries().get(Summaries().add(v)) for v in views]
    # The transposes and the reshape of the whole block are read once; the parts each once.
    assert reads[:3] == [(70, 300), (70, 100), (20999,)]
    assert got == direct  # to the last bit
    assert all(same(s, reference(v)) for s, v in zip(got, views, strict=True))
    base.mul_(2)  # a new version of the block: read again
    reads.clear()
    assert same(summaries.get(summaries.add(base.t())), reference(base.t()))
    assert reads == [(70, 300)]
    wide = base.double()  # float64 norms are not summed in rows: each view is read
    reads.clear()
    summaries.add(wide)
    summaries.add(wide.t())
    assert reads == [(300, 70), (70, 300)]


def test_a_block_with_a_nan_is_read_per_view() -> None:
    base = torch.randn(100, 50)
    base[3, 4] = NAN
    summaries = Summaries()
    first, second = summaries.add(base), summaries.add(base.t())
    assert first is not second
    assert same(summaries.get(second), reference(base.t()))
