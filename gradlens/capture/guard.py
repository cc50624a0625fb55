"""The in-place guard: a torch-function mode that checks every write against the tensors that
autograd nodes saved for backward (``SavedTensors``), and every backward against the writes.

Modes: ``warn`` records violations and lets PyTorch do what it does (its own error is raised
unchanged at backward); ``strict`` raises ``InplaceError`` at the line of the write.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from .._errors import GradlensError
from ..records import InplaceViolation
from .calls import BACKWARD_CALLS, parse_backward
from .inplace import SavedTensors
from .source import user_frame

__all__ = ["Guard", "InplaceError"]

GuardMode = Literal["warn", "strict"]
_DATA_SETTER = torch._C.TensorBase.data.__set__  # type: ignore[attr-defined]
_READS = {"__get__", "__repr__", "__format__", "__str__", "dim", "size", "numel", "stride"}


class InplaceError(GradlensError, RuntimeError):
    """An in-place write to a tensor saved for backward (raised by ``guard(mode="strict")``)."""

    def __init__(self, message: str, violation: InplaceViolation) -> None:
        super().__init__(message)
        self.violation = violation


class _Mode(TorchFunctionMode):
    def __init__(self, guard: Guard) -> None:
        super().__init__()
        self._guard = guard

    def __torch_function__(self, func, types, args=(), kwargs=None):
        return self._guard._on_call(func, args, kwargs or {})


class Guard:
    """Watches writes to saved tensors while active (a context manager); see the module doc."""

    def __init__(self, *, mode: GuardMode = "warn", verify: bool = False) -> None:
        self.mode = mode
        self.saved = SavedTensors(verify=verify)
        self._mode: _Mode | None = None
        self.explain: Any = None  # violation -> message, set by the api layer for strict mode

    def __enter__(self) -> Guard:
        self._mode = _Mode(self)
        self._mode.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        mode, self._mode = self._mode, None
        try:
            if mode is not None:
                mode.__exit__(*exc)
        finally:
            self.saved.close()

    @property
    def violations(self) -> list[InplaceViolation]:
        """Returns the confirmed violations, in the order backward reached them."""
        return list(self.saved.violations)

    def _on_call(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if func in BACKWARD_CALLS:
            return self._on_backward(func, args, kwargs)
        name = getattr(func, "__name__", None) or repr(func)
        if func == _DATA_SETTER:  # `t.data = new` (not `t.grad = None`, also a __set__)
            return self._on_set(func, args, kwargs)
        if name in _READS:
            return func(*args, **kwargs)
        tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        versions = [t._version for t in tensors]
        try:
            out = func(*args, **kwargs)
        except RuntimeError as e:
            if SavedTensors.is_leaf_error(e):
                frame, source = user_frame()
                leaf = next((t for t in tensors if t.is_leaf and t.requires_grad), tensors[0])
                self.saved.leaf_write(leaf, name, source, frame)
            raise
        bumped = [t for t, v in zip(tensors, versions, strict=True) if t._version != v]
        if bumped:
            frame, source = user_frame()
            for t in bumped:
                found = self.saved.check_write(t, name, source, frame)
                if found and self.mode == "strict":
                    self.saved.accept(found[0])
                    raise InplaceError(self._message(found[0]), found[0])
        outputs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
        if any(t.grad_fn is not None for t in outputs):
            _, source = user_frame()
            self.saved.record_saves(outputs, name, source)
        return out

    def _on_set(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """``t.data = new``: records that alias ``t`` itself will read the new values."""
        ids = self.saved.same_tensor(args[0])
        out = func(*args, **kwargs)
        if ids:
            frame, source = user_frame()
            found = self.saved.data_replaced(ids, args[0], source, frame)
            if found and self.mode == "strict":
                self.saved.accept(found[0])
                raise InplaceError(self._message(found[0]), found[0])
        return out

    def _on_backward(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        parsed = parse_backward(func, args, kwargs)
        frame, source = user_frame()
        ids = self.saved.reachable(parsed.roots)
        self.saved.verify_before_backward(ids, source, frame)
        found = self.saved.confirm(ids)
        if found and self.mode == "strict":
            raise InplaceError(self._message(found[0]), found[0])
        out = func(*args, **kwargs)  # PyTorch's own error, if any, goes up unchanged
        if not parsed.retain_graph:
            self.saved.drop(ids)
        return out

    def _message(self, v: InplaceViolation) -> str:
        return self.explain(v) if self.explain is not None else f"{v.kind}: {v.tensor}"
