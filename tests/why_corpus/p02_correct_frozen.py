"""A correct fine-tuning setup: the backbone is frozen with requires_grad_(False) on purpose.

Frozen parameters are not expected to get a gradient, so nothing is reported about them.
"""

import torch
from torch import nn

EXPECT: dict = {}


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Linear(3, 4)
        self.head = nn.Linear(4, 1)

    def forward(self, x):
        return self.head(torch.relu(self.backbone(x)))


def build():
    torch.manual_seed(0)
    model = Net()
    model.backbone.requires_grad_(False)  # frozen: only the head trains
    x, y = torch.randn(8, 3), torch.randn(8, 1)
    return model, lambda: nn.functional.mse_loss(model(x), y)
