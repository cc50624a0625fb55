"""clamp outside its range: every input is below min, so clamp passes no gradient back."""

import torch
from torch import nn

EXPECT = {
    "fc.weight": ("dead", "ClampBackward1", "DEAD"),
    "fc.bias": ("dead", "ClampBackward1", "DEAD"),
}


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        return torch.clamp(self.fc(x), 0.0, 1.0)  # DEAD


def build():
    torch.manual_seed(0)
    model = Net()
    with torch.no_grad():
        model.fc.bias.fill_(-50.0)
    x = torch.randn(8, 3)
    return model, lambda: (model(x) - 0.5).pow(2).mean()
