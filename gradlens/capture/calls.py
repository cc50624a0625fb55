"""``backward()`` / ``torch.autograd.backward`` / ``torch.autograd.grad`` calls, as a torch-function
mode receives them, bound to what they mean: roots, weights, inputs, retain/create graph."""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["BACKWARD_CALLS", "BackwardCall", "as_list", "parse_backward", "tensors_in"]

#: The functions that run a backward pass, and what kind of call each is.
BACKWARD_CALLS: dict[Any, str] = {
    torch.Tensor.backward: "backward",
    torch.autograd.backward: "backward",
    torch.autograd.grad: "grad",
}


@dataclass(frozen=True)
class BackwardCall:
    """One backward-type call's arguments, in the same terms for all three functions."""

    call: str  # "backward" or "grad"
    roots: list[torch.Tensor]
    weights: list[Any]  # gradient= / grad_tensors= / grad_outputs=, None where not given
    inputs: list[Any]  # autograd.grad's inputs, or backward(inputs=...)
    retain_graph: bool
    create_graph: bool


def as_list(x: Any) -> list[Any]:
    """Returns ``x`` as a list: [] for None, the items of a list/tuple, else [x]."""
    if x is None:
        return []
    if isinstance(x, (list, tuple)):
        return list(x)
    return [x]


_TENSOR_BACKWARD = torch.Tensor.backward
_BACKWARD_KEYWORDS = frozenset({"gradient", "retain_graph", "create_graph", "inputs"})


@functools.cache
def _signature(func: Any) -> inspect.Signature:
    return inspect.signature(func)


def parse_backward(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> BackwardCall:
    """Returns the meaning of a call to one of ``BACKWARD_CALLS``."""
    if func is _TENSOR_BACKWARD and len(args) == 1 and kwargs.keys() <= _BACKWARD_KEYWORDS:
        # loss.backward(): Tensor.backward hands the mode every keyword, by name; what bind()
        # would give, without binding a signature on every backward.
        bound: dict[str, Any] = {"self": args[0], **kwargs}
    else:
        bound = dict(_signature(func).bind(*args, **kwargs).arguments)
    call = BACKWARD_CALLS[func]
    if call == "grad":
        roots, weights, inputs = (
            bound.get("outputs"),
            bound.get("grad_outputs"),
            bound.get("inputs"),
        )
    elif "self" in bound:  # Tensor.backward
        roots, weights, inputs = bound["self"], bound.get("gradient"), bound.get("inputs")
    else:
        roots = bound.get("tensors")
        weights = bound.get("grad_tensors", bound.get("grad_variables"))
        inputs = bound.get("inputs")
    create_graph = bool(bound.get("create_graph", False))
    retain = bound.get("retain_graph")
    return BackwardCall(
        call=call,
        roots=[t for t in as_list(roots) if isinstance(t, torch.Tensor)],
        weights=as_list(weights),
        inputs=as_list(inputs),
        retain_graph=create_graph if retain is None else bool(retain),
        create_graph=create_graph,
    )


def tensors_in(args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[torch.Tensor]:
    """Returns the tensors among a call's arguments, looking into lists, tuples and dicts (a
    small iterative flatten: ``tree_flatten`` costs more than many of the ops it looks at)."""
    if not kwargs:  # the common case: a flat tuple of tensors and numbers
        flat = [a for a in args if isinstance(a, torch.Tensor)]
        if len(flat) == len(args) or not any(isinstance(a, (list, tuple, dict)) for a in args):
            return flat
    out: list[torch.Tensor] = []
    stack: list[Any] = [kwargs, args] if kwargs else [args]
    while stack:
        item = stack.pop()
        if isinstance(item, torch.Tensor):
            out.append(item)
        elif isinstance(item, (list, tuple)):
            stack.extend(reversed(item))
        elif isinstance(item, dict):
            stack.extend(reversed(list(item.values())))
    return out
