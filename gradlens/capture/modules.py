"""Know which ``nn.Module``'s forward is running: a stack of module paths kept by hooks."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.hooks import RemovableHandle

__all__ = ["ModuleStack", "module_path_names"]


def module_path_names(module: torch.nn.Module) -> dict[torch.nn.Module, str]:
    """Returns ``{submodule: path}``; the root is named by its class (``"MLP"``)."""
    root = type(module).__name__
    return {m: (f"{root}.{name}" if name else root) for name, m in module.named_modules()}


class ModuleStack:
    """Tracks the innermost running module of the given models while installed."""

    def __init__(self, modules: list[torch.nn.Module]) -> None:
        self._roots = modules
        self._paths: dict[torch.nn.Module, str] = {}
        for m in modules:
            self._paths.update(module_path_names(m))
        self._stack: list[str] = []
        self._handles: list[RemovableHandle] = []

    @property
    def current(self) -> str | None:
        """Returns the path of the innermost module whose forward is running, or None."""
        return self._stack[-1] if self._stack else None

    def param_modules(self) -> dict[str, tuple[torch.Tensor, str]]:
        """Returns ``{parameter name: (parameter, owning module path)}``.

        Names are ``named_parameters()`` names (``"0.weight"``); paths start at the root class.
        """
        out: dict[str, tuple[torch.Tensor, str]] = {}
        several = len(self._roots) > 1
        for i, root in enumerate(self._roots):
            base = type(root).__name__
            for name, p in root.named_parameters():
                owner = name.rpartition(".")[0]
                # Two modules both have a "weight": name each after its module's position.
                key = f"{base}{i}.{name}" if several else name
                out.setdefault(key, (p, f"{base}.{owner}" if owner else base))
        return out

    def install(self) -> None:
        """Registers the hooks; ``remove()`` must follow (the caller does it in ``finally``)."""
        for module, path in self._paths.items():
            self._handles.append(module.register_forward_pre_hook(self._enter(path)))
            self._handles.append(module.register_forward_hook(self._exit, always_call=True))

    def remove(self) -> None:
        """Removes every hook this stack registered."""
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._stack.clear()

    def _enter(self, path: str) -> Any:
        def hook(_module: torch.nn.Module, _args: Any) -> None:
            self._stack.append(path)

        return hook

    def _exit(self, _module: torch.nn.Module, _args: Any, _out: Any) -> None:
        if self._stack:
            self._stack.pop()
