"""loss.backward(gradient=[1., 2.]) over loss = cat([y0, y1]): w.grad = 1·5 + 2·2 = 9."""

import torch

import gradlens

w = torch.tensor([1.0], requires_grad=True)
x = torch.tensor([2.0], requires_grad=True)

with gradlens.trace(w=w, x=x) as t:
    a = torch.add(w, x)
    b = torch.add(w, 1)
    y0 = torch.mul(a, b)  # dy0/dw = 5
    y1 = torch.add(a, b)  # dy1/dw = 2
    loss = torch.cat([y0, y1], dim=0)
    loss.backward(gradient=torch.tensor([1.0, 2.0]))

print("w.grad =", w.grad)  # tensor([9.])
backward = next(e for e in t.events if e.kind == "backward")
print("weights given:", [g.values for g in backward.gradient])
print(t.render("grad_tensors.svg"))
