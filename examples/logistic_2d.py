"""2-D logistic regression (two Gaussian clouds, SGD with momentum), watched by gradlens."""

import torch
from torch import nn

import gradlens

torch.manual_seed(10)
ones = torch.ones(100, 2)
x = torch.cat([torch.normal(1.7 * ones, 1) + 1, torch.normal(-1.7 * ones, 1) + 1])
y = torch.cat([torch.zeros(100), torch.ones(100)])

model = nn.Sequential(nn.Linear(2, 1), nn.Sigmoid())
criterion = nn.BCELoss()
optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

with gradlens.watch(model, optimizer) as lens:
    for iteration in range(1000):
        prob = model(x).squeeze(1)
        loss = criterion(prob, y)
        lens.log(loss=loss)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        accuracy = ((prob >= 0.5).float() == y).float().mean().item()
        if iteration % 20 == 0 and accuracy > 0.99:
            break

print(f"{iteration + 1} iterations, accuracy {accuracy:.1%}")
lens.report()  # no findings: zero_grad() runs every step
print("wrote", lens.plot("logistic_2d.png"))
