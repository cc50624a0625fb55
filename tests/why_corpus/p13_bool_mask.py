"""A comparison used as a gate: (g(x) > 0).float() has no gradient with respect to g."""

import torch
from torch import nn

EXPECT = {
    "g.weight": ("cut", "non-differentiable", "CUT"),
    "g.bias": ("cut", "non-differentiable", "CUT"),
}


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(3, 1)
        self.g = nn.Linear(3, 1)

    def forward(self, x):
        gate = (self.g(x) > 0).float()  # CUT
        return (1 + gate) * self.a(x)


def build():
    torch.manual_seed(0)
    model = Net()
    x = torch.randn(8, 3)
    return model, lambda: model(x).pow(2).mean()
