"""masked_fill over everything: a padding mask that marks every position as padding."""

import torch
from torch import nn

EXPECT = {
    "fc.weight": ("dead", "MaskedFillBackward0", "DEAD"),
    "fc.bias": ("dead", "MaskedFillBackward0", "DEAD"),
}


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 4)

    def forward(self, x, pad):
        return self.fc(x).masked_fill(pad, 0.0)  # DEAD


def build():
    torch.manual_seed(0)
    model = Net()
    x = torch.randn(8, 3)
    pad = torch.ones(8, 4, dtype=torch.bool)  # the bug: True everywhere
    return model, lambda: (model(x, pad) - 1).pow(2).mean()
