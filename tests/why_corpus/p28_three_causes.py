"""Three causes: b runs under no_grad, c is clamped dead, and `spare` is never used."""

import torch
from torch import nn

EXPECT = {
    "b.weight": ("cut", "no_grad", "CUT"),
    "b.bias": ("cut", "no_grad", "CUT"),
    "c.weight": ("dead", "ClampBackward1", "DEAD"),
    "c.bias": ("dead", "ClampBackward1", "DEAD"),
    "spare.weight": ("unused", None, None),
    "spare.bias": ("unused", None, None),
}


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c, self.spare = (nn.Linear(3, 1) for _ in range(4))

    def forward(self, x):
        with torch.no_grad():
            hb = self.b(x)  # CUT
        hc = torch.clamp(self.c(x), max=-10.0)  # DEAD
        return self.a(x) + hb + hc


def build():
    torch.manual_seed(0)
    model = Net()
    with torch.no_grad():
        model.c.bias.fill_(50.0)
    x = torch.randn(8, 3)
    return model, lambda: model(x).pow(2).mean()
