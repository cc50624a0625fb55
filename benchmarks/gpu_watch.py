"""``gradlens.watch()`` on a GPU: host syncs per step (must be 0) and the cost, GPT-2 small.

On CUDA it trains GPT-2 small (tests/model_zoo.py: 124 M parameters, Hugging Face's layout;
batch 8 x 512 tokens by default, AdamW) three ways, interleaved: plain, ``watch()``, and
``watch(nan_origin=True)``. Inside each block it runs with
``torch.cuda.set_sync_debug_mode("warn")``
and counts the warnings PyTorch issues for every synchronizing call, per step, for each way
(the plain loop's count is the baseline: the watched ones must add 0). The blocks are shorter
than gradlens's flush interval (64 steps), and the final flush happens outside the counted
region, where it is the one batched transfer of the whole block. It prints the median step
times and the watched / plain ratios.

Without CUDA it says "no CUDA: skipped" and runs the same code once on a tiny GPT-2 on the CPU
(a smoke test of this script; nothing is counted or timed there).

Run: python benchmarks/gpu_watch.py [--rounds N] [--steps N] [--batch B] [--seq T]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import model_zoo

import gradlens

WAYS = ("plain", "watch", "watch+nan_origin")


def make(
    device: str, batch: int, seq: int, **sizes: int
) -> tuple[torch.nn.Module, Callable[[], None], torch.optim.Optimizer]:
    model, (ids,), loss_fn = model_zoo.gpt2_step(batch=batch, seq=seq, **sizes)
    model.to(device)
    ids = ids.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        opt.zero_grad()
        loss_fn(model, ids).backward()
        opt.step()

    return model, step, opt


def block(
    way: str,
    model: torch.nn.Module,
    step: Callable[[], None],
    opt: torch.optim.Optimizer,
    steps: int,
    count: bool,
) -> tuple[float, int]:
    """Returns (seconds per step, synchronizing calls counted inside the steps)."""
    lens = None
    if way != "plain":
        lens = gradlens.watch(model, opt, live=False, nan_origin=way.endswith("nan_origin"))
        lens.__enter__()
    try:
        if count:
            torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if count:
                torch.cuda.set_sync_debug_mode("warn")
            start = time.perf_counter()
            try:
                for _ in range(steps):
                    step()
            finally:
                if count:
                    torch.cuda.set_sync_debug_mode("default")
        if count:
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
    finally:
        if lens is not None:
            lens.__exit__(None, None, None)  # the one batched copy, outside the counted steps
    syncs = sum("synchroniz" in str(w.message) for w in caught)
    if lens is not None:
        assert len(lens.steps) == steps, "every step reached the host at the end"
    return elapsed / steps, syncs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20, help="per block; below 64 (the flush)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=512)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA: skipped (this check needs a GPU); smoke-testing the script on the CPU")
        model, step, opt = make("cpu", 1, 16, vocab=500, ctx=16, d=64, layers=2, heads=2)
        for way in WAYS:
            seconds, _ = block(way, model, step, opt, 2, count=False)
            print(f"  {way:18} ran 2 steps ({seconds * 1e3:.0f} ms/step, not a measurement)")
        return
    print(
        f"torch {torch.__version__}, {torch.cuda.get_device_name()}, GPT-2 small, batch "
        f"{args.batch} x {args.seq}, AdamW, {args.rounds} rounds of {args.steps} steps"
    )
    model, step, opt = make("cuda", args.batch, args.seq)
    for way in WAYS:  # warm up every path (allocator, kernels)
        block(way, model, step, opt, 3, count=False)
    times: dict[str, list[float]] = {w: [] for w in WAYS}
    syncs: dict[str, list[int]] = {w: [] for w in WAYS}
    for _ in range(args.rounds):
        for way in WAYS:
            seconds, n = block(way, model, step, opt, args.steps, count=True)
            times[way].append(seconds)
            syncs[way].append(n)
    print(f"{'way':18} {'ms/step':>9} {'ratio':>7} {'syncs/step':>11} (plain's are the loop's own)")
    for way in WAYS:
        ratios = [t / p for t, p in zip(times[way], times["plain"], strict=True)]
        per_step = max(syncs[way]) / args.steps
        print(
            f"{way:18} {statistics.median(times[way]) * 1e3:9.2f} "
            f"{statistics.median(ratios):6.3f}x {per_step:11.2f}"
        )
    added = {w: max(syncs[w]) - max(syncs["plain"]) for w in WAYS[1:]}
    print(
        "host syncs added per step by gradlens: "
        + ", ".join(f"{w}: {n / args.steps:g}" for w, n in added.items())
    )


if __name__ == "__main__":
    main()
