"""One rank of a distributed test run: ``python scenarios.py MODE OUTDIR`` (RANK, WORLD_SIZE,
MASTER_ADDR and MASTER_PORT set as torchrun sets them; see launch.py).

Each mode trains a tiny model with gloo on CPU under ``gradlens.watch`` and writes what the
test checks to ``OUTDIR/rank{R}.json``: the watched steps, the findings, gradlens's own
collective calls (counted by wrapping torch.distributed's functions), and, for the modes that
compare, the same quantities measured in this process without torch.distributed and without
gradlens, on the whole global batch (the single-process reference).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

import gradlens

MODE, OUT = sys.argv[1], Path(sys.argv[2])
RANK, WORLD = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
BATCH = 4  # rows per rank; the global batch has BATCH * WORLD
_ORIGINAL_DESTROY = dist.destroy_process_group  # taken before gradlens wraps it
# The DDP models stay referenced here and the process leaves by os._exit: freeing a DDP model
# frees its Reducer's gloo process group, whose destructor joins gloo's worker thread while
# holding the GIL; a worker still dropping a finished collective's thread-local state needs the
# GIL to decref a Python object in it, and both wait for ever (seen in torch 2.13 on the rank
# that never watches, so it is PyTorch's, not gradlens's).
KEEP: list[object] = []

COLLECTIVES = (
    "all_gather",
    "all_gather_into_tensor",
    "all_gather_object",
    "all_reduce",
    "broadcast",
    "gather",
    "reduce",
    "reduce_scatter_tensor",
    "barrier",
    "new_group",
)
calls: dict[str, int] = {}


def count_gradlens_collectives() -> None:
    """Wraps torch.distributed's collectives to count the calls gradlens's own code makes."""
    for name in COLLECTIVES:
        original = getattr(dist, name)

        def counted(*args, __name=name, __original=original, **kwargs):
            caller = sys._getframe(1).f_globals.get("__name__", "")
            if caller.startswith("gradlens"):
                calls[__name] = calls.get(__name, 0) + 1
            return __original(*args, **kwargs)

        setattr(dist, name, counted)


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The global batch of ``step`` (the same on every rank and in the reference)."""
    g = torch.Generator().manual_seed(1000 + step)
    return torch.randn(BATCH * WORLD, 6, generator=g), torch.randn(BATCH * WORLD, 3, generator=g)


def mine(t: torch.Tensor) -> torch.Tensor:
    return t[RANK * BATCH : (RANK + 1) * BATCH]


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))


def reference(steps: int) -> list[dict]:
    """Per step: the loss and, per parameter, the gradient norm, mean, max |g| and the weight
    norm before the step, of one process training on the global batch (no torch.distributed,
    no gradlens)."""
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    out = []
    for step in range(steps):
        opt.zero_grad()
        x, y = batch(step)
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        grads = {
            name: [
                p.grad.norm().item(),
                p.grad.mean().item(),
                p.grad.abs().max().item(),
                p.detach().norm().item(),
            ]
            for name, p in model.named_parameters()
        }
        out.append({"loss": loss.item(), "grads": grads})
        opt.step()
    return out


def steps_of(lens: gradlens.Lens) -> list[dict]:
    return [
        {
            "step": s.step,
            "loss": s.loss,
            "missing": list(s.missing),
            "grads": {
                n: [st.grad_norm, st.grad_mean, st.grad_max, st.weight_norm, st.zero_frac]
                for n, st in s.grads.items()
            },
        }
        for s in lens.steps
    ]


def finish(lens: gradlens.Lens, **extra: object) -> None:
    record = lens.record
    data = {
        "rank": RANK,
        "steps": steps_of(lens),
        "world_size": record.world_size,
        "record_rank": record.rank,
        "facts": [[f.kind, f.step, f.param, list(f.ranks), f.detail] for f in record.facts],
        "findings": [[d.kind, d.step, d.name, d.message] for d in record.diagnostics],
        "notes": list(record.notes),
        "calls": calls,
        **extra,
    }
    (OUT / f"rank{RANK}.json").write_text(json.dumps(data, indent=1, default=str))


def train(model: nn.Module, steps: int, opt: torch.optim.Optimizer) -> None:
    for step in range(steps):
        opt.zero_grad()
        x, y = batch(step)
        nn.functional.mse_loss(model(mine(x)), mine(y)).backward()
        opt.step()


