"""detach: branch b's output is .detach()ed before it joins the loss."""

import torch
from torch import nn

EXPECT = {
    "b.weight": ("cut", "detach", "CUT"),
    "b.bias": ("cut", "detach", "CUT"),
}


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(3, 1)
        self.b = nn.Linear(3, 1)

    def forward(self, x):
        return self.a(x) + self.b(x).detach()  # CUT


def build():
    torch.manual_seed(0)
    model = Net()
    x = torch.randn(8, 3)
    return model, lambda: model(x).pow(2).mean()
