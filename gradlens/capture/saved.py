"""What an autograd node saved for backward, read without unpacking it.

Reading ``node._saved_x`` *unpacks* the saved tensor: it runs the saved-tensor unpack hook
(under non-reentrant activation checkpointing that re-runs the checkpointed forward; under
``allow_mutation_on_saved_tensors`` it touches the context's clones) and applies PyTorch's
version check. gradlens must change neither, so it reads ``node._raw_saved_x`` instead: a
``SavedTensor`` whose ``unpack_hook`` says whether a hook owns the value and whose ``data`` is the
stored tensor itself (same memory and version counter; no grad_fn for a saved output, so
holding it makes no reference cycle with the node). Values owned by a hook are never touched:
they are reported as skipped, because what backward will get is up to the hook.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import torch

__all__ = [
    "SKIP_HOOKED",
    "Slot",
    "has_saved_introspection",
    "is_plain",
    "raw_saved",
    "saved_attributes",
    "saved_slots",
    "unsupported",
    "unused_by_backward",
]

_RAW = "_raw_saved_"
# Saved attributes that describe sizes/strides rather than tensors.
_SKIP_SUFFIXES = ("_sym_sizes", "_sym_strides", "_sizes", "_strides", "_options")
_SavedTensor: Any = torch._C._autograd.SavedTensor

#: The reason given for values owned by saved-tensor hooks.
SKIP_HOOKED = (
    "saved under saved_tensors_hooks (activation checkpointing, CPU offload, "
    "allow_mutation_on_saved_tensors): what backward reads is up to the hook"
)


class Slot(NamedTuple):
    """One saved value of a node: ``role`` ("self", "result", "tensors"...), and either the
    stored tensor, or why it cannot be read (``freed`` by a backward, ``skipped`` with a reason).
    (A named tuple: a graph walk makes one per saved tensor, thousands on a real model.)"""

    role: str
    tensor: torch.Tensor | None = None
    freed: bool = False
    skipped: str | None = None


@functools.cache
def _raw_attributes(node_type: type) -> tuple[str, ...]:
    return tuple(a for a in dir(node_type) if a.startswith(_RAW) and not a.endswith(_SKIP_SUFFIXES))


def saved_attributes(fn: Any) -> tuple[str, ...]:
    """Returns the ``_raw_saved_*`` attributes of autograd node ``fn``'s class (none: it saves
    nothing that Python can read, and ``saved_slots`` yields nothing)."""
    return _raw_attributes(_type(fn))


def _type(fn: Any) -> Any:
    return type(fn)


def has_saved_introspection(fn: Any) -> bool:
    """Returns False for nodes whose saved values Python cannot see (the generic
    ``CppFunction`` of ``torch._foreach_*`` and other ops without generated bindings)."""
    return bool(_raw_attributes(_type(fn))) or type(fn).__name__ != "CppFunction"


def is_plain(t: torch.Tensor) -> bool:
    """Returns whether ``t`` is a plain tensor or parameter: a subclass's own
    ``__torch_function__`` would see every method gradlens calls on it, so it is not touched."""
    return type(t) is torch.Tensor or isinstance(t, torch.nn.Parameter)


def unsupported(t: torch.Tensor) -> str | None:
    """Returns why gradlens cannot check writes to ``t`` (None when it can): nested, sparse,
    inference, meta and subclass tensors have no plain memory span or version counter."""
    if t.is_nested:
        return "nested tensor"
    if type(t) is not torch.Tensor and not isinstance(t, torch.nn.Parameter):
        return f"tensor subclass {type(t).__name__}"
    if torch._C._functorch.is_functorch_wrapped_tensor(t) or (
        torch._C._functorch.is_legacy_batchedtensor(t)
    ):
        return "tensor inside a torch.func transform"
    if t.layout != torch.strided:
        return f"{str(t.layout).removeprefix('torch.')} tensor"
    if t.is_inference():
        return "inference tensor (no version counter)"
    if t.is_meta:
        return "meta tensor"
    return None


_RUNNING_STATS = ("running_mean", "running_var")


def unused_by_backward(fn: Any, role: str) -> bool:
    """Returns True for a saved value backward never reads: batch norm's running statistics in
    training mode (its backward uses the batch's own, saved as result1/result2). The forward
    itself updates them in place on every call, and PyTorch rightly does not object."""
    return role in _RUNNING_STATS and getattr(fn, "_saved_training", False) is True


def raw_saved(fn: Any) -> Iterator[tuple[str, Any]]:
    """Yields ``(role, SavedTensor)`` for every saved tensor of node ``fn`` (lists give one
    pair per item), touching nothing: the caller checks ``unpack_hook`` before ``data``."""
    for attr in _raw_attributes(_type(fn)):
        try:
            value = getattr(fn, attr)
        except RuntimeError:  # a custom Function's saved tensors, freed by backward
            continue
        role = attr[len(_RAW) :]
        if isinstance(value, (tuple, list)):
            for item in value:
                if isinstance(item, _SavedTensor):
                    yield role, item
        elif isinstance(value, _SavedTensor):
            yield role, value


def saved_slots(fn: Any, held: Callable[[str], bool] | None = None) -> Iterator[Slot]:
    """Yields every saved value of autograd node ``fn`` (lists give one slot per tensor),
    without running unpack hooks or PyTorch's version check.

    ``held(role)`` may say that a single (not list) slot was seen holding a value: empty now,
    only a backward can have freed it, which spares asking PyTorch (an exception each time).
    """
    for attr in _raw_attributes(_type(fn)):
        role = attr[len(_RAW) :]
        try:
            value = getattr(fn, attr)
        except RuntimeError:  # a custom Function's saved tensors, freed by backward
            yield Slot(role, freed=True)
            continue
        if (
            held is not None
            and isinstance(value, _SavedTensor)  # a single value, not a list
            and value.unpack_hook is None
            and value.data is None
            and held(role)
        ):
            yield Slot(role, freed=True)
            continue
        items = value if isinstance(value, (tuple, list)) else (value,)
        for item in items:
            if not isinstance(item, _SavedTensor):
                continue
            if item.unpack_hook is not None:
                yield Slot(role, skipped=SKIP_HOOKED)
                continue
            data = item.data
            if isinstance(data, torch.Tensor) and not is_plain(data):
                yield Slot(role, skipped=f"tensor subclass {type(data).__name__}")
            elif isinstance(data, torch.Tensor):
                yield Slot(role, tensor=data)
            elif data is None and _freed(fn, role):
                yield Slot(role, freed=True)


def _freed(fn: Any, role: str) -> bool:
    """Returns whether an empty slot was freed by a backward (rather than never holding a
    tensor, as an optional ``bias=None``). With no hook on the slot, reading it runs nothing."""
    try:
        getattr(fn, "_saved_" + role, None)
    except RuntimeError:
        return True
    return False
