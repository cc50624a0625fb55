"""Know which ``nn.Module``'s forward is running (a stack of module paths kept by hooks), and
describe a model's modules as records (:class:`ModuleInfo`)."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.hooks import RemovableHandle

from ..records import ModuleInfo
from .fast import record_from

__all__ = ["ModuleStack", "module_infos", "module_path_names"]


def module_path_names(module: torch.nn.Module, prefix: str = "") -> dict[torch.nn.Module, str]:
    """Returns ``{submodule: path}`` with ``named_modules()`` paths: ``""`` is the root,
    ``"transformer.h.3"``; ``prefix`` (several models in one trace) goes before each."""
    out: dict[torch.nn.Module, str] = {}
    for name, m in module.named_modules():
        out.setdefault(m, f"{prefix}.{name}" if prefix and name else (prefix or name))
    return out


def module_infos(
    module: torch.nn.Module,
    prefix: str = "",
    *,
    named: list[tuple[str, torch.Tensor]] | None = None,
) -> tuple[ModuleInfo, ...]:
    """Returns one ModuleInfo per module, in ``named_modules()`` order: class, parameter
    elements owned recursively (a tied tensor counted once) and its own parameters' names.
    ``named``: ``module.named_parameters(remove_duplicate=False)`` when the caller has it."""
    # One pass over every parameter name (a shared module's under each of its paths): each
    # module's distinct tensors are those named under its path, as ``m.parameters()`` finds.
    if named is None:
        named = list(module.named_parameters(remove_duplicate=False))
    names_of: dict[int, int] = {}
    for _, p in named:
        names_of[id(p)] = names_of.get(id(p), 0) + 1
    counts: dict[str, int] = {}
    counted: set[tuple[str, int]] = set()  # (module, tensor) for tensors with several names
    for name, p in named:
        pid, size = id(p), p.numel()
        tied = names_of[pid] > 1
        path = name.rpartition(".")[0]
        while True:
            if tied:
                if (path, pid) in counted:
                    break  # counted here, and so in every module above, already
                counted.add((path, pid))
            counts[path] = counts.get(path, 0) + size
            if not path:
                break
            path = path.rpartition(".")[0]
    infos = []
    for name, m in module.named_modules():
        path = f"{prefix}.{name}" if prefix and name else (prefix or name)
        full = f"{path}." if path else ""
        own = tuple(full + n for n, p in m._parameters.items() if p is not None)
        count = counts.get(name, 0)
        fields = {"path": path, "cls": type(m).__name__, "params": count, "param_names": own}
        infos.append(record_from(ModuleInfo, fields))
    return tuple(infos)


def _prefixes(roots: list[torch.nn.Module]) -> list[str]:
    """One model: no prefix; several: each by its class name (``#2`` for a repeated class)."""
    if len(roots) <= 1:
        return [""] * len(roots)
    out: list[str] = []
    counts: dict[str, int] = {}
    for r in roots:
        name = type(r).__name__
        counts[name] = counts.get(name, 0) + 1
        out.append(name if counts[name] == 1 else f"{name}#{counts[name]}")
    return out


class ModuleStack:
    """Tracks the innermost running module of the given models while installed."""

    def __init__(self, modules: list[torch.nn.Module]) -> None:
        self._roots = modules
        self._prefixes = _prefixes(modules)
        self._paths: dict[torch.nn.Module, str] = {}
        for m, prefix in zip(modules, self._prefixes, strict=True):
            for sub, path in module_path_names(m, prefix).items():
                self._paths.setdefault(sub, path)
        self._stack: list[str] = []
        self._handles: list[RemovableHandle] = []
        # Each model's named_parameters(remove_duplicate=False), read once for infos() and
        # param_modules() (called one after the other when a trace starts).
        self._named: list[list[tuple[str, torch.Tensor]]] | None = None

    def _named_params(self) -> list[list[tuple[str, torch.Tensor]]]:
        if self._named is None:
            self._named = [list(r.named_parameters(remove_duplicate=False)) for r in self._roots]
        return self._named

    @property
    def current(self) -> str | None:
        """Returns the path of the innermost module whose forward is running, or None."""
        return self._stack[-1] if self._stack else None

    def infos(self) -> tuple[ModuleInfo, ...]:
        """Returns the ModuleInfo of every module of the models, in ``named_modules()`` order."""
        out: list[ModuleInfo] = []
        for m, prefix, named in zip(self._roots, self._prefixes, self._named_params(), strict=True):
            out.extend(module_infos(m, prefix, named=named))
        return tuple(out)

    def param_modules(self) -> dict[str, tuple[torch.Tensor, str]]:
        """Returns ``{parameter name: (parameter, owning module path)}``.

        Names are ``named_parameters()`` names (``"0.weight"``); paths are ``named_modules()``
        paths (``"0"``; ``""`` for the root), after the model's class with several models.
        """
        out: dict[str, tuple[torch.Tensor, str]] = {}
        several = len(self._roots) > 1
        roots = zip(self._roots, self._prefixes, self._named_params(), strict=True)
        for i, (root, prefix, named) in enumerate(roots):
            base = type(root).__name__
            for name, p in named:  # tied: both names
                owner = name.rpartition(".")[0]
                # Two modules both have a "weight": name each after its module's position.
                key = f"{base}{i}.{name}" if several else name
                path = f"{prefix}.{owner}" if prefix and owner else (prefix or owner)
                out.setdefault(key, (p, path))
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
