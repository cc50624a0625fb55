"""The graph of one logistic-regression step: Linear(1, 1) + sigmoid + BCELoss."""

import torch
from torch import nn

import gradlens

hours = torch.tensor([[1.0], [2.0], [3.0]])
passed = torch.tensor([[0.0], [0.0], [1.0]])
model = nn.Sequential(nn.Linear(1, 1), nn.Sigmoid())
criterion = nn.BCELoss()

with gradlens.trace(model, hours=hours) as t:
    loss = criterion(model(hours), passed)
    loss.backward()

print(gradlens.inspect(**dict(model.named_parameters())))
print(t.render("logistic.svg"))  # the Sequential's ops drawn as one cluster
