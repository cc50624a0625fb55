"""Schedulers and weight averaging around the optimizer: OneCycleLR (which counts the
optimizer's steps and warns when the order looks wrong), ReduceLROnPlateau, and SWA
(AveragedModel, SWALR, update_bn); optimizers created inside the block."""

from __future__ import annotations

import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.optim.swa_utils import SWALR, AveragedModel, update_bn

from ._harness import Case, Outcome, Rec, local_hooks, record_truth
from ._models import data, mlp


def one_cycle_and_plateau(rec: Rec) -> Outcome:
    """Two phases, each with an optimizer made inside the block (watch() adopts them)."""
    model = mlp(4, 6, 2, seed=51)
    x, y = data(6, 4), data(6, 2, seed=8)
    lrs: list[float] = []
    out = Outcome()
    with out.catch(), rec():
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.5, total_steps=3)
        for _ in range(3):
            opt.zero_grad()
            F.mse_loss(model(x), y).backward()
            opt.step()
            sched.step()
            lrs.append(sched.get_last_lr()[0])
        opt2 = torch.optim.Adam(model.parameters(), lr=0.01)
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt2, patience=0, factor=0.5)
        for _ in range(3):
            opt2.zero_grad()
            loss = F.mse_loss(model(x), y)
            loss.backward()
            opt2.step()
            plateau.step(1.0)  # a flat validation loss: the lr halves
            lrs.append(opt2.param_groups[0]["lr"])
    out.keep_model("model", model)
    out.counters["lrs"] = lrs
    out.counters.update(local_hooks(model, opt, opt2))
    return out


def stochastic_weight_averaging(rec: Rec) -> Outcome:
    torch.manual_seed(52)
    model = nn.Sequential(nn.Linear(3, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 1))
    swa = AveragedModel(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    swa_sched = SWALR(opt, swa_lr=0.05, anneal_epochs=1)
    batches = [(data(4, 3, seed=s), data(4, 1, seed=s + 10)) for s in range(3)]
    out = Outcome()
    with out.catch(), rec(model, opt):
        for xb, yb in batches:
            opt.zero_grad()
            F.mse_loss(model(xb), yb).backward()
            opt.step()
            swa.update_parameters(model)
            swa_sched.step()
        update_bn([xb for xb, _ in batches], swa)
        swa.eval()
        with torch.no_grad():
            pred = swa(batches[0][0])
    out.keep_model("model", model)
    out.keep_model("swa", swa)
    out.keep(pred=pred)
    out.counters["n_averaged"] = int(swa.n_averaged)
    out.counters.update(local_hooks(model, opt))
    return out


def ddp_single_process(rec: Rec) -> Outcome:
    """DistributedDataParallel on one CPU process (gloo): its reducer's hooks and all-reduce
    run with the recorder's; the process group is torn down even if the run fails."""
    # an in-memory store: a file:// or TCP rendezvous re-made for every run hangs now and then
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        torch.manual_seed(53)
        net = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
        model = DDP(net)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        x, y = data(6, 4), torch.tensor([0, 1, 1, 0, 1, 0])
        out = Outcome()
        with out.catch(), rec(model, opt):
            for _ in range(2):
                opt.zero_grad()
                F.cross_entropy(model(x), y).backward()
                record_truth(out, model)
                opt.step()
        out.keep_model("net", net)
        out.counters.update(local_hooks(net, opt))
        # A PyTorch race, with or without gradlens: gloo's worker threads destroy finished
        # all-reduce work, whose thread-local state holds Python objects (any torch-function
        # or dispatch mode active at the all-reduce, the counters' own included), and need the
        # GIL for it; DDP's reducer, freed at return, joins those threads while holding the GIL.
        # Let them finish first (seen to hang ~ProcessGroupGloo in 2 of many runs otherwise).
        time.sleep(0.2)
        del model
    finally:
        dist.destroy_process_group()
    return out


CASES = [
    Case("one_cycle_and_plateau", one_cycle_and_plateau),
    Case("stochastic_weight_averaging", stochastic_weight_averaging),
    Case("ddp_single_process", ddp_single_process),
]
