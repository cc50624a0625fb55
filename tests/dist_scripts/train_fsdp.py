"""An unchanged FSDP2 training script, for ``torchrun --nproc-per-node 2 -m gradlens run
train_fsdp.py``: it knows nothing of gradlens. ``reference(world)`` trains the same steps in one
process on the whole global batch, without torch.distributed: what gradlens's combined numbers
must equal.
"""

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.fsdp import fully_shard

STEPS, BATCH = 70, 4


def make_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))


def batch(step, world):
    g = torch.Generator().manual_seed(1000 + step)
    return torch.randn(BATCH * world, 6, generator=g), torch.randn(BATCH * world, 3, generator=g)


def reference(world):
    """Returns, per step, the loss and each parameter's gradient norm of one process."""
    single = make_model()
    opt = torch.optim.AdamW(single.parameters(), lr=1e-2)
    steps = []
    for step in range(STEPS):
        opt.zero_grad()
        x, y = batch(step, world)
        loss = nn.functional.mse_loss(single(x), y)
        loss.backward()
        norms = {n: p.grad.norm().item() for n, p in single.named_parameters()}
        steps.append({"loss": loss.item(), "norms": norms})
        opt.step()
    return steps


def main():
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    model = make_model()
    fully_shard(model[0])
    fully_shard(model[2])
    fully_shard(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for step in range(STEPS):
        opt.zero_grad()
        x, y = batch(step, world)
        rows = slice(rank * BATCH, (rank + 1) * BATCH)
        loss = nn.functional.mse_loss(model(x[rows]), y[rows])
        loss.backward()
        opt.step()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
