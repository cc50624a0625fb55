"""What the sinks cost on the MLP 4x1024 step (CPU): the on-device histograms alone, and a
watched loop with and without a TensorBoard sink, interleaved blocks, medians.

    python benchmarks/sink_overhead.py
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from collections.abc import Callable

import torch
from torch import nn

import gradlens
from gradlens.capture import gradstats
from gradlens.sinks import TensorBoard

STEPS, ROUNDS = 100, 5


def timed(f: Callable[[], object], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        f()
    return (time.perf_counter() - start) / n


def main() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = nn.Sequential(*[m for _ in range(4) for m in (nn.Linear(1024, 1024), nn.ReLU())])
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x = torch.randn(64, 1024)

    def step() -> None:
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()

    step()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    named = [(str(i), g) for i, g in enumerate(grads)]
    spec = gradstats.HistogramSpec(64, default=(-0.0625, 0.0625))
    light = statistics.median(timed(lambda: gradstats.light_stats(grads), 10) for _ in range(5))
    hist = statistics.median(timed(lambda: gradstats.histograms(named, spec), 5) for _ in range(5))
    n = sum(g.numel() for g in grads)
    print(
        f"gradients: {n / 1e6:.1f} M elements; statistics {light * 1e3:.1f} ms per step; "
        f"histograms {hist * 1e3:.1f} ms per histogram step ({hist / n * 1e9:.0f} ns/element)"
    )

    times: dict[str, list[float]] = {"plain": [], "watch": [], "watch+TensorBoard": []}
    for _ in range(ROUNDS):
        times["plain"].append(timed(step, STEPS))
        with gradlens.watch(model, opt, live=False):
            times["watch"].append(timed(step, STEPS))
        folder = tempfile.mkdtemp()
        try:
            with gradlens.watch(model, opt, live=False, sinks=[TensorBoard(folder)]):
                times["watch+TensorBoard"].append(timed(step, STEPS))
        finally:
            shutil.rmtree(folder)
    plain = statistics.median(times["plain"])
    for name, values in times.items():
        t = statistics.median(values)
        print(f"{name:18s} {t * 1e3:7.2f} ms/step  {t / plain:.3f}x plain")


if __name__ == "__main__":
    main()
