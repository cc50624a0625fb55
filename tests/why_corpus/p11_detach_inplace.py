"""detach_(): an intermediate is detached in place, turning requires_grad off for it."""

import torch
from torch import nn

EXPECT = {
    "b.weight": ("cut", "requires_grad_", "CUT"),
    "b.bias": ("cut", "requires_grad_", "CUT"),
}


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(3, 1)
        self.b = nn.Linear(3, 1)

    def forward(self, x):
        h = self.b(x)
        h.detach_()  # CUT
        return self.a(x) + h


def build():
    torch.manual_seed(0)
    model = Net()
    x = torch.randn(8, 3)
    return model, lambda: model(x).pow(2).mean()
