"""floor: binning a learned value; floor's slope is 0 everywhere."""

import torch
from torch import nn

EXPECT = {
    "fc.weight": ("dead", "FloorBackward0", "DEAD"),
    "fc.bias": ("dead", "FloorBackward0", "DEAD"),
}


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        return torch.floor(self.fc(x) * 10)  # DEAD


def build():
    torch.manual_seed(0)
    model = Net()
    x, y = torch.randn(8, 3), torch.randn(8, 2)
    return model, lambda: (model(x) - y).pow(2).mean()
