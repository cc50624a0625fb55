"""The autograd status of one tensor."""

from __future__ import annotations

from dataclasses import dataclass

from .values import ValueSummary

__all__ = ["TensorRef", "TensorStatus"]


@dataclass(frozen=True)
class TensorStatus:
    """What autograd knows about a tensor: the facts behind "why is ``.grad`` None?".

    A non-leaf tensor (one made by an op from tensors that require grad) has a ``grad_fn`` and
    no ``.grad`` unless ``retain_grad()`` was called on it; only leaves accumulate ``.grad``.
    """

    name: str
    is_leaf: bool
    requires_grad: bool
    grad_fn: str | None
    retains_grad: bool
    grad: ValueSummary | None
    version: int
    shape: tuple[int, ...]
    dtype: str
    device: str
    value: ValueSummary | None = None

    @property
    def role(self) -> str:
        """Returns "leaf (requires grad)", "leaf (constant)" or "non-leaf", as a short phrase."""
        if not self.is_leaf:
            return "non-leaf"
        return "leaf (requires grad)" if self.requires_grad else "leaf (constant)"

    def why_no_grad(self) -> str | None:
        """Returns why ``.grad`` is None, or None when it has a gradient."""
        if self.grad is not None:
            return None
        if not self.requires_grad:
            return "it does not require grad: autograd never computes a gradient for it"
        if not self.is_leaf and not self.retains_grad:
            return (
                "it is not a leaf: autograd only fills .grad of leaves; "
                "call .retain_grad() on it before backward() to keep its gradient"
            )
        return "no backward() has reached it yet"


@dataclass(frozen=True)
class TensorRef:
    """A tensor as one op saw it: name, shape, and its autograd status at that moment."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    requires_grad: bool
    is_leaf: bool
    version: int
    grad_fn: str | None = None
    nonfinite: bool = False  # holds a NaN or an infinity (floating-point tensors in a trace)
