"""A parameter detached where it is used: x @ self.w.detach() trains only the bias."""

import torch
from torch import nn

EXPECT = {
    "w": ("cut", "detach", "CUT"),
}


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(3, 1))
        self.b = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return x @ self.w.detach() + self.b  # CUT


def build():
    torch.manual_seed(0)
    model = Net()
    x, y = torch.randn(8, 3), torch.randn(8, 1)
    return model, lambda: (model(x) - y).pow(2).mean()
