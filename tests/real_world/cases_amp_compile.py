"""Mixed precision (CPU autocast to bfloat16) and torch.compile'd models."""

from __future__ import annotations

import torch
import torch._dynamo
import torch.nn.functional as F
from torch._dynamo.utils import counters as dynamo_counters

from ._harness import Case, Outcome, Rec, local_hooks, record_truth
from ._models import data, mlp


def autocast_bf16_clip(rec: Rec) -> Outcome:
    model = mlp(6, 8, 4)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, target = data(5, 6), torch.tensor([0, 3, 1, 2, 0])
    norms = []
    out = Outcome()
    with out.catch(), rec(model, opt):
        for _ in range(2):
            opt.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                logits = model(x * 2.0)
                loss = F.cross_entropy(logits, target)
            loss.backward()
            norms.append(torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5))
            record_truth(out, model)  # watch measures after clipping, just before the step
            opt.step()
    out.keep_model("model", model)
    out.keep(norms=norms, logits=logits, loss=loss)
    out.counters["dtypes"] = [str(logits.dtype), str(loss.dtype)]
    out.counters.update(local_hooks(model, opt))
    return out


def _compiled(rec: Rec, backend: str) -> Outcome:
    torch._dynamo.reset()
    dynamo_counters.clear()
    model = mlp(4, 6, 2)
    compiled = torch.compile(model, backend=backend)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    x, target = data(3, 4), data(3, 2, seed=4)
    out = Outcome()
    with out.catch(), rec(model, opt):
        for _ in range(2):
            opt.zero_grad()
            loss = F.mse_loss(compiled(x), target)
            loss.backward()
            opt.step()
    out.keep_model("model", model)
    out.counters["graph_breaks"] = sum(dynamo_counters["graph_break"].values())
    out.counters["frames_ok"] = dynamo_counters["frames"]["ok"]
    out.counters["unique_graphs"] = dynamo_counters["stats"]["unique_graphs"]
    out.counters.update(local_hooks(model, opt))
    torch._dynamo.reset()
    return out


def compiled_eager(rec: Rec) -> Outcome:
    return _compiled(rec, "eager")


def compiled_aot_eager(rec: Rec) -> Outcome:
    return _compiled(rec, "aot_eager")


CASES = [
    Case("autocast_bf16_clip_sgd", autocast_bf16_clip),
    Case("compile_eager", compiled_eager, unrecorded="torch.compile"),
    Case("compile_aot_eager", compiled_aot_eager, unrecorded="torch.compile"),
]
