"""The benchmark models, shared by watch_overhead.py and guard_overhead.py: each returns the
model and a training-step function with the given optimizer."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

Step = Callable[[], torch.Tensor]


def _step(opt: torch.optim.Optimizer, loss_of: Callable[[], torch.Tensor]) -> Step:
    def step() -> torch.Tensor:
        loss = loss_of()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss

    return step


def mlp(
    optimizer: type[torch.optim.Optimizer], lr: float
) -> tuple[nn.Module, torch.optim.Optimizer, Step]:
    """Returns an MLP of four 1024-wide Linear+ReLU layers on batches of 256, MSE loss."""
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for _ in range(4):
        layers += [nn.Linear(1024, 1024), nn.ReLU()]
    model = nn.Sequential(*layers)
    opt = optimizer(model.parameters(), lr=lr)
    x, target = torch.randn(256, 1024), torch.randn(256, 1024)
    return model, opt, _step(opt, lambda: nn.functional.mse_loss(model(x), target))


def transformer(
    optimizer: type[torch.optim.Optimizer], lr: float
) -> tuple[nn.Module, torch.optim.Optimizer, Step]:
    """Returns a 4-layer transformer encoder (d = 256, 8 heads, feed-forward 1024) on 16 x 64
    tokens, with the mean square of its output as the loss."""
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(256, 8, dim_feedforward=1024, batch_first=True)
    model = nn.TransformerEncoder(layer, num_layers=4, enable_nested_tensor=False)
    opt = optimizer(model.parameters(), lr=lr)
    x = torch.randn(16, 64, 256)
    return model, opt, _step(opt, lambda: model(x).pow(2).mean())
