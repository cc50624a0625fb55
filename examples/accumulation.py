"""Gradients add up in .grad until you zero them: 5, 10, 15, 20."""

import torch

import gradlens

w = torch.tensor([1.0], requires_grad=True)
x = torch.tensor([2.0], requires_grad=True)

with gradlens.trace(w=w, x=x) as t:
    for _ in range(4):
        y = torch.mul(torch.add(w, x), torch.add(w, 1))
        y.backward()
        # w.grad.zero_()  # uncomment: 5, 5, 5, 5

after_each = [e.accumulated.values for e in t.events if e.kind == "grad" and e.leaf == "w"]
print("w.grad after each backward:", after_each)  # [[5.], [10.], [15.], [20.]]
