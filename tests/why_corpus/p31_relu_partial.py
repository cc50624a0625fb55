"""Correct: one ReLU unit is dead (bias -100) but the others are alive, so fc1's gradient is
non-zero as a whole and no parameter is dead."""

import torch
from torch import nn

EXPECT: dict = {}


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(3, 4)
        self.fc2 = nn.Linear(4, 1)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def build():
    torch.manual_seed(0)
    model = Net()
    with torch.no_grad():
        model.fc1.bias[0] = -100.0  # unit 0 is dead; units 1 to 3 are not
        model.fc1.bias[1:] = 1.0
    x, y = torch.randn(8, 3), torch.randn(8, 1)
    return model, lambda: nn.functional.mse_loss(model(x), y)
