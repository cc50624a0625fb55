"""Activation checkpointing: the checkpointed forward must re-run exactly as often as plainly."""

from __future__ import annotations

import weakref
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import (
    CheckpointPolicy,
    checkpoint,
    checkpoint_sequential,
    create_selective_checkpoint_contexts,
    set_checkpoint_early_stop,
)

from ._harness import Case, Outcome, Rec, count_alive, local_hooks
from ._models import data, mlp


def _checkpointed(rec: Rec, reentrant: bool) -> Outcome:
    model = mlp(6, 8, 8, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    calls = {"forward": 0}
    block = model[0:4]

    def run_block(h: torch.Tensor) -> torch.Tensor:
        calls["forward"] += 1
        return block(h)

    x = data(5, 6).requires_grad_(reentrant)  # reentrant checkpoints need an input with grad
    target = data(5, 3, seed=101)
    refs: list[weakref.ref[Any]] = []

    def train() -> None:
        for _ in range(2):
            opt.zero_grad()
            h = checkpoint(run_block, x, use_reentrant=reentrant)
            loss = F.mse_loss(model[4](h), target)
            loss.backward()
            opt.step()
            refs.extend([weakref.ref(h), weakref.ref(loss)])

    out = Outcome()
    with out.catch(), rec(model, opt):
        train()
    out.keep_model("model", model)
    out.keep(x_grad=x.grad)
    out.counters.update(forward_runs=calls["forward"], **local_hooks(model, opt))
    out.counters["alive"] = count_alive(refs)
    return out


def checkpoint_nonreentrant(rec: Rec) -> Outcome:
    return _checkpointed(rec, reentrant=False)


def checkpoint_reentrant(rec: Rec) -> Outcome:
    return _checkpointed(rec, reentrant=True)


def checkpoint_sequential_segments(rec: Rec) -> Outcome:
    model = mlp(6, 8, 8, 8, 3)
    runs: list[str] = []
    for m in model:
        m.register_forward_pre_hook(lambda mod, args: runs.append(type(mod).__name__))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    x, target = data(4, 6), data(4, 3, seed=101)
    out = Outcome()
    with out.catch(), rec(model, opt):
        for _ in range(2):
            opt.zero_grad()
            y = checkpoint_sequential(model, 2, x, use_reentrant=False)
            F.mse_loss(y, target).backward()
            opt.step()
    out.keep_model("model", model)
    out.counters["module_runs"] = runs
    out.counters.update(local_hooks(opt))
    return out


def selective_checkpoint(rec: Rec) -> Outcome:
    """Save matmuls, recompute everything else (torch's selective activation checkpointing)."""
    model = mlp(6, 8, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    decisions: list[str] = []

    def policy(ctx, op, *args, **kwargs):  # type: ignore[no-untyped-def]
        decisions.append(f"{'recompute' if ctx.is_recompute else 'forward'}:{op}")
        if op in (torch.ops.aten.mm.default, torch.ops.aten.addmm.default):
            return CheckpointPolicy.MUST_SAVE
        return CheckpointPolicy.PREFER_RECOMPUTE

    def context_fn():  # type: ignore[no-untyped-def]
        return create_selective_checkpoint_contexts(policy)

    x, target = data(4, 6), data(4, 3, seed=101)
    out = Outcome()
    with out.catch(), rec(model, opt):
        for _ in range(2):
            opt.zero_grad()
            y = checkpoint(model, x * 2.0, use_reentrant=False, context_fn=context_fn)
            F.mse_loss(y, target).backward()
            opt.step()
    out.keep_model("model", model)
    out.counters["policy"] = decisions
    return out


def checkpoint_dropout_nested(rec: Rec) -> Outcome:
    """A checkpointed block with dropout (the RNG state is replayed on recompute) holding a
    nested checkpoint, and early stop switched off: each forward and re-run counted."""
    torch.manual_seed(21)
    inner = torch.nn.Sequential(torch.nn.Linear(6, 6), torch.nn.Dropout(0.3), torch.nn.GELU())
    outer = torch.nn.Linear(6, 6)
    head = torch.nn.Linear(6, 2)
    model = torch.nn.ModuleList([inner, outer, head])
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    runs = {"inner": 0, "outer": 0}

    def run_inner(h: torch.Tensor) -> torch.Tensor:
        runs["inner"] += 1
        return inner(h)

    def run_outer(h: torch.Tensor, *, scale: float) -> torch.Tensor:
        runs["outer"] += 1
        h = checkpoint(run_inner, outer(h) * scale, use_reentrant=False)
        return h + 1

    x, y = data(4, 6), torch.tensor([0, 1, 1, 0])
    out = Outcome()
    with out.catch(), rec(model, opt), set_checkpoint_early_stop(False):
        for _ in range(2):
            opt.zero_grad()
            h = checkpoint(run_outer, x, use_reentrant=False, scale=0.5)
            F.cross_entropy(head(h), y).backward()
            opt.step()
    out.keep_model("model", model)
    out.keep(rng=torch.rand(2))
    out.counters.update(runs, **local_hooks(model, opt))
    return out


CASES = [
    Case("checkpoint_nonreentrant", checkpoint_nonreentrant),
    Case("checkpoint_reentrant", checkpoint_reentrant),
    Case("checkpoint_sequential", checkpoint_sequential_segments),
    Case("selective_checkpoint", selective_checkpoint),
    Case("checkpoint_dropout_nested", checkpoint_dropout_nested),
]
