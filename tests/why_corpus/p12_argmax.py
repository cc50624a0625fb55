"""argmax: a hard choice of embedding row; the scorer that chose it gets no gradient."""

import torch
from torch import nn

EXPECT = {
    "score.weight": ("cut", "non-differentiable", "CUT"),
    "score.bias": ("cut", "non-differentiable", "CUT"),
}


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.score = nn.Linear(3, 4)
        self.table = nn.Embedding(4, 2)

    def forward(self, x):
        idx = self.score(x).argmax(dim=1)  # CUT
        return self.table(idx)


def build():
    torch.manual_seed(0)
    model = Net()
    x = torch.randn(8, 3)
    return model, lambda: model(x).pow(2).mean()
