"""What recording costs: plain vs ``gradlens.trace()`` on the same steps, interleaved in one run.

For each model of ``tests/model_zoo.py`` at full size (the MLP 4x256 on a batch of 64, ResNet-50
on 2 images of 224x224, GPT-2 small on 64 tokens) it prints:

- time: one forward+backward, plain and inside ``gradlens.trace(model)``, alternated, medians of
  the process's CPU time (``time.process_time``: what the step itself costs, less disturbed by
  other programs on a shared machine than wall time, which is printed too);
- memory: the peak resident set (``ru_maxrss``) of a fresh subprocess that builds the model and
  runs one step, plain or traced; "added" is traced minus plain, as a share of the plain peak;
- graph: ``gradlens.graph(loss)`` + ``to_dot`` against torchviz's ``make_dot(...).source`` on the
  same loss (skipped, with a line saying so, when torchviz is not installed).

Run: python benchmarks/trace_overhead.py [--models mlp,resnet50,gpt2] [--repeats 5] [--no-memory]
The functions ``step_times``, ``peak_memory`` and ``graph_times`` are what benchmarks/compare.py
imports.
"""

from __future__ import annotations

import argparse
import gc
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from model_zoo import gpt2_step, mlp_step, resnet50_step

import gradlens

MODELS: dict[str, Callable[[], Any]] = {
    "mlp": mlp_step,
    "resnet50": resnet50_step,
    "gpt2": gpt2_step,
}
LABELS = {
    "mlp": "MLP 4x256, batch 64",
    "resnet50": "ResNet-50, 2x3x224x224",
    "gpt2": "GPT-2 small, 1x64 tokens",
}


def classic() -> None:
    """y = (w + x)(w + 1), one backward: the smallest graph of the lessons."""
    w = torch.tensor([1.0], requires_grad=True)
    x = torch.tensor([2.0], requires_grad=True)
    torch.mul(torch.add(w, x), torch.add(w, 1)).backward()


def deep_chain() -> None:
    """A chain of 2000 multiplications, one backward: many tiny ops."""
    x = torch.ones(1, requires_grad=True)
    y = x
    for _ in range(2000):
        y = y * 1.0001
    y.sum().backward()


SMALL: dict[str, Callable[[], None]] = {
    "classic y=(w+x)(w+1)": classic,
    "chain of 2000 muls": deep_chain,
}


def small_times(fn: Callable[[], None], repeats: int = 15) -> tuple[float, float]:
    """Returns median CPU seconds of ``fn()`` plain and inside ``gradlens.trace()``."""
    fn()
    plain, traced = [], []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        plain.append(time.process_time() - start)
        start = time.process_time()
        with gradlens.trace():
            fn()
        traced.append(time.process_time() - start)
    return statistics.median(plain), statistics.median(traced)


def _clocks() -> tuple[float, float]:
    return time.process_time(), time.perf_counter()


def _plain(model: torch.nn.Module, inputs: tuple[Any, ...], loss_fn: Any) -> None:
    model.zero_grad(set_to_none=True)
    loss_fn(model, *inputs).backward()


def _traced(model: torch.nn.Module, inputs: tuple[Any, ...], loss_fn: Any) -> Any:
    model.zero_grad(set_to_none=True)
    with gradlens.trace(model) as t:
        loss_fn(model, *inputs).backward()
    return t


def step_times(name: str, repeats: int = 5) -> dict[str, float]:
    """Returns median CPU and wall seconds of a plain and a traced forward+backward of model
    ``name`` (alternated, after one warm-up of each), and the number of events recorded."""
    model, inputs, loss_fn = MODELS[name]()
    _plain(model, inputs, loss_fn)
    events = len(_traced(model, inputs, loss_fn).events)
    runs: dict[str, list[tuple[float, float]]] = {"plain": [], "traced": []}
    for _ in range(repeats):
        for mode, run in (("plain", _plain), ("traced", _traced)):
            gc.collect()
            cpu0, wall0 = _clocks()
            result = run(model, inputs, loss_fn)
            cpu1, wall1 = _clocks()
            del result
            runs[mode].append((cpu1 - cpu0, wall1 - wall0))
    out: dict[str, float] = {"events": float(events)}
    for mode, samples in runs.items():
        out[f"{mode}_cpu"] = statistics.median(s[0] for s in samples)
        out[f"{mode}_wall"] = statistics.median(s[1] for s in samples)
    return out


