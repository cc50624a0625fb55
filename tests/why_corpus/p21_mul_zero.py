"""Multiplication by zero: a dropout-style mask that drops every unit."""

import torch
from torch import nn

EXPECT = {
    "fc.weight": ("dead", "MulBackward0", "DEAD"),
    "fc.bias": ("dead", "MulBackward0", "DEAD"),
}


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 4)
        self.register_buffer("mask", torch.zeros(1, 4))  # meant to keep units, keeps none

    def forward(self, x):
        return self.fc(x) * self.mask  # DEAD


def build():
    torch.manual_seed(0)
    model = Net()
    x = torch.randn(8, 3)
    return model, lambda: (model(x) - 1).pow(2).mean()
