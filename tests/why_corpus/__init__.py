"""A corpus of small programs, each with a planted reason why a parameter gets no gradient.

Each program is a module ``pNN_<name>.py`` defining

* ``build() -> (model_or_params, run)``: an ``nn.Module`` (or a dict name -> tensor) and a
  function that runs the forward pass and returns the loss. ``build`` seeds torch, so every
  program is deterministic;
* ``EXPECT = {"param name": (status, kind, marker)}``: what ``gradlens.explain`` should say
  about each parameter that does not plainly reach the loss. ``marker`` names a comment tag
  (``"CUT"`` for ``# CUT``) at the end of the line that should be reported, or is None.
  Parameters not in ``EXPECT`` are expected "reachable" (or frozen: requires_grad False).
  A program with an empty ``EXPECT`` is a correct model: no diagnostics at all.

``PROGRAMS`` lists them in file order, with every marker resolved to its line.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

__all__ = [
    "CUT_KINDS",
    "HERE",
    "PROGRAMS",
    "PROGRAMS_BY_NAME",
    "REPO_ROOT",
    "STATUSES",
    "Expect",
    "Program",
    "named_params",
    "short_path",
]

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
STATUSES = ("reachable", "cut", "unused", "dead", "not-leaf", "unreachable")
CUT_KINDS = (
    "detach",
    "data",
    "host",
    "no_grad",
    "inference_mode",
    "requires_grad_",
    "non-differentiable",
    "rewrap",
)


def _marker_pattern(marker: str) -> re.Pattern[str]:
    return re.compile(rf"#\s*{re.escape(marker)}\s*$")


def short_path(path: Path | str) -> str:
    """The path as gradlens reports it: relative to the working directory when inside it."""
    rel = os.path.relpath(path, os.getcwd())
    return str(path) if rel.startswith("..") else rel


@dataclass(frozen=True)
class Expect:
    """What ``gradlens.explain`` should report about one parameter."""

    param: str
    status: str
    kind: str | None
    marker: str | None  # "CUT" for a line ending in "# CUT"
    lines: tuple[int, ...]  # the lines that carry the marker (exactly one is expected)
    path: Path

    @property
    def line(self) -> int | None:
        return self.lines[0] if len(self.lines) == 1 else None

    @property
    def source(self) -> str | None:
        """``"tests/why_corpus/pNN_x.py:LINE"`` (relative to the cwd), or None without a marker."""
        if self.marker is None:
            return None
        return f"{short_path(self.path)}:{self.line}"


@dataclass(frozen=True)
class Program:
    name: str  # "p03_detach"
    module: ModuleType
    path: Path
    expect: dict[str, Expect]
    doc: str

    @property
    def file(self) -> str:
        """``"tests/why_corpus/p03_detach.py"``, relative to the repository root."""
        return self.path.relative_to(REPO_ROOT).as_posix()

    @property
    def correct(self) -> bool:
        """True for a correct model: nothing to report."""
        return not self.expect

    def build(self) -> tuple[nn.Module | dict[str, torch.Tensor], Callable[[], torch.Tensor]]:
        built: Any = self.module.build()
        return built


def named_params(model: nn.Module | dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``{name: tensor}``: a module's named_parameters(), or the dict itself."""
    if isinstance(model, nn.Module):
        return dict(model.named_parameters())
    return dict(model)


def _load(path: Path) -> Program:
    module = importlib.import_module(f"{__name__}.{path.stem}")
    lines = path.read_text(encoding="utf-8").splitlines()
    expect: dict[str, Expect] = {}
    for param, (status, kind, marker) in module.EXPECT.items():
        found: tuple[int, ...] = ()
        if marker is not None:
            pattern = _marker_pattern(marker)
            found = tuple(i for i, text in enumerate(lines, start=1) if pattern.search(text))
        expect[param] = Expect(param, status, kind, marker, found, path)
    doc = (module.__doc__ or "").strip().splitlines()[0] if module.__doc__ else ""
    return Program(path.stem, module, path, expect, doc)


PROGRAMS: list[Program] = [_load(p) for p in sorted(HERE.glob("p[0-9]*.py"))]
PROGRAMS_BY_NAME: dict[str, Program] = {p.name: p for p in PROGRAMS}
