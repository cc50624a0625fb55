"""torch.tensor(t): re-wrapping a tensor copies its values and drops its history."""

import torch
from torch import nn

EXPECT = {
    "b.weight": ("cut", "rewrap", "CUT"),
    "b.bias": ("cut", "rewrap", "CUT"),
}


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(3, 1)
        self.b = nn.Linear(3, 1)

    def forward(self, x):
        h = torch.tensor(self.b(x))  # CUT
        return self.a(x) + h


def build():
    torch.manual_seed(0)
    model = Net()
    x = torch.randn(8, 3)
    return model, lambda: model(x).pow(2).mean()
