"""The 2-D logistic regression loop without optimizer.zero_grad(): gradlens names the line."""

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
    for _ in range(100):
        loss = criterion(model(x).squeeze(1), y)
        lens.log(loss=loss)
        # optimizer.zero_grad()  # the missing line: uncomment it and the finding goes away
        loss.backward()
        optimizer.step()

for d in lens.diagnostics:
    print(d.kind, "at step", d.step, "from", d.source)  # grad-accumulation, step 1, backward line
norms = [s.grads["0.weight"].grad_norm for s in lens.steps]
print("weight grad norm at steps 0, 10, 50, 99:", [round(norms[i], 3) for i in (0, 10, 50, 99)])
lens.report()
print("wrote", lens.plot("forgot_zero_grad.png"))
