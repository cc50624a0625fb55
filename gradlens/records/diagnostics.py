"""Findings: a mistake or a noteworthy fact, explained, with the line it came from."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

__all__ = ["Diagnostic", "Severity"]


class Severity(str, Enum):
    """How much a finding matters."""

    ERROR = "error"  # backward fails or computes wrong gradients
    WARNING = "warning"  # very likely a mistake
    INFO = "info"  # worth knowing


@dataclass(frozen=True)
class Diagnostic:
    """One finding: what kind, what happened, about which tensor, where, and how to fix it."""

    kind: str  # "backward-twice", "inplace-leaf", "grad-accumulation", ...
    message: str
    severity: Severity = Severity.WARNING
    name: str | None = None  # the tensor or parameter concerned
    step: int | None = None
    source: str | None = None  # the user's "file.py:line"
    fix: str | None = None
