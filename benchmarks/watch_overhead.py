"""What watching a training loop costs: plain vs ``gradlens.watch()`` steps, interleaved.

Three workloads: (a) the seeds' 2-D logistic regression (200 points), (b) an MLP of four
1024-wide layers on batches of 256, (c) a 4-layer transformer encoder (d = 256, 8 heads,
batch 16 x 64 tokens) with Adam. Each round runs N plain steps, then N steps inside a fresh
``with gradlens.watch(model, opt, live=False)`` (so entering, the final host copy and building
the records are paid every round; N = 26 or more, so each round has two detail steps, as often
as or more often than a long run's one in 25), alternating so drift hits both alike.
It prints median step times and the ratio watched / plain, and, as a reference point, the
ratio of a naive per-parameter logger (``p.grad.norm().item()`` etc. for every parameter every
step: the host sync per parameter per step that gradlens avoids) over gradlens.

``--parts`` times, interleaved the same way, the parts of the cost: ``hooks`` (watch() with its
statistics replaced by zeros: hooks, mode, bookkeeping, flush), ``light`` (norm/mean/std/max
every step, no detail step), ``watch`` (the default: detail every 25th step), and
``nan_origin`` (the default plus ``nan_origin=True``). Ratios are per round (each way over the
same round's plain block) and given as median [min - max] over rounds, on wall-clock time and on
the process's CPU time (less sensitive to other processes on a shared machine), with the minor
page faults per step (fresh memory the allocator had to map).

Run: python benchmarks/watch_overhead.py [--rounds N] [--quick] [--parts] [--steps N]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import _models  # benchmarks/_models.py: the shared models
import torch
from torch import nn

import gradlens


@dataclass
class Workload:
    name: str
    model: nn.Module
    opt: torch.optim.Optimizer
    step: Callable[[], torch.Tensor]
    steps: int = 26  # per timed block


def logistic_2d() -> Workload:
    torch.manual_seed(10)
    ones = torch.ones(100, 2)
    x = torch.cat((torch.normal(1.7 * ones, 1) + 1, torch.normal(-1.7 * ones, 1) + 1))
    y = torch.cat((torch.zeros(100), torch.ones(100)))
    model = nn.Sequential(nn.Linear(2, 1), nn.Sigmoid())
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.BCELoss()

    def step() -> torch.Tensor:
        loss = loss_fn(model(x).squeeze(1), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss

    return Workload("(a) logistic regression 2-D, 200 points", model, opt, step, steps=200)


def mlp() -> Workload:
    model, opt, step = _models.mlp(torch.optim.SGD, lr=1e-3)
    return Workload("(b) MLP 4 x 1024, batch 256, SGD", model, opt, step, steps=50)


def transformer() -> Workload:
    model, opt, step = _models.transformer(torch.optim.Adam, lr=1e-4)
    return Workload("(c) transformer encoder 4 x d256, batch 16 x 64, Adam", model, opt, step)


def naive_logger(w: Workload) -> Callable[[], torch.Tensor]:
    """Returns a step that logs per-parameter stats the usual way: one .item() per number."""
    log: list[tuple[float, ...]] = []

    def step() -> torch.Tensor:
        loss = w.step()
        for p in w.model.parameters():
            g = p.grad
            assert g is not None
            std = g.std(unbiased=False)
            log.append((g.norm().item(), g.mean().item(), std.item(), g.abs().max().item()))
        loss.item()
        return loss

    return step


def time_plain(step: Callable[[], torch.Tensor], steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def time_watched(w: Workload) -> float:
    start = time.perf_counter()
    with gradlens.watch(w.model, w.opt, live=False):
        for _ in range(w.steps):
            w.step()
    return (time.perf_counter() - start) / w.steps


PARTS = ("plain", "hooks", "light", "watch", "nan_origin")


@contextlib.contextmanager
def _zero_statistics() -> Iterator[None]:
    """watch() with every statistic replaced by zeros: what hooks and bookkeeping cost."""
    from gradlens.capture import watch as watch_mod
    from gradlens.capture.pending import Group
    from gradlens.capture.stash import Stash

    real = watch_mod.group_stats

    def zeros(
        group: list, detail: bool, *, snapshot: bool, stash: Stash, scratch: object = None
    ) -> Group:  # type: ignore[type-arg]
        zeros = stash.put(torch.zeros(4, len(group)))
        return Group([p.name for p in group], [p.info.numel for p in group], zeros)

    watch_mod.group_stats = zeros  # type: ignore[assignment]
    try:
        yield
    finally:
        watch_mod.group_stats = real


def _faults() -> int:
    """Returns the process's minor page faults so far (0 where ``resource`` is missing)."""
    try:
        import resource
    except ImportError:  # Windows
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def time_part(w: Workload, part: str) -> tuple[float, float, float]:
    """Returns (wall, CPU) seconds and minor page faults per step of one block of ``w`` run
    the ``part`` way."""
    if part == "plain":
        lens: contextlib.AbstractContextManager[object] = contextlib.nullcontext()
    else:
        detail = 0 if part in ("hooks", "light") else 25
        lens = gradlens.watch(
            w.model, w.opt, live=False, detail_every=detail, nan_origin=part == "nan_origin"
        )
    stats = _zero_statistics() if part == "hooks" else contextlib.nullcontext()
    faults, wall, cpu = _faults(), time.perf_counter(), time.process_time()
    with stats, lens:
        for _ in range(w.steps):
            w.step()
    n = w.steps
    wall, cpu = (time.perf_counter() - wall) / n, (time.process_time() - cpu) / n
    return wall, cpu, (_faults() - faults) / n


