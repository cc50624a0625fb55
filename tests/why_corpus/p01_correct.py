"""A correct two-layer MLP: every parameter reaches the loss, nothing to report."""

import torch
from torch import nn

EXPECT: dict = {}


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(3, 4)
        self.fc2 = nn.Linear(4, 1)

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(x)))


def build():
    torch.manual_seed(0)
    model = Net()
    x, y = torch.randn(8, 3), torch.randn(8, 1)
    return model, lambda: nn.functional.mse_loss(model(x), y)
