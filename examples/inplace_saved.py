"""An in-place op overwrites a tensor sigmoid saved for backward: gradlens names the line.

Run: python examples/inplace_saved.py
"""

import torch

import gradlens

x = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)

try:
    with gradlens.guard() as g:  # mode="strict" would raise at the y.mul_(2) line instead
        y = torch.sigmoid(x)  # sigmoid saves y: its gradient is y * (1 - y)
        y.mul_(2)  # the bug: overwrites the saved y
        y.sum().backward()  # PyTorch's error comes here, and names no line
except RuntimeError as e:
    print("PyTorch:", str(e).split(". Hint")[0])

g.report()  # the table: inplace-saved, y, mul_, this file's line, sigmoid's line
for d in g.diagnostics:
    print(d.message, "\nfix:", d.fix)

y = torch.sigmoid(x)
y = y * 2  # the fix: a new tensor, the saved y is untouched
y.sum().backward()
print("x.grad:", x.grad)  # 2 * s * (1 - s) = [0.3932, 0.2100, 0.0904]
