"""torch.autograd.grad with create_graph=True, three times on y = x²: 6, 2, 0."""

import torch

import gradlens

x = torch.tensor([3.0], requires_grad=True)
with gradlens.trace(x=x) as t:
    y = torch.pow(x, 2)
    (grad_1,) = torch.autograd.grad(y, x, create_graph=True)
    (grad_2,) = torch.autograd.grad(grad_1, x, create_graph=True)
    (grad_3,) = torch.autograd.grad(grad_2, x)

print(grad_1, grad_2, grad_3)  # 6, 2, 0
print(gradlens.graph(grad_1, params={"x": x, "grad_1": grad_1}).render("first_derivative.svg"))
print(t.render("higher_order.svg"))  # y's graph, and the derivatives' graphs linked to it
