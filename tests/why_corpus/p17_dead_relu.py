"""A dead ReLU: the bias is so negative that every pre-activation is < 0."""

import torch
from torch import nn

EXPECT = {
    "fc.weight": ("dead", "ReluBackward0", "DEAD"),
    "fc.bias": ("dead", "ReluBackward0", "DEAD"),
}


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 4)
        self.offset = nn.Parameter(torch.zeros(4))

    def forward(self, x):
        return torch.relu(self.fc(x)) + self.offset  # DEAD


def build():
    torch.manual_seed(0)
    model = Net()
    with torch.no_grad():
        model.fc.bias.fill_(-100.0)
    x = torch.randn(8, 3)
    return model, lambda: (model(x) - 1).pow(2).mean()
