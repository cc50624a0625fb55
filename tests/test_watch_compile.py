"""gradlens.watch on a torch.compile'd model: no graph break, no recompile, the eager statistics.

Each loop is run twice in a fresh dynamo state, once plain and once watched, and dynamo's own
counters (graphs made, graph breaks) must be the same; the watched compiled run's statistics
must equal those of the same loop run eagerly (same seed, same data).
"""

from __future__ import annotations

import io
import warnings
from collections import Counter
from typing import Any

import pytest
import torch
from rich.console import Console
from torch import nn
from torch._dynamo.utils import counters

import gradlens
from gradlens._lens import Lens, watch_everything

BACKENDS = ["eager", "aot_eager"]


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 4)
    )


def loop(
    backend: str | None, how: str, *, before: int = 0, after: int = 2, steps: int = 4
) -> tuple[dict[str, int], Lens | None]:
    """Runs ``before`` plain steps, ``steps`` steps (watched unless ``how`` is "plain"), then
    ``after`` plain steps, on a model compiled with ``backend`` (None: eager). Returns dynamo's
    counts (graphs made, frames, graph breaks) and the Lens."""
    torch._dynamo.reset()
    counters.clear()
    net = make_model()
    run = torch.compile(net, backend=backend) if backend is not None else net
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(1)
    batches = [(torch.randn(32, 8, generator=gen), torch.randn(32, 4, generator=gen))]
    batches += [(torch.randn(32, 8, generator=gen), torch.randn(32, 4, generator=gen))]

    def step(i: int) -> None:
        x, y = batches[i % len(batches)]
        opt.zero_grad()
        nn.functional.mse_loss(run(x), y).backward()
        opt.step()

    for i in range(before):
        step(i)
    lens: Lens | None = None
    if how == "model":
        lens = gradlens.watch(run, opt, live=False, detail_every=2)
    elif how == "global":  # gradlens run: every optimizer, nan_origin on, global hooks
        lens = watch_everything(Console(file=io.StringIO(), width=100))
    with lens if lens is not None else _nothing():
        for i in range(before, before + steps):
            step(i)
    for i in range(before + steps, before + steps + after):
        step(i)
    stats = counters["stats"]
    counts = {
        "graphs": stats["unique_graphs"],
        "frames": stats["calls_captured"],
        "breaks": sum(counters["graph_break"].values()),
    }
    return counts, lens


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("before", [0, 2], ids=["compiled-inside", "compiled-before"])
@pytest.mark.parametrize("how", ["model", "global"])
def test_no_graph_break_and_no_recompile(backend: str, before: int, how: str) -> None:
    plain, _ = loop(backend, "plain", before=before)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning of gradlens's hooks either
        watched, lens = loop(backend, how, before=before)
    assert plain["graphs"] == 1 and plain["breaks"] == 0  # the test's loop compiles once
    assert watched == plain
    assert lens is not None and len(lens.steps) == 4


@pytest.mark.parametrize("backend", BACKENDS)
def test_compiled_statistics_equal_the_eager_ones(backend: str) -> None:
    _, eager = loop(None, "model", before=1)
    _, compiled = loop(backend, "model", before=1)
    assert eager is not None and compiled is not None
    names = ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"]
    assert [p.name for p in compiled.record.params] == names  # no "_orig_mod." in the names
    assert [s.step for s in compiled.steps] == [s.step for s in eager.steps] == [0, 1, 2, 3]
    for c, e in zip(compiled.steps, eager.steps, strict=True):
        assert c.detail == e.detail
        assert c.loss == pytest.approx(e.loss, rel=1e-6)
        assert list(c.grads) == names
        for name in names:
            got, want = c.grads[name], e.grads[name]
            for field in ("grad_norm", "grad_mean", "grad_max", "weight_norm", "update_ratio"):
                a, b = getattr(got, field), getattr(want, field)
                assert (a is None) == (b is None)
                if a is not None:
                    assert a == pytest.approx(b, rel=1e-5, abs=1e-9), (name, field)
    assert compiled.diagnostics == eager.diagnostics == []


def test_a_missed_zero_grad_is_found_on_a_compiled_model() -> None:
    torch._dynamo.reset()
    net = make_model()
    run = torch.compile(net, backend="eager")
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    x, y = torch.randn(32, 8), torch.randn(32, 4)
    with gradlens.watch(run, opt, live=False) as lens:
        for _ in range(3):
            nn.functional.mse_loss(run(x), y).backward()  # no zero_grad
            opt.step()
    kinds = Counter(d.kind for d in lens.diagnostics)
    assert kinds["grad-accumulation"] == 1


def test_nan_origin_is_off_for_a_compiled_model_and_says_so() -> None:
    torch._dynamo.reset()
    counters.clear()
    net = make_model()
    run = torch.compile(net, backend="eager")
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    x, y = torch.randn(32, 8), torch.randn(32, 4)
    hooks_before = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in net.modules())
    with gradlens.watch(run, opt, live=False, nan_origin=True) as lens:
        for _ in range(4):
            opt.zero_grad()
            nn.functional.mse_loss(run(x), y).backward()
            opt.step()
    assert sum(counters["graph_break"].values()) == 0
    assert counters["stats"]["unique_graphs"] == 1
    assert any("nan_origin is off: the model is torch.compile'd" in n for n in lens.record.notes)
    assert all(s.forward_calls == 0 for s in lens.steps)
    after = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in net.modules())
    assert after == hooks_before == 0
    assert len(run._forward_hooks) == len(run._forward_pre_hooks) == 0
    assert torch._C._len_torch_function_stack() == 0
