"""Data-parallel training on CPU (gloo) for torchrun: DDP by default, FSDP2 with --fsdp.

    torchrun --nproc-per-node 2 -m gradlens run examples/distributed_train.py
    torchrun --nproc-per-node 2 -m gradlens run examples/distributed_train.py --fsdp
    torchrun --nproc-per-node 2 -m gradlens run examples/distributed_train.py --faults
    torchrun --nproc-per-node 2 examples/distributed_train.py --watch    # watch() in the script

--faults (DDP only) puts three rank-dependent bugs in, all on rank 1: at step 20 its forward
skips the branch ``gate`` (a data-dependent branch: DDP needs find_unused_parameters=True), at
step 80 it clips the gradients of ``out`` after the all-reduce (the replicas differ from then
on), and at step 150 one of its samples holds a NaN.
"""

import argparse
import contextlib

import torch
import torch.distributed as dist
from torch import nn

import gradlens

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=200)
parser.add_argument("--fsdp", action="store_true", help="FSDP2 (fully_shard) instead of DDP")
parser.add_argument("--faults", action="store_true", help="rank 1 misbehaves (DDP only)")
parser.add_argument("--watch", action="store_true", help="use gradlens.watch() in the script")
args = parser.parse_args()


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(16, 32)
        self.gate = nn.Linear(32, 32)
        self.out = nn.Linear(32, 4)

    def forward(self, x: torch.Tensor, use_gate: bool = True) -> torch.Tensor:
        h = torch.relu(self.inp(x))
        if use_gate:
            h = h * torch.sigmoid(self.gate(h))
        return self.out(h)


dist.init_process_group("gloo")
rank = dist.get_rank()
torch.manual_seed(0)
net = Net()
if args.fsdp:
    from torch.distributed.fsdp import fully_shard

    for layer in (net.inp, net.gate, net.out):
        fully_shard(layer)
    model: nn.Module = fully_shard(net)
else:
    model = nn.parallel.DistributedDataParallel(net, find_unused_parameters=args.faults)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
target = torch.randn(16, 4, generator=torch.Generator().manual_seed(1))

watching = gradlens.watch(net, optimizer) if args.watch else contextlib.nullcontext()
with watching as lens:
    for step in range(args.steps):
        data = torch.Generator().manual_seed(1000 * step + rank)  # each rank its own batch
        x = torch.randn(32, 16, generator=data)
        y = x @ target + 0.1 * torch.randn(32, 4, generator=data)
        faulty = args.faults and rank == 1
        if faulty and step == 150:
            x[0, 0] = float("nan")
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(x, use_gate=not (faulty and step == 20)), y)
        loss.backward()
        if faulty and step >= 80:
            torch.nn.utils.clip_grad_norm_(net.out.parameters(), 0.01)
        optimizer.step()

if args.watch:
    lens.report()  # rank 0 only (GRADLENS_ALL_RANKS=1: every rank)
    lens.plot("distributed.png")
dist.destroy_process_group()
