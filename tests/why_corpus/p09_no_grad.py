"""torch.no_grad(): branch b runs inside a no_grad region, so nothing is recorded for it."""

import torch
from torch import nn

EXPECT = {
    "b.weight": ("cut", "no_grad", "CUT"),
    "b.bias": ("cut", "no_grad", "CUT"),
}


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(3, 1)
        self.b = nn.Linear(3, 1)

    def forward(self, x):
        with torch.no_grad():
            h = self.b(x)  # CUT
        return self.a(x) + h


def build():
    torch.manual_seed(0)
    model = Net()
    x = torch.randn(8, 3)
    return model, lambda: model(x).pow(2).mean()
