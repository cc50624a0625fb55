"""backward() twice with retain_graph=True: w.grad is 5, then 10.

Run: python examples/backward.py   (writes backward.svg next to where you run it)
"""

import torch

import gradlens

w = torch.tensor([1.0], requires_grad=True)
x = torch.tensor([2.0], requires_grad=True)

with gradlens.trace(w=w, x=x) as t:
    a = torch.add(w, x)
    b = torch.add(w, 1)
    y = torch.mul(a, b)
    y.backward(retain_graph=True)
    print("w.grad after one backward:", w.grad)  # tensor([5.])
    y.backward()
    print("w.grad after two:", w.grad)  # tensor([10.]): gradients accumulate

print(gradlens.inspect(w, x, a, b, y))
print(t.render("backward.svg"))
