"""gradlens next to torchviz, torchview and torchlens on the same models, in one run.

Models (``tests/model_zoo.py``, random weights, built from ``torch.nn`` only): the classic MLP
4 x 256 (batch 64), the ResNet-50 shape and the GPT-2-small shape (124 M parameters, tied
``lm_head``). For each tool it prints, as a markdown table:

* time: (forward + the tool + backward) / plain forward + backward, the median of ``--rounds``
  paired rounds (each tool's run is timed right after a plain one, so load on the machine hits
  both sides);
* memory: what the process holds more while the tool's result is kept (resident set size
  after minus before, MB; it includes what the allocator keeps);
* nodes: how many nodes the drawing has (gradlens: the full graph, the auto view that
  ``to_dot`` draws, ``depth=1``, ``depth=2`` and ``fold=True``; torchviz: ``make_dot``;
  torchview: ``draw_graph(depth=2)``; torchlens: ``draw(collapse="auto")``).

The peers are an optional extra: ``pip install -e ".[bench]"`` (torch held by the
constraints file). A peer that is not installed is skipped with a line saying so.

Run: python benchmarks/compare.py [--models mlp,resnet50,gpt2] [--rounds N] [--small]
     [--out FILE.md] [--threads N] [--cpu-time]
"""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import re
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import model_zoo

import gradlens

PEERS = {"torchviz": "0.0.3", "torchview": "0.2.7", "torchlens": "2.36.1"}


class Model:
    """A model, its inputs, and the loss computed from its output."""

    def __init__(
        self,
        name: str,
        model: nn.Module,
        inputs: tuple[torch.Tensor, ...],
        loss_of: Callable[[torch.Tensor], torch.Tensor],
    ) -> None:
        self.name, self.model, self.inputs, self.loss_of = name, model, inputs, loss_of

    def forward(self) -> torch.Tensor:
        return self.loss_of(self.model(self.inputs[0]))


def mlp(small: bool) -> Model:
    model, (x, y), _ = model_zoo.mlp_step()
    return Model("MLP 4x256, batch 64", model, (x,), lambda out: F.mse_loss(out, y))


def resnet50(small: bool) -> Model:
    batch, size = (1, 64) if small else (2, 224)
    model, (x, y), _ = model_zoo.resnet50_step(batch=batch, size=size)
    return Model(
        f"ResNet-50, {batch}x3x{size}x{size}", model, (x,), lambda out: F.cross_entropy(out, y)
    )


def gpt2(small: bool) -> Model:
    sizes = {"vocab": 1000, "seq": 16, "layers": 2} if small else {}
    seq = sizes.pop("seq", 64)
    model, (ids,), _ = model_zoo.gpt2_step(seq=seq, **sizes)
    vocab = model.lm_head.out_features

    def loss_of(logits: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits[:, :-1].reshape(-1, vocab), ids[:, 1:].reshape(-1))

    layers = len(model.transformer.h)
    return Model(f"GPT-2 ({layers} blocks), 1x{seq} tokens", model, (ids,), loss_of)


MODELS = {"mlp": mlp, "resnet50": resnet50, "gpt2": gpt2}