def ddp() -> None:
    """DDP, 130 steps: flushes at 64 and 128, and when the block ends."""
    dist.init_process_group("gloo")
    count_gradlens_collectives()
    model = nn.parallel.DistributedDataParallel(make_model())
    KEEP.append(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    with gradlens.watch(model.module, opt) as lens:
        train(model, 130, opt)
    lens.report()  # rank 0 only
    plot = lens.plot(OUT / f"plot-r{RANK}.png")  # rank 0 only: rank 1 writes nothing
    finish(lens, reference=reference(130), plot=str(plot))
    dist.destroy_process_group()


def fsdp() -> None:
    """FSDP2 (fully_shard, DTensor gradients), 67 steps; then the process group is destroyed
    inside the block, through a reference to destroy_process_group taken before gradlens
    started (so gradlens cannot combine the last 3 steps, and must say so)."""
    from torch.distributed.fsdp import fully_shard

    dist.init_process_group("gloo")
    count_gradlens_collectives()
    model = make_model()
    for layer in (model[0], model[2]):
        fully_shard(layer)
    fully_shard(model)
    KEEP.append(model)
    kinds = {n: type(p).__name__ for n, p in model.named_parameters()}
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    shards = {}
    with gradlens.watch(model, opt, live=False) as lens:
        for step in range(67):
            opt.zero_grad()
            x, y = batch(step)
            nn.functional.mse_loss(model(mine(x)), mine(y)).backward()
            if step == 63:  # the last step of the first exchange: this rank's shards
                shards = {n: p.grad.to_local().norm().item() for n, p in model.named_parameters()}
            opt.step()
        _ORIGINAL_DESTROY()
    finish(lens, reference=reference(67), kinds=kinds, shards=shards)


class Branchy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Linear(6, 5)
        self.b = nn.Linear(5, 5)
        self.out = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor, use_b: bool = True) -> torch.Tensor:
        h = torch.tanh(self.a(x))
        if use_b:
            h = h + self.b(h)
        return self.out(h)


def faults() -> None:
    """DDP(find_unused_parameters=True) with three faults, all on rank 1: at step 1 its forward
    skips the branch ``b``; at step 2 it triples out.bias's gradient after the all-reduce; at
    step 4 its own backward makes NaN gradients (a hook on the output; the loss is finite)."""
    dist.init_process_group("gloo")
    net = Branchy()
    model = nn.parallel.DistributedDataParallel(net, find_unused_parameters=True)
    KEEP.append(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    local_b: list[torch.Tensor] = []
    net.b.weight.register_hook(lambda g: local_b.append(g.clone()))  # before the all-reduce
    ratio = None
    with gradlens.watch(net, opt, live=False) as lens:
        for step in range(6):
            opt.zero_grad()
            x, y = batch(step)
            out = model(mine(x), use_b=not (step == 1 and RANK == 1))
            if step == 4 and RANK == 1:
                out.register_hook(lambda g: g * math.nan)
            local_b.clear()
            nn.functional.mse_loss(out, mine(y)).backward()
            if step == 1 and RANK == 0:  # DDP's fill: rank 0's gradient averaged with zeros
                ratio = (net.b.weight.grad / local_b[0]).flatten().tolist()
            if step == 2 and RANK == 1:
                net.out.bias.grad.mul_(3.0)
            opt.step()
    lens.report()  # GRADLENS_ALL_RANKS=1: every rank
    lens.plot(OUT / f"plot-r{RANK}.png")
    finish(lens, fill_ratio=ratio)
    dist.destroy_process_group()


def dead() -> None:
    """Independent replicas (no DDP); rank 1 dies at step 70, after the first exchange; rank 0
    trains on to step 140, whose exchange must give up instead of waiting for ever."""
    dist.init_process_group("gloo")
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    start = time.monotonic()
    woke = None
    with gradlens.watch(model, opt, live=False) as lens:
        for step in range(140):
            if step == int(os.environ.get("DEAD_STEP", "70")) and RANK == 1:
                if os.environ.get("HANG"):  # alive but stuck: the timeout must end the wait
                    time.sleep(float(os.environ["HANG"]))
                    woke = time.time()
                else:
                    os._exit(3)
            opt.zero_grad()
            x, y = batch(step)
            nn.functional.mse_loss(model(mine(x)), mine(y)).backward()
            opt.step()
    finish(lens, seconds=time.monotonic() - start, ended=time.time(), woke=woke)
    dist.destroy_process_group()


def rank0_only() -> None:
    """DDP with watch() on rank 0 only (as one does with a logger): rank 0 must neither wait
    for the timeout nor stop, and keep the replicated statistics (the whole gradient)."""
    dist.init_process_group("gloo")
    model = nn.parallel.DistributedDataParallel(make_model())
    KEEP.append(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    start = time.monotonic()
    watching = gradlens.watch(model.module, opt, live=False) if RANK == 0 else None
    if watching is not None:
        with watching as lens:
            train(model, 70, opt)
        finish(lens, reference=reference(70), seconds=time.monotonic() - start)
    else:
        train(model, 70, opt)
    dist.destroy_process_group()


if __name__ == "__main__":
    modes = {"ddp": ddp, "fsdp": fsdp, "faults": faults, "dead": dead, "rank0-only": rank0_only}
    modes[MODE]()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # not through interpreter teardown: see KEEP
