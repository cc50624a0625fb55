"""Deterministic building blocks for the corpus: no global RNG, fixed values."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import nn

M = TypeVar("M", bound=nn.Module)


def ramp(*shape: int, lo: float = -1.0, hi: float = 1.0, grad: bool = False) -> torch.Tensor:
    """A tensor of evenly spaced values in ``[lo, hi]``, a fresh leaf."""
    n = 1
    for s in shape:
        n *= s
    return torch.linspace(lo, hi, n).reshape(shape).clone().requires_grad_(grad)


def fixed(module: type[M], *args: Any, **kwargs: Any) -> M:
    """Builds ``module(*args, **kwargs)`` with every parameter set to fixed ramp values.

    Construction runs inside ``fork_rng``, so the global RNG is left as it was.
    """
    with torch.random.fork_rng(devices=[]):
        layer = module(*args, **kwargs)
    with torch.no_grad():
        for i, p in enumerate(layer.parameters()):
            p.copy_(ramp(*p.shape, lo=-0.5 + 0.1 * i, hi=0.7 - 0.1 * i))
    return layer


def fixed_linear(n_in: int, n_out: int, *, bias: bool = True) -> nn.Linear:
    """An ``nn.Linear`` with fixed weights."""
    return fixed(nn.Linear, n_in, n_out, bias=bias)


def grads(**tensors: torch.Tensor) -> dict[str, torch.Tensor]:
    """``{name: tensor.grad}`` for each tensor that received a gradient."""
    out: dict[str, torch.Tensor] = {}
    for name, t in tensors.items():
        if t.grad is None:
            raise AssertionError(f"{name} has no gradient")
        out[name] = t.grad
    return out


def exact(**values: Any) -> Callable[[], dict[str, torch.Tensor]]:
    """A ``reference=`` giving fixed gradients, for cases where autograd's answer is exact (the
    values PyTorch's own tests assert): ``exact(root=[[2.0, 2.0], [1.0, 1.0]])``."""

    def reference() -> dict[str, torch.Tensor]:
        return {name: torch.tensor(v) for name, v in values.items()}

    return reference
