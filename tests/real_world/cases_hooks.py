"""Saved-tensor hooks and the contexts PyTorch builds on them: pack/unpack must run exactly as
often as plainly, and an unpack hook's exception must come out of ``backward()``."""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch.autograd.graph import (
    allow_mutation_on_saved_tensors,
    save_on_cpu,
    saved_tensors_hooks,
)

from ._harness import Case, Outcome, Rec, local_hooks
from ._models import data, mlp


def pack_unpack_counts(rec: Rec) -> Outcome:
    """An offloading-style pair: pack copies out, unpack brings back; both counted."""
    model = mlp(5, 7, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    calls = {"pack": 0, "unpack": 0}

    def pack(t: torch.Tensor) -> tuple[torch.device, torch.Tensor]:
        calls["pack"] += 1
        return t.device, t.detach().clone()

    def unpack(packed: tuple[torch.device, torch.Tensor]) -> torch.Tensor:
        calls["unpack"] += 1
        return packed[1].to(packed[0])

    x, target = data(4, 5), data(4, 3, seed=101)
    out = Outcome()
    with out.catch(), rec(model, opt):
        for _ in range(2):
            opt.zero_grad()
            with saved_tensors_hooks(pack, unpack):
                loss = F.mse_loss(model(x * 2.0 + 1), target)
            loss.backward()
            opt.step()
    out.keep_model("model", model)
    out.counters.update(calls, **local_hooks(model, opt))
    return out


def unpack_hook_raises(rec: Rec) -> Outcome:
    """The unpack hook refuses (an evicted offload): PyTorch raises from backward()."""
    w = data(4, 4).requires_grad_()
    calls = {"pack": 0, "unpack": 0}

    def pack(t: torch.Tensor) -> torch.Tensor:
        calls["pack"] += 1
        return t

    def unpack(t: torch.Tensor) -> torch.Tensor:
        calls["unpack"] += 1
        raise ValueError("offloaded activation was evicted; cannot unpack")

    x = data(3, 4)
    out = Outcome()
    with out.catch(), rec():
        with saved_tensors_hooks(pack, unpack):
            y = torch.tanh(x @ w).sum()
        calls["pack_before_backward"] = calls["pack"]
        y.backward()
    out.keep(w=w, w_grad=w.grad)
    out.counters.update(calls)
    return out


def save_on_cpu_training(rec: Rec) -> Outcome:
    model = mlp(5, 6, 6, 2)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    x, target = data(4, 5), data(4, 2, seed=101)
    out = Outcome()
    with out.catch(), rec(model, opt):
        for _ in range(2):
            opt.zero_grad()
            with save_on_cpu(pin_memory=False):
                loss = F.mse_loss(model(x), target)
            loss.backward()
            opt.step()
    out.keep_model("model", model)
    return out


def _mutation_allowed(rec: Rec, recorder_inside: bool) -> Outcome:
    """PyTorch's own test: under allow_mutation_on_saved_tensors a write to a saved tensor is
    cloned first, so backward succeeds with the original values' gradient: nothing to report."""
    a = data(2, 3).requires_grad_()
    b = p = None
    out = Outcome()
    outer = contextlib.nullcontext() if recorder_inside else rec()
    with out.catch(), outer, allow_mutation_on_saved_tensors() as ctx:
        with rec() if recorder_inside else contextlib.nullcontext():
            b = a.clone()
            s = (b**2).sum()
            b.sin_()  # a write to a saved tensor, allowed by the context
            s.backward()
            p = a * 3
            q = (p * p).sum()
            p.mul_(0.5)  # another, on a saved tensor of a different node
            q.backward()
        out.counters["ctx"] = type(ctx).__name__
    out.keep(a=a, a_grad=a.grad, b=b, p=p)
    return out


def mutation_allowed_recorder_outside(rec: Rec) -> Outcome:
    return _mutation_allowed(rec, recorder_inside=False)


def mutation_allowed_recorder_inside(rec: Rec) -> Outcome:
    return _mutation_allowed(rec, recorder_inside=True)


CASES = [
    Case("saved_tensors_hooks_counts", pack_unpack_counts),
    Case(
        "unpack_hook_raises",
        unpack_hook_raises,
        raises="offloaded activation was evicted",
    ),
    Case("save_on_cpu", save_on_cpu_training),
    Case("allow_mutation_outside", mutation_allowed_recorder_outside),
    Case("allow_mutation_inside", mutation_allowed_recorder_inside),
]
