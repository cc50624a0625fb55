"""An unused module: self.extra is registered but forward never calls it."""

import torch
from torch import nn

EXPECT = {
    "extra.weight": ("unused", None, None),
    "extra.bias": ("unused", None, None),
}


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 1)
        self.extra = nn.Linear(3, 1)  # left over from an earlier version of forward

    def forward(self, x):
        return self.fc(x)


def build():
    torch.manual_seed(0)
    model = Net()
    x = torch.randn(8, 3)
    return model, lambda: model(x).pow(2).mean()
