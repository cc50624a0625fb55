""".tolist(): per-sample weights leave the graph as Python floats and come back as constants."""

import torch
from torch import nn

EXPECT = {
    "c.weight": ("cut", "host", "CUT"),
    "c.bias": ("cut", "host", "CUT"),
}


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(3, 1)
        self.c = nn.Linear(3, 1)

    def forward(self, x):
        scores = self.c(x).squeeze(1).tolist()  # CUT
        return self.a(x) * torch.tensor(scores).unsqueeze(1)


def build():
    torch.manual_seed(0)
    model = Net()
    x = torch.randn(8, 3)
    return model, lambda: model(x).pow(2).mean()
