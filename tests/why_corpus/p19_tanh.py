"""A saturated tanh: inputs near -30 give exactly -1.0, whose slope is exactly 0."""

import torch
from torch import nn

EXPECT = {
    "fc.weight": ("dead", "TanhBackward0", "DEAD"),
    "fc.bias": ("dead", "TanhBackward0", "DEAD"),
}


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        return torch.tanh(self.fc(x))  # DEAD


def build():
    torch.manual_seed(0)
    model = Net()
    with torch.no_grad():
        model.fc.bias.fill_(-30.0)
    x = torch.randn(8, 3)
    return model, lambda: (model(x) - 0.5).pow(2).mean()
