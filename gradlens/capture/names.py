"""Names for tensors: given by the user, taken from modules, or found in the caller's variables."""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from types import FrameType
from typing import Any

import torch

from .._errors import GradlensError
from .source import frame_locals

__all__ = ["TensorNames", "named_params"]


def named_params(params: Any, *, where: str = "params") -> dict[str, torch.Tensor]:
    """Returns ``{name: tensor}`` from an ``nn.Module`` (every name of a tied parameter), a
    mapping of tensors, or None.

    Raises GradlensError for anything else, saying what is accepted.
    """
    if params is None:
        return {}
    if isinstance(params, torch.nn.Module):
        # Every name, a tied or shared parameter's too (one tensor, two names: the first is
        # its name, the others its aliases).
        return dict(params.named_parameters(remove_duplicate=False))
    if isinstance(params, Mapping):
        out: dict[str, torch.Tensor] = {}
        for name, t in params.items():
            if not isinstance(t, torch.Tensor):
                raise GradlensError(
                    f"{where}[{name!r}] is a {type(t).__name__}, not a tensor: "
                    f"give {where} as {{name: tensor}}"
                )
            out[str(name)] = t
        return out
    raise GradlensError(
        f"{where} must be an nn.Module or a dict of name -> tensor, not {type(params).__name__}"
    )


class TensorNames:
    """Gives each tensor seen a small integer key, and later a name; holds weak references only.

    Names come, in order of preference, from the user (``trace(w=w)``), from modules' parameter
    names, from the caller's variables (``a``, ``loss``; a rebound variable gives ``a#2``), and
    last from the order tensors were first seen (``t3``).
    """

    def __init__(self, named: Mapping[str, torch.Tensor] | None = None) -> None:
        self._by_id: dict[int, tuple[weakref.ref[torch.Tensor], int]] = {}
        self._names: dict[int, str] = {}
        self._taken: set[str] = set()
        self._suffix: dict[str, int] = {}  # the last "#n" given to each name
        self._next = 0
        self._aliases: dict[int, tuple[str, ...]] = {}
        # The weak-reference callbacks reach this object weakly: no reference cycle per tensor.
        self._me = weakref.ref(self)
        for name, t in (named or {}).items():
            k = self.key(t)
            if k in self._names:  # a tensor named twice: tied weights, a module used twice
                self._aliases[k] = (*self._aliases.get(k, ()), name)
            else:
                self.set_name(k, name)

    def key(self, t: torch.Tensor) -> int:
        """Returns the key of ``t``, giving it the next one the first time it is seen."""
        hit = self._by_id.get(id(t))
        if hit is not None and hit[0]() is t:
            return hit[1]
        k = self._next
        self._next += 1
        pid = id(t)

        def forget(ref: weakref.ref[torch.Tensor], pid: int = pid, me: Any = self._me) -> None:
            names = me()
            if names is not None:
                names._forget(pid, ref)

        self._by_id[pid] = (weakref.ref(t, forget), k)
        return k

    def known(self, t: torch.Tensor) -> int | None:
        """Returns the key of ``t`` if it was seen, else None."""
        hit = self._by_id.get(id(t))
        return hit[1] if hit is not None and hit[0]() is t else None

    def _forget(self, pid: int, ref: weakref.ref[torch.Tensor]) -> None:
        hit = self._by_id.get(pid)
        if hit is not None and hit[0] is ref:
            del self._by_id[pid]

    def set_name(self, k: int, name: str) -> str:
        """Names key ``k`` unless it has a name; a taken name gets a ``#2`` suffix. Returns it."""
        if k in self._names:
            return self._names[k]
        unique, n = name, self._suffix.get(name, 1)
        while unique in self._taken:  # one step per name, not one per earlier tensor
            n += 1
            unique = f"{name}#{n}"
        self._suffix[name] = n
        self._taken.add(unique)
        self._names[k] = unique
        return unique

    def aliases(self, k: int) -> tuple[str, ...]:
        """Returns the other names key ``k`` was given (``("lm_head.weight",)`` for GPT-2's
        ``transformer.wte.weight``), in the order given; () for most tensors."""
        return self._aliases.get(k, ())

    def aliases_of(self, t: torch.Tensor) -> tuple[str, ...]:
        """Returns :meth:`aliases` of tensor ``t`` (() if it was never seen)."""
        k = self.known(t)
        return () if k is None else self.aliases(k)

    def name(self, k: int) -> str:
        """Returns the name of key ``k``, naming it ``t<k>`` if it has none yet."""
        return self._names.get(k) or self.set_name(k, f"t{k}")

    def has_name(self, k: int) -> bool:
        """Returns True when key ``k`` has a name."""
        return k in self._names

    def name_tensor(self, t: torch.Tensor, fallback: str) -> str:
        """Returns the name of ``t``, naming it ``fallback`` if it has none."""
        k = self.key(t)
        return self._names.get(k) or self.set_name(k, fallback)

    def alive(self) -> list[tuple[int, torch.Tensor]]:
        """Returns ``(key, tensor)`` for every tensor seen and still alive, in key order."""
        out = []
        for ref, k in list(self._by_id.values()):
            t = ref()
            if t is not None:
                out.append((k, t))
        return sorted(out, key=lambda kt: kt[0])

    def names_from_frame(self, frame: FrameType | None) -> None:
        """Names tensors seen so far after the frame's local variables that hold them."""
        if frame is None:
            return
        for var, value in frame_locals(frame).items():
            if var.startswith("_") or not isinstance(value, torch.Tensor):
                continue
            k = self.known(value)
            if k is not None and k not in self._names:
                self.set_name(k, var)
