"""Turn tensors into records: value summaries, status and per-op references."""

from __future__ import annotations

from typing import Any

import torch

from ..records import SMALL_NUMEL, TensorRef, TensorStatus, ValueSummary
from .quiet import quiet

__all__ = [
    "grad_fn_name",
    "grad_fn_of",
    "shape_of",
    "summarize",
    "tensor_ref",
    "tensor_status",
    "version_of",
]


def version_of(t: torch.Tensor) -> int:
    """Returns ``t._version``; 0 for an inference tensor, which has no version counter."""
    return 0 if t.is_inference() else t._version


def shape_of(t: torch.Tensor) -> tuple[int, ...]:
    """Returns ``t``'s shape; () for a tensor with no single shape (a nested tensor)."""
    if t.is_nested:
        return ()
    try:
        return tuple(int(d) for d in t.shape)
    except (RuntimeError, TypeError):  # symbolic or otherwise unreadable sizes
        return ()


def summarize(t: torch.Tensor | None) -> ValueSummary | None:
    """Returns the value of ``t`` as numbers (exact when small), or None for None.

    This reads the tensor on the host: fine for a debugging trace, never used per training step.
    """
    if t is None:
        return None
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"expected a tensor, got {type(t).__name__}")
    shape = shape_of(t)
    dtype = str(t.dtype).removeprefix("torch.")
    if t.layout != torch.strided or t.is_meta or t.is_nested or not _is_plain(t):
        return ValueSummary(shape=shape, dtype=dtype)
    with torch.no_grad(), quiet():
        d = t.detach().resolve_conj().resolve_neg()
        if d.numel() <= SMALL_NUMEL and not d.is_complex():
            return ValueSummary(shape=shape, dtype=dtype, values=d.cpu().tolist())
        if d.is_complex():
            d = d.abs()
        f = d.to(torch.float64) if not d.is_floating_point() else d.double()
        finite = torch.isfinite(f)
        nan = int(torch.isnan(f).sum())
        inf = int(torch.isinf(f).sum())
        good = f[finite]
        if good.numel() == 0:
            return ValueSummary(shape=shape, dtype=dtype, nan=nan, inf=inf)
        stats = torch.stack([good.norm(), good.min(), good.max()]).tolist()
        return ValueSummary(
            shape=shape, dtype=dtype, norm=stats[0], min=stats[1], max=stats[2], nan=nan, inf=inf
        )


def _is_plain(t: torch.Tensor) -> bool:
    """Returns whether ``t``'s values can be read: not a subclass, and not a tensor wrapped by a
    ``torch.func`` transform (``vmap``, ``grad``), whose values exist only per sample."""
    plain = type(t) in (torch.Tensor, torch.nn.Parameter) or isinstance(t, torch.nn.Parameter)
    return plain and not (
        torch._C._functorch.is_functorch_wrapped_tensor(t)
        or torch._C._functorch.is_legacy_batchedtensor(t)
    )


def grad_fn_of(t: torch.Tensor) -> Any:
    """Returns ``t.grad_fn``, or None where reading it raises: a view of a multi-output op
    whose base was later written in place refuses to give one (PyTorch's own error comes when
    the user's code reads it, not when gradlens does)."""
    try:
        if type(t) is torch.Tensor or isinstance(t, torch.nn.Parameter):
            return t.grad_fn
        with torch._C.DisableTorchFunctionSubclass():  # a subclass must not see the read
            return t.grad_fn
    except RuntimeError:
        return None


def grad_fn_name(t: torch.Tensor) -> str | None:
    """Returns the name of ``t.grad_fn`` ("MulBackward0"), or None for a leaf."""
    fn = grad_fn_of(t)
    return None if fn is None else fn.name()


def tensor_status(t: torch.Tensor, name: str, *, with_value: bool = True) -> TensorStatus:
    """Returns the autograd status of ``t`` under ``name``."""
    # Reading .grad of a non-leaf warns in PyTorch; it is always None unless retain_grad().
    grad = t.grad if (t.is_leaf or t.retains_grad) else None
    return TensorStatus(
        name=name,
        is_leaf=t.is_leaf,
        requires_grad=t.requires_grad,
        grad_fn=grad_fn_name(t),
        retains_grad=bool(t.retains_grad) if not t.is_leaf else False,
        grad=summarize(grad),
        version=version_of(t),
        shape=shape_of(t),
        dtype=str(t.dtype).removeprefix("torch."),
        device=str(t.device),
        value=summarize(t) if with_value else None,
    )


def tensor_ref(t: torch.Tensor, name: str, *, check_finite: bool = False) -> TensorRef:
    """Returns ``t`` as an op saw it; with ``check_finite``, also whether it holds a NaN or an
    infinity (one read of its values on the host: a trace's cost, never a watch's)."""
    return TensorRef(
        name=name,
        shape=shape_of(t),
        dtype=str(t.dtype).removeprefix("torch."),
        requires_grad=t.requires_grad,
        is_leaf=t.is_leaf,
        version=version_of(t),
        grad_fn=grad_fn_name(t),
        nonfinite=check_finite and _has_nonfinite(t),
    )


def _has_nonfinite(t: torch.Tensor) -> bool:
    if not (t.is_floating_point() or t.is_complex()) or t.layout != torch.strided:
        return False
    if t.device.type == "meta" or t.is_nested or not _is_plain(t) or t.numel() == 0:
        return False
    with torch.no_grad(), quiet():
        return not bool(torch.isfinite(t.detach()).all())
