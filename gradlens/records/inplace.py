"""In-place writes that touch a tensor saved for backward, as gradlens saw them happen."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["InplaceViolation", "ViolationKind"]

ViolationKind = Literal["inplace-saved", "silent-write", "inplace-leaf"]


@dataclass(frozen=True)
class InplaceViolation:
    """A write to a tensor that an autograd node saved for backward (or to a leaf).

    ``inplace-saved``: the write bumped the saved tensor's version, so PyTorch's backward
    through ``saved_by`` will fail. ``silent-write``: the saved values changed but the version
    did not (a ``.data`` write, a tensor sharing memory but not the version counter, or, with
    ``verify=True``, a checksum that no longer matches): backward runs and computes wrong
    gradients. ``inplace-leaf``: an in-place op on a leaf that requires grad (PyTorch refuses).
    """

    kind: ViolationKind
    tensor: str  # the written tensor's name where known ("x"), else a description
    write_op: str  # "mul_", "__setitem__", "relu_", "_foreach_add_", "(not seen: numpy?)"
    write_source: str | None  # the user's "file.py:line" of the write
    saved_by: str | None = None  # the node that saved it ("SigmoidBackward0")
    saved_op: str | None = None  # the forward op that saved it ("sigmoid")
    saved_as: str | None = None  # "result", "self", "other", ...
    saved_source: str | None = None  # the user's line of the op that saved it
    saved_version: int | None = None
    version: int | None = None  # the tensor's version after the write
    shape: tuple[int, ...] = ()  # of the saved tensor
    saved_node: str | None = None  # the saving node's id in a trace's graph, when known
