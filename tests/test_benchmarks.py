"""The benchmark scripts still run: one step of every workload (a smoke test, no timing)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

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
