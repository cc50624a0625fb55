"""Two causes: branch b is .detach()ed, and the scale's contribution goes through .item()."""

import torch
from torch import nn

EXPECT = {
    "b.weight": ("cut", "detach", "CUT1"),
    "scale": ("cut", "host", "CUT2"),
}


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(3, 1)
        self.b = nn.Linear(3, 1, bias=False)
        self.scale = nn.Parameter(torch.tensor(2.0))

    def forward(self, x):
        ya = self.a(x)
        yb = self.b(x).detach()  # CUT1
        s = (self.scale * x).mean().item()  # CUT2
        return ya + yb + torch.tensor(s)


def build():
    torch.manual_seed(0)
    model = Net()
    x = torch.randn(8, 3)
    return model, lambda: model(x).pow(2).mean()
