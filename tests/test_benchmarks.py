"""The benchmark scripts still run: one step of every workload (a smoke test, no timing)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture
def on_path() -> Iterator[None]:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_every_workload_builds_and_steps(on_path: None) -> None:
    import guard_overhead
    import watch_overhead

    for make in (watch_overhead.logistic_2d, watch_overhead.mlp, guard_overhead.mlp):
        workload = make()
        assert workload.step().ndim == 0
    small = watch_overhead.logistic_2d()
    small.steps = 3
    assert watch_overhead.time_watched(small) > 0  # the watched path runs end to end
    counter = guard_overhead.Counter()
    mlp = guard_overhead.mlp()
    for mode in ("plain", "guard", "anomaly"):
        assert guard_overhead.time_block(mlp, mode, 1, counter) > 0
    assert counter.violations == 0


def test_trace_overhead_runs_its_cases(on_path: None) -> None:
    import trace_overhead

    times = trace_overhead.step_times("mlp", repeats=1)
    assert times["events"] > 0 and times["plain_cpu"] > 0 and times["traced_cpu"] > 0
    plain, traced = trace_overhead.small_times(trace_overhead.classic, repeats=1)
    assert plain > 0 and traced > 0


def test_the_real_model_workloads_step(on_path: None) -> None:
    import guard_overhead

    counter = guard_overhead.Counter()
    for make in (guard_overhead.zoo_mlp, guard_overhead.chain):
        workload = make()
        for mode in ("plain", "guard"):
            assert guard_overhead.time_block(workload, mode, 1, counter) > 0
    assert counter.violations == 0


def test_compare_counts_dot_nodes_and_runs_gradlens_on_the_mlp(on_path: None) -> None:
    import compare

    dot = 'digraph g {\n  graph [a=1];\n  node [b=2];\n  n1 [label="x"];\n  "n 2" [label=y];\n'
    dot += '  n1 -> "n 2" [label="e"];\n}'
    assert compare._dot_nodes(dot) == 2
    m = compare.mlp(small=True)
    tools = {k: v[0] for k, v in compare.TOOLS.items() if k.startswith("gradlens")}
    rows = compare.measure(m, tools, rounds=1)
    by_tool = {r["tool"]: r for r in rows}
    assert set(by_tool) == set(tools) and not any("error" in r for r in rows)
    trace = by_tool["gradlens trace()"]["counts"]
    # 4 x (Linear + ReLU) + head + loss: every op, leaf and input is a node
    assert trace["full"] == by_tool["gradlens graph() + DOT"]["counts"]["full"] + 2
    assert trace["depth=1"] is not None and trace["depth=1"] < trace["full"]
    table = compare.table({m.name: (0.01, rows)})
    assert table.count("\n") == 2 + 1 + len(rows) - 1


def test_mode_floor_measures_each_way_of_running_an_op(on_path: None) -> None:
    import guard_overhead
    import mode_floor

    us = mode_floor.per_op(rounds=1, n=50)
    assert set(us) == {
        "op",
        "empty mode",
        "empty mode, no kwargs dict",
        "mode returning a ready tensor",
        "func(*args), no mode",
        "push + pop of the mode stack",
        "guard()",
    }
    ratios = mode_floor.per_step(guard_overhead.zoo_mlp(), rounds=1, steps=1)
    assert set(ratios) == {"plain ms", "empty", "empty+window", "guard"}
    assert torch.is_grad_enabled() and torch._C._len_torch_function_stack() == 0


def test_graph_speed_times_gradlens_and_counts_collections(
    on_path: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import gc

    import graph_speed

    argv = ["graph_speed", "--model", "mlp", "--rounds", "1", "--calls", "2"]
    monkeypatch.setattr(sys, "argv", argv)
    callbacks, threads = list(gc.callbacks), torch.get_num_threads()
    try:
        graph_speed.main()
    finally:
        torch.set_num_threads(threads)
        gc.callbacks[:] = callbacks
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("gradlens graph() + to_dot()"))
    mean, median, passes = (float(v) for v in line.split()[-3:])
    assert mean > 0 and median > 0 and passes >= 0
