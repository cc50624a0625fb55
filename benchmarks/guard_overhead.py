"""What guarding a training step costs: plain vs ``gradlens.guard()`` vs ``gradlens.trace()`` vs
PyTorch's anomaly mode, steps interleaved.

Four workloads (``_models.py``): two of large ops, built as in ``watch_overhead.py`` but with
SGD: (b) an MLP of four 1024-wide layers on batches of 256, (c) a 4-layer transformer encoder
(d = 256, 8 heads, feed-forward 1024, batch 16 x 64 tokens); and two made of many tiny ops, where
any per-op cost shows: (d) an LSTMCell unrolled by hand over 32 time steps, (e) a REINFORCE step
of a small policy network sampling 50 actions. A step is forward, zero_grad, backward and an
optimizer step. Each round times one block of N steps in each of four modes, each block inside a
fresh context (so entering and leaving it, and a trace's building its record, are paid every round):

* ``plain``: nothing around the loop;
* ``guard``: ``with gradlens.guard():`` (every write logged, judged before each backward);
* ``trace``: ``with gradlens.trace(model):`` (every op, gradient and tensor recorded);
* ``anomaly``: ``with torch.autograd.detect_anomaly():`` (the same as
  ``torch.autograd.set_detect_anomaly(True)``: a Python stack trace stored for every node, a
  NaN check on every gradient).

The order of the modes rotates from round to round, and the ratios are taken per round
(paired, so slow drift of the machine's speed cancels out) and then their median is printed,
with the median step times. As a sanity check it prints how many violations the guard found in
these correct loops (it should be 0).

Run: python benchmarks/guard_overhead.py [--rounds N] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import _models  # benchmarks/_models.py: the shared models
import torch
from torch import nn

import gradlens

MODES = ("plain", "guard", "trace", "anomaly")
RATIOS = (("guard", "plain"), ("trace", "plain"), ("anomaly", "plain"), ("guard", "anomaly"))


@dataclass
class Workload:
    name: str
    model: nn.Module
    step: Callable[[], torch.Tensor]
    steps: int  # per timed block
    quick_steps: int  # per timed block with --quick


def mlp() -> Workload:
    model, _, step = _models.mlp(torch.optim.SGD, lr=1e-3)
    return Workload("(b) MLP 4 x 1024, batch 256, SGD", model, step, steps=10, quick_steps=4)


def lstm() -> Workload:
    model, _, step = _models.lstm_cell(torch.optim.SGD, lr=1e-2)
    return Workload(
        "(d) LSTMCell 32->64 unrolled 32 steps, batch 8, SGD", model, step, steps=10, quick_steps=3
    )


def policy() -> Workload:
    model, _, step = _models.policy(torch.optim.Adam, lr=1e-2)
    return Workload(
        "(e) policy 4->64->2, 50 sampled actions, Adam", model, step, steps=10, quick_steps=3
    )


def transformer() -> Workload:
    model, _, step = _models.transformer(torch.optim.SGD, lr=1e-4)
    return Workload(
        "(c) transformer encoder 4 x d256, batch 16 x 64, SGD", model, step, steps=4, quick_steps=2
    )


class Counter:
    """Counts the violations every guard block found."""

    def __init__(self) -> None:
        self.violations = 0


@contextlib.contextmanager
def mode_context(mode: str, w: Workload, counter: Counter) -> Iterator[None]:
    if mode == "plain":
        yield
    elif mode == "guard":
        with gradlens.guard() as g:
            yield
        counter.violations += len(g.violations)
    elif mode == "trace":
        with gradlens.trace(w.model):
            yield
    elif mode == "anomaly":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Anomaly Detection has been enabled ..."
            with torch.autograd.detect_anomaly():
                yield
    else:
        raise ValueError(mode)


def time_block(w: Workload, mode: str, steps: int, counter: Counter) -> float:
    """Returns the seconds per step of one block of ``steps`` steps, context included."""
    start = time.perf_counter()
    with mode_context(mode, w, counter):
        for _ in range(steps):
            w.step()
    return (time.perf_counter() - start) / steps


def measure(w: Workload, rounds: int, steps: int) -> tuple[dict[str, float], int]:
    """Returns median step times and the medians of the per-round ratios, and the number of
    violations the guard reported."""
    counter = Counter()
    for mode in MODES:  # warm up every path once
        time_block(w, mode, 1, counter)
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    for r in range(rounds):
        for mode in MODES[r % len(MODES) :] + MODES[: r % len(MODES)]:
            times[mode].append(time_block(w, mode, steps, counter))
    out = {mode: statistics.median(v) for mode, v in times.items()}
    for a, b in RATIOS:
        out[f"{a}/{b}"] = statistics.median(x / y for x, y in zip(times[a], times[b], strict=True))
    return out, counter.violations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument(
        "--quick", action="store_true", help="3 rounds of fewer steps, for a smoke test"
    )
    args = parser.parse_args()
    rounds = 3 if args.quick else args.rounds
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {rounds} rounds")
    header = "".join(f"{m + ' ms':>11}" for m in MODES)
    header += "".join(f"{a + '/' + b:>15}" for a, b in RATIOS)
    print(f"{'workload':54} {'steps':>5}{header} {'violations':>10}")
    for make in (mlp, transformer, lstm, policy):
        w = make()
        steps = w.quick_steps if args.quick else w.steps
        t, violations = measure(w, rounds, steps)
        cells = "".join(f"{t[m] * 1e3:11.1f}" for m in MODES)
        cells += "".join(f"{t[f'{a}/{b}']:14.2f}x" for a, b in RATIOS)
        print(f"{w.name:54} {steps:5d}{cells} {violations:10d}", flush=True)


if __name__ == "__main__":
    main()
