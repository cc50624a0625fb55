"""A non-leaf "parameter": randn(..., requires_grad=True) * 0.1 is the product, not the leaf.

The product's .grad stays None after backward (autograd only fills leaves' .grad unless
retain_grad() is called). It is made in build(), before any trace, so no line is reported.
"""

import torch

EXPECT = {
    "w": ("not-leaf", None, None),
}


def build():
    torch.manual_seed(0)
    w = torch.randn(3, 1, requires_grad=True) * 0.1  # the bug: w is not a leaf
    b = torch.zeros(1, requires_grad=True)
    x, y = torch.randn(8, 3), torch.randn(8, 1)
    return {"w": w, "b": b}, lambda: (x @ w + b - y).pow(2).mean()
