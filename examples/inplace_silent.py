"""A .data write: backward runs without an error and the gradient is wrong; gradlens flags it.

Run: python examples/inplace_silent.py
"""

import torch

import gradlens

x = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)

with gradlens.guard() as g:
    y = torch.exp(x)  # exp saves y: its gradient is y itself
    y.data.mul_(2)  # the bug: .data has its own version counter, PyTorch cannot tell
    y.sum().backward()  # no error

print("x.grad:", x.grad)  # 2 * exp(x) = [5.4366, 14.7781, 40.1711]: wrong
print("exp(x):", torch.exp(x.detach()))  # the right gradient: [2.7183, 7.3891, 20.0855]
g.report()  # silent-write, y, mul_, at the y.data line
print(g.diagnostics[0].message)

x.grad = None
with gradlens.guard(verify=True) as g:  # checksums saved tensors: sees writes no op makes
    y = torch.exp(x)
    y.detach().numpy()[0] = 5.0  # NumPy writes the memory directly
    y.sum().backward()  # the checksum no longer matches: flagged here, before backward runs
g.report()
print(g.diagnostics[0].message)
