"""What recording costs: plain vs ``gradlens.trace()`` on the same steps, interleaved in one run.

A trace reads every gradient on the host (it is a debugging tool, not a training-loop monitor),
so it costs more than plain autograd; this prints how much. Run: python benchmarks/trace_overhead.py
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

import gradlens


def classic() -> None:
    w = torch.tensor([1.0], requires_grad=True)
    x = torch.tensor([2.0], requires_grad=True)
    y = torch.mul(torch.add(w, x), torch.add(w, 1))
    y.backward()


def make_mlp_step() -> Callable[[], None]:
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for _ in range(4):
        layers += [nn.Linear(256, 256), nn.ReLU()]
    model = nn.Sequential(*layers, nn.Linear(256, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    data = torch.randn(64, 256)
    target = torch.randn(64, 1)

    def step() -> None:
        opt.zero_grad()
        nn.functional.mse_loss(model(data), target).backward()
        opt.step()

    return step


def deep_chain() -> None:
    x = torch.ones(1, requires_grad=True)
    y = x
    for _ in range(2000):
        y = y * 1.0001
    y.sum().backward()


def timed(fn: Callable[[], None], traced: bool) -> float:
    start = time.perf_counter()
    if traced:
        with gradlens.trace():
            fn()
    else:
        fn()
    return time.perf_counter() - start


def main(repeats: int = 15) -> None:
    cases = {
        "classic y=(w+x)(w+1)": classic,
        "MLP 4x256, batch 64, SGD step": make_mlp_step(),
        "chain of 2000 muls": deep_chain,
    }
    print(f"{'case':34} {'plain ms':>9} {'traced ms':>10} {'traced/plain':>13}")
    for name, fn in cases.items():
        fn()  # warm up
        plain, traced = [], []
        for _ in range(repeats):  # interleaved, so both see the same machine state
            plain.append(timed(fn, traced=False))
            traced.append(timed(fn, traced=True))
        p, t = statistics.median(plain) * 1e3, statistics.median(traced) * 1e3
        print(f"{name:34} {p:9.3f} {t:10.3f} {t / p:12.1f}x")


if __name__ == "__main__":
    main()
