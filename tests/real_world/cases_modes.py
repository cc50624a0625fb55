"""Dispatch modes the user runs, around the recorder and inside it: FLOP counts and op logs must
not change (gradlens must not add ops to the user's mode), also with Python scalars saved."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from ._harness import Case, Outcome, Rec, local_hooks
from ._models import data, mlp


class OpLog(TorchDispatchMode):
    """A user's logging mode: every aten op that reaches it, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


_X, _TARGET = data(4, 5), data(4, 3, seed=101)


def _train(model: torch.nn.Module, opt: torch.optim.Optimizer) -> None:
    x, target = _X, _TARGET
    for _ in range(2):
        opt.zero_grad()
        h = model(x * 2.0)  # a Python scalar: MulBackward saves a wrapped number
        loss = F.mse_loss(h + 1, target)
        loss.backward()
        opt.step()


def _with_mode(
    rec: Rec, make: Callable[[], Any], read: Callable[[Any], dict[str, Any]], inside: bool
) -> Outcome:
    model = mlp(5, 6, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    mode = make()
    out = Outcome()
    with out.catch():
        if inside:
            with rec(model, opt), mode:
                _train(model, opt)
        else:
            with mode, rec(model, opt):
                _train(model, opt)
    out.keep_model("model", model)
    out.counters.update(read(mode), **local_hooks(model, opt))
    return out


def _flops(mode: FlopCounterMode) -> dict[str, Any]:
    per_op = {
        f"{module}/{op}": n
        for module, ops in mode.get_flop_counts().items()
        for op, n in ops.items()
    }
    return {"total_flops": mode.get_total_flops(), "flops": per_op}


def _oplog(mode: OpLog) -> dict[str, Any]:
    return {"ops": mode.ops}


def flops_around(rec: Rec) -> Outcome:
    return _with_mode(rec, lambda: FlopCounterMode(display=False), _flops, inside=False)


def flops_inside(rec: Rec) -> Outcome:
    return _with_mode(rec, lambda: FlopCounterMode(display=False), _flops, inside=True)


def oplog_around(rec: Rec) -> Outcome:
    return _with_mode(rec, OpLog, _oplog, inside=False)


def oplog_inside(rec: Rec) -> Outcome:
    return _with_mode(rec, OpLog, _oplog, inside=True)


def oplog_scalar_ops(rec: Rec) -> Outcome:
    """Ops that take Python scalars (saved as wrapped numbers), forward and backward, in a
    logging mode opened inside the recorder; no optimizer."""
    w = data(3, 3).requires_grad_()
    log = OpLog()
    out = Outcome()
    with out.catch(), rec(), log:
        y = (w * 2.0 + 1).pow(2) / 3.0
        z = torch.where(y > 0.5, y, y * 0.5).sum() - 0.25
        z.backward()
    out.keep(w=w, grad=w.grad)
    out.counters["ops"] = log.ops
    return out


def flops_sdpa_mlp(rec: Rec) -> Outcome:
    """FlopCounterMode around a recorder around attention (bmm / sdpa flops) in a step."""
    torch.manual_seed(3)
    attn = torch.nn.MultiheadAttention(8, 2, batch_first=True)
    opt = torch.optim.AdamW(attn.parameters(), lr=1e-3)
    q = data(2, 4, 8)
    counter = FlopCounterMode(display=False)
    out = Outcome()
    with out.catch(), counter, rec(attn, opt):
        for _ in range(2):
            opt.zero_grad()
            o, weights = attn(q, q, q)
            (o.pow(2).mean() + weights.mean() * 0.1).backward()
            opt.step()
    out.keep_model("attn", attn)
    out.counters.update(_flops(counter), **local_hooks(attn, opt))
    return out


CASES = [
    Case("flop_counter_around", flops_around),
    Case("flop_counter_inside", flops_inside),
    Case("dispatch_oplog_around", oplog_around),
    Case("dispatch_oplog_inside", oplog_inside),
    Case("dispatch_oplog_scalars", oplog_scalar_ops),
    Case("flop_counter_attention", flops_sdpa_mlp),
]
