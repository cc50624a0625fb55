"""torch.inference_mode(): branch b runs inside an inference_mode region."""

import torch
from torch import nn

EXPECT = {
    "b.weight": ("cut", "inference_mode", "CUT"),
    "b.bias": ("cut", "inference_mode", "CUT"),
}


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(3, 1)
        self.b = nn.Linear(3, 1)

    def forward(self, x):
        with torch.inference_mode():
            h = self.b(x)  # CUT
        return self.a(x) + h  # add saves neither input, so the inference tensor is allowed


def build():
    torch.manual_seed(0)
    model = Net()
    x = torch.randn(8, 3)
    return model, lambda: model(x).pow(2).mean()
