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
* a few of ``torch.nn.functional``'s Python functions, listed by hand: the losses and
  normalisations that only read, and the activations and dropouts that write only when their
  ``inplace`` argument is true (``inplace_at`` gives its position: the caller checks the value);
* the profiler's ``record_function`` ops (every optimizer step and ``zero_grad`` makes two),
  by their schemas;
* everything else (other Python functions, ``__iadd__``, ``__setitem__``, other ``OpOverload``
  calls, unknown names) takes the full check.

A wrong "cannot write" would lose findings, so every doubt answers "may write".
"""

from __future__ import annotations

import inspect
import types
from typing import Any

import torch
from torch.nn import functional as F

__all__ = ["ATTRIBUTE", "INPLACE", "inplace_at", "never_writes", "unwritten"]

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
# torch.nn.functional's Python functions that never write their arguments.
_F_READ = frozenset(
    getattr(F, name)
    for name in (
        "mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss", "cross_entropy", "nll_loss",
        "binary_cross_entropy", "binary_cross_entropy_with_logits", "kl_div",
        "soft_margin_loss", "margin_ranking_loss", "hinge_embedding_loss",
        "cosine_embedding_loss", "poisson_nll_loss", "gaussian_nll_loss",
        "softmax", "log_softmax", "softmin", "layer_norm", "group_norm", "rms_norm",
        "tanh", "sigmoid",
    )
    if hasattr(F, name)
)  # fmt: skip
# ... and those that write their input only when ``inplace`` is true: its position.
_F_INPLACE = {
    getattr(F, name): list(inspect.signature(getattr(F, name)).parameters).index("inplace")
    for name in (
        "relu", "relu6", "elu", "selu", "celu", "leaky_relu", "hardtanh", "hardsigmoid",
        "hardswish", "silu", "mish", "threshold", "rrelu",
        "dropout", "alpha_dropout", "feature_alpha_dropout", "dropout1d", "dropout2d",
        "dropout3d",
    )
    if hasattr(F, name)
}  # fmt: skip
#: What ``never_writes`` answers for those: the caller checks the positional ``inplace`` too.
INPLACE = frozenset({"inplace"})
#: What it answers for an attribute read (``t.grad``) or a set that writes no memory (``t.grad =
#: None``): no argument is written, and no autograd node is made.
ATTRIBUTE = frozenset({"<attribute>"})
_NAMESPACES = frozenset({"profiler"})  # OpOverloads trusted by their schemas
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
        or isinstance(func, (torch._ops.OpOverloadPacket, torch._ops.OpOverload))
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


def inplace_at(func: Any) -> int | None:
    """Returns the position of ``func``'s ``inplace`` argument when ``never_writes`` answered
    ``{"inplace"}`` for it (a ``torch.nn.functional`` activation or dropout), else None."""
    return _F_INPLACE.get(func)


def unwritten(writes: frozenset[str], kwargs: dict[str, Any]) -> bool:
    """Returns whether a call with ``kwargs`` writes none of ``writes`` (the names
    ``never_writes`` gave): each is absent, None (``out=None``) or False (``inplace=False``)."""
    for name in writes:
        value = kwargs.get(name)
        if value is not None and value is not False:
            return False
    return True


def _classify(func: Any) -> frozenset[str] | None:
    if isinstance(func, (torch._ops.OpOverloadPacket, torch._ops.OpOverload)):
        return _by_schema(func)
    if type(func) is types.FunctionType:
        if func in _F_READ:
            return frozenset()
        return INPLACE if func in _F_INPLACE else None
    if type(func) is types.MethodWrapperType:
        owner = getattr(func, "__self__", None)
        if type(owner) not in _DESCRIPTORS:
            return None
        if func.__name__ == "__get__" or (
            func.__name__ == "__set__" and getattr(owner, "__name__", None) in _SETTERS
        ):
            return ATTRIBUTE  # reading an attribute; setting .grad writes no memory
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


def _by_schema(op: Any) -> frozenset[str] | None:
    """Returns frozenset() for an op of a trusted namespace whose schemas write nothing."""
    qualified = getattr(op, "_qualified_op_name", None) or getattr(op, "name", lambda: "")()
    if not isinstance(qualified, str) or qualified.split("::")[0] not in _NAMESPACES:
        return None
    try:
        if isinstance(op, torch._ops.OpOverloadPacket):
            schemas = [getattr(op, name)._schema for name in op.overloads()]
        else:
            schemas = [op._schema]
        for schema in schemas:
            if any(a.alias_info is not None and a.alias_info.is_write for a in schema.arguments):
                return None
    except (AttributeError, RuntimeError):
        return None
    return frozenset()