def rss_mb() -> float:
    """Returns the resident set size of this process, MB (Linux; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return 0.0


# ---------------------------------------------------------------- the tools
# Each runs forward, its own work and backward, and returns (what it keeps, node count or None).
Result = tuple[Any, dict[str, int | None]]


def plain(m: Model) -> Result:
    m.forward().backward()
    return None, {}


def gradlens_trace(m: Model) -> Result:
    with gradlens.trace(m.model) as t:
        m.forward().backward()
    g = t.graph
    counts: dict[str, int | None] = {"full": len(g.nodes)}
    if hasattr(g, "view"):  # module views (issue 10): what each view draws
        for key, kwargs in (
            ("auto", {"depth": "auto"}),
            ("depth=1", {"depth": 1}),
            ("depth=2", {"depth": 2}),
            ("fold", {"fold": True}),
        ):
            try:
                counts[key] = len(g.view(**kwargs).nodes)
            except Exception as e:  # a view this version cannot make: say so, keep going
                print(f"  gradlens view({kwargs}) failed: {type(e).__name__}: {e}")
                counts[key] = None
    return t, counts


def gradlens_graph(m: Model) -> Result:
    from gradlens.render.dot import to_dot

    loss = m.forward()
    g = gradlens.graph(loss, params=m.model)
    dot = to_dot(g)  # the auto view for a graph bigger than a page
    loss.backward()
    return (g, dot), {"drawn": _dot_nodes(dot), "full": len(g.nodes)}


def gradlens_guard(m: Model) -> Result:
    with gradlens.guard() as g:
        m.forward().backward()
    return g, {}


def anomaly(m: Model) -> Result:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.autograd.detect_anomaly():
            m.forward().backward()
    return None, {}


def torchviz(m: Model) -> Result:
    from torchviz import make_dot

    loss = m.forward()
    dot = make_dot(loss, params=dict(m.model.named_parameters()))
    source = dot.source
    loss.backward()
    return source, {"drawn": _dot_nodes(source)}


def torchview(m: Model) -> Result:
    from torchview import draw_graph

    graph = draw_graph(m.model, input_data=list(m.inputs), depth=2)
    source = graph.visual_graph.source
    m.forward().backward()
    return source, {"drawn": _dot_nodes(source)}


def torchlens(m: Model) -> Result:
    import torchlens as tl

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its notes on provenance and re-runs
        tr = tl.trace(m.model, list(m.inputs))
    out = tr.raw_output if torch.is_tensor(getattr(tr, "raw_output", None)) else None
    if out is None or out.grad_fn is None:  # no differentiable output kept: run our own
        m.forward().backward()
    else:
        tr.backward(m.loss_of(out))
    count: int | None
    try:
        dot = tr.draw(collapse="auto", vis_save_only=True, return_graph=True, vis_outpath=_TMP)
        source = getattr(dot, "source", dot)
        count = _dot_nodes(source) if isinstance(source, str) else None
    except Exception as e:
        print(f"  torchlens draw(collapse='auto') failed: {type(e).__name__}: {e}")
        count = None
    return tr, {"drawn": count}


_TMP = str(Path(os.environ.get("TMPDIR", "/tmp")) / "gradlens_compare_torchlens")
_NODE = re.compile(r'^\s*("[^"]+"|[\w.:]+)\s*\[', re.M)
_NOT_NODES = {"graph", "node", "edge"}


def _dot_nodes(source: str) -> int:
    """Returns how many node statements DOT text has (edges and defaults not counted)."""
    return sum(
        1
        for match in _NODE.finditer(source)
        if match.group(1) not in _NOT_NODES and "->" not in match.group(0)
    )


TOOLS: dict[str, tuple[Callable[[Model], Result], str | None]] = {
    "gradlens trace()": (gradlens_trace, None),
    "gradlens graph() + DOT": (gradlens_graph, None),
    "gradlens guard()": (gradlens_guard, None),
    "anomaly mode": (anomaly, None),
    "torchviz make_dot": (torchviz, "torchviz"),
    "torchview draw_graph(depth=2)": (torchview, "torchview"),
    "torchlens trace + backward": (torchlens, "torchlens"),
}


def _installed(peer: str) -> str | None:
    """Returns None when ``peer`` can be imported, else why not (a line to print)."""
    try:
        importlib.import_module(peer)
    except Exception as e:
        return (
            f"{peer} skipped: not installed ({type(e).__name__}: {e}); "
            f'pip install -e ".[bench]" installs {peer}=={PEERS[peer]}'
        )
    return None


#: wall time, or the process's CPU time (``--cpu-time``, steadier on an overloaded machine)
CLOCK = time.perf_counter


def timed(fn: Callable[[Model], Result], m: Model) -> tuple[float, Result]:
    gc.collect()
    start = CLOCK()
    result = fn(m)
    return CLOCK() - start, result


def measure(m: Model, tools: dict[str, Callable[[Model], Result]], rounds: int) -> list[dict]:
    rows = []
    timed(plain, m)  # warm up
    for name, fn in tools.items():
        try:
            timed(fn, m)  # warm up (imports, first-call caches)
            ratios, seconds = [], []
            counts: dict[str, int | None] = {}
            added = 0.0
            for r in range(rounds):
                m.model.zero_grad(set_to_none=True)
                base, _ = timed(plain, m)
                m.model.zero_grad(set_to_none=True)
                before = rss_mb()
                took, (kept, counts) = timed(fn, m)
                if r == 0:
                    added = rss_mb() - before
                del kept
                ratios.append(took / base)
                seconds.append(took)
            rows.append(
                {
                    "tool": name,
                    "ratio": statistics.median(ratios),
                    "seconds": statistics.median(seconds),
                    "mb": added,
                    "counts": counts,
                }
            )
        except Exception as e:
            print(f"  {name} failed on {m.name}: {type(e).__name__}: {e}")
            rows.append({"tool": name, "error": f"{type(e).__name__}: {e}"[:80]})
        print(f"  {name}: done", flush=True)
    return rows


def _counts_text(counts: dict[str, int | None]) -> str:
    return ", ".join(f"{k} {'-' if v is None else v}" for k, v in counts.items()) or "-"


def table(results: dict[str, tuple[float, list[dict]]]) -> str:
    lines = [
        "| model | tool | time / plain fwd+bwd | s | memory added (MB) | nodes drawn |",
        "|---|---|---:|---:|---:|---|",
    ]
    for model, (plain_s, rows) in results.items():
        lines.append(f"| {model} | plain forward+backward | 1.00x | {plain_s:.3f} | 0 | - |")
        for row in rows:
            if "error" in row:
                lines.append(f"| {model} | {row['tool']} | failed: {row['error']} | | | |")
                continue
            lines.append(
                f"| {model} | {row['tool']} | {row['ratio']:.2f}x | {row['seconds']:.3f} | "
                f"{row['mb']:.0f} | {_counts_text(row['counts'])} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="mlp,resnet50,gpt2")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--small", action="store_true", help="small sizes, for a smoke test")
    parser.add_argument("--tools", default="", help="substrings of tool names to run")
    parser.add_argument("--out", default="", help="also write the table to this file")
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
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, gradlens from "
        f"{Path(gradlens.__file__).parent}, {args.rounds} rounds, "
        + ("CPU time" if args.cpu_time else "wall time")
    )
    tools: dict[str, Callable[[Model], Result]] = {}
    for name, (fn, peer) in TOOLS.items():
        if args.tools and not any(s in name for s in args.tools.split(",")):
            continue
        why = _installed(peer) if peer else None
        if why:
            print(why)
            continue
        if peer:
            version = getattr(importlib.import_module(peer), "__version__", "?")
            print(f"{peer} {version}")
        tools[name] = fn
    results: dict[str, tuple[float, list[dict]]] = {}
    for key in args.models.split(","):
        m = MODELS[key](args.small)
        print(f"{m.name}:", flush=True)
        base = statistics.median(timed(plain, m)[0] for _ in range(max(args.rounds, 2)))
        results[m.name] = (base, measure(m, tools, args.rounds))
        del m
        gc.collect()
    text = table(results)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
