"""``gradlens.inspect``: the autograd status of tensors, named after the caller's variables."""

from __future__ import annotations

from typing import Any

import torch

from .._errors import GradlensError
from ..records import TensorStatus
from .source import frame_locals, user_frame
from .summary import tensor_status

__all__ = ["inspect_tensors"]


def inspect_tensors(*tensors: Any, **named: Any) -> dict[str, TensorStatus]:
    """Returns ``{name: status}`` for each tensor, positional ones named after their variables."""
    frame, _ = user_frame()
    local_names: dict[int, str] = {}
    if frame is not None:
        for var, value in frame_locals(frame).items():
            if isinstance(value, torch.Tensor) and not var.startswith("_"):
                local_names.setdefault(id(value), var)
    out: dict[str, TensorStatus] = {}
    for i, t in enumerate(tensors):
        _check(t, f"argument {i}")
        name = local_names.get(id(t), f"t{i}")
        while name in out:
            name += "'"
        out[name] = tensor_status(t, name)
    for name, t in named.items():
        _check(t, f"{name}=")
        out[name] = tensor_status(t, name)
    return out


def _check(t: Any, where: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise GradlensError(
            f"{where} is a {type(t).__name__}, not a tensor: inspect() takes tensors"
        )
