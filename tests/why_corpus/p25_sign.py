"""sign: binarized activations; sign's slope is 0, but the scale after it still learns."""

import torch
from torch import nn

EXPECT = {
    "fc.weight": ("dead", "SignBackward0", "DEAD"),
    "fc.bias": ("dead", "SignBackward0", "DEAD"),
}


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)
        self.scale = nn.Parameter(torch.tensor(0.5))

    def forward(self, x):
        return torch.sign(self.fc(x)) * self.scale  # DEAD


def build():
    torch.manual_seed(0)
    model = Net()
    x, y = torch.randn(8, 3), torch.randn(8, 2)
    return model, lambda: (model(x) - y).pow(2).mean()
