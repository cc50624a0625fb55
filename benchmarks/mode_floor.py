"""What a torch-function mode costs before gradlens does anything: the floor under ``guard()``.

Two parts, both in CPU time of this process, side by side in one run (the order rotates from
round to round; medians of the per-round differences or ratios):

* per op, on the chain's op ``x * 1.0001`` (a 1-element tensor that requires grad): the op
  alone; under an empty ``TorchFunctionMode`` (its ``__torch_function__`` only calls
  ``func(*args, **(kwargs or {}))``); the same without the empty kwargs dict; under a mode whose
  handler returns a ready tensor without running the op (what PyTorch's C++ spends to reach a
  Python handler, and the handler's call); ``func(*args)`` called directly with no mode (the
  re-dispatch the handler has to make: the same op through ``TensorBase.mul``); pushing and
  popping a mode on the torch-function stack (PyTorch stashes the mode around each handler);
  and ``gradlens.guard()``;
* per step, on (h) the MLP 4 x 256 and (i) the 10,000-op chain of ``guard_overhead.py``: plain;
  the empty mode; the empty mode taken off the stack during optimizer steps (``StepWindow``,
  what the guard does: the floor of its design); and ``guard()``.

Run: python benchmarks/mode_floor.py [--rounds N] [--only ops,h,i] [--threads N]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import guard_overhead  # benchmarks/guard_overhead.py: the (h) and (i) workloads
import torch
from torch.overrides import TorchFunctionMode

import gradlens
from gradlens.capture.step_window import StepWindow

CLOCK = time.process_time


class Empty(TorchFunctionMode):
    """The empty mode: calls the function, nothing else."""

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        return func(*args, **(kwargs or {}))


class NoDict(TorchFunctionMode):
    """The empty mode without the empty kwargs dict."""

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        return func(*args, **kwargs) if kwargs else func(*args)


class Ready(TorchFunctionMode):
    """Returns a ready tensor: PyTorch's way into the handler and back, no op run."""

    def __init__(self, result: torch.Tensor) -> None:
        super().__init__()
        self.result = result

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        return self.result


@contextlib.contextmanager
def empty_window() -> Iterator[None]:
    """The empty mode, off the stack during optimizer steps (as ``guard()`` keeps its own)."""
    mode = Empty()
    mode.__enter__()
    window = StepWindow(mode)
    window.start()
    try:
        yield
    finally:
        if not window.stop():
            mode.__exit__(None, None, None)


def per_op(rounds: int, n: int = 20_000) -> dict[str, float]:
    """Returns the median µs per op of each way of running ``x * 1.0001``."""
    w = torch.ones(1, requires_grad=True)
    x = w * 1.0
    func = torch._C.TensorBase.mul
    args = (x, 1.0001)
    ready = x * 1.0001
    stack_mode = Empty()

    def op() -> None:
        for _ in range(n):
            x * 1.0001

    def redispatch() -> None:
        for _ in range(n):
            func(*args)

    def push_pop() -> None:
        for _ in range(n):
            torch._C._push_on_torch_function_stack(stack_mode)
            torch._C._pop_torch_function_stack()

    def loop() -> None:
        for _ in range(n):
            pass

    cases: dict[str, tuple[Callable[[], Any], Callable[[], None]]] = {
        "loop": (contextlib.nullcontext, loop),
        "op": (contextlib.nullcontext, op),
        "empty mode": (Empty, op),
        "empty mode, no kwargs dict": (NoDict, op),
        "mode returning a ready tensor": (lambda: Ready(ready), op),
        "func(*args), no mode": (contextlib.nullcontext, redispatch),
        "push + pop of the mode stack": (contextlib.nullcontext, push_pop),
        "guard()": (gradlens.guard, op),
    }
    names = list(cases)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            make, body = cases[name]
            with make():
                start = CLOCK()
                body()
                times[name].append((CLOCK() - start) / n * 1e6)
    base = times["loop"]
    return {
        name: statistics.median(a - b for a, b in zip(times[name], base, strict=True))
        for name in names[1:]
    }


MODES: dict[str, Callable[[], Any]] = {
    "plain": contextlib.nullcontext,
    "empty": Empty,
    "empty+window": empty_window,
    "guard": gradlens.guard,
}


def per_step(w: guard_overhead.Workload, rounds: int, steps: int) -> dict[str, float]:
    """Returns the median step time in ms of plain, and the median ratio to plain of each
    other mode."""
    names = list(MODES)
    for name in names:  # warm up every path once
        with MODES[name]():
            w.step()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = CLOCK()
            with MODES[name]():
                for _ in range(steps):
                    w.step()
            times[name].append((CLOCK() - start) / steps)
    out = {"plain ms": statistics.median(times["plain"]) * 1e3}
    for name in names[1:]:
        ratios = (a / b for a, b in zip(times[name], times["plain"], strict=True))
        out[name] = statistics.median(ratios)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--only", default="ops,h,i", help="ops, h, i (comma-separated)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.rounds} rounds")
    if "ops" in parts:
        us = per_op(args.rounds)
        print("µs per `x * 1.0001` (CPU time, loop subtracted):")
        for name, value in us.items():
            print(f"  {name:32} {value:6.2f}")
        op = us["op"]
        print(f"  => the empty mode adds {us['empty mode'] - op:.2f} µs per op: reaching the "
              f"handler and back {us['mode returning a ready tensor']:.2f}, the re-dispatch "
              f"of func {us['func(*args), no mode'] - op:+.2f}; guard() adds "
              f"{us['guard()'] - us['empty mode']:.2f} on top")  # fmt: skip
    for key in ("h", "i"):
        if key in parts:
            w = guard_overhead.WORKLOADS[key]()
            t = per_step(w, args.rounds, w.steps)
            cells = "  ".join(
                f"{name} {value:.3f}x" for name, value in t.items() if name != "plain ms"
            )
            print(f"{w.name:46} plain {t['plain ms']:7.2f} ms  {cells}", flush=True)


if __name__ == "__main__":
    main()
