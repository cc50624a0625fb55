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

Four more workloads are the real-model shapes of ``tests/model_zoo.py`` and the worst case for
any per-op cost: (f) GPT-2 small (124 M parameters, Hugging Face's layout, tied ``lm_head``) on
one sequence of 64 tokens with AdamW, (g) ResNet-50 on two 224 x 224 images with SGD+momentum,
(h) the classic MLP 4 x 256 on a batch of 64 with SGD, and (i) a chain of 10,000 scalar
multiplications (``x = x * 1.0001``) and its backward. These time ``plain``, ``guard`` and
``anomaly`` only (a trace of GPT-2 costs minutes here; ``trace_overhead.py`` measures traces).

Run: python benchmarks/guard_overhead.py [--rounds N] [--quick] [--only f,g,h,i] [--threads N]
     [--cpu-time]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import _models  # benchmarks/_models.py: the shared models
import torch
from torch import nn

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent / "tests"))
import model_zoo

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
    modes: tuple[str, ...] = MODES
    key: str = ""


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


def _zoo_step(
    make: Callable[[], tuple[nn.Module, tuple[torch.Tensor, ...], Callable[..., torch.Tensor]]],
    optimizer: Callable[[nn.Module], torch.optim.Optimizer],
) -> tuple[nn.Module, Callable[[], torch.Tensor]]:
    model, inputs, loss_fn = make()
    model.train()
    opt = optimizer(model)

    def step() -> torch.Tensor:
        loss = loss_fn(model, *inputs)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.detach()

    return model, step


_FAST = ("plain", "guard", "anomaly")


def gpt2() -> Workload:
    model, step = _zoo_step(
        model_zoo.gpt2_step, lambda m: torch.optim.AdamW(m.parameters(), lr=1e-4)
    )
    return Workload("(f) GPT-2 small 124M, 1 x 64 tokens, AdamW", model, step, 1, 1, _FAST, "f")


def resnet50() -> Workload:
    model, step = _zoo_step(
        model_zoo.resnet50_step,
        lambda m: torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9),
    )
    return Workload("(g) ResNet-50, 2 x 3 x 224 x 224, SGD+momentum", model, step, 1, 1, _FAST, "g")


def zoo_mlp() -> Workload:
    model, step = _zoo_step(model_zoo.mlp_step, lambda m: torch.optim.SGD(m.parameters(), lr=1e-2))
    return Workload("(h) MLP 4 x 256, batch 64, SGD", model, step, 20, 5, _FAST, "h")


def chain() -> Workload:
    w = nn.Parameter(torch.ones(1))

    def step() -> torch.Tensor:
        x = w
        for _ in range(10_000):
            x = x * 1.0001
        x.sum().backward()
        w.grad = None
        return x.detach().sum()

    holder = nn.Module()
    holder.w = w
    return Workload("(i) chain of 10,000 muls, forward+backward", holder, step, 1, 1, _FAST, "i")


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


#: The clock: wall time, or this process's CPU time (``--cpu-time``: steadier on a shared,
#: overloaded machine, where waiting for a core is not the step's cost; use with --threads 1).
CLOCK = time.perf_counter


def time_block(w: Workload, mode: str, steps: int, counter: Counter) -> float:
    """Returns the seconds per step of one block of ``steps`` steps, context included."""
    start = CLOCK()
    with mode_context(mode, w, counter):
        for _ in range(steps):
            w.step()
    return (CLOCK() - start) / steps


def measure(w: Workload, rounds: int, steps: int) -> tuple[dict[str, float], int]:
    """Returns median step times and the medians of the per-round ratios, and the number of
    violations the guard reported."""
    counter = Counter()
    modes = w.modes
    for mode in modes:  # warm up every path once
        time_block(w, mode, 1, counter)
    times: dict[str, list[float]] = {mode: [] for mode in modes}
    for r in range(rounds):
        for mode in modes[r % len(modes) :] + modes[: r % len(modes)]:
            times[mode].append(time_block(w, mode, steps, counter))
    out = {mode: statistics.median(v) for mode, v in times.items()}
    for a, b in RATIOS:
        if a in times and b in times:
            out[f"{a}/{b}"] = statistics.median(
                x / y for x, y in zip(times[a], times[b], strict=True)
            )
    return out, counter.violations


WORKLOADS = {
    "b": mlp,
    "c": transformer,
    "d": lstm,
    "e": policy,
    "f": gpt2,
    "g": resnet50,
    "h": zoo_mlp,
    "i": chain,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument(
        "--quick", action="store_true", help="3 rounds of fewer steps, for a smoke test"
    )
    parser.add_argument("--only", default="", help="workload letters, e.g. f,g,h,i")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument(
        "--cpu-time", action="store_true", help="time with the process's CPU time, not wall"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.cpu_time:
        global CLOCK
        CLOCK = time.process_time
    rounds = 3 if args.quick else args.rounds
    keys = [k.strip() for k in args.only.split(",") if k.strip()] or list(WORKLOADS)
    clock = "CPU time" if args.cpu_time else "wall time"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {rounds} rounds, {clock}")
    header = "".join(f"{m + ' ms':>11}" for m in MODES)
    header += "".join(f"{a + '/' + b:>15}" for a, b in RATIOS)
    print(f"{'workload':54} {'steps':>5}{header} {'violations':>10}")
    for key in keys:
        w = WORKLOADS[key]()
        steps = w.quick_steps if args.quick else w.steps
        t, violations = measure(w, rounds, steps)
        cells = "".join(f"{t[m] * 1e3:11.1f}" if m in t else f"{'-':>11}" for m in MODES)
        cells += "".join(
            f"{t[f'{a}/{b}']:14.2f}x" if f"{a}/{b}" in t else f"{'-':>15}" for a, b in RATIOS
        )
        print(f"{w.name:54} {steps:5d}{cells} {violations:10d}", flush=True)
        del w


if __name__ == "__main__":
    main()
