"""Which torch functions can never write the tensors they are given: the guard's fast path.

A torch-function mode sees every op, and the guard must notice each write (a moved version).
Reading every input's version before and after an op costs more than many small ops
themselves, so the guard first asks, once per function, whether it *can* write an input:

* only PyTorch's generated bindings (``torch.mul``, ``Tensor.mul``, ``torch._C._nn.linear``)
  qualify: their name is the ATen operator's, whose schema says which arguments each overload
  writes (``Tensor(a!) out``). A function that writes a positional argument (``mul_``,
  ``_foreach_add_``, ``copy_``) never qualifies; one that writes only keyword-only arguments
  (``out=``) qualifies when the call passes none of them;
* schemas that do not tell the whole truth are excluded by hand: the batch-norm family writes
  its running statistics without saying so;
* everything else (Python functions such as ``F.relu(..., inplace=True)``, ``__iadd__``,
  ``__setitem__``, ``OpOverload`` calls, unknown names) takes the full check.

A wrong "cannot write" would lose findings, so every doubt answers "may write".
"""

from __future__ import annotations

import types
from typing import Any

import torch

__all__ = ["never_writes"]

_BINDINGS = (types.BuiltinFunctionType, types.MethodDescriptorType, types.WrapperDescriptorType)
#: Operators that read their arguments: Python's names for them, and the ATen name.
_DUNDERS = {
    "__mul__": "mul",
    "__rmul__": "mul",
    "__add__": "add",
    "__radd__": "add",
    "__sub__": "sub",
    "__truediv__": "div",
    "__div__": "div",
    "__matmul__": "matmul",
    "__neg__": "neg",
    "__pow__": "pow",
    "__abs__": "abs",
    "__getitem__": "index",
    "__and__": "bitwise_and",
    "__or__": "bitwise_or",
    "__xor__": "bitwise_xor",
    "__invert__": "bitwise_not",
    "__lt__": "lt",
    "__le__": "le",
    "__gt__": "gt",
    "__ge__": "ge",
    "__eq__": "eq",
    "__ne__": "ne",
    "__mod__": "remainder",
    "__floordiv__": "floor_divide",
}
# Arguments a schema does not mark as written although the kernel writes them.
_UNDECLARED = frozenset({"running_mean", "running_var", "noise"})
_DESCRIPTORS = (types.GetSetDescriptorType, types.MemberDescriptorType)
# Attributes whose assignment writes no tensor's memory (``.data =``, ``.real =`` do).
_SETTERS = frozenset({"grad", "requires_grad", "retains_grad", "name"})
_CACHE_MAX = 4096
_cache: dict[Any, frozenset[str] | None] = {}


def never_writes(func: Any) -> frozenset[str] | None:
    """Returns None when ``func`` may write a tensor it is given; else the names of the
    keyword-only arguments it writes when they are passed (``{"out"}``; empty when none)."""
    try:
        return _cache[func]
    except KeyError:
        pass
    except TypeError:  # unhashable
        return None
    found = _classify(func)
    kind = type(func)
    if (
        kind in _BINDINGS
        or kind is types.FunctionType
        or (
            # t.grad and other attributes: a new method-wrapper per access, equal to the others
            kind is types.MethodWrapperType
            and type(getattr(func, "__self__", None)) in _DESCRIPTORS
        )
    ):  # long-lived objects (not bound to a tensor): worth keeping
        if len(_cache) >= _CACHE_MAX:
            _cache.clear()
        _cache[func] = found
    return found


def _classify(func: Any) -> frozenset[str] | None:
    if type(func) is types.MethodWrapperType:
        owner = getattr(func, "__self__", None)
        if type(owner) not in _DESCRIPTORS:
            return None
        if func.__name__ == "__get__" or (
            func.__name__ == "__set__" and getattr(owner, "__name__", None) in _SETTERS
        ):
            return frozenset()  # reading an attribute; setting .grad writes no memory
        return None
    if type(func) not in _BINDINGS:
        return None
    name = getattr(func, "__name__", None)
    if not isinstance(name, str) or (name.endswith("_") and not name.startswith("__")):
        return None  # mul_, add_, copy_, _foreach_add_ ...
    if name.startswith("__"):
        name = _DUNDERS.get(name, "")  # __iadd__, __setitem__ ... are not listed
        if name == "index":
            return frozenset()  # indexing reads (a view or a copy)
    packet = getattr(torch.ops.aten, name, None) if name else None
    if not isinstance(packet, torch._ops.OpOverloadPacket):
        return None
    written: set[str] = set()
    try:
        for overload in packet.overloads():
            schema = getattr(packet, overload)._schema
            for arg in schema.arguments:
                if arg.name in _UNDECLARED:
                    return None
                info = arg.alias_info
                if info is not None and info.is_write:
                    if not arg.kwarg_only:
                        return None
                    written.add(arg.name)
    except (AttributeError, RuntimeError):
        return None
    return frozenset(written)
