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


def lstm_cell(
    optimizer: type[torch.optim.Optimizer], lr: float
) -> tuple[nn.Module, torch.optim.Optimizer, Step]:
    """Returns an LSTMCell (32 -> 64) unrolled by hand over 32 time steps of a batch of 8, with
    a linear read-out of every hidden state: many small ops per step, as in a char-RNN."""
    torch.manual_seed(0)
    cell, head = nn.LSTMCell(32, 64), nn.Linear(64, 10)
    model = nn.ModuleDict({"cell": cell, "head": head})
    opt = optimizer(model.parameters(), lr=lr)
    xs, target = torch.randn(32, 8, 32), torch.randint(0, 10, (32, 8))

    def loss_of() -> torch.Tensor:
        h = c = torch.zeros(8, 64)
        loss = torch.zeros(())
        for x, y in zip(xs, target, strict=True):
            h, c = cell(x, (h, c))
            loss = loss + nn.functional.cross_entropy(head(h), y)
        return loss / len(xs)

    return model, opt, _step(opt, loss_of)


def policy(
    optimizer: type[torch.optim.Optimizer], lr: float
) -> tuple[nn.Module, torch.optim.Optimizer, Step]:
    """Returns a REINFORCE step of a small policy network (4 -> 64 -> 2) over an episode of 50
    states: one Categorical sample and log-probability per state, the loss is minus the sum of
    log-probabilities weighted by normalized discounted returns (pytorch/examples' reinforce)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 64), nn.ReLU(), nn.Dropout(0.1), nn.Linear(64, 2))
    opt = optimizer(model.parameters(), lr=lr)
    states = torch.randn(50, 4)
    rewards = [1.0] * 50

    def loss_of() -> torch.Tensor:
        log_probs = []
        for s in states:
            probs = torch.softmax(model(s.unsqueeze(0)), dim=1)
            dist = torch.distributions.Categorical(probs)
            action = dist.sample()
            log_probs.append(dist.log_prob(action))
        returns, r = [], 0.0
        for reward in reversed(rewards):
            r = reward + 0.99 * r
            returns.insert(0, r)
        ret = torch.tensor(returns)
        ret = (ret - ret.mean()) / (ret.std() + 1e-8)
        return torch.cat([-lp * g for lp, g in zip(log_probs, ret, strict=True)]).sum()

    return model, opt, _step(opt, loss_of)
