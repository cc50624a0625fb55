"""An integer cast: .long() turns a learned bucket size into a constant."""

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
        bucket = (self.g(x) * 4).abs().long()  # CUT
        return self.a(x) * (bucket + 1)


def build():
    torch.manual_seed(0)
    model = Net()
    x = torch.randn(8, 3)
    return model, lambda: model(x).pow(2).mean()
