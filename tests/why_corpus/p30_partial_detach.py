"""Correct: a is used twice, once through a stop-gradient; the other use still reaches the loss.

A detach on one path is not a cut when another path carries the gradient: nothing to report.
"""

import torch
from torch import nn

EXPECT: dict = {}


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(3, 2)

    def forward(self, x):
        h = self.a(x)
        return h - 0.5 * h.detach()


def build():
    torch.manual_seed(0)
    model = Net()
    x = torch.randn(8, 3)
    return model, lambda: model(x).pow(2).mean()