def _peak_mb() -> float:
    """Returns this process's peak resident set in MiB (``VmHWM``: unlike ``ru_maxrss`` it is
    not inherited from the parent across ``exec``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux: best effort


def _memory_child(name: str, mode: str) -> None:
    model, inputs, loss_fn = MODELS[name]()
    gc.collect()
    before = _peak_mb()
    run = _traced if mode == "traced" else _plain
    result = run(model, inputs, loss_fn)
    print(f"{before:.1f} {_peak_mb():.1f}")
    del result


def peak_memory(name: str, mode: str) -> tuple[float, float]:
    """Returns (peak RSS in MiB before the step, peak RSS after it) of a fresh subprocess that
    builds model ``name`` and runs one step, ``mode`` "plain" or "traced"."""
    out = subprocess.run(
        [sys.executable, __file__, "--memory-child", name, mode],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return float(out[-2]), float(out[-1])


def graph_times(name: str = "gpt2", repeats: int = 3) -> dict[str, float]:
    """Returns median wall seconds of ``gradlens.graph(loss)`` + ``to_dot`` and, when torchviz
    is installed, of ``torchviz.make_dot(loss, params).source``, on one loss of model ``name``,
    and the number of nodes of each."""
    model, inputs, loss_fn = MODELS[name]()
    loss = loss_fn(model, *inputs)
    params = dict(model.named_parameters())
    out: dict[str, float] = {}

    def ours() -> int:
        g = gradlens.graph(loss, params=model)
        g.to_dot()
        return len(g.nodes)

    cases: dict[str, Callable[[], int]] = {"gradlens": ours}
    try:
        from torchviz import make_dot

        def theirs() -> int:
            return make_dot(loss, params=params).source.count("\n")

        cases["torchviz"] = theirs
    except ImportError:
        pass
    samples: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(repeats):
        for key, fn in cases.items():
            start = time.perf_counter()
            out[f"{key}_size"] = float(fn())
            samples[key].append(time.perf_counter() - start)
    for key, values in samples.items():
        out[key] = statistics.median(values)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mlp,resnet50,gpt2")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--no-graph", action="store_true")
    parser.add_argument("--memory-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        _memory_child(*args.memory_child)
        return
    torch.set_num_threads(1)  # one core each, so CPU time is the step's own
    names = [n for n in args.models.split(",") if n]
    print("time: median of", args.repeats, "alternated runs, one intra-op thread")
    print(
        f"{'model':26} {'events':>6} {'plain ms':>9} {'traced ms':>10} {'ratio':>6}"
        f" {'wall ratio':>10} {'ms/event':>9}"
    )
    for name in names:
        r = step_times(name, args.repeats)
        p, t = r["plain_cpu"] * 1e3, r["traced_cpu"] * 1e3
        wall = r["traced_wall"] / r["plain_wall"]
        per = (t - p) / max(r["events"], 1)
        print(
            f"{LABELS[name]:26} {r['events']:6.0f} {p:9.1f} {t:10.1f} {t / p:5.2f}x"
            f" {wall:9.2f}x {per:9.3f}"
        )
    for label, fn in SMALL.items():
        p, t = small_times(fn)
        print(f"{label:26} {'':6} {p * 1e3:9.2f} {t * 1e3:10.2f} {t / p:5.1f}x")
    if not args.no_memory:
        print("\nmemory: peak RSS of a fresh process, MiB (model built, then one step)")
        print(f"{'model':26} {'model':>7} {'plain':>8} {'traced':>8} {'added':>8} {'of plain':>9}")
        for name in names:
            base, plain = peak_memory(name, "plain")
            _, traced = peak_memory(name, "traced")
            added = traced - plain
            print(
                f"{LABELS[name]:26} {base:7.0f} {plain:8.0f} {traced:8.0f} {added:8.0f}"
                f" {added / plain:8.1%}"
            )
    if not args.no_graph:
        g = graph_times("gpt2")
        print(f"\ngraph of GPT-2 small's loss ({g['gradlens_size']:.0f} nodes):")
        print(f"  gradlens.graph + to_dot   {g['gradlens'] * 1e3:8.0f} ms")
        if "torchviz" in g:
            ratio = g["gradlens"] / g["torchviz"]
            ms = g["torchviz"] * 1e3
            print(f"  torchviz make_dot(...).source {ms:4.0f} ms   gradlens/torchviz {ratio:.2f}x")
        else:
            print("  torchviz is not installed (pip install torchviz): no comparison")


if __name__ == "__main__":
    main()
