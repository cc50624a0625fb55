"""float(t): a learned temperature turned into a Python float."""

import torch
from torch import nn

EXPECT = {
    "t.weight": ("cut", "host", "CUT"),
    "t.bias": ("cut", "host", "CUT"),
}


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(3, 1)
        self.t = nn.Linear(3, 1)

    def forward(self, x):
        temperature = float(self.t(x).abs().mean()) + 1.0  # CUT
        return self.a(x) / temperature


def build():
    torch.manual_seed(0)
    model = Net()
    x = torch.randn(8, 3)
    return model, lambda: model(x).pow(2).mean()
