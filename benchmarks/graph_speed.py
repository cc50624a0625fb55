"""How long drawing a model's autograd graph takes: ``gradlens.graph()`` + ``to_dot()`` next to
torchviz's ``make_dot(...).source``, on the same loss, alternated in one process.

The model stays loaded, as in a user's session: a full collection of Python's cyclic garbage
collector then walks all of its objects, and a tool that makes many objects sets such
collections off. So each tool is timed over blocks of ``--calls`` calls (mean per call, the
collections it set off included) as well as call by call (median), and the collections are
counted. torchviz (``pip install -e ".[bench]"``) is skipped with a line when absent.

Run: python benchmarks/graph_speed.py [--model gpt2|resnet50|mlp] [--rounds N] [--calls N]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import model_zoo

import gradlens
from gradlens.render.dot import to_dot

STEPS = {
    "gpt2": model_zoo.gpt2_step,
    "resnet50": model_zoo.resnet50_step,
    "mlp": model_zoo.mlp_step,
}


def _collections() -> Callable[[], int]:
    """Returns a counter of the collector's passes since it was made (its callback is left in
    ``gc.callbacks`` for the process's life: a benchmark)."""
    passes = [0]

    def seen(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            passes[0] += 1

    gc.callbacks.append(seen)
    return lambda: passes[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="gpt2", choices=sorted(STEPS))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=20, help="calls per timed block")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, inputs, loss_fn = STEPS[args.model]()
    loss = loss_fn(model, *inputs)

    def gradlens_dot() -> str:
        return to_dot(gradlens.graph(loss, params=model))

    tools: dict[str, Callable[[], str]] = {"gradlens graph() + to_dot()": gradlens_dot}
    try:
        from torchviz import make_dot

        tools["torchviz make_dot().source"] = lambda: (
            make_dot(loss, params=dict(model.named_parameters())).source
        )
    except ImportError:
        print("torchviz is not installed (pip install -e '.[bench]'): gradlens alone")
    passes = _collections()
    for tool in tools.values():  # warm up
        for _ in range(3):
            tool()
    blocks: dict[str, list[float]] = {name: [] for name in tools}
    single: dict[str, list[float]] = {name: [] for name in tools}
    counted: dict[str, int] = dict.fromkeys(tools, 0)
    for _ in range(args.rounds):
        for name, tool in tools.items():
            before, start = passes(), time.perf_counter()
            for _ in range(args.calls):
                tool()
            blocks[name].append((time.perf_counter() - start) / args.calls)
            counted[name] += passes() - before
            for _ in range(3):
                start = time.perf_counter()
                tool()
                single[name].append(time.perf_counter() - start)
    print(
        f"torch {torch.__version__}, {args.threads} thread(s), {args.model}, "
        f"{args.rounds} rounds of {args.calls} calls"
    )
    print(f"{'tool':30} {'mean ms/call':>13} {'median ms':>10} {'gc passes/call':>15}")
    for name in tools:
        mean = statistics.median(blocks[name]) * 1e3
        median = statistics.median(single[name]) * 1e3
        per_call = counted[name] / (args.rounds * args.calls)
        print(f"{name:30} {mean:13.2f} {median:10.2f} {per_call:15.2f}")
    if len(tools) == 2:
        a, b = (statistics.median(blocks[n]) for n in tools)
        print(f"gradlens / torchviz (mean per call): {a / b:.2f}x")


if __name__ == "__main__":
    main()