def measure_parts(w: Workload, rounds: int) -> dict[str, dict[str, list[float]]]:
    """Returns, per part, the per-round step times and ratios over the round's plain block."""
    for part in PARTS:  # warm up every path
        time_part(w, part)
    out: dict[str, dict[str, list[float]]] = {
        p: {"wall": [], "cpu": [], "wall_ratio": [], "cpu_ratio": [], "faults": []} for p in PARTS
    }
    for _ in range(rounds):
        times = {p: time_part(w, p) for p in PARTS}
        for p, (wall, cpu, faults) in times.items():
            out[p]["wall"].append(wall)
            out[p]["cpu"].append(cpu)
            out[p]["faults"].append(faults)
            out[p]["wall_ratio"].append(wall / times["plain"][0])
            out[p]["cpu_ratio"].append(cpu / times["plain"][1])
    return out


def _spread(xs: list[float]) -> str:
    return f"{statistics.median(xs):.3f} [{min(xs):.3f}-{max(xs):.3f}]"


def print_parts(w: Workload, rounds: int) -> None:
    t = measure_parts(w, rounds)
    print(f"{w.name} ({w.steps} steps per block)")
    head = f"{'wall ms':>9} {'wall ratio':>24} {'cpu ms':>9} {'cpu ratio':>24} {'faults':>7}"
    print(f"  {'part':11} {head}")
    for p in PARTS:
        r = t[p]
        print(
            f"  {p:11} {statistics.median(r['wall']) * 1e3:9.2f} {_spread(r['wall_ratio']):>24} "
            f"{statistics.median(r['cpu']) * 1e3:9.2f} {_spread(r['cpu_ratio']):>24} "
            f"{statistics.median(r['faults']):7.0f}",
            flush=True,
        )


def measure(w: Workload, rounds: int) -> dict[str, float]:
    """Returns median step times and the median of the per-round ratios (paired, so slow
    drift of the machine's speed cancels out)."""
    naive = naive_logger(w)
    for _ in range(2):  # warm up all three paths
        time_plain(w.step, w.steps), time_watched(w), time_plain(naive, w.steps)
    times: dict[str, list[float]] = {"plain": [], "watched": [], "naive": []}
    for _ in range(rounds):
        times["plain"].append(time_plain(w.step, w.steps))
        times["watched"].append(time_watched(w))
        times["naive"].append(time_plain(naive, w.steps))
    out = {k: statistics.median(v) for k, v in times.items()}
    pairs = zip(times["plain"], times["watched"], times["naive"], strict=True)
    ratios = [(watched / plain, naive / watched) for plain, watched, naive in pairs]
    out["ratio"] = statistics.median(r for r, _ in ratios)
    out["naive_ratio"] = statistics.median(r for _, r in ratios)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--quick", action="store_true", help="3 rounds, for a smoke test")
    parser.add_argument("--parts", action="store_true", help="the cost, part by part")
    parser.add_argument("--steps", type=int, default=0, help="steps per block (0: defaults)")
    parser.add_argument("--only", default="abc", help="workloads to run: a, b and/or c")
    args = parser.parse_args()
    rounds = 3 if args.quick else args.rounds
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {rounds} rounds")
    makers = [
        m for k, m in zip("abc", (logistic_2d, mlp, transformer), strict=True) if k in args.only
    ]
    if args.parts:
        for make in makers:
            w = make()
            w.steps = args.steps or w.steps
            print_parts(w, rounds)
        return
    print(f"{'workload':56} {'plain ms':>9} {'watched':>9} {'ratio':>7} {'naive/gl':>9}")
    for make in makers:
        w = make()
        w.steps = args.steps or w.steps
        t = measure(w, rounds)
        print(
            f"{w.name:56} {t['plain'] * 1e3:9.3f} {t['watched'] * 1e3:9.3f} "
            f"{t['ratio']:6.3f}x {t['naive_ratio']:8.2f}x",
            flush=True,
        )


if __name__ == "__main__":
    main()
