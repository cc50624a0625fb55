"""The modules of a model, as plain records: path, class and parameter count."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ModuleInfo", "module_depth", "module_parent", "within"]


@dataclass(frozen=True)
class ModuleInfo:
    """One ``nn.Module`` of a model, by its ``named_modules()`` path (``""`` is the root)."""

    path: str  # "transformer.h.3.attn"; "" for the root
    cls: str  # the class name, "GPT2Attention"
    params: int = 0  # parameter elements owned, recursively, each tied tensor counted once
    param_names: tuple[str, ...] = ()  # its own parameters' full names ("transformer.wte.weight")


def module_depth(path: str) -> int:
    """Returns how deep a module path is: 0 for the root ``""``, 1 for ``"transformer"``."""
    return 0 if not path else path.count(".") + 1


def module_parent(path: str) -> str | None:
    """Returns the path of the module holding ``path`` (None for the root)."""
    if not path:
        return None
    return path.rpartition(".")[0]


def within(path: str | None, ancestor: str) -> bool:
    """Returns True when module ``path`` is ``ancestor`` or inside it (everything is in ``""``)."""
    if path is None:
        return False
    return not ancestor or path == ancestor or path.startswith(ancestor + ".")
